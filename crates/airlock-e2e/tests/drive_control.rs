//! A hostile disc attacks the terminal's drive over USB control requests: the terminal VM
//! (guarded, a real emulated USB CD drive on its xHCI) forwards the drive with `airlock
//! open` through the broker to a desktop; the disc carries `usb-control` (built
//! statically), which the desktop's test control channel runs as a disc's code would:
//! vendor requests IN and OUT, SET_DESCRIPTOR, SET_FEATURE, and with the interface taken
//! from the guest's `usb-storage` the DFU requests DETACH, DNLOAD and GETSTATUS. Every
//! one is answered with a stall in the guest, the drive forwarder never sends one to the
//! drive, the broker writes one `usb_control_refused` audit record for the lease with
//! the count and each request, and the drive still reads correctly afterwards (the
//! guest's `usb-storage` probes it again and the desktop reads the whole disc).

use airlock_e2e::{begin_or_skip, broker, ensure_says, open_in_terminal_vm};
use airlock_testkit::artifacts::{terminal_vm, usb_control};
use airlock_testkit::broker::TERMINAL_TOKEN;
use airlock_testkit::iso::{filler, make_iso};
use airlock_testkit::{block_on, TerminalOptions, TerminalVm};
use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::time::{Duration, Instant};

/// What `usb-control` sends, as the forwarder reports it: (bmRequestType, bRequest,
/// wValue, wIndex), the drive's interface being 0.
const SENT: [(u8, u8, u16, u16); 9] = [
    (0xc0, 0x01, 0, 0),      // vendor IN, device
    (0x40, 0x02, 0x0100, 0), // vendor OUT, device
    (0x41, 0xe0, 0, 0),      // vendor OUT, interface
    (0xc1, 0xe1, 0, 0),      // vendor IN, interface
    (0x00, 0x07, 0x0100, 0), // SET_DESCRIPTOR (device)
    (0x00, 0x03, 1, 0),      // SET_FEATURE(DEVICE_REMOTE_WAKEUP)
    (0x21, 0x00, 1000, 0),   // DFU_DETACH
    (0x21, 0x01, 0, 0),      // DFU_DNLOAD
    (0xa1, 0x03, 0, 0),      // DFU_GETSTATUS
];

#[test]
fn a_disc_cannot_send_vendor_dfu_or_descriptor_requests_to_the_terminals_drive() -> Result<()> {
    let run = begin_or_skip!();
    let (bins, t0) = (run.bins, run.started);
    // The hostile disc: the tool, and data to read before and after the attack.
    let tool = std::fs::read(usb_control()?)?;
    let disc = make_iso(
        run.tmp.path(),
        "hostile",
        "HOSTILE",
        &[
            ("usb-control", tool),
            ("data/records.bin", filler(12, 3 << 20)),
            (
                "README.TXT",
                b"A disc whose code attacks the drive.\n".to_vec(),
            ),
        ],
    )?;
    let broker = broker(1)?;
    let mut term = TerminalVm::boot(
        terminal_vm()?,
        broker.port,
        &TerminalOptions::guarded(Some(disc.iso.clone()), bins.tcp_pump()),
    )?;
    term.wait_ready(Duration::from_secs(120))?;
    block_on(broker.wait_clean(1, Duration::from_secs(180)))?;
    term.shell
        .sh(&format!("umask 077; echo {TERMINAL_TOKEN} >/tmp/token"))?;
    let open = format!(
        "airlock open --broker {} --token-file /tmp/token --user dr-hostile --no-display \
         --device auto --wait 0",
        term.broker_url
    );
    let desktop = "desk-01";
    let serial = broker.serial_log(desktop);
    let mut lease = String::new();
    open_in_terminal_vm(&mut term, &serial, &open, &disc, |term| {
        lease = block_on(broker.desktop(desktop))?["lease"]
            .as_str()
            .context("the desktop has no lease")?
            .to_string();
        // The disc's code, run from RAM as it would run itself.
        let mut guest = broker.control(desktop)?;
        let mark = serial.mark();
        let (out, code) = guest.run(
            "cp /media/sr*/usb-control /tmp/usb-control && chmod 755 /tmp/usb-control && \
             /tmp/usb-control 2>&1",
            Duration::from_secs(120),
        )?;
        println!("usb-control in the desktop (exit {code}):\n{out}");
        ensure!(
            code == 0 && out.contains("USB-CONTROL-DONE sent=9 stalled=9"),
            "not every request was answered with a stall (exit {code}):\n{out}\nairlock open: {}",
            term.forward_log("open").unwrap_or_default()
        );
        // usb-storage got the drive back and probed it through the allowlist: the
        // desktop reads the whole disc again, correctly.
        let again = serial
            .wait_cd(mark, Duration::from_secs(90))
            .with_context(|| {
                format!(
                    "the desktop did not read the disc again; airlock open: {}",
                    term.forward_log("open").unwrap_or_default()
                )
            })?;
        again.check(&disc)?;
        // The terminal kept it to itself: its log names the refusals.
        let log = term.forward_log("open")?;
        ensure_says(&log, &["refused a USB control request from the desktop"])?;
        Ok(())
    })?;
    let out = term.forward_log("open")?;
    ensure_says(&out, &["reporting them to the broker"])?;

    // One record for the lease, after its end and the grace for late reports.
    let grace = Duration::from_millis(airlock_core::wire::USB_REFUSED_GRACE_MS as u64);
    let deadline = Instant::now() + grace + Duration::from_secs(15);
    let records = loop {
        let r = block_on(broker.usb_control_refused())?;
        if !r.is_empty() || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    ensure!(
        records.len() == 1,
        "usb_control_refused records: {records:?}"
    );
    let (on, details) = &records[0];
    println!("usb_control_refused of lease {on}: {details}");
    ensure!(on == &lease, "the record is of lease {on}, not {lease}");
    let want: Vec<serde_json::Value> = SENT
        .iter()
        .map(|&(rt, r, v, i)| json!({"request_type": rt, "request": r, "value": v, "index": i}))
        .collect();
    ensure!(
        details["count"] == SENT.len() && details["requests"] == json!(want),
        "the record does not list exactly the disc's requests: {details}"
    );
    airlock_testkit::audit::check_invariants(&block_on(broker.audit())?)?;
    println!("test took {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
