//! What the C-STORE to the PACS and the C-FIND to the worklist share: the peer (its AE
//! and address, ours, a timeout on every step, DICOM TLS or not), an association for one
//! SOP class, the DIMSE messages as command sets and data sets, and an error per way it
//! can fail. Blocking: call it off the async runtime.
use crate::tls::{DicomTls, TlsProblem};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::{TransferSyntax, TransferSyntaxIndex};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions, TlsStream};
use dicom_ul::pdu::{
    PDataValue, PDataValueType, Pdu, PresentationContextNegotiated, PresentationContextResultReason,
};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A DICOM peer: its AE title and address, ours, the time each step may take, and
/// whether the association runs over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    /// The peer's AE title (called) and ours (calling): 1 to 16 characters of the
    /// default repertoire, no backslash.
    pub called_ae: String,
    pub calling_ae: String,
    pub timeout: Duration,
    /// DICOM TLS (`None`: plain TCP).
    pub tls: Option<DicomTls>,
}

/// An exchange with a peer that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("AE title {0:?}: 1 to 16 characters, letters, digits, space, '-', '_' or '.'")]
    AeTitle(String),
    #[error("cannot reach {address}: {why}; check the host and port and that the server runs")]
    Unreachable { address: String, why: String },
    #[error("DICOM TLS with {address} failed: {problem}")]
    Tls {
        address: String,
        problem: TlsProblem,
    },
    #[error("{address} closed the connection without answering the association request; if it expects DICOM TLS on this port, configure tls = true and its ca_file")]
    NoAnswer { address: String },
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

/// An association, plain or over TLS.
pub(crate) enum Scu {
    Plain(ClientAssociation<TcpStream>),
    Tls(Box<ClientAssociation<TlsStream>>),
}

/// Runs `$body` with `$a` bound to the association, whichever its stream.
macro_rules! with_scu {
    ($scu:expr, $a:ident => $body:expr) => {
        match $scu {
            Scu::Plain($a) => $body,
            Scu::Tls($a) => $body,
        }
    };
}

/// An association with `peer` for `sop_class`, and the accepted context's id and
/// transfer syntax.
pub(crate) struct Association {
    pub scu: Scu,
    pub context: u8,
    pub ts: &'static TransferSyntax,
}

/// The TLS problem inside an association error, if there is one (a rustls error, or
/// the I/O error that carries it, anywhere in its chain).
fn tls_problem(e: &(dyn std::error::Error + 'static), server_name: &str) -> Option<TlsProblem> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(TlsProblem::from_rustls(r, server_name));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|r| r.downcast_ref::<rustls::Error>().is_some())
            {
                return Some(TlsProblem::from_io(io, server_name));
            }
        }
        next = err.source();
    }
    None
}

/// Whether an error is the connection's end (EOF or reset) rather than bad data.
fn closed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
            ) {
                return true;
            }
        }
        next = err.source();
    }
    false
}

/// What a failure to establish the association means.
fn establish_error(
    e: dicom_ul::association::Error,
    address: &str,
    sop_class: &'static str,
    tls: Option<&DicomTls>,
) -> NetError {
    use dicom_ul::association::Error as E;
    let unreachable = |e: &E| NetError::Unreachable {
        address: address.to_owned(),
        why: std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string()),
    };
    let tls_failed = |problem| NetError::Tls {
        address: address.to_owned(),
        problem,
    };
    match (e, tls) {
        (e @ E::Rejected { .. }, _) => NetError::Rejected(e.to_string()),
        (E::NoAcceptedPresentationContexts { .. }, _) => NetError::NotAccepted(sop_class),
        (e @ (E::Connect { .. } | E::ToAddress { .. }), _) => unreachable(&e),
        (E::TlsHandshake { source, .. }, Some(t)) => {
            tls_failed(TlsProblem::from_io(&source, t.server_name()))
        }
        (E::TlsConnection { source, .. }, Some(t)) => {
            tls_failed(TlsProblem::from_rustls(&source, t.server_name()))
        }
        // After the handshake: the server may refuse our certificate with an alert
        // (TLS 1.3), or close.
        (e, Some(t)) => match tls_problem(&e, t.server_name()) {
            Some(problem) => tls_failed(problem),
            None if matches!(e, E::ConnectionClosed { .. }) || closed(&e) => {
                tls_failed(TlsProblem::Closed)
            }
            None => protocol(e),
        },
        // Plain DICOM to a port that speaks TLS: the server closes, or answers with
        // TLS (which dicom-ul notices).
        (E::TlsNotSupported | E::ConnectionClosed { .. }, None) => NetError::NoAnswer {
            address: address.to_owned(),
        },
        (e, None) if closed(&e) => NetError::NoAnswer {
            address: address.to_owned(),
        },
        (other, None) => protocol(other),
    }
}

pub(crate) fn associate(peer: &Peer, sop_class: &'static str) -> Result<Association, NetError> {
    peer.validate()?;
    let address = format!("{}:{}", peer.host, peer.port);
    let mut options = ClientAssociationOptions::new()
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
    let established = match &peer.tls {
        None => options.establish(address.as_str()).map(Scu::Plain),
        Some(tls) => {
            options = options
                .tls_config(tls.config())
                .server_name(tls.server_name());
            options
                .establish_tls(address.as_str())
                .map(|a| Scu::Tls(Box::new(a)))
        }
    };
    let scu =
        established.map_err(|e| establish_error(e, &address, sop_class, peer.tls.as_ref()))?;
    let pc = with_scu!(&scu, a => accepted(a.presentation_contexts()));
    let Some(pc) = pc else {
        with_scu!(scu, a => { let _ = a.abort(); });
        return Err(NetError::NotAccepted(sop_class));
    };
    let Some(ts) = TransferSyntaxRegistry.get(pc.transfer_syntax.trim_end_matches('\0')) else {
        with_scu!(scu, a => { let _ = a.abort(); });
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

fn accepted(pcs: &[PresentationContextNegotiated]) -> Option<PresentationContextNegotiated> {
    pcs.iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .cloned()
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
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: self.context,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command,
            }],
        };
        let context = self.context;
        with_scu!(&mut self.scu, a => {
            a.send(&pdu).map_err(protocol)?;
            let mut w = a.send_pdata(context);
            w.write_all(&bytes).map_err(protocol)?;
            w.finish().map_err(protocol)
        })
    }

    /// Receives one response message: its command set, and its data set if it has one.
    pub fn receive(&mut self) -> Result<(InMemDicomObject, Option<InMemDicomObject>), NetError> {
        let (mut cmd, mut data) = (Vec::new(), Vec::new());
        let (mut cmd_done, mut data_done) = (false, false);
        let mut command: Option<InMemDicomObject> = None;
        loop {
            let pdu = with_scu!(&mut self.scu, a => a.receive());
            match pdu.map_err(protocol)? {
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
        let _ = with_scu!(self.scu, a => if complete { a.release() } else { a.abort() });
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
