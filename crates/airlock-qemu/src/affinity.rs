//! Pinning threads to host CPUs ([`CpuPlacement`]): a desktop's vCPU threads to the
//! desktop CPUs, every other QEMU thread (main loop, device models, I/O workers, which
//! inherit the main thread's CPUs when QEMU starts them later) and the broker to the
//! housekeeping CPUs.
use crate::qmp::Qmp;
use crate::QemuError;
use airlock_core::{CpuList, CpuPlacement};
use std::time::Duration;

fn to_set(cpus: &CpuList) -> rustix::thread::CpuSet {
    let mut set = rustix::thread::CpuSet::new();
    for c in cpus.iter() {
        set.set(usize::from(c));
    }
    set
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Result<CpuList, QemuError> {
    let set = rustix::thread::sched_getaffinity(None)
        .map_err(std::io::Error::from)
        .map_err(crate::io_error("read this process's CPU affinity"))?;
    Ok(CpuList::from_cpus(
        (0..=airlock_core::cpus::MAX_CPU).filter(|c| set.is_set(usize::from(*c))),
    ))
}

/// Pins one thread (`tid`; a process id names its main thread).
pub fn pin_thread(tid: i32, cpus: &CpuList) -> Result<(), QemuError> {
    let pid = rustix::process::Pid::from_raw(tid).ok_or_else(|| QemuError::Io {
        what: format!("pin thread {tid}"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    rustix::thread::sched_setaffinity(Some(pid), &to_set(cpus))
        .map_err(std::io::Error::from)
        .map_err(crate::io_error(format!("pin thread {tid} to CPUs {cpus}")))
}

/// The thread ids of process `pid`.
pub fn threads(pid: i32) -> Result<Vec<i32>, QemuError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(crate::io_error(format!(
        "list the threads of process {pid}"
    )))?;
    Ok(dir
        .flatten()
        .filter_map(|t| t.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// Pins every current thread of process `pid`; returns how many. Threads it starts
/// later inherit the CPUs of the thread that starts them.
pub fn pin_process(pid: i32, cpus: &CpuList) -> Result<usize, QemuError> {
    let tids = threads(pid)?;
    for tid in &tids {
        match pin_thread(*tid, cpus) {
            Ok(()) => {}
            // A thread that ended since the listing needs no pinning.
            Err(_) if !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(tids.len())
}

/// The CPUs a thread may run on, as the kernel reports them (`Cpus_allowed_list`).
pub fn thread_cpus(pid: i32, tid: i32) -> Option<CpuList> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    CpuList::parse(line.trim()).ok()
}

/// The thread ids of a VM's vCPUs (`query-cpus-fast`).
pub async fn vcpu_threads(qmp: &Qmp) -> Result<Vec<i32>, crate::QmpError> {
    let v = qmp
        .execute("query-cpus-fast", None, Duration::from_secs(5))
        .await?;
    Ok(v.as_array()
        .map(|cpus| {
            cpus.iter()
                .filter_map(|c| c.get("thread-id")?.as_i64())
                .filter_map(|t| i32::try_from(t).ok())
                .collect()
        })
        .unwrap_or_default())
}

/// Applies `placement` to a running VM: all of its threads to the housekeeping CPUs,
/// then its vCPU threads to the desktop CPUs. Returns the vCPU thread ids.
pub async fn place_vm(
    desktop: &str,
    pid: i32,
    qmp: &Qmp,
    placement: &CpuPlacement,
) -> Result<Vec<i32>, QemuError> {
    pin_process(pid, placement.housekeeping())?;
    let vcpus = vcpu_threads(qmp).await.map_err(crate::qmp_error(desktop))?;
    if vcpus.is_empty() {
        return Err(QemuError::Operation {
            desktop: desktop.to_owned(),
            what: "CPU placement".into(),
            reason: "QEMU reported no vCPU threads".into(),
        });
    }
    for tid in &vcpus {
        pin_thread(*tid, placement.desktops())?;
    }
    tracing::debug!(desktop, ?vcpus, desktops = %placement.desktops(), housekeeping = %placement.housekeeping(), "pinned QEMU threads");
    Ok(vcpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_reads_back_a_thread() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let first = CpuList::from_cpus(allowed.iter().take(1));
        let pid = i32::try_from(std::process::id()).unwrap();
        // A thread of our own, so the test runner's other threads are left alone.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        pin_thread(tid, &first).unwrap();
        assert_eq!(thread_cpus(pid, tid), Some(first.clone()));
        pin_thread(tid, &allowed).unwrap();
        assert_eq!(thread_cpus(pid, tid), Some(allowed));
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(threads(pid).unwrap().contains(&pid));
        assert!(pin_thread(0, &first).is_err());
    }
}
