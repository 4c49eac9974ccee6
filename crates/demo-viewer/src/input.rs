//! Paging commands: from the keyboard (Linux input events on `/dev/input/event*`, read
//! beside the console, so the console's own reader of tty1 still gets F and Enter for
//! "Finish") and from the control FIFO that the guest's agent writes `next`, `prev`,
//! `first` or `last` lines into (`airlock-view`, docs/guest.md).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

/// What the viewer is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Next,
    Prev,
    First,
    Last,
}

impl Command {
    /// A control line's command (`next`, `prev`, `first`, `last`).
    pub fn parse(line: &str) -> Option<Command> {
        match line.trim() {
            "next" => Some(Command::Next),
            "prev" => Some(Command::Prev),
            "first" => Some(Command::First),
            "last" => Some(Command::Last),
            _ => None,
        }
    }

    /// The image index after this command, from `index` of `count`.
    pub fn apply(self, index: usize, count: usize) -> usize {
        let last = count.saturating_sub(1);
        match self {
            Command::Next => (index + 1).min(last),
            Command::Prev => index.saturating_sub(1),
            Command::First => 0,
            Command::Last => last,
        }
    }
}

/// Size of `struct input_event` on 64-bit Linux: a `timeval` (two 64-bit words), then
/// type (u16), code (u16), value (i32).
pub const EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 0x01;
// Key codes of linux/input-event-codes.h.
const KEY_HOME: u16 = 102;
const KEY_UP: u16 = 103;
const KEY_PAGEUP: u16 = 104;
const KEY_LEFT: u16 = 105;
const KEY_RIGHT: u16 = 106;
const KEY_END: u16 = 107;
const KEY_DOWN: u16 = 108;
const KEY_PAGEDOWN: u16 = 109;

/// The command of one input event: a key press or auto-repeat of a paging key.
pub fn command_of_event(event: &[u8; EVENT_SIZE]) -> Option<Command> {
    let kind = u16::from_le_bytes([event[16], event[17]]);
    let code = u16::from_le_bytes([event[18], event[19]]);
    let value = i32::from_le_bytes([event[20], event[21], event[22], event[23]]);
    if kind != EV_KEY || !matches!(value, 1 | 2) {
        return None;
    }
    match code {
        KEY_RIGHT | KEY_DOWN | KEY_PAGEDOWN => Some(Command::Next),
        KEY_LEFT | KEY_UP | KEY_PAGEUP => Some(Command::Prev),
        KEY_HOME => Some(Command::First),
        KEY_END => Some(Command::Last),
        _ => None,
    }
}

/// Reads input events from `dev` until it fails, sending paging commands.
fn read_events(dev: PathBuf, tx: Sender<Command>) {
    let Ok(mut file) = std::fs::File::open(&dev) else {
        tracing::debug!(dev = %dev.display(), "cannot open input device");
        return;
    };
    let mut event = [0u8; EVENT_SIZE];
    while file.read_exact(&mut event).is_ok() {
        if let Some(c) = command_of_event(&event) {
            if tx.send(c).is_err() {
                return;
            }
        }
    }
}

/// A thread per `/dev/input/event*` under `dir`.
pub fn watch_keyboards(dir: &Path, tx: &Sender<Command>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("event") {
            continue;
        }
        let tx = tx.clone();
        let dev = e.path();
        if std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || read_events(dev, tx))
            .is_ok()
        {
            n += 1;
        }
    }
    n
}

/// A thread reading command lines from the control FIFO at `path` (opened read-write,
/// so the open does not wait for a writer and the end of one writer is not the end).
pub fn watch_control(path: &Path, tx: Sender<Command>) -> std::io::Result<()> {
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            // Lines are short commands: a long one is cut (and ignored).
            for line in BufReader::new(fifo).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
                match Command::parse(&line) {
                    Some(c) => {
                        if tx.send(c).is_err() {
                            return;
                        }
                    }
                    None => tracing::warn!(line = %crate::printable(&line, 64), "unknown control command"),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[..8].copy_from_slice(&1_700_000_000i64.to_le_bytes());
        e[16..18].copy_from_slice(&kind.to_le_bytes());
        e[18..20].copy_from_slice(&code.to_le_bytes());
        e[20..24].copy_from_slice(&value.to_le_bytes());
        e
    }

    #[test]
    fn paging_keys_press_and_repeat() {
        assert_eq!(
            command_of_event(&event(EV_KEY, KEY_RIGHT, 1)),
            Some(Command::Next)
        );
        assert_eq!(
            command_of_event(&event(EV_KEY, KEY_PAGEDOWN, 2)),
            Some(Command::Next)
        );
        assert_eq!(
            command_of_event(&event(EV_KEY, KEY_PAGEUP, 1)),
            Some(Command::Prev)
        );
        assert_eq!(
            command_of_event(&event(EV_KEY, KEY_LEFT, 1)),
            Some(Command::Prev)
        );
        assert_eq!(
            command_of_event(&event(EV_KEY, KEY_HOME, 1)),
            Some(Command::First)
        );
        assert_eq!(
            command_of_event(&event(EV_KEY, KEY_END, 1)),
            Some(Command::Last)
        );
        // Release, other keys (F = 33), other event types.
        assert_eq!(command_of_event(&event(EV_KEY, KEY_RIGHT, 0)), None);
        assert_eq!(command_of_event(&event(EV_KEY, 33, 1)), None);
        assert_eq!(command_of_event(&event(0x04, KEY_RIGHT, 1)), None);
    }

    #[test]
    fn commands_stay_within_the_images() {
        assert_eq!(Command::Next.apply(0, 3), 1);
        assert_eq!(Command::Next.apply(2, 3), 2);
        assert_eq!(Command::Prev.apply(0, 3), 0);
        assert_eq!(Command::Last.apply(0, 3), 2);
        assert_eq!(Command::First.apply(2, 3), 0);
        assert_eq!(Command::Next.apply(0, 0), 0);
        assert_eq!(Command::parse("next\r"), Some(Command::Next));
        assert_eq!(Command::parse("nope"), None);
    }

    #[test]
    fn control_lines_become_commands() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ctl");
        std::fs::write(&path, "next\nbogus\nlast\n").expect("write");
        let (tx, rx) = std::sync::mpsc::channel();
        watch_control(&path, tx).expect("watch");
        let got: Vec<Command> = rx.iter().take(2).collect();
        assert_eq!(got, [Command::Next, Command::Last]);
    }
}
