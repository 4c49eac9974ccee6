//! An X server for tests of the display client: `Xvfb` on a free display number, and
//! screenshots of it (ImageMagick `import`, or [`Grabber`]: the screen's pixels over one
//! X connection, cheap enough to poll).
use crate::image::Image;
use crate::process::{run, Proc};
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What X tests need (Debian 12 packages).
pub const X_TOOLS: &[(&str, &str)] = &[
    ("Xvfb", "xvfb"),
    ("import", "imagemagick"),
    ("remote-viewer", "virt-viewer"),
];

/// Whether an X lock file names a process that no longer runs (or names none).
fn stale_lock(lock: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(lock) else {
        return false;
    };
    match text.trim().parse::<u32>() {
        Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => true,
    }
}

/// A running Xvfb; killed on drop.
pub struct Xvfb {
    _proc: Proc,
    display: String,
}

impl Xvfb {
    /// Starts `Xvfb :N -screen 0 WxHx24` on the first free N from 90, and waits for it.
    pub fn start(width: u32, height: u32) -> Result<Xvfb> {
        crate::tools::require(X_TOOLS)?;
        for n in 90..140 {
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
            if lock.exists() && !stale_lock(&lock) {
                continue;
            }
            if lock.exists() || socket.exists() {
                // A display whose X server was killed (SIGKILL leaves its lock and
                // socket): take it over.
                let _ = std::fs::remove_file(&lock);
                let _ = std::fs::remove_file(&socket);
            }
            let display = format!(":{n}");
            let proc = Proc::spawn(
                Command::new("Xvfb")
                    .args([&display, "-screen", "0", &format!("{width}x{height}x24")])
                    .args(["-nolisten", "tcp", "-noreset"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                "Xvfb",
            )?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !socket.exists() {
                if Instant::now() > deadline {
                    bail!("Xvfb {display} did not start within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(Xvfb {
                _proc: proc,
                display,
            });
        }
        bail!("no free X display number in :90..:140")
    }

    /// The X server's process id.
    pub fn pid(&self) -> u32 {
        self._proc.id()
    }

    /// The `DISPLAY` value.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// A PNG of the whole screen.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        run(Command::new("import")
            .args(["-display", &self.display, "-window", "root"])
            .arg(path))?;
        Ok(())
    }

    /// A connection that reads the screen's pixels (see [`Grabber`]).
    pub fn grabber(&self) -> Result<Grabber> {
        Grabber::connect(&self.display)
    }

    /// The whole screen as an image (written to `path` as PPM on the way).
    pub fn screen(&self, path: &Path) -> Result<crate::image::Image> {
        let target = format!("ppm:{}", path.display());
        run(Command::new("import").args([
            "-display",
            &self.display,
            "-window",
            "root",
            "-depth",
            "8",
            &target,
        ]))?;
        crate::image::Image::read_ppm(path)
    }
}

/// The screen of an X server read over one connection of its own (core protocol
/// `GetImage` of the root window, no extension, no authorisation: what Xvfb accepts from
/// a local client when started without `-auth`). One grab of a 1280x800 screen takes a
/// few milliseconds and no process start, so a benchmark can poll the screen for what a
/// client shows without taking the CPU its subject needs.
pub struct Grabber {
    stream: UnixStream,
    root: u32,
    width: u16,
    height: u16,
    /// Bits per pixel of the root window's depth in a ZPixmap.
    bpp: u8,
    /// Pixels are least significant byte first.
    lsb_first: bool,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let x = b.get(at..at + 2).context("X reply too short")?;
    Ok(u16::from_le_bytes([x[0], x[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let x = b.get(at..at + 4).context("X reply too short")?;
    Ok(u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// `n` rounded up to a multiple of 4 (X protocol padding).
fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl Grabber {
    /// Connects to display `:N` through its Unix socket.
    pub fn connect(display: &str) -> Result<Grabber> {
        let n = display
            .strip_prefix(':')
            .and_then(|d| d.split('.').next())
            .with_context(|| format!("not a local X display: {display:?}"))?;
        let path = format!("/tmp/.X11-unix/X{n}");
        let mut stream =
            UnixStream::connect(&path).with_context(|| format!("connecting to {path}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // Connection setup: little-endian, protocol 11.0, no authorisation.
        stream.write_all(&[b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
        let mut head = [0u8; 8];
        stream
            .read_exact(&mut head)
            .context("reading the X setup reply")?;
        let mut body = vec![0u8; usize::from(u16_at(&head, 6)?) * 4];
        stream.read_exact(&mut body)?;
        if head[0] != 1 {
            let reason_len = usize::from(head[1]).min(body.len());
            bail!(
                "the X server {display} refused the connection: {}",
                String::from_utf8_lossy(&body[..reason_len])
            );
        }
        // The setup reply less its first 8 bytes: fixed fields, vendor, pixmap formats,
        // then the first screen.
        let vendor_len = usize::from(u16_at(&body, 16)?);
        let formats = usize::from(*body.get(21).context("X setup reply too short")?);
        let lsb_first = body[22] == 0;
        let formats_at = 32 + pad4(vendor_len);
        let screen = formats_at + 8 * formats;
        let root = u32_at(&body, screen)?;
        let width = u16_at(&body, screen + 20)?;
        let height = u16_at(&body, screen + 22)?;
        let depth = *body.get(screen + 38).context("X setup reply too short")?;
        let bpp = (0..formats)
            .map(|i| &body[formats_at + 8 * i..formats_at + 8 * i + 2])
            .find(|f| f[0] == depth)
            .map(|f| f[1])
            .with_context(|| format!("no pixmap format for depth {depth}"))?;
        ensure!(
            depth == 24 && bpp == 32,
            "only 24-bit colour in 32-bit pixels is supported (depth {depth}, {bpp} bits per pixel)"
        );
        Ok(Grabber {
            stream,
            root,
            width,
            height,
            bpp,
            lsb_first,
        })
    }

    /// The screen's size in pixels.
    pub fn size(&self) -> (u16, u16) {
        (self.width, self.height)
    }

    /// The whole screen now.
    pub fn grab(&mut self) -> Result<Image> {
        let (w, h) = (self.width, self.height);
        // GetImage (73), format ZPixmap (2), 5 words: root, x=0, y=0, w, h, all planes.
        let mut req = vec![73u8, 2, 5, 0];
        req.extend_from_slice(&self.root.to_le_bytes());
        req.extend_from_slice(&[0, 0, 0, 0]);
        req.extend_from_slice(&w.to_le_bytes());
        req.extend_from_slice(&h.to_le_bytes());
        req.extend_from_slice(&u32::MAX.to_le_bytes());
        self.stream.write_all(&req)?;
        let mut head = [0u8; 32];
        self.stream
            .read_exact(&mut head)
            .context("reading the GetImage reply")?;
        ensure!(
            head[0] == 1,
            "GetImage failed: X error {} (major opcode {})",
            head[1],
            head[10]
        );
        let mut data = vec![0u8; u32_at(&head, 4)? as usize * 4];
        self.stream.read_exact(&mut data)?;
        let (w, h) = (usize::from(w), usize::from(h));
        let stride = pad4(w * usize::from(self.bpp) / 8);
        ensure!(
            data.len() >= stride * h,
            "GetImage returned too little data"
        );
        let mut rgb = Vec::with_capacity(w * h * 3);
        for row in data.chunks_exact(stride).take(h) {
            for px in row[..w * 4].chunks_exact(4) {
                if self.lsb_first {
                    rgb.extend_from_slice(&[px[2], px[1], px[0]]);
                } else {
                    rgb.extend_from_slice(&[px[1], px[2], px[3]]);
                }
            }
        }
        Ok(Image {
            width: w,
            height: h,
            rgb,
        })
    }
}
