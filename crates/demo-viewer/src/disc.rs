//! The images on a mounted disc: every regular file below the mount that starts like a
//! DICOM Part 10 file (`DICM` after the 128-byte preamble) and has an image header, in
//! viewing order (series number, instance number, path). Symbolic links are not
//! followed; the walk is bounded in depth and in the number of entries.

use crate::dicom::{self, DecodeError, Header};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Directory levels walked below the mount.
pub const MAX_DEPTH: usize = 16;
/// Directory entries looked at, in all.
pub const MAX_ENTRIES: usize = 20_000;
/// Images kept.
pub const MAX_IMAGES: usize = 5_000;

/// An image found on the disc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub header: Header,
}

/// A DICOM file that is not shown, and why.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub why: DecodeError,
}

/// What was found.
#[derive(Debug, Default)]
pub struct Found {
    pub images: Vec<Entry>,
    pub skipped: Vec<Skipped>,
    /// The walk stopped at a cap.
    pub truncated: bool,
}

/// The images below `root`, sorted for viewing.
pub fn find_images(root: &Path) -> Found {
    let mut found = Found::default();
    let mut files = Vec::new();
    let mut entries = 0usize;
    walk(root, 0, &mut files, &mut entries, &mut found.truncated);
    files.sort();
    for path in files {
        if found.images.len() >= MAX_IMAGES {
            found.truncated = true;
            break;
        }
        match header_of(&path) {
            Ok(Some(header)) => found.images.push(Entry { path, header }),
            Ok(None) | Err(DecodeError::NotAnImage) => {}
            Err(why) => found.skipped.push(Skipped { path, why }),
        }
    }
    found.images.sort_by(|a, b| {
        (a.header.series_number, a.header.instance_number, &a.path).cmp(&(
            b.header.series_number,
            b.header.instance_number,
            &b.path,
        ))
    });
    found
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, seen: &mut usize, cut: &mut bool) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        *seen += 1;
        if *seen > MAX_ENTRIES {
            *cut = true;
            return;
        }
        // The entry's own type: a link is neither a file nor a directory here.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            if depth + 1 < MAX_DEPTH {
                walk(&path, depth + 1, files, seen, cut);
            } else {
                *cut = true;
            }
        } else if kind.is_file() {
            files.push(path);
        }
    }
}

/// The header of `path` if it is a DICOM file (`None` if it is not one at all): from its
/// first [`dicom::HEADER_BYTES`], or the whole file if the header is longer.
fn header_of(path: &Path) -> Result<Option<Header>, DecodeError> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut file = file.take(dicom::HEADER_BYTES as u64);
    // The preamble first: other files cost one small read.
    let mut start = vec![0u8; 132];
    if file.read_exact(&mut start).is_err() || !dicom::has_preamble(&start) {
        return Ok(None);
    }
    if file.read_to_end(&mut start).is_err() {
        return Ok(None);
    }
    match dicom::read_header(&start) {
        Err(DecodeError::Malformed(_)) if size > start.len() as u64 => {
            dicom::read_header(&read_capped(path)?).map(Some)
        }
        other => other.map(Some),
    }
}

/// The whole file at `path`, read only if it is at most [`dicom::MAX_FILE_BYTES`].
pub fn read_capped(path: &Path) -> Result<Vec<u8>, DecodeError> {
    let file = std::fs::File::open(path).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let mut data = Vec::new();
    file.take(dicom::MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| DecodeError::Malformed(format!("reading: {e}")))?;
    if data.len() as u64 > dicom::MAX_FILE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::tests::{file, EXPLICIT};
    use dicom_core::VR;
    use dicom_dictionary_std::tags;

    fn image(series: &str, instance: &str) -> Vec<u8> {
        file(
            2,
            2,
            8,
            vec![1, 2, 3, 4],
            &[
                (tags::SERIES_NUMBER, VR::IS, series),
                (tags::INSTANCE_NUMBER, VR::IS, instance),
            ],
            EXPLICIT,
        )
    }

    #[test]
    fn finds_sorts_and_skips() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        let w = |p: &str, d: &[u8]| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, d).expect("write");
        };
        // Names sort differently from series/instance order.
        w("DICOM/A/IMG1", &image("2", "1"));
        w("DICOM/B/IMG2", &image("1", "10"));
        w("DICOM/B/IMG3", &image("1", "2"));
        w("README.TXT", b"not dicom");
        let mut broken = image("1", "1");
        broken.truncate(200);
        w("DICOM/BROKEN", &broken);
        std::os::unix::fs::symlink(root.join("DICOM/A/IMG1"), root.join("LINK")).expect("link");
        // Deeper than the walk goes.
        let deep: String = (0..MAX_DEPTH + 1).map(|i| format!("d{i}/")).collect();
        w(&format!("{deep}IMG"), &image("0", "0"));

        let found = find_images(root);
        let names: Vec<String> = found
            .images
            .iter()
            .map(|e| {
                e.path
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["DICOM/B/IMG3", "DICOM/B/IMG2", "DICOM/A/IMG1"]);
        assert_eq!(found.skipped.len(), 1);
        assert!(found.skipped[0].path.ends_with("DICOM/BROKEN"));
        assert!(found.truncated);
        assert_eq!(found.images[0].header.patient_name, "SMALL^SAMPLE");
        let data = read_capped(&found.images[0].path).expect("read");
        assert_eq!(
            dicom::decode(&data).expect("decode").image.pixels,
            [0, 85, 170, 255]
        );
        assert!(find_images(&root.join("missing")).images.is_empty());
    }
}
