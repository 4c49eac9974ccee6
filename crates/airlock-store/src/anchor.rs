//! Anchors of the audit chain: the head (sequence number and hash) written, from time to
//! time and at shutdown, to an append-only file outside the database. The chain itself
//! catches a record changed, inserted or removed in the middle; only an anchor catches
//! records cut off the end, or a chain rewritten from some point on: a later check finds
//! fewer records than an anchor names ([`AnchorCheck::Truncated`]), or another hash at
//! its sequence number ([`AnchorCheck::Rewritten`]).
//!
//! The file holds one JSON object a line (`{"ts":…,"seq":…,"hash":"…","why":"…"}`);
//! lines that are not anchors are counted and otherwise ignored.
use crate::audit::GENESIS_HASH;
use airlock_core::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The chain's head at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// When it was written.
    pub ts: UnixMillis,
    /// The newest record's sequence number (0: an empty chain).
    pub seq: i64,
    /// Its hash ([`GENESIS_HASH`] for an empty chain).
    pub hash: String,
    /// Why it was written (`start`, `periodic`, `shutdown`).
    pub why: String,
}

impl Anchor {
    /// One line of the anchor file, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An anchor from a line of the file, if it is one (a hash of 64 hex digits and a
    /// sequence number from 0).
    pub fn parse_line(line: &str) -> Option<Anchor> {
        let a: Anchor = serde_json::from_str(line.trim()).ok()?;
        let hex = a.hash.len() == 64 && a.hash.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && a.seq >= 0).then_some(a)
    }
}

/// What the chain says of an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AnchorCheck {
    /// The chain holds the anchored record, with the anchored hash.
    Holds,
    /// The chain ends at record `last_seq`, before the anchored record: records were cut
    /// off the end.
    Truncated { last_seq: i64 },
    /// The record at the anchored sequence number has another hash (`found`), or is
    /// missing (`None`): the chain was rewritten from there or before.
    Rewritten { found: Option<String> },
}

impl AnchorCheck {
    /// Whether the chain agrees with the anchor.
    pub fn holds(&self) -> bool {
        *self == AnchorCheck::Holds
    }
}

/// Compares an anchor with the chain: its newest sequence number (`last_seq`, 0 when
/// empty) and the hash of the record at the anchor's sequence number, if there is one.
pub fn check_anchor(anchor: &Anchor, last_seq: i64, hash_at_anchor: Option<&str>) -> AnchorCheck {
    if anchor.seq == 0 {
        return if anchor.hash == GENESIS_HASH {
            AnchorCheck::Holds
        } else {
            AnchorCheck::Rewritten {
                found: Some(GENESIS_HASH.to_owned()),
            }
        };
    }
    if last_seq < anchor.seq {
        return AnchorCheck::Truncated { last_seq };
    }
    match hash_at_anchor {
        Some(h) if h == anchor.hash => AnchorCheck::Holds,
        found => AnchorCheck::Rewritten {
            found: found.map(str::to_owned),
        },
    }
}

/// What went wrong with the anchor file.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("cannot open the audit anchor file {} for appending; create its directory and let airlockd write there (audit.anchor_file)", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to the audit anchor file {}; check the disk (audit.anchor_file)", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the audit anchor file {} (audit.anchor_file)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The anchor file, open for appending only (`O_APPEND`: every write goes to its end).
pub struct AnchorLog {
    path: PathBuf,
    file: File,
}

impl AnchorLog {
    /// Opens (creating, mode 0640) the file for appending.
    pub fn open(path: &Path) -> Result<AnchorLog, AnchorError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|source| AnchorError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(AnchorLog {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends an anchor and waits until it is on disk.
    pub fn append(&mut self, anchor: &Anchor) -> Result<(), AnchorError> {
        let mut line = anchor.to_line();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| AnchorError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The anchors of a file, in the order written, and how many lines were not anchors.
/// A file that does not exist has none.
pub fn read_anchors(path: &Path) -> Result<(Vec<Anchor>, usize), AnchorError> {
    let read_error = |source| AnchorError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(read_error(e)),
    };
    let mut anchors = Vec::new();
    let mut other = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(read_error)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(&line).ok().and_then(Anchor::parse_line) {
            Some(a) => anchors.push(a),
            None => other += 1,
        }
    }
    Ok((anchors, other))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(seq: i64, hash: &str) -> Anchor {
        Anchor {
            ts: 5,
            seq,
            hash: hash.to_owned(),
            why: "periodic".into(),
        }
    }

    #[test]
    fn checks_every_case() {
        let h = "ab".repeat(32);
        let other = "cd".repeat(32);
        let a = anchor(7, &h);
        assert_eq!(check_anchor(&a, 7, Some(&h)), AnchorCheck::Holds);
        assert_eq!(check_anchor(&a, 12, Some(&h)), AnchorCheck::Holds);
        assert_eq!(
            check_anchor(&a, 4, None),
            AnchorCheck::Truncated { last_seq: 4 }
        );
        assert_eq!(
            check_anchor(&a, 0, None),
            AnchorCheck::Truncated { last_seq: 0 }
        );
        assert_eq!(
            check_anchor(&a, 9, Some(&other)),
            AnchorCheck::Rewritten {
                found: Some(other.clone())
            }
        );
        assert_eq!(
            check_anchor(&a, 9, None),
            AnchorCheck::Rewritten { found: None }
        );
        let empty = anchor(0, GENESIS_HASH);
        assert!(check_anchor(&empty, 0, None).holds());
        assert!(check_anchor(&empty, 3, Some(&h)).holds());
        assert!(!check_anchor(&anchor(0, &h), 3, None).holds());
    }

    #[test]
    fn lines_round_trip_and_junk_is_counted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("anchors.log");
        assert_eq!(
            read_anchors(&p).unwrap(),
            (vec![], 0),
            "no file, no anchors"
        );
        let a = anchor(3, &"0f".repeat(32));
        let b = anchor(9, &"1e".repeat(32));
        {
            let mut log = AnchorLog::open(&p).unwrap();
            log.append(&a).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(
                b"not an anchor\n{\"ts\":1,\"seq\":-1,\"hash\":\"x\",\"why\":\"\"}\n\xff\xfe\n\n",
            )
            .unwrap();
        {
            // Reopened: appends after what is there.
            let mut log = AnchorLog::open(&p).unwrap();
            log.append(&b).unwrap();
            assert_eq!(log.path(), p);
        }
        assert_eq!(read_anchors(&p).unwrap(), (vec![a, b], 3));
        assert!(Anchor::parse_line(&anchor(1, "zz").to_line()).is_none());
    }

    #[test]
    fn an_unwritable_place_is_named() {
        let e = AnchorLog::open(Path::new("/nonexistent-dir/anchors.log"))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("/nonexistent-dir/anchors.log"),
            "{e}"
        );
        assert!(e.to_string().contains("audit.anchor_file"), "{e}");
    }
}
