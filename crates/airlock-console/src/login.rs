//! Who may log in to the console: named accounts with an argon2 password hash (from the
//! config, made by `airlockd console hash-password`), and the admin token (the account
//! name `token`).
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The account name that logs in with the admin token instead of a password.
pub const TOKEN_ACCOUNT: &str = "token";

/// The longest account name or secret read from the login form.
pub const MAX_FIELD: usize = 1024;

/// A console account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$m=…`).
    pub password_hash: String,
}

/// A console account that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("console account {0:?}: a name is 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error(
        "console account {0:?}: the name `token` is reserved for logging in with the admin token"
    )]
    Reserved(String),
    #[error("console account {0:?} is listed twice")]
    Duplicate(String),
    #[error("console account {name:?}: password_hash is not an argon2 hash ({why}); make one with `airlockd console hash-password`")]
    BadHash { name: String, why: String },
}

/// Who may log in.
#[derive(Debug, Clone)]
pub struct Credentials {
    accounts: Vec<Account>,
    admin_token_sha256: [u8; 32],
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Credentials {
    /// Checks the accounts (names, unique, argon2 hashes that parse).
    pub fn new(
        accounts: Vec<Account>,
        admin_token_sha256: [u8; 32],
    ) -> Result<Credentials, AccountError> {
        let mut seen = std::collections::HashSet::new();
        for a in &accounts {
            if !valid_name(&a.name) {
                return Err(AccountError::BadName(a.name.clone()));
            }
            if a.name == TOKEN_ACCOUNT {
                return Err(AccountError::Reserved(a.name.clone()));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(AccountError::Duplicate(a.name.clone()));
            }
            let h = PasswordHash::new(&a.password_hash).map_err(|e| AccountError::BadHash {
                name: a.name.clone(),
                why: e.to_string(),
            })?;
            if !h.algorithm.as_str().starts_with("argon2") {
                return Err(AccountError::BadHash {
                    name: a.name.clone(),
                    why: format!("algorithm {}", h.algorithm),
                });
            }
        }
        Ok(Credentials {
            accounts,
            admin_token_sha256,
        })
    }

    /// The names of the accounts (for the log at start).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.accounts.iter().map(|a| a.name.as_str())
    }

    /// Whether `secret` logs `name` in. Slow on purpose for passwords (argon2): call it
    /// off the async runtime. Unknown names cost a hash too, so timing does not tell
    /// which names exist.
    pub fn check(&self, name: &str, secret: &str) -> bool {
        if name.len() > MAX_FIELD || secret.len() > MAX_FIELD || secret.is_empty() {
            return false;
        }
        if name == TOKEN_ACCOUNT {
            let h: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
            return bool::from(h.ct_eq(&self.admin_token_sha256));
        }
        let account = self.accounts.iter().find(|a| a.name == name);
        let hash = account.map_or(DUMMY_HASH, |a| a.password_hash.as_str());
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && account.is_some()
    }
}

/// Hashed for unknown account names (of the password "x"), so they take as long.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1m4cl6rrN3sUjwyY7TTGRbE7e8VbNfUWxhQK3cVNGrA";

/// A password's argon2id hash (PHC string) with a random salt, for the config.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        let h = hash_password("correct horse").unwrap();
        Credentials::new(
            vec![Account {
                name: "alice".into(),
                password_hash: h,
            }],
            Sha256::digest(b"admin-token-value").into(),
        )
        .unwrap()
    }

    #[test]
    fn passwords_and_the_admin_token_log_in() {
        let c = creds();
        assert!(c.check("alice", "correct horse"));
        assert!(!c.check("alice", "correct horse "));
        assert!(!c.check("alice", ""));
        assert!(!c.check("bob", "correct horse"));
        assert!(c.check(TOKEN_ACCOUNT, "admin-token-value"));
        assert!(!c.check(TOKEN_ACCOUNT, "admin-token-valu"));
        assert!(!c.check("alice", "admin-token-value"));
        assert!(!c.check("alice", &"x".repeat(MAX_FIELD + 1)));
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn bad_accounts_are_refused_with_the_reason() {
        let t = [0u8; 32];
        let ok = hash_password("p").unwrap();
        let acc = |n: &str, h: &str| Account {
            name: n.into(),
            password_hash: h.into(),
        };
        assert_eq!(
            Credentials::new(vec![acc("a b", &ok)], t).unwrap_err(),
            AccountError::BadName("a b".into())
        );
        assert_eq!(
            Credentials::new(vec![acc("token", &ok)], t).unwrap_err(),
            AccountError::Reserved("token".into())
        );
        assert_eq!(
            Credentials::new(vec![acc("a", &ok), acc("a", &ok)], t).unwrap_err(),
            AccountError::Duplicate("a".into())
        );
        assert!(matches!(
            Credentials::new(vec![acc("a", "plaintext")], t).unwrap_err(),
            AccountError::BadHash { .. }
        ));
        assert!(matches!(
            Credentials::new(vec![acc("a", "$5$rounds=5000$abc$def")], t).unwrap_err(),
            AccountError::BadHash { .. }
        ));
    }
}
