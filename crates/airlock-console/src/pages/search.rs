//! The filters of the sessions and audit pages: read from the query string, validated,
//! and written back into the form and the pager's links.
use airlock_core::UnixMillis;
use serde::Deserialize;

/// The longest name (terminal, user, desktop, lease, action) a filter takes.
pub(crate) const MAX_NAME: usize = 128;

/// The query string of both search pages, as typed (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Params {
    #[serde(default)]
    pub terminal: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub desktop: String,
    #[serde(default)]
    pub lease: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub outcome: String,
    /// `YYYY-MM-DDTHH:MM[:SS]`, UTC (an HTML `datetime-local` field).
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub text: String,
    /// The pager's cursor.
    #[serde(default)]
    pub page: String,
}

/// A filter field that cannot be used, with what to type instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParamError {
    #[error("{0} is longer than {MAX_NAME} characters")]
    TooLong(&'static str),
    #[error("{0} contains a control character")]
    Control(&'static str),
    #[error("{0}: write a UTC time as YYYY-MM-DDTHH:MM (seconds optional)")]
    Time(&'static str),
    #[error("event: a DICOM event code is a number such as 110113")]
    Event,
    #[error(
        "outcome: one of 0 (success), 4 (minor failure), 8 (serious failure), 12 (major failure)"
    )]
    Outcome,
    #[error("the page cursor is not one this console made; start from the first page")]
    Page,
    #[error("from must be before to")]
    Range,
}

/// A trimmed name field, `None` when empty.
pub(crate) fn name(field: &'static str, v: &str) -> Result<Option<String>, ParamError> {
    let t = v.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.chars().count() > MAX_NAME {
        return Err(ParamError::TooLong(field));
    }
    if t.chars().any(char::is_control) {
        return Err(ParamError::Control(field));
    }
    Ok(Some(t.to_owned()))
}

/// A UTC time from a `datetime-local` field, in Unix ms; `None` when empty.
pub(crate) fn time(field: &'static str, v: &str) -> Result<Option<UnixMillis>, ParamError> {
    let t = v.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let long = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let short = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let dt = time::PrimitiveDateTime::parse(t, &long)
        .or_else(|_| time::PrimitiveDateTime::parse(t, &short))
        .map_err(|_| ParamError::Time(field))?;
    let ms = dt.assume_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms)
        .map(Some)
        .map_err(|_| ParamError::Time(field))
}

/// Both ends of a time range, checked to be in order.
pub(crate) fn range(p: &Params) -> Result<(Option<UnixMillis>, Option<UnixMillis>), ParamError> {
    let (from, to) = (time("from", &p.from)?, time("to", &p.to)?);
    if let (Some(a), Some(b)) = (from, to) {
        if a >= b {
            return Err(ParamError::Range);
        }
    }
    Ok((from, to))
}

/// The query string that repeats `p` with another page cursor.
pub(crate) fn with_page(p: &Params, page: &str) -> String {
    let pairs = [
        ("terminal", &p.terminal),
        ("user", &p.user),
        ("desktop", &p.desktop),
        ("lease", &p.lease),
        ("action", &p.action),
        ("event", &p.event),
        ("outcome", &p.outcome),
        ("from", &p.from),
        ("to", &p.to),
        ("text", &p.text),
    ];
    let mut q: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v.trim())))
        .collect();
    if !page.is_empty() {
        q.push(format!("page={}", encode(page)));
    }
    q.join("&")
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub(crate) fn encode(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("user", "  dr-a "), Ok(Some("dr-a".into())));
        assert_eq!(name("user", "   "), Ok(None));
        assert_eq!(
            name("user", &"x".repeat(129)),
            Err(ParamError::TooLong("user"))
        );
        assert_eq!(name("user", "a\u{0}b"), Err(ParamError::Control("user")));
        assert_eq!(name("user", "山田"), Ok(Some("山田".into())));
    }

    #[test]
    fn times_are_utc_minutes_or_seconds() {
        assert_eq!(time("from", "1970-01-01T00:01"), Ok(Some(60_000)));
        assert_eq!(time("from", "1970-01-01T00:01:05"), Ok(Some(65_000)));
        assert_eq!(time("from", ""), Ok(None));
        for bad in [
            "yesterday",
            "2026-13-01T00:00",
            "2026-12-01",
            "2026-12-01T25:00",
        ] {
            assert_eq!(time("from", bad), Err(ParamError::Time("from")), "{bad}");
        }
        let p = Params {
            from: "2026-12-02T00:00".into(),
            to: "2026-12-01T00:00".into(),
            ..Params::default()
        };
        assert_eq!(range(&p), Err(ParamError::Range));
    }

    #[test]
    fn the_pager_repeats_the_filter() {
        let p = Params {
            user: "dr a&b".into(),
            terminal: " ".into(),
            ..Params::default()
        };
        assert_eq!(with_page(&p, "12"), "user=dr%20a%26b&page=12");
        assert_eq!(encode("山"), "%E5%B1%B1");
    }
}
