//! The terminal <-> broker wire contract, defined once: what `airlock` (the terminal) and
//! `airlockd` (the broker) send each other, and what the test kit reads. Types and their
//! rules only; the binaries encode them (JSON bodies, HTTP headers) and choose statuses.
//!
//! - `POST /v1/leases` takes a [`LeaseRequest`] and answers a [`LeaseGrant`] (`201`, or
//!   `200` with `reattached` for the terminal's live lease of the same user), or, when no
//!   desktop is free and the request asked to wait, a [`QueueStanding`] (`202`).
//! - `POST /v1/queue/{ticket}?wait_s=N` ([`QueuePoll`]) keeps a ticket alive and waits
//!   (long poll, at most [`MAX_QUEUE_WAIT_S`]) until the ticket's place changes or a
//!   desktop is held for it: [`QueueStanding`] (`200`) or the [`LeaseGrant`] of the held
//!   desktop (`201`, the ticket has left the line). `DELETE /v1/queue/{ticket}` leaves
//!   the line (`204`). A ticket the broker no longer knows is `404`
//!   [`ErrorCode::TicketNotFound`].
//! - Keeping a ticket alive: the ticket counts as seen until the end of each poll; one
//!   that is not polled again within the broker's ticket timeout (a few
//!   [`QueueStanding::poll_interval_s`]) leaves the line, and so does one for which a
//!   desktop is held longer than the hold time without being taken.
//! - `POST /v1/leases/{id}/heartbeat` answers a [`HeartbeatReply`].
//! - `DELETE /v1/leases/{id}` answers a [`ReleaseReply`].
//! - `GET /v1/leases/{id}/usb` upgrades to [`USB_PROTOCOL`]; the terminal describes what it
//!   forwards in the [`DEVICE_HEADER`] header as a [`DeviceIdentity`].
//! - `POST /v1/leases/{id}/usb/refused` takes a [`UsbRefusedReport`] (`202`): the control
//!   requests the terminal refused to pass to the drive, audited once per lease.
//! - Every error is an [`ErrorBody`] with an [`ErrorCode`].
use serde::{Deserialize, Serialize};

use crate::{DesktopId, DesktopState, LeaseId, TicketId, UnixMillis};

/// The protocol token of the USB stream upgrade (`Upgrade: airlock-usbredir/1`).
pub const USB_PROTOCOL: &str = "airlock-usbredir/1";

/// The header in which the terminal describes the device it forwards (lower case: HTTP
/// header names are case-insensitive).
pub const DEVICE_HEADER: &str = "x-airlock-device";

/// The longest [`DEVICE_HEADER`] value the broker accepts, in bytes.
pub const MAX_DEVICE_HEADER_BYTES: usize = 2048;

/// The longest text field of a [`DeviceIdentity`] the broker accepts, in characters.
pub const MAX_DEVICE_FIELD_CHARS: usize = 256;

/// What the terminal cuts each text field of a [`DeviceIdentity`] to before sending it
/// ([`DeviceIdentity::sanitized`]): half of what the broker accepts.
pub const SENT_DEVICE_FIELD_CHARS: usize = 128;

/// The longest a `POST /v1/queue/{ticket}` long poll may wait, in seconds.
pub const MAX_QUEUE_WAIT_S: u64 = 10;

/// The query of `POST /v1/queue/{ticket}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuePoll {
    /// Wait up to this many seconds (0 to [`MAX_QUEUE_WAIT_S`]) for a change before
    /// answering; 0 (the default) answers at once.
    #[serde(default)]
    pub wait_s: u64,
}

/// `POST /v1/leases`: who sits at the terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The clinician's user name (checked by [`crate::UserName::parse`]).
    pub user: String,
    /// When no desktop is free: wait in line (`202` and a ticket) instead of `503`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
}

/// `PUT /v1/leases/{id}/patient`: the patient the lease's key images belong to, as the
/// HIS gave it to the terminal (never from the disc). Only `patient_id` is required;
/// the broker checks every value by its DICOM type and, when a worklist is configured,
/// completes the rest from it when the capture is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientRequest {
    pub patient_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// DICOM PN notation: `Yamada^Taro=山田^太郎=やまだ^たろう`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `YYYYMMDD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// `M`, `F` or `O`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accession: Option<String>,
}

/// `POST /v1/leases/{id}/captures`: optionally only a rectangle of the screen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// `X,Y,WIDTH,HEIGHT` in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
}

/// A capture the broker keeps for the lease (its PNG: `GET …/captures/{capture}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    /// Its number within the lease, from 1.
    pub capture: u32,
    /// SHA-256 of the PNG, lower-case hex.
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    /// When the screen was taken (Unix milliseconds).
    pub taken_at: UnixMillis,
    /// When the broker deletes it (Unix milliseconds).
    pub delete_after: UnixMillis,
    /// Where sending it would store it (`CALLED_AE@host:port`), when the broker has a
    /// PACS; shown when the terminal asks before sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacs: Option<String>,
    /// The patient ID the lease's captures belong to (from the HIS), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
}

/// `POST /v1/leases/{id}/captures/{capture}/send`: what the PACS said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReply {
    pub capture: u32,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    /// `CALLED_AE@host:port`.
    pub pacs: String,
    /// The C-STORE status (0 success, or a warning).
    pub status: u16,
    /// The patient the object was made for.
    pub patient_id: String,
    /// Whether the worklist completed the HIS's patient context.
    pub from_worklist: bool,
}

/// An enum whose variants have one wire name each: `as_str`, `Display` and serde all use
/// it.
macro_rules! wire_names {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_names! {
    /// A desktop's display protocol.
    pub enum DisplayProtocol {
        /// SPICE (the default).
        Spice = "spice",
        /// VNC.
        Vnc = "vnc",
    }
}

/// Where and how the terminal's display client connects to its desktop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayGrant {
    /// The protocol of the desktop's display.
    pub protocol: DisplayProtocol,
    /// The host the display port is on, as the broker was configured to announce it.
    pub host: String,
    /// The display port (the broker's proxy, open only while the lease lives).
    pub port: u16,
    /// The display password, new for this lease and revoked when it ends.
    pub password: String,
    /// The port speaks TLS with the broker's certificate (SPICE `tls-port`); when
    /// false the display is plaintext (loopback, or a site that allowed it explicitly).
    #[serde(default)]
    pub tls: bool,
    /// The certificate subject the display client must check (SPICE `host-subject`,
    /// e.g. `O=Airlock,CN=broker.example`), when the site configured one; else the
    /// client checks the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_subject: Option<String>,
}

/// A granted lease: what the pool decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The lease, for heartbeats, release and the USB stream.
    pub lease_id: LeaseId,
    /// The desktop it holds.
    pub desktop_id: DesktopId,
    /// When the lease ends unless a heartbeat moves it.
    pub expires_at: UnixMillis,
    /// How often the terminal must send heartbeats.
    pub heartbeat_interval_s: u64,
    /// The display, when the pool has one configured.
    pub display: Option<DisplayGrant>,
}

/// Where the lease's USB stream is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsbEndpoint {
    /// `GET` this URL with `Upgrade: ` [`USB_PROTOCOL`].
    pub url: String,
    /// Always [`USB_PROTOCOL`].
    pub protocol: String,
}

/// `201` to `POST /v1/leases`: the grant and its USB endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The grant's fields, at the top level of the JSON object.
    #[serde(flatten)]
    pub grant: Grant,
    /// Where to open the USB stream.
    pub usb: UsbEndpoint,
    /// The terminal's live lease for the same user, given back (a restarted launcher);
    /// its display password is new.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reattached: bool,
}

/// `202` to `POST /v1/leases` with `wait`, and `200` to `POST /v1/queue/{ticket}`: a
/// place in the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStanding {
    /// The ticket: keep it alive with `POST /v1/queue/{ticket}`.
    pub ticket_id: TicketId,
    /// 1 for the head of the line.
    pub position: usize,
    /// How many terminals wait in all.
    pub waiting: usize,
    /// How long this ticket has waited.
    pub waited_ms: i64,
    /// Ask again at least this often, or the ticket leaves the line.
    pub poll_interval_s: u64,
}

/// A grant's fields read through the answer (`grant.lease_id`), as they are flat in
/// its JSON.
impl std::ops::Deref for LeaseGrant {
    type Target = Grant;

    fn deref(&self) -> &Grant {
        &self.grant
    }
}

/// `200` to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The lease that was extended.
    pub lease_id: LeaseId,
    /// Its new end, unless another heartbeat comes.
    pub expires_at: UnixMillis,
}

/// `202` to a release: the lease ended and its desktop is being reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReply {
    /// The lease that ended.
    pub lease_id: LeaseId,
    /// The desktop it held.
    pub desktop_id: DesktopId,
    /// The desktop's state now (`resetting`).
    pub state: DesktopState,
}

wire_names! {
    /// A security alert a terminal raises.
    pub enum AlertKind {
        /// The terminal guard is not in place (`airlock guard status` fails): the
        /// terminal itself could give a disc a driver, a mount or a filesystem parser.
        TerminalUnguarded = "terminal_unguarded",
    }
}

/// At most this many problems in one [`AlertReport`].
pub const MAX_ALERT_PROBLEMS: usize = 32;
/// At most this many characters per problem.
pub const MAX_ALERT_PROBLEM_CHARS: usize = 400;

/// `POST /v1/alerts`: a terminal reports a security alert; the broker writes it to the
/// audit log (`security_alert`) for the security officer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertReport {
    pub kind: AlertKind,
    /// What is wrong, a line each (see [`AlertReport::check`]).
    pub problems: Vec<String>,
    /// Whether the terminal goes on regardless (its configuration accepts the risk), or
    /// refused to.
    pub accepted: bool,
    /// The clinician at the terminal, when known (checked by [`crate::UserName::parse`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Why an [`AlertReport`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("`problems` must list 1 to {MAX_ALERT_PROBLEMS} problems")]
    Count,
    #[error("each of `problems` must be 1 to {MAX_ALERT_PROBLEM_CHARS} printable characters")]
    Problem,
}

impl AlertReport {
    /// Checks the problems' count and text (the user is checked by the caller).
    pub fn check(&self) -> Result<(), AlertError> {
        if self.problems.is_empty() || self.problems.len() > MAX_ALERT_PROBLEMS {
            return Err(AlertError::Count);
        }
        let ok = |p: &String| {
            let n = p.chars().count();
            (1..=MAX_ALERT_PROBLEM_CHARS).contains(&n) && !p.chars().any(char::is_control)
        };
        if !self.problems.iter().all(ok) {
            return Err(AlertError::Problem);
        }
        Ok(())
    }
}

/// The setup of a USB control request (without `wLength`), as the terminal's drive
/// forwarder refused it: `bmRequestType`, `bRequest`, `wValue`, `wIndex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSetup {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
}

impl ControlSetup {
    /// `vendor`, `class`, `standard` or `reserved`: the request's type in words.
    pub fn kind(&self) -> &'static str {
        match (self.request_type >> 5) & 0x03 {
            0 => "standard",
            1 => "class",
            2 => "vendor",
            _ => "reserved",
        }
    }
}

impl std::fmt::Display for ControlSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} request {:#04x} (bmRequestType {:#04x}, wValue {:#06x}, wIndex {:#06x})",
            self.kind(),
            if self.request_type & 0x80 != 0 {
                "IN"
            } else {
                "OUT"
            },
            self.request,
            self.request_type,
            self.value,
            self.index
        )
    }
}

/// At most this many distinct requests in one [`UsbRefusedReport`].
pub const MAX_REFUSED_REQUESTS: usize = 16;

/// How long after a lease ended the broker still takes its [`UsbRefusedReport`]s (a
/// terminal reports the forward that the lease's end closed just after it); the lease's
/// one `usb_control_refused` audit record is written then.
pub const USB_REFUSED_GRACE_MS: i64 = 10_000;

/// `POST /v1/leases/{id}/usb/refused`: the control requests from the lease's desktop that
/// the terminal's drive forwarder refused (never sent to the drive), reported when a
/// forward of the lease ends. The broker sums a lease's reports and writes one
/// `usb_control_refused` audit record per lease, after the lease has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbRefusedReport {
    /// How many control requests were refused.
    pub count: u64,
    /// The distinct ones (the first [`MAX_REFUSED_REQUESTS`] seen).
    pub requests: Vec<ControlSetup>,
}

/// Why a [`UsbRefusedReport`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbRefusedError {
    #[error("`requests` must list 1 to {MAX_REFUSED_REQUESTS} requests")]
    Requests,
    #[error("`requests` must be distinct")]
    Duplicate,
    #[error("`count` must be at least the number of `requests`")]
    Count,
}

impl UsbRefusedReport {
    /// Checks the sizes and consistency of the report.
    pub fn check(&self) -> Result<(), UsbRefusedError> {
        if self.requests.is_empty() || self.requests.len() > MAX_REFUSED_REQUESTS {
            return Err(UsbRefusedError::Requests);
        }
        let distinct: std::collections::BTreeSet<&ControlSetup> = self.requests.iter().collect();
        if distinct.len() != self.requests.len() {
            return Err(UsbRefusedError::Duplicate);
        }
        if self.count < self.requests.len() as u64 {
            return Err(UsbRefusedError::Count);
        }
        Ok(())
    }
}

wire_names! {
    /// The machine-readable part of every API error.
    pub enum ErrorCode {
        /// A malformed request (body, query, header).
        BadRequest = "bad_request",
        /// A missing or wrong bearer token.
        Unauthorized = "unauthorized",
        /// No such route.
        NotFound = "not_found",
        /// The body is larger than the broker accepts.
        PayloadTooLarge = "payload_too_large",
        /// The body is not JSON.
        UnsupportedMediaType = "unsupported_media_type",
        /// Every desktop is in use or being reset.
        NoFreeDesktop = "no_free_desktop",
        /// The terminal already holds as many leases as it may (`limits.leases_per_terminal`):
        /// release one first (a request for the same user gets that lease back instead).
        LeaseLimit = "lease_limit",
        /// Too many requests (failed authentications from this address, or lease requests
        /// of this terminal): wait `retry_after_s` (also in `Retry-After`).
        RateLimited = "rate_limited",
        /// The chosen desktop could not be set up for the lease.
        DesktopUnavailable = "desktop_unavailable",
        /// No active lease with that id for this terminal.
        LeaseNotFound = "lease_not_found",
        /// No waiting ticket with that id for this terminal (it left the line).
        TicketNotFound = "ticket_not_found",
        /// No desktop with that id.
        DesktopNotFound = "desktop_not_found",
        /// A repair of a desktop that is not broken.
        NotBroken = "not_broken",
        /// An admin action that does not fit the desktop now (draining a drained one,
        /// resetting one that is starting or resetting).
        ActionConflict = "action_conflict",
        /// The lease already has a USB stream.
        UsbStreamOpen = "usb_stream_open",
        /// The USB endpoint was called without the upgrade headers.
        UpgradeRequired = "upgrade_required",
        /// The desktop's USB channel is not ready.
        UsbUnavailable = "usb_unavailable",
        /// No capture with that number for this lease (or its retention time passed).
        CaptureNotFound = "capture_not_found",
        /// The desktop's screen could not be taken (the message says why).
        CaptureFailed = "capture_failed",
        /// Sending to the PACS is not configured on this broker (`[export.pacs]`).
        ExportNotConfigured = "export_not_configured",
        /// The lease has no patient: give one (`airlock open --patient-id`) first.
        NoPatient = "no_patient",
        /// The worklist could not complete the patient (not found, several entries, or
        /// unreachable): the message says which.
        WorklistFailed = "worklist_failed",
        /// The PACS did not store the capture (unreachable, association rejected, a
        /// failure status): the message says which; nothing was stored.
        PacsFailed = "pacs_failed",
        /// Something failed inside the broker (its log has the details).
        Internal = "internal",
        /// A code this terminal does not know (a newer broker).
        #[serde(other)]
        Unknown = "unknown",
    }
}

/// The body of every API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for programs.
    pub error: ErrorCode,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// When to try again (also in `Retry-After`), for `no_free_desktop` and the like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

wire_names! {
    /// What a USB stream carries.
    pub enum DeviceKind {
        /// A real optical drive forwarded from the terminal.
        Drive = "drive",
        /// An emulated drive backed by a disc image.
        Image = "image",
        /// The terminal sent no description (the broker's own placeholder; a terminal
        /// may not send it).
        Unspecified = "unspecified",
    }
}

/// What the terminal says it forwards ([`DEVICE_HEADER`]), for the audit trail. The
/// broker trusts none of it for policy: the device's own announcements in the usbredir
/// stream decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceIdentity {
    /// Drive or image.
    pub kind: DeviceKind,
    /// USB vendor id, as 4 hex digits on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex16")]
    pub vid: Option<u16>,
    /// USB product id, as 4 hex digits on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex16")]
    pub pid: Option<u16>,
    /// Manufacturer string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Product string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Serial number string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Image file name (no directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Why a [`DeviceIdentity`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdentityError {
    /// The header is longer than [`MAX_DEVICE_HEADER_BYTES`].
    #[error("longer than {MAX_DEVICE_HEADER_BYTES} bytes")]
    TooLong,
    /// `kind` is not `drive` or `image`.
    #[error("kind must be \"drive\" or \"image\"")]
    Kind,
    /// A text field is too long or holds control characters.
    #[error("{0} must be at most {MAX_DEVICE_FIELD_CHARS} printable characters")]
    Field(&'static str),
}

impl DeviceIdentity {
    /// The broker's placeholder when a terminal sends no description.
    pub fn unspecified() -> DeviceIdentity {
        DeviceIdentity::new(DeviceKind::Unspecified)
    }

    /// A description of `kind` with no other field.
    pub fn new(kind: DeviceKind) -> DeviceIdentity {
        DeviceIdentity {
            kind,
            vid: None,
            pid: None,
            vendor: None,
            product: None,
            serial: None,
            image: None,
        }
    }

    fn texts(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("vendor", &self.vendor),
            ("product", &self.product),
            ("serial", &self.serial),
            ("image", &self.image),
        ]
    }

    /// The broker's check of a description a terminal sent (after decoding, which
    /// already checked `vid`/`pid` and unknown fields).
    pub fn validate(&self) -> Result<(), DeviceIdentityError> {
        if self.kind == DeviceKind::Unspecified {
            return Err(DeviceIdentityError::Kind);
        }
        for (name, v) in self.texts() {
            if let Some(v) = v {
                if v.chars().count() > MAX_DEVICE_FIELD_CHARS || v.chars().any(char::is_control) {
                    return Err(DeviceIdentityError::Field(name));
                }
            }
        }
        Ok(())
    }

    /// The terminal's clean-up before sending: each text field cut to
    /// [`SENT_DEVICE_FIELD_CHARS`], control characters replaced by `?` (USB string
    /// descriptors come from the device and may hold anything).
    pub fn sanitized(mut self) -> DeviceIdentity {
        let clean = |v: &mut Option<String>| {
            if let Some(s) = v {
                *s = s
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .take(SENT_DEVICE_FIELD_CHARS)
                    .collect();
            }
        };
        for v in [
            &mut self.vendor,
            &mut self.product,
            &mut self.serial,
            &mut self.image,
        ] {
            clean(v);
        }
        self
    }
}

/// `Option<u16>` as exactly 4 hex digits.
mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub fn serialize<S: Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format!("{v:04x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "USB ids are 4 hex digits, not {text:?}"
            )));
        }
        u16::from_str_radix(&text, 16)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(v: serde_json::Value) -> Result<DeviceIdentity, String> {
        let d: DeviceIdentity = serde_json::from_value(v).map_err(|e| e.to_string())?;
        d.validate().map_err(|e| e.to_string())?;
        Ok(d)
    }

    #[test]
    fn usb_refused_reports_are_checked() {
        let ok: UsbRefusedReport = serde_json::from_str(
            r#"{"count":3,"requests":[{"request_type":64,"request":1,"value":0,"index":0},
               {"request_type":33,"request":1,"value":0,"index":0}]}"#,
        )
        .unwrap();
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(
            ok.requests[0].to_string(),
            "vendor OUT request 0x01 (bmRequestType 0x40, wValue 0x0000, wIndex 0x0000)"
        );
        assert_eq!(ok.requests[1].kind(), "class");
        // Out of range, unknown or missing fields are refused by the decoder.
        for bad in [
            r#"{"count":1,"requests":[{"request_type":256,"request":1,"value":0,"index":0}]}"#,
            r#"{"count":-1,"requests":[{"request_type":64,"request":1,"value":0,"index":0}]}"#,
            r#"{"count":1,"requests":[{"request_type":64,"request":1,"value":0}]}"#,
            r#"{"count":1,"requests":[],"extra":1}"#,
        ] {
            assert!(
                serde_json::from_str::<UsbRefusedReport>(bad).is_err(),
                "{bad}"
            );
        }
        let setup = |n: u16| ControlSetup {
            request_type: 0xC0,
            request: 1,
            value: n,
            index: 0,
        };
        let with = |count: u64, requests: Vec<ControlSetup>| UsbRefusedReport { count, requests };
        assert_eq!(with(1, vec![]).check(), Err(UsbRefusedError::Requests));
        let many: Vec<ControlSetup> = (0..=MAX_REFUSED_REQUESTS as u16).map(setup).collect();
        assert_eq!(
            with(100, many.clone()).check(),
            Err(UsbRefusedError::Requests)
        );
        assert_eq!(with(100, many[..16].to_vec()).check(), Ok(()));
        assert_eq!(
            with(2, vec![setup(1), setup(1)]).check(),
            Err(UsbRefusedError::Duplicate)
        );
        assert_eq!(
            with(1, vec![setup(1), setup(2)]).check(),
            Err(UsbRefusedError::Count)
        );
        assert_eq!(with(u64::MAX, vec![setup(1)]).check(), Ok(()));
    }

    #[test]
    fn alert_reports_are_checked() {
        let ok: AlertReport = serde_json::from_str(
            r#"{"kind":"terminal_unguarded","problems":["module uas: can load"],"accepted":false}"#,
        )
        .unwrap();
        assert_eq!(ok.check(), Ok(()));
        assert!(serde_json::from_str::<AlertReport>(
            r#"{"kind":"other","problems":["x"],"accepted":false}"#
        )
        .is_err());
        assert!(serde_json::from_str::<AlertReport>(
            r#"{"kind":"terminal_unguarded","problems":["x"],"accepted":false,"extra":1}"#
        )
        .is_err());
        let with = |problems: Vec<String>| AlertReport {
            problems,
            ..ok.clone()
        };
        assert_eq!(with(vec![]).check(), Err(AlertError::Count));
        assert_eq!(with(vec!["x".into(); 33]).check(), Err(AlertError::Count));
        assert_eq!(with(vec!["".into()]).check(), Err(AlertError::Problem));
        assert_eq!(with(vec!["a\nb".into()]).check(), Err(AlertError::Problem));
        assert_eq!(with(vec!["é".repeat(400)]).check(), Ok(()));
        assert_eq!(
            with(vec!["é".repeat(401)]).check(),
            Err(AlertError::Problem)
        );
    }

    #[test]
    fn device_identity_round_trips_and_leaves_out_absent_fields() {
        let d = DeviceIdentity {
            vid: Some(0x0e8d),
            pid: Some(0x1887),
            product: Some("DVD drive".into()),
            ..DeviceIdentity::new(DeviceKind::Drive)
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            json!({"kind": "drive", "vid": "0e8d", "pid": "1887", "product": "DVD drive"})
        );
        assert_eq!(identity(v).unwrap(), d);
        assert_eq!(
            identity(json!({"kind": "image", "image": "disc.iso"})).unwrap(),
            DeviceIdentity {
                image: Some("disc.iso".into()),
                ..DeviceIdentity::new(DeviceKind::Image)
            }
        );
        // Upper-case hex is accepted, and null means absent.
        let d = identity(json!({"kind": "drive", "vid": "0E8D", "serial": null})).unwrap();
        assert_eq!((d.vid, d.serial), (Some(0x0e8d), None));
    }

    #[test]
    fn bad_device_identities_are_refused() {
        for bad in [
            json!({"kind": "keyboard"}),
            json!({"kind": "unspecified"}),
            json!({}),
            json!({"kind": "drive", "vid": "12345"}),
            json!({"kind": "drive", "vid": "xyzw"}),
            json!({"kind": "drive", "vid": 1234}),
            json!({"kind": "drive", "extra": 1}),
            json!({"kind": "drive", "vendor": "a\nb"}),
            json!({"kind": "drive", "product": "x".repeat(257)}),
        ] {
            assert!(identity(bad.clone()).is_err(), "{bad}");
        }
        assert!(identity(json!({"kind": "drive", "product": "é".repeat(256)})).is_ok());
    }

    #[test]
    fn sanitized_cuts_and_replaces_control_characters() {
        let d = DeviceIdentity {
            vendor: Some("a\u{7}b".into()),
            serial: Some("s".repeat(300)),
            ..DeviceIdentity::new(DeviceKind::Drive)
        }
        .sanitized();
        assert_eq!(d.vendor.as_deref(), Some("a?b"));
        assert_eq!(d.serial.map(|s| s.len()), Some(SENT_DEVICE_FIELD_CHARS));
    }

    #[test]
    fn a_lease_grant_is_flat_json() {
        let g = LeaseGrant {
            grant: Grant {
                lease_id: LeaseId::parse("42ba4590e0099b3647a3e3c56ffda1f6").unwrap(),
                desktop_id: DesktopId::parse("desk-01").unwrap(),
                expires_at: 1_795_561_395_787,
                heartbeat_interval_s: 10,
                display: Some(DisplayGrant {
                    protocol: DisplayProtocol::Spice,
                    host: "127.0.0.1".into(),
                    port: 5930,
                    password: "pw".into(),
                    tls: true,
                    host_subject: None,
                }),
            },
            usb: UsbEndpoint {
                url: "http://h/v1/leases/42ba4590e0099b3647a3e3c56ffda1f6/usb".into(),
                protocol: USB_PROTOCOL.into(),
            },
            reattached: false,
        };
        let v = serde_json::to_value(&g).unwrap();
        assert!(v.get("reattached").is_none(), "left out when false");
        assert_eq!(v["lease_id"], "42ba4590e0099b3647a3e3c56ffda1f6");
        assert_eq!(v["display"]["protocol"], "spice");
        assert_eq!(v["usb"]["protocol"], USB_PROTOCOL);
        assert_eq!(serde_json::from_value::<LeaseGrant>(v).unwrap(), g);
    }

    #[test]
    fn a_place_in_line_and_its_poll_query() {
        let s = QueueStanding {
            ticket_id: TicketId::from_random([0xab; 16]),
            position: 2,
            waiting: 3,
            waited_ms: 4_500,
            poll_interval_s: 2,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            json!({"ticket_id": "ab".repeat(16), "position": 2, "waiting": 3,
                   "waited_ms": 4_500, "poll_interval_s": 2})
        );
        assert_eq!(serde_json::from_value::<QueueStanding>(v).unwrap(), s);
        // `wait_s` defaults to an answer at once; nothing else is accepted.
        assert_eq!(
            serde_json::from_value::<QueuePoll>(json!({})).unwrap(),
            QueuePoll { wait_s: 0 }
        );
        assert!(serde_json::from_value::<QueuePoll>(json!({"wait": 3})).is_err());
        // A request that does not wait says nothing about it (as before the line existed).
        let plain = LeaseRequest {
            user: "dr-x".into(),
            wait: false,
        };
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            json!({"user": "dr-x"})
        );
        let waiting: LeaseRequest =
            serde_json::from_value(json!({"user": "dr-x", "wait": true})).unwrap();
        assert!(waiting.wait);
    }

    #[test]
    fn error_codes_are_snake_case_and_unknown_ones_still_parse() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::NoFreeDesktop,
            ErrorCode::UsbStreamOpen,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
        let b: ErrorBody =
            serde_json::from_value(json!({"error": "brand_new", "message": "m"})).unwrap();
        assert_eq!((b.error, b.retry_after_s), (ErrorCode::Unknown, None));
        let b: ErrorBody = serde_json::from_value(
            json!({"error": "no_free_desktop", "message": "m", "retry_after_s": 3}),
        )
        .unwrap();
        assert_eq!(
            (b.error, b.retry_after_s),
            (ErrorCode::NoFreeDesktop, Some(3))
        );
    }
}
