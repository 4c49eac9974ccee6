//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use usbredir::{BulkPacket, Bytes, Caps, Codec, Error, Frame, Packet, Role, Status};

/// Parses hex digits, ignoring whitespace and `|` separators.
pub fn hx(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| b.is_ascii_hexdigit())
        .map(|b| (b as char).to_digit(16).unwrap() as u8)
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {s:?}");
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

/// `n` zero bytes.
pub fn z(n: usize) -> Vec<u8> {
    vec![0; n]
}

/// Concatenation.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A bulk packet on stream 0 with status success.
pub fn bulk(endpoint: u8, length: u32, data: impl Into<Bytes>) -> BulkPacket {
    BulkPacket {
        endpoint,
        status: Status::Success,
        length,
        stream_id: 0,
        data: data.into(),
    }
}

/// A codec pair after both hellos: `(sender, receiver)`, where the sender
/// advertised `sender_caps` and the receiver `receiver_caps`.
pub fn pair(sender: Role, sender_caps: u32, receiver_caps: u32) -> (Codec, Codec) {
    (
        Codec::with_caps(
            sender,
            Caps::from_bits(sender_caps),
            Caps::from_bits(receiver_caps),
        ),
        Codec::with_caps(
            sender.peer(),
            Caps::from_bits(receiver_caps),
            Caps::from_bits(sender_caps),
        ),
    )
}

/// Decodes everything in `bytes` with `codec` (fed in one go).
pub fn decode_all(codec: &mut Codec, bytes: &[u8]) -> Vec<Result<Frame, Error>> {
    codec.feed(bytes).unwrap();
    let mut out = Vec::new();
    loop {
        match codec.next_frame() {
            Ok(Some(f)) => out.push(Ok(f)),
            Ok(None) => break,
            Err(e) => out.push(Err(e)),
        }
    }
    out
}

/// Decodes exactly one packet from `bytes` and checks nothing is left.
pub fn decode_one(codec: &mut Codec, bytes: &[u8]) -> Result<Frame, Error> {
    codec.feed(bytes).unwrap();
    let r = codec.next_frame().map(|f| f.expect("incomplete packet"));
    assert_eq!(codec.buffered(), 0, "bytes left over after one packet");
    r
}

/// Asserts that `sender` encodes `(id, packet)` to exactly `bytes` and that
/// the receiver decodes `bytes` back to the same frame.
pub fn check_vector(
    sender: Role,
    sender_caps: u32,
    receiver_caps: u32,
    id: u64,
    packet: Packet,
    bytes: &[u8],
) {
    let (mut tx, mut rx) = pair(sender, sender_caps, receiver_caps);
    let encoded = tx.encode(id, &packet).unwrap();
    assert_eq!(encoded, bytes, "encoding of {packet:?}");
    let frame = decode_one(&mut rx, bytes).unwrap();
    assert_eq!(frame, Frame { id, packet });
}
