//! USB Attached SCSI (UAS) over SuperSpeed bulk streams: the information units (IUs)
//! and the transport behind the drive's alternate setting 1.
//!
//! UAS moves each SCSI command over four bulk pipes: the host sends a Command IU on
//! the command pipe, and the command's data and its status (a Sense IU, or a Response
//! IU for task management and transport errors) travel on the data-in, data-out and
//! status pipes in the *stream* whose id is the command's tag. The host queues the
//! status and data requests of a command before (or with) the command itself and may
//! have several commands outstanding, so a command costs one round trip where
//! Bulk-Only Transport costs three (CBW, data, CSW), and sense data comes with the
//! status (no REQUEST SENSE).
//!
//! This drive offers UAS at SuperSpeed only, with up to [`MAX_STREAMS`] streams (tags
//! 1..=32). The USB 2 variant of UAS (no streams, READ READY / WRITE READY IUs) is not
//! offered: at high speed the drive has only its Bulk-Only interface.
//!
//! # Transfer model
//!
//! Each stream holds at most one task. Requests wait per stream and pipe until they can
//! be served: a data-in request completes when it is full or when the command's data
//! ends (possibly with 0 bytes), a data-out request completes when the drive takes its
//! bytes, and a status request completes with the task's Sense IU once the data phase
//! is over (or with a Response IU). A command whose status is CHECK CONDITION leaves
//! waiting data requests to the host, which cancels them on such a status.

use std::collections::{BTreeMap, VecDeque};

use crate::descriptors::{UAS_DATA_IN_ENDPOINT, UAS_DATA_OUT_ENDPOINT, UAS_STATUS_ENDPOINT};
use crate::device::Source;
use crate::scsi::{Outcome, ScsiTarget};
use crate::sense::Sense;
use crate::usb::{Completion, TransferStatus};

/// IU identifiers (first byte of every IU).
pub mod iu_id {
    /// Command IU (host to device, command pipe).
    pub const COMMAND: u8 = 0x01;
    /// Sense IU (device to host, status pipe): a command's status and sense data.
    pub const SENSE: u8 = 0x03;
    /// Response IU (device to host, status pipe): task management and IU errors.
    pub const RESPONSE: u8 = 0x04;
    /// Task Management IU (host to device, command pipe).
    pub const TASK_MANAGEMENT: u8 = 0x05;
}

/// `bPipeID` of the Pipe Usage descriptors.
pub mod pipe_id {
    /// Command pipe (bulk OUT).
    pub const COMMAND: u8 = 1;
    /// Status pipe (bulk IN).
    pub const STATUS: u8 = 2;
    /// Data-in pipe (bulk IN).
    pub const DATA_IN: u8 = 3;
    /// Data-out pipe (bulk OUT).
    pub const DATA_OUT: u8 = 4;
}

/// Response codes of a Response IU.
pub mod response_code {
    /// Task management function complete.
    pub const TMF_COMPLETE: u8 = 0x00;
    /// The IU was not valid.
    pub const INVALID_INFO_UNIT: u8 = 0x02;
    /// Task management function not supported.
    pub const TMF_NOT_SUPPORTED: u8 = 0x04;
    /// Task management function succeeded (QUERY TASK: the task exists).
    pub const TMF_SUCCEEDED: u8 = 0x08;
    /// The IU addressed a logical unit that does not exist.
    pub const INCORRECT_LUN: u8 = 0x09;
    /// The tag is already in use by another task.
    pub const OVERLAPPED_TAG: u8 = 0x0A;
}

/// Task management functions.
pub mod tmf {
    /// ABORT TASK (the task named by the IU's task tag).
    pub const ABORT_TASK: u8 = 0x01;
    /// ABORT TASK SET.
    pub const ABORT_TASK_SET: u8 = 0x02;
    /// CLEAR TASK SET.
    pub const CLEAR_TASK_SET: u8 = 0x04;
    /// LOGICAL UNIT RESET.
    pub const LOGICAL_UNIT_RESET: u8 = 0x08;
    /// I_T NEXUS RESET.
    pub const I_T_NEXUS_RESET: u8 = 0x10;
    /// QUERY TASK.
    pub const QUERY_TASK: u8 = 0x80;
    /// QUERY TASK SET.
    pub const QUERY_TASK_SET: u8 = 0x81;
}

/// SCSI status GOOD.
pub const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
pub const STATUS_CHECK_CONDITION: u8 = 0x02;
/// Length of a Command IU with a CDB of up to 16 bytes.
pub const COMMAND_IU_LEN: usize = 32;
/// Length of a Task Management IU.
pub const TASK_MANAGEMENT_IU_LEN: usize = 16;
/// Length of a Sense IU without its sense data.
pub const SENSE_IU_HEADER_LEN: usize = 16;
/// Length of a Response IU.
pub const RESPONSE_IU_LEN: usize = 8;
/// `MaxStreams` exponent of the stream endpoints' companions: 2^5 = 32 streams.
pub const MAX_STREAMS_EXPONENT: u8 = 5;
/// Streams per stream endpoint, and so the most commands in flight (tags 1..=32).
pub const MAX_STREAMS: u32 = 1 << MAX_STREAMS_EXPONENT;
/// Most requests that may wait on one stream of one pipe; more are refused as invalid
/// (a host has one of each per command). IN requests are also bounded in bytes
/// ([`crate::device::MAX_QUEUED_IN_BYTES`] per stream and pipe).
pub const MAX_WAITING_PER_STREAM: usize = 4;

/// Why an IU from the host was refused. The drive answers with a Response IU
/// (INVALID INFORMATION UNIT) in the IU's stream when the IU names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IuError {
    /// Fewer bytes than the IU's fixed part.
    #[error("information unit of {0} bytes is too short")]
    TooShort(usize),
    /// Not a Command or Task Management IU.
    #[error("unknown information unit id {0:#04x} on the command pipe")]
    UnknownId(u8),
    /// A Command IU whose length does not match its additional CDB length.
    #[error(
        "command IU of {len} bytes does not match its additional CDB length ({additional} dwords)"
    )]
    Length {
        /// Bytes received.
        len: usize,
        /// `ADDITIONAL CDB LENGTH` in dwords.
        additional: u8,
    },
    /// A CDB longer than 16 bytes: no command of a CD drive needs one.
    #[error("additional CDB bytes are not supported (CD drive commands have at most 16 bytes)")]
    AdditionalCdb,
}

/// A decoded Command IU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandIu {
    /// Tag, and so the stream of the command's data and status.
    pub tag: u16,
    /// Priority (bits 6..3) and task attribute (bits 2..0), unused by this drive.
    pub prio_task_attribute: u8,
    /// The 8-byte logical unit number, as sent.
    pub lun: u64,
    /// The command descriptor block (unused bytes zero).
    pub cdb: [u8; 16],
}

impl CommandIu {
    /// Encodes the IU (for tests and hosts).
    pub fn to_bytes(&self) -> [u8; COMMAND_IU_LEN] {
        let mut b = [0u8; COMMAND_IU_LEN];
        b[0] = iu_id::COMMAND;
        b[2..4].copy_from_slice(&self.tag.to_be_bytes());
        b[4] = self.prio_task_attribute;
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        b[16..32].copy_from_slice(&self.cdb);
        b
    }
}

/// A decoded Task Management IU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskManagementIu {
    /// Tag of this IU (the stream its Response IU goes to).
    pub tag: u16,
    /// The function ([`tmf`]).
    pub function: u8,
    /// Tag of the task the function acts on (ABORT TASK, QUERY TASK).
    pub task_tag: u16,
    /// The 8-byte logical unit number, as sent.
    pub lun: u64,
}

impl TaskManagementIu {
    /// Encodes the IU (for tests and hosts).
    pub fn to_bytes(&self) -> [u8; TASK_MANAGEMENT_IU_LEN] {
        let mut b = [0u8; TASK_MANAGEMENT_IU_LEN];
        b[0] = iu_id::TASK_MANAGEMENT;
        b[2..4].copy_from_slice(&self.tag.to_be_bytes());
        b[4] = self.function;
        b[6..8].copy_from_slice(&self.task_tag.to_be_bytes());
        b[8..16].copy_from_slice(&self.lun.to_be_bytes());
        b
    }
}

/// An IU the host sends on the command pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iu {
    /// A SCSI command.
    Command(CommandIu),
    /// A task management function.
    TaskManagement(TaskManagementIu),
}

/// The tag of an IU (bytes 2..4), if it is long enough to have one.
pub fn tag_of(bytes: &[u8]) -> Option<u16> {
    (bytes.len() >= 4).then(|| u16::from_be_bytes([bytes[2], bytes[3]]))
}

/// Decodes and validates an IU from the command pipe.
pub fn parse(bytes: &[u8]) -> Result<Iu, IuError> {
    if bytes.len() < 4 {
        return Err(IuError::TooShort(bytes.len()));
    }
    let tag = u16::from_be_bytes([bytes[2], bytes[3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_be_bytes(b)
    };
    match bytes[0] {
        iu_id::COMMAND => {
            if bytes.len() < COMMAND_IU_LEN {
                return Err(IuError::TooShort(bytes.len()));
            }
            let additional = bytes[6] >> 2;
            if bytes.len() != COMMAND_IU_LEN + 4 * usize::from(additional) {
                return Err(IuError::Length {
                    len: bytes.len(),
                    additional,
                });
            }
            if additional != 0 {
                return Err(IuError::AdditionalCdb);
            }
            let mut cdb = [0u8; 16];
            cdb.copy_from_slice(&bytes[16..32]);
            Ok(Iu::Command(CommandIu {
                tag,
                prio_task_attribute: bytes[4],
                lun: u64_at(8),
                cdb,
            }))
        }
        iu_id::TASK_MANAGEMENT => {
            if bytes.len() < TASK_MANAGEMENT_IU_LEN {
                return Err(IuError::TooShort(bytes.len()));
            }
            Ok(Iu::TaskManagement(TaskManagementIu {
                tag,
                function: bytes[4],
                task_tag: u16::from_be_bytes([bytes[6], bytes[7]]),
                lun: u64_at(8),
            }))
        }
        other => Err(IuError::UnknownId(other)),
    }
}

/// Encodes a Sense IU: `status` of the command with `tag`, and its sense data.
pub fn sense_iu(tag: u16, status: u8, sense: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; SENSE_IU_HEADER_LEN];
    b[0] = iu_id::SENSE;
    b[2..4].copy_from_slice(&tag.to_be_bytes());
    b[6] = status;
    let len = u16::try_from(sense.len()).unwrap_or(u16::MAX);
    b[14..16].copy_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&sense[..usize::from(len)]);
    b
}

/// Encodes a Response IU with `code` ([`response_code`]) for the IU with `tag`.
pub fn response_iu(tag: u16, code: u8) -> [u8; RESPONSE_IU_LEN] {
    let mut b = [0u8; RESPONSE_IU_LEN];
    b[0] = iu_id::RESPONSE;
    b[2..4].copy_from_slice(&tag.to_be_bytes());
    b[7] = code;
    b
}

/// A request waiting on a stream.
#[derive(Debug)]
struct Waiting {
    id: u64,
    /// IN: most bytes wanted.
    max_len: u32,
    /// OUT: the bytes.
    data: Vec<u8>,
}

/// Where a task is.
#[derive(Debug)]
enum Phase {
    DataIn {
        limit: u64,
        sent: u64,
        source: Source,
        failed: bool,
    },
    DataOut {
        device_len: u32,
        param: Vec<u8>,
        cdb: [u8; 16],
    },
    /// The status IU is ready for the status pipe.
    Status(Vec<u8>),
}

/// One stream: at most one task and the requests waiting on each pipe.
#[derive(Debug, Default)]
struct Stream {
    task: Option<Phase>,
    /// Response IUs for the status pipe, ahead of any task status.
    responses: VecDeque<Vec<u8>>,
    status: VecDeque<Waiting>,
    data_in: VecDeque<Waiting>,
    data_out: VecDeque<Waiting>,
}

impl Stream {
    fn is_idle(&self) -> bool {
        self.task.is_none()
            && self.responses.is_empty()
            && self.status.is_empty()
            && self.data_in.is_empty()
            && self.data_out.is_empty()
    }
}

/// The pipe a stream request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamPipe {
    Status,
    DataIn,
    DataOut,
}

impl StreamPipe {
    fn endpoint(self) -> u8 {
        match self {
            StreamPipe::Status => UAS_STATUS_ENDPOINT,
            StreamPipe::DataIn => UAS_DATA_IN_ENDPOINT,
            StreamPipe::DataOut => UAS_DATA_OUT_ENDPOINT,
        }
    }
}

/// The UAS transport state: tasks and waiting requests by stream.
#[derive(Debug, Default)]
pub(crate) struct Uas {
    streams: BTreeMap<u16, Stream>,
}

impl Uas {
    /// Requests waiting on any stream.
    pub fn pending_requests(&self) -> usize {
        self.streams
            .values()
            .map(|s| s.status.len() + s.data_in.len() + s.data_out.len())
            .sum()
    }

    /// Tasks not yet finished (for diagnostics).
    pub fn tasks(&self) -> usize {
        self.streams.values().filter(|s| s.task.is_some()).count()
    }

    /// Forgets every task; waiting requests complete as `Cancelled`.
    pub fn cancel_all(&mut self, out: &mut VecDeque<Completion>) {
        for (_, s) in std::mem::take(&mut self.streams) {
            for (ep, queue) in [
                (UAS_STATUS_ENDPOINT, s.status),
                (UAS_DATA_IN_ENDPOINT, s.data_in),
                (UAS_DATA_OUT_ENDPOINT, s.data_out),
            ] {
                for r in queue {
                    out.push_back(cancelled(r.id, ep));
                }
            }
        }
    }

    /// Cancels the waiting request `id`; false if there is none.
    pub fn cancel(&mut self, id: u64, out: &mut VecDeque<Completion>) -> bool {
        for s in self.streams.values_mut() {
            for (ep, queue) in [
                (UAS_STATUS_ENDPOINT, &mut s.status),
                (UAS_DATA_IN_ENDPOINT, &mut s.data_in),
                (UAS_DATA_OUT_ENDPOINT, &mut s.data_out),
            ] {
                if let Some(i) = queue.iter().position(|r| r.id == id) {
                    queue.remove(i);
                    out.push_back(cancelled(id, ep));
                    return true;
                }
            }
        }
        false
    }

    /// A request on the status, data-in or data-out pipe in `stream` (1..=32; the
    /// caller checked the pipe).
    pub fn submit(
        &mut self,
        pipe: StreamPipe,
        stream: u32,
        request: (u64, u32, Vec<u8>),
        scsi: &mut ScsiTarget,
        out: &mut VecDeque<Completion>,
    ) {
        let (id, max_len, data) = request;
        let ep = pipe.endpoint();
        let tag = match u16::try_from(stream) {
            Ok(t) if t >= 1 && stream <= MAX_STREAMS => t,
            _ => {
                out.push_back(done(id, ep, TransferStatus::Invalid, Vec::new(), 0));
                return;
            }
        };
        let s = self.streams.entry(tag).or_default();
        let queue = match pipe {
            StreamPipe::Status => &mut s.status,
            StreamPipe::DataIn => &mut s.data_in,
            StreamPipe::DataOut => &mut s.data_out,
        };
        let queued: u64 = queue.iter().map(|r| u64::from(r.max_len)).sum();
        if queue.len() >= MAX_WAITING_PER_STREAM
            || queued + u64::from(max_len) > crate::device::MAX_QUEUED_IN_BYTES
        {
            out.push_back(done(id, ep, TransferStatus::Invalid, Vec::new(), 0));
            return;
        }
        queue.push_back(Waiting { id, max_len, data });
        self.pump(tag, scsi, out);
    }

    /// An IU on the command pipe. The OUT transfer itself is completed by the caller.
    pub fn command_pipe(
        &mut self,
        bytes: &[u8],
        scsi: &mut ScsiTarget,
        out: &mut VecDeque<Completion>,
    ) {
        let iu = match parse(bytes) {
            Ok(iu) => iu,
            Err(_) => {
                if let Some(tag) = tag_of(bytes) {
                    self.respond(tag, response_code::INVALID_INFO_UNIT, scsi, out);
                }
                return;
            }
        };
        match iu {
            Iu::Command(c) => self.start(c, scsi, out),
            Iu::TaskManagement(t) => self.task_management(t, scsi, out),
        }
    }

    /// Queues a Response IU for `tag` (ignored for tags without a stream).
    fn respond(
        &mut self,
        tag: u16,
        code: u8,
        scsi: &mut ScsiTarget,
        out: &mut VecDeque<Completion>,
    ) {
        if !valid_tag(tag) {
            return;
        }
        let s = self.streams.entry(tag).or_default();
        if s.responses.len() >= MAX_WAITING_PER_STREAM {
            s.responses.pop_front();
        }
        s.responses.push_back(response_iu(tag, code).to_vec());
        self.pump(tag, scsi, out);
    }

    fn start(&mut self, c: CommandIu, scsi: &mut ScsiTarget, out: &mut VecDeque<Completion>) {
        let tag = c.tag;
        if !valid_tag(tag) {
            return; // no stream to answer on; the host times the command out
        }
        if self.streams.get(&tag).is_some_and(|s| s.task.is_some()) {
            // The tag is in use: the old task ends, the new one is refused.
            if let Some(s) = self.streams.get_mut(&tag) {
                s.task = None;
            }
            self.respond(tag, response_code::OVERLAPPED_TAG, scsi, out);
            return;
        }
        if c.lun != 0 {
            self.respond(tag, response_code::INCORRECT_LUN, scsi, out);
            return;
        }
        let outcome = scsi.execute(&c.cdb);
        let generation = scsi.medium_generation();
        let s = self.streams.entry(tag).or_default();
        s.task = Some(match outcome {
            Outcome::Good if !s.data_in.is_empty() => Phase::DataIn {
                // The host expected data: end its transfer with none.
                limit: 0,
                sent: 0,
                source: Source::new(crate::scsi::DataIn::Bytes(Vec::new()), generation),
                failed: false,
            },
            Outcome::Good => Phase::Status(sense_iu(tag, STATUS_GOOD, &[])),
            Outcome::Check(sense) => Phase::Status(check_iu(tag, sense)),
            Outcome::DataIn(d) => Phase::DataIn {
                limit: d.len(),
                sent: 0,
                source: Source::new(d, generation),
                failed: false,
            },
            Outcome::DataOut(n) => Phase::DataOut {
                device_len: n,
                param: Vec::new(),
                cdb: c.cdb,
            },
        });
        if matches!(s.task, Some(Phase::DataOut { device_len: 0, .. })) {
            s.task = Some(finish_data_out(tag, &c.cdb, &[], scsi));
        }
        self.pump(tag, scsi, out);
    }

    fn task_management(
        &mut self,
        t: TaskManagementIu,
        scsi: &mut ScsiTarget,
        out: &mut VecDeque<Completion>,
    ) {
        if !valid_tag(t.tag) {
            return;
        }
        if self.streams.get(&t.tag).is_some_and(|s| s.task.is_some()) {
            self.respond(t.tag, response_code::OVERLAPPED_TAG, scsi, out);
            return;
        }
        let code = if t.lun != 0 {
            response_code::INCORRECT_LUN
        } else {
            match t.function {
                tmf::ABORT_TASK => {
                    if let Some(s) = self.streams.get_mut(&t.task_tag) {
                        s.task = None;
                    }
                    response_code::TMF_COMPLETE
                }
                tmf::ABORT_TASK_SET | tmf::CLEAR_TASK_SET => {
                    self.end_all_tasks();
                    response_code::TMF_COMPLETE
                }
                tmf::LOGICAL_UNIT_RESET | tmf::I_T_NEXUS_RESET => {
                    self.end_all_tasks();
                    scsi.reset();
                    response_code::TMF_COMPLETE
                }
                tmf::QUERY_TASK => {
                    if self
                        .streams
                        .get(&t.task_tag)
                        .is_some_and(|s| s.task.is_some())
                    {
                        response_code::TMF_SUCCEEDED
                    } else {
                        response_code::TMF_COMPLETE
                    }
                }
                tmf::QUERY_TASK_SET => {
                    if self.tasks() > 0 {
                        response_code::TMF_SUCCEEDED
                    } else {
                        response_code::TMF_COMPLETE
                    }
                }
                _ => response_code::TMF_NOT_SUPPORTED,
            }
        };
        self.respond(t.tag, code, scsi, out);
    }

    fn end_all_tasks(&mut self) {
        for s in self.streams.values_mut() {
            s.task = None;
        }
    }

    /// Serves the requests of stream `tag` until none can make progress.
    fn pump(&mut self, tag: u16, scsi: &mut ScsiTarget, out: &mut VecDeque<Completion>) {
        let Some(s) = self.streams.get_mut(&tag) else {
            return;
        };
        loop {
            let mut progressed = false;
            match &mut s.task {
                Some(Phase::DataIn {
                    limit,
                    sent,
                    source,
                    failed,
                }) => {
                    if let Some(r) = s.data_in.pop_front() {
                        let want = u64::from(r.max_len).min(*limit - *sent) as usize;
                        let mut buf = Vec::with_capacity(want);
                        let (n, read_failed) = source.take(want, scsi, &mut buf);
                        *sent += n as u64;
                        if read_failed || n < want {
                            *failed = true;
                            *limit = *sent;
                        }
                        let len = buf.len() as u32;
                        out.push_back(done(
                            r.id,
                            UAS_DATA_IN_ENDPOINT,
                            TransferStatus::Success,
                            buf,
                            len,
                        ));
                        if *sent == *limit {
                            let iu = if *failed {
                                check_iu(
                                    tag,
                                    scsi.pending_sense()
                                        .unwrap_or(Sense::UNRECOVERED_READ_ERROR),
                                )
                            } else {
                                sense_iu(tag, STATUS_GOOD, &[])
                            };
                            s.task = Some(Phase::Status(iu));
                        }
                        progressed = true;
                    }
                }
                Some(Phase::DataOut {
                    device_len,
                    param,
                    cdb,
                }) => {
                    if let Some(r) = s.data_out.pop_front() {
                        let room = (*device_len as usize).saturating_sub(param.len());
                        param.extend_from_slice(&r.data[..r.data.len().min(room)]);
                        let len = u32::try_from(r.data.len()).unwrap_or(u32::MAX);
                        out.push_back(done(
                            r.id,
                            UAS_DATA_OUT_ENDPOINT,
                            TransferStatus::Success,
                            Vec::new(),
                            len,
                        ));
                        if param.len() >= *device_len as usize {
                            let (cdb, param) = (*cdb, std::mem::take(param));
                            s.task = Some(finish_data_out(tag, &cdb, &param, scsi));
                        }
                        progressed = true;
                    }
                }
                Some(Phase::Status(_)) | None => {}
            }
            if !s.status.is_empty() {
                let iu = if let Some(iu) = s.responses.pop_front() {
                    Some(iu)
                } else if matches!(s.task, Some(Phase::Status(_))) {
                    match s.task.take() {
                        Some(Phase::Status(iu)) => Some(iu),
                        _ => None,
                    }
                } else {
                    None
                };
                if let Some((iu, r)) = iu.and_then(|iu| Some((iu, s.status.pop_front()?))) {
                    if iu.len() > r.max_len as usize {
                        out.push_back(done(
                            r.id,
                            UAS_STATUS_ENDPOINT,
                            TransferStatus::Babble,
                            Vec::new(),
                            0,
                        ));
                    } else {
                        let len = iu.len() as u32;
                        out.push_back(done(
                            r.id,
                            UAS_STATUS_ENDPOINT,
                            TransferStatus::Success,
                            iu,
                            len,
                        ));
                    }
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        if s.is_idle() {
            self.streams.remove(&tag);
        }
    }
}

/// Tags that name a stream.
fn valid_tag(tag: u16) -> bool {
    tag >= 1 && u32::from(tag) <= MAX_STREAMS
}

fn check_iu(tag: u16, sense: Sense) -> Vec<u8> {
    sense_iu(tag, STATUS_CHECK_CONDITION, &sense.to_fixed())
}

fn finish_data_out(tag: u16, cdb: &[u8; 16], param: &[u8], scsi: &mut ScsiTarget) -> Phase {
    Phase::Status(match scsi.finish_data_out(cdb, param) {
        Ok(()) => sense_iu(tag, STATUS_GOOD, &[]),
        Err(sense) => check_iu(tag, sense),
    })
}

fn done(id: u64, endpoint: u8, status: TransferStatus, data: Vec<u8>, length: u32) -> Completion {
    Completion {
        id,
        endpoint,
        status,
        data,
        length,
    }
}

fn cancelled(id: u64, endpoint: u8) -> Completion {
    done(id, endpoint, TransferStatus::Cancelled, Vec::new(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_iu_round_trip_and_errors() {
        let c = CommandIu {
            tag: 7,
            prio_task_attribute: 0,
            lun: 0,
            cdb: [0x28, 0, 0, 0, 0, 16, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
        };
        assert_eq!(parse(&c.to_bytes()), Ok(Iu::Command(c)));
        assert_eq!(parse(&[1, 0, 0]), Err(IuError::TooShort(3)));
        assert_eq!(parse(&c.to_bytes()[..31]), Err(IuError::TooShort(31)));
        let mut long = c.to_bytes().to_vec();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse(&long),
            Err(IuError::Length {
                len: 36,
                additional: 0
            })
        );
        long[6] = 1 << 2;
        assert_eq!(parse(&long), Err(IuError::AdditionalCdb));
        let mut b = c.to_bytes();
        b[0] = 0x06;
        assert_eq!(parse(&b), Err(IuError::UnknownId(0x06)));
        assert_eq!(tag_of(&b), Some(7));
        assert_eq!(tag_of(&b[..3]), None);
    }

    #[test]
    fn task_management_iu_round_trip() {
        let t = TaskManagementIu {
            tag: 3,
            function: tmf::ABORT_TASK,
            task_tag: 2,
            lun: 0,
        };
        assert_eq!(parse(&t.to_bytes()), Ok(Iu::TaskManagement(t)));
        assert_eq!(parse(&t.to_bytes()[..15]), Err(IuError::TooShort(15)));
    }

    #[test]
    fn sense_and_response_ius() {
        let s = sense_iu(
            0x0102,
            STATUS_CHECK_CONDITION,
            &Sense::MEDIUM_NOT_PRESENT.to_fixed(),
        );
        assert_eq!(s.len(), 16 + 18);
        assert_eq!(&s[..8], &[0x03, 0, 0x01, 0x02, 0, 0, 0x02, 0]);
        assert_eq!(&s[14..16], &[0, 18]);
        assert_eq!((s[16 + 2], s[16 + 12]), (0x02, 0x3A));
        assert_eq!(sense_iu(1, STATUS_GOOD, &[]).len(), 16);
        assert_eq!(
            response_iu(9, response_code::OVERLAPPED_TAG),
            [0x04, 0, 0, 9, 0, 0, 0, 0x0A]
        );
    }
}
