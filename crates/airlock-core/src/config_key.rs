//! The one shape of a configuration error that names its key (the broker's `airlockd.toml`
//! and the terminal's `terminal.toml` alike): which key, what is wrong, what to do.

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
