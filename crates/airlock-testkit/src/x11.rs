//! An X server for tests of the display client: `Xvfb` on a free display number, and
//! screenshots of it (ImageMagick `import`).
use crate::process::{run, Proc};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What X tests need (Debian 12 packages).
pub const X_TOOLS: &[(&str, &str)] = &[
    ("Xvfb", "xvfb"),
    ("import", "imagemagick"),
    ("remote-viewer", "virt-viewer"),
];

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
            if socket.exists() || lock.exists() {
                continue;
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
