//! `usb-control`: what hostile code on a disc would send to the USB drive it was read
//! from, to re-flash or reconfigure it; run inside a desktop guest by the end-to-end
//! tests (statically linked: the demo guest has no libc; see
//! `airlock_testkit::artifacts::usb_control`). Through usbfs (`nusb`), to the one USB
//! device with a mass-storage interface: vendor requests IN and OUT (to the device and
//! to the interface), SET_DESCRIPTOR and SET_FEATURE(DEVICE_REMOTE_WAKEUP) while the
//! guest's `usb-storage` keeps the drive; then, with the interface taken from
//! `usb-storage` (usbfs only passes class requests to an interface its caller claimed),
//! the DFU class requests DFU_DETACH, DFU_DNLOAD and DFU_GETSTATUS; then the interface is
//! given back to `usb-storage`, which probes the drive again.
//!
//! One line per request, `USB-CONTROL <name> <outcome>` (`stall`, `ok <bytes>`,
//! `error <what>`), and a last line `USB-CONTROL-DONE sent=N stalled=M`. Exit status 0
//! when every request was answered with a stall, 1 otherwise, 2 when no drive was found.
#![forbid(unsafe_code)]

use nusb::transfer::{ControlIn, ControlOut, ControlType, Recipient, TransferError};
use nusb::MaybeFuture;
use std::process::ExitCode;
use std::time::Duration;

const MASS_STORAGE: u8 = 0x08;
const TIMEOUT: Duration = Duration::from_secs(3);

/// One request to send.
struct Request {
    name: &'static str,
    control_type: ControlType,
    recipient: Recipient,
    request: u8,
    value: u16,
    index: u16,
    /// IN: bytes wanted; OUT: the data.
    dir: Dir,
    /// Sent through the claimed interface (class requests to it).
    claimed: bool,
}

enum Dir {
    In(u16),
    Out(Vec<u8>),
}

fn requests(interface: u8) -> Vec<Request> {
    let i = u16::from(interface);
    let r = |name, control_type, recipient, request, value, index, dir, claimed| Request {
        name,
        control_type,
        recipient,
        request,
        value,
        index,
        dir,
        claimed,
    };
    use ControlType::{Class, Standard, Vendor};
    use Recipient::{Device, Interface};
    vec![
        r(
            "vendor-in-device",
            Vendor,
            Device,
            0x01,
            0,
            0,
            Dir::In(64),
            false,
        ),
        r(
            "vendor-out-device",
            Vendor,
            Device,
            0x02,
            0x0100,
            0,
            Dir::Out(vec![0xa5; 32]),
            false,
        ),
        r(
            "vendor-out-interface",
            Vendor,
            Interface,
            0xe0,
            0,
            i,
            Dir::Out(vec![0x5a; 16]),
            false,
        ),
        r(
            "vendor-in-interface",
            Vendor,
            Interface,
            0xe1,
            0,
            i,
            Dir::In(16),
            false,
        ),
        r(
            "set-descriptor",
            Standard,
            Device,
            0x07,
            0x0100,
            0,
            Dir::Out(device_descriptor()),
            false,
        ),
        r(
            "set-feature-remote-wakeup",
            Standard,
            Device,
            0x03,
            1,
            0,
            Dir::Out(Vec::new()),
            false,
        ),
        r(
            "dfu-detach",
            Class,
            Interface,
            0x00,
            1000,
            i,
            Dir::Out(Vec::new()),
            true,
        ),
        r(
            "dfu-dnload",
            Class,
            Interface,
            0x01,
            0,
            i,
            Dir::Out(vec![0xee; 64]),
            true,
        ),
        r(
            "dfu-getstatus",
            Class,
            Interface,
            0x03,
            0,
            i,
            Dir::In(6),
            true,
        ),
    ]
}

/// A device descriptor of a keyboard-maker's VID, as a BadUSB re-flash would set.
fn device_descriptor() -> Vec<u8> {
    vec![
        18, 1, 0x00, 0x02, 0, 0, 0, 64, 0x6d, 0x04, 0x1c, 0xc3, 0x00, 0x01, 1, 2, 0, 1,
    ]
}

/// What became of one request.
fn outcome(r: Result<usize, TransferError>) -> (String, bool) {
    match r {
        Err(TransferError::Stall) => ("stall".into(), true),
        Ok(n) => (format!("ok {n}"), false),
        Err(e) => (format!("error {e}"), false),
    }
}

fn send(
    device: &nusb::Device,
    interface: Option<&nusb::Interface>,
    q: &Request,
) -> Result<usize, TransferError> {
    match &q.dir {
        Dir::In(length) => {
            let c = ControlIn {
                control_type: q.control_type,
                recipient: q.recipient,
                request: q.request,
                value: q.value,
                index: q.index,
                length: *length,
            };
            match interface {
                Some(i) => i.control_in(c, TIMEOUT).wait(),
                None => device.control_in(c, TIMEOUT).wait(),
            }
            .map(|d| d.len())
        }
        Dir::Out(data) => {
            let c = ControlOut {
                control_type: q.control_type,
                recipient: q.recipient,
                request: q.request,
                value: q.value,
                index: q.index,
                data,
            };
            match interface {
                Some(i) => i.control_out(c, TIMEOUT).wait(),
                None => device.control_out(c, TIMEOUT).wait(),
            }
            .map(|()| data.len())
        }
    }
}

fn main() -> ExitCode {
    let found = nusb::list_devices().wait().ok().and_then(|mut devices| {
        devices.find_map(|d| {
            let n = d
                .interfaces()
                .find(|i| i.class() == MASS_STORAGE)?
                .interface_number();
            Some((d, n))
        })
    });
    let Some((info, number)) = found else {
        println!("USB-CONTROL-ERROR no USB device with a mass-storage interface");
        return ExitCode::from(2);
    };
    println!(
        "USB-CONTROL device {:04x}:{:04x} interface {number}",
        info.vendor_id(),
        info.product_id()
    );
    let device = match info.open().wait() {
        Ok(d) => d,
        Err(e) => {
            println!("USB-CONTROL-ERROR cannot open the device: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut sent, mut stalled) = (0, 0);
    let mut claimed: Option<nusb::Interface> = None;
    for q in requests(number) {
        if q.claimed && claimed.is_none() {
            match device.detach_and_claim_interface(number).wait() {
                Ok(i) => claimed = Some(i),
                Err(e) => {
                    println!("USB-CONTROL-ERROR cannot claim interface {number}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        let via = if q.claimed { claimed.as_ref() } else { None };
        let (text, stall) = outcome(send(&device, via, &q));
        println!("USB-CONTROL {} {text}", q.name);
        sent += 1;
        if stall {
            stalled += 1;
        }
    }
    // Dropping the interface gives it back to the kernel driver (usb-storage).
    drop(claimed);
    println!("USB-CONTROL-DONE sent={sent} stalled={stalled}");
    if sent == stalled {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
