//! A private Orthanc (Debian's `orthanc`) as the PACS of the key-image tests: its own
//! config, storage and index in a temporary directory, a DICOM port and an HTTP port of
//! its own on loopback (never the system service on 4242/8042), AE title checked, and
//! its REST API to find what it stored. Killed when dropped.
use crate::process::Proc;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The AE title the private Orthanc answers to.
pub const AE_TITLE: &str = "ORTHANC";

/// A running private Orthanc.
pub struct Orthanc {
    pub dicom_port: u16,
    pub http_port: u16,
    dir: tempfile::TempDir,
    _proc: Proc,
}

fn binary() -> Result<PathBuf> {
    for p in ["/usr/sbin/Orthanc", "/usr/bin/Orthanc"] {
        if Path::new(p).is_file() {
            return Ok(p.into());
        }
    }
    bail!("missing tool Orthanc; install it with `apt-get install -y --no-install-recommends orthanc` (scripts/setup.sh does)")
}

impl Orthanc {
    /// Starts one and waits until its REST API answers.
    pub async fn start() -> Result<Orthanc> {
        Orthanc::start_as(AE_TITLE, None).await
    }

    /// Starts one that answers to the AE title `ae` (and only to it), on `dicom_port`
    /// if given (e.g. the port of one that was stopped, to play another PACS there).
    pub async fn start_as(ae: &str, dicom_port: Option<u16>) -> Result<Orthanc> {
        let bin = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("airlock-orthanc-")
            .tempdir()?;
        let base = crate::net::free_ports(2)?;
        let (dicom_port, http_port) = match dicom_port {
            Some(p) => (p, base),
            None => (base, base + 1),
        };
        let config = serde_json::json!({
            "Name": "airlock-test-pacs",
            "StorageDirectory": dir.path().join("storage"),
            "IndexDirectory": dir.path().join("index"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": ae,
            "DicomCheckCalledAet": true,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpServerEnabled": true,
            "DicomServerEnabled": true,
            "Plugins": [],
            "StorageCompression": false,
        });
        let path = dir.path().join("orthanc.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let log = std::fs::File::create(dir.path().join("orthanc.log"))?;
        let proc = Proc::spawn(
            Command::new(bin)
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
            "Orthanc",
        )?;
        let o = Orthanc {
            dicom_port,
            http_port,
            dir,
            _proc: proc,
        };
        let t0 = Instant::now();
        while o.get("/system").await.is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("Orthanc did not answer within 30 s; its log:\n{}", o.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(o)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let r = reqwest::get(self.url(path)).await?;
        if !r.status().is_success() {
            bail!("GET {path}: {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// The Orthanc id of the instance with this SOP Instance UID, if stored.
    pub async fn find_instance(&self, sop_instance_uid: &str) -> Result<Option<String>> {
        let r = reqwest::Client::new()
            .post(self.url("/tools/lookup"))
            .body(sop_instance_uid.to_owned())
            .send()
            .await
            .context("POST /tools/lookup")?;
        let v: Value = r.json().await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["Type"] == "Instance")
            .and_then(|e| e["ID"].as_str())
            .map(str::to_owned))
    }

    /// An instance's tags, simplified (`{"PatientID": "...", ...}`).
    pub async fn tags(&self, id: &str) -> Result<Value> {
        self.get(&format!("/instances/{id}/simplified-tags")).await
    }

    /// The DICOM file Orthanc stored for an instance.
    pub async fn file(&self, id: &str) -> Result<Vec<u8>> {
        let r = reqwest::get(self.url(&format!("/instances/{id}/file"))).await?;
        if !r.status().is_success() {
            bail!("GET /instances/{id}/file: {}", r.status());
        }
        Ok(r.bytes().await?.to_vec())
    }

    /// The pixel bytes of an instance's first frame as stored (`/frames/0/raw`).
    pub async fn frame_raw(&self, id: &str) -> Result<Vec<u8>> {
        let path = format!("/instances/{id}/frames/0/raw");
        let r = reqwest::get(self.url(&path)).await?;
        if !r.status().is_success() {
            bail!("GET {path}: {}", r.status());
        }
        Ok(r.bytes().await?.to_vec())
    }

    /// How many instances it holds.
    pub async fn instance_count(&self) -> Result<u64> {
        let s = self.get("/statistics").await?;
        s["CountInstances"]
            .as_u64()
            .context("no CountInstances in /statistics")
    }
}
