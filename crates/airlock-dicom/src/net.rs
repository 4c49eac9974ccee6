//! What the C-STORE to the PACS and the C-FIND to the worklist share: the peer (its AE
//! and address, ours, a timeout on every step), an association for one SOP class, the
//! DIMSE messages as command sets and data sets, and an error per way it can fail.
//! Blocking: call it off the async runtime.
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::{TransferSyntax, TransferSyntaxIndex};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions};
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A DICOM peer: its AE title and address, ours, and the time each step may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    /// The peer's AE title (called) and ours (calling): 1 to 16 characters of the
    /// default repertoire, no backslash.
    pub called_ae: String,
    pub calling_ae: String,
    pub timeout: Duration,
}

/// An exchange with a peer that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("AE title {0:?}: 1 to 16 characters, letters, digits, space, '-', '_' or '.'")]
    AeTitle(String),
    #[error("cannot reach {address}: {why}; check the host and port and that the server runs")]
    Unreachable { address: String, why: String },
    #[error("the server rejected the association: {0}; check the AE titles and that it knows this broker")]
    Rejected(String),
    #[error("the server does not accept SOP class {0}; configure it to")]
    NotAccepted(&'static str),
    #[error("the exchange failed: {0}")]
    Protocol(String),
    #[error("the server answered status 0x{status:04X}{}", comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        status: u16,
        comment: Option<String>,
    },
}

/// Whether `ae` is an AE title (PS3.5: 1 to 16 characters; here letters, digits,
/// space, `-`, `_`, `.`, no leading or trailing space).
pub fn valid_ae(ae: &str) -> bool {
    (1..=16).contains(&ae.len())
        && ae.trim() == ae
        && ae
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'_' | b'.'))
}

pub(crate) fn protocol(e: impl std::fmt::Display) -> NetError {
    NetError::Protocol(e.to_string())
}

impl Peer {
    /// Checks the AE titles.
    pub fn validate(&self) -> Result<(), NetError> {
        for ae in [&self.called_ae, &self.calling_ae] {
            if !valid_ae(ae) {
                return Err(NetError::AeTitle(ae.clone()));
            }
        }
        Ok(())
    }
}

/// An association with `peer` for `sop_class`, and the accepted context's id and
/// transfer syntax.
pub(crate) struct Association {
    pub scu: ClientAssociation<TcpStream>,
    pub context: u8,
    pub ts: &'static TransferSyntax,
}

pub(crate) fn associate(peer: &Peer, sop_class: &'static str) -> Result<Association, NetError> {
    peer.validate()?;
    let address = format!("{}:{}", peer.host, peer.port);
    let options = ClientAssociationOptions::new()
        .calling_ae_title(peer.calling_ae.as_str())
        .called_ae_title(peer.called_ae.as_str())
        .with_presentation_context(
            sop_class,
            vec![
                EXPLICIT_VR_LITTLE_ENDIAN.uid(),
                IMPLICIT_VR_LITTLE_ENDIAN.uid(),
            ],
        )
        .connection_timeout(peer.timeout)
        .read_timeout(peer.timeout)
        .write_timeout(peer.timeout);
    let scu = options.establish(address.as_str()).map_err(|e| {
        use dicom_ul::association::Error as E;
        match e {
            E::Rejected { .. } => NetError::Rejected(e.to_string()),
            E::NoAcceptedPresentationContexts { .. } => NetError::NotAccepted(sop_class),
            E::Connect { .. } | E::ToAddress { .. } => NetError::Unreachable {
                address: address.clone(),
                why: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
            },
            other => protocol(other),
        }
    })?;
    let pc = scu
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .cloned();
    let Some(pc) = pc else {
        let _ = scu.abort();
        return Err(NetError::NotAccepted(sop_class));
    };
    let Some(ts) = TransferSyntaxRegistry.get(pc.transfer_syntax.trim_end_matches('\0')) else {
        let _ = scu.abort();
        return Err(protocol(format!(
            "unknown transfer syntax {}",
            pc.transfer_syntax
        )));
    };
    Ok(Association {
        scu,
        context: pc.id,
        ts,
    })
}

/// A command set (PS3.7 E), group length included, in Implicit VR Little Endian.
pub(crate) fn command(elements: Vec<DataElement<InMemDicomObject>>) -> Result<Vec<u8>, NetError> {
    let cmd = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::new();
    cmd.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(protocol)?;
    Ok(out)
}

/// The common fields of a request's command set.
pub(crate) fn request_fields(
    sop_class: &'static str,
    field: u16,
    message_id: u16,
    with_data: bool,
) -> Vec<DataElement<InMemDicomObject>> {
    vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(field)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0x0000_u16)),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(if with_data { 0x0000_u16 } else { 0x0101 }),
        ),
    ]
}

impl Association {
    /// Sends a request: its command set, then its data set.
    pub fn send(&mut self, command: Vec<u8>, data: &InMemDicomObject) -> Result<(), NetError> {
        let mut bytes = Vec::new();
        data.write_dataset_with_ts(&mut bytes, self.ts)
            .map_err(protocol)?;
        self.scu
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: self.context,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: command,
                }],
            })
            .map_err(protocol)?;
        let mut w = self.scu.send_pdata(self.context);
        w.write_all(&bytes).map_err(protocol)?;
        w.finish().map_err(protocol)
    }

    /// Receives one response message: its command set, and its data set if it has one.
    pub fn receive(&mut self) -> Result<(InMemDicomObject, Option<InMemDicomObject>), NetError> {
        let (mut cmd, mut data) = (Vec::new(), Vec::new());
        let (mut cmd_done, mut data_done) = (false, false);
        let mut command: Option<InMemDicomObject> = None;
        loop {
            match self.scu.receive().map_err(protocol)? {
                Pdu::PData { data: values } => {
                    for v in values {
                        match v.value_type {
                            PDataValueType::Command => {
                                cmd.extend_from_slice(&v.data);
                                cmd_done |= v.is_last;
                            }
                            PDataValueType::Data => {
                                data.extend_from_slice(&v.data);
                                data_done |= v.is_last;
                            }
                        }
                    }
                }
                Pdu::AbortRQ { source } => {
                    return Err(protocol(format!(
                        "the server aborted the association ({source:?})"
                    )))
                }
                other => return Err(protocol(format!("unexpected answer {other:?}"))),
            }
            if cmd_done && command.is_none() {
                let c = InMemDicomObject::read_dataset_with_ts(
                    &cmd[..],
                    &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                )
                .map_err(protocol)?;
                let has_data = c
                    .element(tags::COMMAND_DATA_SET_TYPE)
                    .ok()
                    .and_then(|e| e.to_int::<u16>().ok())
                    .is_some_and(|t| t != 0x0101);
                if !has_data {
                    return Ok((c, None));
                }
                command = Some(c);
            }
            if data_done {
                if let Some(c) = command.take() {
                    let d = InMemDicomObject::read_dataset_with_ts(&data[..], self.ts)
                        .map_err(protocol)?;
                    return Ok((c, Some(d)));
                }
            }
        }
    }

    /// Ends the association: released after a complete exchange, aborted otherwise.
    pub fn close(self, complete: bool) {
        let _ = if complete {
            self.scu.release()
        } else {
            self.scu.abort()
        };
    }
}

/// A response's status and error comment.
pub(crate) fn status(rsp: &InMemDicomObject) -> Result<(u16, Option<String>), NetError> {
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
    Ok((status, comment))
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
}
