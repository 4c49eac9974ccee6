//! A disc's DICOM files: the header a viewer sorts and labels by, and the pixels of an
//! uncompressed greyscale image (MONOCHROME1/2, one sample, 8 or 16 bits allocated),
//! rescaled and windowed to grey levels. Parsing is `dicom-object`'s (it reserves memory
//! fallibly); every value that sizes something is checked here.

use crate::window::Window;
use dicom_core::value::{DicomValueType, PrimitiveValue};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

/// Largest DICOM file the viewer reads (a 4096 × 4096 16-bit image is 32 MiB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest number of rows or columns shown.
pub const MAX_SIDE: u32 = 4096;
/// Longest patient name, ID or description kept (characters).
pub const MAX_TEXT: usize = 64;

/// Why a file is not shown.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("not a DICOM file (no DICM after the preamble)")]
    NotDicom,
    #[error("malformed DICOM: {0}")]
    Malformed(String),
    #[error("not an image (no Rows, Columns or Pixel Data)")]
    NotAnImage,
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("compressed or unsupported transfer syntax {0}")]
    TransferSyntax(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("bad image size: {0}")]
    BadSize(String),
}

/// What a viewer shows about an image and sorts by. Text is the disc's claim, kept as
/// printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub patient_name: String,
    pub patient_id: String,
    pub series_number: i64,
    pub instance_number: i64,
    pub series_description: String,
}

/// Greyscale pixels ready to draw: one byte a pixel, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grey {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// An image decoded for display.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub header: Header,
    pub image: Grey,
    /// The window applied (the file's, or one spanning the image's values).
    pub window: Window,
}

/// Uncompressed transfer syntaxes the viewer decodes (Implicit and Explicit VR Little
/// Endian).
const NATIVE: [&str; 2] = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];

/// How much of a file is read first to find its header (everything before the Pixel
/// Data); a longer header means reading the whole file (within [`MAX_FILE_BYTES`]).
pub const HEADER_BYTES: usize = 64 << 10;

/// VRs whose explicit-VR length field is 4 bytes (after 2 reserved bytes).
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Walks the element structure of a Part 10 file in `data` (the whole file, or with
/// `header_only` its start up to the Pixel Data) and checks that every declared length
/// fits in what follows, so the parser never sizes a buffer by a length the file does not
/// hold. Items and sequences are walked into. Returns where the walk stopped.
pub fn check_structure(data: &[u8], header_only: bool) -> Result<usize, DecodeError> {
    let bad = |at: usize, what: &str| DecodeError::Malformed(format!("{what} at byte {at}"));
    if !has_preamble(data) {
        return Err(DecodeError::NotDicom);
    }
    let u16_at = |p: usize| data.get(p..p + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |p: usize| {
        data.get(p..p + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pos = 132;
    let mut implicit = false;
    let mut in_meta = true;
    while pos < data.len() {
        let (Some(group), Some(element)) = (u16_at(pos), u16_at(pos + 2)) else {
            return Err(bad(pos, "truncated tag"));
        };
        if in_meta && group != 0x0002 {
            in_meta = false;
        }
        if group == 0x7FE0 && element == 0x0010 && header_only {
            return Ok(pos);
        }
        let (len, header) = if group == 0xFFFE {
            // Item and delimiters: tag and a 4-byte length, in every transfer syntax.
            (
                u32_at(pos + 4).ok_or_else(|| bad(pos, "truncated item"))?,
                8,
            )
        } else if implicit && !in_meta {
            (
                u32_at(pos + 4).ok_or_else(|| bad(pos, "truncated length"))?,
                8,
            )
        } else {
            let vr = data
                .get(pos + 4..pos + 6)
                .ok_or_else(|| bad(pos, "truncated VR"))?;
            if !vr.iter().all(u8::is_ascii_uppercase) {
                return Err(bad(pos, "not a VR"));
            }
            if LONG_VRS.iter().any(|v| &v[..] == vr) {
                (
                    u32_at(pos + 8).ok_or_else(|| bad(pos, "truncated length"))?,
                    12,
                )
            } else {
                let l = u16_at(pos + 6).ok_or_else(|| bad(pos, "truncated length"))?;
                (u32::from(l), 8)
            }
        };
        let body = pos + header;
        if group == 0x0002 && element == 0x0010 {
            let ts = data
                .get(body..body + len as usize)
                .ok_or_else(|| bad(pos, "truncated transfer syntax"))?;
            let ts = String::from_utf8_lossy(ts);
            let ts = ts.trim_end_matches(['\0', ' ']);
            match ts {
                "1.2.840.10008.1.2" => implicit = true,
                "1.2.840.10008.1.2.2" | "1.2.840.10008.1.2.1.99" => {
                    return Err(DecodeError::TransferSyntax(crate::printable(ts, 64)))
                }
                _ => {}
            }
        }
        // An item, a sequence or anything of undefined length: walk into it. Anything
        // else: skip its value, which must be there.
        let into = group == 0xFFFE || len == UNDEFINED || data.get(pos + 4..pos + 6) == Some(b"SQ");
        if into && !(implicit && !in_meta && group != 0xFFFE && len != UNDEFINED) {
            pos = body;
        } else {
            let end = body
                .checked_add(len as usize)
                .filter(|&e| e <= data.len())
                .ok_or_else(|| bad(pos, &format!("length {len} beyond the end of the file")))?;
            pos = end;
        }
    }
    if header_only {
        return Err(DecodeError::NotAnImage);
    }
    Ok(pos)
}

fn options() -> OpenFileOptions {
    OpenFileOptions::new().read_preamble(ReadPreamble::Always)
}

/// Does this start like a DICOM Part 10 file (128-byte preamble, then `DICM`)?
pub fn has_preamble(start: &[u8]) -> bool {
    start.get(128..132) == Some(&b"DICM"[..])
}

/// The header of a Part 10 file from its first bytes (up to the Pixel Data at least);
/// `NotAnImage` for files without Pixel Data, Rows or Columns (a DICOMDIR, a report).
pub fn read_header(start: &[u8]) -> Result<Header, DecodeError> {
    let pixel_data = check_structure(start, true)?;
    let obj = options()
        .from_reader(&start[..pixel_data])
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if obj.get(tags::ROWS).is_none() || obj.get(tags::COLUMNS).is_none() {
        return Err(DecodeError::NotAnImage);
    }
    Ok(header(&obj))
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| crate::printable(s.trim_end_matches(['\0', ' ']).trim(), MAX_TEXT))
        .unwrap_or_default()
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

fn float(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
        .filter(|v| v.is_finite())
}

fn header(obj: &DefaultDicomObject) -> Header {
    Header {
        patient_name: text(obj, tags::PATIENT_NAME),
        patient_id: text(obj, tags::PATIENT_ID),
        series_number: int(obj, tags::SERIES_NUMBER).unwrap_or(0),
        instance_number: int(obj, tags::INSTANCE_NUMBER).unwrap_or(0),
        series_description: text(obj, tags::SERIES_DESCRIPTION),
    }
}

/// A whole Part 10 file, decoded and windowed for display.
pub fn decode(file: &[u8]) -> Result<Decoded, DecodeError> {
    if u64::try_from(file.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    check_structure(file, false)?;
    let obj = options()
        .from_reader(file)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    if !NATIVE.contains(&ts.as_str()) {
        return Err(DecodeError::TransferSyntax(crate::printable(&ts, 64)));
    }
    let rows = int(&obj, tags::ROWS).ok_or(DecodeError::NotAnImage)?;
    let cols = int(&obj, tags::COLUMNS).ok_or(DecodeError::NotAnImage)?;
    let pixel_data = obj.get(tags::PIXEL_DATA).ok_or(DecodeError::NotAnImage)?;
    let samples = int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let photometric = text(&obj, tags::PHOTOMETRIC_INTERPRETATION);
    let allocated = int(&obj, tags::BITS_ALLOCATED).unwrap_or(0);
    let stored = int(&obj, tags::BITS_STORED).unwrap_or(allocated);
    let signed = int(&obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    if samples != 1 || !matches!(photometric.as_str(), "MONOCHROME1" | "MONOCHROME2") {
        return Err(DecodeError::Unsupported(format!(
            "{samples} samples, {photometric} (greyscale only)"
        )));
    }
    if !matches!(allocated, 8 | 16) || !(1..=allocated).contains(&stored) {
        return Err(DecodeError::Unsupported(format!(
            "{allocated} bits allocated, {stored} stored"
        )));
    }
    let side = |v: i64, what: &str| -> Result<u32, DecodeError> {
        u32::try_from(v)
            .ok()
            .filter(|v| (1..=MAX_SIDE).contains(v))
            .ok_or_else(|| DecodeError::BadSize(format!("{what} {v} (1 to {MAX_SIDE})")))
    };
    let (width, height) = (side(cols, "columns")?, side(rows, "rows")?);
    let count = width as usize * height as usize;
    let raw = samples_of(pixel_data.value().primitive(), allocated, count)?;

    let slope = float(&obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = float(&obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    let shift = 32 - stored as u32;
    let modality: Vec<f64> = raw
        .iter()
        .map(|&v| {
            // Keep the stored bits (High Bit = Bits Stored - 1), sign-extended if signed.
            let v = v << shift;
            let v = if signed {
                (v as i32) >> shift
            } else {
                (v >> shift) as i32
            };
            f64::from(v) * slope + intercept
        })
        .collect();
    let window = Window::from_file(
        float(&obj, tags::WINDOW_CENTER),
        float(&obj, tags::WINDOW_WIDTH),
    )
    .unwrap_or_else(|| Window::spanning(modality.iter().copied()));
    let invert = photometric == "MONOCHROME1";
    let pixels = modality
        .iter()
        .map(|&x| {
            let g = window.grey(x);
            if invert {
                255 - g
            } else {
                g
            }
        })
        .collect();
    Ok(Decoded {
        header: header(&obj),
        image: Grey {
            width,
            height,
            pixels,
        },
        window,
    })
}

/// The first `count` stored values of Pixel Data, as read (little endian for 16 bits).
fn samples_of(
    value: Option<&PrimitiveValue>,
    allocated: i64,
    count: usize,
) -> Result<Vec<u32>, DecodeError> {
    let short = |have: usize| {
        DecodeError::BadSize(format!(
            "Pixel Data holds {have} samples, rows × columns is {count}"
        ))
    };
    let values: Vec<u32> = match (value, allocated) {
        (None, _) => {
            return Err(DecodeError::Unsupported(
                "encapsulated Pixel Data (compressed)".into(),
            ))
        }
        (Some(PrimitiveValue::U8(b)), 8) => {
            if b.len() < count {
                return Err(short(b.len()));
            }
            b[..count].iter().map(|&v| u32::from(v)).collect()
        }
        (Some(PrimitiveValue::U8(b)), _) => {
            if b.len() / 2 < count {
                return Err(short(b.len() / 2));
            }
            b.chunks_exact(2)
                .take(count)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect()
        }
        (Some(PrimitiveValue::U16(w)), 16) => {
            if w.len() < count {
                return Err(short(w.len()));
            }
            w[..count].iter().map(|&v| u32::from(v)).collect()
        }
        (Some(PrimitiveValue::I16(w)), 16) => {
            if w.len() < count {
                return Err(short(w.len()));
            }
            w[..count].iter().map(|&v| u32::from(v as u16)).collect()
        }
        (Some(PrimitiveValue::U16(w)), _) => {
            // 8 bits allocated in an OW value: the bytes in order.
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            if bytes.len() < count {
                return Err(short(bytes.len()));
            }
            bytes[..count].iter().map(|&v| u32::from(v)).collect()
        }
        (Some(other), _) => {
            return Err(DecodeError::Unsupported(format!(
                "Pixel Data of type {:?}",
                other.value_type()
            )))
        }
    };
    Ok(values)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dicom_core::{DataElement, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    /// A Part 10 file: `rows` × `cols`, `bits` allocated, the given pixel bytes and extra
    /// elements.
    pub(crate) fn file(
        rows: u16,
        cols: u16,
        bits: u16,
        pixels: Vec<u8>,
        extra: &[(dicom_core::Tag, VR, &str)],
        ts: &str,
    ) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let s = |t, vr, v: &str| DataElement::new(t, vr, PrimitiveValue::from(v));
        obj.put(s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.4"));
        obj.put(s(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1"));
        obj.put(s(tags::PATIENT_NAME, VR::PN, "SMALL^SAMPLE"));
        obj.put(s(tags::PATIENT_ID, VR::LO, "AIRLOCK-0002"));
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(rows),
        ));
        obj.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(cols),
        ));
        obj.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        obj.put(s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
        obj.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(bits),
        ));
        obj.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(bits),
        ));
        obj.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(bits - 1),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
        for (t, vr, v) in extra {
            match (vr, v.parse::<u16>()) {
                (VR::US, Ok(n)) => obj.put(DataElement::new(*t, VR::US, PrimitiveValue::from(n))),
                _ => obj.put(s(*t, *vr, v)),
            };
        }
        let vr = if bits == 8 { VR::OB } else { VR::OW };
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            vr,
            PrimitiveValue::from(pixels),
        ));
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
            .expect("meta");
        let mut out = Vec::new();
        file.write_all(&mut out).expect("write");
        out
    }

    pub(crate) const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    fn words(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn decodes_16_bit_monochrome2_with_the_file_window() {
        // 12 bits stored in 16, window 2048/4096: values 0, 2048, 4095 and one with
        // bits above the stored ones (masked away).
        let data = file(
            2,
            2,
            16,
            words(&[0, 2048, 4095, 0xF000 | 4095]),
            &[
                (tags::BITS_STORED, VR::US, "12"),
                (tags::HIGH_BIT, VR::US, "11"),
                (tags::WINDOW_CENTER, VR::DS, "2048"),
                (tags::WINDOW_WIDTH, VR::DS, "4096"),
                (tags::SERIES_NUMBER, VR::IS, "3"),
                (tags::INSTANCE_NUMBER, VR::IS, "7"),
            ],
            EXPLICIT,
        );
        let d = decode(&data).expect("decodes");
        assert_eq!((d.image.width, d.image.height), (2, 2));
        assert_eq!(d.image.pixels, [0, 128, 255, 255]);
        assert_eq!(d.header.patient_name, "SMALL^SAMPLE");
        assert_eq!(d.header.patient_id, "AIRLOCK-0002");
        assert_eq!((d.header.series_number, d.header.instance_number), (3, 7));
        assert_eq!(read_header(&data).expect("header"), d.header);
    }

    #[test]
    fn computes_a_window_when_the_file_has_none_and_rescales() {
        let data = file(
            1,
            3,
            16,
            words(&[100, 200, 300]),
            &[
                (tags::RESCALE_SLOPE, VR::DS, "2"),
                (tags::RESCALE_INTERCEPT, VR::DS, "-1000"),
            ],
            EXPLICIT,
        );
        let d = decode(&data).expect("decodes");
        assert_eq!(d.image.pixels, [0, 128, 255]);
        assert_eq!(d.window.center, -600.0 + 0.5);
    }

    #[test]
    fn eight_bit_signed_and_monochrome1() {
        let data = file(1, 2, 8, vec![0, 255], &[], EXPLICIT);
        assert_eq!(decode(&data).expect("8 bit").image.pixels, [0, 255]);
        let inverted = file(
            1,
            2,
            8,
            vec![0, 255],
            &[(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1")],
            EXPLICIT,
        );
        assert_eq!(decode(&inverted).expect("mono1").image.pixels, [255, 0]);
        // Signed 16 bit: -1 is below 1.
        let signed = file(
            1,
            2,
            16,
            words(&[0xFFFF, 1]),
            &[(tags::PIXEL_REPRESENTATION, VR::US, "1")],
            EXPLICIT,
        );
        assert_eq!(decode(&signed).expect("signed").image.pixels, [0, 255]);
    }

    #[test]
    fn implicit_vr_is_decoded_too() {
        let data = file(1, 2, 16, words(&[0, 10]), &[], "1.2.840.10008.1.2");
        assert_eq!(decode(&data).expect("implicit").image.pixels, [0, 255]);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let good = file(4, 4, 16, words(&[1; 16]), &[], EXPLICIT);
        // Pixel Data shorter than rows × columns.
        let short = file(4, 4, 16, words(&[1; 15]), &[], EXPLICIT);
        assert!(matches!(decode(&short), Err(DecodeError::BadSize(_))));
        // Zero and oversized sides.
        let zero = file(0, 4, 16, vec![], &[], EXPLICIT);
        assert!(matches!(decode(&zero), Err(DecodeError::BadSize(_))));
        let huge = file(8192, 8192, 8, vec![0; 16], &[], EXPLICIT);
        assert!(matches!(decode(&huge), Err(DecodeError::BadSize(_))));
        // Not DICOM; a compressed transfer syntax; colour; 12 bits allocated.
        assert_eq!(decode(b"hello"), Err(DecodeError::NotDicom));
        let jpeg = file(4, 4, 16, words(&[1; 16]), &[], "1.2.840.10008.1.2.4.70");
        assert!(decode(&jpeg).is_err());
        let rgb = file(
            4,
            4,
            16,
            words(&[1; 16]),
            &[(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB")],
            EXPLICIT,
        );
        assert!(matches!(decode(&rgb), Err(DecodeError::Unsupported(_))));
        let odd = file(
            4,
            4,
            16,
            words(&[1; 16]),
            &[(tags::BITS_ALLOCATED, VR::US, "12")],
            EXPLICIT,
        );
        assert!(matches!(decode(&odd), Err(DecodeError::Unsupported(_))));
        // Every truncation of a good file, and every single corrupted header byte: an
        // error or an image, never a panic.
        for n in 0..good.len() {
            let _ = decode(&good[..n]);
            let _ = read_header(&good[..n]);
        }
        for i in 128..good.len().min(400) {
            for b in [0x00, 0xFF, 0x7F] {
                let mut bad = good.clone();
                bad[i] = b;
                let t = std::time::Instant::now();
                let _ = decode(&bad);
                let _ = read_header(&bad);
                // Lengths are checked before parsing: no giant allocation, no delay.
                assert!(t.elapsed().as_millis() < 500, "byte {i} = {b:#x} is slow");
            }
        }
    }

    #[test]
    fn a_dicomdir_or_report_is_not_an_image() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.1.3.10"),
        ));
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.2"),
        ));
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT))
            .expect("meta");
        let mut out = Vec::new();
        file.write_all(&mut out).expect("write");
        assert_eq!(read_header(&out), Err(DecodeError::NotAnImage));
        assert_eq!(decode(&out), Err(DecodeError::NotAnImage));
    }
}
