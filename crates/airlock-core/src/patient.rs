//! The patient and order a key image belongs to, as the HIS gives them (never the
//! disc): validated at the edge against the DICOM value representations they are
//! written in (PS3.5 6.2), so a value that a PACS would refuse or cut is refused here
//! with the field's name.

/// A person's name (PN): up to three component groups, alphabetic, ideographic and
/// phonetic (`Yamada^Taro=山田^太郎=やまだ^たろう`), each of up to five `^`-separated
/// components, each group at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

/// The patient and order of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientContext {
    /// Patient ID (LO).
    pub id: String,
    /// Issuer of Patient ID (LO), when the site has several.
    pub issuer: Option<String>,
    pub name: Option<PersonName>,
    /// Birth date (DA, `YYYYMMDD`).
    pub birth_date: Option<String>,
    /// Sex (CS: `M`, `F` or `O`).
    pub sex: Option<String>,
    /// Accession number of the order (SH).
    pub accession: Option<String>,
    /// The order's Study Instance UID, when the worklist gives one.
    pub study_uid: Option<String>,
}

/// A patient field the HIS sent that cannot go into a DICOM object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error(
        "{field} contains a character DICOM does not allow there (control characters, or `\\`)"
    )]
    BadCharacter { field: &'static str },
    #[error("patient name: more than three component groups (alphabetic=ideographic=phonetic)")]
    TooManyGroups,
    #[error("patient name: a component group has more than five `^`-separated parts")]
    TooManyComponents,
    #[error("birth date: write it as YYYYMMDD (a real date)")]
    BirthDate,
    #[error("sex: M, F or O")]
    Sex,
    #[error("study UID: digits and dots, at most 64 characters, no leading zeros")]
    StudyUid,
}

/// Checks a string value: not empty, at most `max` characters, none of the characters
/// DICOM text forbids (control characters; `\`, the value separator).
fn text(field: &'static str, v: &str, max: usize) -> Result<String, PatientError> {
    let t = v.trim();
    if t.is_empty() {
        return Err(PatientError::Empty { field });
    }
    if t.chars().count() > max {
        return Err(PatientError::TooLong { field, max });
    }
    if t.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PatientError::BadCharacter { field });
    }
    Ok(t.to_owned())
}

impl PersonName {
    /// Parses a PN value (DICOM's own notation).
    pub fn parse(v: &str) -> Result<PersonName, PatientError> {
        let field = "patient name";
        let t = text(field, v, 3 * 64 + 2)?;
        let groups: Vec<&str> = t.split('=').collect();
        if groups.len() > 3 {
            return Err(PatientError::TooManyGroups);
        }
        for g in &groups {
            if g.chars().count() > 64 {
                return Err(PatientError::TooLong { field, max: 64 });
            }
            if g.split('^').count() > 5 {
                return Err(PatientError::TooManyComponents);
            }
        }
        Ok(PersonName(t))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether any character is outside ASCII (the object then needs a character set
    /// other than the default).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

/// Checks a UID (PS3.5 9.1): components of digits separated by dots, no leading zero
/// in a component of more than one digit, at most 64 characters.
pub fn valid_uid(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

/// A real calendar date written `YYYYMMDD` (years 1 to 9999, Gregorian leap years).
fn valid_date(d: &str) -> bool {
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let num = |r: std::ops::Range<usize>| d.get(r).and_then(|s| s.parse::<u32>().ok());
    let (Some(y), Some(m), Some(day)) = (num(0..4), num(4..6), num(6..8)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1 && (1..=days).contains(&day)
}

impl PatientContext {
    /// Validates what the HIS (or the worklist) gave: each field by its DICOM type.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: &str,
        issuer: Option<&str>,
        name: Option<&str>,
        birth_date: Option<&str>,
        sex: Option<&str>,
        accession: Option<&str>,
        study_uid: Option<&str>,
    ) -> Result<PatientContext, PatientError> {
        fn opt(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let birth_date = match opt(birth_date) {
            Some(d) if valid_date(d) => Some(d.to_owned()),
            Some(_) => return Err(PatientError::BirthDate),
            None => None,
        };
        let sex = match opt(sex) {
            Some(s @ ("M" | "F" | "O")) => Some(s.to_owned()),
            Some(_) => return Err(PatientError::Sex),
            None => None,
        };
        let study_uid = match opt(study_uid) {
            Some(u) if valid_uid(u) => Some(u.to_owned()),
            Some(_) => return Err(PatientError::StudyUid),
            None => None,
        };
        Ok(PatientContext {
            id: text("patient ID", id, 64)?,
            issuer: opt(issuer)
                .map(|v| text("issuer of patient ID", v, 64))
                .transpose()?,
            name: opt(name).map(PersonName::parse).transpose()?,
            birth_date,
            sex,
            accession: opt(accession)
                .map(|v| text("accession number", v, 16))
                .transpose()?,
            study_uid,
        })
    }

    /// Whether any value needs a character set beyond ASCII.
    pub fn needs_extended_charset(&self) -> bool {
        let fields = [
            Some(self.id.as_str()),
            self.issuer.as_deref(),
            self.name.as_ref().map(PersonName::as_str),
            self.accession.as_deref(),
        ];
        fields.into_iter().flatten().any(|v| !v.is_ascii())
    }
}

impl crate::wire::PatientRequest {
    /// The request's values checked by their DICOM types (no study UID: the HIS does
    /// not give one).
    pub fn check(&self) -> Result<PatientContext, PatientError> {
        PatientContext::new(
            &self.patient_id,
            self.issuer.as_deref(),
            self.name.as_deref(),
            self.birth_date.as_deref(),
            self.sex.as_deref(),
            self.accession.as_deref(),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_names_keep_their_three_groups() {
        let n = PersonName::parse("Yamada^Taro=山田^太郎=やまだ^たろう").unwrap();
        assert!(!n.is_ascii());
        assert_eq!(n.as_str().split('=').count(), 3);
        assert_eq!(
            PersonName::parse("a=b=c=d"),
            Err(PatientError::TooManyGroups)
        );
        assert_eq!(
            PersonName::parse("a^b^c^d^e^f"),
            Err(PatientError::TooManyComponents)
        );
        assert_eq!(
            PersonName::parse(&"x".repeat(65)),
            Err(PatientError::TooLong {
                field: "patient name",
                max: 64
            })
        );
        assert!(PersonName::parse(&format!("{}={}", "x".repeat(64), "山".repeat(64))).is_ok());
        assert_eq!(
            PersonName::parse("a\\b"),
            Err(PatientError::BadCharacter {
                field: "patient name"
            })
        );
    }

    #[test]
    fn dates_are_real_calendar_dates() {
        for ok in ["19800229", "20000229", "20241231", "00010101", "19990930"] {
            assert!(valid_date(ok), "{ok}");
        }
        for bad in [
            "19000229", "19810229", "20241301", "20240001", "20240431", "20240100", "00000101",
            "2024011", "2024-1-1", "2024010a", "",
        ] {
            assert!(!valid_date(bad), "{bad}");
        }
    }

    #[test]
    fn each_field_is_checked_by_its_type() {
        let ok = PatientContext::new(
            "P1",
            None,
            None,
            Some("19800229"),
            Some("F"),
            Some("A-1"),
            Some("1.2.3"),
        )
        .unwrap();
        assert_eq!(ok.birth_date.as_deref(), Some("19800229"));
        let e = |r: Result<PatientContext, PatientError>| r.unwrap_err();
        assert_eq!(
            e(PatientContext::new(" ", None, None, None, None, None, None)),
            PatientError::Empty {
                field: "patient ID"
            }
        );
        assert_eq!(
            e(PatientContext::new(
                "P",
                None,
                None,
                Some("19810229"),
                None,
                None,
                None
            )),
            PatientError::BirthDate
        );
        assert_eq!(
            e(PatientContext::new(
                "P",
                None,
                None,
                Some("1980-02-29"),
                None,
                None,
                None
            )),
            PatientError::BirthDate
        );
        assert_eq!(
            e(PatientContext::new(
                "P",
                None,
                None,
                None,
                Some("X"),
                None,
                None
            )),
            PatientError::Sex
        );
        assert_eq!(
            e(PatientContext::new(
                "P",
                None,
                None,
                None,
                None,
                Some(&"1".repeat(17)),
                None
            )),
            PatientError::TooLong {
                field: "accession number",
                max: 16
            }
        );
        assert_eq!(
            e(PatientContext::new(
                "P",
                None,
                None,
                None,
                None,
                None,
                Some("1.02")
            )),
            PatientError::StudyUid
        );
        assert_eq!(
            e(PatientContext::new(
                "P\u{7}Q", None, None, None, None, None, None
            )),
            PatientError::BadCharacter {
                field: "patient ID"
            }
        );
        // Empty optional fields are absent.
        let p = PatientContext::new("P", Some(""), Some(" "), Some(""), None, None, None).unwrap();
        assert!(p.issuer.is_none() && p.name.is_none() && p.birth_date.is_none());
    }

    #[test]
    fn uids_follow_ps3_5() {
        for good in ["1.2.840.10008.5.1.4.1.1.7", "2.25.0", "1.0.1"] {
            assert!(valid_uid(good), "{good}");
        }
        for bad in ["", "1..2", "1.02", "1.2.", "a.b", &"1.".repeat(33)] {
            assert!(!valid_uid(bad), "{bad}");
        }
    }
}
