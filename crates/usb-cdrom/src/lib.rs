//! An emulated USB CD/DVD-ROM drive, as pure logic.
//!
//! The crate models a USB mass-storage optical drive down to the transfer level, as a
//! USB 3.0 SuperSpeed device (the default) or a USB 2.0 high-speed one
//! ([`DeviceConfig::speed`]): device/configuration/BOS/string descriptors and the
//! standard and Bulk-Only Transport (BOT) class requests on endpoint 0, the BOT state
//! machine on the
//! bulk endpoints (CBW, data phase, CSW, the thirteen host/device mismatch cases, stalls
//! and reset recovery), USB Attached SCSI over SuperSpeed bulk streams as alternate
//! setting 1 ([`uas`]: command IUs, data and status in each command's stream, task
//! management, up to 32 commands in flight), and an SCSI/MMC logical unit with the
//! commands Linux and Windows send to a CD drive. The disc is any [`Medium`] that hands out 2048-byte sectors; the
//! crate does no I/O of its own except in [`IsoFile`], which reads an image file.
//!
//! It is written to sit behind a usbredir *host* session: the session turns usbredir
//! control and bulk packets into calls on [`UsbCdrom`] and sends back what
//! [`UsbCdrom::take_completions`] yields. Bulk IN requests may be queued several at a
//! time (QEMU pipelines and combines them); they complete in order, each filled like a
//! host controller would fill it (see [`device`]).
//!
//! ```
//! use usb_cdrom::{
//!     Cbw, Csw, CswStatus, DeviceConfig, MemoryMedium, UsbCdrom, BULK_IN_ENDPOINT,
//!     BULK_OUT_ENDPOINT,
//! };
//!
//! let disc = MemoryMedium::patterned("demo", 64);
//! let mut drive = UsbCdrom::with_medium(DeviceConfig::default(), Box::new(disc));
//! let cbw = |tag: u32, len: u32, cdb: &[u8]| {
//!     let mut cb = [0u8; 16];
//!     cb[..cdb.len()].copy_from_slice(cdb);
//!     let cb_length = cdb.len() as u8;
//!     Cbw { tag, data_transfer_length: len, data_in: true, lun: 0, cb_length, cb }.to_bytes()
//! };
//!
//! // After power-on the first command fails with a unit attention (06/29/00) that
//! // REQUEST SENSE then reports and clears, as on a real drive.
//! drive.submit_bulk_out(BULK_OUT_ENDPOINT, 1, &cbw(1, 0, &[0x00, 0, 0, 0, 0, 0]));
//! drive.submit_bulk_in(BULK_IN_ENDPOINT, 2, 13);
//! let done = drive.take_completions();
//! assert_eq!(Csw::parse(&done[1].data).unwrap().status, CswStatus::Failed);
//! drive.submit_bulk_out(BULK_OUT_ENDPOINT, 3, &cbw(2, 18, &[0x03, 0, 0, 0, 18, 0]));
//! drive.submit_bulk_in(BULK_IN_ENDPOINT, 4, 18);
//! drive.submit_bulk_in(BULK_IN_ENDPOINT, 5, 13);
//! let done = drive.take_completions();
//! assert_eq!((done[1].data[2], done[1].data[12]), (0x06, 0x29));
//!
//! // READ(10) of 8 sectors (16 KiB) from LBA 16. The IN requests may be queued before
//! // or after the CBW; here one of 8 KiB and one combined 1 MiB request that takes the
//! // rest of the data and, as the data ends on a packet boundary (1024 bytes at
//! // SuperSpeed), the CSW too.
//! drive.submit_bulk_out(BULK_OUT_ENDPOINT, 6, &cbw(3, 16384, &[0x28, 0, 0, 0, 0, 16, 0, 0, 8, 0]));
//! drive.submit_bulk_in(BULK_IN_ENDPOINT, 7, 8192);
//! drive.submit_bulk_in(BULK_IN_ENDPOINT, 8, 1 << 20);
//! let done = drive.take_completions();
//! assert_eq!(done.iter().map(|c| c.id).collect::<Vec<_>>(), [6, 7, 8]);
//! assert_eq!(done[1].data.len(), 8192);
//! assert_eq!(done[2].data.len(), 8192 + 13);
//! let csw = Csw::parse(&done[2].data[8192..]).unwrap();
//! assert_eq!((csw.tag, csw.status, csw.residue), (3, CswStatus::Passed, 0));
//! ```
#![forbid(unsafe_code)]

pub mod bot;
pub mod config;
pub mod descriptors;
pub mod device;
pub mod medium;
pub mod mmc;
pub mod scsi;
pub mod sense;
pub mod uas;
pub mod usb;

pub use bot::{Cbw, CbwError, Csw, CswStatus};
pub use config::{DeviceConfig, OverrunPolicy};
pub use descriptors::{
    Descriptors, BULK_IN_ENDPOINT, BULK_MAX_PACKET, BULK_MAX_PACKET_SUPER_SPEED, BULK_OUT_ENDPOINT,
};
pub use device::UsbCdrom;
pub use medium::{IsoFile, Medium, MediumError, MemoryMedium, SECTOR_SIZE};
pub use scsi::{MediumState, Outcome, ScsiTarget};
pub use sense::Sense;
pub use usb::{
    Completion, ControlResult, EndpointInfo, InterfaceInfo, SetupPacket, Speed, TransferStatus,
    TransferType,
};
