//! The captures on the broker's disk: one folder per lease (mode 0700 under a 0700
//! root), each capture a PNG and a JSON record of what it is (`<n>.png`, `<n>.json`,
//! numbered from 1 within the lease). A capture is read back only if its PNG still has
//! the recorded sha256. [`CaptureStore::sweep`] deletes captures older than the
//! retention time, and the folders they leave empty.
use crate::image::{sha256_hex, Rect};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A capture's number within its lease (from 1).
pub type CaptureId = u32;

/// The most captures one lease may keep.
pub const MAX_PER_LEASE: CaptureId = 10_000;

/// What a capture is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub id: CaptureId,
    pub lease: String,
    pub desktop: String,
    /// The sha256 of the PNG, lower-case hex.
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    /// The rectangle of the screen it shows, if cropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Rect>,
    /// When the screen was taken (Unix milliseconds).
    pub taken_at_ms: i64,
}

/// Why the capture store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lease id {0:?} cannot name a capture folder")]
    LeaseName(String),
    #[error("capture {id} of this lease does not exist (or its retention time has passed)")]
    NotFound { id: CaptureId },
    #[error("capture {id} of this lease was changed on disk (its sha256 differs); it is not used")]
    Tampered { id: CaptureId },
    #[error("this lease already keeps {MAX_PER_LEASE} captures")]
    Full,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// The captures under a root folder.
#[derive(Debug, Clone)]
pub struct CaptureStore {
    root: PathBuf,
}

fn valid_lease(lease: &str) -> bool {
    (1..=64).contains(&lease.len())
        && lease
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl CaptureStore {
    /// The store at `root` (created, mode 0700, if missing).
    pub fn open(root: &Path) -> Result<CaptureStore, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io("create", root))?;
        Ok(CaptureStore {
            root: root.to_path_buf(),
        })
    }

    fn lease_dir(&self, lease: &str) -> Result<PathBuf, StoreError> {
        if !valid_lease(lease) {
            return Err(StoreError::LeaseName(lease.chars().take(80).collect()));
        }
        Ok(self.root.join(lease))
    }

    /// Keeps `png` as the lease's next capture; `meta`'s id and sha256 are set here.
    pub fn save(&self, png: &[u8], mut meta: CaptureMeta) -> Result<CaptureMeta, StoreError> {
        let dir = self.lease_dir(&meta.lease)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        meta.sha256 = sha256_hex(png);
        let mut id = self.list(&meta.lease)?.last().map_or(1, |m| m.id + 1);
        loop {
            if id > MAX_PER_LEASE {
                return Err(StoreError::Full);
            }
            let path = dir.join(format!("{id}.png"));
            // The PNG's name is the claim on the number: two saves never share one.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(png).map_err(io("write", &path))?;
                    meta.id = id;
                    let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
                    let mpath = dir.join(format!("{id}.json"));
                    let tmp = dir.join(format!("{id}.json.tmp"));
                    std::fs::write(&tmp, json).map_err(io("write", &tmp))?;
                    std::fs::rename(&tmp, &mpath).map_err(io("write", &mpath))?;
                    return Ok(meta);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
                Err(e) => return Err(io("create", &path)(e)),
            }
        }
    }

    /// The lease's captures, by number (those whose record can be read).
    pub fn list(&self, lease: &str) -> Result<Vec<CaptureMeta>, StoreError> {
        let dir = self.lease_dir(lease)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &dir)(e)),
        };
        let mut v: Vec<CaptureMeta> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<CaptureMeta>(&b).ok())
            .filter(|m| m.lease == lease)
            .collect();
        v.sort_by_key(|m| m.id);
        Ok(v)
    }

    /// Capture `id` of `lease`: its PNG (checked against its sha256) and record.
    pub fn load(&self, lease: &str, id: CaptureId) -> Result<(Vec<u8>, CaptureMeta), StoreError> {
        let dir = self.lease_dir(lease)?;
        let meta: CaptureMeta = std::fs::read(dir.join(format!("{id}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|m: &CaptureMeta| m.id == id && m.lease == lease)
            .ok_or(StoreError::NotFound { id })?;
        let path = dir.join(format!("{id}.png"));
        let png = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound { id },
            _ => io("read", &path)(e),
        })?;
        if sha256_hex(&png) != meta.sha256 {
            return Err(StoreError::Tampered { id });
        }
        Ok((png, meta))
    }

    /// Deletes the captures taken before `before_ms` (and lease folders left empty);
    /// returns how many were deleted.
    pub fn sweep(&self, before_ms: i64) -> Result<usize, StoreError> {
        let leases = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) => return Err(io("read", &self.root)(e)),
        };
        let mut deleted = 0;
        for lease in leases.flatten() {
            let Some(name) = lease.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_lease(&name) {
                continue;
            }
            let dir = lease.path();
            for m in self.list(&name)? {
                if m.taken_at_ms < before_ms {
                    let _ = std::fs::remove_file(dir.join(format!("{}.png", m.id)));
                    let _ = std::fs::remove_file(dir.join(format!("{}.json", m.id)));
                    deleted += 1;
                }
            }
            // PNGs without a record (a save cut short), once everything else is old.
            if self.list(&name)?.is_empty() {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        let old = e
                            .metadata()
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .is_some_and(|d| (d.as_millis() as i64) < before_ms);
                        if old {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn meta(lease: &str, at: i64) -> CaptureMeta {
        CaptureMeta {
            id: 0,
            lease: lease.into(),
            desktop: "desk-01".into(),
            sha256: String::new(),
            width: 2,
            height: 1,
            crop: None,
            taken_at_ms: at,
        }
    }

    #[test]
    fn saves_numbers_loads_and_checks() {
        let d = tempfile::tempdir().unwrap();
        let s = CaptureStore::open(&d.path().join("captures")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.path().join("captures")), 0o700);
        let a = s.save(b"png-a", meta("lease1", 1000)).unwrap();
        let b = s.save(b"png-b", meta("lease1", 2000)).unwrap();
        let c = s.save(b"png-c", meta("lease2", 2000)).unwrap();
        assert_eq!((a.id, b.id, c.id), (1, 2, 1));
        assert_eq!(a.sha256, sha256_hex(b"png-a"));
        assert_eq!(mode(&d.path().join("captures/lease1")), 0o700);
        assert_eq!(mode(&d.path().join("captures/lease1/1.png")), 0o600);
        assert_eq!(s.load("lease1", 2).unwrap(), (b"png-b".to_vec(), b.clone()));
        assert_eq!(s.list("lease1").unwrap(), vec![a, b]);
        assert!(matches!(
            s.load("lease1", 3),
            Err(StoreError::NotFound { id: 3 })
        ));
        assert!(matches!(
            s.load("nobody", 1),
            Err(StoreError::NotFound { id: 1 })
        ));
        // A PNG changed on disk is not used.
        std::fs::write(d.path().join("captures/lease1/1.png"), b"other").unwrap();
        assert!(matches!(
            s.load("lease1", 1),
            Err(StoreError::Tampered { id: 1 })
        ));
        // Names that would leave the store are refused.
        for bad in ["", "../x", "a/b", ".", "x".repeat(65).as_str()] {
            assert!(
                matches!(s.list(bad), Err(StoreError::LeaseName(_))),
                "{bad:?}"
            );
            assert!(matches!(
                s.save(b"p", meta(bad, 1)),
                Err(StoreError::LeaseName(_))
            ));
        }
    }

    #[test]
    fn sweep_deletes_what_is_past_retention() {
        let d = tempfile::tempdir().unwrap();
        let s = CaptureStore::open(d.path()).unwrap();
        s.save(b"old", meta("l1", 1000)).unwrap();
        s.save(b"new", meta("l1", 5000)).unwrap();
        s.save(b"old", meta("l2", 1000)).unwrap();
        assert_eq!(s.sweep(3000).unwrap(), 2);
        assert_eq!(s.list("l1").unwrap().len(), 1);
        assert_eq!(s.load("l1", 2).unwrap().0, b"new");
        assert!(
            !d.path().join("l2").exists(),
            "an emptied lease folder goes too"
        );
        // Numbers keep growing after a sweep within a lease.
        assert_eq!(s.save(b"next", meta("l1", 6000)).unwrap().id, 3);
        assert_eq!(s.sweep(i64::MAX).unwrap(), 2);
        assert!(std::fs::read_dir(d.path()).unwrap().next().is_none());
    }
}
