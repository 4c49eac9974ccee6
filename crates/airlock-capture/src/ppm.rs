//! QEMU's `screendump` output: a binary PPM (netpbm `P6`, maxval 255). It is written
//! by a process that runs the untrusted guest, so it is parsed strictly: the header's
//! fields must be well formed, the size within [`MAX_SIDE`], and the pixel data exactly
//! `width × height × 3` bytes. Anything else is refused, never guessed at.
use crate::image::{RgbImage, MAX_SIDE};

/// Why a screendump was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PpmError {
    #[error("the screendump is not a binary PPM (no P6 header)")]
    Magic,
    #[error("the screendump's header is malformed ({0})")]
    Header(&'static str),
    #[error("the screendump is {width}×{height}; at most {MAX_SIDE}×{MAX_SIDE} is accepted")]
    TooLarge { width: u64, height: u64 },
    #[error("the screendump has {maxval} levels per sample; only 255 is accepted")]
    Depth { maxval: u64 },
    #[error("the screendump holds {got} bytes of pixels where {width}×{height} needs {want}")]
    Length {
        width: u32,
        height: u32,
        want: usize,
        got: usize,
    },
}

/// Skips whitespace and `#` comments (to the end of their line) from `at`.
fn skip_space(b: &[u8], mut at: usize) -> usize {
    loop {
        match b.get(at) {
            Some(c) if c.is_ascii_whitespace() => at += 1,
            Some(b'#') => {
                while let Some(c) = b.get(at) {
                    at += 1;
                    if *c == b'\n' || *c == b'\r' {
                        break;
                    }
                }
            }
            _ => return at,
        }
    }
}

/// Reads a decimal number of at most 6 digits at `at` (after whitespace); returns it
/// and the index after it.
fn number(b: &[u8], at: usize, what: &'static str) -> Result<(u64, usize), PpmError> {
    let start = skip_space(b, at);
    let digits = b
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if digits == 0 {
        return Err(PpmError::Header(what));
    }
    if digits > 6 {
        return Err(PpmError::Header("a number has more than 6 digits"));
    }
    let text = b.get(start..start + digits).unwrap_or_default();
    let n = text.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok((n, start + digits))
}

/// Parses a `P6` PPM with 8-bit samples into an image.
pub fn parse(b: &[u8]) -> Result<RgbImage, PpmError> {
    if !b.starts_with(b"P6") {
        return Err(PpmError::Magic);
    }
    let (width, at) = number(b, 2, "no width")?;
    let (height, at) = number(b, at, "no height")?;
    let (maxval, at) = number(b, at, "no maximum value")?;
    // Exactly one whitespace character ends the header.
    match b.get(at) {
        Some(c) if c.is_ascii_whitespace() => {}
        _ => return Err(PpmError::Header("no whitespace after the maximum value")),
    }
    if width == 0 || height == 0 {
        return Err(PpmError::Header("a side is zero"));
    }
    if width > u64::from(MAX_SIDE) || height > u64::from(MAX_SIDE) {
        return Err(PpmError::TooLarge { width, height });
    }
    if maxval != 255 {
        return Err(PpmError::Depth { maxval });
    }
    let (width, height) = (width as u32, height as u32);
    let want = width as usize * height as usize * 3;
    let data = b.get(at + 1..).unwrap_or_default();
    if data.len() != want {
        return Err(PpmError::Length {
            width,
            height,
            want,
            got: data.len(),
        });
    }
    RgbImage::new(width, height, data.to_vec())
        .map_err(|_| PpmError::Header("the image does not fit its size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = header.as_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_what_qemu_writes() {
        let px: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8).collect();
        let img = parse(&ppm("P6\n3 2\n255\n", &px)).unwrap();
        assert_eq!((img.width(), img.height()), (3, 2));
        assert_eq!(img.pixels(), &px[..]);
        // Comments and other whitespace between the fields, as netpbm allows.
        let img = parse(&ppm("P6 # by qemu\n3\t2\r\n# depth\n255 ", &px)).unwrap();
        assert_eq!(img.pixels(), &px[..]);
    }

    #[test]
    fn refuses_anything_else() {
        let px = [0u8; 12];
        let cases: &[(&[u8], PpmError)] = &[
            (b"", PpmError::Magic),
            (b"P3\n2 2\n255\n", PpmError::Magic),
            (b"P6", PpmError::Header("no width")),
            (b"P6\n2", PpmError::Header("no height")),
            (b"P6\n2 2", PpmError::Header("no maximum value")),
            (
                b"P6\n2 2\n255",
                PpmError::Header("no whitespace after the maximum value"),
            ),
            (b"P6\n-2 2\n255\n", PpmError::Header("no width")),
            (
                b"P6\n1234567 2\n255\n",
                PpmError::Header("a number has more than 6 digits"),
            ),
            (b"P6\n0 2\n255\n", PpmError::Header("a side is zero")),
            (
                b"P6\n5000 2\n255\n",
                PpmError::TooLarge {
                    width: 5000,
                    height: 2,
                },
            ),
            (b"P6\n2 2\n65535\n", PpmError::Depth { maxval: 65535 }),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Pixel data one byte short, one byte long.
        for n in [11, 13] {
            let e = parse(&ppm("P6\n2 2\n255\n", &[0u8; 16][..n])).unwrap_err();
            assert!(
                matches!(e, PpmError::Length { want: 12, got, .. } if got == n),
                "{e:?}"
            );
        }
        assert!(parse(&ppm("P6\n2 2\n255\n", &px)).is_ok());
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let good = ppm("P6\n4 3\n255\n", &[7u8; 36]);
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, b' ', b'#', b'9', 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = parse(&b);
            }
        }
    }
}
