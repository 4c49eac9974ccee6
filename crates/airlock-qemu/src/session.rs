//! What QEMU's events say about a desktop's session: the guest powered itself off, a
//! display client finished connecting, or one left. The pool turns these into lease
//! ends (`signed_out`, `display_lost`).
//!
//! SPICE sends `SPICE_INITIALIZED` once per channel a client opens (the data names the
//! channel type: 1 is the main channel, the one every client holds for its whole
//! session) but `SPICE_DISCONNECTED` without saying which channel closed, so whether a
//! client is still there is asked with `query-spice` (its `channels` list holds the
//! channels that completed their handshake). VNC has one connection per client:
//! `VNC_INITIALIZED` after authentication, `VNC_DISCONNECTED`, and `query-vnc` lists
//! the clients.
use crate::qmp::{Qmp, QmpError, QmpEvent};
use crate::spec::DisplayProtocol;
use serde_json::Value;
use std::time::Duration;

/// The SPICE channel type of the main channel.
const SPICE_MAIN_CHANNEL: u64 = 1;

/// What one QMP event means for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The guest powered itself off (`SHUTDOWN` with `guest: true`); `reason` is QEMU's
    /// (`guest-shutdown`, ...).
    GuestShutdown { reason: String },
    /// A display client finished connecting (SPICE main channel, or a VNC client).
    DisplayConnected,
    /// A display connection closed; whether a client is left is for
    /// [`display_client_present`] to say.
    DisplayConnectionClosed,
    /// The desktop's disk file grew past its cap (`BLOCK_WRITE_THRESHOLD` on the
    /// disk's file node); `written` is how far the write reached, in bytes.
    DiskCapReached { written: u64 },
    /// Nothing the session cares about.
    Other,
}

/// Classifies a QMP event of a desktop whose display uses `protocol` (`None`: no
/// display).
pub fn classify(ev: &QmpEvent, protocol: Option<DisplayProtocol>) -> SessionEvent {
    let spice = protocol == Some(DisplayProtocol::Spice);
    let vnc = protocol == Some(DisplayProtocol::Vnc);
    match ev.name.as_str() {
        "SHUTDOWN" if ev.data.get("guest").and_then(Value::as_bool) == Some(true) => {
            SessionEvent::GuestShutdown {
                reason: ev
                    .data
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
            }
        }
        "SPICE_INITIALIZED" if spice => {
            let channel = ev
                .data
                .get("client")
                .and_then(|c| c.get("channel-type"))
                .and_then(Value::as_u64);
            if channel == Some(SPICE_MAIN_CHANNEL) {
                SessionEvent::DisplayConnected
            } else {
                SessionEvent::Other
            }
        }
        "BLOCK_WRITE_THRESHOLD"
            if ev.data.get("node-name").and_then(Value::as_str)
                == Some(crate::spec::DISK_FILE_NODE) =>
        {
            let n = |k| ev.data.get(k).and_then(Value::as_u64).unwrap_or(0);
            SessionEvent::DiskCapReached {
                written: n("write-threshold").saturating_add(n("amount-exceeded")),
            }
        }
        "VNC_INITIALIZED" if vnc => SessionEvent::DisplayConnected,
        "SPICE_DISCONNECTED" if spice => SessionEvent::DisplayConnectionClosed,
        "VNC_DISCONNECTED" if vnc => SessionEvent::DisplayConnectionClosed,
        _ => SessionEvent::Other,
    }
}

/// Whether a `query-spice` or `query-vnc` answer lists a connected client (for SPICE:
/// a main channel).
fn lists_client(protocol: DisplayProtocol, answer: &Value) -> bool {
    match protocol {
        DisplayProtocol::Spice => answer
            .get("channels")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter().any(|ch| {
                    ch.get("channel-type").and_then(Value::as_u64) == Some(SPICE_MAIN_CHANNEL)
                })
            }),
        DisplayProtocol::Vnc => answer
            .get("clients")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty()),
    }
}

/// Whether a display client is connected now (`query-spice` / `query-vnc`).
pub async fn display_client_present(
    qmp: &Qmp,
    protocol: DisplayProtocol,
) -> Result<bool, QmpError> {
    let command = match protocol {
        DisplayProtocol::Spice => "query-spice",
        DisplayProtocol::Vnc => "query-vnc",
    };
    let answer = qmp.execute(command, None, Duration::from_secs(5)).await?;
    Ok(lists_client(protocol, &answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(name: &str, data: Value) -> QmpEvent {
        QmpEvent {
            name: name.into(),
            data,
        }
    }

    // Event data as QEMU 7.2 sends it for a client on the display's unix socket.
    fn client(channel_type: Option<u64>) -> Value {
        let mut c = json!({"port": "", "family": "unix", "host": "localhost"});
        if let Some(t) = channel_type {
            c["channel-type"] = json!(t);
            c["channel-id"] = json!(0);
            c["connection-id"] = json!(-1532459643);
            c["tls"] = json!(false);
        }
        json!({"server": {"port": "/s/display.sock", "family": "unix", "host": "localhost"}, "client": c})
    }

    #[test]
    fn events() {
        let spice = Some(DisplayProtocol::Spice);
        assert_eq!(
            classify(
                &ev(
                    "SHUTDOWN",
                    json!({"guest": true, "reason": "guest-shutdown"})
                ),
                spice
            ),
            SessionEvent::GuestShutdown {
                reason: "guest-shutdown".into()
            }
        );
        // The host's own signal or a QMP `quit` is not the guest signing out.
        assert_eq!(
            classify(
                &ev("SHUTDOWN", json!({"guest": false, "reason": "host-signal"})),
                spice
            ),
            SessionEvent::Other
        );
        assert_eq!(
            classify(&ev("SPICE_INITIALIZED", client(Some(1))), spice),
            SessionEvent::DisplayConnected
        );
        assert_eq!(
            classify(&ev("SPICE_INITIALIZED", client(Some(3))), spice),
            SessionEvent::Other,
            "the inputs channel is not a session of its own"
        );
        assert_eq!(
            classify(&ev("SPICE_CONNECTED", client(None)), spice),
            SessionEvent::Other,
            "connected is before authentication"
        );
        assert_eq!(
            classify(&ev("SPICE_DISCONNECTED", client(None)), spice),
            SessionEvent::DisplayConnectionClosed
        );
        assert_eq!(
            classify(&ev("SPICE_DISCONNECTED", client(None)), None),
            SessionEvent::Other
        );
        let vnc = Some(DisplayProtocol::Vnc);
        assert_eq!(
            classify(&ev("VNC_INITIALIZED", json!({})), vnc),
            SessionEvent::DisplayConnected
        );
        assert_eq!(
            classify(&ev("VNC_DISCONNECTED", json!({})), vnc),
            SessionEvent::DisplayConnectionClosed
        );
        assert_eq!(
            classify(&ev("RESET", json!({"guest": true})), spice),
            SessionEvent::Other
        );
        assert_eq!(
            classify(
                &ev(
                    "BLOCK_WRITE_THRESHOLD",
                    json!({"node-name": "disk0-file", "amount-exceeded": 4096, "write-threshold": 1048576})
                ),
                None
            ),
            SessionEvent::DiskCapReached { written: 1052672 }
        );
        assert_eq!(
            classify(
                &ev(
                    "BLOCK_WRITE_THRESHOLD",
                    json!({"node-name": "other", "amount-exceeded": 1, "write-threshold": 1})
                ),
                None
            ),
            SessionEvent::Other,
            "only the writable disk's file has a cap"
        );
    }

    #[test]
    fn clients_in_query_answers() {
        let with =
            |t: u64| json!({"enabled": true, "channels": [{"channel-type": t, "channel-id": 0}]});
        assert!(lists_client(DisplayProtocol::Spice, &with(1)));
        assert!(!lists_client(DisplayProtocol::Spice, &with(3)));
        assert!(!lists_client(
            DisplayProtocol::Spice,
            &json!({"enabled": true, "channels": []})
        ));
        assert!(!lists_client(DisplayProtocol::Spice, &json!({})));
        assert!(lists_client(
            DisplayProtocol::Vnc,
            &json!({"clients": [{"host": "localhost"}]})
        ));
        assert!(!lists_client(DisplayProtocol::Vnc, &json!({"clients": []})));
    }
}
