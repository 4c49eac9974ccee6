//! RFC 5424 messages and their octet-counted framing (RFC 6587 §3.4.1, RFC 5425 §4.3).
//!
//! Everything here is pure: header fields are validated once ([`Header::new`]), values
//! that come from records (MSGID, SD-PARAM values, MSG) are made safe when a message is
//! built, so no record can end a field, an SD-ELEMENT or the frame early.
use crate::SyslogError;
use std::fmt::Write as _;

/// The UTF-8 byte order mark that starts a UTF-8 MSG (RFC 5424 §6.4).
pub const BOM: &[u8] = b"\xEF\xBB\xBF";
/// RFC 5424's NILVALUE.
pub const NIL: &str = "-";
/// The longest SD-PARAM value this crate writes (bytes, cut on a character boundary);
/// the full value is in MSG.
pub const MAX_PARAM_VALUE: usize = 255;

/// A syslog facility (RFC 5424 §6.2.1, 0..=23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    /// `authpriv` (10): security/authorization messages, kept out of world-readable
    /// files by common syslog setups; IHE ATNA senders commonly use it.
    pub const AUTHPRIV: Facility = Facility(10);

    const NAMES: [&'static str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];

    /// A facility by number (0..=23).
    pub fn new(n: u8) -> Result<Facility, SyslogError> {
        if usize::from(n) < Self::NAMES.len() {
            Ok(Facility(n))
        } else {
            Err(SyslogError::Facility(n.to_string()))
        }
    }

    /// A facility by name (`authpriv`, `local4`, …) or number (`10`).
    pub fn parse(s: &str) -> Result<Facility, SyslogError> {
        if let Some(i) = Self::NAMES.iter().position(|n| *n == s) {
            return Ok(Facility(i as u8));
        }
        s.parse::<u8>()
            .ok()
            .and_then(|n| Facility::new(n).ok())
            .ok_or_else(|| SyslogError::Facility(s.to_owned()))
    }

    /// Its number.
    pub fn code(self) -> u8 {
        self.0
    }
}

/// A syslog severity (RFC 5424 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Informational = 6,
    Debug = 7,
}

/// PRINTUSASCII (%d33-126): what HOSTNAME, APP-NAME, PROCID and MSGID consist of.
fn is_print_us_ascii(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// Checks a header field: 1..=`max` PRINTUSASCII characters.
fn header_field(field: &'static str, v: &str, max: usize) -> Result<String, SyslogError> {
    if v.is_empty() || v.len() > max || !v.bytes().all(is_print_us_ascii) {
        return Err(SyslogError::HeaderField {
            field,
            max,
            value: v.escape_debug().take(80).collect(),
        });
    }
    Ok(v.to_owned())
}

/// A field made from outside data: non-PRINTUSASCII bytes become `_`, at most `max`
/// characters, NILVALUE when empty.
pub fn sanitize_header_value(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii() && is_print_us_ascii(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        NIL.to_owned()
    } else {
        s
    }
}

/// The fixed part of every message of one sender: facility, HOSTNAME, APP-NAME, PROCID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    facility: Facility,
    hostname: String,
    app_name: String,
    procid: String,
}

impl Header {
    /// Validates the fields (RFC 5424 §6.2: 1*255, 1*48, 1*128 PRINTUSASCII).
    pub fn new(
        facility: Facility,
        hostname: &str,
        app_name: &str,
        procid: &str,
    ) -> Result<Header, SyslogError> {
        Ok(Header {
            facility,
            hostname: header_field("hostname", hostname, 255)?,
            app_name: header_field("app_name", app_name, 48)?,
            procid: header_field("procid", procid, 128)?,
        })
    }

    pub fn facility(&self) -> Facility {
        self.facility
    }

    /// PRIVAL = facility × 8 + severity.
    pub fn prival(&self, severity: Severity) -> u8 {
        self.facility.0 * 8 + severity as u8
    }
}

/// Is `s` an SD-NAME: 1..=32 PRINTUSASCII except `=`, space, `]` and `"`?
pub fn is_sd_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| is_print_us_ascii(b) && !matches!(b, b'=' | b']' | b'"'))
}

/// An SD-ID of a private structured-data element: `name@<private enterprise number>`
/// (RFC 5424 §7.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdId(String);

impl SdId {
    /// Validates `name@PEN` (the PEN digits, optionally dotted: `airlock@32473.1`).
    pub fn new(s: &str) -> Result<SdId, SyslogError> {
        let bad = || SyslogError::SdId(s.escape_debug().take(80).collect());
        let (name, pen) = s.split_once('@').ok_or_else(bad)?;
        let pen_ok = !pen.is_empty()
            && pen
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !is_sd_name(s) || name.is_empty() || !pen_ok {
            return Err(bad());
        }
        Ok(SdId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Writes an SD-PARAM value: at most [`MAX_PARAM_VALUE`] bytes (cut on a character
/// boundary), `"`, `\` and `]` escaped (RFC 5424 §6.3.3), control characters replaced by
/// U+FFFD so that no line break or NUL reaches a receiver that splits on them.
pub fn escape_param_value(out: &mut String, v: &str) {
    let v = cut(v, MAX_PARAM_VALUE);
    for c in v.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One SD-ELEMENT: its SD-ID and its parameters (names must be SD-NAMEs; values are
/// escaped when written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    pub id: SdId,
    pub params: Vec<(&'static str, String)>,
}

impl SdElement {
    fn write(&self, out: &mut String) {
        out.push('[');
        out.push_str(self.id.as_str());
        for (name, value) in &self.params {
            debug_assert!(is_sd_name(name), "{name} is not an SD-NAME");
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_param_value(out, value);
            out.push('"');
        }
        out.push(']');
    }
}

/// RFC 3339 UTC with milliseconds (`2026-12-03T10:15:00.123Z`), or NILVALUE for a
/// time before 1970 or after 9999.
pub fn timestamp(unix_ms: i64) -> String {
    if !(0..253_402_300_800_000).contains(&unix_ms) {
        return NIL.to_owned();
    }
    airlock_store::export::rfc3339_ms(unix_ms)
}

/// One message's variable parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub severity: Severity,
    /// Unix milliseconds.
    pub unix_ms: i64,
    /// Made safe when written ([`sanitize_header_value`], 32 characters).
    pub msgid: String,
    pub structured_data: Vec<SdElement>,
    /// Written after a BOM as UTF-8.
    pub msg: String,
}

/// The RFC 5424 SYSLOG-MSG of `m` from `h`.
pub fn format(h: &Header, m: &Message) -> Vec<u8> {
    let mut s = String::with_capacity(256 + m.msg.len());
    let _ = write!(
        s,
        "<{}>1 {} {} {} {} {} ",
        h.prival(m.severity),
        timestamp(m.unix_ms),
        h.hostname,
        h.app_name,
        h.procid,
        sanitize_header_value(&m.msgid, 32)
    );
    if m.structured_data.is_empty() {
        s.push_str(NIL);
    } else {
        for e in &m.structured_data {
            e.write(&mut s);
        }
    }
    let mut out = s.into_bytes();
    if !m.msg.is_empty() {
        out.push(b' ');
        out.extend_from_slice(BOM);
        out.extend_from_slice(m.msg.as_bytes());
    }
    out
}

/// Octet-counting framing: `MSG-LEN SP SYSLOG-MSG` (RFC 6587 §3.4.1, RFC 5425 §4.3).
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
    out
}

/// Reads frames back from a byte stream (for tests and the receiver side of tests):
/// the complete frames and the bytes left over.
pub fn unframe(mut buf: &[u8]) -> Result<(Vec<Vec<u8>>, &[u8]), SyslogError> {
    let mut out = Vec::new();
    loop {
        let Some(sp) = buf.iter().position(|b| *b == b' ') else {
            if buf.len() > 10 || !buf.iter().all(u8::is_ascii_digit) {
                return Err(SyslogError::Framing("no length before the message".into()));
            }
            return Ok((out, buf));
        };
        let len = std::str::from_utf8(&buf[..sp])
            .ok()
            .filter(|l| !l.is_empty() && !l.starts_with('0') && l.len() <= 10)
            .and_then(|l| l.parse::<usize>().ok())
            .ok_or_else(|| SyslogError::Framing("a frame does not start with its length".into()))?;
        let rest = &buf[sp + 1..];
        if rest.len() < len {
            return Ok((out, buf));
        }
        out.push(rest[..len].to_vec());
        buf = &rest[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header::new(Facility::AUTHPRIV, "broker.example", "airlockd", "42").unwrap()
    }

    #[test]
    fn facilities_by_name_and_number() {
        assert_eq!(Facility::parse("authpriv").unwrap(), Facility::AUTHPRIV);
        assert_eq!(Facility::parse("local4").unwrap().code(), 20);
        assert_eq!(Facility::parse("13").unwrap().code(), 13);
        for bad in ["24", "-1", "", "AUTHPRIV", "local8", "999"] {
            assert!(Facility::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(header().prival(Severity::Informational), 86);
        assert_eq!(header().prival(Severity::Emergency), 80);
        let local7 = Header::new(Facility::parse("local7").unwrap(), "h", "a", "1").unwrap();
        assert_eq!(local7.prival(Severity::Debug), 191);
    }

    #[test]
    fn header_fields_are_validated() {
        let f = Facility::AUTHPRIV;
        assert!(Header::new(f, &"h".repeat(255), &"a".repeat(48), &"p".repeat(128)).is_ok());
        for (h, a, p) in [
            ("", "a", "1"),
            ("h h", "a", "1"),
            ("h\n", "a", "1"),
            ("hé", "a", "1"),
            (&"h".repeat(256) as &str, "a", "1"),
            ("h", &"a".repeat(49), "1"),
            ("h", "a", &"p".repeat(129)),
            ("h", "a\u{0}", "1"),
        ] {
            let e = Header::new(f, h, a, p).unwrap_err();
            assert!(e.to_string().contains("PRINTUSASCII"), "{e}");
        }
    }

    #[test]
    fn sd_ids_are_name_at_enterprise_number() {
        for ok in ["airlock@32473", "a@1", "airlock@32473.1.2"] {
            assert!(SdId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "airlock",
            "@32473",
            "airlock@",
            "air lock@32473",
            "air]lock@1",
            "a\"b@1",
            "a=b@1",
            "airlock@32473x",
            "airlock@1..2",
            "averyveryveryveryverylongname@32473",
            "a@b@1",
        ] {
            assert!(SdId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_764_756_900_123), "2025-12-03T10:15:00.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(timestamp(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(timestamp(253_402_300_800_000), "-");
        assert_eq!(timestamp(-1), "-");
        // Every day of four years round-trips through the month lengths.
        let mut days = 0i64;
        for y in 2024..2028 {
            for m in 1..=12 {
                let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
                let len = [
                    31,
                    if leap { 29 } else { 28 },
                    31,
                    30,
                    31,
                    30,
                    31,
                    31,
                    30,
                    31,
                    30,
                    31,
                ][m - 1];
                for d in 1..=len {
                    let ts = timestamp((19_723 + days) * 86_400_000);
                    assert_eq!(&ts[..10], format!("{y:04}-{m:02}-{d:02}"));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn param_values_are_escaped_and_capped() {
        let mut s = String::new();
        escape_param_value(&mut s, r#"a"b\c]d"#);
        assert_eq!(s, r#"a\"b\\c\]d"#);
        let mut s = String::new();
        escape_param_value(&mut s, "x\ny\r\u{0}z\u{1b}[31m\u{85}");
        assert_eq!(s, "x\u{FFFD}y\u{FFFD}\u{FFFD}z\u{FFFD}[31m\u{FFFD}");
        let mut s = String::new();
        escape_param_value(&mut s, &"é".repeat(200));
        assert_eq!(s.len(), 254, "cut before a split character");
        assert!(s.chars().all(|c| c == 'é'));
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("aé", 2), "a");
    }

    #[test]
    fn messages_have_the_rfc5424_shape() {
        let m = Message {
            severity: Severity::Warning,
            unix_ms: 1_764_756_900_123,
            msgid: "lease_granted".into(),
            structured_data: vec![SdElement {
                id: SdId::new("airlock@32473").unwrap(),
                params: vec![("seq", "7".into()), ("user", "dr \"x\"]\n".into())],
            }],
            msg: "{\"a\":1}".into(),
        };
        let out = format(&header(), &m);
        let mut want = br#"<84>1 2025-12-03T10:15:00.123Z broker.example airlockd 42 lease_granted [airlock@32473 seq="7" user="dr \"x\"\]"#.to_vec();
        want.extend_from_slice("\u{FFFD}\"] ".as_bytes());
        want.extend_from_slice(BOM);
        want.extend_from_slice(b"{\"a\":1}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(out, want);

        let bare = Message {
            structured_data: vec![],
            msg: String::new(),
            msgid: "bad id\nwith é and a very long tail beyond thirty-two".into(),
            ..m
        };
        let out = String::from_utf8(format(&header(), &bare)).unwrap();
        assert_eq!(
            out,
            "<84>1 2025-12-03T10:15:00.123Z broker.example airlockd 42 bad_id_with___and_a_very_long_ta -"
        );
        let nil = Message {
            msgid: String::new(),
            ..bare
        };
        assert!(String::from_utf8(format(&header(), &nil))
            .unwrap()
            .ends_with(" 42 - -"));
    }

    #[test]
    fn frames_carry_the_length_in_octets() {
        let msg = "<86>1 - - - - - - \u{FEFF}é".as_bytes();
        let f = frame(msg);
        assert!(f.starts_with(format!("{} <86>", msg.len()).as_bytes()));
        let mut two = f.clone();
        two.extend_from_slice(&frame(b"<86>1 - - - - -"));
        two.extend_from_slice(b"15 <86>1");
        let (frames, rest) = unframe(&two).unwrap();
        assert_eq!(frames, vec![msg.to_vec(), b"<86>1 - - - - -".to_vec()]);
        assert_eq!(rest, b"15 <86>1");
        assert!(unframe(b"x <86>").is_err());
        assert!(unframe(b"012 <86>").is_err());
        assert!(unframe(b" <86>").is_err());
        assert_eq!(unframe(b"12").unwrap().1, b"12");
    }
}
