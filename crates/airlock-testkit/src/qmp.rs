//! A QMP client for the VMs the kit starts itself (the broker's desktops are the
//! broker's: tests reach them through its API). Commands only; events are skipped.
use anyhow::{bail, ensure, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A QMP connection in command mode.
pub struct Qmp {
    r: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects (waiting up to 20 s for the socket) and leaves negotiation mode.
    pub fn connect(path: &Path) -> Result<Qmp> {
        let s = crate::net::connect_unix(path, Duration::from_secs(20))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut q = Qmp {
            r: BufReader::new(s),
        };
        let mut greeting = String::new();
        q.r.read_line(&mut greeting)?;
        ensure!(greeting.contains("QMP"), "no QMP greeting: {greeting}");
        q.cmd("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// Runs a command; an error reply is an `Err`.
    pub fn cmd(&mut self, execute: &str, arguments: Value) -> Result<Value> {
        writeln!(
            self.r.get_mut(),
            "{}",
            json!({"execute": execute, "arguments": arguments})
        )?;
        loop {
            let mut line = String::new();
            ensure!(self.r.read_line(&mut line)? > 0, "QMP closed");
            let v: Value = serde_json::from_str(&line)?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {execute}: {e}");
            }
            return Ok(v["return"].clone());
        }
    }

    /// Hot-plugs a USB CD drive: `usb-bot` `id` (on `xhci.0`) with `scsi-cd` `id-cd`,
    /// holding `iso` (as block node `node`) or empty. A hot-plugged usb-bot is attached
    /// to the bus only when told to, after its SCSI device exists.
    pub fn plug_cd(&mut self, id: &str, iso: Option<&Path>, node: &str) -> Result<()> {
        self.cmd(
            "device_add",
            json!({"driver": "usb-bot", "id": id, "bus": "xhci.0", "serial": format!("{id}-serial")}),
        )?;
        let mut cd =
            json!({"driver": "scsi-cd", "id": format!("{id}-cd"), "bus": format!("{id}.0")});
        if let Some(iso) = iso {
            self.cmd(
                "blockdev-add",
                json!({"driver": "raw", "node-name": node, "read-only": true,
                       "file": {"driver": "file", "filename": iso, "read-only": true}}),
            )?;
            cd["drive"] = json!(node);
        }
        self.cmd("device_add", cd)?;
        self.cmd(
            "qom-set",
            json!({"path": format!("/machine/peripheral/{id}"), "property": "attached", "value": true}),
        )?;
        Ok(())
    }

    /// Puts `iso` in the scsi-cd `cd` (opening and closing the tray).
    pub fn insert(&mut self, cd: &str, iso: &Path) -> Result<()> {
        self.cmd(
            "blockdev-change-medium",
            json!({"id": cd, "filename": iso, "format": "raw", "read-only-mode": "read-only"}),
        )?;
        Ok(())
    }

    /// Limits reads from the scsi-cd `cd` to `bytes_per_second` (QEMU block throttling;
    /// the limit stays across medium changes). Needs a medium.
    pub fn throttle_reads(&mut self, cd: &str, bytes_per_second: u64) -> Result<()> {
        self.cmd(
            "block_set_io_throttle",
            json!({"id": cd, "bps": 0, "bps_rd": bytes_per_second, "bps_wr": 0,
                   "iops": 0, "iops_rd": 0, "iops_wr": 0}),
        )?;
        Ok(())
    }

    /// The VM's screen as QEMU renders it (QMP `screendump`, PPM), read back.
    pub fn screendump(&mut self, path: &Path) -> Result<crate::image::Image> {
        self.screendump_as(path, path)
    }

    /// [`Qmp::screendump`] into `qemu_path` as QEMU names it (relative to its working
    /// directory, for a QEMU that may write nowhere else), read back from `path`.
    pub fn screendump_as(&mut self, qemu_path: &Path, path: &Path) -> Result<crate::image::Image> {
        self.cmd("screendump", json!({ "filename": qemu_path }))?;
        crate::image::Image::read_ppm(path)
    }

    /// Ejects the medium of the scsi-cd `cd`.
    pub fn eject(&mut self, cd: &str) -> Result<()> {
        self.cmd("eject", json!({"id": cd, "force": true}))?;
        Ok(())
    }

    /// `device_del`, then waits (up to 20 s) until the device is gone.
    pub fn unplug(&mut self, id: &str) -> Result<()> {
        self.cmd("device_del", json!({"id": id}))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.cmd("qom-list", json!({"path": "/machine/peripheral"}))?;
            let present = r
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["name"] == id));
            if !present {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{id} was not unplugged");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
