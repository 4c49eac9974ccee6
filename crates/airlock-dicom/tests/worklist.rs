//! The patient context completed from a real Modality Worklist (dcmtk's `wlmscpfs`):
//! a patient whose name has Japanese ideographic and phonetic parts comes back whole
//! with birth date, sex, accession and study UID; an unknown patient and an
//! unreachable worklist each give their own error.
#![allow(clippy::unwrap_used)]

use airlock_dicom::net::{NetError, Peer};
use airlock_dicom::worklist::{find_patient, WorklistError};
use airlock_testkit::worklist::{Entry, Worklist, AE_TITLE};
use std::time::Duration;

const NAME: &str = "Yamada^Hanako=山田^花子=やまだ^はなこ";

fn peer(port: u16) -> Peer {
    Peer {
        host: "127.0.0.1".into(),
        port,
        called_ae: AE_TITLE.into(),
        calling_ae: "AIRLOCK".into(),
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn the_worklist_gives_the_patient_the_his_names() {
    let w = Worklist::start(&[
        Entry {
            patient_id: "HIS-0042".into(),
            patient_name: NAME.into(),
            birth_date: "19700101".into(),
            sex: "F".into(),
            accession: "ACC-77".into(),
            study_uid: "1.2.826.0.1.3680043.10.1.77".into(),
        },
        Entry {
            patient_id: "HIS-0099".into(),
            patient_name: "Other^Person".into(),
            birth_date: "19600101".into(),
            sex: "M".into(),
            accession: "ACC-99".into(),
            study_uid: "1.2.826.0.1.3680043.10.1.99".into(),
        },
    ])
    .unwrap();
    let p = find_patient(&peer(w.port), "HIS-0042", None)
        .unwrap_or_else(|e| panic!("{e}\n{}", w.log()));
    assert_eq!(p.id, "HIS-0042");
    assert_eq!(p.name.as_ref().unwrap().as_str(), NAME);
    assert_eq!(p.birth_date.as_deref(), Some("19700101"));
    assert_eq!(p.sex.as_deref(), Some("F"));
    assert_eq!(p.accession.as_deref(), Some("ACC-77"));
    assert_eq!(p.study_uid.as_deref(), Some("1.2.826.0.1.3680043.10.1.77"));

    let e = find_patient(&peer(w.port), "HIS-0000", None).unwrap_err();
    assert!(matches!(e, WorklistError::NotFound { .. }), "{e}");
    eprintln!("unknown patient: {e}");
    let closed = airlock_testkit::net::free_ports(1).unwrap();
    let e = find_patient(&peer(closed), "HIS-0042", None).unwrap_err();
    assert!(
        matches!(e, WorklistError::Net(NetError::Unreachable { .. })),
        "{e}"
    );
}
