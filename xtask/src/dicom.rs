//! Synthetic DICOM content for the sample discs: MR Image Storage files with
//! a deterministic head-phantom pixel data, and the DICOMDIR that indexes
//! them (PS3.10 / PS3.3 Annex F, as IHE PDI requires).
//!
//! Everything is a pure function of the [`Study`] description: UIDs are
//! derived from names (`2.25.<uuid>`), dates are fixed, noise comes from a
//! seeded PRNG. Running the generator twice gives the same bytes.

use anyhow::{ensure, Context, Result};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Implementation Class UID of the files this generator writes.
pub fn implementation_class_uid() -> String {
    uid("implementation")
}
pub const IMPLEMENTATION_VERSION_NAME: &str = "AIRLOCK_XTASK_1";

/// A deterministic UID under the UUID-derived root `2.25` (PS3.5 B.2): the
/// number is a version-8 UUID made from SHA-256 of `name`.
pub fn uid(name: &str) -> String {
    let digest = Sha256::digest(format!("airlock sample disc: {name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// MR contrasts the phantom can be rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contrast {
    T1,
    T2,
    Flair,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Axial,
    Sagittal,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub number: u32,
    pub description: &'static str,
    pub contrast: Contrast,
    pub plane: Plane,
    pub images: u32,
}

#[derive(Debug, Clone)]
pub struct Study {
    /// Seed for UIDs and noise; two studies with different keys differ.
    pub key: &'static str,
    pub patient_name: &'static str,
    pub patient_id: &'static str,
    pub birth_date: &'static str,
    pub sex: &'static str,
    pub study_date: &'static str,
    pub study_time: &'static str,
    pub study_id: &'static str,
    pub accession: &'static str,
    pub description: &'static str,
    pub institution: &'static str,
    pub rows: u16,
    pub columns: u16,
    pub series: Vec<Series>,
}

impl Study {
    pub fn study_uid(&self) -> String {
        uid(&format!("{}/study", self.key))
    }
    pub fn series_uid(&self, s: &Series) -> String {
        uid(&format!("{}/series/{}", self.key, s.number))
    }
    pub fn frame_of_reference_uid(&self, s: &Series) -> String {
        uid(&format!("{}/frame/{:?}", self.key, s.plane))
    }
    pub fn instance_uid(&self, s: &Series, instance: u32) -> String {
        uid(&format!("{}/image/{}/{}", self.key, s.number, instance))
    }
}

/// One image file as the DICOMDIR references it.
#[derive(Debug, Clone)]
pub struct ImageRef {
    /// Path components below the disc root, e.g. `DICOM/PAT00001/...`.
    pub file_id: Vec<String>,
    pub series: u32,
    pub instance: u32,
    pub sop_instance_uid: String,
}

/// The File ID components of an image (PS3.12: up to 8 characters of
/// `A-Z 0-9 _`, no extension).
pub fn image_file_id(series: u32, instance: u32) -> Vec<String> {
    vec![
        "DICOM".into(),
        "PAT00001".into(),
        "STU00001".into(),
        format!("SER{series:05}"),
        format!("IMG{instance:05}"),
    ]
}

fn el(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

fn strs(values: &[&str]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|s| s.to_string()).collect())
}

fn ds(v: f64) -> String {
    // Decimal String: at most 16 characters.
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Write image `instance` (1-based) of `series` to `path`; returns its
/// DICOMDIR reference.
pub fn write_image(study: &Study, series: &Series, instance: u32, path: &Path) -> Result<ImageRef> {
    let rows = study.rows;
    let cols = study.columns;
    let spacing = 240.0 / f64::from(cols); // 24 cm field of view
    let thickness = 5.0;
    // Slice position along the slice normal, centred on the head.
    let z = (f64::from(instance) - (f64::from(series.images) + 1.0) / 2.0) * thickness;
    let half = 120.0;
    let (orientation, position) = match series.plane {
        Plane::Axial => ([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [-half, -half, z]),
        Plane::Sagittal => ([0.0, 1.0, 0.0, 0.0, 0.0, -1.0], [z, -half, half]),
    };
    let (tr, te, ti, scanning, variant) = match series.contrast {
        Contrast::T1 => (500.0, 12.0, None, "SE", "NONE"),
        Contrast::T2 => (4000.0, 100.0, None, "SE", "SK"),
        Contrast::Flair => (9000.0, 120.0, Some(2500.0), "IR", "SK"),
    };
    let (center, width) = match series.contrast {
        Contrast::T1 => ("1400", "2800"),
        Contrast::T2 => ("1900", "3800"),
        Contrast::Flair => ("1700", "3400"),
    };
    let sop_instance_uid = study.instance_uid(series, instance);
    let pixels = phantom(study, series, instance);
    let fmt_list = |v: &[f64]| v.iter().map(|x| ds(*x)).collect::<Vec<_>>();

    let mut obj = InMemDicomObject::new_empty();
    let mut put = |e: DataElement<InMemDicomObject>| {
        obj.put(e);
    };
    put(el(
        tags::IMAGE_TYPE,
        VR::CS,
        strs(&["ORIGINAL", "PRIMARY", "M", "ND"]),
    ));
    put(el(tags::INSTANCE_CREATION_DATE, VR::DA, study.study_date));
    put(el(tags::INSTANCE_CREATION_TIME, VR::TM, study.study_time));
    put(el(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE));
    put(el(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        sop_instance_uid.as_str(),
    ));
    put(el(tags::STUDY_DATE, VR::DA, study.study_date));
    put(el(tags::SERIES_DATE, VR::DA, study.study_date));
    put(el(tags::ACQUISITION_DATE, VR::DA, study.study_date));
    put(el(tags::CONTENT_DATE, VR::DA, study.study_date));
    put(el(tags::STUDY_TIME, VR::TM, study.study_time));
    put(el(tags::SERIES_TIME, VR::TM, study.study_time));
    put(el(tags::ACQUISITION_TIME, VR::TM, study.study_time));
    put(el(tags::CONTENT_TIME, VR::TM, study.study_time));
    put(el(tags::ACCESSION_NUMBER, VR::SH, study.accession));
    put(el(tags::MODALITY, VR::CS, "MR"));
    put(el(tags::MANUFACTURER, VR::LO, "AIRLOCK (SYNTHETIC)"));
    put(el(tags::INSTITUTION_NAME, VR::LO, study.institution));
    put(el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""));
    put(el(tags::STUDY_DESCRIPTION, VR::LO, study.description));
    put(el(tags::SERIES_DESCRIPTION, VR::LO, series.description));
    put(el(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        "PHANTOM GENERATOR",
    ));
    put(el(tags::PATIENT_NAME, VR::PN, study.patient_name));
    put(el(tags::PATIENT_ID, VR::LO, study.patient_id));
    put(el(tags::PATIENT_BIRTH_DATE, VR::DA, study.birth_date));
    put(el(tags::PATIENT_SEX, VR::CS, study.sex));
    put(el(tags::SCANNING_SEQUENCE, VR::CS, scanning));
    put(el(tags::SEQUENCE_VARIANT, VR::CS, variant));
    put(el(tags::SCAN_OPTIONS, VR::CS, ""));
    put(el(tags::MR_ACQUISITION_TYPE, VR::CS, "2D"));
    put(el(tags::SLICE_THICKNESS, VR::DS, ds(thickness)));
    put(el(tags::REPETITION_TIME, VR::DS, ds(tr)));
    put(el(tags::ECHO_TIME, VR::DS, ds(te)));
    if let Some(ti) = ti {
        put(el(tags::INVERSION_TIME, VR::DS, ds(ti)));
    }
    put(el(
        tags::ECHO_TRAIN_LENGTH,
        VR::IS,
        if tr > 1000.0 { "16" } else { "1" },
    ));
    // The identifying attributes (all text).
    let ids: [(Tag, VR, String); 8] = [
        (tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "1.5".into()),
        (tags::PATIENT_POSITION, VR::CS, "HFS".into()),
        (tags::STUDY_INSTANCE_UID, VR::UI, study.study_uid()),
        (tags::SERIES_INSTANCE_UID, VR::UI, study.series_uid(series)),
        (tags::STUDY_ID, VR::SH, study.study_id.into()),
        (tags::SERIES_NUMBER, VR::IS, series.number.to_string()),
        (tags::ACQUISITION_NUMBER, VR::IS, "1".into()),
        (tags::INSTANCE_NUMBER, VR::IS, instance.to_string()),
    ];
    for (tag, vr, value) in ids {
        put(el(tag, vr, value));
    }
    put(el(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        PrimitiveValue::Strs(fmt_list(&position).into()),
    ));
    put(el(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        PrimitiveValue::Strs(fmt_list(&orientation).into()),
    ));
    put(el(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        study.frame_of_reference_uid(series).as_str(),
    ));
    put(el(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));
    put(el(tags::SLICE_LOCATION, VR::DS, ds(z)));
    put(el(tags::SAMPLES_PER_PIXEL, VR::US, 1u16));
    put(el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    put(el(tags::ROWS, VR::US, rows));
    put(el(tags::COLUMNS, VR::US, cols));
    put(el(
        tags::PIXEL_SPACING,
        VR::DS,
        PrimitiveValue::Strs(vec![ds(spacing), ds(spacing)].into()),
    ));
    put(el(tags::BITS_ALLOCATED, VR::US, 16u16));
    put(el(tags::BITS_STORED, VR::US, 12u16));
    put(el(tags::HIGH_BIT, VR::US, 11u16));
    put(el(tags::PIXEL_REPRESENTATION, VR::US, 0u16));
    put(el(tags::WINDOW_CENTER, VR::DS, center));
    put(el(tags::WINDOW_WIDTH, VR::DS, width));
    put(el(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));

    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(implementation_class_uid())
                .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
        )
        .context("building the file meta group")?;
    file.write_to_file(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(ImageRef {
        file_id: image_file_id(series.number, instance),
        series: series.number,
        instance,
        sop_instance_uid,
    })
}

/// The pixel data: a synthetic head (scalp, skull, grey and white matter,
/// ventricles, a small lesion) whose cross-section follows the slice
/// position, with the series' contrast, coil shading and noise. 12-bit.
pub fn phantom(study: &Study, series: &Series, instance: u32) -> Vec<u16> {
    let (rows, cols) = (usize::from(study.rows), usize::from(study.columns));
    // Tissue intensities: background, scalp fat, skull, grey, white, CSF, lesion.
    let levels: [f64; 7] = match series.contrast {
        Contrast::T1 => [0.0, 3000.0, 150.0, 1400.0, 2000.0, 300.0, 900.0],
        Contrast::T2 => [0.0, 1800.0, 100.0, 2100.0, 1400.0, 3800.0, 3200.0],
        Contrast::Flair => [0.0, 1500.0, 100.0, 1800.0, 1300.0, 200.0, 3500.0],
    };
    // Slice position in [-1, 1] along the slice normal.
    let t = if series.images > 1 {
        2.0 * f64::from(instance - 1) / f64::from(series.images - 1) - 1.0
    } else {
        0.0
    };
    let head = (1.0 - 0.8 * t * t).max(0.05).sqrt();
    let (ax, ay) = match series.plane {
        Plane::Axial => (0.72 * head, 0.88 * head),
        Plane::Sagittal => (0.90 * head, 0.80 * head),
    };
    let ventricles = (1.0 - 4.0 * t * t).max(0.0);
    let mut seed = u64::from_be_bytes(
        Sha256::digest(format!("{}/{}/{}", study.key, series.number, instance).as_bytes())[..8]
            .try_into()
            .unwrap_or([1; 8]),
    ) | 1;
    let mut noise = move || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f64 / f64::from(1u32 << 24) - 0.5
    };
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let y = 2.0 * (r as f64 + 0.5) / rows as f64 - 1.0;
        for c in 0..cols {
            let x = 2.0 * (c as f64 + 0.5) / cols as f64 - 1.0;
            let e = (x / ax).powi(2) + (y / ay).powi(2); // 1.0 on the outline
            let tissue = if e > 1.0 {
                0
            } else if e > 0.86 {
                1
            } else if e > 0.76 {
                2
            } else if e > 0.62 {
                3
            } else {
                let v1 = ((x - 0.13) / (0.09 * ventricles + 1e-9)).powi(2)
                    + ((y + 0.05) / (0.22 * ventricles + 1e-9)).powi(2);
                let v2 = ((x + 0.13) / (0.09 * ventricles + 1e-9)).powi(2)
                    + ((y + 0.05) / (0.22 * ventricles + 1e-9)).powi(2);
                let lesion = (x - 0.3).powi(2) + (y - 0.35).powi(2) < 0.004 * head;
                if v1 < 1.0 || v2 < 1.0 {
                    5
                } else if lesion && t > -0.3 && t < 0.3 {
                    6
                } else {
                    4
                }
            };
            let shading = 1.0 - 0.18 * (x * x + y * y);
            let v = levels[tissue] * shading + noise() * if tissue == 0 { 30.0 } else { 80.0 };
            out.push(v.clamp(0.0, 4095.0) as u16);
        }
    }
    out
}

/// One directory record before its offsets are known.
struct Record {
    kind: &'static str,
    keys: Vec<DataElement<InMemDicomObject>>,
    /// Index of the first child record, if any.
    child: Option<usize>,
    /// Index of the next sibling, if any.
    next: Option<usize>,
}

impl Record {
    /// A record with no child or sibling yet.
    fn new(kind: &'static str, keys: Vec<DataElement<InMemDicomObject>>) -> Record {
        Record {
            kind,
            keys,
            child: None,
            next: None,
        }
    }
}

/// Appends `record` as the last child of `records[parent]`, after `previous` (its last
/// child so far, which it becomes); the new record's index.
fn push_child(
    records: &mut Vec<Record>,
    parent: usize,
    previous: &mut Option<usize>,
    record: Record,
) -> usize {
    let index = records.len();
    match *previous {
        Some(p) => records[p].next = Some(index),
        None => records[parent].child = Some(index),
    }
    *previous = Some(index);
    records.push(record);
    index
}

fn encode(obj: &InMemDicomObject) -> Result<Vec<u8>> {
    let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &ts)
        .context("encoding a DICOMDIR data set")?;
    Ok(out)
}

fn record_object(r: &Record, next: u32, lower: u32) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(el(tags::OFFSET_OF_THE_NEXT_DIRECTORY_RECORD, VR::UL, next));
    obj.put(el(tags::RECORD_IN_USE_FLAG, VR::US, 0xffffu16));
    obj.put(el(
        tags::OFFSET_OF_REFERENCED_LOWER_LEVEL_DIRECTORY_ENTITY,
        VR::UL,
        lower,
    ));
    obj.put(el(tags::DIRECTORY_RECORD_TYPE, VR::CS, r.kind));
    for k in &r.keys {
        obj.put(k.clone());
    }
    obj
}

/// The DICOMDIR of a disc holding `images` of `study`: one PATIENT, one
/// STUDY, a SERIES per series and an IMAGE per file, with correct record
/// offsets (bytes from the start of the file, preamble included).
pub fn dicomdir(study: &Study, file_set_id: &str, images: &[ImageRef]) -> Result<Vec<u8>> {
    let mut records = vec![Record::new(
        "PATIENT",
        vec![
            el(tags::PATIENT_NAME, VR::PN, study.patient_name),
            el(tags::PATIENT_ID, VR::LO, study.patient_id),
            el(tags::PATIENT_BIRTH_DATE, VR::DA, study.birth_date),
            el(tags::PATIENT_SEX, VR::CS, study.sex),
        ],
    )];
    let study_record = Record::new(
        "STUDY",
        vec![
            el(tags::STUDY_DATE, VR::DA, study.study_date),
            el(tags::STUDY_TIME, VR::TM, study.study_time),
            el(tags::ACCESSION_NUMBER, VR::SH, study.accession),
            el(tags::STUDY_DESCRIPTION, VR::LO, study.description),
            el(tags::STUDY_INSTANCE_UID, VR::UI, study.study_uid().as_str()),
            el(tags::STUDY_ID, VR::SH, study.study_id),
        ],
    );
    let study_index = push_child(&mut records, 0, &mut None, study_record);
    let mut previous_series = None;
    for series in &study.series {
        let series_record = Record::new(
            "SERIES",
            vec![
                el(tags::MODALITY, VR::CS, "MR"),
                el(tags::SERIES_DESCRIPTION, VR::LO, series.description),
                el(tags::SERIES_INSTANCE_UID, VR::UI, study.series_uid(series)),
                el(tags::SERIES_NUMBER, VR::IS, series.number.to_string()),
            ],
        );
        let series_index = push_child(
            &mut records,
            study_index,
            &mut previous_series,
            series_record,
        );
        let mut previous_image = None;
        for image in images.iter().filter(|i| i.series == series.number) {
            let file_id: Vec<&str> = image.file_id.iter().map(String::as_str).collect();
            let image_record = Record::new(
                "IMAGE",
                vec![
                    el(tags::REFERENCED_FILE_ID, VR::CS, strs(&file_id)),
                    el(
                        tags::REFERENCED_SOP_CLASS_UID_IN_FILE,
                        VR::UI,
                        uids::MR_IMAGE_STORAGE,
                    ),
                    el(
                        tags::REFERENCED_SOP_INSTANCE_UID_IN_FILE,
                        VR::UI,
                        image.sop_instance_uid.as_str(),
                    ),
                    el(
                        tags::REFERENCED_TRANSFER_SYNTAX_UID_IN_FILE,
                        VR::UI,
                        uids::EXPLICIT_VR_LITTLE_ENDIAN,
                    ),
                    el(tags::INSTANCE_NUMBER, VR::IS, image.instance.to_string()),
                ],
            );
            push_child(
                &mut records,
                series_index,
                &mut previous_image,
                image_record,
            );
        }
    }

    // File meta group, then the data set's leading elements.
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(uids::MEDIA_STORAGE_DIRECTORY_STORAGE)
        .media_storage_sop_instance_uid(uid(&format!("{}/fileset", study.key)))
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(implementation_class_uid())
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .context("building the DICOMDIR file meta group")?;
    let mut head = vec![0u8; 128];
    head.extend_from_slice(b"DICM");
    meta.write(&mut head)
        .context("writing the DICOMDIR file meta group")?;
    let header = |root: u32| -> Result<Vec<u8>> {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(el(tags::FILE_SET_ID, VR::CS, file_set_id));
        obj.put(el(
            tags::OFFSET_OF_THE_FIRST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY,
            VR::UL,
            root,
        ));
        obj.put(el(
            tags::OFFSET_OF_THE_LAST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY,
            VR::UL,
            root,
        ));
        obj.put(el(tags::FILE_SET_CONSISTENCY_FLAG, VR::US, 0u16));
        encode(&obj)
    };

    // Offsets are fixed-size (UL), so encoding with zeros gives every
    // record's final length; lay the records out, then encode for real.
    let lengths = records
        .iter()
        .map(|r| encode(&record_object(r, 0, 0)).map(|b| b.len()))
        .collect::<Result<Vec<_>>>()?;
    let sq_header = 12; // tag, "SQ", reserved, length
    let item_header = 8; // (FFFE,E000), length
    let first = head.len() + header(0)?.len() + sq_header;
    let mut offsets = Vec::with_capacity(records.len());
    let mut at = first;
    for len in &lengths {
        offsets.push(u32::try_from(at).context("DICOMDIR larger than 4 GiB")?);
        at += item_header + len;
    }
    let offset_of = |i: Option<usize>| i.map_or(0, |i| offsets[i]);

    let mut items = Vec::new();
    for (r, len) in records.iter().zip(&lengths) {
        let body = encode(&record_object(r, offset_of(r.next), offset_of(r.child)))?;
        ensure!(
            body.len() == *len,
            "DICOMDIR record length changed between passes"
        );
        items.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0]);
        items.extend_from_slice(&(body.len() as u32).to_le_bytes());
        items.extend_from_slice(&body);
    }
    let mut out = head;
    out.extend_from_slice(&header(offsets[0])?);
    out.extend_from_slice(&[0x04, 0x00, 0x20, 0x12, b'S', b'Q', 0, 0]);
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    out.write_all(&items)?;
    ensure!(
        out.len() == at,
        "DICOMDIR layout mismatch ({} != {at})",
        out.len()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::open_file;

    fn study() -> Study {
        Study {
            key: "unit-test",
            patient_name: "TEST^PATIENT",
            patient_id: "T1",
            birth_date: "19700101",
            sex: "O",
            study_date: "20240115",
            study_time: "093000",
            study_id: "1",
            accession: "A1",
            description: "TEST",
            institution: "TEST",
            rows: 64,
            columns: 48,
            series: vec![
                Series {
                    number: 1,
                    description: "T1 AX",
                    contrast: Contrast::T1,
                    plane: Plane::Axial,
                    images: 3,
                },
                Series {
                    number: 2,
                    description: "T2 SAG",
                    contrast: Contrast::T2,
                    plane: Plane::Sagittal,
                    images: 2,
                },
            ],
        }
    }

    #[test]
    fn uids_are_valid_and_stable() {
        let a = uid("x");
        assert_eq!(a, uid("x"));
        assert_ne!(a, uid("y"));
        assert!(a.len() <= 64);
        assert!(a.starts_with("2.25."));
        let n = &a[5..];
        assert!(n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'));
    }

    #[test]
    fn images_read_back() {
        let s = study();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("IMG00002");
        let r = write_image(&s, &s.series[0], 2, &path).unwrap();
        assert_eq!(
            r.file_id.join("/"),
            "DICOM/PAT00001/STU00001/SER00001/IMG00002"
        );
        let obj = open_file(&path).unwrap();
        assert_eq!(
            obj.meta().media_storage_sop_class_uid(),
            uids::MR_IMAGE_STORAGE
        );
        assert_eq!(
            obj.meta().transfer_syntax(),
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        let get = |t| obj.element(t).unwrap().to_str().unwrap().to_string();
        assert_eq!(get(tags::SOP_CLASS_UID), uids::MR_IMAGE_STORAGE);
        assert_eq!(get(tags::SOP_INSTANCE_UID), r.sop_instance_uid);
        assert_eq!(get(tags::STUDY_INSTANCE_UID), s.study_uid());
        assert_eq!(get(tags::INSTANCE_NUMBER), "2");
        assert_eq!(
            obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(),
            64
        );
        assert_eq!(
            obj.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap(),
            48
        );
        let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(pixels.len(), 64 * 48 * 2);
        // Same input, same bytes.
        let again = dir.path().join("again");
        write_image(&s, &s.series[0], 2, &again).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }

    #[test]
    fn phantom_has_anatomy_and_fits_12_bits() {
        let s = study();
        let p = phantom(&s, &s.series[0], 2);
        assert_eq!(p.len(), 64 * 48);
        assert!(p.iter().all(|&v| v < 4096));
        assert!(p[0] < 100, "background is dark");
        assert!(p[32 * 48 + 24] > 1000, "the head is bright");
    }

    /// Walk the DICOMDIR by its offsets, as a reader on a workstation would.
    #[test]
    fn dicomdir_offsets_link_the_hierarchy() {
        let s = study();
        let st = &s;
        let images: Vec<_> = s
            .series
            .iter()
            .flat_map(|se| {
                (1..=se.images).map(move |i| ImageRef {
                    file_id: image_file_id(se.number, i),
                    series: se.number,
                    instance: i,
                    sop_instance_uid: st.instance_uid(se, i),
                })
            })
            .collect();
        let bytes = dicomdir(&s, "TESTSET", &images).unwrap();
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        // A record item: (FFFE,E000), length, then (0004,1400) UL next,
        // (0004,1410) US flag, (0004,1420) UL lower, (0004,1430) CS type.
        let record = |o: usize| {
            assert_eq!(
                &bytes[o..o + 4],
                &[0xfe, 0xff, 0x00, 0xe0],
                "no item at {o}"
            );
            let next = u32_at(o + 8 + 8);
            let lower = u32_at(o + 8 + 12 + 10 + 8);
            let t = o + 8 + 12 + 10 + 12;
            let len = u16::from_le_bytes([bytes[t + 6], bytes[t + 7]]) as usize;
            let kind = std::str::from_utf8(&bytes[t + 8..t + 8 + len])
                .unwrap()
                .trim();
            (kind.to_string(), next, lower)
        };
        let chain = |first: usize| {
            let mut out = Vec::new();
            let mut at = first;
            while at != 0 {
                let r = record(at);
                at = r.1;
                out.push(r);
            }
            out
        };
        // The root offset is the first UL after the File-set ID.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("DICOMDIR");
        std::fs::write(&path, &bytes).unwrap();
        let obj = open_file(&path).unwrap();
        let root = obj
            .element(tags::OFFSET_OF_THE_FIRST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY)
            .unwrap()
            .to_int::<u32>()
            .unwrap() as usize;
        let seq = obj.element(tags::DIRECTORY_RECORD_SEQUENCE).unwrap();
        assert_eq!(seq.items().unwrap().len(), 2 + 2 + 5);

        let patients = chain(root);
        assert_eq!(patients.len(), 1);
        assert_eq!(patients[0].0, "PATIENT");
        let studies = chain(patients[0].2);
        assert_eq!(studies.len(), 1);
        assert_eq!(studies[0].0, "STUDY");
        let series = chain(studies[0].2);
        assert_eq!(
            series.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            ["SERIES", "SERIES"]
        );
        let counts: Vec<_> = series.iter().map(|r| chain(r.2).len()).collect();
        assert_eq!(counts, [3, 2]);
        assert!(chain(series[0].2)
            .iter()
            .all(|r| r.0 == "IMAGE" && r.2 == 0));
    }
}
