//! Asking before a capture is sent (`airlock capture --confirm`, or `--send` with
//! `capture.confirm = true`): the saved PNG is shown with the configured viewer
//! (`capture.viewer`, the PNG's path added to its arguments), then the terminal asks;
//! only `y` or `yes` sends. Anything else, or no answer, keeps the capture unsent (saved
//! here, kept on the broker) and says how to send it later. Without a terminal to ask
//! on, nothing is taken: a confirmation is never skipped silently.
//!
//! The decisions ([`plan`], [`is_yes`], the texts) are pure and tested here; showing and
//! asking are thin.
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `airlock capture` does with the capture once it is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Keep it (saved, not sent).
    Keep,
    /// Send it.
    Send,
    /// Show it, ask, and send it only on `y`/`yes`.
    Ask,
}

/// What was asked for, on the command line and in the terminal's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    /// `--send`.
    pub send: bool,
    /// `--confirm` (implies sending on `y`).
    pub confirm: bool,
    /// `--no-confirm` (with `--send`: do not ask even when `capture.confirm` says so).
    pub no_confirm: bool,
    /// `capture.confirm`: `--send` asks first.
    pub confirm_by_default: bool,
}

/// Why `airlock capture` refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("asking before sending needs a terminal, and stdin is not one: nothing was taken or sent; run `airlock capture` in a terminal window, or send without asking (--send --no-confirm)")]
    NoTerminal,
    #[error("asking before sending needs a viewer to show the capture: set [capture] viewer (e.g. viewer = [\"eog\"]: a program and its arguments; the PNG's path is added) in the terminal's configuration")]
    NoViewer,
}

/// What to do, or why not to start at all (before anything is taken).
pub fn plan(r: Request, has_viewer: bool, on_terminal: bool) -> Result<Plan, Refusal> {
    let ask = r.confirm || (r.send && r.confirm_by_default && !r.no_confirm);
    if ask {
        if !has_viewer {
            return Err(Refusal::NoViewer);
        }
        if !on_terminal {
            return Err(Refusal::NoTerminal);
        }
        return Ok(Plan::Ask);
    }
    Ok(if r.send { Plan::Send } else { Plan::Keep })
}

/// Whether an answer means yes: `y` or `yes`, any case, spaces around ignored.
/// Anything else (an empty line, end of input) is no.
pub fn is_yes(answer: &str) -> bool {
    let a = answer.trim().to_ascii_lowercase();
    a == "y" || a == "yes"
}

/// The question: which capture goes where, for whom.
pub fn question(capture: u32, pacs: Option<&str>, patient: Option<&str>) -> String {
    format!(
        "Send capture {capture} to {} for patient {}? [y/N] ",
        pacs.map_or_else(|| "the PACS".to_owned(), |p| format!("the PACS {p}")),
        patient.unwrap_or("(the session's patient)")
    )
}

/// What is said when the capture is not sent.
pub fn not_sent(capture: u32, path: &Path, delete_after: Option<&str>) -> String {
    format!(
        "Not sent. Capture {capture} stays saved at {}{}; to send it later: airlock capture --send-only {capture}",
        path.display(),
        delete_after
            .map(|t| format!(" and on the broker until {t}"))
            .unwrap_or_default()
    )
}

/// The viewer's program, found as configured: an absolute path, or a name on `path`
/// (the value of `PATH`).
pub fn find_program(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|d| d.join(program))
        .find(|p| runnable(p))
}

/// Why the capture could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("cannot start the capture viewer {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("the capture viewer {program} stopped at once ({status})")]
    Failed { program: String, status: String },
}

/// How long a viewer that fails at once (no display, a file it cannot read) takes to
/// do so; one still running then is showing the image.
const STARTUP: Duration = Duration::from_millis(500);

/// A running viewer, stopped when the answer is given.
pub struct Shown {
    child: Option<tokio::process::Child>,
}

/// Shows `png` with `viewer` (program and arguments; the path is added). A viewer that
/// hands the file to another program and exits 0 at once is fine.
pub async fn show(viewer: &[String], png: &Path) -> Result<Shown, ViewerError> {
    let program = viewer.first().cloned().unwrap_or_default();
    let mut child = tokio::process::Command::new(&program)
        .args(viewer.iter().skip(1))
        .arg(png)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ViewerError::Start {
            program: program.clone(),
            source,
        })?;
    match tokio::time::timeout(STARTUP, child.wait()).await {
        Err(_) => Ok(Shown { child: Some(child) }),
        Ok(Ok(s)) if s.success() => Ok(Shown { child: None }),
        Ok(Ok(s)) => Err(ViewerError::Failed {
            program,
            status: s.to_string(),
        }),
        Ok(Err(source)) => Err(ViewerError::Start { program, source }),
    }
}

impl Shown {
    /// Closes the viewer (SIGTERM, then SIGKILL after a second).
    pub async fn close(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(1), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Asks `question` on the terminal (stderr) and reads one line of stdin; end of input
/// is an empty answer.
pub async fn ask(question: String) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = write!(err, "{question}");
        let _ = err.flush();
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(_) => line,
            Err(_) => String::new(),
        }
    })
    .await
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(send: bool, confirm: bool, no_confirm: bool, by_default: bool) -> Request {
        Request {
            send,
            confirm,
            no_confirm,
            confirm_by_default: by_default,
        }
    }

    #[test]
    fn only_y_or_yes_sends() {
        for yes in ["y", "Y", "yes", "YES", " yes \n", "y\r\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in [
            "",
            "\n",
            "n",
            "no",
            "N",
            "yep",
            "ye",
            "yes please",
            "oui",
            "y y",
            "1",
        ] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn the_plan_follows_the_flags_and_the_configuration() {
        let p = |r, viewer, tty| plan(r, viewer, tty);
        // Without asking.
        assert_eq!(
            p(req(false, false, false, false), false, false),
            Ok(Plan::Keep)
        );
        assert_eq!(
            p(req(true, false, false, false), false, false),
            Ok(Plan::Send)
        );
        // capture.confirm makes --send ask; it does not make a plain capture ask.
        assert_eq!(p(req(true, false, false, true), true, true), Ok(Plan::Ask));
        assert_eq!(
            p(req(false, false, false, true), false, false),
            Ok(Plan::Keep)
        );
        // --no-confirm overrides capture.confirm.
        assert_eq!(
            p(req(true, false, true, true), false, false),
            Ok(Plan::Send)
        );
        // --confirm asks, with or without --send.
        assert_eq!(p(req(false, true, false, false), true, true), Ok(Plan::Ask));
        assert_eq!(p(req(true, true, false, false), true, true), Ok(Plan::Ask));
        // Asking without a terminal or without a viewer: refused, never sent silently.
        assert_eq!(
            p(req(false, true, false, false), true, false),
            Err(Refusal::NoTerminal)
        );
        assert_eq!(
            p(req(true, false, false, true), true, false),
            Err(Refusal::NoTerminal)
        );
        assert_eq!(
            p(req(false, true, false, false), false, true),
            Err(Refusal::NoViewer)
        );
    }

    #[test]
    fn the_texts_say_what_goes_where_and_how_to_send_later() {
        assert_eq!(
            question(2, Some("PACS@pacs.example:104"), Some("0012345")),
            "Send capture 2 to the PACS PACS@pacs.example:104 for patient 0012345? [y/N] "
        );
        assert_eq!(
            question(1, None, None),
            "Send capture 1 to the PACS for patient (the session's patient)? [y/N] "
        );
        let t = not_sent(3, Path::new("/ehr/a.png"), Some("2026-12-04 10:15 UTC"));
        assert!(t.contains("/ehr/a.png"), "{t}");
        assert!(t.contains("until 2026-12-04 10:15 UTC"), "{t}");
        assert!(t.ends_with("airlock capture --send-only 3"), "{t}");
    }

    #[test]
    fn the_viewer_is_found_on_path_or_by_its_absolute_path() {
        let path = std::ffi::OsString::from("/nonexistent:/bin:/usr/bin");
        assert!(find_program("sh", Some(&path)).is_some());
        assert!(find_program("/bin/sh", None).is_some());
        assert!(find_program("no-such-viewer-airlock", Some(&path)).is_none());
        assert!(find_program("sh", None).is_none());
        // A file that is not executable is not a program.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("viewer");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(find_program(f.to_str().unwrap(), None).is_none());
    }

    #[tokio::test]
    async fn a_viewer_that_cannot_start_or_fails_at_once_is_an_error() {
        let png = Path::new("/nonexistent.png");
        let e = show(&["/nonexistent/viewer".into()], png)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ViewerError::Start { .. }), "{e}");
        let e = show(&["false".into()], png).await.err().unwrap();
        assert!(matches!(e, ViewerError::Failed { .. }), "{e}");
        // One that hands over and exits 0 at once, and one that keeps showing.
        show(&["true".into()], png).await.unwrap().close().await;
        let t0 = std::time::Instant::now();
        show(&["sleep".into(), "30".into()], Path::new("0"))
            .await
            .unwrap()
            .close()
            .await;
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
