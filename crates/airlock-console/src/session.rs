//! Console sessions: a signed cookie and the CSRF token derived from it.
//!
//! The cookie's value is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`
//! with `payload = name "\n" expiry "\n" nonce`: the broker keeps no session table, and a
//! cookie whose bytes were changed, which was signed with another key (another broker
//! run) or which has expired is refused. The key is drawn at the broker's start, so a
//! restart logs every admin out; logout adds the session's nonce to a bounded list of
//! revoked sessions until it would have expired anyway.
//!
//! Every state-changing form carries `csrf = hex(HMAC-SHA256(key, "csrf\n" nonce))`: a
//! page of another site cannot read it (the cookie is `SameSite=Strict` as well).
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "airlock_console";

/// The longest cookie value accepted (a real one is ~120 bytes).
const MAX_COOKIE_LEN: usize = 512;

/// Sessions not yet expired that were logged out, at most this many (the oldest expiry
/// first out; a flood of logouts cannot grow memory).
const MAX_REVOKED: usize = 10_000;

/// A logged-in admin's session, as the cookie carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account (`token` for the admin token).
    pub name: String,
    /// When it ends, in Unix seconds.
    pub expires: i64,
    /// Random, 128 bits, hex: identifies the session (CSRF, logout).
    pub nonce: String,
}

/// Why a cookie is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("the session cookie is malformed")]
    Malformed,
    #[error(
        "the session cookie's signature does not match (changed, or from an earlier broker run)"
    )]
    BadSignature,
    #[error("the session has expired; log in again")]
    Expired,
    #[error("the session was logged out")]
    LoggedOut,
}

/// Signs and checks session cookies and CSRF tokens with one key.
pub struct Sessions {
    key: [u8; 32],
    /// Logged-out sessions by nonce, with their expiry.
    revoked: Mutex<BTreeMap<String, i64>>,
}

impl Sessions {
    /// With a key (32 random bytes, drawn at start).
    pub fn new(key: [u8; 32]) -> Sessions {
        Sessions {
            key,
            revoked: Mutex::new(BTreeMap::new()),
        }
    }

    /// With a fresh random key.
    pub fn random() -> Result<Sessions, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Sessions::new(key))
    }

    fn mac(&self, data: &[&[u8]]) -> [u8; 32] {
        // HMAC accepts keys of any length: this cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for d in data {
            m.update(d);
        }
        m.finalize().into_bytes().into()
    }

    /// A new session for `name` until `expires` (Unix seconds), and its cookie value.
    pub fn issue(&self, name: &str, expires: i64) -> Result<(Session, String), getrandom::Error> {
        let mut n = [0u8; 16];
        getrandom::fill(&mut n)?;
        let s = Session {
            name: name.to_owned(),
            expires,
            nonce: hex::encode(n),
        };
        let value = self.encode(&s);
        Ok((s, value))
    }

    fn encode(&self, s: &Session) -> String {
        let payload = format!("{}\n{}\n{}", s.name, s.expires, s.nonce);
        let sig = self.mac(&[payload.as_bytes()]);
        format!("{}.{}", B64.encode(payload), B64.encode(sig))
    }

    /// Checks a cookie value at `now` (Unix seconds).
    pub fn check(&self, value: &str, now: i64) -> Result<Session, CookieError> {
        if value.len() > MAX_COOKIE_LEN {
            return Err(CookieError::Malformed);
        }
        let (p, sig) = value.split_once('.').ok_or(CookieError::Malformed)?;
        let payload = B64.decode(p).map_err(|_| CookieError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| CookieError::Malformed)?;
        let want = self.mac(&[&payload]);
        if !bool::from(want.as_slice().ct_eq(&sig)) {
            return Err(CookieError::BadSignature);
        }
        // Signed by us: the fields are ours, but parse them strictly anyway.
        let text = String::from_utf8(payload).map_err(|_| CookieError::Malformed)?;
        let mut it = text.split('\n');
        let (Some(name), Some(exp), Some(nonce), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(CookieError::Malformed);
        };
        let expires: i64 = exp.parse().map_err(|_| CookieError::Malformed)?;
        if now >= expires {
            return Err(CookieError::Expired);
        }
        if self
            .revoked
            .lock()
            .map(|r| r.contains_key(nonce))
            .unwrap_or(true)
        {
            return Err(CookieError::LoggedOut);
        }
        Ok(Session {
            name: name.to_owned(),
            expires,
            nonce: nonce.to_owned(),
        })
    }

    /// Ends a session before its expiry (logout).
    pub fn revoke(&self, s: &Session, now: i64) {
        if let Ok(mut r) = self.revoked.lock() {
            r.retain(|_, exp| *exp > now);
            if r.len() >= MAX_REVOKED {
                // Keep the newest: drop the one that expires first.
                if let Some(k) = r.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone()) {
                    r.remove(&k);
                }
            }
            r.insert(s.nonce.clone(), s.expires);
        }
    }

    /// The CSRF token of a session, for its forms.
    pub fn csrf(&self, s: &Session) -> String {
        hex::encode(self.mac(&[b"csrf\n", s.nonce.as_bytes()]))
    }

    /// Whether `token` is the session's CSRF token.
    pub fn csrf_ok(&self, s: &Session, token: &str) -> bool {
        let want = self.csrf(s);
        want.len() == token.len() && bool::from(want.as_bytes().ct_eq(token.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new([7; 32])
    }

    #[test]
    fn an_issued_cookie_checks_until_it_expires() {
        let s = sessions();
        let (sess, v) = s.issue("alice", 1000).unwrap();
        assert_eq!(s.check(&v, 999).unwrap(), sess);
        assert_eq!(s.check(&v, 1000), Err(CookieError::Expired));
    }

    #[test]
    fn changed_cookies_are_refused() {
        let s = sessions();
        let (_, v) = s.issue("alice", 1000).unwrap();
        // Every single-character change of the value.
        for i in 0..v.len() {
            let mut b = v.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            if t != v {
                assert!(s.check(&t, 0).is_err(), "accepted {t}");
            }
        }
        // A payload re-signed by someone without the key: another name, later expiry.
        let forged = format!(
            "{}.{}",
            B64.encode("admin\n99999999999\n00"),
            v.split_once('.').unwrap().1
        );
        assert_eq!(s.check(&forged, 0), Err(CookieError::BadSignature));
        assert_eq!(s.check("", 0), Err(CookieError::Malformed));
        assert_eq!(s.check("a.b.c", 0), Err(CookieError::Malformed));
        assert_eq!(s.check(&"x".repeat(4096), 0), Err(CookieError::Malformed));
    }

    #[test]
    fn another_key_refuses_the_cookie() {
        let (_, v) = sessions().issue("alice", 1000).unwrap();
        assert_eq!(
            Sessions::new([8; 32]).check(&v, 0),
            Err(CookieError::BadSignature)
        );
    }

    #[test]
    fn logout_revokes_the_session_only() {
        let s = sessions();
        let (a, va) = s.issue("alice", 1000).unwrap();
        let (_, vb) = s.issue("alice", 1000).unwrap();
        s.revoke(&a, 10);
        assert_eq!(s.check(&va, 11), Err(CookieError::LoggedOut));
        assert!(s.check(&vb, 11).is_ok());
    }

    #[test]
    fn the_revoked_list_is_bounded() {
        let s = sessions();
        for i in 0..(MAX_REVOKED + 50) {
            let sess = Session {
                name: "a".into(),
                expires: 10_000 + i as i64,
                nonce: format!("{i}"),
            };
            s.revoke(&sess, 0);
        }
        assert!(s.revoked.lock().unwrap().len() <= MAX_REVOKED);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let s = sessions();
        let (a, _) = s.issue("alice", 1000).unwrap();
        let (b, _) = s.issue("alice", 1000).unwrap();
        let t = s.csrf(&a);
        assert!(s.csrf_ok(&a, &t));
        assert!(!s.csrf_ok(&b, &t));
        assert!(!s.csrf_ok(&a, ""));
        assert!(!s.csrf_ok(&a, &t[1..]));
        assert!(!Sessions::new([9; 32]).csrf_ok(&a, &t));
    }
}
