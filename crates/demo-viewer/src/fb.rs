//! The Linux framebuffer (`/dev/fb0`, the bochs DRM driver's fbdev emulation for QEMU's
//! `-vga std`) through plain file I/O: its geometry from sysfs, frames converted to its
//! pixel format and written at the visible offset; and a virtual terminal of the
//! viewer's own, with no cursor and no text, in the foreground while it shows images so
//! that fbcon draws nothing over them.

use crate::canvas::Frame;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FbError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("framebuffer {0}")]
    Geometry(String),
}

/// Where and how the visible screen lies in the framebuffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    pub bits_per_pixel: usize,
    /// Byte offset of the visible screen's first pixel (the pan offset).
    pub offset: usize,
}

/// Largest side accepted from sysfs.
const MAX_SIDE: usize = 16384;

fn pair(s: &str) -> Option<(usize, usize)> {
    let (a, b) = s.trim().split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The visible size of the first mode in sysfs `modes` (`U:800x600p-0`).
fn mode_size(modes: &str) -> Option<(usize, usize)> {
    let first = modes.lines().next()?;
    let spec = first.split_once(':').map_or(first, |(_, s)| s);
    let (w, rest) = spec.split_once('x')?;
    let h: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((w.parse().ok()?, h.parse().ok()?))
}

impl Geometry {
    /// From the contents of sysfs `virtual_size`, `stride`, `bits_per_pixel`, `modes`
    /// (may be empty) and `pan` (may be empty).
    pub fn parse(
        virtual_size: &str,
        stride: &str,
        bits_per_pixel: &str,
        modes: &str,
        pan: &str,
    ) -> Result<Geometry, FbError> {
        let bad = |what: &str, v: &str| FbError::Geometry(format!("{what} {:?}", v.trim()));
        let (vw, vh) = pair(virtual_size).ok_or_else(|| bad("virtual_size", virtual_size))?;
        let stride: usize = stride.trim().parse().map_err(|_| bad("stride", stride))?;
        let bpp: usize = bits_per_pixel
            .trim()
            .parse()
            .map_err(|_| bad("bits_per_pixel", bits_per_pixel))?;
        if !matches!(bpp, 16 | 24 | 32) {
            return Err(bad(
                "bits_per_pixel (16, 24 or 32 supported)",
                bits_per_pixel,
            ));
        }
        let (px, py) = pair(pan).unwrap_or((0, 0));
        let (w, h) = mode_size(modes).unwrap_or((vw, vh));
        let (w, h) = (w.min(vw), h.min(vh.saturating_sub(py)));
        if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || stride < w * bpp / 8 {
            return Err(FbError::Geometry(format!(
                "{w}x{h} with stride {stride} at {bpp} bits a pixel"
            )));
        }
        Ok(Geometry {
            width: w,
            height: h,
            stride,
            bits_per_pixel: bpp,
            offset: py * stride + px * bpp / 8,
        })
    }

    /// Reads the geometry of `/sys/class/graphics/<name>`.
    pub fn read(sysfs: &Path) -> Result<Geometry, FbError> {
        let read = |f: &str| {
            let path = sysfs.join(f);
            std::fs::read_to_string(&path).map_err(|source| FbError::Io { path, source })
        };
        let optional = |f: &str| std::fs::read_to_string(sysfs.join(f)).unwrap_or_default();
        Geometry::parse(
            &read("virtual_size")?,
            &read("stride")?,
            &read("bits_per_pixel")?,
            &optional("modes"),
            &optional("pan"),
        )
    }

    /// `frame` in this framebuffer's pixel format (XRGB8888, RGB888 or RGB565, little
    /// endian), `stride` bytes a row, cut or padded with black to the screen's size.
    pub fn encode(&self, frame: &Frame) -> Vec<u8> {
        let bytes = self.bits_per_pixel / 8;
        let mut out = vec![0u8; self.stride * self.height];
        for y in 0..self.height.min(frame.height) {
            let row = &mut out[y * self.stride..(y + 1) * self.stride];
            for x in 0..self.width.min(frame.width) {
                let Some([r, g, b]) = frame.get(x, y) else {
                    continue;
                };
                let px = &mut row[x * bytes..(x + 1) * bytes];
                match bytes {
                    4 => px.copy_from_slice(&[b, g, r, 0]),
                    3 => px.copy_from_slice(&[b, g, r]),
                    _ => {
                        let v = (u16::from(r >> 3) << 11)
                            | (u16::from(g >> 2) << 5)
                            | u16::from(b >> 3);
                        px.copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        out
    }
}

/// `/dev/fb0` opened for writing, with its geometry.
pub struct Framebuffer {
    file: std::fs::File,
    pub geometry: Geometry,
}

impl Framebuffer {
    pub fn open(dev: &Path, sysfs: &Path) -> Result<Framebuffer, FbError> {
        let geometry = Geometry::read(sysfs)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dev)
            .map_err(|source| FbError::Io {
                path: dev.to_path_buf(),
                source,
            })?;
        Ok(Framebuffer { file, geometry })
    }

    /// Shows `frame`.
    pub fn show(&mut self, frame: &Frame) -> std::io::Result<()> {
        let data = self.geometry.encode(frame);
        self.file
            .seek(SeekFrom::Start(self.geometry.offset as u64))?;
        self.file.write_all(&data)?;
        self.file.flush()
    }
}

/// What the viewer writes to its own virtual terminal before switching to it: cursor
/// hidden, screen cleared, console blanking off. fbcon then draws nothing there (no text,
/// no cursor, no blanking) while the viewer draws on the framebuffer.
pub const VT_PREPARE: &str = "\x1b[?25l\x1b[2J\x1b[H\x1b[9;0]";

/// The virtual terminal `n` (2 to 63), made the foreground one after [`VT_PREPARE`]: the
/// console's text stays on tty1 (where /init writes it) and comes back with `chvt 1`.
/// Switching is busybox's `chvt` (the VT_ACTIVATE ioctl, without unsafe code here).
pub fn take_vt(n: u8, dev_dir: &Path) -> std::io::Result<()> {
    if !(2..=63).contains(&n) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("VT {n}: the viewer's VT is 2 to 63"),
        ));
    }
    let tty = dev_dir.join(format!("tty{n}"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tty)?
        .write_all(VT_PREPARE.as_bytes())?;
    chvt(n)
}

/// `chvt N`.
pub fn chvt(n: u8) -> std::io::Result<()> {
    let st = std::process::Command::new("chvt")
        .arg(n.to_string())
        .stdin(std::process::Stdio::null())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("chvt {n}: {st}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_from_sysfs() {
        let g = Geometry::parse("800,600\n", "3200\n", "32\n", "U:800x600p-0\n", "0,0\n")
            .expect("geometry");
        assert_eq!(
            g,
            Geometry {
                width: 800,
                height: 600,
                stride: 3200,
                bits_per_pixel: 32,
                offset: 0
            }
        );
        // Over-allocated for panning, panned down by 600 rows.
        let g = Geometry::parse("1024,1536", "4096", "32", "U:1024x768p-0", "0,600").expect("pan");
        assert_eq!((g.width, g.height, g.offset), (1024, 768, 600 * 4096));
        // Without modes: the virtual size.
        let g = Geometry::parse("640,480", "1280", "16", "", "").expect("no modes");
        assert_eq!((g.width, g.height), (640, 480));
        for (v, s, b) in [
            ("800", "3200", "32"),
            ("800,600", "100", "32"),
            ("800,600", "3200", "8"),
            ("0,600", "3200", "32"),
            ("800,600", "x", "32"),
            ("99999,600", "999999", "32"),
        ] {
            assert!(Geometry::parse(v, s, b, "", "").is_err(), "{v} {s} {b}");
        }
    }

    #[test]
    fn pixels_in_the_framebuffers_format() {
        let mut f = Frame::new(2, 1);
        f.set(0, 0, [0x10, 0x20, 0x30]);
        f.set(1, 0, [0xff, 0xff, 0xff]);
        let g32 = Geometry {
            width: 2,
            height: 2,
            stride: 12,
            bits_per_pixel: 32,
            offset: 0,
        };
        let out = g32.encode(&f);
        assert_eq!(out.len(), 24);
        assert_eq!(&out[..8], &[0x30, 0x20, 0x10, 0, 0xff, 0xff, 0xff, 0]);
        assert!(out[8..].iter().all(|&b| b == 0));
        let g16 = Geometry {
            bits_per_pixel: 16,
            stride: 4,
            ..g32
        };
        assert_eq!(&g16.encode(&f)[..4], &[0x06, 0x11, 0xff, 0xff]);
    }

    #[test]
    fn the_viewers_vt_is_prepared_then_switched_to() {
        // Hide the cursor (DECTCEM), clear, home, blanking off (setterm's ESC [ 9 ; 0 ]).
        assert_eq!(VT_PREPARE, "\x1b[?25l\x1b[2J\x1b[H\x1b[9;0]");
        let dir = tempfile::tempdir().expect("tmp");
        assert!(take_vt(1, dir.path()).is_err(), "tty1 is the console's");
        assert!(take_vt(64, dir.path()).is_err());
        // No tty2 there: nothing is switched.
        assert!(take_vt(2, dir.path()).is_err());
    }
}
