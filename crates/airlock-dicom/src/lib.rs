//! Key images into the patient's record (issue 14): the patient context the HIS gives
//! ([`patient`], validated by DICOM's value rules) and the DICOM Secondary Capture
//! object made from pixels only ([`sc`]), both pure; and its C-STORE to the site's
//! PACS ([`pacs`], network, blocking), plain or over DICOM TLS ([`tls`]).
#![forbid(unsafe_code)]

pub mod net;
pub mod pacs;
pub mod patient;
pub mod sc;
pub mod tls;
pub mod worklist;

pub use patient::{PatientContext, PatientError, PersonName};
pub use sc::{secondary_capture, Capture, Charset, Equipment, Rgb, ScError, ScObject, UidRoot};
