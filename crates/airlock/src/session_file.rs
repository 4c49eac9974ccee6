//! Where `airlock open` tells `airlock capture` which lease it holds: a small JSON file
//! private to the user (`$XDG_RUNTIME_DIR/airlock/session.json`, else
//! `/tmp/airlock-<uid>/session.json`; folder 0700, file 0600), written when the lease is
//! granted and removed when the session ends. It holds no secret: `airlock capture`
//! authenticates with the terminal's token like `airlock open`.
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use airlock_core::{DesktopId, LeaseId};
use serde::{Deserialize, Serialize};

/// What an `airlock open` session says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFile {
    /// The broker's base URL.
    pub broker: String,
    pub lease_id: LeaseId,
    pub desktop_id: DesktopId,
    /// The patient ID the session was opened for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// The `airlock open` process.
    pub pid: u32,
}

/// Why the session file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    #[error("no airlock open session is running for this user ({} does not exist); open the disc first, or pass --lease", path.display())]
    Missing { path: PathBuf },
    #[error("cannot use {}: {why}", path.display())]
    Unusable { path: PathBuf, why: String },
}

/// The session file of the user running this program.
pub fn path() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("airlock").join("session.json"),
        None => PathBuf::from(format!("/tmp/airlock-{uid}")).join("session.json"),
    }
}

/// Writes `s` to `path` (its folder created private, the file replaced atomically).
pub fn write(path: &Path, s: &SessionFile) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    check_owned(dir).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".session.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(s).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// Removes `path` if it still names this process's session.
pub fn remove(path: &Path) {
    if read(path).is_ok_and(|s| s.pid == std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

/// A folder or file must belong to this user and be private to it.
fn check_owned(p: &Path) -> Result<(), String> {
    let m = std::fs::symlink_metadata(p).map_err(|e| e.to_string())?;
    let me = rustix::process::getuid().as_raw();
    if m.file_type().is_symlink() {
        return Err("it is a symbolic link".into());
    }
    if m.uid() != me {
        return Err(format!(
            "it belongs to uid {}, not to this user ({me})",
            m.uid()
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(format!("others can read it (mode {:o})", m.mode() & 0o777));
    }
    Ok(())
}

/// Reads the session file at `path` (it must be this user's and private).
pub fn read(path: &Path) -> Result<SessionFile, SessionFileError> {
    if !path.exists() {
        return Err(SessionFileError::Missing {
            path: path.to_path_buf(),
        });
    }
    let unusable = |why: String| SessionFileError::Unusable {
        path: path.to_path_buf(),
        why,
    };
    if let Some(dir) = path.parent() {
        check_owned(dir).map_err(|w| unusable(format!("its folder: {w}")))?;
    }
    check_owned(path).map_err(unusable)?;
    let bytes = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
    if bytes.len() > 64 * 1024 {
        return Err(unusable("it is too large".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| unusable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn sample() -> SessionFile {
        SessionFile {
            broker: "http://127.0.0.1:7000".into(),
            lease_id: LeaseId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            desktop_id: DesktopId::parse("desk-01").unwrap(),
            patient_id: Some("P1".into()),
            pid: std::process::id(),
        }
    }

    #[test]
    fn written_private_read_back_and_removed_by_its_writer_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("airlock/session.json");
        write(&p, &sample()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        assert_eq!(read(&p).unwrap(), sample());
        // Another process's session stays.
        let mut other = sample();
        other.pid += 1;
        write(&p, &other).unwrap();
        remove(&p);
        assert!(p.exists());
        write(&p, &sample()).unwrap();
        remove(&p);
        assert!(matches!(read(&p), Err(SessionFileError::Missing { .. })));
    }

    #[test]
    fn a_file_others_can_read_or_a_broken_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("airlock/session.json");
        write(&p, &sample()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("others can read it"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(read(&p), Err(SessionFileError::Unusable { .. })));
    }
}
