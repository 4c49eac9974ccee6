//! What an admin does to desktops and leases (the console's actions), who asked and
//! why: each action's audit record names both.
use std::fmt;
use std::net::IpAddr;

/// An admin action on a desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesktopAction {
    /// Keep it out of service: its lease (if any) runs to its end, then it is reset and
    /// stays out until returned.
    Drain,
    /// Put a drained desktop back into service.
    Return,
    /// End its lease (if any) and reset it now with the pool's method.
    Reset,
    /// End its lease (if any) and rebuild it from the golden image (a cold boot).
    Rebuild,
}

names! {
    /// The action's name in URLs and forms.
    DesktopAction {
        Drain => "drain",
        Return => "return",
        Reset => "reset",
        Rebuild => "rebuild",
    }
}

impl DesktopAction {
    /// What the action does, for the console's confirmation text.
    pub fn describe(self) -> &'static str {
        match self {
            DesktopAction::Drain => "keep it out of service (its lease runs to its end)",
            DesktopAction::Return => "put it back into service",
            DesktopAction::Reset => "end its lease, if any, and reset it now",
            DesktopAction::Rebuild => "end its lease, if any, and rebuild it from the golden image",
        }
    }
}

/// The longest reason an admin may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Why an admin acted: 1 to [`MAX_REASON_CHARS`] characters after trimming, on one
/// line, without control characters (it goes into the audit log and its exports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminReason(String);

/// A reason that cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    #[error("give a reason: it goes into the audit log")]
    Empty,
    #[error("the reason is longer than {MAX_REASON_CHARS} characters; shorten it")]
    TooLong,
    #[error("the reason contains a line break or control character; write it on one line")]
    ControlCharacter,
}

impl AdminReason {
    /// Validates a reason typed by an admin.
    pub fn parse(s: &str) -> Result<AdminReason, ReasonError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ReasonError::Empty);
        }
        if t.chars().count() > MAX_REASON_CHARS {
            return Err(ReasonError::TooLong);
        }
        if t.chars().any(char::is_control) {
            return Err(ReasonError::ControlCharacter);
        }
        Ok(AdminReason(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AdminReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asked for an admin action: the console login (or `token` for the admin API's
/// bearer token) and the address the request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    name: String,
    address: Option<IpAddr>,
}

impl Requester {
    pub fn new(name: impl Into<String>, address: Option<IpAddr>) -> Requester {
        Requester {
            name: name.into(),
            address,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(a) => write!(f, "{}@{a}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip() {
        crate::assert_names_round_trip(
            &DesktopAction::ALL,
            DesktopAction::as_str,
            DesktopAction::parse,
        );
    }

    #[test]
    fn reasons_are_trimmed_single_lines_of_bounded_length() {
        assert_eq!(
            AdminReason::parse("  disc stuck ").unwrap().as_str(),
            "disc stuck"
        );
        assert_eq!(AdminReason::parse(" \t "), Err(ReasonError::Empty));
        assert_eq!(
            AdminReason::parse("a\nb"),
            Err(ReasonError::ControlCharacter)
        );
        assert_eq!(
            AdminReason::parse("a\u{7}b"),
            Err(ReasonError::ControlCharacter)
        );
        let long = "é".repeat(MAX_REASON_CHARS);
        assert!(AdminReason::parse(&long).is_ok());
        assert_eq!(
            AdminReason::parse(&format!("{long}x")),
            Err(ReasonError::TooLong)
        );
        assert_eq!(
            AdminReason::parse("患者の取り違え").unwrap().as_str(),
            "患者の取り違え"
        );
    }

    #[test]
    fn requesters_show_name_and_address() {
        let r = Requester::new("admin", Some("10.0.0.5".parse().unwrap()));
        assert_eq!(r.to_string(), "admin@10.0.0.5");
        assert_eq!(Requester::new("token", None).to_string(), "token");
    }
}
