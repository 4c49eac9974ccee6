//! An RGB image with 8 bits per sample, the rectangle a capture may be cropped to, and
//! the PNG a capture is kept and handed out as (encoded here, from the pixel values
//! only; decoded again only from a capture of our own).
use sha2::{Digest, Sha256};
use std::fmt;

/// The longest side accepted (a screendump larger than this is refused).
pub const MAX_SIDE: u32 = 4096;

/// The smallest side a crop may have.
pub const MIN_CROP_SIDE: u32 = 16;

/// Rows of RGB pixels, top to bottom, 3 bytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// Why an image or a rectangle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the image is {width}×{height} with {len} bytes of pixels; that does not fit (sides 1 to {MAX_SIDE}, 3 bytes a pixel)")]
    Size { width: u32, height: u32, len: usize },
    #[error("crop rectangle {0:?}: write it as X,Y,WIDTH,HEIGHT in pixels (e.g. 0,0,800,600)")]
    RectSyntax(String),
    #[error("crop rectangle {rect} is not inside the {width}×{height} screen, or a side is under {MIN_CROP_SIDE} pixels")]
    RectOutside { rect: Rect, width: u32, height: u32 },
    #[error("cannot encode the PNG: {0}")]
    Encode(String),
    #[error("the stored PNG cannot be read: {0}")]
    Decode(String),
}

impl RgbImage {
    /// An image of `width × height` pixels from their bytes.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<RgbImage, ImageError> {
        let fits = (1..=MAX_SIDE).contains(&width)
            && (1..=MAX_SIDE).contains(&height)
            && pixels.len() == width as usize * height as usize * 3;
        if !fits {
            return Err(ImageError::Size {
                width,
                height,
                len: pixels.len(),
            });
        }
        Ok(RgbImage {
            width,
            height,
            pixels,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixel bytes, rows top to bottom, `R G B` each.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Gives the pixel bytes away.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The pixel at (`x`, `y`), if inside.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        let p = self.pixels.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }

    /// The part of the image inside `r` (which must lie inside it and be at least
    /// [`MIN_CROP_SIDE`] on each side).
    pub fn crop(&self, r: Rect) -> Result<RgbImage, ImageError> {
        let inside = r.width >= MIN_CROP_SIDE
            && r.height >= MIN_CROP_SIDE
            && u64::from(r.x) + u64::from(r.width) <= u64::from(self.width)
            && u64::from(r.y) + u64::from(r.height) <= u64::from(self.height);
        if !inside {
            return Err(ImageError::RectOutside {
                rect: r,
                width: self.width,
                height: self.height,
            });
        }
        let row = self.width as usize * 3;
        let mut pixels = Vec::with_capacity(r.width as usize * r.height as usize * 3);
        for y in r.y..r.y + r.height {
            let start = y as usize * row + r.x as usize * 3;
            pixels.extend_from_slice(
                self.pixels
                    .get(start..start + r.width as usize * 3)
                    .unwrap_or_default(),
            );
        }
        RgbImage::new(r.width, r.height, pixels)
    }

    /// A new PNG of the pixels (8-bit RGB, no metadata chunks).
    pub fn to_png(&self) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width, self.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut w = enc
                .write_header()
                .map_err(|e| ImageError::Encode(e.to_string()))?;
            w.write_image_data(&self.pixels)
                .map_err(|e| ImageError::Encode(e.to_string()))?;
            w.finish().map_err(|e| ImageError::Encode(e.to_string()))?;
        }
        Ok(out)
    }

    /// Reads back a PNG made by [`RgbImage::to_png`] (8-bit RGB only).
    pub fn from_png(bytes: &[u8]) -> Result<RgbImage, ImageError> {
        let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
        dec.set_limits(png::Limits {
            bytes: (MAX_SIDE as usize) * (MAX_SIDE as usize) * 3,
        });
        let mut reader = dec
            .read_info()
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        let info = reader.info();
        if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
            return Err(ImageError::Decode(format!(
                "{:?} with {:?} bits, not 8-bit RGB",
                info.color_type, info.bit_depth
            )));
        }
        let (width, height) = (info.width, info.height);
        let mut buf = vec![0u8; reader.output_buffer_size()];
        let frame = reader
            .next_frame(&mut buf)
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        buf.truncate(frame.buffer_size());
        RgbImage::new(width, height, buf)
    }
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A rectangle of the screen, in pixels from its top left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl fmt::Display for Rect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.width, self.height)
    }
}

impl std::str::FromStr for Rect {
    type Err = ImageError;

    /// `X,Y,WIDTH,HEIGHT`, four decimal numbers of at most 5 digits.
    fn from_str(s: &str) -> Result<Rect, ImageError> {
        let bad = || ImageError::RectSyntax(s.chars().take(40).collect());
        let parts: Vec<&str> = s.trim().split(',').map(str::trim).collect();
        let [x, y, w, h] = parts.as_slice() else {
            return Err(bad());
        };
        let num = |v: &str| -> Result<u32, ImageError> {
            if v.is_empty() || v.len() > 5 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            v.parse().map_err(|_| bad())
        };
        Ok(Rect {
            x: num(x)?,
            y: num(y)?,
            width: num(w)?,
            height: num(h)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test pattern: each pixel's bytes say where it is.
    fn pattern(w: u32, h: u32) -> RgbImage {
        let mut px = Vec::new();
        for y in 0..h {
            for x in 0..w {
                px.extend_from_slice(&[x as u8, y as u8, (x ^ y) as u8]);
            }
        }
        RgbImage::new(w, h, px).unwrap()
    }

    #[test]
    fn sizes_are_checked() {
        assert!(RgbImage::new(2, 2, vec![0; 12]).is_ok());
        for (w, h, len) in [
            (0, 2, 0),
            (2, 0, 0),
            (2, 2, 11),
            (2, 2, 13),
            (MAX_SIDE + 1, 1, 3 * (MAX_SIDE as usize + 1)),
        ] {
            assert!(RgbImage::new(w, h, vec![0; len]).is_err(), "{w}×{h} {len}");
        }
    }

    #[test]
    fn crops_exactly_the_rectangle() {
        let img = pattern(64, 48);
        let r: Rect = "10,5,20,16".parse().unwrap();
        let c = img.crop(r).unwrap();
        assert_eq!((c.width(), c.height()), (20, 16));
        for y in 0..16 {
            for x in 0..20 {
                assert_eq!(c.pixel(x, y), img.pixel(x + 10, y + 5));
            }
        }
        // The whole image, and the last pixels on each side.
        assert_eq!(img.crop("0,0,64,48".parse().unwrap()).unwrap(), img);
        assert!(img.crop("48,32,16,16".parse().unwrap()).is_ok());
        for bad in [
            "49,32,16,16",
            "48,33,16,16",
            "0,0,15,16",
            "0,0,16,15",
            "99999,0,16,16",
        ] {
            let e = img.crop(bad.parse().unwrap()).unwrap_err();
            assert!(matches!(e, ImageError::RectOutside { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn rectangles_parse_strictly() {
        assert_eq!(
            " 1, 2,3 ,4".parse::<Rect>().unwrap(),
            Rect {
                x: 1,
                y: 2,
                width: 3,
                height: 4
            }
        );
        for bad in [
            "",
            "1,2,3",
            "1,2,3,4,5",
            "-1,2,3,4",
            "1.5,2,3,4",
            "1,2,3,123456",
            "a,b,c,d",
            "1,,3,4",
        ] {
            assert!(
                matches!(bad.parse::<Rect>(), Err(ImageError::RectSyntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            Rect {
                x: 1,
                y: 2,
                width: 3,
                height: 4
            }
            .to_string()
            .parse::<Rect>()
            .unwrap(),
            Rect {
                x: 1,
                y: 2,
                width: 3,
                height: 4
            }
        );
    }

    #[test]
    fn png_round_trips_the_pixels() {
        let img = pattern(37, 23);
        let png = img.to_png().unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(RgbImage::from_png(&png).unwrap(), img);
        assert!(RgbImage::from_png(&png[..png.len() / 2]).is_err());
        assert!(RgbImage::from_png(b"not a png").is_err());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
