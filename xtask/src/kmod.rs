//! Kernel module metadata read straight from `.ko` files (ELF), so the build
//! needs neither kmod's `modinfo` nor a `modules.dep` (Debian's kernel
//! package does not ship one: depmod runs in its postinst).

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Kernel module names use `_` and `-` interchangeably; compare them as `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The key=value strings of the `.modinfo` section of an ELF64
/// little-endian relocatable object.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>> {
    let u16_at = |off: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            elf.get(off..off + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |off: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            elf.get(off..off + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |off: usize| -> Result<usize> {
        Ok(
            u64::from_le_bytes(elf.get(off..off + 8).context("truncated ELF")?.try_into()?)
                as usize,
        )
    };
    if elf.get(..6) != Some(&b"\x7fELF\x02\x01"[..]) {
        bail!("not an ELF64 little-endian file");
    }
    let shoff = u64_at(0x28)?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let section = |i: usize| -> Result<(u32, usize, usize)> {
        let h = shoff + i * shentsize;
        Ok((u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let (_, strtab_off, strtab_size) = section(shstrndx)?;
    let strtab = elf
        .get(strtab_off..strtab_off + strtab_size)
        .context("bad section name table")?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = strtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name == b".modinfo" {
            let data = elf.get(off..off + size).context("bad .modinfo section")?;
            return Ok(data
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }
    bail!("no .modinfo section")
}

/// The modules a module depends on (modinfo's `depends=`).
pub fn depends(elf: &[u8]) -> Result<Vec<String>> {
    Ok(modinfo(elf)?
        .iter()
        .filter_map(|kv| kv.strip_prefix("depends="))
        .flat_map(|deps| deps.split(','))
        .filter(|d| !d.is_empty())
        .map(normalize)
        .collect())
}

/// A module chosen for the initramfs.
#[derive(Debug, Clone)]
pub struct Module {
    /// File stem as shipped (e.g. `crc-t10dif`): /init loads `<stem>.ko`.
    pub stem: String,
    pub path: PathBuf,
    /// insmod parameters from the module list.
    pub params: String,
    /// Not in the list: pulled in as a dependency.
    pub implied: bool,
}

/// Every `.ko` below `dir`, by normalized name.
pub fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    fn walk(dir: &Path, found: &mut BTreeMap<String, PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, found)?;
            } else if path.extension().is_some_and(|e| e == "ko") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    found.insert(normalize(stem), path.clone());
                }
            }
        }
        Ok(())
    }
    let mut found = BTreeMap::new();
    walk(dir, &mut found)?;
    Ok(found)
}

/// Resolve a module list ("name [params]" lines) against the modules in
/// `index`: add missing dependencies and order everything so each module
/// comes after the modules it depends on.
pub fn resolve(list: &str, index: &BTreeMap<String, PathBuf>) -> Result<Vec<Module>> {
    let mut wanted = Vec::new();
    for line in list.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, params) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        wanted.push((normalize(name), params.trim().to_string()));
    }
    let params: BTreeMap<_, _> = wanted.iter().cloned().collect();
    let listed: HashSet<_> = params.keys().cloned().collect();

    let mut order = Vec::new();
    let mut done = HashSet::new();
    let mut visiting = Vec::new();
    for (name, _) in &wanted {
        visit(name, index, &mut done, &mut visiting, &mut order)?;
    }
    order
        .into_iter()
        .map(|name| {
            let path = index[&name].clone();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .context("module file name is not UTF-8")?
                .to_string();
            Ok(Module {
                stem,
                params: params.get(&name).cloned().unwrap_or_default(),
                implied: !listed.contains(&name),
                path,
            })
        })
        .collect()
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    done: &mut HashSet<String>,
    visiting: &mut Vec<String>,
    order: &mut Vec<String>,
) -> Result<()> {
    if done.contains(name) {
        return Ok(());
    }
    if visiting.iter().any(|v| v == name) {
        bail!(
            "module dependency cycle: {} -> {name}",
            visiting.join(" -> ")
        );
    }
    let path = index.get(name).with_context(|| {
        format!(
            "kernel module `{name}` is not in the kernel package (it may be built in, or renamed)"
        )
    })?;
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let deps =
        depends(&elf).with_context(|| format!("reading the modinfo of {}", path.display()))?;
    visiting.push(name.to_string());
    for dep in deps {
        visit(&dep, index, done, visiting, order)?;
    }
    visiting.pop();
    done.insert(name.to_string());
    order.push(name.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object with a `.modinfo` section.
    fn fake_ko(modinfo: &str) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut out = vec![0u8; 64];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = out.len();
        out.extend_from_slice(shstrtab);
        let info_off = out.len();
        out.extend_from_slice(modinfo.as_bytes());
        out.push(0);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let shoff = out.len();
        let section = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        out.extend(section(0, 0, 0));
        out.extend(section(1, strtab_off, shstrtab.len()));
        out.extend(section(11, info_off, modinfo.len() + 1));
        out[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_depends() {
        let ko = fake_ko("license=GPL\0depends=scsi_mod,cdrom\0name=sr_mod");
        assert_eq!(depends(&ko).unwrap(), ["scsi_mod", "cdrom"]);
        assert!(depends(&fake_ko("depends=")).unwrap().is_empty());
        assert!(modinfo(b"not an elf").is_err());
    }

    #[test]
    fn orders_dependencies_first_and_adds_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("kernel/drivers");
        std::fs::create_dir_all(&sub).unwrap();
        for (file, deps) in [
            ("sr_mod.ko", "depends=scsi_mod,cdrom"),
            ("cdrom.ko", "depends="),
            ("scsi_mod.ko", "depends=scsi_common"),
            ("scsi_common.ko", "depends="),
            ("crc-t10dif.ko", "depends=crct10dif_common"),
            ("crct10dif_common.ko", "depends="),
        ] {
            std::fs::write(sub.join(file), fake_ko(deps)).unwrap();
        }
        let index = index(dir.path()).unwrap();
        let list = "# comment\nsr_mod\ncdrom lockdoor=0 autoclose=0\ncrc_t10dif\n";
        let mods = resolve(list, &index).unwrap();
        let names: Vec<_> = mods.iter().map(|m| m.stem.as_str()).collect();
        assert_eq!(
            names,
            [
                "scsi_common",
                "scsi_mod",
                "cdrom",
                "sr_mod",
                "crct10dif_common",
                "crc-t10dif"
            ]
        );
        assert_eq!(mods[2].params, "lockdoor=0 autoclose=0");
        assert!(mods[0].implied && !mods[3].implied);
        assert!(resolve("nonexistent\n", &index).is_err());
    }
}
