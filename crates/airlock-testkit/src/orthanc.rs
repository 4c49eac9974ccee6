//! A private Orthanc (Debian's `orthanc`) as the PACS of the key-image tests: its own
//! config, storage and index in a temporary directory, a DICOM port and an HTTP port of
//! its own on loopback (never the system service on 4242/8042), AE title checked, and
//! its REST API to find what it stored. Optionally DICOM TLS on its DICOM port (only TLS
//! there, with the kit's test CAs, `crate::tls`) and the modality worklists of a folder
//! (Debian's `libModalityWorklists` plugin). Killed when dropped.
use crate::process::Proc;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The AE title the private Orthanc answers to.
pub const AE_TITLE: &str = "ORTHANC";

/// DICOM TLS on a private Orthanc's DICOM port (`DicomTls*`): its certificate and key,
/// the CA(s) whose client certificates it trusts, and whether it requires one.
#[derive(Debug, Clone)]
pub struct OrthancTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trusted: PathBuf,
    pub require_client_cert: bool,
}

/// How to start a private Orthanc; the defaults: AE title [`AE_TITLE`], a free port,
/// plain DICOM, no worklists.
#[derive(Debug, Clone, Default)]
pub struct OrthancOptions {
    /// The AE title it answers to (and only to it).
    pub ae: Option<String>,
    /// Its DICOM port (e.g. the port of one that was stopped, to play another PACS there).
    pub dicom_port: Option<u16>,
    pub tls: Option<OrthancTls>,
    /// A folder of `*.wl` files it answers Modality Worklist C-FINDs from.
    pub worklists: Option<PathBuf>,
}

/// Debian's sample worklist plugin.
const WORKLIST_PLUGIN: &str = "/usr/share/orthanc/plugins/libModalityWorklists.so";

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
        Orthanc::start_with(OrthancOptions {
            ae: Some(ae.to_owned()),
            dicom_port,
            ..OrthancOptions::default()
        })
        .await
    }

    /// Starts one as `o` says and waits until its REST API answers.
    pub async fn start_with(o: OrthancOptions) -> Result<Orthanc> {
        let bin = binary()?;
        let ae = o.ae.as_deref().unwrap_or(AE_TITLE);
        let dicom_port = o.dicom_port;
        let dir = tempfile::Builder::new()
            .prefix("airlock-orthanc-")
            .tempdir()?;
        let base = crate::net::free_ports(2)?;
        let (dicom_port, http_port) = match dicom_port {
            Some(p) => (p, base),
            None => (base, base + 1),
        };
        let mut config = serde_json::json!({
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
        if let Some(t) = &o.tls {
            for f in [&t.cert, &t.key, &t.trusted] {
                if !f.is_file() {
                    bail!("Orthanc's TLS file {} does not exist", f.display());
                }
            }
            config["DicomTlsEnabled"] = true.into();
            config["DicomTlsCertificate"] = serde_json::json!(t.cert);
            config["DicomTlsPrivateKey"] = serde_json::json!(t.key);
            config["DicomTlsTrustedCertificates"] = serde_json::json!(t.trusted);
            config["DicomTlsRemoteCertificateRequired"] = t.require_client_cert.into();
        }
        if let Some(folder) = &o.worklists {
            if !Path::new(WORKLIST_PLUGIN).is_file() {
                bail!("missing {WORKLIST_PLUGIN}; install it with `apt-get install -y --no-install-recommends orthanc` (scripts/setup.sh does)");
            }
            config["Plugins"] = serde_json::json!([WORKLIST_PLUGIN]);
            config["Worklists"] = serde_json::json!({"Enable": true, "Database": folder});
            config["DicomAlwaysAllowFindWorklist"] = true.into();
            // Answers in the files' own character set (UTF-8 here), not Latin-1.
            config["DefaultEncoding"] = "Utf8".into();
        }
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
