//! A growing delay after failed logins, per client address: the first failure costs
//! [`Throttle::base`], each further one twice the last, up to [`Throttle::max`]. A
//! success clears the address's count; a count is forgotten after [`Throttle::forget`]
//! without failures. The table is bounded: a flood of addresses evicts the oldest.
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Addresses remembered at most.
const MAX_ADDRESSES: usize = 4096;

/// Failed-login counts by address.
#[derive(Debug)]
pub struct Throttle {
    pub base: Duration,
    pub max: Duration,
    pub forget: Duration,
    /// Failures and the time of the last one (milliseconds on the caller's clock).
    fails: HashMap<IpAddr, (u32, u64)>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(15 * 60),
        )
    }
}

impl Throttle {
    pub fn new(base: Duration, max: Duration, forget: Duration) -> Throttle {
        Throttle {
            base,
            max,
            forget,
            fails: HashMap::new(),
        }
    }

    fn count(&self, addr: IpAddr, now_ms: u64) -> u32 {
        let forget = u64::try_from(self.forget.as_millis()).unwrap_or(u64::MAX);
        match self.fails.get(&addr) {
            Some(&(n, last)) if now_ms.saturating_sub(last) < forget => n,
            _ => 0,
        }
    }

    /// How long a login attempt from `addr` waits before it is answered, given the
    /// failures so far (zero before the first failure).
    pub fn delay(&self, addr: IpAddr, now_ms: u64) -> Duration {
        match self.count(addr, now_ms) {
            0 => Duration::ZERO,
            n => {
                let factor = 1u32 << (n - 1).min(16);
                self.base.saturating_mul(factor).min(self.max)
            }
        }
    }

    /// Records a failed attempt from `addr`.
    pub fn failed(&mut self, addr: IpAddr, now_ms: u64) {
        let n = self.count(addr, now_ms).saturating_add(1);
        if !self.fails.contains_key(&addr) && self.fails.len() >= MAX_ADDRESSES {
            if let Some(oldest) = self.fails.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                self.fails.remove(&oldest);
            }
        }
        self.fails.insert(addr, (n, now_ms));
    }

    /// Records a successful login from `addr`.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.fails.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn each_failure_doubles_the_delay_up_to_the_cap() {
        let mut t = Throttle::default();
        let a = ip(1);
        assert_eq!(t.delay(a, 0), Duration::ZERO);
        let mut seen = Vec::new();
        for i in 0..12 {
            t.failed(a, i);
            seen.push(t.delay(a, i).as_millis());
        }
        assert_eq!(
            seen,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000, 30000]
        );
        // Other addresses are not slowed.
        assert_eq!(t.delay(ip(2), 12), Duration::ZERO);
    }

    #[test]
    fn success_and_time_clear_the_count() {
        let mut t = Throttle::default();
        t.failed(ip(1), 0);
        t.failed(ip(1), 0);
        t.succeeded(ip(1));
        assert_eq!(t.delay(ip(1), 0), Duration::ZERO);
        t.failed(ip(1), 0);
        assert_eq!(
            t.delay(ip(1), 15 * 60 * 1000 - 1),
            Duration::from_millis(500)
        );
        assert_eq!(t.delay(ip(1), 15 * 60 * 1000), Duration::ZERO);
        t.failed(ip(1), 15 * 60 * 1000);
        assert_eq!(t.delay(ip(1), 15 * 60 * 1000), Duration::from_millis(500));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut t = Throttle::default();
        for _ in 0..100_000 {
            t.failed(ip(1), 0);
        }
        assert_eq!(t.delay(ip(1), 0), Duration::from_secs(30));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Throttle::default();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()), u64::from(i));
        }
        assert!(t.fails.len() <= MAX_ADDRESSES);
        // The newest is kept.
        let last = IpAddr::from((MAX_ADDRESSES as u32 + 99).to_be_bytes());
        assert!(t.delay(last, 0) > Duration::ZERO);
    }
}
