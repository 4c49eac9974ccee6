//! Anchoring the audit chain (`[audit]`): the broker appends the chain's head to the
//! anchor file (opened `O_APPEND`, outside the state directory) at start, every
//! `anchor_interval_s` when it moved, and at shutdown, and sends each anchor to the local
//! syslog when asked. `airlockd audit verify` and the start-up check compare every anchor
//! of the file with the chain ([`airlock_store::anchor`]).
use crate::config::AuditAnchoring;
use airlock_pool::{ErrorChain, Pool};
use airlock_store::anchor::{check_anchor, read_anchors};
use airlock_store::{Anchor, AnchorCheck, AnchorError, AnchorLog, Store};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The broker's anchor writer.
pub struct Anchorer {
    log: Mutex<AnchorLog>,
    syslog: bool,
    /// The last anchor written by this broker.
    last: Mutex<Option<Anchor>>,
    /// What the start-up check of the file found wrong.
    problem_at_start: Mutex<Option<String>>,
}

/// What the anchors of a file say of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct FileCheck {
    /// How many anchors the file holds (and lines that are not anchors).
    pub anchors: usize,
    pub other_lines: usize,
    /// The newest anchor (the last one written).
    pub latest: Option<Anchor>,
    /// The anchor that disagrees with the chain, with the highest sequence number.
    pub failed: Option<(Anchor, AnchorCheck)>,
}

/// Compares every anchor of `file` with the chain (`check` looks one up); anchors of the
/// same record are looked at once.
pub fn check_file<E>(
    file: &Path,
    mut check: impl FnMut(&Anchor) -> Result<AnchorCheck, E>,
) -> Result<FileCheck, anyhow::Error>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let (anchors, other_lines) = read_anchors(file)?;
    let mut seen = std::collections::HashSet::new();
    let mut failed: Option<(Anchor, AnchorCheck)> = None;
    for a in &anchors {
        if !seen.insert((a.seq, a.hash.clone())) {
            continue;
        }
        let c = check(a)?;
        if !c.holds() && failed.as_ref().is_none_or(|(f, _)| a.seq > f.seq) {
            failed = Some((a.clone(), c));
        }
    }
    Ok(FileCheck {
        anchors: anchors.len(),
        other_lines,
        latest: anchors.last().cloned(),
        failed,
    })
}

/// An anchor for people: its record, hash, time and why it was written.
pub fn describe(a: &Anchor) -> String {
    let when =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(a.ts).unwrap_or(0));
    format!(
        "record {} hash {} (written {}, {})",
        a.seq,
        a.hash,
        httpdate::fmt_http_date(when),
        a.why
    )
}

/// What a failed anchor means, in one line naming the anchor, the file and what is
/// missing.
pub fn explain(file: &Path, a: &Anchor, c: &AnchorCheck) -> String {
    match c {
        AnchorCheck::Holds => format!("the chain holds the anchor {}", describe(a)),
        AnchorCheck::Truncated { last_seq } => format!(
            "audit log TRUNCATED: the anchor in {} names {}, but the chain ends at record {last_seq}: records {}..={} are missing",
            file.display(),
            describe(a),
            last_seq + 1,
            a.seq
        ),
        AnchorCheck::Rewritten { found } => format!(
            "audit log REWRITTEN: the anchor in {} names {}, but the database has {} at record {}",
            file.display(),
            describe(a),
            found
                .as_deref()
                .map_or("no record".to_owned(), |h| format!("hash {h}")),
            a.seq
        ),
    }
}

impl Anchorer {
    /// Opens the anchor file for appending (failing when it cannot be written).
    pub fn open(cfg: &AuditAnchoring) -> Result<Anchorer, AnchorError> {
        Ok(Anchorer {
            log: Mutex::new(AnchorLog::open(&cfg.file)?),
            syslog: cfg.syslog,
            last: Mutex::new(None),
            problem_at_start: Mutex::new(None),
        })
    }

    /// The anchor file.
    pub fn path(&self) -> PathBuf {
        self.log
            .lock()
            .map(|l| l.path().to_owned())
            .unwrap_or_default()
    }

    /// The last anchor this broker wrote.
    pub fn latest(&self) -> Option<Anchor> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Anchors the chain's head now, unless `why` is `periodic` and it has not moved
    /// since the last anchor. Errors are logged.
    pub fn anchor(&self, pool: &Pool, why: &str) {
        let (seq, hash) = match pool.audit_head() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "cannot read the audit chain's head to anchor it");
                return;
            }
        };
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if why == "periodic"
            && last
                .as_ref()
                .is_some_and(|l| l.seq == seq && l.hash == hash)
        {
            return;
        }
        let a = Anchor {
            ts: now_ms(),
            seq,
            hash,
            why: why.to_owned(),
        };
        let written = self.log.lock().map(|mut log| log.append(&a));
        match written {
            Ok(Ok(())) => {
                tracing::info!(seq = a.seq, hash = %a.hash, why, "audit chain anchored");
                if self.syslog {
                    send_syslog(&a);
                }
                *last = Some(a);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %ErrorChain(&e), "could not anchor the audit chain")
            }
            Err(_) => tracing::error!("the anchor file's lock is poisoned"),
        }
    }

    /// What the start-up check found wrong, if anything (for `/healthz` and
    /// `/v1/audit/verify`).
    pub fn problem_at_start(&self) -> Option<String> {
        self.problem_at_start.lock().ok().and_then(|p| p.clone())
    }

    /// Checks every anchor of the file against the database `db` as the broker finds it
    /// at start, before the pool writes to it; a disagreement is an error in the log (the
    /// chain was cut or rewritten while the broker was away) and stays a problem of
    /// `/healthz` until the next start. A missing database is an empty chain.
    pub fn check_at_start(&self, db: &Path) {
        let problem = self.check_file_now(db);
        if let Ok(mut p) = self.problem_at_start.lock() {
            *p = problem;
        }
    }

    fn check_file_now(&self, db: &Path) -> Option<String> {
        let path = self.path();
        let checked = match db.exists() {
            true => Store::open_read_only(db)
                .map_err(anyhow::Error::from)
                .and_then(|store| check_file(&path, |a| store.check_anchor(a))),
            false => check_file(&path, |a| {
                Ok::<_, std::convert::Infallible>(check_anchor(a, 0, None))
            }),
        };
        match checked {
            Ok(FileCheck {
                failed: Some((a, c)),
                ..
            }) => {
                let problem = explain(&path, &a, &c);
                tracing::error!("{problem}; run `airlockd audit verify`");
                Some(problem)
            }
            Ok(f) => {
                tracing::info!(
                    anchors = f.anchors,
                    "the audit chain agrees with the anchors in {}",
                    path.display()
                );
                None
            }
            Err(e) => {
                let problem = format!("cannot check the audit anchors: {e:#}");
                tracing::error!("{problem}");
                Some(problem)
            }
        }
    }

    /// Anchors every `interval` (when the head moved) for the life of the broker.
    pub async fn run(self: std::sync::Arc<Self>, pool: Pool, interval: std::time::Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (me, p) = (self.clone(), pool.clone());
            // The store is behind a blocking mutex: keep it off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || me.anchor(&p, "periodic")).await;
        }
    }
}

/// The time now in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The syslog line of an anchor: facility authpriv (10), severity info (6), the tag
/// `airlockd[pid]` (the local syslog daemon adds time and host).
fn syslog_line(a: &Anchor, pid: u32) -> String {
    format!(
        "<86>airlockd[{pid}]: audit anchor seq={} hash={} why={} ts={}",
        a.seq, a.hash, a.why, a.ts
    )
}

/// Sends an anchor to the local syslog (`/dev/log`, a unix datagram socket).
fn send_syslog(a: &Anchor) {
    let line = syslog_line(a, std::process::id());
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.send_to(line.as_bytes(), "/dev/log"));
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not send the audit anchor to syslog (/dev/log); it is in the anchor file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn anchor(seq: i64, hash: &str, why: &str) -> Anchor {
        Anchor {
            ts: 1_764_748_800_000,
            seq,
            hash: hash.to_owned(),
            why: why.to_owned(),
        }
    }

    #[test]
    fn every_anchor_is_checked_and_the_highest_failure_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let (h5, h9, forged) = ("05".repeat(32), "09".repeat(32), "ee".repeat(32));
        {
            let mut log = AnchorLog::open(&p).unwrap();
            log.append(&anchor(5, &h5, "start")).unwrap();
            log.append(&anchor(9, &h9, "shutdown")).unwrap();
            log.append(&anchor(5, &h5, "start")).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"junk\n")
            .unwrap();
        // The chain was cut to 7 records and grew again to 12 with other records: the
        // later anchor is the one that tells.
        let mut looked = 0;
        let f = check_file(&p, |a| {
            looked += 1;
            Ok::<_, std::io::Error>(if a.seq == 5 {
                AnchorCheck::Holds
            } else {
                AnchorCheck::Rewritten {
                    found: Some(forged.clone()),
                }
            })
        })
        .unwrap();
        assert_eq!(looked, 2, "the same anchor twice is looked up once");
        assert_eq!((f.anchors, f.other_lines), (3, 1));
        assert_eq!(f.latest.as_ref().map(|a| a.seq), Some(5));
        let (a, c) = f.failed.unwrap();
        assert_eq!(a.seq, 9);
        let text = explain(&p, &a, &c);
        assert!(
            text.contains("REWRITTEN") && text.contains(&forged),
            "{text}"
        );
        assert!(text.contains("record 9") && text.contains(&h9), "{text}");

        let cut = explain(&p, &a, &AnchorCheck::Truncated { last_seq: 6 });
        assert!(
            cut.contains("TRUNCATED") && cut.contains("records 7..=9 are missing"),
            "{cut}"
        );
        assert!(cut.contains(&p.display().to_string()), "{cut}");
        assert!(cut.contains("GMT") && cut.contains("shutdown"), "{cut}");
    }

    #[test]
    fn syslog_lines_carry_the_head() {
        let l = syslog_line(&anchor(3, &"ab".repeat(32), "periodic"), 42);
        assert!(
            l.starts_with("<86>airlockd[42]: audit anchor seq=3 hash=abab"),
            "{l}"
        );
        assert!(l.contains("why=periodic"), "{l}");
    }
}
