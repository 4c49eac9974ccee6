//! `airlock`: the Airlock terminal CLI.
//!
//! ```text
//! airlock open [--config FILE] [--iso FILE | --device auto|VID:PID] [--no-display] [--wait S]
//! airlock usb list
//! airlock usb forward --broker URL --lease ID (--device auto|VID:PID | --iso FILE)
//!                     [--token-file F | env AIRLOCK_TOKEN] [--ca-file PEM]
//! airlock usb forward --to unix:PATH (--device ... | --iso FILE)
//! airlock capture [--send [--no-confirm] | --confirm] [--crop X,Y,W,H] [--out DIR] [--lease ID]
//! airlock capture --send-only N
//! airlock guard status|install|uninstall [--root DIR]
//! airlock guard windows-policy --out DIR
//! ```
//!
//! The USB logic lives in the `airlock-usb` library; this binary parses arguments and
//! the terminal's configuration, talks to the broker, starts the display client, prints,
//! and maps errors to advice and exit codes.
#![forbid(unsafe_code)]

mod capture;
mod guard;
mod open;
mod session_file;
mod usb;

use std::io::IsTerminal as _;
use std::path::PathBuf;

use airlock_usb::drive::{DriveError, DriveSelector};
use airlock_usb::source::PrepareError;
use airlock_usb::transport::TransportError;
use clap::{Args, Parser, Subcommand};

/// Airlock terminal: hands a USB CD/DVD drive to a disposable desktop.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about)]
struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open a desktop with this terminal's drive in it: the clinician's one action.
    ///
    /// Exit codes: 0 the session ended normally; 3 configuration; 4 no free desktop (or
    /// none within --wait); 5 broker unreachable or lost; 6 display client failed;
    /// 7 drive problem; 8 the terminal is not guarded (a real drive is not forwarded);
    /// 2 usage.
    Open(OpenArgs),
    /// Take a key image of the open desktop (pixels only), save it as PNG, and with
    /// --send store it in the PACS as a DICOM Secondary Capture for the session's
    /// patient; with --confirm show it first and send it only if answered yes.
    ///
    /// Exit codes: 0 done (also when the answer was no); 3 configuration; 5 broker
    /// unreachable; 9 the capture or the send failed, or the viewer could not show it
    /// (the message says why; nothing half-sent); 2 usage (also: asked to confirm
    /// without a terminal).
    Capture(capture::CaptureArgs),
    /// USB optical drives.
    #[command(subcommand)]
    Usb(UsbCommand),
    /// The terminal guard: this terminal never gets a driver for the drive, never mounts
    /// or parses a disc, and still forwards the drive (exit 8: not guarded).
    #[command(subcommand)]
    Guard(guard::GuardCommand),
}

/// Where the terminal's configuration is and what on the command line overrides its
/// broker settings (`airlock open`, `airlock capture`).
#[derive(Debug, Args)]
pub(crate) struct TerminalArgs {
    /// The terminal configuration [default: /etc/airlock/terminal.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Broker base URL, e.g. https://broker.example:7443 (overrides broker.url).
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// File with this terminal's token, mode 600 (overrides broker.token_file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The site CA (PEM) the broker's certificate is signed by (overrides broker.ca_file).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct OpenArgs {
    #[command(flatten)]
    terminal: TerminalArgs,
    /// The user name sent to the broker [default: session.user, else the login name].
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// How long to wait in line when no desktop is free; 0: do not wait
    /// [default: session.wait_s, else 300].
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
    /// Forward an emulated drive with this disc image instead of a real drive.
    #[arg(long, value_name = "FILE", conflicts_with = "device")]
    iso: Option<PathBuf>,
    /// Which drive: `auto` (the only one) or VID:PID in hex (overrides drive.device).
    #[arg(long, value_name = "auto|VID:PID")]
    device: Option<DriveSelector>,
    /// Do not start a display client (headless use, tests).
    #[arg(long)]
    no_display: bool,
    /// How the display client shows the desktop (overrides display.mode).
    #[arg(long, value_enum, value_name = "MODE")]
    display_mode: Option<open::config::DisplayMode>,
    /// The display client program (overrides display.client) [default: remote-viewer].
    #[arg(long, value_name = "PROGRAM")]
    display_client: Option<PathBuf>,
    /// Check the guard of the system under DIR instead of `/` (tests).
    #[arg(long, value_name = "DIR", hide = true)]
    guard_root: Option<PathBuf>,
    #[command(flatten)]
    patient: PatientArgs,
}

/// The patient from the HIS (how an HIS button or URL handler starts `airlock open`).
/// Key images of the session are filed under this patient; the disc is never asked.
#[derive(Debug, Args)]
struct PatientArgs {
    /// The patient's ID in the HIS.
    #[arg(long, value_name = "ID")]
    patient_id: Option<String>,
    /// The order's accession number.
    #[arg(long, value_name = "N", requires = "patient_id")]
    accession: Option<String>,
    /// The patient's name in DICOM notation (Family^Given, with =ideographic=phonetic
    /// groups), when the HIS gives it; else the worklist's.
    #[arg(long, value_name = "PN", requires = "patient_id")]
    patient_name: Option<String>,
    /// Birth date, YYYYMMDD.
    #[arg(long, value_name = "YYYYMMDD", requires = "patient_id")]
    birth_date: Option<String>,
    /// Sex: M, F or O.
    #[arg(long, value_name = "M|F|O", requires = "patient_id")]
    sex: Option<String>,
    /// Issuer of the patient ID, where the site has several.
    #[arg(long, value_name = "ISSUER", requires = "patient_id")]
    issuer: Option<String>,
}

impl PatientArgs {
    fn request(self) -> Option<airlock_core::wire::PatientRequest> {
        Some(airlock_core::wire::PatientRequest {
            patient_id: self.patient_id?,
            issuer: self.issuer,
            name: self.patient_name,
            birth_date: self.birth_date,
            sex: self.sex,
            accession: self.accession,
        })
    }
}

impl OpenArgs {
    fn overrides(self) -> open::config::Overrides {
        open::config::Overrides {
            config: self.terminal.config,
            broker: self.terminal.broker,
            token_file: self.terminal.token_file,
            ca_file: self.terminal.ca_file,
            user: self.user,
            wait_s: self.wait,
            device: self.device,
            iso: self.iso,
            no_display: self.no_display,
            display_mode: self.display_mode,
            display_client: self.display_client,
            guard_root: self.guard_root,
            patient: self.patient.request(),
            capture_folder: None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum UsbCommand {
    /// List USB optical drives and whether they may be forwarded (runs one
    /// INQUIRY per drive; never reads a disc).
    List,
    /// Forward a drive (or an ISO image as an emulated drive) to a desktop.
    Forward(ForwardArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ForwardArgs {
    /// Broker base URL, e.g. https://broker.example:8443
    #[arg(long, requires = "lease", conflicts_with = "to")]
    broker: Option<String>,
    /// Lease id (32 lower-case hex digits) from the broker.
    #[arg(long, requires = "broker")]
    lease: Option<String>,
    /// Connect straight to a usb-redir socket instead of the broker (tests): unix:/path
    #[arg(long, value_name = "unix:PATH", required_unless_present = "broker")]
    to: Option<String>,
    /// Which drive: `auto` (the only one) or VID:PID in hex.
    #[arg(
        long,
        value_name = "auto|VID:PID",
        conflicts_with = "iso",
        required_unless_present = "iso"
    )]
    device: Option<DriveSelector>,
    /// Forward an emulated CD-ROM drive with this ISO image instead of a real drive.
    #[arg(long, value_name = "FILE")]
    iso: Option<PathBuf>,
    /// Bus speed the emulated drive (--iso) presents: `super` (USB 3, larger
    /// commands, needs an xHCI port) or `high` (USB 2, for EHCI desktops).
    /// [default: super]
    #[arg(long, value_name = "super|high", conflicts_with = "device")]
    usb_speed: Option<UsbSpeedArg>,
    /// Offer only Bulk-Only Transport, not USB Attached SCSI (--iso at SuperSpeed):
    /// for desktops whose UAS driver or USB controller misbehaves. UAS queues
    /// commands and needs one round trip per command instead of three.
    #[arg(long, conflicts_with = "device")]
    no_uas: bool,
    /// Do not send the lease's heartbeats (by default `usb forward` keeps the lease it
    /// forwards to alive while it runs; with this, its maker must).
    #[arg(long)]
    no_heartbeat: bool,
    /// File with the terminal's bearer token (else the AIRLOCK_TOKEN environment variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) to trust for an https broker (default: public roots).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// `--usb-speed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum UsbSpeedArg {
    Super,
    High,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Open(args) => {
                let outcome = open::run(&args.overrides()).await;
                let code = outcome.code();
                if code == 0 {
                    println!("Session ended: {}.", outcome.reason());
                } else {
                    eprintln!("airlock open: {}", outcome.reason());
                }
                Err(code)
            }
            Command::Capture(args) => match capture::run(args).await {
                Ok(()) => Ok(()),
                Err((code, why)) => {
                    eprintln!("airlock capture: {why}");
                    Err(code)
                }
            },
            Command::Usb(UsbCommand::List) => usb::usb_list().await.map_err(report),
            Command::Usb(UsbCommand::Forward(args)) => usb::usb_forward(args).await.map_err(report),
            Command::Guard(cmd) => match guard::run(&cmd).map_err(report)? {
                0 => Ok(()),
                code => Err(code),
            },
        }
    });
    // Do not wait for the blocking thread that reads commands from stdin: it only returns
    // with a line or EOF, and a session ended by Ctrl-C or by the desktop has neither.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(code) => std::process::ExitCode::from(code),
    }
}

/// Prints an error of the `usb` commands with its causes and advice; exit code 1.
fn report(e: anyhow::Error) -> u8 {
    eprintln!("error: {e:#}");
    if let Some(advice) = advice(&e) {
        eprintln!("hint: {advice}");
    }
    1
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// One sentence on what to do about an error, if we know one.
fn advice(e: &anyhow::Error) -> Option<&'static str> {
    for cause in e.chain() {
        if let Some(t) = cause.downcast_ref::<TransportError>() {
            return Some(t.advice());
        }
        let d = cause.downcast_ref::<DriveError>().or_else(|| {
            cause.downcast_ref::<PrepareError>().and_then(|p| match p {
                PrepareError::Drive(d) => Some(d),
                _ => None,
            })
        });
        if let Some(d) = d {
            return Some(match d {
                DriveError::Refused { .. } => {
                    "Only CD/DVD drives can be forwarded; use a USB optical drive."
                }
                DriveError::NotFound(_) => {
                    "Plug in the USB optical drive, then run `airlock usb list`."
                }
                DriveError::Ambiguous(_) => {
                    "Name the drive with --device VID:PID (see `airlock usb list`)."
                }
                DriveError::Access { .. } => {
                    "Check permissions on /dev/bus/usb and that no other program uses the drive."
                }
                _ => "Run `airlock usb list` to see the drives.",
            });
        }
    }
    None
}
