//! PC Screen Font (PSF1 and PSF2), the Linux console's font format, with its Unicode
//! table: the glyph of a character. The font is the build host's Debian console font,
//! put into the guest's initramfs by `cargo xtask guest` (decompressed).

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FontError {
    #[error("not a PSF font")]
    NotPsf,
    #[error("truncated PSF font")]
    Truncated,
    #[error("PSF font with impossible sizes: {0}")]
    BadSize(String),
}

/// A bitmap font: `width` × `height` glyphs, rows padded to whole bytes, most
/// significant bit leftmost.
#[derive(Debug, Clone)]
pub struct Font {
    pub width: usize,
    pub height: usize,
    row_bytes: usize,
    glyphs: Vec<u8>,
    count: usize,
    /// Character → glyph index (from the Unicode table; identity without one).
    map: HashMap<char, usize>,
}

const PSF1_MAGIC: [u8; 2] = [0x36, 0x04];
const PSF1_MODE512: u8 = 0x01;
const PSF1_MODEHASTAB: u8 = 0x02;
const PSF1_MODESEQ: u8 = 0x04;
const PSF1_SEPARATOR: u16 = 0xFFFF;
const PSF1_STARTSEQ: u16 = 0xFFFE;
const PSF2_MAGIC: [u8; 4] = [0x72, 0xb5, 0x4a, 0x86];
const PSF2_HAS_UNICODE_TABLE: u32 = 0x01;
const PSF2_SEPARATOR: u8 = 0xFF;
const PSF2_STARTSEQ: u8 = 0xFE;
/// Caps on what a font may declare.
const MAX_GLYPHS: usize = 65536;
const MAX_SIDE: usize = 64;

fn u32_at(d: &[u8], off: usize) -> Result<u32, FontError> {
    d.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(FontError::Truncated)
}

impl Font {
    /// Parses a PSF1 or PSF2 font (uncompressed).
    pub fn parse(data: &[u8]) -> Result<Font, FontError> {
        if data.starts_with(&PSF1_MAGIC) {
            Self::psf1(data)
        } else if data.starts_with(&PSF2_MAGIC) {
            Self::psf2(data)
        } else {
            Err(FontError::NotPsf)
        }
    }

    fn psf1(data: &[u8]) -> Result<Font, FontError> {
        let (mode, height) = match data.get(2..4) {
            Some(&[m, h]) => (m, usize::from(h)),
            _ => return Err(FontError::Truncated),
        };
        if height == 0 || height > MAX_SIDE {
            return Err(FontError::BadSize(format!("height {height}")));
        }
        let count = if mode & PSF1_MODE512 != 0 { 512 } else { 256 };
        let end = 4 + count * height;
        let glyphs = data.get(4..end).ok_or(FontError::Truncated)?.to_vec();
        let mut map = HashMap::new();
        if mode & (PSF1_MODEHASTAB | PSF1_MODESEQ) != 0 {
            let table = &data[end..];
            let mut words = table
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]));
            for glyph in 0..count {
                let mut in_seq = false;
                for w in words.by_ref() {
                    match w {
                        PSF1_SEPARATOR => break,
                        PSF1_STARTSEQ => in_seq = true,
                        _ if !in_seq => {
                            if let Some(c) = char::from_u32(u32::from(w)) {
                                map.entry(c).or_insert(glyph);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(Self::finish(8, height, 1, glyphs, count, map))
    }

    fn psf2(data: &[u8]) -> Result<Font, FontError> {
        let header_size = u32_at(data, 8)? as usize;
        let flags = u32_at(data, 12)?;
        let count = u32_at(data, 16)? as usize;
        let char_size = u32_at(data, 20)? as usize;
        let height = u32_at(data, 24)? as usize;
        let width = u32_at(data, 28)? as usize;
        if !(1..=MAX_SIDE).contains(&width)
            || !(1..=MAX_SIDE).contains(&height)
            || !(1..=MAX_GLYPHS).contains(&count)
        {
            return Err(FontError::BadSize(format!(
                "{count} glyphs of {width}x{height}"
            )));
        }
        let row_bytes = width.div_ceil(8);
        if char_size != row_bytes * height {
            return Err(FontError::BadSize(format!(
                "{char_size} bytes a glyph for {width}x{height}"
            )));
        }
        let end = header_size
            .checked_add(count * char_size)
            .ok_or(FontError::Truncated)?;
        let glyphs = data
            .get(header_size..end)
            .ok_or(FontError::Truncated)?
            .to_vec();
        let mut map = HashMap::new();
        if flags & PSF2_HAS_UNICODE_TABLE != 0 {
            let mut rest = &data[end..];
            for glyph in 0..count {
                let stop = rest
                    .iter()
                    .position(|&b| b == PSF2_SEPARATOR)
                    .unwrap_or(rest.len());
                let entry = &rest[..stop];
                // Single characters come before the first sequence.
                let singles = entry
                    .iter()
                    .position(|&b| b == PSF2_STARTSEQ)
                    .map_or(entry, |p| &entry[..p]);
                for c in String::from_utf8_lossy(singles).chars() {
                    if c != char::REPLACEMENT_CHARACTER {
                        map.entry(c).or_insert(glyph);
                    }
                }
                rest = rest.get(stop + 1..).unwrap_or_default();
            }
        }
        Ok(Self::finish(width, height, row_bytes, glyphs, count, map))
    }

    fn finish(
        width: usize,
        height: usize,
        row_bytes: usize,
        glyphs: Vec<u8>,
        count: usize,
        mut map: HashMap<char, usize>,
    ) -> Font {
        if map.is_empty() {
            // No table: glyph n is character n (ASCII at least).
            for n in 0..count.min(128) {
                if let Some(c) = char::from_u32(n as u32) {
                    map.insert(c, n);
                }
            }
        }
        Font {
            width,
            height,
            row_bytes,
            glyphs,
            count,
            map,
        }
    }

    /// The glyph drawn for `c` (`?` for characters the font lacks).
    fn glyph(&self, c: char) -> Option<&[u8]> {
        let n = self.map.get(&c).or_else(|| self.map.get(&'?')).copied()?;
        if n >= self.count {
            return None;
        }
        let size = self.row_bytes * self.height;
        self.glyphs.get(n * size..(n + 1) * size)
    }

    /// Is pixel (`x`, `y`) of `c`'s glyph set?
    pub fn pixel(&self, c: char, x: usize, y: usize) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        self.glyph(c)
            .and_then(|g| g.get(y * self.row_bytes + x / 8))
            .is_some_and(|b| b & (0x80 >> (x % 8)) != 0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PSF2 font of 8×8 glyphs where glyph n's row r is n XOR r, mapping 'A' to glyph
    /// 5 through its Unicode table (and '?' to glyph 1).
    pub(crate) fn psf2() -> Vec<u8> {
        let count = 8u32;
        let mut d = PSF2_MAGIC.to_vec();
        for v in [0u32, 32, PSF2_HAS_UNICODE_TABLE, count, 8, 8, 8] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        for n in 0..count as u8 {
            for r in 0..8u8 {
                d.push(n ^ r);
            }
        }
        for n in 0..count {
            match n {
                1 => d.push(b'?'),
                5 => d.extend_from_slice("A\u{e9}".as_bytes()),
                _ => {}
            }
            d.push(PSF2_SEPARATOR);
        }
        d
    }

    #[test]
    fn psf2_with_unicode_table() {
        let f = Font::parse(&psf2()).expect("font");
        assert_eq!((f.width, f.height), (8, 8));
        // 'A' is glyph 5: row 0 = 5 = 0b0000_0101.
        assert!(f.pixel('A', 7, 0) && f.pixel('A', 5, 0) && !f.pixel('A', 6, 0));
        assert!(f.pixel('\u{e9}', 7, 0));
        // Unknown characters are drawn as '?', glyph 1 (row 0 = 1).
        assert!(f.pixel('Z', 7, 0) && !f.pixel('Z', 5, 0));
        assert!(!f.pixel('A', 8, 0) && !f.pixel('A', 0, 8));
    }

    #[test]
    fn psf1_with_and_without_table() {
        let mut d = vec![0x36, 0x04, 0x00, 4];
        for n in 0..256u32 {
            d.extend_from_slice(&[n as u8, 0, 0, 0]);
        }
        let f = Font::parse(&d).expect("psf1");
        assert_eq!((f.width, f.height), (8, 4));
        // No table: 'A' (65 = 0b0100_0001) is glyph 65.
        assert!(f.pixel('A', 1, 0) && f.pixel('A', 7, 0) && !f.pixel('A', 0, 0));
        // With a table mapping 'A' to glyph 3.
        d[2] = PSF1_MODEHASTAB;
        for n in 0..256u16 {
            if n == 3 {
                d.extend_from_slice(&(u16::from(b'A')).to_le_bytes());
                d.extend_from_slice(&PSF1_STARTSEQ.to_le_bytes());
                d.extend_from_slice(&(u16::from(b'B')).to_le_bytes());
            }
            d.extend_from_slice(&PSF1_SEPARATOR.to_le_bytes());
        }
        let f = Font::parse(&d).expect("psf1 table");
        assert!(f.pixel('A', 6, 0) && f.pixel('A', 7, 0) && !f.pixel('A', 1, 0));
        // 'B' was only in a sequence: not mapped, so no glyph (no '?' either).
        assert!(!f.pixel('B', 7, 0));
    }

    #[test]
    fn bad_fonts_are_errors() {
        assert_eq!(Font::parse(b"nope").unwrap_err(), FontError::NotPsf);
        assert_eq!(
            Font::parse(&[0x36, 0x04, 0, 16, 1, 2]).unwrap_err(),
            FontError::Truncated
        );
        assert!(matches!(
            Font::parse(&[0x36, 0x04, 0, 0]).unwrap_err(),
            FontError::BadSize(_)
        ));
        let good = psf2();
        for n in 0..good.len() {
            let _ = Font::parse(&good[..n]);
        }
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Font::parse(&huge).is_err());
        let mut wrong = good;
        wrong[20..24].copy_from_slice(&9u32.to_le_bytes());
        assert!(matches!(
            Font::parse(&wrong).unwrap_err(),
            FontError::BadSize(_)
        ));
    }

    /// The build host's Debian console font, when it is installed (it is where
    /// `scripts/setup.sh` ran): parsed, with ASCII mapped.
    #[test]
    fn the_hosts_console_font_parses_when_present() {
        let path = "/usr/share/consolefonts/Uni2-VGA16.psf.gz";
        if !std::path::Path::new(path).exists() {
            eprintln!("{path} is not installed (console-setup-linux): skipped");
            return;
        }
        let out = std::process::Command::new("gzip")
            .args(["-dc", path])
            .output()
            .expect("gzip");
        let f = Font::parse(&out.stdout).expect("console font");
        assert_eq!((f.width, f.height), (8, 16));
        let lit = |c| {
            (0..16)
                .flat_map(|y| (0..8).map(move |x| (x, y)))
                .filter(|&(x, y)| f.pixel(c, x, y))
                .count()
        };
        assert_eq!(lit(' '), 0);
        assert!(lit('M') > 20 && lit('.') > 0);
    }
}
