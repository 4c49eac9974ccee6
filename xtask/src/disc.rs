//! `cargo xtask sample-disc`: sample referral discs shaped like a real one
//! (IHE PDI: `DICOMDIR`, `README.TXT`, `INDEX.HTM` and a `DICOM/` tree at the
//! root, plus a viewer directory), as ISO 9660 images with Rock Ridge and
//! Joliet, built by `xorriso` with fixed timestamps so the bytes never change.
//!
//! For each disc NAME: `NAME.iso` and `NAME.files.json`, which lists every
//! regular file as the guest sees it after `mount -t iso9660 -o ro` (Rock
//! Ridge names: case and length kept), its size, and the combined SHA-256 the
//! guest reports (see docs/guest.md).

use crate::dicom::{self, Contrast, Plane, Series, Study};
use crate::util::{self, create_dir, mb, run, run_stdout, sha256_hex, write_atomic};
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bump when the generated content or the ISO options change.
const GENERATOR_VERSION: &str = "airlock-sample-disc 1";
/// Every timestamp on the discs: 2024-01-15 09:30:00 UTC.
pub const EPOCH: u64 = 1_705_311_000;

pub struct Options {
    pub out: PathBuf,
    pub force: bool,
}

pub fn default_out() -> PathBuf {
    util::workspace_root().join("build/discs")
}

/// A disc to build.
pub struct DiscSpec {
    /// File stem: `NAME.iso`, `NAME.files.json`.
    pub name: &'static str,
    pub volume_id: &'static str,
    pub study: Study,
    /// The viewer stand-in: this many bytes of incompressible data, split
    /// into this many files.
    pub viewer_bytes: u64,
    pub viewer_files: u32,
}

/// `NAME.files.json` and its entries (the types live in the test kit, which reads them).
pub use airlock_testkit::{FileEntry, FileList};

/// The large disc: one MR brain study, 4 series x 64 images of 512 x 512
/// 16-bit (12 stored) pixels, and a viewer stand-in, about 161 MiB in all
/// like the disc measured in the published evaluation (256 MR images +
/// viewer).
pub fn sample() -> DiscSpec {
    let series = |number, description, contrast, plane| Series {
        number,
        description,
        contrast,
        plane,
        images: 64,
    };
    DiscSpec {
        name: "sample",
        volume_id: "AIRLOCK_SAMPLE",
        study: Study {
            key: "sample",
            patient_name: "SAMPLE^REFERRAL",
            patient_id: "AIRLOCK-0001",
            birth_date: "19700101",
            sex: "O",
            study_date: "20240115",
            study_time: "093000",
            study_id: "1",
            accession: "A0001",
            description: "MR BRAIN (SYNTHETIC SAMPLE)",
            institution: "AIRLOCK SAMPLE HOSPITAL",
            rows: 512,
            columns: 512,
            series: vec![
                series(1, "T1 AX", Contrast::T1, Plane::Axial),
                series(2, "T2 AX", Contrast::T2, Plane::Axial),
                series(3, "FLAIR AX", Contrast::Flair, Plane::Axial),
                series(4, "T1 SAG", Contrast::T1, Plane::Sagittal),
            ],
        },
        viewer_bytes: 33_565_000,
        viewer_files: 8,
    }
}

/// The small disc (a few MB) for fast tests and eject/insert tests: another
/// patient, one series of 8 images.
pub fn sample_small() -> DiscSpec {
    DiscSpec {
        name: "sample-small",
        volume_id: "AIRLOCK_SMALL",
        study: Study {
            key: "sample-small",
            patient_name: "SMALL^SAMPLE",
            patient_id: "AIRLOCK-0002",
            birth_date: "19800202",
            sex: "O",
            study_date: "20240116",
            study_time: "140000",
            study_id: "2",
            accession: "A0002",
            description: "MR BRAIN (SYNTHETIC SMALL SAMPLE)",
            institution: "AIRLOCK SAMPLE HOSPITAL",
            rows: 512,
            columns: 512,
            series: vec![Series {
                number: 1,
                description: "T2 AX",
                contrast: Contrast::T2,
                plane: Plane::Axial,
                images: 8,
            }],
        },
        viewer_bytes: 600_000,
        viewer_files: 1,
    }
}

/// Build both discs (skipping those already up to date).
/// What the disc benchmarks read: the demo guest and the sample discs, built if they are
/// not up to date, and the disc `iso` (which needs its `NAME.files.json` beside it), else
/// `sample.iso`.
pub fn guest_and_disc(iso: Option<&Path>) -> Result<(crate::guest::Manifest, FileList)> {
    let guest = crate::guest::build(&crate::guest::Options {
        out: crate::guest::default_out(),
        force: false,
    })?;
    let discs = build(&Options {
        out: default_out(),
        force: false,
    })?;
    let disc = match iso {
        Some(iso) => {
            let iso = util::absolute(iso)?;
            let list = iso.with_extension("files.json");
            FileList::read(&list).with_context(|| {
                format!("{} needs its file list {}", iso.display(), list.display())
            })?
        }
        None => discs
            .into_iter()
            .find(|d| d.iso.file_name().is_some_and(|n| n == "sample.iso"))
            .context("sample.iso was not built")?,
    };
    Ok((guest, disc))
}

pub fn build(opts: &Options) -> Result<Vec<FileList>> {
    util::require_tools(&[("xorriso", "xorriso")])?;
    let out = util::absolute(&opts.out)?;
    create_dir(&out)?;
    let lists = [sample_small(), sample()]
        .iter()
        .map(|spec| build_one(spec, &out, opts.force))
        .collect::<Result<Vec<_>>>()?;
    println!(
        "next: hot-plug an ISO into the demo guest as a USB CD drive (docs/guest.md, \
         \"Hot-plugging a CD drive\"); the guest's AIRLOCK-CD line must match the .files.json"
    );
    Ok(lists)
}

fn build_one(spec: &DiscSpec, out: &Path, force: bool) -> Result<FileList> {
    let iso = out.join(format!("{}.iso", spec.name));
    let list_path = out.join(format!("{}.files.json", spec.name));
    let stamp = out.join(format!(".{}.cache-key", spec.name));
    let key = sha256_hex(format!("{GENERATOR_VERSION}\n{}\n", xorriso_version()?).as_bytes());
    if !force && iso.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == key) {
        if let Ok(list) = FileList::read(&list_path) {
            if list.iso == iso && fs::metadata(&iso).map(|m| m.len()).ok() == Some(list.iso_size) {
                println!("{} is up to date; use --force to rebuild", iso.display());
                print_summary(&list_path, &list);
                return Ok(list);
            }
        }
    }
    let _ = fs::remove_file(&stamp);

    let staging = out.join("staging").join(spec.name);
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    create_dir(&staging)?;
    println!(
        "generating the content of {} in {}",
        spec.name,
        staging.display()
    );
    generate(spec, &staging)?;

    let mut entries = Vec::new();
    list_files(&staging, "", &mut entries)?;
    entries.sort_by(|a, b| path_order(&a.path, &b.path));
    set_times(&staging)?;
    let (files, bytes, sha256) = combined_sha256(&staging, &entries)?;

    println!("building {} with xorriso ({})", iso.display(), mb(bytes));
    let tmp = util::tmp_path(&iso);
    let _ = fs::remove_file(&tmp);
    run(Command::new("xorriso")
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .args(["-as", "mkisofs", "-quiet", "-r", "-J", "-joliet-long"])
        .args(["-V", spec.volume_id])
        .args(["-volset", spec.volume_id])
        .args(["-publisher", "AIRLOCK SAMPLE DISC (SYNTHETIC DATA)"])
        .args(["-A", "CARGO XTASK SAMPLE-DISC"])
        .args(["-sysid", "LINUX"])
        .arg("-o")
        .arg(&tmp)
        .arg(&staging))
    .with_context(|| format!("building {} with xorriso", iso.display()))?;
    fs::rename(&tmp, &iso).with_context(|| format!("renaming {} into place", tmp.display()))?;

    // What the ISO holds must be exactly what was staged.
    let on_disc = iso_files(&iso)?;
    let staged: Vec<_> = entries.iter().map(|e| e.path.clone()).collect();
    if on_disc != staged {
        bail!(
            "{} does not list the staged files (Rock Ridge names lost?): on disc {:?}..., staged {:?}...",
            iso.display(),
            &on_disc[..on_disc.len().min(5)],
            &staged[..staged.len().min(5)]
        );
    }

    let iso_size = fs::metadata(&iso)?.len();
    let list = FileList {
        iso: iso.clone(),
        volume_id: spec.volume_id.to_string(),
        iso_size,
        iso_sha256: file_sha256(&iso)?,
        files,
        bytes,
        sha256,
        entries,
    };
    write_atomic(&list_path, &serde_json::to_vec_pretty(&list)?)?;
    write_atomic(&stamp, key.as_bytes())?;
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    let _ = fs::remove_dir(out.join("staging"));
    print_summary(&list_path, &list);
    Ok(list)
}

fn print_summary(list_path: &Path, list: &FileList) {
    println!(
        "  {}  {} ({}), {} files, {} of files",
        list.volume_id,
        list.iso.display(),
        mb(list.iso_size),
        list.files,
        mb(list.bytes)
    );
    println!("    files: {}", list_path.display());
    println!(
        "    sha256 of the files (as the guest reports it): {}",
        list.sha256
    );
    println!("    sha256 of the ISO: {}", list.iso_sha256);
}

fn xorriso_version() -> Result<String> {
    let v = run_stdout(Command::new("xorriso").arg("-version"))?;
    Ok(v.lines().next().unwrap_or_default().to_string())
}

/// Write the disc's files into `root`.
pub fn generate(spec: &DiscSpec, root: &Path) -> Result<()> {
    let study = &spec.study;
    let mut images = Vec::new();
    let total: u32 = study.series.iter().map(|s| s.images).sum();
    for series in &study.series {
        for instance in 1..=series.images {
            let id = dicom::image_file_id(series.number, instance);
            let dir = id[..id.len() - 1]
                .iter()
                .fold(root.to_path_buf(), |p, c| p.join(c));
            create_dir(&dir)?;
            let path = dir.join(&id[id.len() - 1]);
            images.push(dicom::write_image(study, series, instance, &path)?);
            if images.len() % 64 == 0 {
                println!("  {} / {total} images", images.len());
            }
        }
    }
    let dicomdir = dicom::dicomdir(study, spec.volume_id, &images)?;
    fs::write(root.join("DICOMDIR"), dicomdir).context("writing DICOMDIR")?;
    fs::write(root.join("README.TXT"), readme(spec, total)).context("writing README.TXT")?;
    fs::write(root.join("INDEX.HTM"), index_htm(spec, total)).context("writing INDEX.HTM")?;
    viewer(spec, &root.join("VIEWER"))
}

/// One line per series of the disc's study, as `line` writes it.
fn each_series(spec: &DiscSpec, line: impl Fn(&crate::dicom::Series) -> String) -> String {
    spec.study.series.iter().map(line).collect()
}

fn readme(spec: &DiscSpec, images: u32) -> String {
    let s = &spec.study;
    let series = each_series(spec, |x| {
        format!(
            "    Series {}: {} ({} images)\r\n",
            x.number, x.description, x.images
        )
    });
    format!(
        "AIRLOCK SAMPLE REFERRAL DISC ({vol})\r\n\
         \r\n\
         This disc is SYNTHETIC test data made by `cargo xtask sample-disc` of the\r\n\
         Airlock project. It contains no real patient data. Its layout follows\r\n\
         IHE Portable Data for Imaging (PDI):\r\n\
         \r\n\
         DICOMDIR    DICOM directory of the images below\r\n\
         DICOM/      {images} MR images (DICOM Part 10, MR Image Storage,\r\n\
                     Explicit VR Little Endian)\r\n\
         INDEX.HTM   overview for a web browser\r\n\
         README.TXT  this file\r\n\
         VIEWER/     stands in for the image viewer program that real referral\r\n\
                     discs carry (incompressible filler of a realistic size)\r\n\
         \r\n\
         Patient: {name} ({id})\r\n\
         Study:   {desc}, {date}\r\n\
         {series}",
        vol = spec.volume_id,
        name = s.patient_name,
        id = s.patient_id,
        desc = s.description,
        date = s.study_date,
    )
}

fn index_htm(spec: &DiscSpec, images: u32) -> String {
    let s = &spec.study;
    let rows = each_series(spec, |x| {
        format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>DICOM/PAT00001/STU00001/SER{:05}/</td></tr>\r\n",
            x.number, x.description, x.images, x.number
        )
    });
    format!(
        "<!DOCTYPE html>\r\n<html><head><meta charset=\"us-ascii\"><title>{vol}</title></head>\r\n\
         <body>\r\n<h1>Sample referral disc (synthetic data)</h1>\r\n\
         <p>Made by the Airlock project for testing. No real patient data.</p>\r\n\
         <p>Patient: {name} ({id})<br>Study: {desc}, {date}<br>{images} images.</p>\r\n\
         <table border=\"1\"><tr><th>Series</th><th>Description</th><th>Images</th><th>Folder</th></tr>\r\n\
         {rows}</table>\r\n<p><a href=\"README.TXT\">README.TXT</a></p>\r\n</body></html>\r\n",
        vol = spec.volume_id,
        name = s.patient_name,
        id = s.patient_id,
        desc = s.description,
        date = s.study_date,
    )
}

/// The viewer stand-in: a README and `viewer_files` files of deterministic
/// incompressible bytes under `VIEWER/Viewer Data/` (long, mixed-case names
/// with a space, as a real viewer's files have; kept by Rock Ridge/Joliet).
fn viewer(spec: &DiscSpec, dir: &Path) -> Result<()> {
    let data = dir.join("Viewer Data");
    create_dir(&data)?;
    fs::write(
        dir.join("README.TXT"),
        "Placeholder for an image viewer program: real referral discs carry one.\r\n\
         The files in 'Viewer Data' are filler that give this disc a realistic size.\r\n",
    )
    .context("writing VIEWER/README.TXT")?;
    let n = u64::from(spec.viewer_files.max(1));
    for i in 0..n {
        let size = spec.viewer_bytes / n + u64::from(i < spec.viewer_bytes % n);
        let path = data.join(format!("viewer-part-{:02}.bin", i + 1));
        let mut f = std::io::BufWriter::new(
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let mut stream = Stream::new(&format!("{}/viewer/{i}", spec.name));
        let mut left = size;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            stream.fill(&mut buf[..k]);
            f.write_all(&buf[..k])?;
            left -= k as u64;
        }
        f.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift64*, seeded from a name).
struct Stream(u64);

impl Stream {
    fn new(name: &str) -> Self {
        let d = Sha256::digest(name.as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&d[..8]);
        Stream(u64::from_le_bytes(seed) | 1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn list_files(root: &Path, prefix: &str, out: &mut Vec<FileEntry>) -> Result<()> {
    let dir = root.join(prefix);
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("non-UTF-8 file name {n:?}"))?;
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = entry.metadata()?;
        if meta.is_dir() {
            list_files(root, &path, out)?;
        } else if meta.is_file() {
            out.push(FileEntry {
                path,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// Give every staged file and directory the same mtime (xorriso takes the
/// files' dates from it; SOURCE_DATE_EPOCH fixes the rest).
fn set_times(dir: &Path) -> Result<()> {
    let when = UNIX_EPOCH + Duration::from_secs(EPOCH);
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            set_times(&path)?;
        } else {
            set_mtime(&path, when)?;
        }
    }
    set_mtime(dir, when)
}

fn set_mtime(path: &Path, when: SystemTime) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.set_modified(when))
        .with_context(|| format!("setting the mtime of {}", path.display()))
}

/// (files, bytes, sha256 of the concatenation) in `entries` order: the
/// same definition as the guest's `AIRLOCK-CD` line.
pub fn combined_sha256(root: &Path, entries: &[FileEntry]) -> Result<(u64, u64, String)> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for e in entries {
        let path = root.join(&e.path);
        let mut f = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    ensure!(bytes == total, "files changed while hashing them");
    Ok((entries.len() as u64, bytes, util::hex(&hasher.finalize())))
}

fn file_sha256(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(util::hex(&hasher.finalize()))
}

/// The regular files in an ISO under their Rock Ridge names (what Linux
/// shows), sorted in byte order.
pub fn iso_files(iso: &Path) -> Result<Vec<String>> {
    let out = Command::new("xorriso")
        .args(["-abort_on", "FAILURE", "-return_with", "FAILURE", "32"])
        .arg("-indev")
        .arg(iso)
        .args(["-find", "/", "-type", "f"])
        .output()
        .context("running xorriso to list the ISO")?;
    ensure!(
        out.status.success(),
        "xorriso could not list {}: {}",
        iso.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // xorriso quotes each path: '/DICOM/...'
        let p = line.trim();
        let p = p
            .strip_prefix('\'')
            .and_then(|p| p.strip_suffix('\''))
            .unwrap_or(p);
        let p = p.replace("'\"'\"'", "'");
        files.push(p.trim_start_matches('/').to_string());
    }
    files.sort_by(|a, b| path_order(a, b));
    Ok(files)
}

/// The order of files on the `AIRLOCK-CD-FILE` lines and in the hash: whole
/// relative paths compared byte by byte (`LC_ALL=C sort`), so `a-b/x` comes
/// before `a/x` ('-' < '/'), unlike a per-directory walk.
pub fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.as_bytes().cmp(b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sort_as_c_locale_bytes() {
        let mut v = vec!["a/x", "DICOMDIR", "a-b/x", "B", "DICOM/PAT00001/IMG", "a"];
        v.sort_by(|a, b| path_order(a, b));
        assert_eq!(
            v,
            ["B", "DICOM/PAT00001/IMG", "DICOMDIR", "a", "a-b/x", "a/x"]
        );
    }

    #[test]
    fn combined_hash_is_over_the_concatenation() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/x"), b"world").unwrap();
        fs::write(dir.path().join("a"), b"hello ").unwrap();
        let mut entries = Vec::new();
        list_files(dir.path(), "", &mut entries).unwrap();
        entries.sort_by(|a, b| path_order(&a.path, &b.path));
        let (files, bytes, sha) = combined_sha256(dir.path(), &entries).unwrap();
        assert_eq!((files, bytes), (2, 11));
        assert_eq!(sha, sha256_hex(b"hello world"));
    }

    #[test]
    fn viewer_filler_is_deterministic() {
        let mut a = [0u8; 37];
        let mut b = [0u8; 37];
        Stream::new("x").fill(&mut a);
        Stream::new("x").fill(&mut b);
        assert_eq!(a, b);
        Stream::new("y").fill(&mut b);
        assert_ne!(a, b);
    }
}
