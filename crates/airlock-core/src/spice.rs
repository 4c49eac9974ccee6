//! Where SPICE messages end in a display connection (SPICE protocol 2, the framing of
//! `spice-protocol`'s `protocol.h`), so the broker's TLS display proxy can put each
//! message of the desktop's display server in TLS records of its own.
//!
//! Why: `spice-gtk` (inside `remote-viewer`) waits for its socket to become readable
//! before it reads the next message, and does not look for bytes OpenSSL has already
//! decrypted and holds. When one TLS record carries the end of one message and the start
//! of the next, the second message waits in OpenSSL's buffer until the server happens to
//! send something else; on a main channel that has just linked (link result and
//! `SPICE_MSG_MAIN_INIT` read by the proxy in one go) that never happens, and the viewer
//! sits at "Connected to graphic server" forever. QEMU's own TLS never coalesces two
//! messages into a record; the proxy must not either.
//!
//! The framing, little-endian throughout:
//! - the client opens with a link header (`REDQ`, major, minor, size: 16 bytes) and a
//!   link message of `size` bytes (connection id, channel type and id, capability counts
//!   and offset, then the capabilities);
//! - the server answers with a link header and a link reply (error, 162-byte public key,
//!   capability counts and offset, then the capabilities);
//! - after the client's ticket, the server sends a 4-byte link result;
//! - then messages: a mini header (type u16, size u32) when both sides announce
//!   `SPICE_COMMON_CAP_MINI_HEADER`, else a full header (serial u64, type u16, size u32,
//!   sub-list u32), each followed by `size` bytes.
//!
//! This only finds boundaries: it never changes, holds or allocates for a message's bytes.
//! A stream that does not follow the framing (a wrong magic, a malformed link message)
//! is passed on unframed: QEMU refuses it anyway, and nothing is lost. The broker's QEMU
//! offers SPICE ticket authentication only (no SASL exchange between reply and result).

/// `SPICE_MAGIC`: "REDQ".
pub const MAGIC: u32 = u32::from_le_bytes(*b"REDQ");
/// The link header: magic, major and minor version, size of what follows.
pub const LINK_HEADER_LEN: usize = 16;
/// The fixed part of the client's link message.
const LINK_MESS_LEN: usize = 18;
/// The fixed part of the server's link reply (error, public key, counts, offset).
const LINK_REPLY_LEN: usize = 4 + 162 + 12;
/// The link result after the ticket.
const LINK_RESULT_LEN: usize = 4;
/// `SPICE_COMMON_CAP_MINI_HEADER`.
const CAP_MINI_HEADER: u32 = 3;
/// The mini message header: type u16, size u32.
const MINI_HEADER_LEN: usize = 6;
/// The full message header: serial u64, type u16, size u32, sub-list u32.
const FULL_HEADER_LEN: usize = 18;
/// A link message or reply longer than this is not SPICE (`spice-server` refuses links
/// over 4 KiB; the caps of every version fit in a few words).
const MAX_LINK_LEN: usize = 4096;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let x = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// Does a link message or reply (`body`, the part after the link header) whose counts
/// sit at `counts_at` announce the mini header among its common capabilities? `None`
/// when the counts or the capabilities lie outside the body.
fn announces_mini_header(body: &[u8], counts_at: usize) -> Option<bool> {
    let common = usize::try_from(u32_at(body, counts_at)?).ok()?;
    let offset = usize::try_from(u32_at(body, counts_at + 8)?).ok()?;
    if common == 0 {
        return Some(false);
    }
    // Capability word i holds bits 32*i .. 32*i+31.
    let word = CAP_MINI_HEADER as usize / 32;
    if word >= common {
        return Some(false);
    }
    // Every announced word must be inside the body.
    let end = offset.checked_add(common.checked_mul(4)?)?;
    if end > body.len() {
        return None;
    }
    let bits = u32_at(body, offset + 4 * word)?;
    Some(bits & (1 << (CAP_MINI_HEADER % 32)) != 0)
}

/// Collects the first `want` bytes of a stream piece by piece.
#[derive(Debug, Default)]
struct Gather {
    bytes: Vec<u8>,
}

impl Gather {
    /// Takes what it still needs from `chunk[*at..]`, advancing `at`; the whole piece
    /// once it has `want` bytes.
    fn take(&mut self, want: usize, chunk: &[u8], at: &mut usize) -> Option<Vec<u8>> {
        let need = want.saturating_sub(self.bytes.len());
        let n = need.min(chunk.len() - *at);
        self.bytes.extend_from_slice(&chunk[*at..*at + n]);
        *at += n;
        (self.bytes.len() == want).then(|| std::mem::take(&mut self.bytes))
    }
}

/// Reads the client's side of a connection: its link message, for its capabilities.
#[derive(Debug, Default)]
pub struct ClientLink {
    gather: Gather,
    header: Option<usize>,
    result: Option<Option<bool>>,
}

impl ClientLink {
    /// Feeds bytes the client sent. Once its link message is complete: `Some(Some(mini))`
    /// (whether it announces the mini header) or `Some(None)` (not a SPICE link); `None`
    /// while incomplete. Later bytes are ignored.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Option<bool>> {
        let mut at = 0;
        while self.result.is_none() && at < chunk.len() {
            match self.header {
                None => {
                    if let Some(h) = self.gather.take(LINK_HEADER_LEN, chunk, &mut at) {
                        match link_size(&h) {
                            Some(size) if size >= LINK_MESS_LEN => self.header = Some(size),
                            _ => self.result = Some(None),
                        }
                    }
                }
                Some(size) => {
                    if let Some(body) = self.gather.take(size, chunk, &mut at) {
                        self.result = Some(announces_mini_header(&body, 6));
                    }
                }
            }
        }
        self.result
    }
}

/// The size a link header announces, if it is a SPICE 2 link header of a sane size.
fn link_size(header: &[u8]) -> Option<usize> {
    if u32_at(header, 0)? != MAGIC || u32_at(header, 4)? != 2 {
        return None;
    }
    let size = usize::try_from(u32_at(header, 12)?).ok()?;
    (size <= MAX_LINK_LEN).then_some(size)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    LinkHeader,
    LinkReply {
        size: usize,
    },
    LinkResult,
    Header,
    Body {
        left: u64,
    },
    /// Not SPICE as expected: no more boundaries.
    Unframed,
}

/// Finds where each unit of the server's side ends: the link header with its reply, the
/// link result, then each message.
#[derive(Debug)]
pub struct ServerFrames {
    stage: Stage,
    gather: Gather,
    /// The server announces the mini header (known after its reply).
    server_mini: bool,
}

impl Default for ServerFrames {
    fn default() -> Self {
        ServerFrames {
            stage: Stage::LinkHeader,
            gather: Gather::default(),
            server_mini: false,
        }
    }
}

impl ServerFrames {
    /// Feeds bytes the server sent; returns the offsets in `chunk` just past each unit
    /// that ends inside it, in order. `client_mini`: what [`ClientLink`] found (`None`:
    /// unknown, and the rest of the stream is passed on unframed).
    pub fn push(&mut self, chunk: &[u8], client_mini: Option<bool>) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = 0;
        while at < chunk.len() {
            match self.stage {
                Stage::Unframed => break,
                Stage::LinkHeader => {
                    if let Some(h) = self.gather.take(LINK_HEADER_LEN, chunk, &mut at) {
                        self.stage = match link_size(&h) {
                            Some(size) if size >= LINK_REPLY_LEN => Stage::LinkReply { size },
                            _ => Stage::Unframed,
                        };
                    }
                }
                Stage::LinkReply { size } => {
                    if let Some(body) = self.gather.take(size, chunk, &mut at) {
                        ends.push(at);
                        match (u32_at(&body, 0), announces_mini_header(&body, 166)) {
                            // An error reply ends the link: the server closes.
                            (Some(0), Some(mini)) => {
                                self.server_mini = mini;
                                self.stage = Stage::LinkResult;
                            }
                            _ => self.stage = Stage::Unframed,
                        }
                    }
                }
                Stage::LinkResult => {
                    if let Some(result) = self.gather.take(LINK_RESULT_LEN, chunk, &mut at) {
                        ends.push(at);
                        self.stage = match client_mini {
                            Some(_) if u32_at(&result, 0) == Some(0) => Stage::Header,
                            _ => Stage::Unframed,
                        };
                    }
                }
                Stage::Header => {
                    let mini = self.server_mini && client_mini == Some(true);
                    let (len, size_at) = if mini {
                        (MINI_HEADER_LEN, 2)
                    } else {
                        (FULL_HEADER_LEN, 10)
                    };
                    if let Some(h) = self.gather.take(len, chunk, &mut at) {
                        let size = u32_at(&h, size_at).map_or(0, u64::from);
                        if size == 0 {
                            ends.push(at);
                        } else {
                            self.stage = Stage::Body { left: size };
                        }
                    }
                }
                Stage::Body { left } => {
                    let avail = (chunk.len() - at) as u64;
                    if avail >= left {
                        // `left` fits in the chunk, so in usize.
                        at += usize::try_from(left).unwrap_or(chunk.len() - at);
                        ends.push(at);
                        self.stage = Stage::Header;
                    } else {
                        at = chunk.len();
                        self.stage = Stage::Body { left: left - avail };
                    }
                }
            }
        }
        ends
    }

    /// Has the stream left the framing (no more boundaries will be found)?
    pub fn unframed(&self) -> bool {
        self.stage == Stage::Unframed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_header(size: usize) -> Vec<u8> {
        let mut h = MAGIC.to_le_bytes().to_vec();
        h.extend_from_slice(&2u32.to_le_bytes());
        h.extend_from_slice(&2u32.to_le_bytes());
        h.extend_from_slice(&(size as u32).to_le_bytes());
        h
    }

    /// A link header and a link message or reply: `fixed` (the part before the counts),
    /// then the counts, the offset, the common caps and one channel cap word.
    fn link(fixed: Vec<u8>, common: &[u32]) -> Vec<u8> {
        let mut m = fixed;
        let caps_offset = m.len() + 12;
        for word in [common.len(), 1, caps_offset] {
            m.extend_from_slice(&(word as u32).to_le_bytes());
        }
        for c in common.iter().chain(&[0xf]) {
            m.extend_from_slice(&c.to_le_bytes());
        }
        let mut all = link_header(m.len());
        all.extend(m);
        all
    }

    fn client_link(common: &[u32]) -> Vec<u8> {
        // Connection id 7, the main channel 0.
        link([7, 0, 0, 0, 1, 0].to_vec(), common)
    }

    fn server_reply(error: u32, common: &[u32]) -> Vec<u8> {
        let mut fixed = error.to_le_bytes().to_vec();
        fixed.extend_from_slice(&[0x30; 162]);
        link(fixed, common)
    }

    fn mini(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = kind.to_le_bytes().to_vec();
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(body);
        m
    }

    fn full(serial: u64, kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = serial.to_le_bytes().to_vec();
        m.extend_from_slice(&kind.to_le_bytes());
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(body);
        m
    }

    /// The server's stream as units, and the expected ends.
    fn stream(units: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut all = Vec::new();
        let mut ends = Vec::new();
        for u in units {
            all.extend_from_slice(u);
            ends.push(all.len());
        }
        (all, ends)
    }

    /// Feeds `all` cut at `cuts`; the ends found, as offsets in `all`.
    fn ends_when_cut(all: &[u8], cuts: &[usize], client_mini: Option<bool>) -> Vec<usize> {
        let mut f = ServerFrames::default();
        let mut found = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&all.len())) {
            for e in f.push(&all[start..end], client_mini) {
                found.push(start + e);
            }
            start = end;
        }
        found
    }

    fn spice_session(mini_header: bool) -> (Vec<u8>, Vec<usize>) {
        let caps = if mini_header { 0b1011 } else { 0b0011 };
        let msg = |k: u16, b: &[u8]| {
            if mini_header {
                mini(k, b)
            } else {
                full(u64::from(k), k, b)
            }
        };
        stream(&[
            // The link header and the reply are one unit.
            server_reply(0, &[caps]),
            0u32.to_le_bytes().to_vec(),
            msg(103, &[1u8; 32]), // SPICE_MSG_MAIN_INIT
            msg(104, &[]),        // an empty message
            msg(105, &[2u8; 300]),
            msg(4, &[3u8; 5]),
        ])
    }

    #[test]
    fn every_way_of_cutting_the_stream_finds_the_same_ends() {
        for mini_header in [true, false] {
            let (all, want) = spice_session(mini_header);
            // Whole, byte by byte, and every single and double cut.
            assert_eq!(ends_when_cut(&all, &[], Some(mini_header)), want);
            let every: Vec<usize> = (1..all.len()).collect();
            assert_eq!(ends_when_cut(&all, &every, Some(mini_header)), want);
            for a in 1..all.len() {
                assert_eq!(
                    ends_when_cut(&all, &[a], Some(mini_header)),
                    want,
                    "cut {a}"
                );
            }
            for a in (1..all.len()).step_by(7) {
                for b in (a..all.len()).step_by(5) {
                    assert_eq!(ends_when_cut(&all, &[a, b], Some(mini_header)), want);
                }
            }
        }
    }

    #[test]
    fn the_mini_header_needs_both_sides() {
        // The server announces it, the client does not: full headers.
        let (all, want) = spice_session(false);
        let without = server_reply(0, &[0b0011]);
        let mut bytes = server_reply(0, &[0b1011]);
        assert_eq!(bytes.len(), without.len());
        bytes.extend_from_slice(&all[without.len()..]);
        assert_eq!(ends_when_cut(&bytes, &[], Some(false)), want);
        // The client announces it, the server does not: full headers too.
        assert_eq!(ends_when_cut(&all, &[], Some(true)), want);
    }

    #[test]
    fn the_clients_link_says_whether_it_takes_the_mini_header() {
        let link = client_link(&[0b1011]);
        let mut c = ClientLink::default();
        for (i, b) in link.iter().enumerate() {
            let r = c.push(std::slice::from_ref(b));
            if i + 1 < link.len() {
                assert_eq!(r, None, "byte {i}");
            } else {
                assert_eq!(r, Some(Some(true)));
            }
        }
        assert_eq!(c.push(b"later bytes"), Some(Some(true)));
        assert_eq!(
            ClientLink::default().push(&client_link(&[0b0011])),
            Some(Some(false))
        );
        assert_eq!(
            ClientLink::default().push(&client_link(&[])),
            Some(Some(false))
        );
        // Not SPICE, or caps outside the message.
        assert_eq!(
            ClientLink::default().push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(None)
        );
        let mut bad = client_link(&[0b1011]);
        bad[16 + 14] = 200; // caps offset far past the end
        assert_eq!(ClientLink::default().push(&bad), Some(None));
        let mut huge = link_header(1 << 20);
        huge.extend_from_slice(&[0; 32]);
        assert_eq!(ClientLink::default().push(&huge), Some(None));
    }

    #[test]
    fn what_is_not_spice_passes_unframed() {
        // A wrong magic, an error reply, a refused ticket, an unknown client.
        let mut f = ServerFrames::default();
        assert!(f
            .push(b"HTTP/1.1 400 Bad Request\r\n\r\n", Some(true))
            .is_empty());
        assert!(f.unframed());

        let refused = server_reply(3, &[0b1011]);
        let mut f = ServerFrames::default();
        assert_eq!(f.push(&refused, Some(true)), vec![refused.len()]);
        assert!(f.unframed());

        let (all, _) = spice_session(true);
        let link = server_reply(0, &[0b1011]).len();
        let mut rejected = all[..link].to_vec();
        rejected.extend_from_slice(&7u32.to_le_bytes());
        rejected.extend_from_slice(&all[link + 4..]);
        let mut f = ServerFrames::default();
        assert_eq!(f.push(&rejected, Some(true)), vec![link, link + 4]);
        assert!(f.unframed());

        let mut f = ServerFrames::default();
        assert_eq!(f.push(&all, None), vec![link, link + 4]);
        assert!(f.unframed());
    }

    #[test]
    fn random_bytes_never_panic_and_ends_stay_in_the_chunk() {
        // A small deterministic generator: the property, not the sequence, matters.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (session, _) = spice_session(true);
        for round in 0..2000 {
            let mut bytes = if round % 2 == 0 {
                session.clone()
            } else {
                Vec::new()
            };
            let extra = (next() % 400) as usize;
            bytes.extend((0..extra).map(|_| next() as u8));
            if round % 3 == 0 && bytes.len() > 20 {
                let i = (next() as usize) % bytes.len();
                bytes[i] ^= 0xff;
            }
            let mut f = ServerFrames::default();
            let mut c = ClientLink::default();
            for piece in bytes.chunks(1 + (next() % 50) as usize) {
                let mut last = 0;
                for e in f.push(piece, Some(true)) {
                    assert!(e > last && e <= piece.len(), "{e} after {last}");
                    last = e;
                }
                let _ = c.push(piece);
            }
        }
    }
}
