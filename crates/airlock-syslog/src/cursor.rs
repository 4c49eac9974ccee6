//! The forwarding cursor: the sequence number and hash of the last audit record the
//! syslog server has taken, in a small file of the broker's state directory, replaced
//! atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! A missing file means nothing was forwarded yet: forwarding starts at record 1, so the
//! server gets the whole log (enabling forwarding on a broker that has run for a while
//! sends its history once). A corrupt file is treated the same way, with a warning: it
//! can only cost duplicates, never a gap.
use crate::SyslogError;
use std::io::Write;
use std::path::Path;

const MAGIC: &str = "airlock-audit-forward-cursor 1";

/// The last record the server took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub seq: i64,
    pub hash: String,
}

/// What the cursor file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No file: nothing forwarded yet.
    Missing,
    /// A file that is not a cursor (why).
    Corrupt(String),
    Found(Cursor),
}

impl Cursor {
    fn line(&self) -> String {
        format!("{MAGIC} seq={} hash={}\n", self.seq, self.hash)
    }

    fn parse(text: &str) -> Result<Cursor, String> {
        let line = text.strip_suffix('\n').ok_or("the line is incomplete")?;
        let rest = line
            .strip_prefix(MAGIC)
            .and_then(|r| r.strip_prefix(" seq="))
            .ok_or("it does not start with the cursor's header")?;
        let (seq, hash) = rest.split_once(" hash=").ok_or("no hash")?;
        let seq: i64 = seq
            .parse()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or("the sequence number is not a positive number")?;
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("the hash is not 64 lower-case hex digits".into());
        }
        Ok(Cursor {
            seq,
            hash: hash.to_owned(),
        })
    }
}

/// Reads the cursor file. Errors only when it exists but cannot be read.
pub fn load(path: &Path) -> Result<Loaded, SyslogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => {
            return Err(SyslogError::Cursor {
                path: path.to_owned(),
                source,
            })
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(Loaded::Corrupt("it is not text".into()));
    };
    Ok(match Cursor::parse(text) {
        Ok(c) => Loaded::Found(c),
        Err(why) => Loaded::Corrupt(why),
    })
}

/// Replaces the cursor file with `c`: all or nothing, and on disk when this returns.
pub fn store(path: &Path, c: &Cursor) -> Result<(), SyslogError> {
    let err = |source| SyslogError::Cursor {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(c.line().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_replaces_the_last() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit-forward.cursor");
        assert_eq!(load(&p).unwrap(), Loaded::Missing);
        let c = Cursor {
            seq: 41,
            hash: "ab".repeat(32),
        };
        store(&p, &c).unwrap();
        assert_eq!(load(&p).unwrap(), Loaded::Found(c));
        let c2 = Cursor {
            seq: 42,
            hash: "cd".repeat(32),
        };
        store(&p, &c2).unwrap();
        assert_eq!(load(&p).unwrap(), Loaded::Found(c2));
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("audit-forward.cursor")]
        );
    }

    #[test]
    fn corrupt_files_are_named_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c");
        let good = format!("{MAGIC} seq=3 hash={}\n", "0f".repeat(32));
        for (text, why) in [
            (&b""[..], "incomplete"),
            (b"\xff\xfe", "not text"),
            (b"garbage\n", "header"),
            (good.trim_end().as_bytes(), "incomplete"),
            (good.replace("seq=3", "seq=-3").as_bytes(), "positive"),
            (good.replace("seq=3", "seq=0").as_bytes(), "positive"),
            (good.replace("seq=3", "seq=x").as_bytes(), "positive"),
            (good.replace("0f0f", "0F0F").as_bytes(), "hex"),
            (good.replace(" hash=", " hush=").as_bytes(), "no hash"),
            (format!("{good}{good}").as_bytes(), "hex"),
        ] {
            std::fs::write(&p, text).unwrap();
            match load(&p).unwrap() {
                Loaded::Corrupt(w) => assert!(w.contains(why), "{w} for {text:?}"),
                other => panic!("{other:?} for {text:?}"),
            }
        }
        std::fs::write(&p, &good).unwrap();
        assert!(matches!(
            load(&p).unwrap(),
            Loaded::Found(Cursor { seq: 3, .. })
        ));
        // A directory where the file should be is an error, not "missing".
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        assert!(load(&dir).is_err());
    }
}
