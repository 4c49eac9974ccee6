//! ISO 9660 images made for a test (Rock Ridge + Joliet, like the sample discs), with
//! what the guest must report for them.
use crate::artifacts::{FileEntry, FileList};
use anyhow::{Context, Result};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `dir/NAME.iso` (volume id `volume`) with `files` (relative path, contents)
/// using xorriso, and computes what the guest reports for it: the files in byte order
/// of their paths (`LC_ALL=C sort`), their count, total size and combined SHA-256.
pub fn make_iso(
    dir: &Path,
    name: &str,
    volume: &str,
    files: &[(&str, Vec<u8>)],
) -> Result<FileList> {
    crate::tools::require(&[("xorriso", "xorriso")])?;
    let root = dir.join(format!("{name}.root"));
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().context("a file path needs a parent")?)?;
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    }
    let iso = dir.join(format!("{name}.iso"));
    crate::process::run(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-r", "-J", "-V", volume, "-o"])
            .arg(&iso)
            .arg(&root),
    )?;
    let mut sorted: Vec<&(&str, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = sha2::Sha256::new();
    for (_, data) in &sorted {
        h.update(data);
    }
    let iso_data = std::fs::read(&iso).with_context(|| format!("reading {}", iso.display()))?;
    let entries: Vec<FileEntry> = sorted
        .iter()
        .map(|(p, d)| FileEntry {
            path: p.to_string(),
            size: d.len() as u64,
        })
        .collect();
    Ok(FileList {
        iso,
        volume_id: volume.to_string(),
        iso_size: iso_data.len() as u64,
        iso_sha256: crate::sha256_hex(&iso_data),
        files: entries.len() as u64,
        bytes: entries.iter().map(|e| e.size).sum(),
        sha256: hex::encode(h.finalize()),
        entries,
    })
}

/// Copies the directory `from` of the disc image `iso` (e.g. `/DICOM`) to `to` with
/// xorriso, under its Rock Ridge names: what the guest sees there, read on the host.
pub fn extract(iso: &Path, from: &str, to: &Path) -> Result<()> {
    crate::tools::require(&[("xorriso", "xorriso")])?;
    crate::process::run(
        Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", from])
            .arg(to),
    )?;
    Ok(())
}

/// Deterministic incompressible filler bytes.
pub fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `dir/garbage.img`: 4 MiB that is not ISO 9660, for the guest's error path.
pub fn garbage_image(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("garbage.img");
    std::fs::write(&path, vec![0x5au8; 4 << 20])
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
