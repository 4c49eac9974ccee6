//! The officer with the console open: a real headless chromium (the kit's
//! [`Browser`]), logged in with the admin token, in a thread of its own (the browser is
//! blocking). "Open": the pool page in one tab, refreshing its table itself every second
//! (`console.js` fetching `/console/pool/live`), and the audit page (chain status and the
//! newest 50 records) in a second tab, reloaded every [`AUDIT_RELOAD`] (unless the run
//! has the pool page only, the acceptance's own condition). "Closed": both
//! tabs on `about:blank` (chromium keeps running, idle, so both conditions have the same
//! processes on the machine).

use airlock_testkit::browser::{screenshot_dir, Browser};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the officer reloads the audit page while the console is open.
pub const AUDIT_RELOAD: Duration = Duration::from_secs(5);

/// What the console did during one "open" block.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenLog {
    /// Audit page loads (the first and the reloads) and how long each took in the
    /// browser, ms (navigation until the page has loaded).
    pub audit_loads_ms: Vec<f64>,
    /// When each audit page load started (Unix ms).
    pub audit_loads_at: Vec<f64>,
    /// Pool table refreshes while open (`console.js` stamping `data-refreshed` on
    /// `#pool-live`, counted in the page by a `MutationObserver`); about one a second.
    pub pool_refreshes: u64,
    /// How long the pages were open, s.
    pub open_s: f64,
    /// The age of the pool table's last refresh when the block ended, ms (under ~1 s:
    /// it was still refreshing).
    pub pool_last_refresh_age_ms: f64,
}

enum Cmd {
    Open(mpsc::Sender<Result<()>>),
    Close(mpsc::Sender<Result<OpenLog>>),
}

/// The browser thread. Dropping it (or [`Officer::finish`]) closes chromium.
pub struct Officer {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Officer {
    /// Starts chromium and logs in at `url/console/login` with the account `token` and
    /// `admin_token`; returns once the pool page has shown after the login.
    /// `audit_reload`: how often the audit page is reloaded while open (`None`: it is
    /// not opened, only the pool page is).
    pub fn start(url: &str, admin_token: &str, audit_reload: Option<Duration>) -> Result<Officer> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let url = url.to_owned();
        let token = admin_token.to_owned();
        let thread = std::thread::spawn(move || -> Result<()> {
            let tabs = match Tabs::login(&url, &token, audit_reload) {
                Ok(t) => {
                    let _ = ready_tx.send(Ok(()));
                    t
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            tabs.serve(&rx)
        });
        let officer = Officer {
            tx: Some(tx),
            thread: Some(thread),
        };
        ready_rx
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow!("chromium did not log in within 120 s"))??;
        Ok(officer)
    }

    /// Opens the pool and audit pages; returns once the pool table has refreshed itself.
    pub fn open(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Open(tx))?;
        rx.recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow!("the console did not open within 120 s"))?
    }

    /// Closes both pages; what the console did while open.
    pub fn close(&self) -> Result<OpenLog> {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Close(tx))?;
        rx.recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow!("the console did not close within 120 s"))?
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(cmd).ok())
            .ok_or_else(|| anyhow!("the browser thread has ended"))
    }

    /// Ends the thread (chromium exits with it) and returns its error, if any.
    pub fn finish(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        self.tx.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the browser thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Officer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The two tabs (the audit tab first in the struct, so it is dropped before the
/// browser's first tab, which owns the kill-on-signal cleanup).
struct Tabs {
    audit: Browser,
    pool: Browser,
    url: String,
    audit_reload: Option<Duration>,
}

impl Tabs {
    fn login(url: &str, token: &str, audit_reload: Option<Duration>) -> Result<Tabs> {
        let pool = Browser::launch(&screenshot_dir("bench-console"))?;
        pool.goto(&format!("{url}/console"))?;
        if !pool.url().ends_with("/console/login") {
            bail!("/console did not send to the login page: {}", pool.url());
        }
        pool.fill("#name", "token")?;
        pool.fill("#secret", token)?;
        pool.click_and_wait("form button[type=submit]")?;
        if !pool.url().ends_with("/console") {
            bail!("the login did not land on the pool page: {}", pool.url());
        }
        let audit = pool.new_tab()?;
        if let Some(pid) = pool.process_id() {
            lower_priority(pid);
        }
        let tabs = Tabs {
            audit,
            pool,
            url: url.to_owned(),
            audit_reload,
        };
        tabs.blank()?;
        Ok(tabs)
    }

    fn blank(&self) -> Result<()> {
        self.pool.goto("about:blank")?;
        self.audit.goto("about:blank")
    }

    /// Serves commands until the sender is gone.
    fn serve(&self, rx: &mpsc::Receiver<Cmd>) -> Result<()> {
        // While open: what the console did, when it opened, when to reload the audit
        // page next; the first failure of a reload, answered at the close.
        let mut open: Option<(OpenLog, Instant, Instant)> = None;
        let mut failed: Option<anyhow::Error> = None;
        loop {
            let cmd = match &open {
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return Ok(()),
                },
                Some((_, _, next)) => {
                    match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                        Ok(c) => Some(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                }
            };
            match cmd {
                Some(Cmd::Open(reply)) => {
                    let opened = Instant::now();
                    let r = match self.open_pages() {
                        Ok(log) => {
                            open = Some((log, opened, self.next_reload()));
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r);
                }
                Some(Cmd::Close(reply)) => {
                    let r = match (open.take(), failed.take()) {
                        (_, Some(e)) => Err(e.context("reloading the audit page")),
                        (Some((mut log, opened, _)), None) => {
                            log.open_s = opened.elapsed().as_secs_f64();
                            self.close_pages(&mut log).map(|()| log)
                        }
                        (None, None) => Err(anyhow!("the console was not open")),
                    };
                    let _ = reply.send(r);
                }
                None => {
                    // Time to reload the audit page.
                    if let Some((log, _, next)) = &mut open {
                        if self.audit_reload.is_some() {
                            if let Err(e) = self.load_audit(log) {
                                failed.get_or_insert(e);
                            }
                        }
                        *next = self.next_reload();
                    }
                }
            }
        }
    }

    /// When the audit page is reloaded next (far away with the pool page only).
    fn next_reload(&self) -> Instant {
        Instant::now() + self.audit_reload.unwrap_or(Duration::from_secs(3600))
    }

    fn open_pages(&self) -> Result<OpenLog> {
        let mut log = OpenLog::default();
        self.pool.goto(&format!("{}/console", self.url))?;
        if let Some(pid) = self.pool.process_id() {
            lower_priority(pid);
        }
        if !self.pool.url().ends_with("/console") {
            bail!("the pool page is gone (session?): {}", self.pool.url());
        }
        // The table refreshes itself: wait for its first refresh, then count them all
        // in the page.
        let t = Instant::now();
        while self
            .pool
            .attribute("#pool-live", "data-refreshed")?
            .is_none()
        {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the pool table did not refresh itself within 10 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.pool.eval(
            "window.__airlockRefreshes = 0; \
             new MutationObserver(() => { window.__airlockRefreshes += 1; }).observe(\
             document.getElementById('pool-live'), \
             { attributes: true, attributeFilter: ['data-refreshed'] }); true",
        )?;
        if self.audit_reload.is_some() {
            self.load_audit(&mut log)?;
        }
        Ok(log)
    }

    fn load_audit(&self, log: &mut OpenLog) -> Result<()> {
        let at = unix_ms();
        let t = Instant::now();
        self.audit.goto(&format!("{}/console/audit", self.url))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if self.audit.text("#chain-status")?.is_none() {
            bail!("the audit page shows no chain status: {}", self.audit.url());
        }
        log.audit_loads_ms.push(ms);
        log.audit_loads_at.push(at);
        Ok(())
    }

    fn close_pages(&self, log: &mut OpenLog) -> Result<()> {
        let stamp: f64 = self
            .pool
            .attribute("#pool-live", "data-refreshed")?
            .and_then(|s| s.parse().ok())
            .context("no refresh stamp on the pool table")?;
        log.pool_last_refresh_age_ms = unix_ms() - stamp;
        log.pool_refreshes = self
            .pool
            .eval("window.__airlockRefreshes")?
            .and_then(|v| v.as_u64())
            .context("the refresh counter is gone from the pool page")?;
        self.blank()
    }
}

/// Now, as Unix milliseconds (the clock the page's refresh stamps use too).
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

/// Runs chromium and every process it has started (zygote, renderers, GPU and utility
/// processes; the ones it starts later inherit it) at the lowest CPU priority
/// (`SCHED_IDLE`, every thread, and nice 19): it runs only when nothing else wants a CPU;
/// at a site the officer's browser runs on another PC, and on this 2-core machine its
/// rendering would otherwise take CPU time from the broker the bench measures. What the
/// console costs the broker (its pages' searches, the audited views, the refreshes) is
/// all still measured.
fn lower_priority(root: u32) {
    let mut todo = vec![root];
    let mut seen = Vec::new();
    while let Some(p) = todo.pop() {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        todo.extend(crate::bench_disc::children(p));
    }
    let pids: Vec<String> = seen.iter().map(u32::to_string).collect();
    let ok = std::process::Command::new("renice")
        .args(["-n", "19", "-p"])
        .args(&pids)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let idle = pids.iter().all(|p| {
        std::process::Command::new("chrt")
            .args(["--idle", "-a", "-p", "0", p])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok || !idle {
        eprintln!("warning: could not lower chromium's priority (renice, chrt --idle); the browser competes with the broker for CPU");
    }
}
