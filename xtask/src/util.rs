//! Small helpers shared by the tasks: atomic writes, sizes; running tools and hashing
//! come from the test kit (one implementation for builders, tests and benchmarks).

pub use airlock_testkit::artifacts::workspace_root;
pub use airlock_testkit::process::{describe, run, run_stdout};
pub use airlock_testkit::sha256_hex;
pub use airlock_testkit::tools::require as require_tools;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Resolve an output directory: relative paths are taken from the current
/// directory, like any command-line path.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(path))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Write a file atomically: a temporary file beside it, then a rename, so a
/// reader (or an interrupted build) never sees half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

/// `path` with `.tmp.<pid>` appended to its file name: two processes building the same
/// file never write the same temporary file.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// A build's cache key: the SHA-256 of its inputs, one per line. The outputs are
/// current when the key stored beside them is this one.
pub fn cache_key(inputs: &[&str]) -> String {
    let mut text = String::new();
    for input in inputs {
        text.push_str(input);
        text.push('\n');
    }
    sha256_hex(text.as_bytes())
}

pub fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating directory {}", path.display()))
}

/// Sizes for progress messages: "70.6 MB".
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The load average (1, 5 and 15 minutes) as `/proc/loadavg` gives it.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A benchmark's last lines: the load average around it and where its results are.
pub fn print_load_and_results(before: &str, after: &str, json: &Path) {
    println!("load average before: {before}, after: {after}");
    println!("results: {}", json.display());
}

/// Options every benchmark takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchCommon {
    /// Use this airlockd binary instead of `cargo build --release -p airlockd`'s (A/B runs).
    #[arg(long)]
    pub airlockd: Option<PathBuf>,
    /// Results file [default: a file named after the benchmark under build/bench/].
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl BenchCommon {
    /// `--airlockd` (made absolute), else what `built` gives.
    pub fn airlockd(&self, built: impl FnOnce() -> Result<PathBuf>) -> Result<PathBuf> {
        match &self.airlockd {
            Some(p) => absolute(p),
            None => built(),
        }
    }

    /// Writes a benchmark's results as JSON to `--json`, else to
    /// `build/bench/DEFAULT_NAME`; the path written.
    pub fn save(&self, default_name: &str, results: &impl serde::Serialize) -> Result<PathBuf> {
        let json = self
            .json
            .clone()
            .unwrap_or_else(|| workspace_root().join("build/bench").join(default_name));
        if let Some(dir) = json.parent() {
            create_dir(dir)?;
        }
        write_atomic(&json, &serde_json::to_vec_pretty(results)?)?;
        Ok(json)
    }
}

/// The time now in UTC, in `date`'s `format` (e.g. `%Y-%m-%d %H:%M UTC`).
pub fn utc_now(format: &str) -> String {
    run_stdout(
        std::process::Command::new("date")
            .arg("-u")
            .arg(format!("+{format}")),
    )
    .map(|s| s.trim().to_owned())
    .unwrap_or_else(|_| "unknown date".into())
}

/// The manifest of an image built with cache key `key`, if the build directory holds
/// it with every output in `outputs` and `.cache-key` matches (and `force` is off):
/// the caller then names the outputs where they are now and writes it back.
pub fn up_to_date_manifest<M: serde::de::DeserializeOwned>(
    out: &Path,
    key: &str,
    outputs: &[&Path],
    force: bool,
) -> Result<Option<M>> {
    let manifest_path = out.join("manifest.json");
    let up_to_date = fs::read_to_string(out.join(".cache-key")).is_ok_and(|s| s.trim() == key)
        && outputs.iter().all(|p| p.is_file())
        && manifest_path.is_file();
    if !up_to_date || force {
        return Ok(None);
    }
    let manifest = serde_json::from_slice(
        &fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| {
        format!(
            "parsing {} (run with --force to rebuild)",
            manifest_path.display()
        )
    })?;
    Ok(Some(manifest))
}
