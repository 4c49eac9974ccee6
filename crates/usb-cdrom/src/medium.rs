//! The disc in the drive: anything that can hand out 2048-byte sectors.
//!
//! The emulator never looks inside the data (no ISO 9660 parsing); it only copies
//! sectors the guest asks for. [`MemoryMedium`] serves tests, [`IsoFile`] serves an
//! ISO image from a file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Size of one user-data sector of a CD-ROM (Mode 1) or DVD-ROM, in bytes.
pub const SECTOR_SIZE: usize = 2048;

/// [`SECTOR_SIZE`] as a `u64`, for offset arithmetic.
const SECTOR_SIZE_U64: u64 = SECTOR_SIZE as u64;

/// Errors of a [`Medium`].
#[derive(Debug, thiserror::Error)]
pub enum MediumError {
    /// The image file could not be opened or its size read.
    #[error("cannot open disc image {path}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The image holds no data at all, so it cannot be a disc.
    #[error("disc image {name} is empty: a disc needs at least one 2048-byte sector")]
    Empty {
        /// The image name or path.
        name: String,
    },
    /// A read asked for sectors past the end of the medium.
    #[error("read of {count} sectors at LBA {lba} is outside the medium ({sectors} sectors)")]
    OutOfRange {
        /// First sector asked for.
        lba: u64,
        /// Number of sectors asked for.
        count: u32,
        /// Sectors on the medium.
        sectors: u64,
    },
    /// The buffer passed to [`Medium::read_sectors`] is not `count * 2048` bytes.
    #[error("read buffer is {actual} bytes, expected {expected}")]
    BufferSize {
        /// `count * 2048`.
        expected: usize,
        /// The length of the buffer given.
        actual: usize,
    },
    /// The underlying storage failed while reading.
    #[error("read error at LBA {lba}")]
    Io {
        /// First sector of the failed read.
        lba: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The sector cannot be read (a scratched disc; used by test media).
    #[error("sector {lba} is unreadable")]
    Unreadable {
        /// The unreadable sector.
        lba: u64,
    },
}

/// A disc: a fixed number of 2048-byte sectors, read by logical block address.
///
/// Implementations must be deterministic about `sector_count` for as long as the medium
/// is in the drive. `read_sectors` is called with `buf.len() == count * 2048` and a range
/// inside `0..sector_count()`; implementations should still check both and return an
/// error instead of panicking.
pub trait Medium: Send {
    /// Number of 2048-byte sectors on the medium.
    fn sector_count(&self) -> u64;

    /// Reads `count` sectors starting at `lba` into `buf` (`count * 2048` bytes).
    fn read_sectors(&mut self, lba: u64, count: u32, buf: &mut [u8]) -> Result<(), MediumError>;

    /// A human-readable name (file name, label) for logs.
    fn name(&self) -> &str;
}

/// Checks the arguments of a [`Medium::read_sectors`] call; returns the byte offset.
fn check_read(lba: u64, count: u32, buf_len: usize, sectors: u64) -> Result<u64, MediumError> {
    let expected = (count as usize).saturating_mul(SECTOR_SIZE);
    if buf_len != expected {
        return Err(MediumError::BufferSize {
            expected,
            actual: buf_len,
        });
    }
    match lba.checked_add(u64::from(count)) {
        Some(end) if end <= sectors => Ok(lba * SECTOR_SIZE_U64),
        _ => Err(MediumError::OutOfRange {
            lba,
            count,
            sectors,
        }),
    }
}

/// A disc held in memory; the data is padded with zeros to a whole sector.
#[derive(Clone)]
pub struct MemoryMedium {
    name: String,
    data: Vec<u8>,
}

impl MemoryMedium {
    /// Makes a medium of `data`, zero-padding the last sector. Empty data is refused.
    pub fn new(name: impl Into<String>, mut data: Vec<u8>) -> Result<Self, MediumError> {
        let name = name.into();
        if data.is_empty() {
            return Err(MediumError::Empty { name });
        }
        let padded = data.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        data.resize(padded, 0);
        Ok(Self { name, data })
    }

    /// Makes a medium of `sectors` sectors where every byte tells where it is: sector
    /// `lba` holds the bytes of `lba` (u32 little-endian) repeated, xored with the byte
    /// index within the sector. Useful to check that reads return the right sectors.
    pub fn patterned(name: impl Into<String>, sectors: u32) -> Self {
        let mut data = vec![0u8; sectors as usize * SECTOR_SIZE];
        for (lba, sector) in data.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            fill_pattern(lba as u64, sector);
        }
        Self {
            name: name.into(),
            data,
        }
    }

    /// The medium's bytes (a whole number of sectors).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// Fills one sector with the pattern used by [`MemoryMedium::patterned`].
pub fn fill_pattern(lba: u64, sector: &mut [u8]) {
    let tag = (lba as u32).to_le_bytes();
    for (i, b) in sector.iter_mut().enumerate() {
        *b = tag[i % 4] ^ (i as u8);
    }
}

impl std::fmt::Debug for MemoryMedium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryMedium")
            .field("name", &self.name)
            .field("sectors", &self.sector_count())
            .finish()
    }
}

impl Medium for MemoryMedium {
    fn sector_count(&self) -> u64 {
        (self.data.len() / SECTOR_SIZE) as u64
    }

    fn read_sectors(&mut self, lba: u64, count: u32, buf: &mut [u8]) -> Result<(), MediumError> {
        let offset = check_read(lba, count, buf.len(), self.sector_count())?;
        let start = usize::try_from(offset).map_err(|_| MediumError::OutOfRange {
            lba,
            count,
            sectors: self.sector_count(),
        })?;
        let src = self
            .data
            .get(start..start + buf.len())
            .ok_or(MediumError::OutOfRange {
                lba,
                count,
                sectors: self.sector_count(),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// An ISO image file. A size that is not a multiple of 2048 is accepted: the last
/// sector is padded with zeros. An empty file is refused.
#[derive(Debug)]
pub struct IsoFile {
    file: File,
    path: PathBuf,
    name: String,
    len: u64,
}

impl IsoFile {
    /// Opens an image read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MediumError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| MediumError::Open {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let len = meta.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        if len == 0 {
            return Err(MediumError::Empty { name });
        }
        Ok(Self {
            file,
            path,
            name,
            len,
        })
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes (before padding to a whole sector).
    pub fn byte_len(&self) -> u64 {
        self.len
    }
}

impl Medium for IsoFile {
    fn sector_count(&self) -> u64 {
        self.len.div_ceil(SECTOR_SIZE_U64)
    }

    fn read_sectors(&mut self, lba: u64, count: u32, buf: &mut [u8]) -> Result<(), MediumError> {
        let offset = check_read(lba, count, buf.len(), self.sector_count())?;
        let in_file = usize::try_from(self.len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let (data, padding) = buf.split_at_mut(in_file);
        let io_err = |source| MediumError::Io { lba, source };
        self.file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        self.file.read_exact(data).map_err(io_err)?;
        padding.fill(0);
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("usb-cdrom-test-{}-{tag}.iso", std::process::id()))
    }

    #[test]
    fn memory_medium_pads_and_reads() {
        let mut m = MemoryMedium::new("t", vec![7u8; 3000]).unwrap();
        assert_eq!(m.sector_count(), 2);
        let mut buf = vec![0u8; 4096];
        m.read_sectors(0, 2, &mut buf).unwrap();
        assert!(buf[..3000].iter().all(|&b| b == 7));
        assert!(buf[3000..].iter().all(|&b| b == 0));
        assert_eq!(m.name(), "t");
    }

    #[test]
    fn memory_medium_rejects_empty_and_bad_reads() {
        assert!(matches!(
            MemoryMedium::new("e", Vec::new()),
            Err(MediumError::Empty { .. })
        ));
        let mut m = MemoryMedium::patterned("p", 4);
        let mut buf = vec![0u8; 2048];
        assert!(matches!(
            m.read_sectors(4, 1, &mut buf),
            Err(MediumError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.read_sectors(u64::MAX, 1, &mut buf),
            Err(MediumError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.read_sectors(0, 2, &mut buf),
            Err(MediumError::BufferSize { .. })
        ));
        m.read_sectors(3, 1, &mut buf).unwrap();
        let mut expect = vec![0u8; 2048];
        fill_pattern(3, &mut expect);
        assert_eq!(buf, expect);
    }

    #[test]
    fn iso_file_reads_and_pads_last_sector() {
        let path = temp_path("pad");
        {
            let mut f = File::create(&path).unwrap();
            let mut data = vec![0u8; 2048 + 100];
            for (i, b) in data.iter_mut().enumerate() {
                *b = (i % 251) as u8 + 1;
            }
            f.write_all(&data).unwrap();
        }
        let mut iso = IsoFile::open(&path).unwrap();
        assert_eq!(iso.sector_count(), 2);
        assert_eq!(iso.byte_len(), 2148);
        assert_eq!(iso.path(), path.as_path());
        let mut buf = vec![0xEEu8; 4096];
        iso.read_sectors(0, 2, &mut buf).unwrap();
        assert_eq!(buf[0], 1);
        assert_eq!(buf[2147], (2147 % 251) as u8 + 1);
        assert!(buf[2148..].iter().all(|&b| b == 0));
        let mut one = vec![0u8; 2048];
        iso.read_sectors(1, 1, &mut one).unwrap();
        assert_eq!(&one[..], &buf[2048..]);
        assert!(iso.read_sectors(2, 1, &mut one).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn iso_file_rejects_empty_and_missing() {
        let path = temp_path("empty");
        File::create(&path).unwrap();
        let err = IsoFile::open(&path).unwrap_err();
        assert!(matches!(err, MediumError::Empty { .. }));
        assert!(err.to_string().contains("empty"));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            IsoFile::open(&path),
            Err(MediumError::Open { .. })
        ));
        assert!(matches!(
            IsoFile::open(std::env::temp_dir()),
            Err(MediumError::Open { .. })
        ));
    }
}
