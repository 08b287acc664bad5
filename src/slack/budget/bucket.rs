//! The token bucket both countersign's Slack budget and the sandbox's Slack spend from, in
//! integer arithmetic so the Lua script in Redis ([`super::shared`]) computes exactly what this
//! does: tokens are counted in sixty-thousandths, so a bucket refilled at `per_minute` tokens a
//! minute gains exactly `per_minute` units a millisecond.
//!
//! A bucket's count may be dated in the future: that is a pause (Slack answered 429), during
//! which nothing refills and nothing is granted. And it may go below zero: a caller that
//! accepted a short wait has reserved the next token (see [`Bucket::take`]).

/// One whole token, in the units a bucket counts.
pub const TOKEN: i64 = 60_000;

/// How many calls may go at once (`burst`) and how fast that allowance comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: u32,
}

impl Rate {
    /// The bucket's capacity, in units.
    pub fn capacity(self) -> i64 {
        i64::from(self.burst) * TOKEN
    }

    /// Units refilled per millisecond.
    pub fn refill(self) -> i64 {
        i64::from(self.per_minute.max(1))
    }

    /// How long (ms) until a bucket holding `units` is full again: after that, a bucket nobody
    /// remembers (an expired Redis key) is the same as this one.
    pub fn full_after(self, units: i64) -> i64 {
        ceil_div(self.capacity() - units, self.refill()).max(0)
    }
}

/// Tokens left (in units) and the time (ms since the epoch) they were counted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub units: i64,
    pub at: i64,
}

impl Bucket {
    /// A bucket nobody has spent from.
    pub fn full(rate: Rate, now: i64) -> Self {
        Self {
            units: rate.capacity(),
            at: now,
        }
    }

    /// Takes one call's worth at `now`. `Ok(delay)`: the call may go after `delay` ms (zero
    /// unless the caller accepted to wait up to `max_wait` ms, in which case the token is
    /// reserved now and nobody else gets it). `Err(wait)`: not within `max_wait`; nothing taken,
    /// a token would be there in `wait` ms.
    pub fn take(&mut self, rate: Rate, now: i64, max_wait: i64) -> Result<i64, i64> {
        self.refill_to(rate, now);
        let mut wait = self.at - now;
        if self.units < TOKEN {
            wait += ceil_div(TOKEN - self.units, rate.refill());
        }
        if wait <= max_wait.max(0) {
            self.units -= TOKEN;
            Ok(wait)
        } else {
            Err(wait)
        }
    }

    /// Slack refused a call (429) until `until`: nothing is granted before then, and then one
    /// call (the refused one, due again) before the steady rate — not the rest of a burst
    /// Slack has just said it will not take. A pause already longer is kept.
    pub fn pause(&mut self, rate: Rate, now: i64, until: i64) {
        self.refill_to(rate, now);
        if until >= self.at {
            self.at = until;
            self.units = TOKEN;
        } else {
            self.units = self.units.min(TOKEN);
        }
    }

    fn refill_to(&mut self, rate: Rate, now: i64) {
        if now > self.at {
            let gained = (now - self.at).saturating_mul(rate.refill());
            self.units = self.units.saturating_add(gained).min(rate.capacity());
            self.at = now;
        }
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_CHANNEL: Rate = Rate {
        burst: 3,
        per_minute: 60,
    };
    const TIER_3: Rate = Rate {
        burst: 50,
        per_minute: 50,
    };

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut bucket = Bucket::full(PER_CHANNEL, 0);
        for _ in 0..3 {
            assert_eq!(bucket.take(PER_CHANNEL, 0, 0), Ok(0));
        }
        assert_eq!(bucket.take(PER_CHANNEL, 0, 0), Err(1000));
        assert_eq!(bucket.take(PER_CHANNEL, 500, 0), Err(500), "half refilled");
        assert_eq!(bucket.take(PER_CHANNEL, 1000, 0), Ok(0));
        assert_eq!(bucket.take(PER_CHANNEL, 1000, 0), Err(1000));
        // A quiet spell refills the burst, never beyond it.
        let later = 3_600_000;
        for _ in 0..3 {
            assert_eq!(bucket.take(PER_CHANNEL, later, 0), Ok(0));
        }
        assert!(bucket.take(PER_CHANNEL, later, 0).is_err());
    }

    #[test]
    fn a_tier_refills_per_minute_without_rounding_drift() {
        let mut bucket = Bucket::full(TIER_3, 0);
        for _ in 0..50 {
            assert_eq!(bucket.take(TIER_3, 0, 0), Ok(0));
        }
        // 60 s / 50 = 1.2 s a call, exactly.
        assert_eq!(bucket.take(TIER_3, 0, 0), Err(1200));
        assert_eq!(bucket.take(TIER_3, 1199, 0), Err(1));
        assert_eq!(bucket.take(TIER_3, 1200, 0), Ok(0));
        assert_eq!(bucket.take(TIER_3, 1200, 0), Err(1200));
    }

    #[test]
    fn a_caller_that_waits_reserves_the_next_token() {
        let mut bucket = Bucket::full(PER_CHANNEL, 0);
        for _ in 0..3 {
            bucket.take(PER_CHANNEL, 0, 0).unwrap();
        }
        // Willing to wait a second: the next token is this caller's, in a second.
        assert_eq!(bucket.take(PER_CHANNEL, 0, 1000), Ok(1000));
        // The one after that is two seconds away, for anyone.
        assert_eq!(bucket.take(PER_CHANNEL, 0, 1000), Err(2000));
        assert_eq!(bucket.take(PER_CHANNEL, 1000, 0), Err(1000));
        assert_eq!(bucket.take(PER_CHANNEL, 2000, 0), Ok(0));
    }

    #[test]
    fn a_pause_grants_nothing_until_it_ends_then_one_call_then_the_rate() {
        let mut bucket = Bucket::full(PER_CHANNEL, 0);
        bucket.take(PER_CHANNEL, 0, 0).unwrap();
        // Two tokens left, but Slack said 429, Retry-After 30 s.
        bucket.pause(PER_CHANNEL, 0, 30_000);
        assert_eq!(bucket.take(PER_CHANNEL, 0, 0), Err(30_000));
        assert_eq!(bucket.take(PER_CHANNEL, 29_000, 0), Err(1000));
        assert_eq!(bucket.take(PER_CHANNEL, 30_000, 0), Ok(0));
        assert_eq!(bucket.take(PER_CHANNEL, 30_000, 0), Err(1000));
        assert_eq!(bucket.take(PER_CHANNEL, 31_000, 0), Ok(0));
    }

    #[test]
    fn a_shorter_pause_does_not_cut_a_longer_one() {
        let mut bucket = Bucket::full(PER_CHANNEL, 0);
        bucket.pause(PER_CHANNEL, 0, 30_000);
        bucket.pause(PER_CHANNEL, 10_000, 12_000);
        assert_eq!(bucket.take(PER_CHANNEL, 12_000, 0), Err(18_000));
        assert_eq!(bucket.take(PER_CHANNEL, 30_000, 0), Ok(0));
    }

    #[test]
    fn full_after_says_when_forgetting_the_bucket_is_harmless() {
        assert_eq!(PER_CHANNEL.full_after(0), 3000);
        assert_eq!(PER_CHANNEL.full_after(PER_CHANNEL.capacity()), 0);
        assert_eq!(TIER_3.full_after(-TOKEN), 61_200);
    }
}
