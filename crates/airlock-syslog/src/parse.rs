//! A strict RFC 5424 parser: the receiving side, for tests that check what a syslog
//! server got (and for the round trip of [`crate::format`]). It accepts exactly the
//! ABNF of RFC 5424 §6 (with the UTF-8 MSG after a BOM) and nothing looser.
use crate::SyslogError;

/// A parsed SYSLOG-MSG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub prival: u8,
    pub version: u8,
    /// `None` for NILVALUE in each of these.
    pub timestamp: Option<String>,
    pub hostname: Option<String>,
    pub app_name: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    /// SD-ELEMENTs: their SD-ID and parameters (values unescaped).
    pub structured_data: Vec<(String, Vec<(String, String)>)>,
    /// MSG; `true` when it started with a BOM (then it is UTF-8).
    pub msg: Option<(bool, Vec<u8>)>,
}

impl Parsed {
    /// The value of parameter `name` of the element `id`.
    pub fn param(&self, id: &str, name: &str) -> Option<&str> {
        self.structured_data
            .iter()
            .find(|(i, _)| i == id)
            .and_then(|(_, ps)| ps.iter().find(|(n, _)| n == name))
            .map(|(_, v)| v.as_str())
    }

    /// MSG as text, when it is UTF-8 after a BOM.
    pub fn msg_utf8(&self) -> Option<&str> {
        match &self.msg {
            Some((true, b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

fn bad(why: &str) -> SyslogError {
    SyslogError::Framing(format!("not RFC 5424: {why}"))
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8, what: &str) -> Result<(), SyslogError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(bad(what))
        }
    }
    /// A header field: NILVALUE or 1..=max PRINTUSASCII, then SP.
    fn field(&mut self, max: usize, what: &str) -> Result<Option<String>, SyslogError> {
        let start = self.i;
        while self.peek().is_some_and(|c| (33..=126).contains(&c)) {
            self.i += 1;
        }
        let f = &self.b[start..self.i];
        if f.is_empty() || f.len() > max {
            return Err(bad(what));
        }
        self.eat(b' ', what)?;
        let s = String::from_utf8_lossy(f).into_owned();
        Ok((s != "-").then_some(s))
    }
    fn sd_name(&mut self, what: &str) -> Result<String, SyslogError> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| (33..=126).contains(&c) && !matches!(c, b'=' | b']' | b'"'))
        {
            self.i += 1;
        }
        let n = &self.b[start..self.i];
        if n.is_empty() || n.len() > 32 {
            return Err(bad(what));
        }
        Ok(String::from_utf8_lossy(n).into_owned())
    }
}

/// Checks `TIMESTAMP` (RFC 5424 §6.2.3: FULL-DATE "T" FULL-TIME, at most 6 fraction digits).
fn check_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || b[10] != b'T'
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=6).contains(&n) {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':')
}

/// Parses one SYSLOG-MSG (without its frame).
pub fn parse(b: &[u8]) -> Result<Parsed, SyslogError> {
    let mut p = P { b, i: 0 };
    p.eat(b'<', "no PRI")?;
    let start = p.i;
    while p.peek().is_some_and(|c| c.is_ascii_digit()) {
        p.i += 1;
    }
    let pri = std::str::from_utf8(&b[start..p.i]).unwrap_or("");
    let prival: u8 = pri
        .parse()
        .ok()
        .filter(|v| *v <= 191 && (pri == "0" || !pri.starts_with('0')) && pri.len() <= 3)
        .ok_or_else(|| bad("PRIVAL is not 0 to 191"))?;
    p.eat(b'>', "PRI not closed")?;
    let v = p
        .peek()
        .filter(|c| (b'1'..=b'9').contains(c))
        .ok_or_else(|| bad("no VERSION"))?;
    p.i += 1;
    p.eat(b' ', "no space after VERSION")?;
    let timestamp = p.field(64, "TIMESTAMP")?;
    if timestamp.as_deref().is_some_and(|t| !check_timestamp(t)) {
        return Err(bad("TIMESTAMP is not RFC 3339"));
    }
    let hostname = p.field(255, "HOSTNAME")?;
    let app_name = p.field(48, "APP-NAME")?;
    let procid = p.field(128, "PROCID")?;
    let msgid = p.field(32, "MSGID")?;
    let mut structured_data = Vec::new();
    if p.peek() == Some(b'-') {
        p.i += 1;
    } else {
        while p.peek() == Some(b'[') {
            p.i += 1;
            let id = p.sd_name("SD-ID")?;
            let mut params = Vec::new();
            while p.peek() == Some(b' ') {
                p.i += 1;
                let name = p.sd_name("PARAM-NAME")?;
                p.eat(b'=', "no '=' after PARAM-NAME")?;
                p.eat(b'"', "PARAM-VALUE not quoted")?;
                let mut v = Vec::new();
                loop {
                    match p.peek() {
                        None => return Err(bad("PARAM-VALUE not closed")),
                        Some(b'"') => {
                            p.i += 1;
                            break;
                        }
                        Some(b'\\') if matches!(b.get(p.i + 1), Some(b'"' | b'\\' | b']')) => {
                            v.push(b[p.i + 1]);
                            p.i += 2;
                        }
                        Some(b']') => return Err(bad("']' in PARAM-VALUE not escaped")),
                        Some(c) => {
                            v.push(c);
                            p.i += 1;
                        }
                    }
                }
                let v = String::from_utf8(v).map_err(|_| bad("PARAM-VALUE is not UTF-8"))?;
                params.push((name, v));
            }
            p.eat(b']', "SD-ELEMENT not closed")?;
            structured_data.push((id, params));
        }
        if structured_data.is_empty() {
            return Err(bad("no STRUCTURED-DATA"));
        }
    }
    let msg = match p.peek() {
        None => None,
        Some(b' ') => {
            let rest = &b[p.i + 1..];
            Some(match rest.strip_prefix(crate::format::BOM) {
                Some(m) => {
                    if std::str::from_utf8(m).is_err() {
                        return Err(bad("MSG after a BOM is not UTF-8"));
                    }
                    (true, m.to_vec())
                }
                None => (false, rest.to_vec()),
            })
        }
        Some(_) => return Err(bad("no space before MSG")),
    };
    Ok(Parsed {
        prival,
        version: v - b'0',
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{format, Facility, Header, Message, SdElement, SdId, Severity};

    #[test]
    fn round_trips_what_format_writes_even_hostile_values() {
        let h = Header::new(Facility::AUTHPRIV, "broker", "airlockd", "9").unwrap();
        let nasty = "a\"b\\c]d [x@1 y=\"z\"] é 日本";
        let m = Message {
            severity: Severity::Error,
            unix_ms: 1_764_756_900_123,
            msgid: "lease_ended".into(),
            structured_data: vec![SdElement {
                id: SdId::new("airlock@32473").unwrap(),
                params: vec![("user", nasty.into()), ("seq", "3".into())],
            }],
            msg: "{\"k\":\"v\"}".into(),
        };
        let p = parse(&format(&h, &m)).unwrap();
        assert_eq!(p.prival, 83);
        assert_eq!(p.version, 1);
        assert_eq!(p.timestamp.as_deref(), Some("2025-12-03T10:15:00.123Z"));
        assert_eq!(p.hostname.as_deref(), Some("broker"));
        assert_eq!(p.msgid.as_deref(), Some("lease_ended"));
        assert_eq!(p.param("airlock@32473", "user"), Some(nasty));
        assert_eq!(p.param("airlock@32473", "seq"), Some("3"));
        assert_eq!(p.msg_utf8(), Some("{\"k\":\"v\"}"));
    }

    #[test]
    fn rejects_what_rfc5424_does_not_allow() {
        for bad in [
            &b"<192>1 - - - - - -"[..],
            b"<086>1 - - - - - -",
            b"<86>0 - - - - - -",
            b"<86>1 - - - - -",
            b"<86>1 2025-12-03 - - - - -",
            b"<86>1 2025-12-03T10:15:00.1234567Z - - - - -",
            b"<86>1 - - - - - [a@1 b=\"c]\"]",
            b"<86>1 - - - - - [a@1 b=\"c\"",
            b"<86>1 - - - - - [a@1 b=c]",
            b"<86>1 - - - - - []",
            b"<86>1 - - - - - -x",
            b"<86>1 -  - - - - -",
            b"<86>1 - - - - - - \xEF\xBB\xBF\xff",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let ok = parse(b"<0>1 2025-12-03T10:15:00+01:00 h a p m [a@1][b@2 c=\"d\"] plain").unwrap();
        assert_eq!(ok.structured_data.len(), 2);
        assert_eq!(ok.msg, Some((false, b"plain".to_vec())));
        assert!(parse(b"<86>1 - - - - -").is_err());
        assert_eq!(parse(b"<86>1 - - - - - -").unwrap().msg, None);
    }
}
