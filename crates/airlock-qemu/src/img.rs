//! qcow2 overlays through `qemu-img`.
use crate::QemuError;
use std::path::Path;

/// Creates (replacing) a qcow2 overlay at `overlay` whose backing file is `base`.
pub async fn create_overlay(qemu_img: &Path, base: &Path, overlay: &Path) -> Result<(), QemuError> {
    match tokio::fs::remove_file(overlay).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(crate::io_error(format!(
                "remove old overlay {}",
                overlay.display()
            ))(e))
        }
        _ => {}
    }
    if let Some(parent) = overlay.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(crate::io_error(format!("create {}", parent.display())))?;
    }
    let fmt = backing_format(base);
    let out = tokio::process::Command::new(qemu_img)
        .arg("create")
        .arg("-q")
        .args(["-f", "qcow2", "-F", fmt, "-b"])
        .arg(base)
        .arg(overlay)
        .output()
        .await
        .map_err(|e| QemuError::Spawn {
            qemu: qemu_img.display().to_string(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(QemuError::Image {
            what: format!("create overlay {} on {}", overlay.display(), base.display()),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The backing format for a base image: qcow2 by magic, else raw.
fn backing_format(base: &Path) -> &'static str {
    use std::io::Read;
    let mut magic = [0u8; 4];
    match std::fs::File::open(base).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) if &magic == b"QFI\xfb" => "qcow2",
        _ => "raw",
    }
}
