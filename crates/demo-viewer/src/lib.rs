//! The demo guest's image viewer: on each inserted disc, the disc's DICOM images
//! full-screen on the Linux framebuffer, paged with the arrow keys, with the patient name
//! and ID the disc's headers claim drawn in a corner, the way a viewer does.
//!
//! Everything read from the disc is hostile input: sizes are checked against caps and
//! against each other, nothing panics on it, and a file that cannot be shown is skipped
//! with a message. The pure parts (DICOM decode and windowing, scaling, the PSF console
//! font and text, composing a frame, the framebuffer's pixel format, key events) are
//! tested on the host; the I/O (the mount, `/dev/fb0`, `/dev/input`, the control FIFO,
//! the viewer's VT) is in [`disc`], [`fb`] and [`input`], used by `main.rs`.
#![forbid(unsafe_code)]

pub mod canvas;
pub mod dicom;
pub mod disc;
pub mod fb;
pub mod input;
pub mod psf;
pub mod view;
pub mod window;

/// Only printable ASCII of the disc's text reaches the screen and the agent port
/// (anything else becomes `?`), at most `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_replaces_and_caps() {
        assert_eq!(super::printable("a\u{1b}[2Jé", 10), "a?[2J?");
        assert_eq!(super::printable("abcdef", 3), "abc");
    }
}
