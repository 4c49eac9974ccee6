//! The real-drive forwarder: a usbredir host session driving a claimed USB
//! device through usbfs (`nusb`).
//!
//! - Control requests pass an allowlist ([`classify_control`]): the standard
//!   reads a mass-storage driver needs (GET_DESCRIPTOR, GET_STATUS,
//!   GET_CONFIGURATION, GET_INTERFACE), `CLEAR_FEATURE(ENDPOINT_HALT)` (run as
//!   `clear_halt` on the endpoint so the host stack's data toggle stays right),
//!   and the two Bulk-Only class requests (Mass Storage Reset, Get Max LUN) to
//!   a mass-storage interface; `SET_ADDRESS`, `SET_SEL` and `SET_ISOCH_DELAY`
//!   are absorbed. Everything else
//!   (vendor requests, other class requests such as DFU's, SET_DESCRIPTOR,
//!   SET_FEATURE, …) is answered with a stall and never reaches the drive: a
//!   desktop cannot re-flash the drive's USB bridge. Refusals are counted,
//!   logged (coalesced) and published in [`Progress::refused`] for the broker.
//! - Allowed control transfers run as tasks with a 5 s timeout (as
//!   usbredirhost), at most [`MAX_CONTROLS_IN_FLIGHT`] at a time.
//! - Each bulk endpoint has a worker task owning the `nusb` endpoint: several
//!   transfers in flight, completions in order, no timeouts. `nusb` can only
//!   cancel all transfers of an endpoint, so cancelling one transfer cancels
//!   all, and the others that had not started are resubmitted in order.
//! - Reset, set_configuration and set_alt_setting stop the affected workers,
//!   act on the device, re-claim, re-check the interface policy, and answer
//!   with the new layout.
//! - A transfer failing with "disconnected", or the sysfs directory
//!   vanishing, is an unplug: `device_disconnect` is sent and the session
//!   ends with [`SessionEnd::DeviceGone`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use nusb::transfer::{
    Buffer, Bulk, ControlIn, ControlOut, ControlType, EndpointDirection, In, Out, Recipient,
    TransferError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use usbredir::host::{DeviceLayout, HostConfig, HostEvent, HostSession, Token};
use usbredir::{Bytes, DeviceConnect, Status};

use airlock_core::wire::ControlSetup;

use super::descriptors::{parse_config_descriptor, ConfigDescriptor, TransferKind};
use super::{claim_all, probe, round_up, sysfs_of, OpenDrive};
use crate::error::{SessionError, SessionGone};
use crate::progress::{Counters, PeerInfo, Phase, Progress, Refusals, SessionEnd, SessionSummary};
use crate::session::{self, Channels, Control};
use crate::RedirStream;

/// Timeout of control transfers (usbredirhost uses 5 s too).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the device's presence is checked.
const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);
/// Input buffer limit (a bulk OUT packet to an optical drive is small; 32
/// MiB leaves room for writing discs).
const MAX_BUFFERED: usize = 32 * 1024 * 1024;
/// Read buffer size.
const READ_CHUNK: usize = 256 * 1024;
/// Most bytes of bulk IN transfers one endpoint may have waiting; a request
/// beyond is answered `inval`. Each waiting IN transfer holds a buffer of its
/// size (up to 128 MiB by the protocol), so without a bound a hostile desktop
/// could queue enough of them to exhaust the terminal's memory. Hosts queue a
/// few of at most a few MiB; the emulated drive has the same bound.
const MAX_QUEUED_IN_BYTES: u64 = usb_cdrom::device::MAX_QUEUED_IN_BYTES;

/// Allowed control transfers to the drive waiting for their answer at once; one
/// beyond is answered with an error. A host's USB stack sends one at a time on
/// endpoint 0 (QEMU does), so only a misbehaving peer reaches the bound.
const MAX_CONTROLS_IN_FLIGHT: usize = 4;

const REQ_GET_STATUS: u8 = 0x00;
const REQ_CLEAR_FEATURE: u8 = 0x01;
const REQ_SET_ADDRESS: u8 = 0x05;
const REQ_GET_DESCRIPTOR: u8 = 0x06;
const REQ_GET_CONFIGURATION: u8 = 0x08;
const REQ_SET_CONFIGURATION: u8 = 0x09;
const REQ_GET_INTERFACE: u8 = 0x0a;
const REQ_SET_INTERFACE: u8 = 0x0b;
const REQ_SET_SEL: u8 = 0x30;
const REQ_SET_ISOCH_DELAY: u8 = 0x31;
/// Bulk-Only Transport class requests (USB Mass Storage Class Bulk-Only 1.0, 3.1/3.2).
const REQ_BOT_GET_MAX_LUN: u8 = 0xfe;
const REQ_BOT_RESET: u8 = 0xff;
/// GET_DESCRIPTOR `wValue` high bytes of the configuration descriptor sets.
const DT_CONFIGURATION_U16: u16 = super::descriptors::DT_CONFIGURATION as u16;
const DT_OTHER_SPEED_U16: u16 = 7;
/// Bytes asked of the device for a configuration descriptor set.
const CONFIGURATION_READ: u16 = 4096;
const FEATURE_ENDPOINT_HALT: u16 = 0;

/// A finished transfer, from a control task or an endpoint worker.
#[derive(Debug)]
struct Done {
    token: Token,
    status: Status,
    /// IN data (empty for OUT).
    data: Vec<u8>,
    /// OUT bytes transferred.
    transferred: u32,
    is_in: bool,
    disconnected: bool,
}

enum EpCmd {
    Submit {
        token: Token,
        length: u32,
        data: Bytes,
    },
    Cancel(Token),
    ClearHalt(oneshot::Sender<Result<(), String>>),
}

struct EpWorker {
    tx: mpsc::UnboundedSender<EpCmd>,
    task: JoinHandle<()>,
    interface: u8,
}

enum Command {
    Unplug { done: oneshot::Sender<()> },
}

/// Forwards an [`OpenDrive`] over one usbredir stream.
#[derive(Debug)]
pub struct DriveForwarder {
    drive: OpenDrive,
    channels: Channels<Command>,
}

/// Controls a running [`DriveForwarder`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ForwardHandle {
    control: Control<Command>,
}

impl ForwardHandle {
    /// The session's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.control.progress()
    }

    /// Unplugs the drive from the desktop and ends the session.
    pub async fn unplug(&self) -> Result<(), SessionGone> {
        self.control.request(|done| Command::Unplug { done }).await
    }
}

impl DriveForwarder {
    /// A forwarder for a checked and claimed drive.
    pub fn new(drive: OpenDrive) -> DriveForwarder {
        DriveForwarder {
            drive,
            channels: Channels::new(4, Progress::default()),
        }
    }

    /// A handle to unplug or watch the session.
    pub fn handle(&self) -> ForwardHandle {
        ForwardHandle {
            control: self.channels.control(),
        }
    }

    /// Forwards the drive over `stream` until the peer closes it, the drive
    /// is unplugged (from the terminal or through a handle), or an error.
    pub async fn run<S: RedirStream>(self, stream: S) -> Result<SessionSummary, SessionError> {
        let DriveForwarder { drive, channels } = self;
        let (mut commands, progress) = channels.into_pump();
        let mut fwd = Forwarder::new(drive)?;
        let result = fwd.pump(stream, &mut commands, &progress).await;
        fwd.stop_all_workers().await;
        fwd.abort_controls();
        fwd.publish_refused(&progress);
        if fwd.refused_commands > 0 {
            tracing::warn!(
                refused = fwd.refused_commands,
                "SCSI commands from the desktop refused this session (writing, firmware or vendor commands)"
            );
        }
        if fwd.refused.count > 0 {
            tracing::warn!(
                refused = fwd.refused.count,
                distinct = fwd.refused.requests.len(),
                "USB control requests from the desktop refused this session (vendor, class or configuration-changing requests)"
            );
        }
        session::finish(&progress, result, fwd.counters, fwd.peer.clone())
    }
}

struct Forwarder {
    session: HostSession,
    device: nusb::Device,
    name: String,
    sysfs: PathBuf,
    ep0_max_packet: u8,
    config: Option<ConfigDescriptor>,
    interfaces: BTreeMap<u8, nusb::Interface>,
    alts: BTreeMap<u8, u8>,
    workers: HashMap<u8, EpWorker>,
    controls: HashMap<Token, AbortHandle>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    counters: Counters,
    peer: Option<PeerInfo>,
    configured: bool,
    /// SCSI commands refused so far (see `commands`).
    refused_commands: u64,
    /// Control requests refused so far (see [`classify_control`]).
    refused: Refusals,
    /// Warnings about control transfers beyond [`MAX_CONTROLS_IN_FLIGHT`] so far.
    over_bound: u64,
}

impl Forwarder {
    fn new(drive: OpenDrive) -> Result<Forwarder, SessionError> {
        let sysfs = sysfs_of(&drive);
        let name = drive.candidate.describe();
        let d = drive.device_descriptor;
        let connect = DeviceConnect {
            speed: drive.speed,
            device_class: d.class,
            device_subclass: d.subclass,
            device_protocol: d.protocol,
            vendor_id: d.vendor_id,
            product_id: d.product_id,
            device_version_bcd: d.device_version,
        };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut f = Forwarder {
            session: HostSession::new(HostConfig {
                max_buffered: MAX_BUFFERED,
                ..HostConfig::default()
            }),
            device: drive.device,
            name,
            sysfs,
            ep0_max_packet: d.max_packet_size0,
            config: Some(drive.config),
            interfaces: drive.interfaces,
            alts: drive.alts,
            workers: HashMap::new(),
            controls: HashMap::new(),
            done_tx,
            done_rx,
            counters: Counters::default(),
            peer: None,
            configured: false,
            refused_commands: 0,
            refused: Refusals::default(),
            over_bound: 0,
        };
        let layout = f.layout();
        f.session.connect_device(connect, layout)?;
        f.start_workers(None).map_err(SessionError::Device)?;
        Ok(f)
    }

    fn layout(&self) -> DeviceLayout {
        match &self.config {
            Some(c) => c.layout(&self.alts, self.ep0_max_packet),
            None => DeviceLayout::default(),
        }
    }

    async fn pump<S: RedirStream>(
        &mut self,
        stream: S,
        commands: &mut mpsc::Receiver<Command>,
        progress: &watch::Sender<Progress>,
    ) -> Result<SessionEnd, SessionError> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut commands_open = true;
        let mut presence = tokio::time::interval(PRESENCE_INTERVAL);
        presence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.session.has_output() {
                wr.write_all(&self.session.take_output()).await?;
                wr.flush().await?;
            }
            self.publish(progress);
            let gone = tokio::select! {
                r = rd.read(&mut buf) => {
                    let n = r?;
                    if n == 0 {
                        return session::peer_closed(self.session.codec().buffered());
                    }
                    self.session.feed(&buf[..n])?;
                    let mut gone = false;
                    while let Some(ev) = self.session.next_event()? {
                        if !self.handle(ev).await? {
                            gone = true;
                            break;
                        }
                    }
                    gone
                }
                Some(done) = self.done_rx.recv() => self.complete(done)?,
                cmd = commands.recv(), if commands_open => match cmd {
                    None => { commands_open = false; false }
                    Some(Command::Unplug { done }) => {
                        self.session.disconnect_device()?;
                        session::write_last(&mut wr, &self.session.take_output()).await?;
                        tracing::info!(device = %self.name, "drive unplugged from the desktop");
                        let _ = done.send(());
                        return Ok(SessionEnd::Unplugged);
                    }
                },
                _ = presence.tick() => !tokio::fs::try_exists(&self.sysfs).await.unwrap_or(true),
            };
            if gone {
                tracing::warn!(device = %self.name, "the drive was unplugged from the terminal");
                if self.session.is_attached() {
                    self.session.disconnect_device()?;
                }
                let out = self.session.take_output();
                let _ = wr.write_all(&out).await;
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
                return Ok(SessionEnd::DeviceGone);
            }
        }
    }

    fn publish(&self, progress: &watch::Sender<Progress>) {
        let phase = if !self.session.is_attached() {
            Phase::WaitingForPeer
        } else if self.configured {
            Phase::Configured
        } else {
            Phase::Attached
        };
        session::publish(progress, phase, self.counters, self.peer.as_ref());
        self.publish_refused(progress);
    }

    /// Publishes the refused control requests when they changed.
    fn publish_refused(&self, progress: &watch::Sender<Progress>) {
        progress.send_if_modified(|p| {
            let changed = p.refused.count != self.refused.count;
            if changed {
                p.refused = self.refused.clone();
            }
            changed
        });
    }

    /// The interface numbers of the current configuration that are mass storage.
    fn storage_interfaces(&self) -> Vec<u8> {
        self.config.as_ref().map_or_else(Vec::new, |c| {
            c.alt_settings
                .iter()
                .filter(|a| a.class == super::descriptors::CLASS_MASS_STORAGE)
                .map(|a| a.number)
                .collect()
        })
    }

    /// Sends a finished transfer. Returns true if the device is gone.
    fn complete(&mut self, d: Done) -> Result<bool, SessionError> {
        self.controls.remove(&d.token);
        let sent = if d.is_in {
            let n = d.data.len() as u64;
            let r = self.session.complete_in(d.token, d.status, d.data)?;
            if r == usbredir::host::Completion::Sent {
                self.counters.bytes_to_guest += n;
            }
            r
        } else {
            let r = self
                .session
                .complete_out(d.token, d.status, d.transferred)?;
            if r == usbredir::host::Completion::Sent {
                self.counters.bytes_from_guest += u64::from(d.transferred);
            }
            r
        };
        if sent == usbredir::host::Completion::Sent {
            self.counters.transfers += 1;
        }
        Ok(d.disconnected)
    }

    /// Handles one guest request. Returns false if the device is gone.
    async fn handle(&mut self, ev: HostEvent) -> Result<bool, SessionError> {
        match ev {
            HostEvent::PeerHello { version, caps } => {
                tracing::info!(peer = %version, caps = format_args!("{:#04x}", caps.bits()), device = %self.name, "desktop usb-redir connected; drive announced");
                self.peer = Some(PeerInfo {
                    version,
                    caps: caps.bits(),
                });
            }
            HostEvent::Control(r) => self.control(r).await?,
            HostEvent::Bulk(r) => {
                let refused = if r.is_in() {
                    None
                } else {
                    super::commands::refused_command(&r.data)
                };
                if r.stream_id != 0 {
                    self.fail(r.token, r.is_in(), Status::Inval)?;
                } else if let Some(c) = refused {
                    // Never reaches the drive; the desktop sees an invalid CBW.
                    tracing::warn!(
                        device = %self.name,
                        opcode = format_args!("{:#04x}", c.opcode),
                        command = c.name,
                        "refused a SCSI command from the desktop: the drive is read-only for desktops"
                    );
                    self.refused_commands += 1;
                    self.fail(r.token, false, Status::Stall)?;
                } else if r.is_in() && r.length == 0 {
                    self.session
                        .complete_in(r.token, Status::Success, Vec::<u8>::new())?;
                } else {
                    match self.workers.get(&r.endpoint) {
                        Some(w) => {
                            let _ = w.tx.send(EpCmd::Submit {
                                token: r.token,
                                length: r.length,
                                data: r.data,
                            });
                        }
                        None => self.fail(r.token, r.is_in(), Status::IoError)?,
                    }
                }
            }
            HostEvent::InterruptOut(r) => {
                self.session.complete_out(r.token, Status::Inval, 0)?;
            }
            HostEvent::Cancelled { token, .. } => {
                if let Some(a) = self.controls.remove(&token) {
                    a.abort();
                } else {
                    for w in self.workers.values() {
                        let _ = w.tx.send(EpCmd::Cancel(token));
                    }
                }
            }
            HostEvent::Reset { redundant } => {
                if redundant {
                    tracing::debug!("redundant reset skipped");
                } else if let Err(e) = self.reset().await {
                    tracing::warn!(device = %self.name, error = %e, "device reset failed; unplugging it from the desktop");
                    return Ok(false);
                }
            }
            HostEvent::SetConfiguration { id, configuration } => {
                let (status, layout) = match self.set_configuration(configuration).await {
                    Ok(()) => {
                        self.configured = configuration != 0;
                        (Status::Success, Some(self.layout()))
                    }
                    Err(e) => {
                        tracing::warn!(configuration, error = %e, "set_configuration failed");
                        (Status::Stall, None)
                    }
                };
                let current = self.config.as_ref().map_or(0, |c| c.value);
                self.session
                    .reply_set_configuration(id, status, current, layout)?;
            }
            HostEvent::GetConfiguration { id } => {
                let current = self.config.as_ref().map_or(0, |c| c.value);
                self.session
                    .reply_get_configuration(id, Status::Success, current)?;
            }
            HostEvent::SetAltSetting { id, interface, alt } => {
                let (alt, layout) = match self.set_alt(interface, alt).await {
                    Ok(()) => (alt, Some(self.layout())),
                    Err(e) => {
                        tracing::warn!(interface, alt, error = %e, "set_alt_setting failed");
                        (self.alts.get(&interface).copied().unwrap_or(255), None)
                    }
                };
                session::reply_set_alt(&mut self.session, id, interface, alt, layout)?;
            }
            HostEvent::GetAltSetting { id, interface } => {
                let alt = self.alts.get(&interface).copied();
                session::reply_get_alt(&mut self.session, id, interface, alt)?;
            }
            HostEvent::FilterFilter { rules } => {
                tracing::debug!(%rules, "desktop usb-redir filter")
            }
            other => session::other_event(other)?,
        }
        Ok(true)
    }

    fn fail(&mut self, token: Token, is_in: bool, status: Status) -> Result<(), SessionError> {
        if is_in {
            self.session.complete_in(token, status, Vec::<u8>::new())?;
        } else {
            self.session.complete_out(token, status, 0)?;
        }
        Ok(())
    }

    async fn control(&mut self, r: usbredir::host::ControlRequest) -> Result<(), SessionError> {
        let is_in = r.is_in();
        let setup = ControlSetup {
            request_type: r.request_type,
            request: r.request,
            value: r.value,
            index: r.index,
        };
        let storage = self.storage_interfaces();
        let (control_type, recipient) = match classify_control(setup, r.length, is_in, &storage) {
            ControlAction::Forward {
                control_type,
                recipient,
            } => (control_type, recipient),
            ControlAction::Deny => {
                // Never reaches the drive: the desktop sees a stall.
                let new = self.refused.add(setup);
                if new || self.refused.count.is_power_of_two() {
                    tracing::warn!(
                        device = %self.name,
                        request = %setup,
                        refused = self.refused.count,
                        "refused a USB control request from the desktop: only the requests a mass-storage driver needs reach the drive"
                    );
                }
                self.fail(r.token, is_in, Status::Stall)?;
                return Ok(());
            }
            ControlAction::Ack => {
                let n = u32::try_from(r.data.len()).unwrap_or(0);
                self.session.complete_out(r.token, Status::Success, n)?;
                return Ok(());
            }
            ControlAction::Refuse(status) => {
                self.fail(r.token, is_in, status)?;
                return Ok(());
            }
            ControlAction::ClearHalt(ep) => {
                let status = match self.workers.get(&ep) {
                    Some(w) => {
                        let (tx, rx) = oneshot::channel();
                        let _ = w.tx.send(EpCmd::ClearHalt(tx));
                        match rx.await {
                            Ok(Ok(())) => Status::Success,
                            Ok(Err(e)) => {
                                tracing::debug!(endpoint = ep, error = %e, "clear_halt failed");
                                Status::Stall
                            }
                            Err(_) => Status::IoError,
                        }
                    }
                    None => Status::Stall,
                };
                self.session.complete_out(r.token, status, 0)?;
                return Ok(());
            }
        };
        if self.controls.len() >= MAX_CONTROLS_IN_FLIGHT {
            self.over_bound += 1;
            if self.over_bound.is_power_of_two() {
                tracing::warn!(
                    device = %self.name,
                    in_flight = self.controls.len(),
                    times = self.over_bound,
                    "the desktop sent a control transfer while {MAX_CONTROLS_IN_FLIGHT} were still waiting for the drive; answered with an error"
                );
            }
            self.fail(r.token, is_in, Status::IoError)?;
            return Ok(());
        }
        let device = self.device.clone();
        let done = self.done_tx.clone();
        let token = r.token;
        let task = if is_in {
            // A configuration descriptor set is read whole and passed on
            // without UAS alternate settings (see `without_uas_alt_settings`),
            // cut to what the guest asked for.
            let configuration = r.request_type == 0x80
                && r.request == REQ_GET_DESCRIPTOR
                && matches!(r.value >> 8, DT_CONFIGURATION_U16 | DT_OTHER_SPEED_U16);
            let wanted = usize::from(r.length);
            let req = ControlIn {
                control_type,
                recipient,
                request: r.request,
                value: r.value,
                index: r.index,
                // Enough for any optical drive's set (they are ~50-130 bytes).
                length: if configuration {
                    CONFIGURATION_READ
                } else {
                    r.length
                },
            };
            tokio::spawn(async move {
                let res = device.control_in(req, CONTROL_TIMEOUT).await;
                let (status, mut data, disconnected) = match res {
                    Ok(d) if configuration => (
                        Status::Success,
                        super::descriptors::without_uas_alt_settings(&d),
                        false,
                    ),
                    Ok(d) => (Status::Success, d, false),
                    Err(e) => (map_error(e), Vec::new(), e == TransferError::Disconnected),
                };
                data.truncate(wanted);
                let _ = done.send(Done {
                    token,
                    status,
                    data,
                    transferred: 0,
                    is_in: true,
                    disconnected,
                });
            })
        } else {
            let data = r.data;
            let (request, value, index) = (r.request, r.value, r.index);
            tokio::spawn(async move {
                let req = ControlOut {
                    control_type,
                    recipient,
                    request,
                    value,
                    index,
                    data: &data,
                };
                let res = device.control_out(req, CONTROL_TIMEOUT).await;
                let (status, transferred, disconnected) = match res {
                    Ok(()) => (Status::Success, data.len() as u32, false),
                    Err(e) => (map_error(e), 0, e == TransferError::Disconnected),
                };
                let _ = done.send(Done {
                    token,
                    status,
                    data: Vec::new(),
                    transferred,
                    is_in: false,
                    disconnected,
                });
            })
        };
        self.controls.insert(token, task.abort_handle());
        Ok(())
    }

    /// Starts workers for the bulk endpoints of the active alternate
    /// settings (of `only` interface, or all).
    fn start_workers(&mut self, only: Option<u8>) -> Result<(), String> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        let active: Vec<(u8, Vec<(u8, TransferKind)>)> = config
            .active(&self.alts)
            .into_iter()
            .filter(|a| only.is_none_or(|n| n == a.number))
            .map(|a| {
                (
                    a.number,
                    a.endpoints.iter().map(|e| (e.address, e.kind)).collect(),
                )
            })
            .collect();
        for (number, eps) in active {
            let Some(intf) = self.interfaces.get(&number) else {
                continue;
            };
            for (address, kind) in eps {
                if kind != TransferKind::Bulk || self.workers.contains_key(&address) {
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let done = self.done_tx.clone();
                let task = if address & 0x80 != 0 {
                    let ep = intf
                        .endpoint::<Bulk, In>(address)
                        .map_err(|e| format!("cannot open endpoint {address:#04x}: {e}"))?;
                    tokio::spawn(bulk_worker(ep, true, rx, done))
                } else {
                    let ep = intf
                        .endpoint::<Bulk, Out>(address)
                        .map_err(|e| format!("cannot open endpoint {address:#04x}: {e}"))?;
                    tokio::spawn(bulk_worker(ep, false, rx, done))
                };
                self.workers.insert(
                    address,
                    EpWorker {
                        tx,
                        task,
                        interface: number,
                    },
                );
            }
        }
        Ok(())
    }

    /// Stops the workers (of interface `only`, or all); their transfers were
    /// already answered by the session (cancelled) or are forgotten.
    async fn stop_workers(&mut self, only: Option<u8>) {
        let victims: Vec<u8> = self
            .workers
            .iter()
            .filter(|(_, w)| only.is_none_or(|n| n == w.interface))
            .map(|(&a, _)| a)
            .collect();
        for a in victims {
            if let Some(w) = self.workers.remove(&a) {
                drop(w.tx);
                let _ = w.task.await;
            }
        }
    }

    async fn stop_all_workers(&mut self) {
        self.stop_workers(None).await;
    }

    fn abort_controls(&mut self) {
        for (_, a) in self.controls.drain() {
            a.abort();
        }
    }

    /// Port reset: release everything, reset, claim again.
    async fn reset(&mut self) -> Result<(), String> {
        self.stop_all_workers().await;
        self.abort_controls();
        self.interfaces.clear();
        self.device
            .reset()
            .await
            .map_err(|e| format!("reset failed: {e}"))?;
        self.alts.clear();
        self.reclaim().await
    }

    /// Claims the interfaces of the current configuration and restarts the
    /// workers.
    async fn reclaim(&mut self) -> Result<(), String> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        // A driver detached here (it re-bound during a reset on an unguarded
        // terminal) stays detached: this is a checked optical drive.
        self.interfaces = claim_all(&self.device, config, &self.sysfs, &self.name)
            .await?
            .0;
        self.alts = self
            .interfaces
            .iter()
            .map(|(&n, i)| (n, i.get_alt_setting()))
            .collect();
        self.start_workers(None)
    }

    async fn set_configuration(&mut self, value: u8) -> Result<(), String> {
        let current = self.config.as_ref().map_or(0, |c| c.value);
        if value == current && value != 0 {
            // Already active: only put the alternate settings back to 0.
            let nonzero: Vec<u8> = self
                .alts
                .iter()
                .filter(|(_, &a)| a != 0)
                .map(|(&n, _)| n)
                .collect();
            for n in nonzero {
                self.set_alt(n, 0).await?;
            }
            return Ok(());
        }
        self.stop_all_workers().await;
        self.abort_controls();
        self.interfaces.clear();
        self.alts.clear();
        self.device
            .set_configuration(value)
            .await
            .map_err(|e| format!("cannot set configuration {value}: {e}"))?;
        if value == 0 {
            self.config = None;
            return Ok(());
        }
        let bytes = self
            .device
            .active_configuration()
            .map_err(|e| e.to_string())?
            .as_bytes()
            .to_vec();
        let config = parse_config_descriptor(&bytes).map_err(|e| e.to_string())?;
        let triples: Vec<(u8, u8, u8)> = config
            .alt_settings
            .iter()
            .map(|a| (a.class, a.subclass, a.protocol))
            .collect();
        probe::judge_interfaces(0, &triples)
            .map_err(|r| format!("configuration {value} is not allowed: {r}"))?;
        self.config = Some(config);
        self.reclaim().await
    }

    async fn set_alt(&mut self, interface: u8, alt: u8) -> Result<(), String> {
        let Some(config) = &self.config else {
            return Err("the device is not configured".into());
        };
        let Some(a) = config.alt_setting(interface, alt) else {
            return Err(format!(
                "interface {interface} has no alternate setting {alt}"
            ));
        };
        if a.class != super::descriptors::CLASS_MASS_STORAGE {
            return Err(format!(
                "alternate setting {alt} of interface {interface} is not mass storage"
            ));
        }
        if a.protocol == super::descriptors::PROTOCOL_UAS {
            // Hidden from the guest (it needs bulk streams, which this
            // forwarder cannot pass on); only a misbehaving guest asks.
            return Err(format!(
                "alternate setting {alt} of interface {interface} is USB Attached SCSI, which is not forwarded"
            ));
        }
        let Some(intf) = self.interfaces.get(&interface).cloned() else {
            return Err(format!("interface {interface} is not claimed"));
        };
        self.stop_workers(Some(interface)).await;
        let r = intf
            .set_alt_setting(alt)
            .await
            .map_err(|e| format!("cannot select alternate setting {alt}: {e}"));
        if r.is_ok() {
            self.alts.insert(interface, alt);
        }
        self.start_workers(Some(interface))?;
        r
    }
}

/// Maps a `nusb` transfer error to a usbredir status.
fn map_error(e: TransferError) -> Status {
    match e {
        TransferError::Cancelled => Status::Cancelled,
        TransferError::Stall => Status::Stall,
        TransferError::InvalidArgument => Status::Inval,
        TransferError::Disconnected | TransferError::Fault | TransferError::Unknown(_) => {
            Status::IoError
        }
    }
}

struct Inflight {
    token: Token,
    length: u32,
    data: Bytes,
    guest_cancelled: bool,
}

/// Owns one bulk endpoint: submits transfers in order, reports completions,
/// cancels (all, then resubmits the innocent ones), clears halts.
async fn bulk_worker<D: EndpointDirection>(
    mut ep: nusb::Endpoint<Bulk, D>,
    is_in: bool,
    mut rx: mpsc::UnboundedReceiver<EpCmd>,
    done: mpsc::UnboundedSender<Done>,
) {
    let maxp = ep.max_packet_size().max(1);
    let mut q = EpQueue::default();
    let submit = |ep: &mut nusb::Endpoint<Bulk, D>, f: &Inflight| {
        let buf = if is_in {
            Buffer::new(round_up(f.length as usize, maxp))
        } else {
            Buffer::from(f.data.to_vec())
        };
        ep.submit(buf);
    };

    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(EpCmd::Submit { token, length, data }) => {
                    // Each IN transfer gets its buffer when submitted: bound what
                    // the desktop may have waiting (see MAX_QUEUED_IN_BYTES).
                    if is_in && q.queued_bytes() + u64::from(length) > MAX_QUEUED_IN_BYTES {
                        let _ = done.send(Done {
                            token,
                            status: Status::Inval,
                            data: Vec::new(),
                            transferred: 0,
                            is_in,
                            disconnected: false,
                        });
                        continue;
                    }
                    if let Some(f) = q.submit(Inflight { token, length, data, guest_cancelled: false }) {
                        submit(&mut ep, f);
                    }
                }
                Some(EpCmd::Cancel(token)) => {
                    if q.cancel(token) {
                        ep.cancel_all();
                    }
                }
                Some(EpCmd::ClearHalt(reply)) => {
                    let r = ep.clear_halt().await.map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
            },
            c = ep.next_complete(), if ep.pending() > 0 => {
                let untouched = c.status == Err(TransferError::Cancelled) && c.actual_len == 0;
                let (report, resubmit) = q.completed(untouched, ep.pending() == 0);
                if let Some(f) = report {
                    let disconnected = c.status == Err(TransferError::Disconnected);
                    let status = match c.status {
                        Ok(()) => Status::Success,
                        Err(e) => map_error(e),
                    };
                    let d = if is_in {
                        let got = &c.buffer[..c.actual_len.min(c.buffer.len())];
                        let (data, status) = in_result(f.length, got, status);
                        Done { token: f.token, status, data, transferred: 0, is_in, disconnected }
                    } else {
                        let n = u32::try_from(c.actual_len).unwrap_or(u32::MAX).min(f.length);
                        Done { token: f.token, status, data: Vec::new(), transferred: n, is_in, disconnected }
                    };
                    let _ = done.send(d);
                }
                for f in resubmit {
                    submit(&mut ep, f);
                }
            }
        }
    }
    // Stopping: cancel what is left and wait for it (its answers were
    // already sent by the session or no longer matter).
    if ep.pending() > 0 {
        ep.cancel_all();
        while ep.pending() > 0 {
            let _ = ep.next_complete().await;
        }
    }
}

/// The data and status of an IN completion: more data than requested (the
/// buffer is rounded up to whole packets) is babble, cut to the request.
fn in_result(requested: u32, got: &[u8], status: Status) -> (Vec<u8>, Status) {
    let want = requested as usize;
    if got.len() > want {
        (got[..want].to_vec(), Status::Babble)
    } else {
        (got.to_vec(), status)
    }
}

/// What to do with a control request from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlAction {
    /// Send it to the device as is.
    Forward {
        control_type: ControlType,
        recipient: Recipient,
    },
    /// `CLEAR_FEATURE(ENDPOINT_HALT)` on this (non-zero) endpoint: run
    /// `clear_halt` so the host stack resets its data toggle too.
    ClearHalt(u8),
    /// Answer success without touching the device (SET_ADDRESS, which QEMU
    /// normally absorbs; clearing a halt on endpoint 0; SET_SEL and
    /// SET_ISOCH_DELAY, the power-management timings a host's USB core sends
    /// every SuperSpeed device: the drive simply keeps its defaults).
    Ack,
    /// Not on the allowlist: answer with a stall, never send it to the device;
    /// counted, logged and reported to the broker.
    Deny,
    /// A malformed request (its direction bit contradicts the packet's
    /// endpoint), or a raw SET_CONFIGURATION / SET_INTERFACE that would bypass
    /// our bookkeeping (QEMU sends those as their own usbredir packets):
    /// answered with this status.
    Refuse(Status),
}

/// The control-request allowlist: what a mass-storage driver needs, and nothing
/// else (`storage`: the mass-storage interface numbers of the current
/// configuration). Allowed:
/// - standard reads: GET_STATUS (wValue 0) of the device, an interface or an
///   endpoint; GET_DESCRIPTOR of the device (any descriptor: reads only);
///   GET_CONFIGURATION; GET_INTERFACE of a mass-storage interface;
/// - `CLEAR_FEATURE(ENDPOINT_HALT)` (wIndex an endpoint address): [`ControlAction::ClearHalt`];
/// - `SET_ADDRESS`, and `SET_SEL` (6 bytes) and `SET_ISOCH_DELAY` (wIndex 0, no
///   data), which a host's USB core sends every SuperSpeed device: absorbed
///   ([`ControlAction::Ack`]), the drive never sees them;
/// - Bulk-Only Mass Storage Reset (0x21/0xFF, wValue 0, wLength 0) and Get Max
///   LUN (0xA1/0xFE, wValue 0, wLength 1) to a mass-storage interface.
///
/// Everything else is [`ControlAction::Deny`]: vendor requests, every other
/// class request (DFU_DETACH/DNLOAD/UPLOAD… are class requests to an
/// interface), SET_DESCRIPTOR, SET_FEATURE, other CLEAR_FEATUREs, SYNCH_FRAME,
/// reserved types and recipients.
fn classify_control(s: ControlSetup, length: u16, is_in: bool, storage: &[u8]) -> ControlAction {
    let ControlSetup {
        request_type,
        request,
        value,
        index,
    } = s;
    if (request_type & 0x80 != 0) != is_in {
        return ControlAction::Refuse(Status::Inval);
    }
    let storage_interface = u8::try_from(index).is_ok_and(|i| storage.contains(&i));
    let forward = |control_type, recipient| ControlAction::Forward {
        control_type,
        recipient,
    };
    use ControlType::{Class, Standard};
    use Recipient::{Device, Endpoint, Interface};
    match (request_type, request) {
        (0x80, REQ_GET_STATUS) if value == 0 => forward(Standard, Device),
        (0x81, REQ_GET_STATUS) if value == 0 => forward(Standard, Interface),
        (0x82, REQ_GET_STATUS) if value == 0 => forward(Standard, Endpoint),
        (0x80, REQ_GET_DESCRIPTOR) => forward(Standard, Device),
        (0x80, REQ_GET_CONFIGURATION) if value == 0 && index == 0 => forward(Standard, Device),
        (0x81, REQ_GET_INTERFACE) if value == 0 && storage_interface => {
            forward(Standard, Interface)
        }
        (0x02, REQ_CLEAR_FEATURE) if value == FEATURE_ENDPOINT_HALT && index <= 0xff => {
            let ep = index as u8;
            if ep & 0x0f == 0 {
                ControlAction::Ack
            } else {
                ControlAction::ClearHalt(ep)
            }
        }
        (0x00, REQ_SET_ADDRESS) => ControlAction::Ack,
        (0x00, REQ_SET_SEL) if value == 0 && index == 0 && length == 6 => ControlAction::Ack,
        (0x00, REQ_SET_ISOCH_DELAY) if index == 0 && length == 0 => ControlAction::Ack,
        (0x00, REQ_SET_CONFIGURATION) | (0x01, REQ_SET_INTERFACE) => {
            ControlAction::Refuse(Status::Inval)
        }
        (0x21, REQ_BOT_RESET) if value == 0 && length == 0 && storage_interface => {
            forward(Class, Interface)
        }
        (0xa1, REQ_BOT_GET_MAX_LUN) if value == 0 && length == 1 && storage_interface => {
            forward(Class, Interface)
        }
        _ => ControlAction::Deny,
    }
}

/// The transfers of one endpoint under `nusb`'s model, where completions
/// come back in submission order and only *all* transfers of an endpoint can
/// be cancelled. A guest cancel of one transfer cancels all ("draining");
/// the others that had not started ("innocents") and the ones submitted
/// meanwhile are resubmitted in order once the endpoint is idle.
#[derive(Default)]
struct EpQueue {
    inflight: VecDeque<Inflight>,
    innocents: VecDeque<Inflight>,
    held: VecDeque<Inflight>,
    draining: bool,
}

impl EpQueue {
    /// Bytes of all transfers the queue holds (in flight, to resubmit, held).
    fn queued_bytes(&self) -> u64 {
        self.inflight
            .iter()
            .chain(&self.innocents)
            .chain(&self.held)
            .map(|f| u64::from(f.length))
            .sum()
    }

    /// A new transfer; returns it if it must be submitted now.
    fn submit(&mut self, f: Inflight) -> Option<&Inflight> {
        if self.draining {
            self.held.push_back(f);
            None
        } else {
            self.inflight.push_back(f);
            self.inflight.back()
        }
    }

    /// The guest cancelled `token` (already answered by the session).
    /// Returns true if the endpoint must be cancelled (`cancel_all`).
    fn cancel(&mut self, token: Token) -> bool {
        if let Some(f) = self.inflight.iter_mut().find(|f| f.token == token) {
            f.guest_cancelled = true;
            let start = !self.draining;
            self.draining = true;
            start
        } else {
            self.innocents.retain(|f| f.token != token);
            self.held.retain(|f| f.token != token);
            false
        }
    }

    /// The oldest transfer completed (`untouched`: cancelled with no data;
    /// `idle`: nothing else pending). Returns the transfer to report (not
    /// one the guest cancelled, not an innocent to retry) and the ones to
    /// submit now, in order.
    fn completed(&mut self, untouched: bool, idle: bool) -> (Option<Inflight>, Vec<&Inflight>) {
        let mut report = None;
        if let Some(f) = self.inflight.pop_front() {
            if self.draining && !f.guest_cancelled && untouched {
                self.innocents.push_back(f);
            } else if !f.guest_cancelled {
                report = Some(f);
            }
        }
        if self.draining && idle {
            self.draining = false;
            let n = self.inflight.len();
            self.inflight.extend(self.innocents.drain(..));
            self.inflight.extend(self.held.drain(..));
            return (report, self.inflight.iter().skip(n).collect());
        }
        (report, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tokens() -> Vec<Token> {
        // Tokens can only come from a session: make a few real ones.
        use usbredir::guest::GuestSession;
        let mut h = HostSession::new(HostConfig::default());
        let mut g = GuestSession::new("t", usbredir::Caps::from_bits(0xFE));
        let mut layout = DeviceLayout::default();
        layout.endpoints.set(
            0x81,
            usbredir::Endpoint {
                ep_type: usbredir::EndpointType::Bulk,
                ..usbredir::Endpoint::INVALID
            },
        );
        h.connect_device(
            DeviceConnect {
                speed: usbredir::Speed::High,
                device_class: 0,
                device_subclass: 0,
                device_protocol: 0,
                vendor_id: 1,
                product_id: 2,
                device_version_bcd: 0,
            },
            layout,
        )
        .unwrap();
        g.feed(&h.take_output()).unwrap();
        while g.next_event().unwrap().is_some() {}
        h.feed(&g.take_output()).unwrap();
        while h.next_event().unwrap().is_some() {}
        g.feed(&h.take_output()).unwrap();
        while g.next_event().unwrap().is_some() {}
        for _ in 0..6 {
            g.bulk_in(0x81, 512).unwrap();
        }
        h.feed(&g.take_output()).unwrap();
        let mut out = Vec::new();
        while let Some(ev) = h.next_event().unwrap() {
            if let HostEvent::Bulk(b) = ev {
                out.push(b.token);
            }
        }
        out
    }

    fn inflight(token: Token) -> Inflight {
        Inflight {
            token,
            length: 512,
            data: Bytes::new(),
            guest_cancelled: false,
        }
    }

    #[test]
    fn queued_bytes_count_every_transfer_the_queue_holds() {
        let t = tokens();
        let mut q = EpQueue::default();
        assert_eq!(q.queued_bytes(), 0);
        for &tok in &t[..3] {
            q.submit(inflight(tok));
        }
        assert_eq!(q.queued_bytes(), 3 * 512);
        q.cancel(t[1]);
        q.submit(inflight(t[3])); // held while draining
        assert_eq!(q.queued_bytes(), 4 * 512);
        q.completed(false, false); // t0 reported
        q.completed(true, false); // t1 cancelled
        assert_eq!(q.queued_bytes(), 2 * 512);
    }

    #[test]
    fn cancel_one_resubmits_the_innocent_in_order() {
        let t = tokens();
        let mut q = EpQueue::default();
        for &tok in &t[..3] {
            assert!(q.submit(inflight(tok)).is_some(), "submitted at once");
        }
        // Guest cancels the second: the whole endpoint is cancelled once.
        assert!(q.cancel(t[1]));
        assert!(!q.cancel(t[1]), "already draining");
        // A new transfer while draining is held.
        assert!(q.submit(inflight(t[3])).is_none());
        // t0 had finished with data before the cancel hit: reported.
        let (r, again) = q.completed(false, false);
        assert_eq!(r.map(|f| f.token), Some(t[0]));
        assert!(again.is_empty());
        // t1 (cancelled by the guest): not reported.
        let (r, again) = q.completed(true, false);
        assert!(r.is_none() && again.is_empty());
        // t2 (innocent, untouched): retried, then t3, in that order.
        let (r, again) = q.completed(true, true);
        assert!(r.is_none());
        assert_eq!(
            again.iter().map(|f| f.token).collect::<Vec<_>>(),
            vec![t[2], t[3]]
        );
        // Back to normal: the next completions are t2 then t3.
        assert!(q.submit(inflight(t[4])).is_some());
        assert_eq!(q.completed(false, false).0.map(|f| f.token), Some(t[2]));
        assert_eq!(q.completed(false, false).0.map(|f| f.token), Some(t[3]));
        assert_eq!(q.completed(false, true).0.map(|f| f.token), Some(t[4]));
    }

    #[test]
    fn innocent_with_partial_data_is_reported_and_held_cancels_are_dropped() {
        let t = tokens();
        let mut q = EpQueue::default();
        q.submit(inflight(t[0]));
        q.submit(inflight(t[1]));
        assert!(q.cancel(t[1]));
        q.submit(inflight(t[2]));
        // The guest also cancels the held t2: it is simply forgotten.
        assert!(!q.cancel(t[2]));
        // t0 was cut short by the cancel after moving data: reported as is.
        assert_eq!(q.completed(false, false).0.map(|f| f.token), Some(t[0]));
        let (r, again) = q.completed(true, true);
        assert!(r.is_none());
        assert!(again.is_empty());
        // Cancelling an unknown token does nothing.
        assert!(!q.cancel(t[5]));
    }

    #[test]
    fn in_results() {
        assert_eq!(
            in_result(13, &[1; 13], Status::Success),
            (vec![1; 13], Status::Success)
        );
        assert_eq!(
            in_result(13, &[1; 10], Status::Stall),
            (vec![1; 10], Status::Stall)
        );
        // The buffer was rounded up to 512; the device sent more than asked.
        assert_eq!(
            in_result(13, &[1; 512], Status::Success),
            (vec![1; 13], Status::Babble)
        );
    }

    fn setup(request_type: u8, request: u8, value: u16, index: u16) -> ControlSetup {
        ControlSetup {
            request_type,
            request,
            value,
            index,
        }
    }

    /// The mass-storage interfaces of the drive in these tests.
    const STORAGE: &[u8] = &[0];

    fn classify(rt: u8, req: u8, value: u16, index: u16, length: u16) -> ControlAction {
        classify_control(
            setup(rt, req, value, index),
            length,
            rt & 0x80 != 0,
            STORAGE,
        )
    }

    #[test]
    fn only_the_mass_storage_requests_pass_for_every_type_and_request() {
        use ControlAction::*;
        use ControlType::{Class, Standard};
        use Recipient::{Device, Endpoint, Interface};
        let forward = |control_type, recipient| Forward {
            control_type,
            recipient,
        };
        // Every bmRequestType x every bRequest, in the direction its type says, with
        // the spec'd wValue/wIndex/wLength of the allowed ones (wValue 0, wIndex 0 =
        // the drive's interface or endpoint 0, wLength 1 IN / 0 OUT).
        let allowed: BTreeMap<(u8, u8), ControlAction> = BTreeMap::from([
            ((0x80, 0x00), forward(Standard, Device)),    // GET_STATUS
            ((0x81, 0x00), forward(Standard, Interface)), // GET_STATUS
            ((0x82, 0x00), forward(Standard, Endpoint)),  // GET_STATUS
            ((0x80, 0x06), forward(Standard, Device)),    // GET_DESCRIPTOR
            ((0x80, 0x08), forward(Standard, Device)),    // GET_CONFIGURATION
            ((0x81, 0x0a), forward(Standard, Interface)), // GET_INTERFACE
            ((0x02, 0x01), Ack),                          // CLEAR_FEATURE(HALT) of ep 0
            ((0x00, 0x05), Ack),                          // SET_ADDRESS
            ((0x00, 0x31), Ack),                          // SET_ISOCH_DELAY
            ((0x00, 0x09), Refuse(Status::Inval)),        // raw SET_CONFIGURATION
            ((0x01, 0x0b), Refuse(Status::Inval)),        // raw SET_INTERFACE
            ((0x21, 0xff), forward(Class, Interface)),    // Bulk-Only reset
            ((0xa1, 0xfe), forward(Class, Interface)),    // Get Max LUN
        ]);
        let mut denied = 0;
        for rt in 0..=255u8 {
            for req in 0..=255u8 {
                let length = if rt & 0x80 != 0 { 1 } else { 0 };
                let got = classify(rt, req, 0, 0, length);
                let want = allowed.get(&(rt, req)).copied().unwrap_or(Deny);
                assert_eq!(got, want, "bmRequestType {rt:#04x} bRequest {req:#04x}");
                if got == Deny {
                    denied += 1;
                }
                // The direction bit contradicting the packet: malformed.
                assert_eq!(
                    classify_control(setup(rt, req, 0, 0), length, rt & 0x80 == 0, STORAGE),
                    Refuse(Status::Inval),
                    "bmRequestType {rt:#04x} bRequest {req:#04x}, wrong direction"
                );
            }
        }
        assert_eq!(denied, 256 * 256 - allowed.len());
    }

    #[test]
    fn every_vendor_request_is_denied_whatever_its_fields() {
        for rt in (0..=255u8).filter(|rt| rt & 0x60 == 0x40) {
            for req in [0x00, 0x01, 0x05, 0x06, 0x40, 0xa0, 0xee, 0xfe, 0xff] {
                for (value, index, length) in
                    [(0, 0, 0), (0x1234, 0x81, 64), (0xffff, 0xffff, 4096)]
                {
                    assert_eq!(
                        classify(rt, req, value, index, length),
                        ControlAction::Deny,
                        "{rt:#04x} {req:#04x} {value:#06x} {index:#06x}"
                    );
                }
            }
        }
    }

    #[test]
    fn dfu_set_descriptor_and_set_feature_are_denied() {
        use ControlAction::Deny;
        // DFU 1.1: DETACH, DNLOAD, UPLOAD, GETSTATUS, CLRSTATUS, GETSTATE, ABORT
        // (class requests to an interface), to the drive's interface and others.
        for (rt, req) in [
            (0x21, 0x00),
            (0x21, 0x01),
            (0xa1, 0x02),
            (0xa1, 0x03),
            (0x21, 0x04),
            (0xa1, 0x05),
            (0x21, 0x06),
        ] {
            for index in [0, 1, 0x100] {
                assert_eq!(
                    classify(rt, req, 0, index, 64),
                    Deny,
                    "{rt:#04x} {req:#04x}"
                );
            }
        }
        // SET_DESCRIPTOR (device, configuration, string), SET_FEATURE of every
        // recipient (remote wakeup, test mode, endpoint halt, U1/U2 enable).
        for value in [0x0100, 0x0200, 0x0300] {
            assert_eq!(classify(0x00, 0x07, value, 0, 18), Deny);
        }
        for (rt, value, index) in [
            (0x00, 1, 0),
            (0x00, 2, 0x0400),
            (0x00, 48, 0),
            (0x01, 0, 0),
            (0x02, 0, 0x81),
        ] {
            assert_eq!(classify(rt, 0x03, value, index, 0), Deny);
        }
        // CLEAR_FEATURE other than an endpoint halt; SYNCH_FRAME; SET_SEL and
        // SET_ISOCH_DELAY other than a host's USB core sends them.
        assert_eq!(classify(0x00, 0x01, 1, 0, 0), Deny);
        assert_eq!(classify(0x01, 0x01, 0, 0, 0), Deny);
        assert_eq!(classify(0x00, 0x30, 0, 0, 64), Deny);
        assert_eq!(classify(0x00, 0x30, 0, 1, 6), Deny);
        assert_eq!(classify(0x00, 0x31, 40, 1, 0), Deny);
        assert_eq!(classify(0x00, 0x31, 40, 0, 2), Deny);
        assert_eq!(classify(0x82, 0x0c, 0, 0x81, 2), Deny);
    }

    #[test]
    fn the_allowed_requests_need_their_spec_fields() {
        use ControlAction::*;
        let class = Forward {
            control_type: ControlType::Class,
            recipient: Recipient::Interface,
        };
        // Bulk-Only reset: wValue 0, wLength 0, a mass-storage interface.
        assert_eq!(classify(0x21, 0xff, 0, 0, 0), class);
        assert_eq!(classify(0x21, 0xff, 1, 0, 0), Deny);
        assert_eq!(classify(0x21, 0xff, 0, 0, 1), Deny);
        assert_eq!(classify(0x21, 0xff, 0, 1, 0), Deny);
        assert_eq!(classify(0x21, 0xff, 0, 0x100, 0), Deny);
        // Get Max LUN: wValue 0, wLength 1, a mass-storage interface.
        assert_eq!(classify(0xa1, 0xfe, 0, 0, 1), class);
        assert_eq!(classify(0xa1, 0xfe, 0, 0, 2), Deny);
        assert_eq!(classify(0xa1, 0xfe, 0, 0, 0), Deny);
        assert_eq!(classify(0xa1, 0xfe, 7, 0, 1), Deny);
        assert_eq!(classify(0xa1, 0xfe, 0, 2, 1), Deny);
        // Another configuration's storage interface 2 is allowed there.
        assert_eq!(
            classify_control(setup(0xa1, 0xfe, 0, 2), 1, true, &[2]),
            class
        );
        assert_eq!(
            classify_control(setup(0xa1, 0xfe, 0, 0), 1, true, &[]),
            Deny
        );
        // Class requests to the device or an endpoint are never Bulk-Only's.
        assert_eq!(classify(0x20, 0xff, 0, 0, 0), Deny);
        assert_eq!(classify(0xa2, 0xfe, 0, 0, 1), Deny);
        // CLEAR_FEATURE(ENDPOINT_HALT) of 0x81/0x02 → clear_halt, of 0x00/0x80 → ack;
        // a wIndex high byte is not an endpoint.
        assert_eq!(classify(0x02, 0x01, 0, 0x81, 0), ClearHalt(0x81));
        assert_eq!(classify(0x02, 0x01, 0, 0x02, 0), ClearHalt(0x02));
        assert_eq!(classify(0x02, 0x01, 0, 0x80, 0), Ack);
        assert_eq!(classify(0x02, 0x01, 0, 0x0181, 0), Deny);
        // GET_DESCRIPTOR of any descriptor of the device (reads), not of an interface.
        for value in [0x0100, 0x0200, 0x0303, 0x0600, 0x0700, 0x0f00, 0xee00] {
            assert!(matches!(
                classify(0x80, 0x06, value, 0x0409, 255),
                Forward { .. }
            ));
        }
        assert_eq!(classify(0x81, 0x06, 0x2200, 0, 64), Deny);
        // SET_SEL (6 bytes) and SET_ISOCH_DELAY: absorbed.
        assert_eq!(classify(0x00, 0x30, 0, 0, 6), Ack);
        assert_eq!(classify(0x00, 0x31, 40, 0, 0), Ack);
        // GET_STATUS with a wValue (USB 3.1 PTM status) is not needed.
        assert_eq!(classify(0x80, 0x00, 1, 0, 4), Deny);
        // GET_INTERFACE of an interface that is not the drive's.
        assert_eq!(classify(0x81, 0x0a, 0, 3, 1), Deny);
        assert_eq!(classify(0x80, 0x08, 0, 1, 1), Deny);
    }

    #[test]
    fn error_mapping() {
        assert_eq!(map_error(TransferError::Stall), Status::Stall);
        assert_eq!(map_error(TransferError::Cancelled), Status::Cancelled);
        assert_eq!(map_error(TransferError::Disconnected), Status::IoError);
        assert_eq!(map_error(TransferError::InvalidArgument), Status::Inval);
        assert_eq!(map_error(TransferError::Unknown(5)), Status::IoError);
    }
}
