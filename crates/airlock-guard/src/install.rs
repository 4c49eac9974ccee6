//! `airlock guard install` and `uninstall`: a plan of file changes (pure), applied all or
//! nothing. Each file is written beside its place and renamed over it; when a step fails,
//! every step before it is undone (files restored or removed, a group it created
//! deleted), so a failure leaves the system as it was. Running it again changes nothing.
use crate::files::{self, Model, GROUP, MODPROBE_PATH, UDEV_PATH};
use crate::root::Root;
use crate::usbguard::SNIPPET_PATH;
use std::path::PathBuf;
use std::process::Command;

/// Why installing or uninstalling failed (and was rolled back).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot write {path}; run as root (or give --root a directory you may write)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create group {GROUP}: {detail}; create it by hand (groupadd --system {GROUP}) and run install again")]
    Group { detail: String },
    #[error("{path} was not written by `airlock guard install` (it lacks the marker line); leaving it alone: remove it by hand if it should go")]
    NotOurs { path: String },
}

/// One file to write (`Some`) or remove (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Absolute path on the target system.
    pub path: &'static str,
    pub content: Option<String>,
}

/// What `install` should do.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Also write the USBGuard snippet.
    pub usbguard: bool,
    /// Approved drive models (group access only for them); empty: every USB
    /// mass-storage device.
    pub drives: Vec<Model>,
}

/// The files of an install.
pub fn install_plan(opts: &InstallOptions) -> Vec<FileChange> {
    let mut plan = vec![
        FileChange {
            path: MODPROBE_PATH,
            content: Some(files::modprobe_conf()),
        },
        FileChange {
            path: UDEV_PATH,
            content: Some(files::udev_rules(&opts.drives)),
        },
    ];
    if opts.usbguard {
        plan.push(FileChange {
            path: SNIPPET_PATH,
            content: Some(files::usbguard_snippet()),
        });
    }
    plan
}

/// The files of an uninstall: every guard file there is, if it is ours.
pub fn uninstall_plan(root: &Root) -> Result<Vec<FileChange>, GuardError> {
    let mut plan = Vec::new();
    for path in [MODPROBE_PATH, UDEV_PATH, SNIPPET_PATH] {
        match root.read(path) {
            None => {}
            Some(t) if files::is_ours(&t) => plan.push(FileChange {
                path,
                content: None,
            }),
            Some(_) => return Err(GuardError::NotOurs { path: path.into() }),
        }
    }
    Ok(plan)
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files written or removed.
    pub changed: Vec<String>,
    /// Files that already were as planned.
    pub unchanged: Vec<String>,
    /// Whether the group was created.
    pub created_group: bool,
}

/// A step done, to undo on failure.
enum Undo {
    Restore {
        path: PathBuf,
        old: Option<Vec<u8>>,
    },
    /// Delete the group created, then put back the backup files the shadow tools keep
    /// (`/etc/group-`, `/etc/gshadow-`) as they were.
    DeleteGroup {
        backups: Vec<(PathBuf, Option<Vec<u8>>)>,
    },
}

/// The backup files `groupadd` and `groupdel` rewrite.
const SHADOW_BACKUPS: [&str; 2] = ["/etc/group-", "/etc/gshadow-"];

/// Applies `plan` to `root`, all or nothing; with `ensure_group`, first creates group
/// `airlock` when it is missing.
pub fn apply(root: &Root, plan: &[FileChange], ensure_group: bool) -> Result<Applied, GuardError> {
    let mut done: Vec<Undo> = Vec::new();
    let result = apply_steps(root, plan, ensure_group, &mut done);
    if result.is_err() {
        for step in done.into_iter().rev() {
            match step {
                Undo::Restore { path, old } => restore(&path, old),
                Undo::DeleteGroup { backups } => {
                    let _ = group_command(root, false);
                    for (path, old) in backups {
                        restore(&path, old);
                    }
                }
            }
        }
    }
    result
}

/// Puts `path` back as it was: `old` contents, or no file (best effort: a rollback).
fn restore(path: &std::path::Path, old: Option<Vec<u8>>) {
    let _ = match old {
        Some(data) => std::fs::write(path, data),
        None => std::fs::remove_file(path),
    };
}

fn apply_steps(
    root: &Root,
    plan: &[FileChange],
    ensure_group: bool,
    done: &mut Vec<Undo>,
) -> Result<Applied, GuardError> {
    let mut applied = Applied::default();
    if ensure_group && crate::usb::group_id(root, GROUP).is_none() {
        let backups = SHADOW_BACKUPS
            .iter()
            .map(|b| (root.path(b), std::fs::read(root.path(b)).ok()))
            .collect();
        group_command(root, true)?;
        done.push(Undo::DeleteGroup { backups });
        applied.created_group = true;
    }
    for change in plan {
        let path = root.path(change.path);
        let old = std::fs::read(&path).ok();
        if old.as_deref() == change.content.as_ref().map(String::as_bytes) {
            applied.unchanged.push(change.path.to_owned());
            continue;
        }
        let write_err = |source| GuardError::Write {
            path: path.clone(),
            source,
        };
        match &change.content {
            Some(text) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(write_err)?;
                }
                done.push(Undo::Restore {
                    path: path.clone(),
                    old,
                });
                let tmp = path.with_extension("airlock-guard-new");
                std::fs::write(&tmp, text).map_err(write_err)?;
                std::fs::rename(&tmp, &path).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    write_err(e)
                })?;
            }
            None => {
                std::fs::remove_file(&path).map_err(write_err)?;
                done.push(Undo::Restore {
                    path: path.clone(),
                    old,
                });
            }
        }
        applied.changed.push(change.path.to_owned());
    }
    Ok(applied)
}

/// Creates (or, with `create` false, deletes) group `airlock`: `groupadd --system`
/// (`--prefix` for another root), or busybox `addgroup -S` on the running system.
fn group_command(root: &Root, create: bool) -> Result<(), GuardError> {
    let mut tries: Vec<Command> = Vec::new();
    let shadow = if create { "groupadd" } else { "groupdel" };
    let mut c = Command::new(shadow);
    if create {
        c.arg("--system");
    }
    if !root.is_system() {
        c.arg("--prefix").arg(root.dir());
    }
    c.arg(GROUP);
    tries.push(c);
    if root.is_system() {
        let mut c = Command::new(if create { "addgroup" } else { "delgroup" });
        if create {
            c.arg("-S");
        }
        c.arg(GROUP);
        tries.push(c);
    }
    let mut detail = String::new();
    for mut c in tries {
        match c.output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                detail = format!(
                    "{:?} failed: {}",
                    c.get_program(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                break;
            }
            Err(e) => detail = format!("{:?}: {e}", c.get_program()),
        }
    }
    Err(GuardError::Group { detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for e in walk(dir) {
            let rel = e.strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, std::fs::read(&e).unwrap_or_default()));
        }
        out.sort();
        out
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn image() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/modprobe.d")).unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\nairlock:x:990:\n").unwrap();
        t
    }

    #[test]
    fn install_twice_changes_nothing_the_second_time_and_uninstall_undoes_it() {
        let t = image();
        let root = Root::new(t.path());
        let before = snapshot(t.path());
        let opts = InstallOptions {
            usbguard: true,
            drives: vec![],
        };
        let first = apply(&root, &install_plan(&opts), true).unwrap();
        assert_eq!(first.changed, [MODPROBE_PATH, UDEV_PATH, SNIPPET_PATH]);
        assert!(!first.created_group);
        let installed = snapshot(t.path());
        let second = apply(&root, &install_plan(&opts), true).unwrap();
        assert!(second.changed.is_empty(), "{second:?}");
        assert_eq!(snapshot(t.path()), installed);
        let removed = apply(&root, &uninstall_plan(&root).unwrap(), false).unwrap();
        assert_eq!(removed.changed.len(), 3);
        // The directories install created stay (empty); every file is as before.
        let files = |s: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
            s.into_iter()
                .filter(|(p, _)| t.path().join(p).is_file())
                .collect()
        };
        assert_eq!(files(snapshot(t.path())), files(before));
        assert!(uninstall_plan(&root).unwrap().is_empty());
    }

    #[test]
    fn a_failure_half_way_leaves_the_system_as_it_was() {
        let t = image();
        let root = Root::new(t.path());
        // An older modprobe file of ours, then a directory where the udev rule goes: the
        // second write fails after the first succeeded.
        let old = format!("{}\n# old\n", files::MARKER);
        std::fs::write(root.path(MODPROBE_PATH), &old).unwrap();
        std::fs::create_dir_all(root.path(UDEV_PATH).join("blocker")).unwrap();
        let before = snapshot(t.path());
        let e = apply(&root, &install_plan(&InstallOptions::default()), true).unwrap_err();
        assert!(matches!(e, GuardError::Write { .. }), "{e}");
        assert!(e.to_string().contains("70-airlock-guard.rules"), "{e}");
        assert_eq!(snapshot(t.path()), before);
        assert_eq!(
            std::fs::read_to_string(root.path(MODPROBE_PATH)).unwrap(),
            old
        );
    }

    #[test]
    fn a_missing_group_is_created_and_removed_again_on_failure() {
        let t = image();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\n").unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(root.path(UDEV_PATH).join("blocker")).unwrap();
        assert!(apply(&root, &install_plan(&InstallOptions::default()), true).is_err());
        assert_eq!(crate::usb::group_id(&root, GROUP), None, "rolled back");
        std::fs::remove_dir_all(root.path(UDEV_PATH)).unwrap();
        let a = apply(&root, &install_plan(&InstallOptions::default()), true).unwrap();
        assert!(a.created_group);
        assert!(crate::usb::group_id(&root, GROUP).is_some());
    }

    #[test]
    fn uninstall_leaves_files_that_are_not_ours() {
        let t = image();
        let root = Root::new(t.path());
        std::fs::write(root.path(MODPROBE_PATH), "install usb-storage /bin/false\n").unwrap();
        let e = uninstall_plan(&root).unwrap_err();
        assert!(e.to_string().contains("leaving it alone"), "{e}");
    }
}
