//! The system the guard reads and changes: `/`, or another root (`--root DIR`: an image
//! being built, or a test's directory tree).
use std::path::{Path, PathBuf};

/// A root directory; absolute paths of the system are taken below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    /// The running system.
    pub fn system() -> Root {
        Root(PathBuf::from("/"))
    }

    /// Another root, e.g. an image's tree.
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root(dir.into())
    }

    /// Whether this is the running system's `/` (only then are commands run and kernel
    /// state, such as loaded modules, meaningful).
    pub fn is_system(&self) -> bool {
        self.0 == Path::new("/")
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `abs` (an absolute path of the system, e.g. `/etc/group`) under this root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.0.join(abs.trim_start_matches('/'))
    }

    /// The text of `abs`, or `None` when it does not exist or cannot be read.
    pub fn read(&self, abs: &str) -> Option<String> {
        std::fs::read_to_string(self.path(abs)).ok()
    }

    /// The names of the entries of directory `abs`, sorted (empty when it cannot be read).
    pub fn list(&self, abs: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(abs))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Reads every file named `*.{ext}` in the directories `dirs` (earlier directories win
    /// over later ones for the same file name, as kmod and udev do); (path, text) sorted
    /// by file name.
    pub fn config_files(&self, dirs: &[&str], ext: &str) -> Vec<(String, String)> {
        let mut by_name: std::collections::BTreeMap<String, String> = Default::default();
        for dir in dirs {
            for name in self.list(dir) {
                if !name.ends_with(&format!(".{ext}")) || by_name.contains_key(&name) {
                    continue;
                }
                let abs = format!("{}/{name}", dir.trim_end_matches('/'));
                by_name.insert(name, abs);
            }
        }
        by_name
            .into_values()
            .filter_map(|abs| self.read(&abs).map(|text| (abs, text)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_below_the_root() {
        let r = Root::new("/tmp/x");
        assert_eq!(r.path("/etc/group"), PathBuf::from("/tmp/x/etc/group"));
        assert!(!r.is_system());
        assert!(Root::system().is_system());
        assert_eq!(Root::system().path("/etc"), PathBuf::from("/etc"));
    }

    #[test]
    fn earlier_directories_win_for_the_same_file_name() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path());
        for (dir, name, text) in [
            ("etc/modprobe.d", "a.conf", "etc a"),
            ("lib/modprobe.d", "a.conf", "lib a"),
            ("lib/modprobe.d", "b.conf", "lib b"),
            ("lib/modprobe.d", "c.txt", "ignored"),
        ] {
            std::fs::create_dir_all(t.path().join(dir)).unwrap();
            std::fs::write(t.path().join(dir).join(name), text).unwrap();
        }
        let files = r.config_files(&["/etc/modprobe.d", "/lib/modprobe.d"], "conf");
        assert_eq!(
            files,
            vec![
                ("/etc/modprobe.d/a.conf".to_string(), "etc a".to_string()),
                ("/lib/modprobe.d/b.conf".to_string(), "lib b".to_string()),
            ]
        );
    }
}
