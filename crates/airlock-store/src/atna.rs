//! What each audit record means in the terms of DICOM PS3.15 A.5 ("Audit Trail Message
//! Format") and IHE ATNA: its EventID, EventTypeCode, EventActionCode and
//! EventOutcomeIndicator, derived from the record's `action` and `details` only (pure, no
//! I/O). The table is [`RULES`], one row per action the broker writes; docs/audit.md
//! lists it for people.
//!
//! An action missing from the table still classifies (110100 Application Activity,
//! Execute, Success, `known: false`), but the test `every_written_action_is_mapped` scans
//! the workspace's sources for written action names and fails on any without a row.
use serde::Serialize;

/// A coded value of the DICOM Controlled Terminology (scheme `DCM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Code {
    pub code: u32,
    /// Always `DCM`.
    pub scheme: &'static str,
    /// The code meaning, as DICOM PS3.16 spells it.
    pub meaning: &'static str,
}

const fn dcm(code: u32, meaning: &'static str) -> Code {
    Code {
        code,
        scheme: "DCM",
        meaning,
    }
}

/// EventIDs (DICOM PS3.15 A.5.3).
pub mod event {
    use super::{dcm, Code};
    pub const APPLICATION_ACTIVITY: Code = dcm(110100, "Application Activity");
    pub const AUDIT_LOG_USED: Code = dcm(110101, "Audit Log Used");
    pub const DICOM_INSTANCES_TRANSFERRED: Code = dcm(110104, "DICOM Instances Transferred");
    pub const EXPORT: Code = dcm(110106, "Export");
    pub const IMPORT: Code = dcm(110107, "Import");
    pub const NETWORK_ENTRY: Code = dcm(110108, "Network Entry");
    pub const SECURITY_ALERT: Code = dcm(110113, "Security Alert");
    pub const USER_AUTHENTICATION: Code = dcm(110114, "User Authentication");
    /// Every EventID [`super::RULES`] uses (for validating a search's `event`).
    pub const ALL: [Code; 8] = [
        APPLICATION_ACTIVITY,
        AUDIT_LOG_USED,
        DICOM_INSTANCES_TRANSFERRED,
        EXPORT,
        IMPORT,
        NETWORK_ENTRY,
        SECURITY_ALERT,
        USER_AUTHENTICATION,
    ];
}

/// EventTypeCodes (DICOM PS3.16 CID 401, 402, 403, 404).
pub mod event_type {
    use super::{dcm, Code};
    pub const APPLICATION_START: Code = dcm(110120, "Application Start");
    pub const APPLICATION_STOP: Code = dcm(110121, "Application Stop");
    pub const LOGIN: Code = dcm(110122, "Login");
    pub const LOGOUT: Code = dcm(110123, "Logout");
    pub const ATTACH: Code = dcm(110124, "Attach");
    pub const DETACH: Code = dcm(110125, "Detach");
    pub const HARDWARE_CONFIGURATION: Code = dcm(110130, "Hardware Configuration");
    pub const SOFTWARE_CONFIGURATION: Code = dcm(110131, "Software Configuration");
    pub const USE_OF_RESTRICTED_FUNCTION: Code = dcm(110132, "Use of Restricted Function");
}

/// EventActionCode: what the event did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionCode {
    #[serde(rename = "C")]
    Create,
    #[serde(rename = "R")]
    Read,
    #[serde(rename = "U")]
    Update,
    #[serde(rename = "D")]
    Delete,
    #[serde(rename = "E")]
    Execute,
}

impl ActionCode {
    /// The one-letter code (`C`, `R`, `U`, `D`, `E`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionCode::Create => "C",
            ActionCode::Read => "R",
            ActionCode::Update => "U",
            ActionCode::Delete => "D",
            ActionCode::Execute => "E",
        }
    }
}

/// EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious failure, 12 major
/// failure (the action made unavailable). Serialized as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Success,
    MinorFailure,
    SeriousFailure,
    MajorFailure,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::MinorFailure,
        Outcome::SeriousFailure,
        Outcome::MajorFailure,
    ];

    /// The indicator's number.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::MinorFailure => 4,
            Outcome::SeriousFailure => 8,
            Outcome::MajorFailure => 12,
        }
    }

    /// The outcome with that number.
    pub fn from_code(c: u8) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.code() == c)
    }

    /// Its meaning in words.
    pub fn meaning(self) -> &'static str {
        match self {
            Outcome::Success => "Success",
            Outcome::MinorFailure => "Minor failure",
            Outcome::SeriousFailure => "Serious failure",
            Outcome::MajorFailure => "Major failure",
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

/// How a rule's outcome follows from the record's details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeRule {
    /// Always this.
    Fixed(Outcome),
    /// The string `details.<field>`: the outcome of the first listed value it equals,
    /// else `default` (also when the field is missing).
    ByString {
        field: &'static str,
        values: &'static [(&'static str, Outcome)],
        default: Outcome,
    },
    /// The boolean `details.<field>`: `if_true` when it is `true`, else `if_false`.
    ByBool {
        field: &'static str,
        if_true: Outcome,
        if_false: Outcome,
    },
    /// `details.<field>` (a string) starting with `error` or `io`: `failed`, else
    /// `default` (the end of a USB stream).
    ByPrefix {
        field: &'static str,
        prefixes: &'static [&'static str],
        failed: Outcome,
        default: Outcome,
    },
}

/// One row of the table: an action and its ATNA classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub action: &'static str,
    pub event_id: Code,
    pub event_type: Option<Code>,
    pub action_code: ActionCode,
    pub outcome: OutcomeRule,
    /// What the record says, in a sentence (for docs/audit.md and the console).
    pub what: &'static str,
}

use ActionCode::{Create as C, Delete as D, Execute as E, Read as R, Update as U};
use Outcome::{MinorFailure as MINOR, SeriousFailure as SERIOUS, Success as OK};

const fn rule(
    action: &'static str,
    event_id: Code,
    event_type: Option<Code>,
    action_code: ActionCode,
    outcome: OutcomeRule,
    what: &'static str,
) -> Rule {
    Rule {
        action,
        event_id,
        event_type,
        action_code,
        outcome,
        what,
    }
}

const fn fixed(o: Outcome) -> OutcomeRule {
    OutcomeRule::Fixed(o)
}

use event::{
    APPLICATION_ACTIVITY as APP, AUDIT_LOG_USED, DICOM_INSTANCES_TRANSFERRED as TRANSFERRED,
    EXPORT, IMPORT, SECURITY_ALERT as ALERT, USER_AUTHENTICATION as AUTH,
};

/// A capture's or a send's `details.outcome`.
const EXPORT_OUTCOME: OutcomeRule = OutcomeRule::ByString {
    field: "outcome",
    values: &[("success", OK), ("refused", MINOR), ("failed", SERIOUS)],
    default: OK,
};
use event_type as ty;

/// Every action the broker writes (and the console's, marked so), with its meaning.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    // The broker itself.
    rule("broker_started", APP, Some(ty::APPLICATION_START), E, fixed(OK),
        "the broker started (its version, the chain head it found)"),
    rule("broker_stopped", APP, Some(ty::APPLICATION_STOP), E, fixed(OK),
        "the broker stopped"),
    rule("leases_resumed", APP, None, U, fixed(OK),
        "after a restart, the active leases' heartbeats count from now"),
    // The pool's desktops (configuration).
    rule("desktop_added", ALERT, Some(ty::HARDWARE_CONFIGURATION), C, fixed(OK),
        "a desktop was added to the pool by the configuration"),
    rule("desktop_retired", ALERT, Some(ty::HARDWARE_CONFIGURATION), D, fixed(OK),
        "a desktop left the pool (no longer configured)"),
    rule("desktop_returned", ALERT, Some(ty::HARDWARE_CONFIGURATION), U, fixed(OK),
        "a retired desktop came back to the pool, or an admin returned a drained one (console)"),
    rule("golden_changed", ALERT, Some(ty::SOFTWARE_CONFIGURATION), U, fixed(OK),
        "the golden image changed; desktops are rebuilt from it"),
    // Starts and resets.
    rule("desktop_ready", APP, None, E, fixed(OK),
        "a desktop started and verified clean (with its proof)"),
    rule("desktop_reset", APP, None, E, fixed(OK),
        "a used desktop was reset and verified clean (method, duration, proof)"),
    rule("reset_started", APP, None, E, fixed(OK),
        "a desktop's reset began (its plan of methods)"),
    rule("reset_attempt_failed", APP, None, E, fixed(MINOR),
        "one reset method failed; the next of the plan follows"),
    rule("desktop_broken", ALERT, None, E, fixed(SERIOUS),
        "every reset method failed: the desktop left the pool until repaired"),
    rule("desktop_died", APP, None, E, fixed(SERIOUS),
        "a desktop's QEMU process was lost, or its guest powered off while clean"),
    rule("desktop_invalidated", APP, None, U, fixed(OK),
        "a clean desktop is rebuilt because the golden image changed"),
    rule("desktop_recovered", APP, None, E, fixed(OK),
        "a desktop found mid-operation at start-up is reset"),
    rule("desktop_state", APP, None, U, fixed(OK),
        "another desktop state change"),
    rule("template_ready", APP, None, C, fixed(OK),
        "a frozen template was built from the golden image"),
    rule("template_failed", APP, None, C, fixed(SERIOUS),
        "building the template failed"),
    // Admin actions (restricted functions).
    rule("repair_requested", ALERT, Some(ty::USE_OF_RESTRICTED_FUNCTION), E, fixed(OK),
        "an admin asked to repair a broken desktop"),
    rule("desktop_drained", ALERT, Some(ty::USE_OF_RESTRICTED_FUNCTION), U, fixed(OK),
        "an admin drained a desktop (console)"),
    rule("reset_requested", ALERT, Some(ty::USE_OF_RESTRICTED_FUNCTION), E, fixed(OK),
        "an admin forced a desktop's reset (console)"),
    rule("rebuild_requested", ALERT, Some(ty::USE_OF_RESTRICTED_FUNCTION), E, fixed(OK),
        "an admin asked to rebuild a desktop from the golden image (console)"),
    // Leases and the waiting line.
    rule("lease_granted", APP, None, C, fixed(OK),
        "a terminal's user got a desktop (the ticket and waiting time if it waited)"),
    rule("lease_reattached", APP, None, U, fixed(OK),
        "a terminal got its live lease of the same user back"),
    rule("lease_ended", APP, None, D, OutcomeRule::ByString {
        field: "reason",
        values: &[
            ("released", OK), ("signed_out", OK), ("revoked", OK),
            ("expired", MINOR), ("display_lost", MINOR),
            ("desktop_lost", SERIOUS), ("setup_failed", SERIOUS), ("quota", SERIOUS),
        ],
        default: OK,
    }, "a lease ended (its reason and how long it was held)"),
    rule("queue_joined", APP, None, C, fixed(OK),
        "no desktop was free: the terminal waits in line (ticket, position)"),
    rule("queue_held", APP, None, U, fixed(OK),
        "a clean desktop is held for the head of the line"),
    rule("queue_hold_dropped", APP, None, U, fixed(MINOR),
        "a desktop held for the line was no longer clean"),
    rule("queue_left", APP, None, D, OutcomeRule::ByString {
        field: "reason",
        values: &[("granted", OK), ("cancelled", OK), ("expired", MINOR), ("hold_expired", MINOR)],
        default: OK,
    }, "a ticket left the line (granted, cancelled, expired) and how long it waited"),
    // The display.
    rule("display_connected", AUTH, Some(ty::LOGIN), E, fixed(OK),
        "the lease's display client got in with the lease's display password"),
    rule("display_disconnected", AUTH, Some(ty::LOGOUT), E, fixed(OK),
        "the lease's last display client left (how long it was connected)"),
    // USB: the disc's drive forwarded into the desktop.
    rule("usb_stream_opened", IMPORT, Some(ty::ATTACH), E, fixed(OK),
        "the terminal opened the lease's USB stream (its description of the device)"),
    rule("usb_attached", IMPORT, Some(ty::ATTACH), C, fixed(OK),
        "a USB device was attached to the desktop (VID:PID, class, interfaces)"),
    rule("usb_detached", IMPORT, Some(ty::DETACH), D, fixed(OK),
        "the USB device was detached"),
    rule("usb_stream_closed", IMPORT, Some(ty::DETACH), E, OutcomeRule::ByPrefix {
        field: "end",
        prefixes: &["error", "io"],
        failed: MINOR,
        default: OK,
    }, "the USB stream closed (why, bytes each way, seconds)"),
    rule("usb_refused", ALERT, None, E, fixed(SERIOUS),
        "the relay refused the device (not mass storage) and ended the stream"),
    rule("usb_control_refused", ALERT, None, E, fixed(MINOR),
        "the terminal refused USB control requests the desktop sent to its drive"),
    // Key images: the patient a lease's captures belong to, the captures, their sending.
    rule("patient_context_set", APP, None, U, fixed(OK),
        "the terminal gave the lease's patient, from the HIS (patient ID, accession)"),
    rule("capture_taken", EXPORT, None, R, EXPORT_OUTCOME,
        "the lease holder took the desktop's screen (capture number, sha256, size, patient ID) or was refused"),
    rule("capture_sent", TRANSFERRED, None, C, EXPORT_OUTCOME,
        "a capture was sent to the PACS as a Secondary Capture (SOP Instance UID, PACS, status, patient ID), or the send failed"),
    // Terminals and people.
    rule("security_alert", ALERT, None, E, OutcomeRule::ByBool {
        field: "accepted",
        if_true: MINOR,
        if_false: SERIOUS,
    }, "a terminal reported a security problem (e.g. unguarded); accepted or refused"),
    rule("auth_failed", AUTH, Some(ty::LOGIN), E, fixed(MINOR),
        "a request with a wrong token or password"),
    rule("console_login", AUTH, Some(ty::LOGIN), E, fixed(OK),
        "an admin logged in to the console"),
    rule("console_login_failed", AUTH, Some(ty::LOGIN), E, fixed(MINOR),
        "a console login failed"),
    rule("console_logout", AUTH, Some(ty::LOGOUT), E, fixed(OK),
        "an admin logged out of the console"),
    // The audit trail itself.
    rule("audit_viewed", AUDIT_LOG_USED, None, R, fixed(OK),
        "someone searched, viewed or exported the audit trail or the sessions (the filter used)"),
    rule("audit_verify_requested", AUDIT_LOG_USED, None, E, fixed(OK),
        "an admin asked for a full verification of the chain now"),
];

/// The action names of [`RULES`].
pub fn known_actions() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.action)
}

/// The row for an action, if it has one.
pub fn rule_for(action: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.action == action)
}

/// A record's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AtnaEvent {
    pub event_id: Code,
    /// The EventTypeCode, where one fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<Code>,
    pub action_code: ActionCode,
    pub outcome: Outcome,
    /// Whether the action has a row in [`RULES`] (else the defaults were used).
    pub known: bool,
}

impl OutcomeRule {
    fn apply(&self, details: &serde_json::Value) -> Outcome {
        match *self {
            OutcomeRule::Fixed(o) => o,
            OutcomeRule::ByString {
                field,
                values,
                default,
            } => match details.get(field).and_then(|v| v.as_str()) {
                Some(s) => values
                    .iter()
                    .find(|(v, _)| *v == s)
                    .map_or(default, |(_, o)| *o),
                None => default,
            },
            OutcomeRule::ByBool {
                field,
                if_true,
                if_false,
            } => match details.get(field).and_then(|v| v.as_bool()) {
                Some(true) => if_true,
                _ => if_false,
            },
            OutcomeRule::ByPrefix {
                field,
                prefixes,
                failed,
                default,
            } => match details.get(field).and_then(|v| v.as_str()) {
                Some(s) if prefixes.iter().any(|p| s.starts_with(p)) => failed,
                _ => default,
            },
        }
    }

    /// The SQL condition (over the columns `details`) under which this rule gives
    /// `want`, or `None` when it never does. Values are constants of [`RULES`], not
    /// input, and contain only `[a-z_]`.
    fn sql_for(&self, want: Outcome) -> Option<String> {
        let field = |f: &str| format!("json_extract(details, '$.{f}')");
        let list = |v: &[&str]| {
            v.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match *self {
            OutcomeRule::Fixed(o) => (o == want).then(|| "1".to_owned()),
            OutcomeRule::ByString {
                field: f,
                values,
                default,
            } => {
                let hits: Vec<&str> = values
                    .iter()
                    .filter(|(_, o)| *o == want)
                    .map(|(v, _)| *v)
                    .collect();
                let all: Vec<&str> = values.iter().map(|(v, _)| *v).collect();
                let mut parts = Vec::new();
                if !hits.is_empty() {
                    parts.push(format!("{} IN ({})", field(f), list(&hits)));
                }
                if default == want {
                    parts.push(format!("coalesce({} NOT IN ({}), 1)", field(f), list(&all)));
                }
                (!parts.is_empty()).then(|| format!("({})", parts.join(" OR ")))
            }
            OutcomeRule::ByBool {
                field: f,
                if_true,
                if_false,
            } => {
                // json_extract gives 1 for JSON true, 0 for false.
                let is_true = format!(
                    "coalesce({} IS 1 AND json_type(details, '$.{f}') = 'true', 0)",
                    field(f)
                );
                match (if_true == want, if_false == want) {
                    (true, true) => Some("1".into()),
                    (true, false) => Some(is_true),
                    (false, true) => Some(format!("NOT {is_true}")),
                    (false, false) => None,
                }
            }
            OutcomeRule::ByPrefix {
                field: f,
                prefixes,
                failed,
                default,
            } => {
                let starts = prefixes
                    .iter()
                    .map(|p| format!("coalesce(substr({}, 1, {}) = '{p}', 0)", field(f), p.len()))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                match (failed == want, default == want) {
                    (true, true) => Some("1".into()),
                    (true, false) => Some(format!("({starts})")),
                    (false, true) => Some(format!("NOT ({starts})")),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Classifies one record by its action and details.
pub fn classify(action: &str, details: &serde_json::Value) -> AtnaEvent {
    match rule_for(action) {
        Some(r) => AtnaEvent {
            event_id: r.event_id,
            event_type: r.event_type,
            action_code: r.action_code,
            outcome: r.outcome.apply(details),
            known: true,
        },
        None => AtnaEvent {
            event_id: event::APPLICATION_ACTIVITY,
            event_type: None,
            action_code: ActionCode::Execute,
            outcome: Outcome::Success,
            known: false,
        },
    }
}

/// Classifies a record whose details are stored as JSON text (unparsable details count
/// as empty).
pub fn classify_text(action: &str, details: &str) -> AtnaEvent {
    let v = serde_json::from_str(details).unwrap_or(serde_json::Value::Null);
    classify(action, &v)
}

/// The actions classified under an EventID (code, e.g. 110113).
pub fn actions_with_event(code: u32) -> Vec<&'static str> {
    RULES
        .iter()
        .filter(|r| r.event_id.code == code)
        .map(|r| r.action)
        .collect()
}

/// A SQL condition over the `audit` table's `action` and `details` columns that holds
/// exactly for records whose [`classify`] outcome is `want` (unknown actions count as
/// success). Built from [`RULES`] only, no input.
pub fn outcome_sql(want: Outcome) -> String {
    let mut parts = Vec::new();
    for r in RULES {
        if let Some(c) = r.outcome.sql_for(want) {
            parts.push(format!("(action = '{}' AND {c})", r.action));
        }
    }
    if want == Outcome::Success {
        let all: Vec<String> = RULES.iter().map(|r| format!("'{}'", r.action)).collect();
        parts.push(format!("action NOT IN ({})", all.join(",")));
    }
    if parts.is_empty() {
        "0".into()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_are_unique_and_plain() {
        let mut seen = std::collections::HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.action), "{} twice", r.action);
            assert!(
                r.action
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                r.action
            );
            assert!(event::ALL.contains(&r.event_id), "{}", r.action);
        }
    }

    #[test]
    fn every_known_action_classifies_as_its_row() {
        for r in RULES {
            let e = classify(r.action, &json!({}));
            assert!(e.known);
            assert_eq!(e.event_id, r.event_id, "{}", r.action);
            assert_eq!(e.event_type, r.event_type);
            assert_eq!(e.action_code, r.action_code);
        }
    }

    #[test]
    fn outcomes_follow_the_details() {
        let o = |a: &str, d| classify(a, &d).outcome.code();
        assert_eq!(o("lease_ended", json!({"reason": "released"})), 0);
        assert_eq!(o("lease_ended", json!({"reason": "expired"})), 4);
        assert_eq!(o("lease_ended", json!({"reason": "display_lost"})), 4);
        assert_eq!(o("lease_ended", json!({"reason": "desktop_lost"})), 8);
        assert_eq!(o("lease_ended", json!({"reason": "quota"})), 8);
        assert_eq!(o("lease_ended", json!({})), 0);
        assert_eq!(o("queue_left", json!({"reason": "expired"})), 4);
        assert_eq!(o("queue_left", json!({"reason": "granted"})), 0);
        assert_eq!(o("security_alert", json!({"accepted": true})), 4);
        assert_eq!(o("security_alert", json!({"accepted": false})), 8);
        assert_eq!(o("security_alert", json!({})), 8);
        assert_eq!(o("usb_stream_closed", json!({"end": "error: refused"})), 4);
        assert_eq!(o("usb_stream_closed", json!({"end": "io: reset"})), 4);
        assert_eq!(o("usb_stream_closed", json!({"end": "terminal_closed"})), 0);
        assert_eq!(o("usb_refused", json!({})), 8);
        assert_eq!(o("desktop_broken", json!({})), 8);
        assert_eq!(o("reset_attempt_failed", json!({})), 4);
        let a = classify("audit_viewed", &json!({}));
        assert_eq!((a.event_id.code, a.action_code.as_str()), (110101, "R"));
        let u = classify("no_such_action", &json!({}));
        assert!(!u.known);
        assert_eq!((u.event_id.code, u.outcome.code()), (110100, 0));
    }

    #[test]
    fn serializes_codes_and_numbers() {
        let v = serde_json::to_value(classify("lease_ended", &json!({"reason": "expired"})))
            .unwrap_or_default();
        assert_eq!(v["event_id"]["code"], 110100);
        assert_eq!(v["event_id"]["meaning"], "Application Activity");
        assert_eq!(v["action_code"], "D");
        assert_eq!(v["outcome"], 4);
    }

    /// The SQL outcome condition agrees with [`classify`] on every rule and on details
    /// that hit each branch.
    #[test]
    fn outcome_sql_agrees_with_classify() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE audit (action TEXT, details TEXT)")
            .unwrap();
        let mut samples = vec![
            json!({}),
            json!({"reason": "x"}),
            json!({"accepted": true}),
            json!({"accepted": false}),
            json!({"accepted": 1}),
            json!({"end": "error: x"}),
            json!({"end": "io: y"}),
            json!({"end": "lease_ended"}),
            json!({"end": 5}),
        ];
        for r in RULES {
            if let OutcomeRule::ByString { field, values, .. } = r.outcome {
                for (v, _) in values {
                    samples.push(json!({ field: v }));
                }
            }
        }
        let mut actions: Vec<&str> = known_actions().collect();
        actions.push("unknown_action");
        for a in &actions {
            for d in &samples {
                c.execute(
                    "INSERT INTO audit VALUES (?1, ?2)",
                    rusqlite::params![a, d.to_string()],
                )
                .unwrap();
            }
        }
        for want in Outcome::ALL {
            let sql = format!(
                "SELECT action, details FROM audit WHERE {} ORDER BY rowid",
                outcome_sql(want)
            );
            let mut st = c.prepare(&sql).unwrap();
            let got: Vec<(String, String)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let mut expected = Vec::new();
            for a in &actions {
                for d in &samples {
                    if classify(a, d).outcome == want {
                        expected.push((a.to_string(), d.to_string()));
                    }
                }
            }
            assert_eq!(got, expected, "outcome {want:?}");
        }
    }

    /// Every action name written in the workspace's sources has a row. Written names
    /// are the literals passed to `AuditEntry::new(`, to the `audit(` and `entry(`
    /// helpers of the engine and store, and the `=> "…"` arms and `if … { "…" }` choices
    /// of the functions that pick an action name (`transition_in`, `reset_succeeded`).
    #[test]
    fn every_written_action_is_mapped() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        collect_rs(&root.join("crates"), &mut files);
        assert!(files.len() > 20, "found the workspace's sources");
        let mut missing = Vec::new();
        let mut found = 0;
        for f in files {
            let s = f.to_string_lossy();
            // Tests write made-up actions on purpose.
            if s.contains("/tests/") || s.contains("airlock-testkit") || s.ends_with("atna.rs") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            for name in written_actions(&text) {
                found += 1;
                if rule_for(&name).is_none() {
                    missing.push(format!("{}: {name}", f.display()));
                }
            }
        }
        assert!(found > 30, "found the written actions ({found})");
        assert!(
            missing.is_empty(),
            "audit actions without an ATNA row in airlock-store/src/atna.rs RULES (add one, and to docs/audit.md): {missing:#?}"
        );
    }

    /// docs/audit.md has a row for every action, with its EventID.
    #[test]
    fn docs_list_every_action() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/audit.md");
        let doc = std::fs::read_to_string(&root).unwrap_or_default();
        for r in RULES {
            let row = format!(
                "| `{}` | {} {} |",
                r.action, r.event_id.code, r.event_id.meaning
            );
            assert!(doc.contains(&row), "docs/audit.md lacks the row {row}");
        }
    }

    fn collect_rs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("target") {
                    collect_rs(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The action names a source file writes (see [`every_written_action_is_mapped`]).
    fn written_actions(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for pat in [
            "AuditEntry::new(\"",
            "audit(\"",
            "entry(\"",
            "audit_display(\"",
        ] {
            let mut rest = text;
            while let Some(i) = rest.find(pat) {
                rest = &rest[i + pat.len()..];
                if let Some(end) = rest.find('"') {
                    out.push(rest[..end].to_owned());
                }
            }
        }
        // Functions that choose the name before `AuditEntry::new(action)`.
        for (start, stop) in [
            ("let action = match", "};"),
            ("let action = if", ";"),
            ("let name = if", ";"),
            ("AuditEntry::new(if", "})"),
        ] {
            let mut rest = text;
            while let Some(i) = rest.find(start) {
                rest = &rest[i..];
                let end = rest.find(stop).unwrap_or(rest.len());
                let block = &rest[..end];
                let mut q = block.split('"');
                q.next();
                while let (Some(lit), _) = (q.next(), q.next()) {
                    out.push(lit.to_owned());
                }
                rest = &rest[end..];
            }
        }
        out
    }
}
