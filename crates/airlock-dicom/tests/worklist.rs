//! The patient context completed from a real Modality Worklist (dcmtk's `wlmscpfs`):
//! a patient whose name has Japanese ideographic and phonetic parts comes back whole
//! with birth date, sex, accession and study UID; an unknown patient and an
//! unreachable worklist each give their own error. Over DICOM TLS (dcmtk 3.6.7's
//! `wlmscpfs` has none: a private Orthanc's worklist plugin serves the same entries on
//! a TLS-only port): the same patient comes back; a worklist whose certificate another
//! CA signed is refused with the TLS error.
#![allow(clippy::unwrap_used)]

use airlock_dicom::net::{NetError, Peer};
use airlock_dicom::tls::{DicomTls, TlsFiles, TlsProblem};
use airlock_dicom::worklist::{find_patient, WorklistError};
use airlock_testkit::orthanc::OrthancTls;
use airlock_testkit::worklist::{Entry, TlsWorklist, Worklist, AE_TITLE};
use std::time::Duration;

const NAME: &str = "Yamada^Hanako=山田^花子=やまだ^はなこ";

fn peer(port: u16) -> Peer {
    Peer {
        host: "127.0.0.1".into(),
        port,
        called_ae: AE_TITLE.into(),
        calling_ae: "AIRLOCK".into(),
        timeout: Duration::from_secs(10),
        tls: None,
    }
}

fn hanako() -> Entry {
    Entry {
        patient_id: "HIS-0042".into(),
        patient_name: NAME.into(),
        birth_date: "19700101".into(),
        sex: "F".into(),
        accession: "ACC-77".into(),
        study_uid: "1.2.826.0.1.3680043.10.1.77".into(),
    }
}

#[test]
fn the_worklist_gives_the_patient_the_his_names() {
    let w = Worklist::start(&[
        hanako(),
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

#[tokio::test(flavor = "multi_thread")]
async fn over_dicom_tls_the_worklist_gives_the_same_patient() {
    let dir = tempfile::tempdir().unwrap();
    let site = airlock_testkit::tls::site_ca(dir.path(), "site").unwrap();
    let other = airlock_testkit::tls::site_ca(dir.path(), "other").unwrap();
    let w = TlsWorklist::start(
        &[hanako()],
        OrthancTls {
            cert: site.cert.clone(),
            key: site.key.clone(),
            trusted: site.ca.clone(),
            require_client_cert: true,
        },
    )
    .await
    .unwrap();
    let tls_peer = |ca: &std::path::Path| Peer {
        tls: Some(
            DicomTls::load(
                &TlsFiles {
                    ca_file: ca.to_owned(),
                    client: Some((site.cert.clone(), site.key.clone())),
                    server_name: None,
                },
                "127.0.0.1",
            )
            .unwrap(),
        ),
        ..peer(w.port)
    };
    let find =
        |p: Peer, id: &'static str| tokio::task::spawn_blocking(move || find_patient(&p, id, None));
    let p = find(tls_peer(&site.ca), "HIS-0042")
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", w.orthanc.log()));
    assert_eq!(p.id, "HIS-0042");
    assert_eq!(p.name.as_ref().unwrap().as_str(), NAME);
    assert_eq!(p.birth_date.as_deref(), Some("19700101"));
    assert_eq!(p.accession.as_deref(), Some("ACC-77"));
    assert_eq!(p.study_uid.as_deref(), Some("1.2.826.0.1.3680043.10.1.77"));
    let e = find(tls_peer(&site.ca), "HIS-0000")
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, WorklistError::NotFound { .. }), "{e}");

    // Trusting another CA: the TLS error, not "no such patient".
    let e = find(tls_peer(&other.ca), "HIS-0042")
        .await
        .unwrap()
        .unwrap_err();
    eprintln!("untrusted worklist: {e}");
    assert!(
        matches!(
            e,
            WorklistError::Net(NetError::Tls {
                problem: TlsProblem::Untrusted,
                ..
            })
        ),
        "{e:?}"
    );
    // Plain DICOM to it.
    let e = find(peer(w.port), "HIS-0042").await.unwrap().unwrap_err();
    assert!(
        matches!(e, WorklistError::Net(NetError::NoAnswer { .. })),
        "{e:?}"
    );
}
