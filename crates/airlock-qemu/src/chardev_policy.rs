//! Which character devices a desktop's QEMU may have, and the check of QEMU's own
//! `query-chardev` answer against them. Pure: no I/O.
//!
//! A chardev is a data path between QEMU and the outside (a SPICE agent, a webdav
//! folder, a SPICE USB channel would each be one). [`crate::spec`] creates only unix
//! sockets in the run directory, all servers but the TPM emulator's control socket
//! (QEMU connects to swtpm): the broker's QMP monitor, the agent serial port,
//! the usb-redir stream and, with the test control channel, the control serial port and
//! a second QMP monitor. The broker checks at every start that QEMU has nothing else
//! (`Driver::check_chardevs`), so a desktop with another channel is never offered.
use crate::spec::{files, VmSpec};
use serde_json::Value;

/// One chardev the spec creates: its id and the socket (a name in the run directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedChardev {
    pub label: &'static str,
    pub socket: &'static str,
    /// QEMU listens on it (every channel but the TPM emulator's, which QEMU connects to).
    pub server: bool,
}

/// One entry of a `query-chardev` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chardev {
    pub label: String,
    pub filename: String,
}

/// The most entries a `query-chardev` answer may have before it is refused unread.
pub const MAX_CHARDEVS: usize = 64;
/// Longer labels or filenames are refused (and cut in messages).
const MAX_FIELD: usize = 512;

/// Why a desktop's chardevs are not the allowed ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChardevRefused {
    #[error("the query-chardev answer is malformed: {0}")]
    Malformed(String),
    #[error("unexpected chardev {label:?} ({filename:?}); allowed: {allowed}")]
    Unexpected {
        label: String,
        filename: String,
        allowed: String,
    },
    #[error(
        "chardev {label:?} is {filename:?}, not the unix socket {expected:?} in the run directory"
    )]
    WrongBackend {
        label: String,
        filename: String,
        expected: String,
    },
    #[error("chardev {0:?} is listed twice")]
    Duplicate(String),
}

/// The chardevs `spec.argv()` creates, in the order QEMU names them (`-qmp` monitors
/// are `compat_monitor0`, `compat_monitor1`, ... in command-line order).
pub fn allowed(spec: &VmSpec) -> Vec<AllowedChardev> {
    let mut v = vec![
        AllowedChardev {
            label: "compat_monitor0",
            socket: files::QMP,
            server: true,
        },
        AllowedChardev {
            label: "agent0",
            socket: files::AGENT,
            server: true,
        },
        AllowedChardev {
            label: "usbredir0",
            socket: files::USBREDIR,
            server: true,
        },
    ];
    if spec.shape.tpm.is_some() {
        v.push(AllowedChardev {
            label: crate::spec::TPM_CHARDEV,
            socket: files::SWTPM,
            server: false,
        });
    }
    if spec.control_channel {
        v.push(AllowedChardev {
            label: "control0",
            socket: files::CONTROL,
            server: true,
        });
        v.push(AllowedChardev {
            label: "compat_monitor1",
            socket: files::TEST_QMP,
            server: true,
        });
    }
    v
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Reads a `query-chardev` answer (an array of `{label, filename, frontend-open}`),
/// strictly and within bounds.
pub fn parse(answer: &Value) -> Result<Vec<Chardev>, ChardevRefused> {
    let malformed = |m: &str| ChardevRefused::Malformed(m.to_owned());
    let list = answer.as_array().ok_or_else(|| malformed("not a list"))?;
    if list.len() > MAX_CHARDEVS {
        return Err(ChardevRefused::Malformed(format!(
            "{} chardevs (at most {MAX_CHARDEVS} are read)",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let field = |name: &str| -> Result<String, ChardevRefused> {
            let v = entry
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| ChardevRefused::Malformed(format!("an entry has no {name}")))?;
            if v.len() > MAX_FIELD {
                return Err(ChardevRefused::Malformed(format!(
                    "{name} {:?}... is longer than {MAX_FIELD} bytes",
                    cut(v)
                )));
            }
            Ok(v.to_owned())
        };
        out.push(Chardev {
            label: field("label")?,
            filename: field("filename")?,
        });
    }
    Ok(out)
}

/// The unix socket path of a socket chardev's `filename` (`unix:PATH,server=on`, or
/// `disconnected:unix:PATH,server=on` while no client is connected; a client socket
/// without `,server=on`).
fn unix_socket_path(filename: &str, server: bool) -> Option<&str> {
    let rest = filename
        .strip_prefix("disconnected:")
        .unwrap_or(filename)
        .strip_prefix("unix:")?;
    let (path, opts) = rest.split_once(',').unwrap_or((rest, ""));
    // A listening socket is `server=on`, a client has no options; anything else is not
    // what the spec made.
    let expected = if server { "server=on" } else { "" };
    (opts == expected).then_some(path)
}

/// Checks `present` (from [`parse`]) against `allowed` (from [`allowed`]): every chardev
/// must be an allowed label on its own socket. Returns the labels, sorted (for the
/// proof of a clean start). A missing allowed chardev is not a data path and is not
/// refused here (the desktop's readiness probe needs the agent anyway).
pub fn check(
    allowed: &[AllowedChardev],
    present: &[Chardev],
) -> Result<Vec<String>, ChardevRefused> {
    let mut seen: Vec<String> = Vec::with_capacity(present.len());
    for c in present {
        if seen.iter().any(|l| l == &c.label) {
            return Err(ChardevRefused::Duplicate(cut(&c.label)));
        }
        let Some(a) = allowed.iter().find(|a| a.label == c.label) else {
            return Err(ChardevRefused::Unexpected {
                label: cut(&c.label),
                filename: cut(&c.filename),
                allowed: allowed
                    .iter()
                    .map(|a| a.label)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let path = unix_socket_path(&c.filename, a.server);
        // A connected client socket reports its own (unnamed) end: `unix:`.
        let client_connected = !a.server && path == Some("");
        if path != Some(a.socket) && !client_connected {
            return Err(ChardevRefused::WrongBackend {
                label: cut(&c.label),
                filename: cut(&c.filename),
                expected: a.socket.to_owned(),
            });
        }
        seen.push(c.label.clone());
    }
    seen.sort();
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::every_variant;
    use serde_json::json;

    /// What QEMU 7.2 answers for a desktop with the control channel (captured).
    fn answer_with_control() -> Value {
        json!([
            {"frontend-open": true, "filename": "disconnected:unix:test-qmp.sock,server=on", "label": "compat_monitor1"},
            {"frontend-open": true, "filename": "disconnected:unix:control.sock,server=on", "label": "control0"},
            {"frontend-open": true, "filename": "disconnected:unix:usbredir.sock,server=on", "label": "usbredir0"},
            {"frontend-open": true, "filename": "unix:agent.sock,server=on", "label": "agent0"},
            {"frontend-open": true, "filename": "unix:qmp.sock,server=on", "label": "compat_monitor0"}
        ])
    }

    fn with(control: bool) -> Vec<AllowedChardev> {
        let mut s = every_variant().remove(0);
        s.control_channel = control;
        allowed(&s)
    }

    #[test]
    fn the_tpm_socket_is_a_client_of_swtpm() {
        let mut s = every_variant().remove(0);
        s.control_channel = true;
        s.shape.tpm = Some("/usr/bin/swtpm".into());
        let allow = allowed(&s);
        let tpm = |filename: &str| {
            let mut v: Vec<Value> = answer_with_control().as_array().unwrap().clone();
            v.push(json!({"frontend-open": true, "filename": filename, "label": "tpmchr0"}));
            check(&allow, &parse(&Value::Array(v)).unwrap())
        };
        // Connected, QEMU names its own unnamed end; before that, the path.
        assert!(tpm("unix:").unwrap().contains(&"tpmchr0".to_owned()));
        assert!(tpm("disconnected:unix:swtpm.sock").is_ok());
        // A listening socket, or another path, is not what the spec made.
        assert!(tpm("unix:swtpm.sock,server=on").is_err());
        assert!(tpm("disconnected:unix:other.sock").is_err());
        assert!(tpm("file:swtpm.sock").is_err());
        // Without a TPM in the spec, the channel is refused.
        let mut v: Vec<Value> = answer_with_control().as_array().unwrap().clone();
        v.push(json!({"frontend-open": true, "filename": "unix:", "label": "tpmchr0"}));
        assert!(check(&with(true), &parse(&Value::Array(v)).unwrap()).is_err());
    }

    #[test]
    fn the_allow_list_is_what_the_spec_creates() {
        for s in every_variant() {
            let a = s.argv();
            let mut from_argv: Vec<(String, String)> = Vec::new();
            let mut monitors = 0;
            for w in a.windows(2) {
                match w[0].as_str() {
                    "-chardev" => {
                        let id = w[1]
                            .split(',')
                            .find_map(|o| o.strip_prefix("id="))
                            .unwrap()
                            .to_owned();
                        let path = w[1]
                            .split(',')
                            .find_map(|o| o.strip_prefix("path="))
                            .unwrap()
                            .to_owned();
                        from_argv.push((id, path));
                    }
                    "-qmp" => {
                        let path = w[1]
                            .strip_prefix("unix:")
                            .unwrap()
                            .split(',')
                            .next()
                            .unwrap();
                        from_argv.push((format!("compat_monitor{monitors}"), path.to_owned()));
                        monitors += 1;
                    }
                    _ => {}
                }
            }
            let mut listed: Vec<(String, String)> = allowed(&s)
                .into_iter()
                .map(|a| (a.label.to_owned(), a.socket.to_owned()))
                .collect();
            from_argv.sort();
            listed.sort();
            assert_eq!(from_argv, listed);
        }
    }

    #[test]
    fn qemus_own_answer_passes() {
        let present = parse(&answer_with_control()).unwrap();
        assert_eq!(
            check(&with(true), &present).unwrap(),
            [
                "agent0",
                "compat_monitor0",
                "compat_monitor1",
                "control0",
                "usbredir0"
            ]
        );
        // Without the control channel, its two chardevs are refused.
        let e = check(&with(false), &present).unwrap_err();
        assert!(
            matches!(&e, ChardevRefused::Unexpected { label, .. } if label == "compat_monitor1"),
            "{e}"
        );
        // A connected socket's filename is accepted too; fewer chardevs are not refused.
        let present = parse(&json!([
            {"label": "usbredir0", "filename": "unix:usbredir.sock,server=on", "frontend-open": true}
        ]))
        .unwrap();
        assert_eq!(check(&with(false), &present).unwrap(), ["usbredir0"]);
        assert!(check(&with(false), &[]).unwrap().is_empty());
    }

    #[test]
    fn spice_agent_webdav_and_usb_channels_are_refused() {
        let base = answer_with_control();
        for (label, filename) in [
            ("vdagent", "spicevmc"),
            ("charchannel0", "spicevmc"),
            ("qemu-vdagent0", "qemu-vdagent"),
            ("webdav", "spiceport"),
            ("usbredirchardev1", "spicevmc"),
            ("serial1", "pty:/dev/pts/3"),
            ("net0", "tcp:0.0.0.0:4444,server=on"),
        ] {
            let mut v = base.as_array().unwrap().clone();
            v.push(json!({"label": label, "filename": filename, "frontend-open": true}));
            let present = parse(&Value::Array(v)).unwrap();
            let e = check(&with(true), &present).unwrap_err();
            match &e {
                ChardevRefused::Unexpected { label: l, .. } => assert_eq!(l, label),
                other => panic!("{other}"),
            }
            // The message names the chardev and what is allowed.
            let m = e.to_string();
            assert!(m.contains(label) && m.contains("agent0"), "{m}");
        }
    }

    #[test]
    fn an_allowed_label_on_another_backend_is_refused() {
        for (label, filename) in [
            ("agent0", "spicevmc"),
            ("usbredir0", "unix:/elsewhere/usbredir.sock,server=on"),
            ("usbredir0", "unix:agent.sock,server=on"),
            ("agent0", "unix:agent.sock"),
            ("agent0", "unix:agent.sock,server=on,extra"),
            ("compat_monitor0", "tcp:127.0.0.1:4444,server=on"),
            ("agent0", "disconnected:tcp:agent.sock,server=on"),
            ("agent0", ""),
        ] {
            let present = vec![Chardev {
                label: label.into(),
                filename: filename.into(),
            }];
            let e = check(&with(true), &present).unwrap_err();
            assert!(
                matches!(&e, ChardevRefused::WrongBackend { label: l, .. } if l == label),
                "{label} {filename}: {e}"
            );
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let c = Chardev {
            label: "agent0".into(),
            filename: "unix:agent.sock,server=on".into(),
        };
        assert_eq!(
            check(&with(false), &[c.clone(), c]).unwrap_err(),
            ChardevRefused::Duplicate("agent0".into())
        );
    }

    #[test]
    fn malformed_answers_are_refused() {
        for bad in [
            json!({}),
            json!("agent0"),
            json!(null),
            json!([1]),
            json!([{"label": "agent0"}]),
            json!([{"filename": "unix:agent.sock,server=on"}]),
            json!([{"label": 5, "filename": "x"}]),
            json!([{"label": "x".repeat(MAX_FIELD + 1), "filename": "x"}]),
            Value::Array(vec![
                json!({"label": "a", "filename": "b"});
                MAX_CHARDEVS + 1
            ]),
        ] {
            assert!(
                matches!(parse(&bad), Err(ChardevRefused::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn messages_are_bounded() {
        let long = "v".repeat(MAX_FIELD);
        let present = vec![Chardev {
            label: long.clone(),
            filename: long,
        }];
        let m = check(&with(false), &present).unwrap_err().to_string();
        assert!(m.len() < 400, "{m}");
    }
}
