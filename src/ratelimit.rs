//! Per-key rate limits against local abuse: how many request files one uid may have decided
//! per minute, and how many of one requester's denials are written to the audit table one by
//! one. Pure: the caller passes the time, so every rule is table-tested without a clock.
//!
//! Each key has a token bucket holding at most a minute's allowance, refilled continuously:
//! a burst up to the allowance passes at once, then the key gets its per-minute rate. Keys
//! whose bucket is full again are forgotten, so the map holds only recently active keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys kept before idle (full) buckets are forgotten.
const PRUNE_AT: usize = 1024;

/// Token buckets by key, `per_minute` tokens a minute each; 0 means no limit.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter allowing `per_minute` events a minute per key (0: unlimited).
    pub fn new(per_minute: u32) -> RateLimiter<K> {
        RateLimiter {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let cap = f64::from(self.per_minute);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * cap / 60.0).min(cap)
    }

    /// Whether `key` may have one more event at `now`; takes a token when it may.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        if self.buckets.len() >= PRUNE_AT {
            self.prune(now);
        }
        let cap = f64::from(self.per_minute);
        let tokens = match self.buckets.get(key) {
            Some(b) => self.refilled(*b, now),
            None => cap,
        };
        let allowed = tokens >= 1.0;
        let left = if allowed { tokens - 1.0 } else { tokens };
        self.buckets.insert(
            key.clone(),
            Bucket {
                tokens: left,
                at: now,
            },
        );
        allowed
    }

    /// How long until `key` may have its next event (zero when it may now).
    pub fn wait(&self, key: &K, now: Instant) -> Duration {
        if self.per_minute == 0 {
            return Duration::ZERO;
        }
        match self.buckets.get(key) {
            None => Duration::ZERO,
            Some(b) => {
                let tokens = self.refilled(*b, now);
                if tokens >= 1.0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64((1.0 - tokens) * 60.0 / f64::from(self.per_minute))
                }
            }
        }
    }

    /// Forget keys whose bucket is full again.
    fn prune(&mut self, now: Instant) {
        let cap = f64::from(self.per_minute);
        let per_minute = self.per_minute;
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * f64::from(per_minute) / 60.0 < cap
        });
    }
}

/// What to do with one denial of a requester (see [`DenialAudit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialRecord {
    /// Write it to the audit table; `suppressed` earlier denials of this requester were not
    /// written one by one (write one summary row for them first when not zero).
    Write {
        /// Denials left out since the last written one.
        suppressed: u64,
    },
    /// Over the requester's rate: count it, do not write it.
    Suppress,
}

/// Rate limit on audited denials per requester: within the rate each denial is written;
/// beyond it, denials are counted and later written as one summary row, so a requester who
/// floods the spool or the control socket with refused requests grows the audit table by at
/// most its rate.
#[derive(Debug)]
pub struct DenialAudit<K> {
    limiter: RateLimiter<K>,
    suppressed: HashMap<K, (u64, Instant)>,
}

impl<K: Hash + Eq + Clone> DenialAudit<K> {
    /// At most `per_minute` denials a minute of one requester are written (0: all).
    pub fn new(per_minute: u32) -> DenialAudit<K> {
        DenialAudit {
            limiter: RateLimiter::new(per_minute),
            suppressed: HashMap::new(),
        }
    }

    /// Decide one denial of `key` at `now`.
    pub fn record(&mut self, key: &K, now: Instant) -> DenialRecord {
        if self.limiter.allow(key, now) {
            let suppressed = self.suppressed.remove(key).map_or(0, |(n, _)| n);
            DenialRecord::Write { suppressed }
        } else {
            let entry = self.suppressed.entry(key.clone()).or_insert((0, now));
            entry.0 += 1;
            entry.1 = now;
            DenialRecord::Suppress
        }
    }

    /// Requesters whose suppressed denials have been quiet for `quiet` at `now`, with their
    /// counts; they are forgotten (the caller writes one summary row each).
    pub fn take_quiet(&mut self, now: Instant, quiet: Duration) -> Vec<(K, u64)> {
        let due: Vec<K> = self
            .suppressed
            .iter()
            .filter(|(_, (_, last))| now.saturating_duration_since(*last) >= quiet)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| self.suppressed.remove(&k).map(|(n, _)| (k, n)))
            .collect()
    }

    /// Denials counted but not yet written, over all requesters.
    pub fn pending(&self) -> u64 {
        self.suppressed.values().map(|(n, _)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_bucket_allows_a_minute_of_burst_then_the_rate() {
        let t0 = Instant::now();
        // (seconds after t0, allowed?) for 6 a minute: one token every 10 s.
        let cases = [
            (0, true),
            (0, true),
            (0, true),
            (0, true),
            (0, true),
            (0, true),
            (0, false),
            (5, false),
            (10, true),
            (11, false),
            (20, true),
            (200, true),
        ];
        let mut rl = RateLimiter::new(6);
        for (i, (at, want)) in cases.iter().enumerate() {
            assert_eq!(rl.allow(&1u32, t0 + secs(*at)), *want, "case {i} at {at}s");
        }
    }

    #[test]
    fn keys_are_independent_and_zero_is_unlimited() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1);
        assert!(rl.allow(&1u32, t0));
        assert!(!rl.allow(&1u32, t0));
        assert!(
            rl.allow(&2u32, t0),
            "another uid is not held by uid 1's flood"
        );
        let mut open = RateLimiter::new(0);
        assert!((0..10_000).all(|_| open.allow(&1u32, t0)));
    }

    #[test]
    fn wait_says_when_the_next_token_comes() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(60);
        assert_eq!(rl.wait(&7u32, t0), Duration::ZERO);
        for _ in 0..60 {
            assert!(rl.allow(&7u32, t0));
        }
        let w = rl.wait(&7u32, t0);
        assert!(w > Duration::from_millis(900) && w <= secs(1), "{w:?}");
        assert_eq!(rl.wait(&7u32, t0 + secs(1)), Duration::ZERO);
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2);
        for k in 0..PRUNE_AT as u32 {
            rl.allow(&k, t0);
        }
        assert_eq!(rl.buckets.len(), PRUNE_AT);
        rl.allow(&u32::MAX, t0 + secs(120));
        assert_eq!(rl.buckets.len(), 1, "only the new key is left");
    }

    #[test]
    fn denials_over_the_rate_are_counted_then_summarised() {
        let t0 = Instant::now();
        let mut d = DenialAudit::new(2);
        let k = (Some(65534u32), None::<String>);
        assert_eq!(d.record(&k, t0), DenialRecord::Write { suppressed: 0 });
        assert_eq!(d.record(&k, t0), DenialRecord::Write { suppressed: 0 });
        for _ in 0..100 {
            assert_eq!(d.record(&k, t0), DenialRecord::Suppress);
        }
        assert_eq!(d.pending(), 100);
        assert!(d.take_quiet(t0 + secs(10), secs(60)).is_empty());
        // The next written denial carries the count of those left out.
        assert_eq!(
            d.record(&k, t0 + secs(30)),
            DenialRecord::Write { suppressed: 100 }
        );
        assert_eq!(d.pending(), 0);
        for _ in 0..5 {
            d.record(&k, t0 + secs(30));
        }
        assert_eq!(d.take_quiet(t0 + secs(60), secs(60)), vec![]);
        assert_eq!(d.take_quiet(t0 + secs(91), secs(60)), vec![(k.clone(), 5)]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn zero_writes_every_denial() {
        let t0 = Instant::now();
        let mut d = DenialAudit::new(0);
        for _ in 0..1000 {
            assert_eq!(d.record(&1u32, t0), DenialRecord::Write { suppressed: 0 });
        }
    }
}
