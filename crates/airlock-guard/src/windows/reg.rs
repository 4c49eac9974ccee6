//! A reader for Windows registry files (`.reg`, the "Windows Registry Editor Version 5.00"
//! text format), for the subset the terminal policy writes: sections, `REG_DWORD` and `REG_SZ`
//! values, the default value (`@`), `;` comments and blank lines, with CRLF or LF line ends.
//!
//! It reads text that is already decoded (a UTF-16LE file must be decoded by the caller; a
//! leading byte order mark is skipped). Anything else the format allows (`hex:` values, key
//! or value deletion, line continuations) is refused with [`RegError::Unsupported`] rather
//! than misread. It never panics, whatever the input.

/// The first line of a version 5 registry file.
pub const HEADER: &str = "Windows Registry Editor Version 5.00";

/// The root keys a section may start with.
const ROOTS: &[&str] = &[
    "HKEY_LOCAL_MACHINE",
    "HKEY_CURRENT_USER",
    "HKEY_CLASSES_ROOT",
    "HKEY_USERS",
    "HKEY_CURRENT_CONFIG",
];

/// The data of one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    /// `dword:XXXXXXXX`
    Dword(u32),
    /// `"text"`, unescaped.
    String(String),
}

/// One `name=data` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegEntry {
    /// The value name; `None` for the default value (`@=`).
    pub name: Option<String>,
    pub value: RegValue,
    /// The 1-based line it was read from.
    pub line: usize,
}

/// One `[key]` section and the values under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegSection {
    /// The full key path, root first, as written (e.g. `HKEY_LOCAL_MACHINE\SOFTWARE\...`).
    pub key: String,
    /// The 1-based line of the section header.
    pub line: usize,
    pub entries: Vec<RegEntry>,
}

/// A parsed registry file: its sections in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegFile {
    pub sections: Vec<RegSection>,
}

/// Why a registry file was refused; every variant names the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegError {
    #[error(
        "line 1: expected the header \"Windows Registry Editor Version 5.00\", found {found:?}"
    )]
    MissingHeader { found: String },
    #[error("line {line}: bad section {text:?}: expected [HKEY_...\\key]")]
    BadSection { line: usize, text: String },
    #[error("line {line}: a value before any [section]")]
    ValueOutsideSection { line: usize },
    #[error("line {line}: bad dword {text:?}: expected dword: and 8 hex digits")]
    BadDword { line: usize, text: String },
    #[error("line {line}: unterminated string")]
    UnterminatedString { line: usize },
    #[error("line {line}: bad escape \\{found} in a string (only \\\\ and \\\" are known)")]
    BadEscape { line: usize, found: char },
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: &'static str },
    #[error("line {line}: not supported by this reader: {text:?}")]
    Unsupported { line: usize, text: String },
}

impl RegFile {
    /// Parses a version 5 registry file.
    pub fn parse(text: &str) -> Result<Self, RegError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .enumerate()
            .map(|(i, l)| (i + 1, l));

        let header = lines.next().map_or("", |(_, l)| l);
        if header != HEADER {
            return Err(RegError::MissingHeader {
                found: header.chars().take(80).collect(),
            });
        }

        let mut file = RegFile::default();
        for (line, raw) in lines {
            let text = raw.trim();
            if text.is_empty() || text.starts_with(';') {
                continue;
            }
            if text.starts_with('[') {
                file.sections.push(RegSection {
                    key: parse_section(line, text)?,
                    line,
                    entries: Vec::new(),
                });
            } else if text.starts_with('"') || text.starts_with('@') {
                let section = file
                    .sections
                    .last_mut()
                    .ok_or(RegError::ValueOutsideSection { line })?;
                section.entries.push(parse_entry(line, text)?);
            } else {
                return Err(RegError::Syntax {
                    line,
                    what:
                        "expected a [section], a \"name\"= or @= value, a ; comment or a blank line",
                });
            }
        }
        Ok(file)
    }

    /// Every value under `key` (all sections of that key, file order); keys compare without
    /// regard to ASCII case, as the registry does.
    pub fn values<'a: 'k, 'k>(
        &'a self,
        key: &'k str,
    ) -> impl Iterator<Item = (Option<&'a str>, &'a RegValue)> + 'k {
        self.sections
            .iter()
            .filter(move |s| s.key.eq_ignore_ascii_case(key))
            .flat_map(|s| &s.entries)
            .map(|e| (e.name.as_deref(), &e.value))
    }

    /// The named value under `key` as the file leaves it (the last assignment wins); names
    /// compare without regard to ASCII case.
    pub fn value(&self, key: &str, name: &str) -> Option<&RegValue> {
        self.values(key)
            .filter(|(n, _)| n.is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v)
            .last()
    }

    /// The default value (`@`) of `key`, if the file sets it.
    pub fn default_value(&self, key: &str) -> Option<&RegValue> {
        self.values(key)
            .filter(|(n, _)| n.is_none())
            .map(|(_, v)| v)
            .last()
    }
}

/// `[HKEY_ROOT\a\b]` (trimmed) to `HKEY_ROOT\a\b`.
fn parse_section(line: usize, text: &str) -> Result<String, RegError> {
    let bad = || RegError::BadSection {
        line,
        text: text.to_owned(),
    };
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(bad)?;
    if inner.starts_with('-') {
        return Err(RegError::Unsupported {
            line,
            text: text.to_owned(),
        });
    }
    let mut parts = inner.split('\\');
    let root = parts.next().unwrap_or("");
    if !ROOTS.contains(&root) || parts.any(str::is_empty) {
        return Err(bad());
    }
    Ok(inner.to_owned())
}

/// `"name"=data` or `@=data` (trimmed).
fn parse_entry(line: usize, text: &str) -> Result<RegEntry, RegError> {
    let (name, rest) = match text.strip_prefix('@') {
        Some(rest) => (None, rest),
        None => {
            let (name, rest) = parse_quoted(line, text)?;
            (Some(name), rest)
        }
    };
    let data = rest.strip_prefix('=').ok_or(RegError::Syntax {
        line,
        what: "expected = after the value name",
    })?;
    let value = if data.starts_with('"') {
        let (s, after) = parse_quoted(line, data)?;
        if !after.is_empty() {
            return Err(RegError::Syntax {
                line,
                what: "text after the closing quote",
            });
        }
        RegValue::String(s)
    } else if data
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("dword:"))
    {
        let digits = &data[6..];
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RegError::BadDword {
                line,
                text: data.to_owned(),
            });
        }
        let v = u32::from_str_radix(digits, 16).map_err(|_| RegError::BadDword {
            line,
            text: data.to_owned(),
        })?;
        RegValue::Dword(v)
    } else {
        return Err(RegError::Unsupported {
            line,
            text: data.to_owned(),
        });
    };
    Ok(RegEntry { name, value, line })
}

/// Reads a `"..."` string at the start of `text` (which begins with `"`): its unescaped
/// contents and the text after the closing quote.
fn parse_quoted(line: usize, text: &str) -> Result<(String, &str), RegError> {
    let body = text.strip_prefix('"').ok_or(RegError::Syntax {
        line,
        what: "expected a quoted name",
    })?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '"'))) => out.push(e),
                Some((_, found)) => return Err(RegError::BadEscape { line, found }),
                None => return Err(RegError::UnterminatedString { line }),
            },
            c => out.push(c),
        }
    }
    Err(RegError::UnterminatedString { line })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<RegFile, RegError> {
        RegFile::parse(&format!("{HEADER}\r\n\r\n{body}"))
    }

    #[test]
    fn reads_sections_values_comments_and_both_line_ends() {
        let text = "Windows Registry Editor Version 5.00\n\
                    \n\
                    ; a comment\n\
                    [HKEY_LOCAL_MACHINE\\SOFTWARE\\A]\r\n\
                    \"One\"=dword:0000000a\r\n\
                    \"Path\"=\"C:\\\\x \\\"y\\\"\"\n\
                    @=\"default\"\n\
                    \n\
                    [HKEY_CURRENT_USER\\B C]\n\
                    \"Empty\"=\"\"\n";
        let reg = RegFile::parse(text).expect("parses");
        assert_eq!(reg.sections.len(), 2);
        let a = r"HKEY_LOCAL_MACHINE\SOFTWARE\A";
        assert_eq!(reg.value(a, "One"), Some(&RegValue::Dword(10)));
        assert_eq!(
            reg.value(a, "one"),
            Some(&RegValue::Dword(10)),
            "names ignore case"
        );
        assert_eq!(
            reg.value(a, "Path"),
            Some(&RegValue::String(r#"C:\x "y""#.to_owned()))
        );
        assert_eq!(
            reg.default_value(a),
            Some(&RegValue::String("default".to_owned()))
        );
        assert_eq!(
            reg.value(r"hkey_current_user\b c", "Empty"),
            Some(&RegValue::String(String::new()))
        );
        assert_eq!(reg.sections[0].line, 4);
        assert_eq!(reg.sections[0].entries[1].line, 6);
    }

    #[test]
    fn later_assignments_win_across_sections() {
        let reg = parse(
            "[HKEY_LOCAL_MACHINE\\K]\n\"V\"=dword:00000001\n[HKEY_LOCAL_MACHINE\\K]\n\"V\"=dword:ffffffff\n",
        )
        .expect("parses");
        assert_eq!(
            reg.value(r"HKEY_LOCAL_MACHINE\K", "V"),
            Some(&RegValue::Dword(u32::MAX))
        );
        assert_eq!(reg.values(r"HKEY_LOCAL_MACHINE\K").count(), 2);
    }

    #[test]
    fn skips_a_byte_order_mark() {
        let text = format!("\u{feff}{HEADER}\r\n[HKEY_USERS\\X]\r\n");
        assert!(RegFile::parse(&text).is_ok());
    }

    #[test]
    fn refuses_a_missing_or_wrong_header() {
        for text in [
            "",
            "[HKEY_LOCAL_MACHINE\\K]\n",
            "REGEDIT4\n",
            "Windows Registry Editor Version 5.00 \n",
            " Windows Registry Editor Version 5.00\n",
        ] {
            assert!(
                matches!(RegFile::parse(text), Err(RegError::MissingHeader { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_dwords() {
        for data in [
            "dword:1",
            "dword:000000001",
            "dword:0000000g",
            "dword:",
            "dword:-0000001",
            "dword:0000 001",
        ] {
            let err = parse(&format!("[HKEY_LOCAL_MACHINE\\K]\n\"V\"={data}\n")).unwrap_err();
            assert_eq!(
                err,
                RegError::BadDword {
                    line: 4,
                    text: data.to_owned()
                }
            );
        }
    }

    #[test]
    fn refuses_a_value_before_any_section() {
        assert_eq!(
            parse("\"V\"=dword:00000001\n").unwrap_err(),
            RegError::ValueOutsideSection { line: 3 }
        );
        assert_eq!(
            parse("@=\"x\"\n").unwrap_err(),
            RegError::ValueOutsideSection { line: 3 }
        );
    }

    #[test]
    fn refuses_unterminated_strings() {
        for body in [
            "\"V\"=\"abc\n",
            "\"V=\"abc\"\n",
            "\"V\"=\"abc\\\"\n",
            "\"V\"=\"abc\\",
            "\"V\n",
        ] {
            let err = parse(&format!("[HKEY_LOCAL_MACHINE\\K]\n{body}")).unwrap_err();
            assert!(
                matches!(
                    err,
                    RegError::UnterminatedString { line: 4 } | RegError::Syntax { line: 4, .. }
                ),
                "{body:?}: {err}"
            );
        }
        assert_eq!(
            parse("[HKEY_LOCAL_MACHINE\\K]\n\"V\"=\"abc\n").unwrap_err(),
            RegError::UnterminatedString { line: 4 }
        );
    }

    #[test]
    fn refuses_bad_sections_and_lines() {
        for (body, want) in [
            ("[HKEY_LOCAL_MACHINE\\K\n", "BadSection"),
            ("[HKLM\\K]\n", "BadSection"),
            ("[HKEY_LOCAL_MACHINE\\\\K]\n", "BadSection"),
            ("[HKEY_LOCAL_MACHINE\\K\\]\n", "BadSection"),
            ("[-HKEY_LOCAL_MACHINE\\K]\n", "Unsupported"),
            ("[HKEY_LOCAL_MACHINE\\K]\n\"V\"=hex:01,02\n", "Unsupported"),
            ("[HKEY_LOCAL_MACHINE\\K]\n\"V\"=-\n", "Unsupported"),
            ("[HKEY_LOCAL_MACHINE\\K]\n\"V\"\n", "Syntax"),
            (
                "[HKEY_LOCAL_MACHINE\\K]\n\"V\" = dword:00000001\n",
                "Syntax",
            ),
            ("[HKEY_LOCAL_MACHINE\\K]\n\"V\"=\"a\" ; no\n", "Syntax"),
            ("[HKEY_LOCAL_MACHINE\\K]\nV=dword:00000001\n", "Syntax"),
            ("[HKEY_LOCAL_MACHINE\\K]\n\"V\"=\"a\\tb\"\n", "BadEscape"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{body:?}: {err:?}");
        }
    }

    #[test]
    fn errors_read_well() {
        let err = parse("[HKEY_LOCAL_MACHINE\\K]\n\"V\"=dword:1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 4: bad dword \"dword:1\": expected dword: and 8 hex digits"
        );
    }

    /// Every prefix and many one-character corruptions of a valid file are judged without a
    /// panic.
    #[test]
    fn never_panics() {
        let valid = format!(
            "{HEADER}\r\n\r\n; c\r\n[HKEY_LOCAL_MACHINE\\S\\K]\r\n\"A\"=dword:00000001\r\n\"B\"=\"x\\\\y\\\"z\"\r\n@=\"\u{e9}\"\r\n"
        );
        assert!(RegFile::parse(&valid).is_ok());
        for (i, _) in valid.char_indices() {
            let _ = RegFile::parse(&valid[..i]);
            for c in [
                '"', '\\', '[', ']', '=', '@', ';', '\n', '\r', '\u{e9}', 'x', ' ',
            ] {
                let mut corrupt = valid.clone();
                let end = i + valid[i..].chars().next().map_or(0, char::len_utf8);
                corrupt.replace_range(i..end, c.encode_utf8(&mut [0; 4]));
                let _ = RegFile::parse(&corrupt);
            }
        }
    }
}
