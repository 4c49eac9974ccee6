//! qcow2 overlays through `qemu-img`.
use crate::QemuError;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Creates (replacing) a qcow2 overlay at `overlay` on `base`, recording `backing_ref` as
/// its backing file: the fd set a QEMU process gets `base` as (see
/// [`crate::spec::backing`]), since a confined QEMU cannot open `base` by path. The
/// overlay is readable and writable by root only: QEMU gets it as a descriptor.
pub async fn create_overlay(
    qemu_img: &Path,
    base: &Path,
    backing_ref: &str,
    overlay: &Path,
) -> Result<(), QemuError> {
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
    let (fmt, size) = image_format_and_size(base)?;
    // `-u`: the backing reference is not a path qemu-img could open; the size is given.
    let out = tokio::process::Command::new(qemu_img)
        .arg("create")
        .arg("-q")
        .args(["-f", "qcow2", "-u", "-F", fmt, "-b", backing_ref])
        .arg(overlay)
        .arg(size.to_string())
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
    std::fs::set_permissions(overlay, std::fs::Permissions::from_mode(0o600))
        .map_err(crate::io_error(format!("restrict {}", overlay.display())))?;
    Ok(())
}

/// The format of a base image (qcow2 by its magic, else raw) and its virtual size.
fn image_format_and_size(base: &Path) -> Result<(&'static str, u64), QemuError> {
    let mut f =
        std::fs::File::open(base).map_err(crate::io_error(format!("open {}", base.display())))?;
    let mut header = [0u8; 32];
    let n = f
        .read(&mut header)
        .map_err(crate::io_error(format!("read {}", base.display())))?;
    Ok(match qcow2_size(&header[..n]) {
        Some(size) => ("qcow2", size),
        None => (
            "raw",
            f.metadata()
                .map_err(crate::io_error(format!("stat {}", base.display())))?
                .len(),
        ),
    })
}

/// The virtual size in a qcow2 header (magic `QFI\xfb`, size big-endian at byte 24).
fn qcow2_size(header: &[u8]) -> Option<u64> {
    if header.get(..4)? != b"QFI\xfb" {
        return None;
    }
    Some(u64::from_be_bytes(header.get(24..32)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::qcow2_size;

    #[test]
    fn qcow2_header_size() {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[24..32].copy_from_slice(&(3u64 << 30).to_be_bytes());
        assert_eq!(qcow2_size(&h), Some(3 << 30));
        assert_eq!(qcow2_size(&h[..31]), None);
        assert_eq!(qcow2_size(b"QFI"), None);
        assert_eq!(qcow2_size(&[0u8; 32]), None);
    }
}
