//! `demo-viewer --dev srN --root /media/srN --font FONT.psf [--control FIFO] [--vt N]`:
//! shows the DICOM images of the disc mounted at `--root` full-screen on `/dev/fb0`, on
//! a virtual terminal of its own (tty2 unless `--vt` says otherwise; 0: none), until it
//! is killed (the guest's /init does, when the disc goes, and switches back to tty1),
//! paging with the arrow keys, PageUp/PageDown, Home/End and the control FIFO's
//! commands. After drawing, and after every command, it prints `AIRLOCK-VIEW dev=srN
//! images=N shown=K skipped=M` on its standard output (the guest's agent port), or
//! `AIRLOCK-VIEW-ERROR dev=srN reason=…` if it cannot use the screen: docs/guest.md.
//! Logs go to standard error.
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use demo_viewer::fb::{chvt, take_vt, Framebuffer};
use demo_viewer::input::{watch_control, watch_keyboards};
use demo_viewer::psf::Font;
use demo_viewer::view::{self, Position};
use demo_viewer::{dicom, disc};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    dev: String,
    root: PathBuf,
    font: PathBuf,
    control: Option<PathBuf>,
    fb: PathBuf,
    fb_sysfs: PathBuf,
    /// The viewer's own VT (0: none, draw on whatever is in the foreground).
    vt: u8,
    dev_dir: PathBuf,
    input: PathBuf,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args> {
        let mut a = Args {
            dev: String::new(),
            root: PathBuf::new(),
            font: PathBuf::new(),
            control: None,
            fb: "/dev/fb0".into(),
            fb_sysfs: "/sys/class/graphics/fb0".into(),
            vt: 2,
            dev_dir: "/dev".into(),
            input: "/dev/input".into(),
        };
        while let Some(flag) = it.next() {
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--dev" => a.dev = value,
                "--root" => a.root = value.into(),
                "--font" => a.font = value.into(),
                "--control" => a.control = Some(value.into()),
                "--fb" => a.fb = value.into(),
                "--fb-sysfs" => a.fb_sysfs = value.into(),
                "--vt" => a.vt = value.parse().context("--vt takes a number")?,
                "--dev-dir" => a.dev_dir = value.into(),
                "--input" => a.input = value.into(),
                _ => bail!("unknown option {flag}"),
            }
        }
        if a.dev.is_empty()
            || a.dev.len() > 16
            || !a
                .dev
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("--dev must name the drive (e.g. sr0)");
        }
        if a.root.as_os_str().is_empty() || a.font.as_os_str().is_empty() {
            bail!("usage: demo-viewer --dev srN --root MOUNT --font FONT.psf [--control FIFO]");
        }
        Ok(a)
    }
}

/// One line on the agent port, in one write.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

fn run() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let font_data =
        std::fs::read(&args.font).with_context(|| format!("reading {}", args.font.display()))?;
    let font = Font::parse(&font_data).with_context(|| format!("{}", args.font.display()))?;

    let found = disc::find_images(&args.root);
    for s in &found.skipped {
        tracing::warn!(file = %s.path.display(), "skipped: {}", s.why);
    }
    if found.truncated {
        tracing::warn!("the disc has more than the viewer looks at: some images left out");
    }
    let (count, skipped) = (found.images.len(), found.skipped.len());
    let line = |shown: usize| {
        format!(
            "AIRLOCK-VIEW dev={} images={count} shown={shown} skipped={skipped}",
            args.dev
        )
    };
    if count == 0 {
        tracing::info!("no images on the disc: the console keeps the screen");
        say(&line(0));
        return Ok(());
    }

    let mut fb = match Framebuffer::open(&args.fb, &args.fb_sysfs) {
        Ok(fb) => fb,
        Err(e) => {
            say(&format!(
                "AIRLOCK-VIEW-ERROR dev={} reason=no-screen",
                args.dev
            ));
            return Err(e.into());
        }
    };
    let (w, h) = (fb.geometry.width, fb.geometry.height);
    tracing::info!(
        width = w,
        height = h,
        images = count,
        "showing the disc's images"
    );
    // The viewer owns the screen: its own VT, empty and without a cursor, is in the
    // foreground until /init switches back to tty1.
    if args.vt != 0 {
        if let Err(e) = take_vt(args.vt, &args.dev_dir) {
            tracing::warn!(vt = args.vt, "could not switch to the viewer's VT: {e}");
        }
    }

    let (tx, rx) = std::sync::mpsc::channel();
    let keyboards = watch_keyboards(&args.input, &tx);
    tracing::info!(devices = keyboards, "reading input devices");
    if let Some(c) = &args.control {
        if let Err(e) = watch_control(c, tx.clone()) {
            tracing::warn!(fifo = %c.display(), "no control FIFO: {e}");
        }
    }

    let show = |fb: &mut Framebuffer, index: usize| -> Result<()> {
        let entry = &found.images[index];
        let at = Position {
            dev: args.dev.clone(),
            index,
            count,
        };
        let frame = match disc::read_capped(&entry.path).and_then(|d| dicom::decode(&d)) {
            Ok(decoded) => view::image(w, h, &font, &decoded, &at),
            Err(why) => {
                tracing::warn!(file = %entry.path.display(), "cannot show: {why}");
                view::failed(w, h, &font, &why.to_string(), &at)
            }
        };
        fb.show(&frame).context("writing the framebuffer")
    };
    let mut pages = || -> Result<()> {
        let mut index = 0;
        show(&mut fb, index)?;
        say(&line(index + 1));
        // `tx` stays: with no input device the viewer still shows its image until
        // killed.
        while let Ok(cmd) = rx.recv() {
            let next = cmd.apply(index, count);
            if next != index {
                index = next;
                show(&mut fb, index)?;
            }
            say(&line(index + 1));
        }
        Ok(())
    };
    let result = pages();
    if result.is_err() {
        say(&format!(
            "AIRLOCK-VIEW-ERROR dev={} reason=screen-write",
            args.dev
        ));
    }
    drop(tx);
    // Only on failure: the console gets the screen back.
    if args.vt != 0 {
        let _ = chvt(1);
    }
    result
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
