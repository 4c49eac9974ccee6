//! Validated identifiers. Every value that arrives from outside (URL path, JSON body,
//! config) is parsed into one of these at the edge, so the rest of the code never sees an
//! unchecked string.
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty; give a non-empty value")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long; the limit is {max}")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} contains {found:?}; allowed: {allowed}")]
    BadChar {
        kind: &'static str,
        found: char,
        allowed: &'static str,
    },
    #[error("{kind} must be {expected}")]
    BadFormat {
        kind: &'static str,
        expected: &'static str,
    },
}

fn check_slug(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = s.chars().count();
    if len > max {
        return Err(IdError::TooLong { kind, len, max });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(IdError::BadChar {
            kind,
            found,
            allowed: "a-z, 0-9, '-' and '_'",
        });
    }
    if s.starts_with('-') {
        return Err(IdError::BadFormat {
            kind,
            expected: "a name that does not start with '-'",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A desktop in the pool, e.g. `desk-01`. Lower-case letters, digits, `-`, `_`; at most 32.
    DesktopId
);
string_id!(
    /// A terminal known to the broker (from the config), e.g. `ward3-room2`.
    TerminalName
);
string_id!(
    /// A lease: 32 lower-case hex digits (128 random bits chosen by the broker).
    LeaseId
);
string_id!(
    /// A place in the waiting line: 32 lower-case hex digits (128 random bits chosen by
    /// the broker).
    TicketId
);
string_id!(
    /// The clinician's user name as the terminal reports it (for the audit trail only:
    /// the broker authenticates terminals, not users).
    UserName
);

impl DesktopId {
    /// Parses and validates a desktop id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_slug("desktop id", s, 32)?;
        Ok(Self(s.to_owned()))
    }

    /// The id of the `n`-th desktop (1-based) of a pool with the given name prefix.
    pub fn numbered(prefix: &str, n: usize) -> Result<Self, IdError> {
        Self::parse(&format!("{prefix}-{n:02}"))
    }
}

impl TerminalName {
    /// Parses and validates a terminal name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_slug("terminal name", s, 64)?;
        Ok(Self(s.to_owned()))
    }
}

/// 32 lower-case hex digits, or the error naming `kind`.
fn check_hex32(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(IdError::BadFormat {
            kind,
            expected: "32 lower-case hex digits",
        });
    }
    Ok(())
}

/// 16 random bytes as 32 lower-case hex digits.
fn hex32(bytes: [u8; 16]) -> String {
    let mut s = String::with_capacity(32);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    s
}

/// `parse` and `from_random` for an id of 32 lower-case hex digits.
macro_rules! random_hex_id {
    ($name:ident, $kind:literal) => {
        impl $name {
            #[doc = concat!("Parses a ", $kind, " as it appears in a URL.")]
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_hex32($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            #[doc = concat!("Builds a ", $kind, " from 16 random bytes supplied by the caller.")]
            pub fn from_random(bytes: [u8; 16]) -> Self {
                Self(hex32(bytes))
            }
        }
    };
}
random_hex_id!(LeaseId, "lease id");
random_hex_id!(TicketId, "ticket id");

impl UserName {
    /// Parses a user name: 1 to 128 printable characters, no control characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let kind = "user name";
        if s.trim().is_empty() {
            return Err(IdError::Empty { kind });
        }
        let len = s.chars().count();
        if len > 128 {
            return Err(IdError::TooLong {
                kind,
                len,
                max: 128,
            });
        }
        if let Some(found) = s.chars().find(|c| c.is_control()) {
            return Err(IdError::BadChar {
                kind,
                found,
                allowed: "printable characters",
            });
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn desktop_ids() {
        assert_eq!(DesktopId::numbered("desk", 1).unwrap().as_str(), "desk-01");
        assert!(DesktopId::parse("").is_err());
        assert!(DesktopId::parse("Desk").is_err());
        assert!(DesktopId::parse("-x").is_err());
        assert!(DesktopId::parse(&"a".repeat(33)).is_err());
        assert!(DesktopId::parse("../etc").is_err());
    }

    #[test]
    fn lease_ids() {
        let id = LeaseId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert_eq!(LeaseId::parse(id.as_str()).unwrap(), id);
        assert!(LeaseId::parse("AB").is_err());
        assert!(LeaseId::parse(&"g".repeat(32)).is_err());
    }

    #[test]
    fn user_names() {
        assert!(UserName::parse("dr. Müller").is_ok());
        assert!(UserName::parse("  ").is_err());
        assert!(UserName::parse("a\nb").is_err());
        assert!(UserName::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: DesktopId = serde_json_like("desk-02");
        assert_eq!(ok.as_str(), "desk-02");
    }

    fn serde_json_like(s: &str) -> DesktopId {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let d: StrDeserializer<'_, Error> = s.into_deserializer();
        DesktopId::deserialize(d).unwrap()
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".*") {
            let _ = DesktopId::parse(&s);
            let _ = LeaseId::parse(&s);
            let _ = TerminalName::parse(&s);
            let _ = UserName::parse(&s);
        }

        #[test]
        fn random_lease_ids_round_trip(b in any::<[u8; 16]>()) {
            let id = LeaseId::from_random(b);
            prop_assert_eq!(LeaseId::parse(id.as_str()).unwrap(), id);
        }
    }
}
