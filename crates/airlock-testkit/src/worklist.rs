//! A private DICOM Modality Worklist (dcmtk's `wlmscpfs`) for the key-image tests: the
//! HIS's worklist, one file per scheduled patient, written with `dump2dcm` in UTF-8
//! (`ISO_IR 192`), answered with the file's character set. Killed when dropped.
//!
//! Debian's dcmtk 3.6.7 `wlmscpfs` has no TLS (`wlmscpfs --help` lists no `+tls`): the
//! worklist over DICOM TLS ([`TlsWorklist`]) is a private Orthanc serving the same files
//! with its worklist plugin on a TLS-only port.
use crate::orthanc::{Orthanc, OrthancOptions, OrthancTls};
use crate::process::Proc;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The worklist's AE title.
pub const AE_TITLE: &str = "AIRLOCKWL";

/// What the tests need: dcmtk.
pub const WORKLIST_TOOLS: &[(&str, &str)] = &[("wlmscpfs", "dcmtk"), ("dump2dcm", "dcmtk")];

/// A scheduled patient.
#[derive(Debug, Clone)]
pub struct Entry {
    pub patient_id: String,
    /// DICOM PN notation, UTF-8.
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub accession: String,
    pub study_uid: String,
}

/// A running worklist SCP.
pub struct Worklist {
    pub port: u16,
    dir: tempfile::TempDir,
    _proc: Proc,
}

fn dump(e: &Entry) -> String {
    format!(
        "(0008,0005) CS [ISO_IR 192]\n\
         (0008,0050) SH [{acc}]\n\
         (0010,0010) PN [{name}]\n\
         (0010,0020) LO [{id}]\n\
         (0010,0030) DA [{birth}]\n\
         (0010,0040) CS [{sex}]\n\
         (0020,000d) UI [{study}]\n\
         (0032,1060) LO [Outside images]\n\
         (0040,0100) SQ (Sequence with undefined length)\n\
         (fffe,e000) na (Item with undefined length)\n\
         (0008,0060) CS [OT]\n\
         (0040,0001) AE [AIRLOCK]\n\
         (0040,0002) DA [20261203]\n\
         (0040,0003) TM [120000]\n\
         (0040,0009) SH [SPS-{acc}]\n\
         (fffe,e00d) na (ItemDelimitationItem)\n\
         (fffe,e0dd) na (SequenceDelimitationItem)\n\
         (0040,1001) SH [RP-{acc}]\n",
        acc = e.accession,
        name = e.patient_name,
        id = e.patient_id,
        birth = e.birth_date,
        sex = e.sex,
        study = e.study_uid,
    )
}

/// Writes one `N.wl` file per entry into `folder` (with `dump2dcm`, UTF-8).
pub fn write_entries(folder: &Path, entries: &[Entry]) -> Result<()> {
    crate::tools::require(&[("dump2dcm", "dcmtk")])?;
    for (i, e) in entries.iter().enumerate() {
        let txt = folder.join(format!("{i}.txt"));
        std::fs::write(&txt, dump(e))?;
        let out = Command::new("dump2dcm")
            .arg("+te")
            .arg(&txt)
            .arg(folder.join(format!("{i}.wl")))
            .output()
            .context("running dump2dcm (dcmtk)")?;
        std::fs::remove_file(&txt)?;
        if !out.status.success() {
            bail!("dump2dcm failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

/// A worklist over DICOM TLS: a private Orthanc whose worklist plugin answers from the
/// entries, with AE title [`AE_TITLE`], TLS only on its DICOM port. Stopped when dropped.
pub struct TlsWorklist {
    pub port: u16,
    pub orthanc: Orthanc,
    _dir: tempfile::TempDir,
}

impl TlsWorklist {
    /// Writes the entries and starts the Orthanc.
    pub async fn start(entries: &[Entry], tls: OrthancTls) -> Result<TlsWorklist> {
        let dir = tempfile::Builder::new()
            .prefix("airlock-tls-worklist-")
            .tempdir()?;
        write_entries(dir.path(), entries)?;
        let orthanc = Orthanc::start_with(OrthancOptions {
            ae: Some(AE_TITLE.into()),
            tls: Some(tls),
            worklists: Some(dir.path().to_owned()),
            ..OrthancOptions::default()
        })
        .await?;
        Ok(TlsWorklist {
            port: orthanc.dicom_port,
            orthanc,
            _dir: dir,
        })
    }
}

impl Worklist {
    /// Writes the entries and starts `wlmscpfs` on a free loopback port.
    pub fn start(entries: &[Entry]) -> Result<Worklist> {
        crate::tools::require(WORKLIST_TOOLS)?;
        let dir = tempfile::Builder::new()
            .prefix("airlock-worklist-")
            .tempdir()?;
        let ae = dir.path().join(AE_TITLE);
        std::fs::create_dir_all(&ae)?;
        std::fs::write(ae.join("lockfile"), b"")?;
        write_entries(&ae, entries)?;
        let port = crate::net::free_ports(1)?;
        let log = std::fs::File::create(dir.path().join("wlmscpfs.log"))?;
        let proc = Proc::spawn(
            Command::new("wlmscpfs")
                .args(["-v", "-csk", "-dfr", "--single-process", "-dfp"])
                .arg(dir.path())
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
            "wlmscpfs",
        )?;
        let w = Worklist {
            port,
            dir,
            _proc: proc,
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("wlmscpfs did not listen within 20 s; its log:\n{}", w.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(w)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wlmscpfs.log")).unwrap_or_default()
    }
}
