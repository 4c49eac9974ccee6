//! Export of the audit trail as CSV or JSON lines, streamed record by record to any
//! `Write` (a file, stdout, an HTTP body): nothing is collected, so millions of records
//! export in constant memory. Records come oldest first (chain order).
use crate::reader::{AuditFilter, AuditView, Reader};
use crate::{Store, StoreError};
use airlock_core::UnixMillis;
use std::io::Write;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row ([`CSV_HEADER`]).
    Csv,
    /// One JSON object a line: the record's fields and its `atna` classification.
    JsonLines,
}

impl ExportFormat {
    /// `csv` or `jsonl`.
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" => Some(ExportFormat::JsonLines),
            _ => None,
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::JsonLines => "application/jsonl; charset=utf-8",
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::JsonLines => "jsonl",
        }
    }
}

/// The CSV columns.
pub const CSV_HEADER: [&str; 17] = [
    "seq",
    "ts",
    "time_utc",
    "action",
    "event_id",
    "event_meaning",
    "event_type",
    "action_code",
    "outcome",
    "terminal",
    "user",
    "desktop",
    "lease",
    "details",
    "prev_hash",
    "hash",
    "known_action",
];

/// What went wrong in an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot write the export as CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot write the export as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds
/// (`2026-12-03T10:11:12.345Z`).
pub fn rfc3339_ms(ms: UnixMillis) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time as Unix milliseconds: a number of milliseconds, a UTC date
/// (`2026-12-03`, its midnight) or an RFC 3339 UTC time (`2026-12-03T10:11:12Z`,
/// optionally with a fraction of up to 9 digits, of which milliseconds count).
/// `None` for anything else (other offsets than `Z` included).
pub fn parse_time_ms(s: &str) -> Option<UnixMillis> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (y, m, d) = (dp.next()?, dp.next()?, dp.next()?);
    if dp.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
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
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[usize::try_from(m - 1).ok()?] {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if let Some(t) = time {
        let t = t.strip_suffix(['Z', 'z'])?;
        let (hms, frac) = match t.split_once('.') {
            Some((a, f)) => (a, Some(f)),
            None => (t, None),
        };
        let mut tp = hms.split(':');
        let (h, mi, se) = (tp.next()?, tp.next()?, tp.next()?);
        if tp.next().is_some() || h.len() != 2 || mi.len() != 2 || se.len() != 2 {
            return None;
        }
        let (h, mi, se) = (num(h)?, num(mi)?, num(se)?);
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        ms += (h * 3600 + mi * 60 + se) * 1000;
        if let Some(f) = frac {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let f3: String = f.chars().chain("000".chars()).take(3).collect();
            ms += num(&f3)?;
        }
    }
    Some(ms)
}

fn csv_row(v: &AuditView) -> [String; 17] {
    let r = &v.record;
    let a = &v.atna;
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    [
        r.seq.to_string(),
        r.ts.to_string(),
        rfc3339_ms(r.ts),
        r.action.clone(),
        a.event_id.code.to_string(),
        a.event_id.meaning.to_owned(),
        a.event_type.map(|t| t.code.to_string()).unwrap_or_default(),
        a.action_code.as_str().to_owned(),
        a.outcome.code().to_string(),
        o(&r.terminal),
        o(&r.user),
        o(&r.desktop),
        o(&r.lease),
        r.details.clone(),
        r.prev_hash.clone(),
        r.hash.clone(),
        a.known.to_string(),
    ]
}

/// Writes records one at a time in a format (the header first, for CSV).
pub struct ExportWriter<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Json(std::io::BufWriter<W>),
}

impl<W: Write> ExportWriter<W> {
    /// A writer; for CSV the header row is written now.
    pub fn new(format: ExportFormat, out: W) -> Result<Self, ExportError> {
        let inner = match format {
            ExportFormat::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(CSV_HEADER)?;
                Inner::Csv(Box::new(w))
            }
            ExportFormat::JsonLines => Inner::Json(std::io::BufWriter::new(out)),
        };
        Ok(ExportWriter { inner })
    }

    /// Writes one record.
    pub fn write(&mut self, v: &AuditView) -> Result<(), ExportError> {
        match &mut self.inner {
            Inner::Csv(w) => w.write_record(csv_row(v))?,
            Inner::Json(w) => {
                serde_json::to_writer(&mut *w, v)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Flushes and gives the output back.
    pub fn finish(self) -> Result<W, ExportError> {
        match self.inner {
            Inner::Csv(w) => w
                .into_inner()
                .map_err(|e| ExportError::Write(e.into_error())),
            Inner::Json(w) => w
                .into_inner()
                .map_err(|e| ExportError::Write(e.into_error())),
        }
    }
}

/// Exports the records `filter` matches from a [`Reader`] to `out`; returns how many.
pub fn export_audit<W: Write>(
    reader: &Reader,
    filter: &AuditFilter,
    format: ExportFormat,
    out: W,
) -> Result<u64, ExportError> {
    let mut w = ExportWriter::new(format, out)?;
    let n = reader.for_each_audit(filter, |v| w.write(&v))?;
    w.finish()?;
    Ok(n)
}

/// [`export_audit`] from a [`Store`]'s own connection.
pub fn export_audit_from_store<W: Write>(
    store: &Store,
    filter: &AuditFilter,
    format: ExportFormat,
    out: W,
) -> Result<u64, ExportError> {
    let mut w = ExportWriter::new(format, out)?;
    let n = store.for_each_audit(filter, |v| w.write(&v))?;
    w.finish()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn times_parse() {
        use super::parse_time_ms as p;
        assert_eq!(p("1796303472005"), Some(1_796_303_472_005));
        assert_eq!(p("2026-12-03T13:11:12.005Z"), Some(1_796_303_472_005));
        assert_eq!(p("2026-12-03T13:11:12Z"), Some(1_796_303_472_000));
        assert_eq!(p("2026-12-03"), Some(1_796_256_000_000));
        assert_eq!(p("2000-02-29"), Some(951_782_400_000));
        for bad in [
            "",
            "x",
            "2026-13-01",
            "2026-02-30",
            "2026-12-03T25:00:00Z",
            "2026-12-03T10:00:00+01:00",
            "2026-12-03T10:00Z",
            "2026-1-03",
            "99999999999999999999",
            "2026-12-03T10:00:00.Z",
            "-5",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        for ms in [0, 1, 951_782_400_123, 1_796_303_472_005] {
            assert_eq!(p(&rfc3339_ms(ms)), Some(ms));
        }
    }

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_796_303_472_005), "2026-12-03T13:11:12.005Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
