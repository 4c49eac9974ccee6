//! A real browser for the web console's tests: Debian's headless `chromium`, driven over
//! the DevTools protocol (`headless_chrome`, which downloads nothing). Blocking: call it
//! from `tokio::task::spawn_blocking` or `block_in_place` in async tests.
use anyhow::{bail, Context, Result};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser as Chrome, LaunchOptions, Tab};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a console test needs: Debian's chromium.
pub const BROWSER_TOOLS: &[(&str, &str)] = &[("chromium", "chromium")];

/// Where a test run's screenshots go: `build/test-output/<test>/`.
pub fn screenshot_dir(test: &str) -> PathBuf {
    crate::artifacts::workspace_root()
        .join("build/test-output")
        .join(test)
}

/// A headless chromium with one tab.
pub struct Browser {
    // Kept alive for the tab; dropping it ends the browser process.
    _chrome: Chrome,
    tab: Arc<Tab>,
    shots: PathBuf,
    /// The kit's cleanup that kills chromium on SIGINT/SIGTERM (the first tab's only).
    cleanup: Option<u64>,
    /// Chromium's profile directory, removed with the last tab (after chromium: fields
    /// drop in order).
    _profile: Arc<tempfile::TempDir>,
}

impl Browser {
    /// Starts chromium (headless, a 1400×900 window, its own profile), saving
    /// screenshots into `shots`.
    pub fn launch(shots: &Path) -> Result<Browser> {
        crate::tools::require(BROWSER_TOOLS)?;
        std::fs::create_dir_all(shots).with_context(|| format!("creating {}", shots.display()))?;
        // Its profile (history, cookies, cache: databases it syncs to disk on every
        // page load) in memory where the host has /dev/shm: the broker under test
        // syncs its own database on the same disk, and an officer's browser writes to
        // its own PC's disk, not the broker host's.
        let profile = tempfile::Builder::new()
            .prefix("airlock-chromium-")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                Path::new("/dev/shm")
            } else {
                Path::new("/tmp")
            })
            .context("making chromium's profile directory")?;
        let options = LaunchOptions::default_builder()
            .path(Some(PathBuf::from("/usr/bin/chromium")))
            .user_data_dir(Some(profile.path().to_owned()))
            .headless(true)
            // Root in CI: chromium's own sandbox needs an unprivileged user.
            .sandbox(false)
            .window_size(Some((1400, 900)))
            .idle_browser_timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| anyhow::anyhow!("chromium launch options: {e}"))?;
        let chrome = Chrome::new(options).context("starting chromium")?;
        // A test or benchmark stopped by a signal does not drop its browser: kill it then.
        let cleanup = chrome.get_process_id().map(|pid| {
            crate::process::register_cleanup(Box::new(move || crate::process::kill_pid(pid)))
        });
        let tab = chrome.new_tab().context("opening a chromium tab")?;
        tab.set_default_timeout(Duration::from_secs(30));
        Ok(Browser {
            _chrome: chrome,
            tab,
            shots: shots.to_owned(),
            cleanup,
            _profile: Arc::new(profile),
        })
    }

    /// The browser process's id (its renderers are its descendants).
    pub fn process_id(&self) -> Option<u32> {
        self._chrome.get_process_id()
    }

    /// A second tab of the same chromium (its own page, the same cookies); screenshots
    /// go to the same directory.
    pub fn new_tab(&self) -> Result<Browser> {
        let tab = self._chrome.new_tab().context("opening a chromium tab")?;
        tab.set_default_timeout(Duration::from_secs(30));
        Ok(Browser {
            _chrome: self._chrome.clone(),
            tab,
            shots: self.shots.clone(),
            cleanup: None,
            _profile: self._profile.clone(),
        })
    }

    /// The attribute `name` of the first element matching `selector`, if both exist.
    pub fn attribute(&self, selector: &str, name: &str) -> Result<Option<String>> {
        let s = serde_json::to_string(selector)?;
        let n = serde_json::to_string(name)?;
        let v = self
            .tab
            .evaluate(
                &format!("(() => {{ const e = document.querySelector({s}); return e ? e.getAttribute({n}) : null; }})()"),
                false,
            )
            .with_context(|| format!("reading {selector}"))?;
        Ok(v.value.and_then(|v| v.as_str().map(str::to_owned)))
    }

    /// Evaluates the JavaScript expression `js` in the page; its value (JSON), if any.
    pub fn eval(&self, js: &str) -> Result<Option<serde_json::Value>> {
        let v = self
            .tab
            .evaluate(js, false)
            .with_context(|| format!("evaluating {js}"))?;
        Ok(v.value)
    }

    /// Loads `url` and waits for the page.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.tab
            .navigate_to(url)
            .and_then(|t| t.wait_until_navigated())
            .with_context(|| format!("loading {url}"))?;
        Ok(())
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.tab.get_url()
    }

    /// Runs `body` (JavaScript using `el`) on the first element matching `selector`,
    /// found and used in one task of the page: a page that redraws itself between
    /// the two cannot leave the change on an element that is gone.
    fn on_element(&self, selector: &str, body: &str) -> Result<()> {
        self.tab
            .wait_for_element(selector)
            .with_context(|| format!("finding {selector}"))?;
        let s = serde_json::to_string(selector)?;
        let v = self
            .tab
            .evaluate(
                &format!("(() => {{ const el = document.querySelector({s}); if (!el) {{ return false; }} {body}; return true; }})()"),
                false,
            )
            .with_context(|| format!("using {selector}"))?;
        if v.value.and_then(|v| v.as_bool()) != Some(true) {
            bail!("{selector} is gone from the page");
        }
        Ok(())
    }

    /// Sets the value of the form field `selector` (an input or a select).
    pub fn fill(&self, selector: &str, value: &str) -> Result<()> {
        let v = serde_json::to_string(value)?;
        self.on_element(
            selector,
            &format!("el.value = {v}; el.dispatchEvent(new Event('change'))"),
        )
        .with_context(|| format!("filling {selector}"))
    }

    /// Clicks `selector` and waits until the new page it loads (a form's submit button)
    /// has loaded: the old document is marked first, so its own load does not count.
    pub fn click_and_wait(&self, selector: &str) -> Result<()> {
        self.tab
            .evaluate("window.__airlockOldPage = true", false)
            .context("marking the page")?;
        // The browser's own form submission (with its validation), by the button:
        // a synthetic mouse click can miss a button the page's refresh just redrew.
        self.on_element(
            selector,
            "if (el.form) { el.form.requestSubmit(el); } else { el.click(); }",
        )
        .with_context(|| format!("clicking {selector}"))?;
        let t0 = Instant::now();
        loop {
            let loaded = self
                .tab
                .evaluate(
                    "window.__airlockOldPage !== true && document.readyState === 'complete'",
                    false,
                )
                .ok()
                .and_then(|v| v.value)
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if loaded {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let state = self
                    .tab
                    .evaluate(
                        "JSON.stringify({url: location.href, ready: document.readyState, \
                         forms: [...document.forms].map(f => ({action: f.action, valid: f.checkValidity(), \
                         data: [...new FormData(f).entries()].filter(e => e[0] !== 'csrf')}))})",
                        false,
                    )
                    .ok()
                    .and_then(|v| v.value);
                let _ = self.screenshot("no-new-page");
                bail!("no new page within 30 s after clicking {selector}; the page: {state:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text of the first element matching `selector`, if there is one.
    pub fn text(&self, selector: &str) -> Result<Option<String>> {
        let s = serde_json::to_string(selector)?;
        let v = self
            .tab
            .evaluate(
                &format!("(() => {{ const e = document.querySelector({s}); return e ? e.innerText : null; }})()"),
                false,
            )
            .with_context(|| format!("reading {selector}"))?;
        Ok(v.value.and_then(|v| v.as_str().map(str::to_owned)))
    }

    /// Waits until the text of `selector` satisfies `ok`; returns it.
    pub fn wait_text(
        &self,
        selector: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let t0 = Instant::now();
        loop {
            let t = self.text(selector)?;
            if let Some(t) = &t {
                if ok(t) {
                    return Ok(t.clone());
                }
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{selector} did not show what was expected within {timeout:?}; it shows {t:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the page as `name.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self
            .tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .context("taking a screenshot")?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("screenshot: {}", path.display());
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.cleanup {
            crate::process::unregister_cleanup(id);
        }
    }
}
