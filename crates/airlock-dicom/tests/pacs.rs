//! C-STORE of a Secondary Capture to a real PACS (a private Orthanc, Debian's `orthanc`):
//! the instance arrives with the HIS's patient and the capture's attributes; a wrong AE
//! title, a closed port and a PACS that is gone each give their own error and store
//! nothing. Over DICOM TLS (Orthanc's `DicomTls*`, the kit's test CAs): the instance
//! arrives; a PACS certificate from another CA, a certificate for another name, a
//! missing client certificate and plain DICOM to the TLS-only port each fail with their
//! own error and store nothing.
#![allow(clippy::unwrap_used)]

use airlock_dicom::net::{NetError, Peer};
use airlock_dicom::pacs::c_store;
use airlock_dicom::sc::{secondary_capture, Capture, Charset, Equipment, Rgb, UidRoot};
use airlock_dicom::tls::{DicomTls, TlsFiles, TlsProblem};
use airlock_dicom::PatientContext;
use airlock_testkit::orthanc::{Orthanc, OrthancOptions, OrthancTls, AE_TITLE};
use std::time::Duration;

const NAME: &str = "Yamada^Hanako=山田^花子=やまだ^はなこ";

fn sc(charset: Charset) -> airlock_dicom::ScObject {
    let patient = PatientContext::new(
        "HIS-0042",
        None,
        Some(NAME),
        Some("19700101"),
        Some("F"),
        Some("ACC-77"),
        None,
    )
    .unwrap();
    let image = Rgb {
        width: 32,
        height: 16,
        pixels: (0..32 * 16 * 3).map(|i| (i % 256) as u8).collect(),
    };
    secondary_capture(&Capture {
        patient: &patient,
        image: &image,
        taken_at: time::OffsetDateTime::now_utc(),
        charset,
        root: &UidRoot::new(None).unwrap(),
        equipment: &Equipment {
            version: "0.1.0".into(),
            station: None,
        },
        series_number: 1,
        instance_number: 1,
    })
    .unwrap()
}

fn pacs(port: u16, called: &str) -> Peer {
    Peer {
        host: "127.0.0.1".into(),
        port,
        called_ae: called.into(),
        calling_ae: "AIRLOCK".into(),
        timeout: Duration::from_secs(10),
        tls: None,
    }
}

/// `pacs` over TLS, trusting `ca`, with a client certificate if given.
fn tls_pacs(
    port: u16,
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
    server_name: Option<&str>,
) -> Peer {
    let files = TlsFiles {
        ca_file: ca.to_owned(),
        client: client.map(|(c, k)| (c.to_owned(), k.to_owned())),
        server_name: server_name.map(str::to_owned),
    };
    Peer {
        tls: Some(DicomTls::load(&files, "127.0.0.1").unwrap()),
        ..pacs(port, AE_TITLE)
    }
}

async fn send(
    p: Peer,
    o: airlock_dicom::ScObject,
) -> Result<airlock_dicom::pacs::Stored, NetError> {
    tokio::task::spawn_blocking(move || c_store(&p, &o))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_capture_reaches_orthanc_with_the_his_patient() {
    let o = Orthanc::start().await.unwrap();
    for charset in [Charset::Utf8, Charset::Iso2022Ir87] {
        let obj = sc(charset);
        let uid = obj.sop_instance_uid.clone();
        let stored = send(pacs(o.dicom_port, AE_TITLE), obj).await;
        assert!(stored.is_ok(), "{charset:?}: {stored:?}\n{}", o.log());
        let id = o
            .find_instance(&uid)
            .await
            .unwrap()
            .expect("the instance is in Orthanc");
        let t = o.tags(&id).await.unwrap();
        eprintln!("{charset:?}: {t}");
        assert_eq!(t["PatientID"], "HIS-0042");
        // Orthanc (Debian's, with iconv) decodes UTF-8 names but not ISO 2022 IR 87;
        // for that one, the file it stored is read by pydicom, which does.
        match charset {
            Charset::Utf8 => assert_eq!(t["PatientName"], NAME),
            Charset::Iso2022Ir87 => {
                let dir = tempfile::tempdir().unwrap();
                let f = dir.path().join("stored.dcm");
                std::fs::write(&f, o.file(&id).await.unwrap()).unwrap();
                let py = std::process::Command::new("/usr/bin/python3")
                    .args([
                        "-c",
                        "import pydicom, sys; print(str(pydicom.dcmread(sys.argv[1]).PatientName))",
                    ])
                    .arg(&f)
                    .output()
                    .expect("python3 (Debian: python3-pydicom)");
                assert!(
                    py.status.success(),
                    "{}",
                    String::from_utf8_lossy(&py.stderr)
                );
                assert_eq!(String::from_utf8_lossy(&py.stdout).trim_end(), NAME);
                assert_eq!(t["SpecificCharacterSet"], "ISO 2022 IR 6\\ISO 2022 IR 87");
            }
        }
        assert_eq!(t["AccessionNumber"], "ACC-77");
        assert_eq!(t["PatientBirthDate"], "19700101");
        assert_eq!(t["ConversionType"], "WSD");
        assert_eq!(t["BurnedInAnnotation"], "YES");
        assert_eq!(t["Modality"], "OT");
    }
    assert_eq!(o.instance_count().await.unwrap(), 2);

    // A wrong called AE title: the association is rejected, nothing is stored.
    let e = send(pacs(o.dicom_port, "NOT_ORTHANC"), sc(Charset::Utf8))
        .await
        .unwrap_err();
    assert!(matches!(e, NetError::Rejected(_)), "{e}");
    eprintln!("wrong AE: {e}");
    // A bad AE title is refused before any connection.
    let e = send(pacs(o.dicom_port, "A\\B"), sc(Charset::Utf8))
        .await
        .unwrap_err();
    assert!(matches!(e, NetError::AeTitle(_)), "{e}");
    assert_eq!(o.instance_count().await.unwrap(), 2);
    // Nobody listening: unreachable, with the address.
    let closed = airlock_testkit::net::free_ports(1).unwrap();
    let e = send(pacs(closed, AE_TITLE), sc(Charset::Utf8))
        .await
        .unwrap_err();
    assert!(matches!(e, NetError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_dicom_tls_only_the_pacs_signed_by_the_site_ca_gets_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    // The site's CA signed the PACS's certificate (for localhost and 127.0.0.1) and the
    // broker's client certificate; another CA signed the impostor's.
    let site = airlock_testkit::tls::site_ca(dir.path(), "site").unwrap();
    let other = airlock_testkit::tls::site_ca(dir.path(), "other").unwrap();
    let o = Orthanc::start_with(OrthancOptions {
        tls: Some(OrthancTls {
            cert: site.cert.clone(),
            key: site.key.clone(),
            trusted: site.ca.clone(),
            require_client_cert: true,
        }),
        ..OrthancOptions::default()
    })
    .await
    .unwrap();
    let client = Some((site.cert.as_path(), site.key.as_path()));

    // Mutual TLS: stored, found by its UID.
    let obj = sc(Charset::Utf8);
    let uid = obj.sop_instance_uid.clone();
    let t0 = std::time::Instant::now();
    let stored = send(tls_pacs(o.dicom_port, &site.ca, client, None), obj).await;
    eprintln!("C-STORE over TLS: {:?}", t0.elapsed());
    assert!(stored.is_ok(), "{stored:?}\n{}", o.log());
    let id = o
        .find_instance(&uid)
        .await
        .unwrap()
        .expect("the instance is in Orthanc");
    assert_eq!(o.tags(&id).await.unwrap()["PatientID"], "HIS-0042");
    assert_eq!(o.instance_count().await.unwrap(), 1);

    // The broker trusts another CA than the one that signed the PACS's certificate.
    let e = send(
        tls_pacs(o.dicom_port, &other.ca, client, None),
        sc(Charset::Utf8),
    )
    .await
    .unwrap_err();
    eprintln!("untrusted: {e}");
    assert!(
        matches!(
            e,
            NetError::Tls {
                problem: TlsProblem::Untrusted,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("ca_file"), "{e}");
    // The certificate names another host than the one configured.
    let e = send(
        tls_pacs(
            o.dicom_port,
            &site.ca,
            client,
            Some("pacs.hospital.example"),
        ),
        sc(Charset::Utf8),
    )
    .await
    .unwrap_err();
    eprintln!("name mismatch: {e}");
    assert!(
        matches!(
            e,
            NetError::Tls {
                problem: TlsProblem::NameMismatch { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("server_name"), "{e}");
    // No client certificate, and the PACS requires one.
    let e = send(
        tls_pacs(o.dicom_port, &site.ca, None, None),
        sc(Charset::Utf8),
    )
    .await
    .unwrap_err();
    eprintln!("no client certificate: {e}");
    assert!(
        matches!(
            e,
            NetError::Tls {
                problem: TlsProblem::Refused { .. } | TlsProblem::Closed,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("client certificate"), "{e}");
    // Plain DICOM to the TLS-only port.
    let e = send(pacs(o.dicom_port, AE_TITLE), sc(Charset::Utf8))
        .await
        .unwrap_err();
    eprintln!("plain to TLS: {e}");
    assert!(matches!(e, NetError::NoAnswer { .. }), "{e:?}");
    assert!(e.to_string().contains("tls = true"), "{e}");
    assert_eq!(
        o.instance_count().await.unwrap(),
        1,
        "something more was stored"
    );

    // A PACS whose certificate another CA signed: refused before anything is sent.
    let impostor = Orthanc::start_with(OrthancOptions {
        tls: Some(OrthancTls {
            cert: other.cert.clone(),
            key: other.key.clone(),
            trusted: site.ca.clone(),
            require_client_cert: false,
        }),
        ..OrthancOptions::default()
    })
    .await
    .unwrap();
    let e = send(
        tls_pacs(impostor.dicom_port, &site.ca, client, None),
        sc(Charset::Utf8),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            NetError::Tls {
                problem: TlsProblem::Untrusted,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(impostor.instance_count().await.unwrap(), 0);
    // Without a client certificate where none is required: stored.
    let obj = sc(Charset::Utf8);
    let uid = obj.sop_instance_uid.clone();
    let trusting_other = tls_pacs(impostor.dicom_port, &other.ca, None, Some("localhost"));
    send(trusting_other, obj)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", impostor.log()));
    assert!(impostor.find_instance(&uid).await.unwrap().is_some());
}
