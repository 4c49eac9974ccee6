//! The API's rate limits (`[limits]`): failed authentications per client address, and
//! lease requests per terminal, as token buckets ([`airlock_core::rate`]).
//!
//! An address over its failed-authentication budget is answered `429` before its token
//! is even hashed: a storm of bad tokens costs a table look-up per request, so it does
//! not slow down the terminals that authenticate. Terminals behind one address (NAT)
//! share its budget; a correct token spends none of it.
use crate::config::RateLimits;
use airlock_core::rate::{Keyed, Limited};
use airlock_core::TerminalName;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// At most this many addresses and terminals are tracked (beyond it, new ones share a
/// bucket until tracked ones have refilled).
const MAX_KEYS: usize = 4096;

/// The rate limits' buckets.
pub struct Limiter {
    start: Instant,
    auth_failures: Mutex<Keyed<ClientKey>>,
    acquires: Mutex<Keyed<TerminalName>>,
}

/// Whom a failed authentication is counted against: an IPv4 address, or the /64
/// network of an IPv6 address (one host usually has a whole /64 to pick from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let net = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(net.into()))
                }
            },
        }
    }
}

impl Limiter {
    pub fn new(limits: &RateLimits) -> Limiter {
        Limiter {
            start: Instant::now(),
            auth_failures: Mutex::new(Keyed::new(limits.auth_failure, MAX_KEYS)),
            acquires: Mutex::new(Keyed::new(limits.acquire, MAX_KEYS)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `ip` may try to authenticate now (nothing is counted).
    pub fn may_authenticate(&self, ip: IpAddr) -> Result<(), Limited> {
        let now = self.now_ms();
        match self.auth_failures.lock() {
            Ok(mut k) => k.check(&ClientKey::of(ip), now),
            // A poisoned table limits nothing rather than refusing everyone.
            Err(_) => Ok(()),
        }
    }

    /// Counts a failed authentication from `ip`; `Err` when that spent its last try.
    pub fn authentication_failed(&self, ip: IpAddr) -> Result<(), Limited> {
        let now = self.now_ms();
        match self.auth_failures.lock() {
            Ok(mut k) => k.take(&ClientKey::of(ip), now),
            Err(_) => Ok(()),
        }
    }

    /// Counts a lease request of `terminal`.
    pub fn acquire(&self, terminal: &TerminalName) -> Result<(), Limited> {
        let now = self.now_ms();
        match self.acquires.lock() {
            Ok(mut k) => k.take(terminal, now),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::rate::Limit;

    #[test]
    fn ipv6_hosts_are_counted_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(ClientKey::of(mapped), ClientKey::of(v4));
    }

    #[test]
    fn failures_block_an_address_and_only_it() {
        let l = Limiter::new(&RateLimits {
            acquire: Limit::new(2, 1).unwrap(),
            auth_failure: Limit::new(3, 1).unwrap(),
        });
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let good: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            assert!(l.may_authenticate(bad).is_ok());
            assert!(l.authentication_failed(bad).is_ok());
        }
        assert!(l.may_authenticate(bad).is_ok());
        assert!(l.authentication_failed(bad).is_ok(), "the third try");
        let e = l.may_authenticate(bad).unwrap_err();
        assert!(e.retry_after_s() >= 59, "{e:?}");
        assert!(l.may_authenticate(good).is_ok());

        let t = TerminalName::parse("t1").unwrap();
        let u = TerminalName::parse("t2").unwrap();
        assert!(l.acquire(&t).is_ok() && l.acquire(&t).is_ok());
        assert!(l.acquire(&t).is_err());
        assert!(l.acquire(&u).is_ok());
    }
}
