//! Screen images for display tests: binary PPM (P6, what QEMU's `screendump` and
//! ImageMagick write) read into RGB, and a search for one image inside another (the
//! desktop's framebuffer inside a screenshot of the viewer showing it).
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// An RGB image, 3 bytes a pixel, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Reads the next whitespace-separated header token of a PPM (comments skipped).
fn token<'a>(data: &'a [u8], pos: &mut usize) -> Result<&'a [u8]> {
    loop {
        while *pos < data.len() && data[*pos].is_ascii_whitespace() {
            *pos += 1;
        }
        if data.get(*pos) == Some(&b'#') {
            while *pos < data.len() && data[*pos] != b'\n' {
                *pos += 1;
            }
            continue;
        }
        break;
    }
    let start = *pos;
    while *pos < data.len() && !data[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
    ensure!(*pos > start, "truncated PPM header");
    Ok(&data[start..*pos])
}

impl Image {
    /// Parses a binary PPM (P6, maxval 255).
    pub fn from_ppm(data: &[u8]) -> Result<Image> {
        let mut pos = 0;
        ensure!(token(data, &mut pos)? == b"P6", "not a binary PPM (P6)");
        let mut num = |what: &str| -> Result<usize> {
            let t = token(data, &mut pos)?;
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad PPM {what}"))
        };
        let (width, height, maxval) = (num("width")?, num("height")?, num("maxval")?);
        ensure!(maxval == 255, "PPM maxval {maxval}: only 8-bit images");
        pos += 1; // the single whitespace after maxval
        let len = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(3))
            .context("PPM too large")?;
        let Some(rgb) = data.get(pos..pos + len) else {
            bail!("PPM data is shorter than {width}x{height}");
        };
        Ok(Image {
            width,
            height,
            rgb: rgb.to_vec(),
        })
    }

    /// Reads a PPM file.
    pub fn read_ppm(path: &Path) -> Result<Image> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Image::from_ppm(&data).with_context(|| format!("parsing {}", path.display()))
    }

    fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * 3;
        &self.rgb[i..i + 3]
    }

    /// How many distinct colours the image has (a blank screen has one).
    pub fn colours(&self) -> usize {
        let mut seen: Vec<&[u8]> = self.rgb.chunks(3).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// How many pixels are within `tolerance` per channel of `rgb`.
    pub fn count_close(&self, rgb: [u8; 3], tolerance: u8) -> usize {
        self.rgb
            .chunks_exact(3)
            .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= tolerance))
            .count()
    }

    /// Where `needle` appears in this image: the top-left corner of the place where at
    /// least `min_match` (0..1) of its pixels equal this image's within `tolerance` per
    /// channel. Candidates are the places where needle's most varied row matches.
    pub fn find(&self, needle: &Image, tolerance: u8, min_match: f64) -> Option<(usize, usize)> {
        if needle.width > self.width || needle.height > self.height || needle.width == 0 {
            return None;
        }
        let close = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= tolerance);
        // The needle's row with the most colour changes anchors the search.
        let anchor = (0..needle.height)
            .max_by_key(|&y| {
                (1..needle.width)
                    .filter(|&x| needle.pixel(x, y) != needle.pixel(x - 1, y))
                    .count()
            })
            .unwrap_or(0);
        for oy in 0..=self.height - needle.height {
            for ox in 0..=self.width - needle.width {
                let row_ok = (0..needle.width)
                    .filter(|&x| close(self.pixel(ox + x, oy + anchor), needle.pixel(x, anchor)))
                    .count();
                if (row_ok as f64) < min_match * needle.width as f64 {
                    continue;
                }
                let mut ok = 0usize;
                for y in 0..needle.height {
                    for x in 0..needle.width {
                        if close(self.pixel(ox + x, oy + y), needle.pixel(x, y)) {
                            ok += 1;
                        }
                    }
                }
                if ok as f64 >= min_match * (needle.width * needle.height) as f64 {
                    return Some((ox, oy));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut data = format!("P6\n# test\n{w} {h}\n255\n").into_bytes();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&f(x, y));
            }
        }
        data
    }

    #[test]
    fn finds_a_framebuffer_inside_a_screenshot() {
        let glyph = |x: usize, y: usize| {
            if (x * 7 + y * 3) % 5 == 0 {
                [200, 200, 200]
            } else {
                [0, 0, (x % 3) as u8 * 40]
            }
        };
        let needle = Image::from_ppm(&ppm(20, 10, glyph)).unwrap();
        let screen = Image::from_ppm(&ppm(64, 40, |x, y| {
            if (5..25).contains(&x) && (30..40).contains(&y) {
                let [r, g, b] = glyph(x - 5, y - 30);
                [r.saturating_add(2), g, b]
            } else {
                [30, 30, 30]
            }
        }))
        .unwrap();
        assert_eq!(screen.find(&needle, 4, 0.99), Some((5, 30)));
        assert_eq!(screen.find(&needle, 0, 0.99), None, "beyond the tolerance");
        assert!(needle.colours() > 2 && screen.colours() > 3);
        assert_eq!(screen.count_close([30, 30, 30], 0), 64 * 40 - 20 * 10);
        assert_eq!(
            needle.count_close([202, 198, 200], 2),
            needle.count_close([200; 3], 0)
        );
    }

    #[test]
    fn malformed_ppms_are_errors() {
        for bad in [
            &b"P3\n1 1\n255\n000"[..],
            b"P6\n2 2\n255\n\x00\x00",
            b"P6\nx 1\n255\n",
            b"",
        ] {
            assert!(Image::from_ppm(bad).is_err());
        }
    }
}
