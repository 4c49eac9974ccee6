//! Completing the HIS's patient context from the site's Modality Worklist (C-FIND on
//! the MWL information model, PS3.4 K): the patient's name, birth date, sex and the
//! order's accession number and study UID, for the patient ID the HIS passed. The disc
//! is never asked. Answers are validated like any input from outside
//! ([`PatientContext::new`]); at most [`MAX_MATCHES`] are read. Blocking.
use crate::net::{associate, command, request_fields, status, NetError, Peer};
use crate::patient::{PatientContext, PatientError};
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// Modality Worklist Information Model – FIND.
pub const MWL_FIND: &str = "1.2.840.10008.5.1.4.31";

/// The most matches read from one query (the rest are cancelled by releasing).
pub const MAX_MATCHES: usize = 16;

/// What the worklist query found.
#[derive(Debug, thiserror::Error)]
pub enum WorklistError {
    #[error("worklist: {0}")]
    Net(#[from] NetError),
    #[error("the worklist has no scheduled patient {patient_id}{}; check the ID in the HIS, or send without the worklist", accession.as_deref().map(|a| format!(" with accession {a}")).unwrap_or_default())]
    NotFound {
        patient_id: String,
        accession: Option<String>,
    },
    #[error("the worklist answered an entry that cannot be used: {0}")]
    BadEntry(#[from] PatientError),
    #[error("the worklist has {0} entries for this patient and no accession was given to choose; pass --accession")]
    Ambiguous(usize),
}

fn empty(tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

/// The query: the patient ID (and accession) to match, the attributes to return empty.
fn identifier(patient_id: &str, accession: Option<&str>) -> InMemDicomObject {
    let step = InMemDicomObject::from_element_iter([
        empty(tags::MODALITY, VR::CS),
        empty(tags::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA),
        empty(tags::SCHEDULED_STATION_AE_TITLE, VR::AE),
    ]);
    InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ),
        DataElement::new(
            tags::ACCESSION_NUMBER,
            VR::SH,
            PrimitiveValue::from(accession.unwrap_or("")),
        ),
        empty(tags::PATIENT_NAME, VR::PN),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(patient_id)),
        empty(tags::ISSUER_OF_PATIENT_ID, VR::LO),
        empty(tags::PATIENT_BIRTH_DATE, VR::DA),
        empty(tags::PATIENT_SEX, VR::CS),
        empty(tags::STUDY_INSTANCE_UID, VR::UI),
        DataElement::new(
            tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![step]),
        ),
    ])
}

fn text(o: &InMemDicomObject, tag: Tag) -> Option<String> {
    o.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Asks `worklist` for `patient_id` (and `accession`, if the HIS gave one) and returns
/// the patient context it schedules.
pub fn find_patient(
    worklist: &Peer,
    patient_id: &str,
    accession: Option<&str>,
) -> Result<PatientContext, WorklistError> {
    // The ID goes into a query: it is checked first, like the rest.
    PatientContext::new(patient_id, None, None, None, None, accession, None)?;
    let mut a = associate(worklist, MWL_FIND)?;
    let mut found = Vec::new();
    let result: Result<(), NetError> = (|| {
        a.send(
            command(request_fields(MWL_FIND, 0x0020, 1, true))?,
            &identifier(patient_id, accession),
        )?;
        loop {
            let (rsp, data) = a.receive()?;
            match status(&rsp)? {
                (0xFF00 | 0xFF01, _) => {
                    if let Some(d) = data {
                        if found.len() < MAX_MATCHES {
                            found.push(d);
                        }
                    }
                }
                (0x0000, _) => return Ok(()),
                (status, comment) => return Err(NetError::Status { status, comment }),
            }
        }
    })();
    a.close(result.is_ok());
    result?;
    let matching: Vec<&InMemDicomObject> = found
        .iter()
        .filter(|d| text(d, tags::PATIENT_ID).as_deref() == Some(patient_id))
        .collect();
    let entry = match matching.as_slice() {
        [] => {
            return Err(WorklistError::NotFound {
                patient_id: patient_id.to_owned(),
                accession: accession.map(str::to_owned),
            })
        }
        [one] => *one,
        many => {
            // Several orders of one patient: the same person, so one is enough unless
            // their identities differ.
            let name = |d: &&InMemDicomObject| text(d, tags::PATIENT_NAME);
            if many.iter().any(|d| name(d) != name(&many[0])) {
                return Err(WorklistError::Ambiguous(many.len()));
            }
            many[0]
        }
    };
    if text(entry, tags::SPECIFIC_CHARACTER_SET)
        .is_some_and(|cs| cs.contains("2022") && cs.contains("87"))
    {
        return Err(NetError::Protocol(
            "the worklist answered in ISO 2022 IR 87, which this broker cannot decode yet; configure the worklist to answer in ISO_IR 192 (UTF-8)".into(),
        )
        .into());
    }
    Ok(PatientContext::new(
        patient_id,
        text(entry, tags::ISSUER_OF_PATIENT_ID).as_deref(),
        text(entry, tags::PATIENT_NAME).as_deref(),
        text(entry, tags::PATIENT_BIRTH_DATE).as_deref(),
        text(entry, tags::PATIENT_SEX).as_deref(),
        accession
            .map(str::to_owned)
            .or_else(|| text(entry, tags::ACCESSION_NUMBER))
            .as_deref(),
        text(entry, tags::STUDY_INSTANCE_UID).as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_asks_for_the_patient_and_returns_the_rest_empty() {
        let q = identifier("P-1", Some("A-9"));
        assert_eq!(text(&q, tags::PATIENT_ID).as_deref(), Some("P-1"));
        assert_eq!(text(&q, tags::ACCESSION_NUMBER).as_deref(), Some("A-9"));
        for t in [
            tags::PATIENT_NAME,
            tags::PATIENT_BIRTH_DATE,
            tags::STUDY_INSTANCE_UID,
        ] {
            assert!(q.element(t).is_ok() && text(&q, t).is_none());
        }
        assert!(q.element(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE).is_ok());
    }

    #[test]
    fn a_bad_patient_id_is_refused_before_any_connection() {
        let peer = Peer {
            host: "127.0.0.1".into(),
            port: 1,
            called_ae: "WL".into(),
            calling_ae: "AIRLOCK".into(),
            timeout: std::time::Duration::from_secs(1),
            tls: None,
        };
        assert!(matches!(
            find_patient(&peer, "a\\b", None),
            Err(WorklistError::BadEntry(_))
        ));
    }
}
