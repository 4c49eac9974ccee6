//! The terminal's configuration for `airlock open`: `/etc/airlock/terminal.toml` (or
//! `--config FILE`), then the command-line flags, which override it. Everything is checked
//! here, before anything is sent: each error names the key (or flag) and what to do.
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_core::UserName;
use airlock_usb::drive::DriveSelector;
use airlock_usb::source::Source;
use airlock_usb::transport::{BrokerUrl, Token, TrustRoots};
use serde::Deserialize;

/// Where the terminal's configuration lives unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/airlock/terminal.toml";

/// How long `airlock open` waits for a desktop unless configured.
pub const DEFAULT_WAIT_S: u64 = 300;

use airlock_core::config_key::invalid;
pub use airlock_core::config_key::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    broker: RawBroker,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    display: RawDisplay,
    #[serde(default)]
    drive: RawDrive,
    #[serde(default)]
    capture: RawCapture,
}

/// `[capture]`: where `airlock capture` saves the key images (the folder the site's EHR
/// imports from), the viewer that shows one before it is sent, and whether `--send`
/// asks first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    folder: Option<PathBuf>,
    /// A program and its arguments; the PNG's path is added.
    viewer: Option<Vec<String>>,
    #[serde(default)]
    confirm: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    user: Option<String>,
    wait_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisplay {
    client: Option<PathBuf>,
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrive {
    device: Option<String>,
    iso: Option<PathBuf>,
    /// Forward a real drive even when the terminal guard is not in place (the site
    /// accepts the risk; every such session is audited as a security alert).
    #[serde(default)]
    allow_unguarded: bool,
}

/// How the display client shows the desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DisplayMode {
    /// Full screen with every way out of it removed; the viewer quits when the desktop
    /// disconnects (`remote-viewer --kiosk --kiosk-quit on-disconnect`).
    Kiosk,
    /// Full screen (the default).
    Fullscreen,
    /// An ordinary window.
    Window,
}

impl DisplayMode {
    fn parse(s: &str) -> Option<DisplayMode> {
        match s {
            "kiosk" => Some(DisplayMode::Kiosk),
            "fullscreen" => Some(DisplayMode::Fullscreen),
            "window" => Some(DisplayMode::Window),
            _ => None,
        }
    }
}

/// The display client to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayChoice {
    /// The program (`remote-viewer` unless configured).
    pub client: PathBuf,
    pub mode: DisplayMode,
}

/// What the command line may override.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub broker: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub user: Option<String>,
    pub wait_s: Option<u64>,
    pub device: Option<DriveSelector>,
    pub iso: Option<PathBuf>,
    pub no_display: bool,
    pub display_mode: Option<DisplayMode>,
    pub display_client: Option<PathBuf>,
    /// The system whose guard is checked (`--guard-root`, tests); default `/`.
    pub guard_root: Option<PathBuf>,
    /// The patient from the HIS (`--patient-id` and the fields that go with it).
    pub patient: Option<airlock_core::wire::PatientRequest>,
    /// Where captures are saved (`--out`, overrides capture.folder).
    pub capture_folder: Option<PathBuf>,
}

/// Everything `airlock open` needs, checked.
#[derive(Debug)]
pub struct OpenConfig {
    pub broker: BrokerUrl,
    pub token: Token,
    pub trust: TrustRoots,
    /// The CA certificates (PEM) the display client must trust, when the site has its
    /// own CA.
    pub ca_pem: Option<String>,
    pub user: UserName,
    /// How long to wait in line; zero: do not wait.
    pub wait: Duration,
    /// `None` with `--no-display`.
    pub display: Option<DisplayChoice>,
    /// The drive (or disc image) to forward.
    pub source: Source,
    /// The terminal guard's check before a real drive is forwarded.
    pub guard: GuardCheck,
    /// The patient the session's captures belong to (checked by its DICOM types).
    pub patient: Option<airlock_core::wire::PatientRequest>,
    /// Where `airlock capture` saves key images.
    pub capture_folder: PathBuf,
    /// The program (and its arguments) that shows a capture before it is sent; the
    /// PNG's path is added.
    pub capture_viewer: Option<Vec<String>>,
    /// `capture.confirm`: `airlock capture --send` shows the capture and asks first.
    pub capture_confirm: bool,
}

/// How `airlock open` checks the terminal guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardCheck {
    /// The system whose guard is checked (`/`; `--guard-root` for tests).
    pub root: PathBuf,
    /// `drive.allow_unguarded`: forward a real drive from an unguarded terminal (audited).
    pub allow_unguarded: bool,
}

/// A file that holds a secret must be readable by its owner only (and owned by the user
/// running `airlock`, or by root).
fn check_private(path: &Path, key: &'static str) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        what: "the file of",
        path: path.to_path_buf(),
        source,
    })?;
    let me = rustix::process::getuid().as_raw();
    if meta.mode() & 0o077 != 0 {
        return Err(invalid(
            key,
            format!(
                "{} holds the terminal token but others can read it (mode {:o})",
                path.display(),
                meta.mode() & 0o777
            ),
            format!("run `chmod 600 {}`", path.display()),
        ));
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(invalid(
            key,
            format!(
                "{} holds the terminal token but belongs to uid {}",
                path.display(),
                meta.uid()
            ),
            "make it belong to the user that runs airlock (or root), mode 600",
        ));
    }
    Ok(())
}

fn read_to_string(what: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Where captures go unless configured: `$XDG_DATA_HOME/airlock/captures`, else
/// `~/.local/share/airlock/captures`, else `./airlock-captures`.
fn default_capture_folder() -> PathBuf {
    let env = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_DATA_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".local/share")))
        .map(|d| d.join("airlock/captures"))
        .unwrap_or_else(|| PathBuf::from("airlock-captures"))
}

/// `capture.viewer`: a program (a name looked up on PATH, or an absolute path) and its
/// arguments, none empty.
fn capture_viewer(v: Option<Vec<String>>) -> Result<Option<Vec<String>>, ConfigError> {
    const FIX: &str = "give the program and its arguments, e.g. viewer = [\"eog\"] or [\"/usr/bin/feh\", \"--scale-down\"]; the PNG's path is added at the end";
    let Some(v) = v else { return Ok(None) };
    let Some(program) = v.first() else {
        return Err(invalid("capture.viewer", "is empty", FIX));
    };
    if v.iter().any(|a| a.is_empty() || a.contains('\0')) {
        return Err(invalid(
            "capture.viewer",
            "has an empty argument (or a NUL character)",
            FIX,
        ));
    }
    if program.contains('/') && !program.starts_with('/') {
        return Err(invalid(
            "capture.viewer",
            format!("{program:?} is a relative path"),
            "give a program name found on PATH or an absolute path",
        ));
    }
    Ok(Some(v))
}

/// The login name of the user running `airlock` (`LOGNAME`, then `USER`).
fn os_login() -> Option<String> {
    ["LOGNAME", "USER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

impl OpenConfig {
    /// Reads the config file (the default one only if it exists) and applies `o`.
    pub fn load(o: &Overrides) -> Result<OpenConfig, ConfigError> {
        let (path, required) = match &o.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let raw = if required || path.exists() {
            let text = read_to_string("the terminal configuration", &path)?;
            let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.clone(),
                message: e.message().to_string(),
            })?;
            if raw.broker.token.is_some() {
                check_private(&path, "broker.token")?;
            }
            raw
        } else {
            RawConfig::default()
        };
        Self::from_raw(raw, o)
    }

    fn from_raw(raw: RawConfig, o: &Overrides) -> Result<OpenConfig, ConfigError> {
        let url = o.broker.clone().or(raw.broker.url).ok_or_else(|| {
            invalid(
                "broker.url",
                "no broker is configured",
                format!("set [broker] url in {DEFAULT_PATH} or pass --broker https://HOST:PORT"),
            )
        })?;
        let broker: BrokerUrl =
            url.parse()
                .map_err(|e: airlock_usb::transport::TransportError| {
                    invalid("broker.url", e.to_string(), "write it as https://HOST:PORT")
                })?;
        let token_text = match (&o.token_file, &raw.broker.token_file, raw.broker.token) {
            (Some(f), _, _) | (None, Some(f), _) => {
                check_private(f, "broker.token_file")?;
                read_to_string("the token file", f)?
            }
            (None, None, Some(t)) => t,
            (None, None, None) => std::env::var("AIRLOCK_TOKEN").map_err(|_| {
                invalid(
                    "broker.token_file",
                    "no terminal token",
                    "set [broker] token_file (mode 600), pass --token-file FILE or set AIRLOCK_TOKEN",
                )
            })?,
        };
        let token = Token::parse(&token_text).map_err(|e| {
            invalid(
                "broker.token",
                e.to_string(),
                "put the token the broker's admin gave this terminal in the token file",
            )
        })?;
        let ca_file = o.ca_file.clone().or(raw.broker.ca_file);
        let (trust, ca_pem) = match ca_file {
            Some(f) => {
                let pem = read_to_string("the CA certificate file", &f)?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        "broker.ca_file",
                        format!("{} holds no PEM certificate", f.display()),
                        "give the site CA's certificate in PEM form",
                    ));
                }
                (TrustRoots::CaFile(f), Some(pem))
            }
            None => (TrustRoots::WebPki, None),
        };
        let user_text = o
            .user
            .clone()
            .or(raw.session.user)
            .or_else(os_login)
            .ok_or_else(|| {
                invalid(
                    "session.user",
                    "no user name (LOGNAME and USER are not set)",
                    "set [session] user or pass --user NAME",
                )
            })?;
        let user = UserName::parse(&user_text).map_err(|e| {
            invalid(
                "session.user",
                e.to_string(),
                "give the clinician's login name",
            )
        })?;
        let wait = Duration::from_secs(o.wait_s.or(raw.session.wait_s).unwrap_or(DEFAULT_WAIT_S));
        let display = if o.no_display {
            None
        } else {
            let mode = match (o.display_mode, raw.display.mode.as_deref()) {
                (Some(m), _) => m,
                (None, Some(text)) => DisplayMode::parse(text).ok_or_else(|| {
                    invalid(
                        "display.mode",
                        format!("{text:?} is not a display mode"),
                        "use \"kiosk\", \"fullscreen\" or \"window\"",
                    )
                })?,
                (None, None) => DisplayMode::Fullscreen,
            };
            let client = o
                .display_client
                .clone()
                .or(raw.display.client)
                .unwrap_or_else(|| PathBuf::from("remote-viewer"));
            Some(DisplayChoice { client, mode })
        };
        let allow_unguarded = raw.drive.allow_unguarded;
        let source = match (&o.iso, &o.device) {
            (Some(iso), _) => Source::Iso(iso.clone()),
            (None, Some(sel)) => Source::Drive(*sel),
            (None, None) => match (raw.drive.iso, raw.drive.device) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "drive",
                        "both `iso` and `device` are set",
                        "keep one: a drive (`device = \"auto\"` or \"VID:PID\") or a disc image (`iso`)",
                    ))
                }
                (Some(iso), None) => Source::Iso(iso),
                (None, device) => {
                    let text = device.unwrap_or_else(|| "auto".into());
                    Source::Drive(text.parse().map_err(|e: String| {
                        invalid("drive.device", e, "use \"auto\" or VID:PID in hex")
                    })?)
                }
            },
        };
        let patient = match &o.patient {
            Some(p) => {
                p.check().map_err(|e| {
                    invalid(
                        "--patient-id",
                        format!("the patient from the HIS: {e}"),
                        "check what the HIS passes to airlock open",
                    )
                })?;
                Some(p.clone())
            }
            None => None,
        };
        let capture_folder = o
            .capture_folder
            .clone()
            .or(raw.capture.folder)
            .unwrap_or_else(default_capture_folder);
        let capture_viewer = capture_viewer(raw.capture.viewer)?;
        if raw.capture.confirm && capture_viewer.is_none() {
            return Err(invalid(
                "capture.confirm",
                "is true but capture.viewer is not set",
                "set [capture] viewer (e.g. viewer = [\"eog\"]) to show the capture before it is sent",
            ));
        }
        Ok(OpenConfig {
            broker,
            token,
            trust,
            ca_pem,
            user,
            wait,
            display,
            source,
            guard: GuardCheck {
                root: o.guard_root.clone().unwrap_or_else(|| PathBuf::from("/")),
                allow_unguarded,
            },
            patient,
            capture_folder,
            capture_viewer,
            capture_confirm: raw.capture.confirm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn raw(text: &str) -> RawConfig {
        toml::from_str(text).unwrap()
    }

    fn overrides() -> Overrides {
        Overrides {
            user: Some("dr-test".into()),
            ..Overrides::default()
        }
    }

    fn err(text: &str, o: &Overrides) -> String {
        OpenConfig::from_raw(raw(text), o).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let c = OpenConfig::from_raw(
            raw("[broker]\nurl = \"https://broker.example:7443\"\ntoken = \"t0k\"\n"),
            &overrides(),
        )
        .unwrap();
        assert_eq!(c.broker.to_string(), "https://broker.example:7443");
        assert_eq!(c.user.as_str(), "dr-test");
        assert_eq!(c.wait, Duration::from_secs(DEFAULT_WAIT_S));
        assert_eq!(
            c.display,
            Some(DisplayChoice {
                client: "remote-viewer".into(),
                mode: DisplayMode::Fullscreen
            })
        );
        assert!(matches!(c.source, Source::Drive(DriveSelector::Auto)));
        assert!(matches!(c.trust, TrustRoots::WebPki));
    }

    #[test]
    fn flags_override_the_file() {
        let o = Overrides {
            broker: Some("http://127.0.0.1:7480".into()),
            wait_s: Some(0),
            iso: Some("/d.iso".into()),
            no_display: true,
            ..overrides()
        };
        let c = OpenConfig::from_raw(
            raw("[broker]\nurl = \"https://x\"\ntoken = \"t\"\n[session]\nwait_s = 9\n[display]\nmode = \"kiosk\"\n[drive]\ndevice = \"0e8d:1887\"\n"),
            &o,
        )
        .unwrap();
        assert_eq!(c.broker.to_string(), "http://127.0.0.1:7480");
        assert_eq!(c.wait, Duration::ZERO);
        assert!(c.display.is_none());
        assert!(matches!(c.source, Source::Iso(ref p) if p == Path::new("/d.iso")));
    }

    #[test]
    fn every_mistake_names_its_key_and_the_fix() {
        let o = overrides();
        for (text, key) in [
            ("", "broker.url"),
            ("[broker]\nurl = \"ftp://x\"\ntoken = \"t\"", "broker.url"),
            ("[broker]\nurl = \"https://x\"\ntoken = \"a b\"", "broker.token"),
            (
                "[broker]\nurl = \"https://x\"\ntoken = \"t\"\n[display]\nmode = \"big\"",
                "display.mode",
            ),
            (
                "[broker]\nurl = \"https://x\"\ntoken = \"t\"\n[drive]\ndevice = \"usb\"",
                "drive.device",
            ),
            (
                "[broker]\nurl = \"https://x\"\ntoken = \"t\"\n[drive]\ndevice = \"auto\"\niso = \"/a\"",
                "drive",
            ),
            (
                "[broker]\nurl = \"https://x\"\ntoken = \"t\"\nca_file = \"/nonexistent/ca.pem\"",
                "CA certificate file",
            ),
        ] {
            let e = err(text, &o);
            assert!(e.contains(key), "{text:?}: {e}");
        }
        let e = err(
            "[broker]\nurl = \"https://x\"\ntoken = \"t\"",
            &Overrides::default(),
        );
        assert!(e.contains("session.user") || !e.is_empty());
        assert!(toml::from_str::<RawConfig>("[broker]\nurll = 1").is_err());
    }

    #[test]
    fn the_capture_viewer_is_checked_at_load() {
        let base = "[broker]\nurl = \"https://x\"\ntoken = \"t\"\n[capture]\n";
        let c = OpenConfig::from_raw(raw(base), &overrides()).unwrap();
        assert_eq!((c.capture_viewer, c.capture_confirm), (None, false));
        let c = OpenConfig::from_raw(
            raw(&format!(
                "{base}viewer = [\"feh\", \"--scale-down\"]\nconfirm = true\n"
            )),
            &overrides(),
        )
        .unwrap();
        assert_eq!(
            c.capture_viewer,
            Some(vec!["feh".to_owned(), "--scale-down".to_owned()])
        );
        assert!(c.capture_confirm);
        for (text, says) in [
            ("viewer = []", "is empty"),
            ("viewer = [\"\"]", "empty argument"),
            ("viewer = [\"eog\", \"\"]", "empty argument"),
            ("viewer = [\"bin/eog\"]", "relative path"),
            ("confirm = true", "capture.viewer is not set"),
        ] {
            let e = err(&format!("{base}{text}\n"), &overrides());
            assert!(e.contains("capture.") && e.contains(says), "{text}: {e}");
        }
        assert!(toml::from_str::<RawConfig>("[capture]\nviewer = \"eog\"").is_err());
    }

    /// Writes `text` to `dir/name` with permissions `mode`; its path.
    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        chmod(&path, mode);
        path
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path(), "token", "secret\n", 0o644);
        let o = Overrides {
            token_file: Some(f.clone()),
            ..overrides()
        };
        let e = err("[broker]\nurl = \"https://x\"", &o);
        assert!(e.contains("chmod 600"), "{e}");
        chmod(&f, 0o600);
        assert!(OpenConfig::from_raw(raw("[broker]\nurl = \"https://x\""), &o).is_ok());
        // A config file with the token inline is held to the same rule.
        let inline = "[broker]\nurl = \"https://x\"\ntoken = \"t\"\n";
        let cfg = file(dir.path(), "terminal.toml", inline, 0o640);
        let o = Overrides {
            config: Some(cfg.clone()),
            ..overrides()
        };
        assert!(OpenConfig::load(&o)
            .unwrap_err()
            .to_string()
            .contains("broker.token"));
        chmod(&cfg, 0o600);
        assert!(OpenConfig::load(&o).is_ok());
    }
}
