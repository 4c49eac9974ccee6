//! Sending a Secondary Capture to the site's PACS by C-STORE (PS3.7 9.1.1, PS3.4 B),
//! over an association of its own. Blocking: call it off the async runtime.
use crate::net::{associate, command, request_fields, status, NetError, Peer};
use crate::sc::{ScObject, SC_SOP_CLASS};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

/// What the PACS said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The C-STORE-RSP status (0x0000, or a warning 0xB000, 0xB006, 0xB007).
    pub status: u16,
}

/// The C-STORE-RQ command set (PS3.7 9.3.1.1).
fn store_command(sop_instance_uid: &str, message_id: u16) -> Result<Vec<u8>, NetError> {
    let mut f = request_fields(SC_SOP_CLASS, 0x0001, message_id, true);
    f.push(DataElement::new(
        tags::AFFECTED_SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop_instance_uid),
    ));
    command(f)
}

/// Sends `sc` to `pacs` and waits for its answer; a status other than success or a
/// warning is an error (the image was not stored).
pub fn c_store(pacs: &Peer, sc: &ScObject) -> Result<Stored, NetError> {
    let mut a = associate(pacs, SC_SOP_CLASS)?;
    let result = (|| {
        a.send(store_command(&sc.sop_instance_uid, 1)?, &sc.object)?;
        let (rsp, _) = a.receive()?;
        status(&rsp)
    })();
    match result {
        Ok((s @ (0x0000 | 0xB000 | 0xB006 | 0xB007), _)) => {
            a.close(true);
            Ok(Stored { status: s })
        }
        Ok((status, comment)) => {
            a.close(true);
            Err(NetError::Status { status, comment })
        }
        Err(e) => {
            a.close(false);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

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
