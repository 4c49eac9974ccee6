//! Confinement of QEMU processes, the way libvirt does it: each desktop's QEMU runs as
//! its own unprivileged uid/gid (started as that uid, never `-runas`), in a run directory
//! only that uid can enter, with cgroup limits on memory, processes and CPU weight.
//!
//! The planning (which uid, which cgroup files get which values, what the host offers)
//! is pure and tested here; [`prepare_cgroup`] and [`Host::detect`] do the I/O.
use crate::spec::Confine;
use crate::QemuError;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The confinement settings of a pool (from the broker's config).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfineConfig {
    /// The first uid (and gid) of the range: the template's source VM runs as it, desktop
    /// slot `i` (0-based) as `uid_base + 1 + i`.
    pub uid_base: u32,
    /// How many uids the range has (the pool needs one more than it has desktops).
    pub uid_count: u32,
    /// QEMU's own memory on top of guest RAM in the memory limit, in MiB.
    pub memory_overhead_mib: u64,
    /// Most processes and threads of one QEMU.
    pub pids_max: u32,
    /// CPU weight of one QEMU (cgroup v2 scale, 1–10000; 100 is an even share).
    pub cpu_weight: u32,
    /// How many QEMU processes the pool runs (its desktops and the template's source):
    /// the pool's own cgroup weighs as much as that many processes do outside it.
    #[serde(default = "one")]
    pub processes: u32,
}

fn one() -> u32 {
    1
}

impl ConfineConfig {
    /// The confinement of the process in `slot` (`None`: the template's source VM) of a
    /// VM with `memory_mib` of guest RAM, or `None` when the slot is outside the range.
    pub fn for_slot(&self, slot: Option<u32>, memory_mib: u64, cgroup: String) -> Option<Confine> {
        let offset = match slot {
            None => 0,
            Some(i) => i.checked_add(1)?,
        };
        if offset >= self.uid_count {
            return None;
        }
        Some(Confine {
            uid: self.uid_base.checked_add(offset)?,
            memory_bytes: memory_mib
                .checked_add(self.memory_overhead_mib)?
                .checked_mul(1 << 20)?,
            pids_max: self.pids_max,
            cpu_weight: self.cpu_weight,
            cgroup,
            kvm_gid: None,
        })
    }
}

/// The gid of group `name` in `/etc/group` text (pure).
pub fn group_gid(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.trim().parse().ok()
    })
}

/// The cgroup controllers the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// The unified hierarchy (cgroup v2), mounted here.
    V2 { root: PathBuf },
    /// Separate v1 hierarchies for the memory, pids and cpu controllers.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
}

/// What the host lets the broker do to confine its QEMU processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The broker runs as root, so it can start QEMU as other uids.
    pub root: bool,
    /// The cgroups it can use, or why none.
    pub cgroups: Result<Cgroups, String>,
}

impl Host {
    /// Looks at this process's uid and at `/proc/self/mountinfo`.
    pub fn detect() -> Host {
        let root = rustix::process::geteuid().is_root();
        let cgroups = match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => cgroups_from_mountinfo(&text),
            Err(e) => Err(format!("cannot read /proc/self/mountinfo: {e}")),
        };
        Host { root, cgroups }
    }

    /// What is missing for full confinement, each with what to do about it.
    pub fn problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.root {
            v.push(
                "desktops are not confined: airlockd does not run as root, so every QEMU runs as airlockd's own user; run airlockd as root (the systemd unit does) so each desktop gets its own uid"
                    .to_owned(),
            );
        }
        if let Err(why) = &self.cgroups {
            v.push(format!(
                "desktops have no memory, process or CPU limits: {why}; mount cgroup v2 (or the v1 memory, pids and cpu controllers) and restart airlockd"
            ));
        } else if !self.root {
            v.push("desktops have no cgroup limits: only root may create cgroups".to_owned());
        }
        v
    }
}

/// Finds the cgroup mounts in `/proc/self/mountinfo` text: v1 memory, pids and cpu
/// controllers if all three are mounted, else the v2 hierarchy if it has those
/// controllers (`cgroup.controllers` is checked by [`prepare_cgroup`]).
pub fn cgroups_from_mountinfo(text: &str) -> Result<Cgroups, String> {
    let (mut memory, mut pids, mut cpu, mut v2) = (None, None, None, None);
    for line in text.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let super_opts = r.nth(1).unwrap_or("");
        let mount_point = PathBuf::from(mount_point.replace("\\040", " "));
        match fstype {
            "cgroup2" => v2 = v2.or(Some(mount_point)),
            "cgroup" => {
                for opt in super_opts.split(',') {
                    match opt {
                        "memory" => memory = memory.or(Some(mount_point.clone())),
                        "pids" => pids = pids.or(Some(mount_point.clone())),
                        "cpu" => cpu = cpu.or(Some(mount_point.clone())),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (memory, pids, cpu, v2) {
        (Some(memory), Some(pids), Some(cpu), _) => Ok(Cgroups::V1 { memory, pids, cpu }),
        (_, _, _, Some(root)) => Ok(Cgroups::V2 { root }),
        _ => {
            Err("no cgroup v2 mount and not all of the v1 memory, pids and cpu controllers".into())
        }
    }
}

/// One cgroup directory of a QEMU process and the limit files to write in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    pub dir: PathBuf,
    /// `(file, value)`, written in order after the directory is created.
    pub limits: Vec<(&'static str, String)>,
    /// Files in the parents to write first (enabling controllers for children, v2).
    pub parents: Vec<(PathBuf, &'static str)>,
}

/// The cgroup directories of a process confined by `c` on `cgroups` (pure).
pub fn plan(cgroups: &Cgroups, c: &Confine) -> Vec<CgroupDir> {
    match cgroups {
        Cgroups::V2 { root } => {
            let dir = root.join(&c.cgroup);
            // Every ancestor below the root enables the three controllers for its children.
            let mut parents = Vec::new();
            let mut cur = root.clone();
            parents.push((cur.join("cgroup.subtree_control"), "+memory +pids +cpu"));
            let parts: Vec<_> = Path::new(&c.cgroup).components().collect();
            for part in &parts[..parts.len().saturating_sub(1)] {
                cur = cur.join(part);
                parents.push((cur.join("cgroup.subtree_control"), "+memory +pids +cpu"));
            }
            vec![CgroupDir {
                dir,
                limits: vec![
                    ("memory.max", c.memory_bytes.to_string()),
                    ("memory.swap.max", "0".into()),
                    ("pids.max", c.pids_max.to_string()),
                    ("cpu.weight", c.cpu_weight.clamp(1, 10_000).to_string()),
                ],
                parents,
            }]
        }
        Cgroups::V1 { memory, pids, cpu } => vec![
            CgroupDir {
                dir: memory.join(&c.cgroup),
                limits: vec![("memory.limit_in_bytes", c.memory_bytes.to_string())],
                parents: Vec::new(),
            },
            CgroupDir {
                dir: pids.join(&c.cgroup),
                limits: vec![("pids.max", c.pids_max.to_string())],
                parents: Vec::new(),
            },
            CgroupDir {
                dir: cpu.join(&c.cgroup),
                // v1 shares: 1024 is the default, as weight 100 is in v2.
                limits: vec![(
                    "cpu.shares",
                    (u64::from(c.cpu_weight.clamp(1, 10_000)) * 1024 / 100)
                        .max(2)
                        .to_string(),
                )],
                parents: Vec::new(),
            },
        ],
    }
}

/// Creates the cgroups of a process confined by `c`, writes their limits and returns
/// their `cgroup.procs` files, open for writing: the child writes `0` to each before it
/// executes QEMU, so QEMU starts inside its limits.
pub fn prepare_cgroup(cgroups: &Cgroups, c: &Confine) -> Result<Vec<OwnedFd>, QemuError> {
    let mut procs = Vec::new();
    for d in plan(cgroups, c) {
        for (file, value) in &d.parents {
            // Already enabled, or enabled by whoever set the hierarchy up: only the
            // limit writes below decide.
            let _ = std::fs::write(file, value);
        }
        std::fs::create_dir_all(&d.dir).map_err(cgroup_error(&d.dir, "create"))?;
        for (file, value) in &d.limits {
            let path = d.dir.join(file);
            if let Err(e) = std::fs::write(&path, value) {
                // A kernel without swap accounting has no memory.swap.max: not a limit
                // this host can set, and nothing to swap to either.
                if *file == "memory.swap.max" && e.kind() == std::io::ErrorKind::NotFound {
                    continue;
                }
                return Err(cgroup_error(&path, "write")(e));
            }
        }
        let path = d.dir.join("cgroup.procs");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(cgroup_error(&path, "open"))?;
        procs.push(OwnedFd::from(f));
    }
    Ok(procs)
}

/// The CPU weight of a pool's own cgroup (`<instance>`, pure): its desktops share it, and
/// it competes with everything else on the host. Left at the default, the whole pool
/// would weigh as much as one ordinary process: on a busy host N desktops would get what
/// one unconfined QEMU gets. So it weighs `processes` × the weight of one QEMU (within
/// the kernel's bounds: v1 `cpu.shares` 2–262144, v2 `cpu.weight` 1–10000).
pub fn instance_weight(cgroups: &Cgroups, instance: &str, c: &ConfineConfig) -> (PathBuf, String) {
    let n = u64::from(c.processes.max(1));
    let each = u64::from(c.cpu_weight.clamp(1, 10_000));
    match cgroups {
        Cgroups::V2 { root } => (
            root.join(instance).join("cpu.weight"),
            (each * n).clamp(1, 10_000).to_string(),
        ),
        Cgroups::V1 { cpu, .. } => (
            cpu.join(instance).join("cpu.shares"),
            (each * 1024 / 100 * n).clamp(2, 262_144).to_string(),
        ),
    }
}

/// Creates a pool's own cgroups and sets their CPU weight ([`instance_weight`]); once at
/// start, before any QEMU is confined.
pub fn prepare_instance(
    cgroups: &Cgroups,
    instance: &str,
    c: &ConfineConfig,
) -> Result<(), QemuError> {
    if let Cgroups::V2 { root } = cgroups {
        // The root enables the controllers for its children (as `prepare_cgroup` does).
        let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory +pids +cpu");
    }
    for dir in instance_dirs(cgroups, instance) {
        std::fs::create_dir_all(&dir).map_err(cgroup_error(&dir, "create"))?;
    }
    let (file, value) = instance_weight(cgroups, instance, c);
    std::fs::write(&file, &value).map_err(cgroup_error(&file, "write"))?;
    tracing::debug!(file = %file.display(), %value, "the pool's CPU weight");
    Ok(())
}

/// Removes the empty cgroups of earlier processes of the same desktop (`c.cgroup` is
/// `<instance>/<desktop>.<process>`); the ones that still hold a process stay.
pub fn remove_old_cgroups(cgroups: &Cgroups, c: &Confine) {
    let Some(own) = Path::new(&c.cgroup).file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Some((desktop, _)) = own.rsplit_once('.') else {
        return;
    };
    for d in plan(cgroups, c) {
        let Some(dir) = d.dir.parent() else { continue };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name != own && name.rsplit_once('.').is_some_and(|(d, _)| d == desktop) {
                // Fails while a process is still inside (EBUSY): it is removed next time.
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// The directories of a broker's cgroup instance (`<instance>` under each hierarchy it
/// uses; pure).
pub fn instance_dirs(cgroups: &Cgroups, instance: &str) -> Vec<PathBuf> {
    match cgroups {
        Cgroups::V2 { root } => vec![root.join(instance)],
        Cgroups::V1 { memory, pids, cpu } => {
            vec![
                memory.join(instance),
                pids.join(instance),
                cpu.join(instance),
            ]
        }
    }
}

/// Removes a broker's cgroups once its desktops are stopped (`airlockd stop-desktops`):
/// every empty desktop cgroup, then the instance itself. Returns how many directories
/// are left (they still hold a process).
pub fn remove_instance(cgroups: &Cgroups, instance: &str) -> usize {
    let mut left = 0;
    for dir in instance_dirs(cgroups, instance) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir(e.path()).is_err()
                {
                    left += 1;
                }
            }
        }
        if dir.exists() && std::fs::remove_dir(&dir).is_err() {
            left += 1;
        }
    }
    left
}

fn cgroup_error(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> QemuError {
    crate::io_error(format!(
        "{what} cgroup file {} (confinement: see docs/operations.md)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ConfineConfig {
        ConfineConfig {
            processes: 3,
            uid_base: 64000,
            uid_count: 3,
            memory_overhead_mib: 256,
            pids_max: 200,
            cpu_weight: 100,
        }
    }

    #[test]
    fn slots_get_distinct_uids_within_the_range() {
        let c = cfg();
        let t = c.for_slot(None, 1024, "a/template.1".into()).unwrap();
        let d0 = c.for_slot(Some(0), 1024, "a/d0.1".into()).unwrap();
        let d1 = c.for_slot(Some(1), 1024, "a/d1.1".into()).unwrap();
        assert_eq!((t.uid, d0.uid, d1.uid), (64000, 64001, 64002));
        assert_eq!(c.for_slot(Some(2), 1024, "x".into()), None, "range full");
        assert_eq!(c.for_slot(Some(u32::MAX), 1024, "x".into()), None);
        assert_eq!(d0.memory_bytes, (1024 + 256) << 20);
        assert_eq!(c.for_slot(Some(0), u64::MAX, "x".into()), None, "overflow");
    }

    const V1: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V2: &str = "\
30 1 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn finds_v1_controllers_before_an_empty_unified_mount() {
        assert_eq!(
            cgroups_from_mountinfo(V1),
            Ok(Cgroups::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: "/sys/fs/cgroup/cpu".into(),
            })
        );
        assert_eq!(
            cgroups_from_mountinfo(V2),
            Ok(Cgroups::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert!(cgroups_from_mountinfo("").is_err());
        assert!(cgroups_from_mountinfo("garbage\n1 2 3\n - - -\n").is_err());
        // Combined v1 controllers (cpu,cpuacct) count too.
        let combined = V1.replace("rw,cpu\n", "rw,cpu,cpuacct\n");
        assert!(matches!(
            cgroups_from_mountinfo(&combined),
            Ok(Cgroups::V1 { .. })
        ));
    }

    #[test]
    fn plans_the_limit_files() {
        let c = cfg()
            .for_slot(Some(0), 512, "airlock-ab/d0.7".into())
            .unwrap();
        let v1 = plan(&cgroups_from_mountinfo(V1).unwrap(), &c);
        assert_eq!(v1.len(), 3);
        assert_eq!(
            v1[0].dir,
            PathBuf::from("/sys/fs/cgroup/memory/airlock-ab/d0.7")
        );
        assert_eq!(
            v1[0].limits,
            vec![("memory.limit_in_bytes", ((512u64 + 256) << 20).to_string())]
        );
        assert_eq!(v1[1].limits, vec![("pids.max", "200".to_string())]);
        assert_eq!(v1[2].limits, vec![("cpu.shares", "1024".to_string())]);
        let v2 = plan(&cgroups_from_mountinfo(V2).unwrap(), &c);
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].dir, PathBuf::from("/sys/fs/cgroup/airlock-ab/d0.7"));
        assert_eq!(
            v2[0].parents,
            vec![
                (
                    PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"),
                    "+memory +pids +cpu"
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/airlock-ab/cgroup.subtree_control"),
                    "+memory +pids +cpu"
                ),
            ]
        );
        assert!(v2[0].limits.contains(&("cpu.weight", "100".to_string())));
    }

    #[test]
    fn the_pool_weighs_as_much_as_its_processes() {
        let v1 = cgroups_from_mountinfo(V1).unwrap();
        let v2 = cgroups_from_mountinfo(V2).unwrap();
        let c = cfg();
        assert_eq!(
            instance_weight(&v1, "airlock-ab", &c),
            (
                PathBuf::from("/sys/fs/cgroup/cpu/airlock-ab/cpu.shares"),
                "3072".to_string()
            )
        );
        assert_eq!(
            instance_weight(&v2, "airlock-ab", &c),
            (
                PathBuf::from("/sys/fs/cgroup/airlock-ab/cpu.weight"),
                "300".to_string()
            )
        );
        // Within the kernel's bounds.
        let big = ConfineConfig {
            processes: 1000,
            cpu_weight: 10_000,
            ..cfg()
        };
        assert_eq!(instance_weight(&v1, "i", &big).1, "262144");
        assert_eq!(instance_weight(&v2, "i", &big).1, "10000");
        let small = ConfineConfig {
            processes: 0,
            cpu_weight: 1,
            ..cfg()
        };
        assert_eq!(instance_weight(&v1, "i", &small).1, "10");
        assert_eq!(instance_weight(&v2, "i", &small).1, "1");
    }

    #[test]
    fn finds_the_kvm_group() {
        let g = "root:x:0:\nkvm:x:993:\nkvmx:x:5:\n";
        assert_eq!(group_gid(g, "kvm"), Some(993));
        assert_eq!(group_gid(g, "kv"), None);
        assert_eq!(group_gid("kvm:x:notanumber:", "kvm"), None);
        assert_eq!(group_gid("", "kvm"), None);
    }

    #[test]
    fn problems_say_what_to_fix() {
        let ok = Host {
            root: true,
            cgroups: cgroups_from_mountinfo(V2),
        };
        assert!(ok.problems().is_empty());
        let p = Host {
            root: false,
            cgroups: Err("none".into()),
        }
        .problems();
        assert_eq!(p.len(), 2);
        assert!(p[0].contains("run airlockd as root"));
        assert!(p[1].contains("mount cgroup v2"));
    }

    #[test]
    fn a_stopped_instance_leaves_no_empty_cgroup_behind() {
        let t = tempfile::tempdir().unwrap();
        let (m, p, c) = (t.path().join("m"), t.path().join("p"), t.path().join("c"));
        let cg = Cgroups::V1 {
            memory: m.clone(),
            pids: p.clone(),
            cpu: c.clone(),
        };
        assert_eq!(
            instance_dirs(&cg, "airlock-x"),
            [
                m.join("airlock-x"),
                p.join("airlock-x"),
                c.join("airlock-x")
            ]
        );
        for root in [&m, &p] {
            std::fs::create_dir_all(root.join("airlock-x/desk-01.1")).unwrap();
            std::fs::create_dir_all(root.join("airlock-x/desk-02.7")).unwrap();
        }
        // A "busy" cgroup (here: a directory holding a file) stays, and so does its parent.
        std::fs::create_dir_all(c.join("airlock-x/desk-01.2")).unwrap();
        std::fs::write(c.join("airlock-x/desk-01.2/cgroup.procs"), "42").unwrap();
        assert_eq!(remove_instance(&cg, "airlock-x"), 2);
        assert!(!m.join("airlock-x").exists() && !p.join("airlock-x").exists());
        assert!(c.join("airlock-x/desk-01.2").exists());
        let v2 = Cgroups::V2 {
            root: t.path().join("v2"),
        };
        assert_eq!(instance_dirs(&v2, "i"), [t.path().join("v2/i")]);
        assert_eq!(remove_instance(&v2, "i"), 0);
    }
}
