//! The forwarder: tails the audit log in the database (not an in-memory queue) and sends
//! every record, in order, to the syslog server.
//!
//! - **Where it is** is the cursor ([`crate::cursor`]): the last record the server took.
//!   The forwarder reads the records after it in batches of at most `batch` from its own
//!   read-only connection, so what it holds in memory is bounded by construction
//!   whatever the backlog, and the broker's store is never locked by it.
//! - **When a record counts as taken.** Plain syslog has no acknowledgements. A batch
//!   is written and flushed; it is *confirmed*, and the cursor moved past it, once the
//!   connection has stayed open for `confirm_after` since (a server that stopped or
//!   crashed closes or resets the connection, which the forwarder notices), or when the
//!   server closed the connection after reading the forwarder's own end at shutdown.
//!   Whatever was sent and not confirmed when the connection ends is sent again on the
//!   next one. Delivery is therefore **at least once**: the server may see a record
//!   twice (same `seq` and `hash`), and a server host that vanishes without a reset
//!   (power loss, a cut cable) can lose what it had not written yet, as with any
//!   RFC 5425 sender; the database keeps every record regardless.
//! - **When the server is away**: the first failure is logged as a warning, retries
//!   follow a capped exponential backoff, and the recovery is logged; the backlog (head
//!   of the chain − cursor) is reported after every round.
use crate::backoff::Backoff;
use crate::cursor::{self, Cursor, Loaded};
use crate::format::{Header, SdId};
use crate::transport::{Connection, Transport};
use crate::SyslogError;
use airlock_store::{AuditRecord, StoreError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Where the forwarder reads the audit log (a read-only database connection; blocking
/// calls, run off the async workers).
pub trait AuditSource: Send + 'static {
    /// The newest record's sequence number and hash (`(0, genesis)` when empty).
    fn head(&mut self) -> Result<(i64, String), StoreError>;
    /// At most `limit` records with `seq > after`, in order.
    fn after(&mut self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// The hash of record `seq`, if it exists.
    fn hash_at(&mut self, seq: i64) -> Result<Option<String>, StoreError>;
}

/// The broker's database, opened read-only ([`airlock_store::Store::open_read_only`]):
/// its own connection, never the broker's store lock.
impl AuditSource for airlock_store::Store {
    fn head(&mut self) -> Result<(i64, String), StoreError> {
        self.audit_head()
    }
    fn after(&mut self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_after(after, limit)
    }
    fn hash_at(&mut self, seq: i64) -> Result<Option<String>, StoreError> {
        self.audit_hash_at(seq)
    }
}

/// What the forwarder needs.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// `host:port` of the syslog server.
    pub address: String,
    pub transport: Transport,
    pub header: Header,
    pub sd_id: SdId,
    /// The largest SYSLOG-MSG (octets).
    pub max_message: usize,
    /// Records per read and write.
    pub batch: usize,
    /// How often the head is looked at when all is sent.
    pub poll: Duration,
    /// Backoff between connection attempts.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long a connection must stay open after a write for the write to count.
    pub confirm_after: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    /// How long the final attempt at shutdown may take.
    pub shutdown_timeout: Duration,
    /// The cursor file.
    pub cursor: PathBuf,
}

impl ForwardConfig {
    /// Defaults for everything but the server, the header and the cursor file.
    pub fn new(
        address: String,
        transport: Transport,
        header: Header,
        sd_id: SdId,
        cursor: PathBuf,
    ) -> ForwardConfig {
        ForwardConfig {
            address,
            transport,
            header,
            sd_id,
            max_message: crate::audit::DEFAULT_MAX_MESSAGE,
            batch: 256,
            poll: Duration::from_millis(250),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            confirm_after: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            cursor,
        }
    }
}

/// The forwarder's state, for metrics and `/healthz`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// A connection to the server is open.
    pub connected: bool,
    /// The last record the server took (the cursor), and the chain's head.
    pub forwarded_seq: i64,
    pub head_seq: i64,
    /// Records in the database not yet taken by the server (head − cursor).
    pub backlog: u64,
    /// Records confirmed since the broker started.
    pub forwarded_total: u64,
    /// When records were last confirmed.
    pub last_success: Option<SystemTime>,
    /// Since when forwarding fails (no connection, or writes fail), and the last error.
    pub failing_since: Option<SystemTime>,
    pub last_error: Option<String>,
    /// What the start-up check of the cursor found (a rewritten or cut database).
    pub cursor_problem: Option<String>,
}

impl Status {
    /// A problem for `/healthz` when forwarding has failed for longer than `after`, or
    /// the cursor disagrees with the database.
    pub fn problem(&self, address: &str, after: Duration, now: SystemTime) -> Option<String> {
        if let Some(p) = &self.cursor_problem {
            return Some(p.clone());
        }
        let since = self.failing_since?;
        let for_s = now.duration_since(since).ok()?;
        (for_s >= after).then(|| {
            format!(
                "audit forwarding to {address} has failed for {} s ({}); {} records wait in the database",
                for_s.as_secs(),
                self.last_error.as_deref().unwrap_or("unknown error"),
                self.backlog
            )
        })
    }
}

/// Called after every round with the status and the records newly confirmed.
pub type Report = Box<dyn Fn(&Status, u64) + Send + Sync>;

/// A running forwarder: its status, and how to stop it.
pub struct Forwarder {
    status: Arc<Mutex<Status>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Forwarder {
    /// Starts forwarding from `source` (on the current runtime).
    pub fn spawn<S: AuditSource>(config: ForwardConfig, source: S, report: Report) -> Forwarder {
        let status = Arc::new(Mutex::new(Status::default()));
        let (stop, stopped) = watch::channel(false);
        let run = Run {
            config,
            source: Arc::new(Mutex::new(source)),
            status: status.clone(),
            report,
            stopped,
            outage: None,
            backoff: Backoff::new(Duration::ZERO, Duration::ZERO),
            confirmed: Cursor {
                seq: 0,
                hash: airlock_store::GENESIS_HASH.to_owned(),
            },
            cursor_error_logged: false,
        };
        let task = tokio::spawn(run.run());
        Forwarder {
            status,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Makes a final attempt to send what is left (within the configured shutdown
    /// timeout) and stops.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

struct Outage {
    since: Instant,
    attempts: u64,
}

struct Run<S> {
    config: ForwardConfig,
    source: Arc<Mutex<S>>,
    status: Arc<Mutex<Status>>,
    report: Report,
    stopped: watch::Receiver<bool>,
    outage: Option<Outage>,
    backoff: Backoff,
    /// The cursor: the last record the server took.
    confirmed: Cursor,
    cursor_error_logged: bool,
}

/// How many written batches may wait for confirmation before the forwarder stops
/// writing and waits (bounds memory and what is sent twice after a failure).
const MAX_UNCONFIRMED_BATCHES: usize = 64;

impl<S: AuditSource> Run<S> {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SyslogError> {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = source.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s)
        })
        .await
        .map_err(|e| SyslogError::Send(std::io::Error::other(e.to_string())))?
        .map_err(SyslogError::from)
    }

    fn update(&self, f: impl FnOnce(&mut Status)) -> Status {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        s.clone()
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Sleeps `d`, or less when asked to stop.
    async fn pause(&mut self, d: Duration) {
        if self.stopping() {
            // The final attempt is running: short waits, no new stop to wait for.
            tokio::time::sleep(d.min(Duration::from_millis(20))).await;
            return;
        }
        let _ = tokio::time::timeout(d, self.stopped.changed()).await;
    }

    /// Where to start: the cursor file, checked against the database.
    async fn start_cursor(&mut self) {
        let path = self.config.cursor.clone();
        let loaded = tokio::task::spawn_blocking(move || cursor::load(&path))
            .await
            .unwrap_or_else(|e| Ok(Loaded::Corrupt(e.to_string())));
        let path = self.config.cursor.display().to_string();
        let found = match loaded {
            Ok(Loaded::Found(c)) => Some(c),
            Ok(Loaded::Missing) => {
                tracing::info!(cursor = %path, "no audit forwarding cursor yet: forwarding the whole audit log from record 1");
                None
            }
            Ok(Loaded::Corrupt(why)) => {
                tracing::warn!(cursor = %path, "the audit forwarding cursor is unusable ({why}): forwarding the whole audit log again from record 1 (the server may see records twice)");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "forwarding the whole audit log again from record 1 (the server may see records twice)");
                None
            }
        };
        let Some(c) = found else { return };
        let seq = c.seq;
        let checked = self
            .blocking(move |s| Ok((s.head()?, s.hash_at(seq)?)))
            .await;
        let problem = match checked {
            Ok(((head, _), _)) if head < c.seq => {
                // New records will reuse the numbers the server already has: forward
                // from the head so that they are not skipped.
                let p = format!("the audit log ends at record {head} but record {} was already forwarded (cursor {path}): records were cut off the database; forwarding continues after record {head}", c.seq);
                tracing::error!("{p}");
                self.confirmed = Cursor {
                    seq: head,
                    hash: String::new(),
                };
                Some(p)
            }
            Ok((_, Some(h))) if h != c.hash => {
                let p = format!("audit record {} in the database is not the one forwarded (hash {h}, forwarded {}): the database was rewritten or replaced; the syslog server holds the forwarded copy", c.seq, c.hash);
                tracing::error!("{p}");
                self.confirmed = c;
                Some(p)
            }
            _ => {
                tracing::info!(
                    seq = c.seq,
                    "audit forwarding resumes after record {}",
                    c.seq
                );
                self.confirmed = c;
                None
            }
        };
        self.update(|s| {
            s.cursor_problem = problem;
            s.forwarded_seq = self.confirmed.seq;
        });
    }

    fn failed(&mut self, e: &SyslogError) {
        let now = SystemTime::now();
        match &mut self.outage {
            None => {
                tracing::warn!(
                    server = %self.config.address,
                    error = %e,
                    "audit forwarding to the syslog server failed; the records stay in the database and are sent when it is back (retrying)"
                );
                self.outage = Some(Outage {
                    since: Instant::now(),
                    attempts: 1,
                });
            }
            Some(o) => {
                o.attempts += 1;
                tracing::debug!(server = %self.config.address, error = %e, attempts = o.attempts, "audit forwarding still failing");
            }
        }
        let s = self.update(|s| {
            s.connected = false;
            s.failing_since.get_or_insert(now);
            s.last_error = Some(e.to_string());
        });
        (self.report)(&s, 0);
    }

    fn recovered(&mut self) {
        if let Some(o) = self.outage.take() {
            tracing::info!(
                server = %self.config.address,
                after_s = o.since.elapsed().as_secs(),
                attempts = o.attempts,
                "audit forwarding to the syslog server works again"
            );
        }
        self.backoff.reset();
        let s = self.update(|s| {
            s.connected = true;
            s.failing_since = None;
        });
        (self.report)(&s, 0);
    }

    /// Moves the cursor to `c` (on disk first).
    async fn confirm(&mut self, c: Cursor) {
        if c.seq <= self.confirmed.seq {
            return;
        }
        let (path, c2) = (self.config.cursor.clone(), c.clone());
        let stored = tokio::task::spawn_blocking(move || cursor::store(&path, &c2))
            .await
            .unwrap_or_else(|e| {
                Err(SyslogError::Cursor {
                    path: self.config.cursor.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        match stored {
            Ok(()) => self.cursor_error_logged = false,
            Err(e) if !self.cursor_error_logged => {
                tracing::error!(error = %e, "cannot write the audit forwarding cursor; after a restart records will be sent again");
                self.cursor_error_logged = true;
            }
            Err(_) => {}
        }
        let n = u64::try_from(c.seq - self.confirmed.seq).unwrap_or(0);
        self.confirmed = c;
        let seq = self.confirmed.seq;
        let s = self.update(|s| {
            s.forwarded_seq = seq;
            s.forwarded_total += n;
            s.backlog = u64::try_from(s.head_seq - seq).unwrap_or(0);
            s.last_success = Some(SystemTime::now());
        });
        (self.report)(&s, n);
    }

    async fn head(&mut self) -> Option<i64> {
        match self.blocking(|s| s.head()).await {
            Ok((head, _)) => {
                let confirmed = self.confirmed.seq;
                let s = self.update(|s| {
                    s.head_seq = head;
                    s.backlog = u64::try_from(head - confirmed).unwrap_or(0);
                });
                (self.report)(&s, 0);
                Some(head)
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit forwarding cannot read the audit log's head");
                None
            }
        }
    }

    async fn run(mut self) {
        self.backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        self.start_cursor().await;
        let mut deadline: Option<Instant> = None;
        loop {
            if self.stopping() && deadline.is_none() {
                deadline = Some(Instant::now() + self.config.shutdown_timeout);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // At shutdown the final attempt does not wait longer than its deadline.
            let timeout = deadline.map_or(self.config.connect_timeout, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(self.config.connect_timeout)
            });
            let conn =
                match Connection::connect(&self.config.address, &self.config.transport, timeout)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        self.failed(&e);
                        if self.stopping() {
                            break;
                        }
                        self.wait_retry().await;
                        continue;
                    }
                };
            match self.session(conn, deadline).await {
                Ok(()) => break,
                Err(e) => {
                    self.failed(&e);
                    if self.stopping() {
                        // One more connection for the final attempt, if time is left.
                        continue;
                    }
                    self.wait_retry().await;
                }
            }
        }
        let backlog = self.status().backlog;
        if backlog > 0 {
            tracing::warn!(backlog, "audit forwarding stopped with {backlog} records not yet forwarded; they are sent at the next start");
        }
        let s = self.update(|s| s.connected = false);
        (self.report)(&s, 0);
    }

    /// Waits out the next backoff delay, keeping the backlog current meanwhile (it
    /// grows while the server is away).
    async fn wait_retry(&mut self) {
        let until = Instant::now() + self.backoff.next_delay();
        loop {
            self.head().await;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping() {
                return;
            }
            self.pause(left.min(Duration::from_secs(1))).await;
        }
    }

    fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// One connection's life: send what is after the cursor, confirm, repeat; returns
    /// when stopped, or with the error that ended the connection.
    async fn session(
        &mut self,
        mut conn: Connection,
        mut deadline: Option<Instant>,
    ) -> Result<(), SyslogError> {
        // Written, not yet confirmed: (last record of a batch, when written).
        let mut unconfirmed: VecDeque<(Cursor, Instant)> = VecDeque::new();
        let mut sent = self.confirmed.seq;
        // A connection counts as working once it stayed open for `confirm_after`: a
        // server that accepts and at once closes (e.g. refusing the client certificate
        // after a TLS 1.3 handshake) stays one outage, with its backoff.
        let opened = Instant::now();
        let mut working = false;
        loop {
            if self.stopping() && deadline.is_none() {
                deadline = Some(Instant::now() + self.config.shutdown_timeout);
            }
            if conn.is_closed() {
                return Err(SyslogError::Closed);
            }
            if !working && opened.elapsed() >= self.config.confirm_after {
                working = true;
                self.recovered();
            }
            let head = self.head().await;
            let mut full = false;
            // At shutdown the limit is off: closing the connection confirms it all.
            let room = unconfirmed.len() < MAX_UNCONFIRMED_BATCHES || deadline.is_some();
            if room && head.is_some_and(|h| h > sent) {
                let (after, limit) = (sent, self.config.batch);
                let batch = self.blocking(move |s| s.after(after, limit)).await?;
                if let Some(last) = batch.last() {
                    let mut bytes = Vec::new();
                    for r in &batch {
                        bytes.extend_from_slice(&crate::audit::framed(
                            &self.config.header,
                            &self.config.sd_id,
                            r,
                            self.config.max_message,
                        ));
                    }
                    let timeout = deadline.map_or(self.config.write_timeout, |d| {
                        d.saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(100))
                            .min(self.config.write_timeout)
                    });
                    conn.send(&bytes, timeout).await?;
                    sent = last.seq;
                    let c = Cursor {
                        seq: last.seq,
                        hash: last.hash.clone(),
                    };
                    unconfirmed.push_back((c, Instant::now()));
                    full = batch.len() == limit;
                }
            }
            // Confirm what has been out long enough on a connection still open.
            let mut newest = None;
            while let Some((_, at)) = unconfirmed.front() {
                if at.elapsed() < self.config.confirm_after || conn.is_closed() {
                    break;
                }
                newest = unconfirmed.pop_front().map(|(c, _)| c);
            }
            if let Some(c) = newest {
                self.confirm(c).await;
            }
            if let Some(d) = deadline {
                let all_sent = head.is_some_and(|h| h <= sent);
                if all_sent || Instant::now() >= d {
                    // The final attempt: end the connection and wait for the server to
                    // close its side, which confirms everything written.
                    let left = d.saturating_duration_since(Instant::now());
                    let last = unconfirmed.pop_back().map(|(c, _)| c);
                    if conn.close(left.max(Duration::from_millis(500))).await {
                        if let Some(c) = last {
                            self.confirm(c).await;
                        }
                    }
                    return Ok(());
                }
            }
            if !full {
                self.pause(self.config.poll).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Facility;
    use airlock_store::{AuditEntry, Store};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A store shared by the test (writer) and the forwarder (reader).
    #[derive(Clone)]
    struct Shared(Arc<Mutex<Store>>);

    impl AuditSource for Shared {
        fn head(&mut self) -> Result<(i64, String), StoreError> {
            self.0.lock().unwrap().audit_head()
        }
        fn after(&mut self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
            self.0.lock().unwrap().audit_after(after, limit)
        }
        fn hash_at(&mut self, seq: i64) -> Result<Option<String>, StoreError> {
            self.0.lock().unwrap().audit_hash_at(seq)
        }
    }

    fn write(s: &Shared, n: usize) {
        let mut st = s.0.lock().unwrap();
        for i in 0..n {
            st.audit(
                1_764_756_900_000,
                AuditEntry::new("broker_started").terminal(format!("t{i}")),
            )
            .unwrap();
        }
    }

    /// A syslog server on `l`: every frame it reads, by seq (from the SD), into `got`.
    fn serve(l: TcpListener, got: Arc<Mutex<Vec<i64>>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Aborting the server drops the set, which ends every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let got = got.clone();
                conns.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let (frames, rest) = crate::format::unframe(&buf).unwrap();
                        let rest = rest.to_vec();
                        for f in frames {
                            let t = String::from_utf8(f).unwrap();
                            let seq = t
                                .split(" seq=\"")
                                .nth(1)
                                .unwrap()
                                .split('"')
                                .next()
                                .unwrap();
                            got.lock().unwrap().push(seq.parse().unwrap());
                        }
                        buf = rest;
                    }
                });
            }
        })
    }

    fn config(addr: String, cursor: PathBuf) -> ForwardConfig {
        let h = Header::new(Facility::AUTHPRIV, "test", "airlockd", "1").unwrap();
        let mut c = ForwardConfig::new(
            addr,
            Transport::Tcp,
            h,
            SdId::new(crate::audit::DEFAULT_SD_ID).unwrap(),
            cursor,
        );
        c.batch = 7;
        c.poll = Duration::from_millis(20);
        c.retry_initial = Duration::from_millis(20);
        c.retry_max = Duration::from_millis(100);
        c.confirm_after = Duration::from_millis(100);
        c
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn forwards_everything_waits_out_an_outage_and_resumes_from_the_cursor() {
        let d = tempfile::tempdir().unwrap();
        let cursor_path = d.path().join("audit-forward.cursor");
        let src = Shared(Arc::new(Mutex::new(Store::open_in_memory().unwrap())));
        write(&src, 20);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let server = serve(l, got.clone());
        let reports = Arc::new(Mutex::new(0u64));
        let r2 = reports.clone();
        let f = Forwarder::spawn(
            config(addr.to_string(), cursor_path.clone()),
            src.clone(),
            Box::new(move |_, n| *r2.lock().unwrap() += n),
        );
        until("all 20 forwarded", || f.status().forwarded_seq == 20).await;
        let s = f.status();
        assert_eq!((s.backlog, s.forwarded_total, s.connected), (0, 20, true));
        assert!(s.last_success.is_some() && s.failing_since.is_none());
        assert_eq!(*reports.lock().unwrap(), 20);
        assert_eq!(*got.lock().unwrap(), (1..=20).collect::<Vec<_>>());
        assert!(matches!(
            cursor::load(&cursor_path).unwrap(),
            Loaded::Found(Cursor { seq: 20, .. })
        ));

        // The server goes away: records pile up in the database and in the backlog.
        server.abort();
        let _ = server.await;
        until("the outage seen", || f.status().failing_since.is_some()).await;
        write(&src, 10);
        until("a backlog of 10", || f.status().backlog == 10).await;
        let s = f.status();
        assert!(!s.connected && s.last_error.is_some());
        assert!(s
            .problem("x", Duration::ZERO, SystemTime::now())
            .unwrap()
            .contains("10 records wait"));
        assert!(s
            .problem("x", Duration::from_secs(3600), SystemTime::now())
            .is_none());

        // It comes back on the same port: the rest arrives.
        let l = TcpListener::bind(addr).await.unwrap();
        let server = serve(l, got.clone());
        until("all 30 forwarded", || f.status().forwarded_seq == 30).await;
        assert!(f.status().failing_since.is_none());
        let mut seqs = got.lock().unwrap().clone();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>());

        // Stopping sends what is left first.
        write(&src, 3);
        f.shutdown().await;
        assert!(matches!(
            cursor::load(&cursor_path).unwrap(),
            Loaded::Found(Cursor { seq: 33, .. })
        ));
        until("33 received", || got.lock().unwrap().contains(&33)).await;

        // A new forwarder resumes after the cursor: nothing is sent twice.
        got.lock().unwrap().clear();
        write(&src, 2);
        let f = Forwarder::spawn(
            config(addr.to_string(), cursor_path.clone()),
            src.clone(),
            Box::new(|_, _| {}),
        );
        until("35 forwarded", || f.status().forwarded_seq == 35).await;
        assert_eq!(*got.lock().unwrap(), vec![34, 35]);
        f.shutdown().await;
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cursor_past_the_head_is_a_problem_and_new_records_still_go() {
        let d = tempfile::tempdir().unwrap();
        let cursor_path = d.path().join("c");
        cursor::store(
            &cursor_path,
            &Cursor {
                seq: 50,
                hash: "ab".repeat(32),
            },
        )
        .unwrap();
        let src = Shared(Arc::new(Mutex::new(Store::open_in_memory().unwrap())));
        write(&src, 3);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let server = serve(l, got.clone());
        let f = Forwarder::spawn(
            config(addr.to_string(), cursor_path.clone()),
            src.clone(),
            Box::new(|_, _| {}),
        );
        until("the cursor checked", || f.status().cursor_problem.is_some()).await;
        let p = f
            .status()
            .problem("x", Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        assert!(p.contains("cut off"), "{p}");
        write(&src, 2);
        until("4 and 5 forwarded", || f.status().forwarded_seq == 5).await;
        assert_eq!(*got.lock().unwrap(), vec![4, 5]);
        f.shutdown().await;

        // A cursor whose record differs: named, and forwarding goes on after it.
        cursor::store(
            &cursor_path,
            &Cursor {
                seq: 2,
                hash: "ab".repeat(32),
            },
        )
        .unwrap();
        got.lock().unwrap().clear();
        let f = Forwarder::spawn(
            config(addr.to_string(), cursor_path.clone()),
            src.clone(),
            Box::new(|_, _| {}),
        );
        until("3..5 forwarded", || got.lock().unwrap().len() == 3).await;
        assert!(f.status().cursor_problem.unwrap().contains("rewritten"));
        f.shutdown().await;

        // A corrupt cursor: everything again from record 1 (duplicates, never a gap).
        std::fs::write(&cursor_path, "garbage").unwrap();
        got.lock().unwrap().clear();
        let f = Forwarder::spawn(
            config(addr.to_string(), cursor_path.clone()),
            src.clone(),
            Box::new(|_, _| {}),
        );
        until("1..5 forwarded again", || f.status().forwarded_seq == 5).await;
        assert_eq!(*got.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        assert!(f.status().cursor_problem.is_none());
        f.shutdown().await;
        assert!(matches!(
            cursor::load(&cursor_path).unwrap(),
            Loaded::Found(Cursor { seq: 5, .. })
        ));
        server.abort();
    }
}
