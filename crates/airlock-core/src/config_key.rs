//! The one shape of a configuration error that names its key (the broker's `airlockd.toml`
//! and the terminal's `terminal.toml` alike): which key, what is wrong, what to do; and the
//! error of loading such a file.
use std::path::PathBuf;

/// A configuration file that cannot be used: unreadable, not valid TOML (or unknown keys),
/// or a value that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {what} {path}")]
    Read {
        /// What the file is, e.g. `config file`, `token file`.
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key {0}")]
    Invalid(InvalidKey),
}

/// The error for a wrong value of `key`.
pub fn invalid(
    key: &'static str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid(InvalidKey::new(key, problem, fix))
}

/// A configuration value that is wrong: `key`, the `problem`, the `fix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {problem}; {fix}")]
pub struct InvalidKey {
    /// The dotted key, e.g. `pool.size`.
    pub key: &'static str,
    pub problem: String,
    pub fix: String,
}

impl InvalidKey {
    pub fn new(key: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        InvalidKey {
            key,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_key_the_problem_and_the_fix() {
        let e = InvalidKey::new("pool.size", "0 is too small", "give at least 1");
        assert_eq!(
            e.to_string(),
            "`pool.size`: 0 is too small; give at least 1"
        );
        assert_eq!(e.key, "pool.size");
    }
}
