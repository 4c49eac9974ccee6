//! A DICOM Secondary Capture Image (SOP Class 1.2.840.10008.5.1.4.1.1.7, PS3.3 A.8.1)
//! made of pixels only: the screen the hypervisor took, the patient and order the HIS
//! gave, new UIDs under the site's root, and attributes that say what it is (a screen
//! capture of external media, conversion type WSD, burned-in annotation). Nothing comes
//! from the disc.
use crate::patient::{valid_uid, PatientContext};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};

/// The Secondary Capture Image Storage SOP Class.
pub const SC_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// What the series says it is.
pub const SERIES_DESCRIPTION: &str = "Screen capture of external media (Airlock)";

/// An RGB image, 8 bits per sample, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: u16,
    pub height: u16,
    pub pixels: Vec<u8>,
}

/// The character set for values beyond ASCII (names, IDs): `ISO_IR 192` (UTF-8) or
/// `ISO 2022 IR 87` (JIS X 0208 with code extensions, as many Japanese PACS expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    Iso2022Ir87,
}

impl Charset {
    /// From the config: `utf8` or `iso2022-ir87`.
    pub fn parse(s: &str) -> Option<Charset> {
        match s {
            "utf8" => Some(Charset::Utf8),
            "iso2022-ir87" => Some(Charset::Iso2022Ir87),
            _ => None,
        }
    }
}

/// The site's UID root (PS3.5 9), or none: then UIDs are `2.25.<128-bit random>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRoot(Option<String>);

/// The longest root accepted: a generated UID is the root, a dot, and up to 39 digits.
pub const MAX_ROOT: usize = 24;

impl UidRoot {
    pub fn new(root: Option<&str>) -> Result<UidRoot, ScError> {
        match root {
            None => Ok(UidRoot(None)),
            Some(r) if r.len() <= MAX_ROOT && valid_uid(r) => Ok(UidRoot(Some(r.to_owned()))),
            Some(r) => Err(ScError::UidRoot(r.to_owned())),
        }
    }

    /// A new UID: 128 random bits in decimal under the root.
    pub fn new_uid(&self) -> Result<String, ScError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| ScError::Random(e.to_string()))?;
        let n = u128::from_be_bytes(b);
        let u = match &self.0 {
            Some(r) => format!("{r}.{n}"),
            None => format!("2.25.{n}"),
        };
        debug_assert!(u.len() <= 64 && valid_uid(&u));
        Ok(u)
    }
}

/// What the object says about who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equipment {
    /// Airlock's version (Secondary Capture Device Software Versions).
    pub version: String,
    /// The site's name for the broker (Station Name), optional.
    pub station: Option<String>,
}

/// A capture to turn into an object.
#[derive(Debug, Clone)]
pub struct Capture<'a> {
    pub patient: &'a PatientContext,
    pub image: &'a Rgb,
    /// When the screen was taken (UTC).
    pub taken_at: time::OffsetDateTime,
    pub charset: Charset,
    pub root: &'a UidRoot,
    pub equipment: &'a Equipment,
    /// Series and instance numbers.
    pub series_number: u32,
    pub instance_number: u32,
}

/// A built object and its UIDs.
#[derive(Debug, Clone)]
pub struct ScObject {
    pub object: FileDicomObject<InMemDicomObject>,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
}

/// Why an object cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScError {
    #[error("the image is empty or its pixels are not width × height × 3 bytes")]
    Pixels,
    #[error("UID root {0:?}: digits and dots, at most 24 characters, no leading zeros")]
    UidRoot(String),
    #[error("cannot draw random bits for a UID: {0}")]
    Random(String),
    #[error("a value cannot be written in the character set {charset}: {value:?}")]
    Encode {
        charset: &'static str,
        value: String,
    },
    #[error("cannot build the file meta group: {0}")]
    Meta(String),
}

fn put(o: &mut InMemDicomObject, tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) {
    o.put(DataElement::new(tag, vr, v.into()));
}

/// Writes a text value in `charset`: ASCII as it is; beyond ASCII with ISO 2022 IR 87,
/// encoded here (with the escape sequences, back to ASCII before each `^` and `=`), as
/// raw bytes.
fn put_text(
    o: &mut InMemDicomObject,
    tag: Tag,
    vr: VR,
    value: &str,
    charset: Charset,
) -> Result<(), ScError> {
    if value.is_ascii() || charset == Charset::Utf8 {
        put(o, tag, vr, value);
        return Ok(());
    }
    let codec = SpecificCharacterSet::from_code("ISO 2022 IR 87").ok_or(ScError::Encode {
        charset: "ISO 2022 IR 87",
        value: value.to_owned(),
    })?;
    let mut bytes = codec.encode(value).map_err(|_| ScError::Encode {
        charset: "ISO 2022 IR 87",
        value: value.to_owned(),
    })?;
    // The value ends in the default repertoire (PS3.5 6.1.2.5.3).
    if ends_in_jis(&bytes) {
        bytes.extend_from_slice(ESC_ASCII);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(b' ');
    }
    put(o, tag, vr, PrimitiveValue::U8(bytes.into()));
    Ok(())
}

/// ISO 2022 escape sequences: to JIS X 0208 (`ESC $ B`) and back to ASCII (`ESC ( B`).
const ESC_JIS: &[u8] = b"\x1b$B";
const ESC_ASCII: &[u8] = b"\x1b(B";

/// Whether ISO 2022 bytes end while JIS X 0208 is invoked.
fn ends_in_jis(b: &[u8]) -> bool {
    let last = |pat: &[u8]| b.windows(pat.len()).rposition(|w| w == pat);
    match (last(ESC_JIS), last(ESC_ASCII)) {
        (Some(j), Some(a)) => j > a,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Builds the Secondary Capture object of a capture.
pub fn secondary_capture(c: &Capture<'_>) -> Result<ScObject, ScError> {
    let img = c.image;
    let expected = usize::from(img.width) * usize::from(img.height) * 3;
    if expected == 0 || img.pixels.len() != expected {
        return Err(ScError::Pixels);
    }
    let study_uid = match &c.patient.study_uid {
        Some(u) => u.clone(),
        None => c.root.new_uid()?,
    };
    let series_uid = c.root.new_uid()?;
    let sop_instance_uid = c.root.new_uid()?;
    let date_fmt = time::macros::format_description!("[year][month][day]");
    let time_fmt = time::macros::format_description!("[hour][minute][second]");
    let date = c.taken_at.format(&date_fmt).unwrap_or_default();
    let tm = c.taken_at.format(&time_fmt).unwrap_or_default();
    let p = c.patient;
    let extended = p.needs_extended_charset();

    let mut o = InMemDicomObject::new_empty();
    // SOP Common.
    if extended {
        match c.charset {
            Charset::Utf8 => put(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
            Charset::Iso2022Ir87 => put(
                &mut o,
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::Strs(
                    ["ISO 2022 IR 6".to_owned(), "ISO 2022 IR 87".to_owned()].into(),
                ),
            ),
        }
    }
    put(&mut o, tags::SOP_CLASS_UID, VR::UI, SC_SOP_CLASS);
    put(
        &mut o,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        sop_instance_uid.as_str(),
    );
    put(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, date.as_str());
    put(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, tm.as_str());
    // Patient (from the HIS).
    put_text(
        &mut o,
        tags::PATIENT_NAME,
        VR::PN,
        p.name.as_ref().map_or("", |n| n.as_str()),
        c.charset,
    )?;
    put_text(&mut o, tags::PATIENT_ID, VR::LO, &p.id, c.charset)?;
    if let Some(i) = &p.issuer {
        put_text(&mut o, tags::ISSUER_OF_PATIENT_ID, VR::LO, i, c.charset)?;
    }
    put(
        &mut o,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        p.birth_date.as_deref().unwrap_or(""),
    );
    put(
        &mut o,
        tags::PATIENT_SEX,
        VR::CS,
        p.sex.as_deref().unwrap_or(""),
    );
    // General Study.
    put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, study_uid.as_str());
    put(&mut o, tags::STUDY_DATE, VR::DA, date.as_str());
    put(&mut o, tags::STUDY_TIME, VR::TM, tm.as_str());
    put(&mut o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put(&mut o, tags::STUDY_ID, VR::SH, "");
    put_text(
        &mut o,
        tags::ACCESSION_NUMBER,
        VR::SH,
        p.accession.as_deref().unwrap_or(""),
        c.charset,
    )?;
    // General Series.
    put(&mut o, tags::MODALITY, VR::CS, "OT");
    put(
        &mut o,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        series_uid.as_str(),
    );
    put(
        &mut o,
        tags::SERIES_NUMBER,
        VR::IS,
        c.series_number.to_string().as_str(),
    );
    put(&mut o, tags::SERIES_DESCRIPTION, VR::LO, SERIES_DESCRIPTION);
    // Type 2C (paired body parts): unknown for a screen, so present and empty.
    put(&mut o, tags::LATERALITY, VR::CS, "");
    // SC Equipment and General Equipment.
    put(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put(&mut o, tags::MANUFACTURER, VR::LO, "Airlock");
    put(
        &mut o,
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
        VR::LO,
        "Airlock",
    );
    put(
        &mut o,
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
        VR::LO,
        "Airlock broker",
    );
    put(
        &mut o,
        tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
        VR::LO,
        c.equipment.version.as_str(),
    );
    if let Some(s) = &c.equipment.station {
        put(&mut o, tags::STATION_NAME, VR::SH, s.as_str());
    }
    // General Image and SC Image.
    put(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        c.instance_number.to_string().as_str(),
    );
    put(&mut o, tags::PATIENT_ORIENTATION, VR::CS, "");
    put(
        &mut o,
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_owned(), "SECONDARY".to_owned()].into()),
    );
    put(&mut o, tags::CONTENT_DATE, VR::DA, date.as_str());
    put(&mut o, tags::CONTENT_TIME, VR::TM, tm.as_str());
    put(
        &mut o,
        tags::DATE_OF_SECONDARY_CAPTURE,
        VR::DA,
        date.as_str(),
    );
    put(&mut o, tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, tm.as_str());
    put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put(
        &mut o,
        tags::IMAGE_COMMENTS,
        VR::LT,
        "Pixels of a screen showing external media; patient and order from the HIS, not from the media.",
    );
    // Image Pixel.
    put(
        &mut o,
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(3_u16),
    );
    put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    put(
        &mut o,
        tags::PLANAR_CONFIGURATION,
        VR::US,
        PrimitiveValue::from(0_u16),
    );
    put(&mut o, tags::ROWS, VR::US, PrimitiveValue::from(img.height));
    put(
        &mut o,
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(img.width),
    );
    put(
        &mut o,
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(8_u16),
    );
    put(
        &mut o,
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(8_u16),
    );
    put(&mut o, tags::HIGH_BIT, VR::US, PrimitiveValue::from(7_u16));
    put(
        &mut o,
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0_u16),
    );
    let mut px = img.pixels.clone();
    if px.len() % 2 == 1 {
        px.push(0);
    }
    put(
        &mut o,
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(px.into()),
    );

    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(EXPLICIT_VR_LE)
        .media_storage_sop_class_uid(SC_SOP_CLASS)
        .media_storage_sop_instance_uid(sop_instance_uid.as_str())
        .implementation_class_uid(implementation_class_uid())
        .implementation_version_name(
            format!("AIRLOCK_{}", c.equipment.version.replace('.', "_"))
                .chars()
                .take(16)
                .collect::<String>(),
        )
        .build()
        .map_err(|e| ScError::Meta(e.to_string()))?;
    Ok(ScObject {
        object: o.with_exact_meta(meta),
        study_uid,
        series_uid,
        sop_instance_uid,
    })
}

/// Airlock's Implementation Class UID (PS3.7 D.3.3.2): fixed, under `2.25`.
pub fn implementation_class_uid() -> &'static str {
    "2.25.168202430131347712298311926432591216813"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_2022_values_end_in_ascii() {
        assert!(ends_in_jis(b"a\x1b$Bxx"));
        assert!(!ends_in_jis(b"a\x1b$Bxx\x1b(B^b"));
        assert!(ends_in_jis(b"\x1b$Bx\x1b(B^\x1b$By"));
        assert!(!ends_in_jis(b"plain"));
    }
}
