//! An audit record as one RFC 5424 message.
//!
//! - PRI: the configured facility (default authpriv, 10) and a severity from the
//!   record's ATNA outcome ([`severity`]).
//! - TIMESTAMP: the record's time; MSGID: its action.
//! - STRUCTURED-DATA: one element under the configured SD-ID with `seq`, `hash`,
//!   `prev_hash`, `terminal`, `user`, `desktop`, `lease` (those present) and the ATNA
//!   codes `atna_event`, `atna_type`, `atna_action`, `atna_outcome`
//!   ([`airlock_store::atna::classify_text`]); values capped at
//!   [`crate::format::MAX_PARAM_VALUE`] bytes.
//! - MSG: the record as one JSON line, exactly as stored (`details` is the stored
//!   canonical JSON text), so a receiver can recompute the hash chain. A record longer
//!   than the message limit has its `details` cut and says so (`details_truncated`,
//!   `details_bytes`, `details_sha256`): that record's hash cannot be recomputed remotely,
//!   the chain's links (`prev_hash`/`hash`) still can.
use crate::format::{self, Header, Message, SdElement, SdId, Severity};
use airlock_store::atna::{self, AtnaEvent, Outcome};
use airlock_store::AuditRecord;
use sha2::{Digest, Sha256};

/// The SD-ID used when the config names none. 32473 is the enterprise number RFC 5612
/// reserves for documentation: a site that parses the element in its SIEM sets its own
/// (`audit.forward.sd_id`).
pub const DEFAULT_SD_ID: &str = "airlock@32473";

/// The largest SYSLOG-MSG built by default (octets): RFC 5425 §4.3.1 receivers should
/// take 8192.
pub const DEFAULT_MAX_MESSAGE: usize = 8192;

/// What the ATNA classification of a record says, for its SD-PARAMs and severity.
fn classify(r: &AuditRecord) -> AtnaEvent {
    atna::classify_text(&r.action, &r.details)
}

/// The severity of a record: by its ATNA outcome (success informational, minor failure
/// warning, serious failure error, major failure critical), and a successful security
/// alert (110113) as a notice.
pub fn severity(e: &AtnaEvent) -> Severity {
    match e.outcome {
        Outcome::Success if e.event_id.code == atna::event::SECURITY_ALERT.code => Severity::Notice,
        Outcome::Success => Severity::Informational,
        Outcome::MinorFailure => Severity::Warning,
        Outcome::SeriousFailure => Severity::Error,
        Outcome::MajorFailure => Severity::Critical,
    }
}

/// The message of one record.
pub fn message(h: &Header, sd_id: &SdId, r: &AuditRecord, max_message: usize) -> Message {
    let e = classify(r);
    let mut params: Vec<(&'static str, String)> = vec![
        ("seq", r.seq.to_string()),
        ("hash", r.hash.clone()),
        ("prev_hash", r.prev_hash.clone()),
    ];
    for (name, v) in [
        ("terminal", &r.terminal),
        ("user", &r.user),
        ("desktop", &r.desktop),
        ("lease", &r.lease),
    ] {
        if let Some(v) = v {
            params.push((name, v.clone()));
        }
    }
    params.push(("atna_event", e.event_id.code.to_string()));
    if let Some(t) = e.event_type {
        params.push(("atna_type", t.code.to_string()));
    }
    params.push(("atna_action", e.action_code.as_str().to_owned()));
    params.push(("atna_outcome", e.outcome.code().to_string()));
    let structured_data = vec![SdElement {
        id: sd_id.clone(),
        params,
    }];
    let mut m = Message {
        severity: severity(&e),
        unix_ms: r.ts,
        msgid: r.action.clone(),
        structured_data,
        msg: String::new(),
    };
    // What the message is without MSG, to fit MSG in the rest.
    let base = format::format(h, &m).len();
    m.msg = json_line(r, None);
    let budget = max_message.saturating_sub(base + 1 + format::BOM.len());
    if m.msg.len() > budget {
        m.msg = fit(r, budget);
    }
    m
}

/// The record as one JSON line; with `cut_to`, its details cut to that many bytes.
fn json_line(r: &AuditRecord, cut_to: Option<usize>) -> String {
    let details = cut_to.map_or(r.details.as_str(), |n| format::cut(&r.details, n));
    let mut v = serde_json::json!({
        "seq": r.seq,
        "ts": r.ts,
        "action": r.action,
        "terminal": r.terminal,
        "user": r.user,
        "desktop": r.desktop,
        "lease": r.lease,
        "details": details,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    });
    if let (Some(_), Some(o)) = (cut_to, v.as_object_mut()) {
        o.insert("details_truncated".into(), true.into());
        o.insert("details_bytes".into(), r.details.len().into());
        o.insert(
            "details_sha256".into(),
            hex::encode(Sha256::digest(r.details.as_bytes())).into(),
        );
    }
    v.to_string()
}

/// The JSON line with the longest prefix of the details that fits `budget` (a binary
/// search: escaping makes the details longer in JSON than in the record); details empty
/// if even that does not fit (the record's other fields are short by construction).
fn fit(r: &AuditRecord, budget: usize) -> String {
    let (mut lo, mut hi) = (0, r.details.len().min(budget));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if json_line(r, Some(mid)).len() <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    json_line(r, Some(lo))
}

/// The framed message of one record, ready to write.
pub fn framed(h: &Header, sd_id: &SdId, r: &AuditRecord, max_message: usize) -> Vec<u8> {
    format::frame(&format::format(h, &message(h, sd_id, r, max_message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Facility;

    fn record(action: &str, details: &str) -> AuditRecord {
        AuditRecord {
            seq: 12,
            ts: 1_764_756_900_123,
            action: action.into(),
            terminal: Some("term-1".into()),
            user: Some("dr-x".into()),
            desktop: Some("desk-0".into()),
            lease: None,
            details: details.into(),
            prev_hash: "aa".repeat(32),
            hash: "bb".repeat(32),
        }
    }

    fn header() -> Header {
        Header::new(Facility::AUTHPRIV, "broker", "airlockd", "7").unwrap()
    }

    fn sd() -> SdId {
        SdId::new(DEFAULT_SD_ID).unwrap()
    }

    #[test]
    fn a_record_becomes_one_message_with_its_chain_and_atna_codes() {
        let r = record("lease_granted", r#"{"reused":false}"#);
        let out = String::from_utf8(format::format(
            &header(),
            &message(&header(), &sd(), &r, 8192),
        ))
        .unwrap();
        let (head, msg) = out.split_once(" \u{FEFF}").unwrap();
        assert!(
            head.starts_with("<86>1 2025-12-03T10:15:00.123Z broker airlockd 7 lease_granted [airlock@32473 seq=\"12\" "),
            "{head}"
        );
        assert!(
            head.contains(&format!("hash=\"{}\"", "bb".repeat(32))),
            "{head}"
        );
        assert!(
            head.contains(&format!("prev_hash=\"{}\"", "aa".repeat(32))),
            "{head}"
        );
        assert!(
            head.contains("terminal=\"term-1\" user=\"dr-x\" desktop=\"desk-0\" atna_event=\""),
            "{head}"
        );
        assert!(
            !head.contains("lease="),
            "absent fields are left out: {head}"
        );
        assert!(head.contains("atna_outcome=\"0\"]"), "{head}");
        let v: serde_json::Value = serde_json::from_str(msg).unwrap();
        assert_eq!(v["seq"], 12);
        assert_eq!(v["details"], r#"{"reused":false}"#);
        assert_eq!(v["hash"], "bb".repeat(32));
        // The receiver can recompute the hash from MSG.
        let back = AuditRecord {
            details: v["details"].as_str().unwrap().into(),
            ..r.clone()
        };
        assert_eq!(
            back.expected_hash(&r.prev_hash),
            r.expected_hash(&r.prev_hash)
        );
    }

    #[test]
    fn hostile_values_stay_inside_their_fields() {
        let mut r = record("lease_granted\n<13>1 forged", "{\"x\":\"a\\nb\"}");
        r.user = Some("evil\"] [x@1 a=\"b\"]\n<13>1 - - - - - -".into());
        r.terminal = Some("térm\u{0}\u{7f}".into());
        r.desktop = Some("d".repeat(5000));
        let out = String::from_utf8(format::format(
            &header(),
            &message(&header(), &sd(), &r, 8192),
        ))
        .unwrap();
        assert!(!out.contains('\n') && !out.contains('\0'), "{out}");
        assert!(out.contains(" lease_granted_<13>1_forged ["), "{out}");
        assert!(out.contains(r#"user="evil\"\] [x@1 a=\"b\"\]"#), "{out}");
        assert!(out.contains("terminal=\"térm\u{FFFD}\u{FFFD}\""), "{out}");
        assert!(
            out.contains(&format!("desktop=\"{}\"", "d".repeat(255))),
            "{out}"
        );
        // Exactly one SD-ELEMENT: the first unescaped ']' ends it.
        let sd_start = out.find(" [airlock@").unwrap();
        let b = out.as_bytes();
        let mut i = sd_start + 2;
        let mut in_value = false;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'"' => in_value = !in_value,
                b']' if !in_value => break,
                _ => {}
            }
            i += 1;
        }
        assert_eq!(&out[i + 1..i + 5], " \u{FEFF}");
    }

    #[test]
    fn long_details_are_cut_to_the_message_limit() {
        let details = serde_json::json!({ "serial": "\"\u{1}é".repeat(40_000) }).to_string();
        let r = record("usb_attached", &details);
        for max in [2048, 8192, 65_536] {
            let bytes = format::format(&header(), &message(&header(), &sd(), &r, max));
            assert!(bytes.len() <= max, "{} > {max}", bytes.len());
            assert!(bytes.len() > max - 64, "{} fits {max} badly", bytes.len());
            let text = String::from_utf8(bytes).unwrap();
            let msg = text.split_once(" \u{FEFF}").unwrap().1;
            let v: serde_json::Value = serde_json::from_str(msg).unwrap();
            assert_eq!(v["details_truncated"], true);
            assert_eq!(v["details_bytes"], details.len());
            assert!(details.starts_with(v["details"].as_str().unwrap()));
            assert_eq!(
                v["details_sha256"],
                hex::encode(Sha256::digest(details.as_bytes()))
            );
        }
        let short = format::format(
            &header(),
            &message(&header(), &sd(), &record("x", "{}"), 8192),
        );
        assert!(!String::from_utf8(short).unwrap().contains("truncated"));
    }

    #[test]
    fn severity_follows_the_outcome() {
        let e = |outcome, event_id| AtnaEvent {
            event_id,
            event_type: None,
            action_code: atna::ActionCode::Execute,
            outcome,
            known: true,
        };
        let app = atna::event::APPLICATION_ACTIVITY;
        assert_eq!(severity(&e(Outcome::Success, app)), Severity::Informational);
        assert_eq!(severity(&e(Outcome::MinorFailure, app)), Severity::Warning);
        assert_eq!(severity(&e(Outcome::SeriousFailure, app)), Severity::Error);
        assert_eq!(severity(&e(Outcome::MajorFailure, app)), Severity::Critical);
        assert_eq!(
            severity(&e(Outcome::Success, atna::event::SECURITY_ALERT)),
            Severity::Notice
        );
    }
}
