//! Sending a Secondary Capture to the site's PACS by C-STORE (PS3.7 9.1.1, PS3.4 B) over
//! an association of its own (dicom-ul), with a timeout on every step and an error per
//! way it can fail: the PACS cannot be reached, it rejects the association, it does not
//! accept Secondary Capture, it answers a status other than success. Blocking: call it
//! off the async runtime.
use crate::sc::{ScObject, SC_SOP_CLASS};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use std::io::Write;
use std::time::Duration;

/// Where to send: the PACS's AE and address, ours, and the time each step may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacs {
    pub host: String,
    pub port: u16,
    /// The PACS's AE title (called) and ours (calling): 1 to 16 characters of the default
    /// repertoire, no backslash.
    pub called_ae: String,
    pub calling_ae: String,
    pub timeout: Duration,
}

/// What the PACS said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The C-STORE-RSP status (0x0000, or a warning 0xB000..0xB007).
    pub status: u16,
}

/// A C-STORE that did not succeed; nothing was stored unless it says so.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("AE title {0:?}: 1 to 16 characters, letters, digits, space, '-' or '_'")]
    AeTitle(String),
    #[error("cannot reach the PACS at {address}: {why}; check pacs.host and pacs.port and that the PACS runs")]
    Unreachable { address: String, why: String },
    #[error("the PACS rejected the association: {0}; check the AE titles (pacs.called_ae, pacs.calling_ae) and that the PACS knows this broker")]
    Rejected(String),
    #[error("the PACS does not accept Secondary Capture Image Storage; configure it to store SOP class {SC_SOP_CLASS}")]
    NotAccepted,
    #[error("the exchange with the PACS failed: {0}")]
    Protocol(String),
    #[error("the PACS answered status 0x{status:04X}{}; the image was not stored", comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        status: u16,
        comment: Option<String>,
    },
}

fn valid_ae(ae: &str) -> bool {
    (1..=16).contains(&ae.len())
        && ae.trim() == ae
        && ae
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'_' | b'.'))
}

impl Pacs {
    /// Checks the AE titles.
    pub fn validate(&self) -> Result<(), SendError> {
        for ae in [&self.called_ae, &self.calling_ae] {
            if !valid_ae(ae) {
                return Err(SendError::AeTitle(ae.clone()));
            }
        }
        Ok(())
    }
}

fn protocol(e: impl std::fmt::Display) -> SendError {
    SendError::Protocol(e.to_string())
}

/// The C-STORE-RQ command set (PS3.7 9.3.1.1), in Implicit VR Little Endian.
fn store_command(sop_instance_uid: &str, message_id: u16) -> Result<Vec<u8>, SendError> {
    let cmd = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(SC_SOP_CLASS),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(0x0001_u16),
        ),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0x0000_u16)),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(0x0000_u16),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance_uid),
        ),
    ]);
    let mut out = Vec::new();
    cmd.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(protocol)?;
    Ok(out)
}

/// Sends `sc` to `pacs` and waits for its answer.
pub fn c_store(pacs: &Pacs, sc: &ScObject) -> Result<Stored, SendError> {
    pacs.validate()?;
    let address = format!("{}:{}", pacs.host, pacs.port);
    let options = ClientAssociationOptions::new()
        .calling_ae_title(pacs.calling_ae.as_str())
        .called_ae_title(pacs.called_ae.as_str())
        .with_presentation_context(
            SC_SOP_CLASS,
            vec![
                EXPLICIT_VR_LITTLE_ENDIAN.uid(),
                IMPLICIT_VR_LITTLE_ENDIAN.uid(),
            ],
        )
        .connection_timeout(pacs.timeout)
        .read_timeout(pacs.timeout)
        .write_timeout(pacs.timeout);
    let mut scu = options.establish(address.as_str()).map_err(|e| {
        use dicom_ul::association::Error as E;
        match e {
            E::Rejected { .. } => SendError::Rejected(e.to_string()),
            E::NoAcceptedPresentationContexts { .. } => SendError::NotAccepted,
            E::Connect { .. } | E::ToAddress { .. } => SendError::Unreachable {
                address: address.clone(),
                why: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
            },
            other => protocol(other),
        }
    })?;
    let result = exchange(&mut scu, sc);
    match &result {
        Ok(_) | Err(SendError::Status { .. }) => {
            let _ = scu.release();
        }
        Err(_) => {
            let _ = scu.abort();
        }
    }
    result
}

fn exchange(
    scu: &mut dicom_ul::association::client::ClientAssociation<std::net::TcpStream>,
    sc: &ScObject,
) -> Result<Stored, SendError> {
    let pc = scu
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .cloned()
        .ok_or(SendError::NotAccepted)?;
    let ts = TransferSyntaxRegistry
        .get(pc.transfer_syntax.trim_end_matches('\0'))
        .ok_or_else(|| protocol(format!("unknown transfer syntax {}", pc.transfer_syntax)))?;
    let mut data = Vec::new();
    sc.object
        .write_dataset_with_ts(&mut data, ts)
        .map_err(protocol)?;
    scu.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc.id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: store_command(&sc.sop_instance_uid, 1)?,
        }],
    })
    .map_err(protocol)?;
    {
        let mut w = scu.send_pdata(pc.id);
        w.write_all(&data).map_err(protocol)?;
        w.finish().map_err(protocol)?;
    }
    // The C-STORE-RSP: a command set, possibly in several fragments.
    let mut cmd = Vec::new();
    loop {
        match scu.receive().map_err(protocol)? {
            Pdu::PData { data } => {
                let mut last = false;
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        cmd.extend_from_slice(&v.data);
                        last |= v.is_last;
                    }
                }
                if last {
                    break;
                }
            }
            Pdu::AbortRQ { source } => {
                return Err(protocol(format!(
                    "the PACS aborted the association ({source:?})"
                )))
            }
            other => return Err(protocol(format!("unexpected answer {other:?}"))),
        }
    }
    let rsp = InMemDicomObject::read_dataset_with_ts(&cmd[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(protocol)?;
    let status = rsp
        .element(tags::STATUS)
        .map_err(protocol)?
        .to_int::<u16>()
        .map_err(protocol)?;
    let comment = rsp
        .element(tags::ERROR_COMMENT)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_owned());
    match status {
        0x0000 | 0xB000 | 0xB006 | 0xB007 => Ok(Stored { status }),
        _ => Err(SendError::Status { status, comment }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles_are_checked() {
        for ok in ["ORTHANC", "AIRLOCK_1", "A", "PACS-2 MAIN"] {
            assert!(valid_ae(ok), "{ok}");
        }
        for bad in ["", "THIS_IS_SEVENTEEN", " LEAD", "a\\b", "日本"] {
            assert!(!valid_ae(bad), "{bad}");
        }
    }

    #[test]
    fn the_store_command_carries_the_instance() {
        let b = store_command("1.2.3.4", 7).unwrap();
        let o = InMemDicomObject::read_dataset_with_ts(&b[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        assert_eq!(
            o.element(tags::COMMAND_FIELD)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            1
        );
        assert_eq!(
            o.element(tags::MESSAGE_ID)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            7
        );
        assert_eq!(
            o.element(tags::AFFECTED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0'),
            "1.2.3.4"
        );
        assert!(o.element(tags::COMMAND_GROUP_LENGTH).is_ok());
    }
}
