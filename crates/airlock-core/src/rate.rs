//! Rate limits as token buckets: a bucket holds at most `burst` tokens, refills at
//! `per_minute` tokens a minute, and each counted event takes one. Time is passed in
//! (milliseconds of a monotonic clock), so the rules are tested without waiting.
//!
//! [`Keyed`] keeps one bucket per key (a client address, a terminal) in a table of
//! bounded size: a bucket that has refilled to full is the same as no bucket and is
//! dropped when room is needed; when every bucket in a full table is still in use, new
//! keys share one overflow bucket, so a flood of new keys cannot grow the table or
//! escape the limit.
use std::collections::HashMap;
use std::hash::Hash;

/// Units of one token: refilling `per_minute` tokens a minute adds `per_minute` units a
/// millisecond, so integer arithmetic is exact.
const UNIT: u64 = 60_000;

/// A rate: at most `burst` events at once, `per_minute` a minute sustained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    burst: u32,
    per_minute: u32,
}

impl Limit {
    /// A limit, or `None` when either number is 0.
    pub fn new(burst: u32, per_minute: u32) -> Option<Limit> {
        (burst > 0 && per_minute > 0).then_some(Limit { burst, per_minute })
    }

    /// Events at once.
    pub fn burst(self) -> u32 {
        self.burst
    }

    /// Events a minute, sustained.
    pub fn per_minute(self) -> u32 {
        self.per_minute
    }

    fn capacity(self) -> u64 {
        u64::from(self.burst) * UNIT
    }
}

/// Why an event is refused: the bucket is empty; the next token comes in `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_ms: u64,
}

impl Limited {
    /// The wait in whole seconds, rounded up, at least 1 (for `Retry-After`).
    pub fn retry_after_s(self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    units: u64,
    at_ms: u64,
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub fn full(limit: Limit, now_ms: u64) -> Bucket {
        Bucket {
            units: limit.capacity(),
            at_ms: now_ms,
        }
    }

    /// Adds what refilled since the last look (a clock that went back adds nothing).
    fn refill(&mut self, limit: Limit, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let added = elapsed.saturating_mul(u64::from(limit.per_minute));
        self.units = self.units.saturating_add(added).min(limit.capacity());
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Whether an event now would be allowed, without counting it.
    pub fn check(&mut self, limit: Limit, now_ms: u64) -> Result<(), Limited> {
        self.refill(limit, now_ms);
        if self.units >= UNIT {
            Ok(())
        } else {
            Err(Limited {
                retry_after_ms: (UNIT - self.units).div_ceil(u64::from(limit.per_minute)),
            })
        }
    }

    /// Counts an event: takes a token, or says how long until one is there.
    pub fn take(&mut self, limit: Limit, now_ms: u64) -> Result<(), Limited> {
        self.check(limit, now_ms)?;
        self.units -= UNIT;
        Ok(())
    }

    /// Whether the bucket has refilled to full (it then says nothing a new one would not).
    pub fn is_full(&mut self, limit: Limit, now_ms: u64) -> bool {
        self.refill(limit, now_ms);
        self.units == limit.capacity()
    }
}

/// One bucket per key, in a table of at most `max_keys` buckets (see the module).
#[derive(Debug, Clone)]
pub struct Keyed<K> {
    limit: Limit,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
    overflow: Option<Bucket>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    /// An empty table (`max_keys` at least 1).
    pub fn new(limit: Limit, max_keys: usize) -> Keyed<K> {
        Keyed {
            limit,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
            overflow: None,
        }
    }

    /// The limit each key gets.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Whether an event of `key` now would be allowed, without counting it (a key never
    /// seen is allowed and takes no room).
    pub fn check(&mut self, key: &K, now_ms: u64) -> Result<(), Limited> {
        let limit = self.limit;
        match self.buckets.get_mut(key) {
            Some(b) => b.check(limit, now_ms),
            None => match self.overflow.as_mut() {
                Some(o) if self.buckets.len() >= self.max_keys => o.check(limit, now_ms),
                _ => Ok(()),
            },
        }
    }

    /// Counts an event of `key`.
    pub fn take(&mut self, key: &K, now_ms: u64) -> Result<(), Limited> {
        let limit = self.limit;
        if let Some(b) = self.buckets.get_mut(key) {
            return b.take(limit, now_ms);
        }
        if self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(limit, now_ms));
        }
        if self.buckets.len() >= self.max_keys {
            return self
                .overflow
                .get_or_insert_with(|| Bucket::full(limit, now_ms))
                .take(limit, now_ms);
        }
        let mut b = Bucket::full(limit, now_ms);
        let r = b.take(limit, now_ms);
        self.buckets.insert(key.clone(), b);
        r
    }

    /// How many keys have a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(burst: u32, per_minute: u32) -> Limit {
        Limit::new(burst, per_minute).unwrap()
    }

    #[test]
    fn zero_is_not_a_limit() {
        assert_eq!(Limit::new(0, 10), None);
        assert_eq!(Limit::new(10, 0), None);
        assert_eq!(limit(3, 60).burst(), 3);
        assert_eq!(limit(3, 60).per_minute(), 60);
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let l = limit(3, 60); // one a second
        let mut b = Bucket::full(l, 1000);
        for _ in 0..3 {
            assert_eq!(b.take(l, 1000), Ok(()));
        }
        assert_eq!(
            b.take(l, 1000),
            Err(Limited {
                retry_after_ms: 1000
            })
        );
        assert_eq!(
            b.check(l, 1400),
            Err(Limited {
                retry_after_ms: 600
            })
        );
        assert_eq!(b.take(l, 2000), Ok(()));
        assert!(b.take(l, 2000).is_err());
        // A long pause refills to the burst, no further.
        assert!(b.is_full(l, 100_000));
        for _ in 0..3 {
            assert_eq!(b.take(l, 100_000), Ok(()));
        }
        assert!(b.take(l, 100_000).is_err());
    }

    #[test]
    fn check_counts_nothing() {
        let l = limit(1, 1);
        let mut b = Bucket::full(l, 0);
        for _ in 0..10 {
            assert_eq!(b.check(l, 0), Ok(()));
        }
        assert_eq!(b.take(l, 0), Ok(()));
        let e = b.check(l, 0).unwrap_err();
        assert_eq!(e.retry_after_ms, 60_000);
        assert_eq!(e.retry_after_s(), 60);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let s = |ms| Limited { retry_after_ms: ms }.retry_after_s();
        assert_eq!((s(0), s(1), s(999), s(1000), s(1001)), (1, 1, 1, 1, 2));
    }

    #[test]
    fn a_clock_that_goes_back_adds_nothing() {
        let l = limit(1, 60);
        let mut b = Bucket::full(l, 5000);
        b.take(l, 5000).unwrap();
        assert!(b.take(l, 1000).is_err());
        assert!(b.take(l, 5999).is_err());
        assert!(b.take(l, 6000).is_ok());
    }

    #[test]
    fn keys_are_limited_apart() {
        let mut k = Keyed::new(limit(2, 60), 10);
        assert_eq!(k.check(&"a", 0), Ok(()));
        assert!(k.is_empty(), "a check takes no room");
        k.take(&"a", 0).unwrap();
        k.take(&"a", 0).unwrap();
        assert!(k.take(&"a", 0).is_err());
        assert!(k.check(&"a", 0).is_err());
        assert_eq!(k.take(&"b", 0), Ok(()));
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn a_full_table_drops_idle_buckets_then_shares_an_overflow_bucket() {
        let l = limit(1, 60);
        let mut k = Keyed::new(l, 2);
        k.take(&1, 0).unwrap();
        k.take(&2, 0).unwrap();
        // Every bucket is in use: new keys share the overflow bucket.
        assert_eq!(k.take(&3, 0), Ok(()));
        assert!(k.take(&4, 0).is_err());
        assert!(k.check(&5, 0).is_err(), "an unseen key is in the overflow");
        assert_eq!(k.len(), 2);
        // Once 1 and 2 have refilled, they make room.
        assert_eq!(k.take(&4, 1000), Ok(()));
        assert_eq!(k.len(), 1);
        assert!(k.take(&4, 1000).is_err());
    }

    proptest! {
        /// Over any run of events, no more are allowed than the burst plus what refilled
        /// over the run, and an event refused is refused for exactly the time it takes one
        /// token to come back.
        #[test]
        fn never_more_than_burst_plus_refill(
            burst in 1u32..20,
            per_minute in 1u32..100_000,
            steps in proptest::collection::vec(0u64..5_000, 1..200),
        ) {
            let l = limit(burst, per_minute);
            let mut b = Bucket::full(l, 0);
            let mut now = 0u64;
            let mut allowed = 0u64;
            for step in steps {
                now += step;
                match b.take(l, now) {
                    Ok(()) => allowed += 1,
                    Err(e) => {
                        prop_assert!(e.retry_after_ms >= 1);
                        let mut later = b;
                        prop_assert!(later.check(l, now + e.retry_after_ms - 1).is_err());
                        prop_assert!(later.check(l, now + e.retry_after_ms).is_ok());
                    }
                }
                let refilled = now * u64::from(per_minute) / UNIT;
                prop_assert!(allowed <= u64::from(burst) + refilled);
            }
        }

        /// A table never holds more than its size, whatever the keys.
        #[test]
        fn the_table_stays_bounded(
            keys in proptest::collection::vec(0u16..1000, 1..500),
            max in 1usize..50,
        ) {
            let mut k = Keyed::new(limit(2, 6), max);
            for (i, key) in keys.iter().enumerate() {
                let _ = k.take(key, i as u64);
                prop_assert!(k.len() <= max);
            }
        }
    }
}
