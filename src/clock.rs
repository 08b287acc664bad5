//! Time as a dependency: the engine and workers ask a [`Clock`], so tests drive time by hand
//! instead of sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};

/// A source of "now". Times are truncated to microseconds, the precision both databases keep,
/// so a value read back from storage equals the value written (the audit hash depends on it).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(start.trunc_subsecs(6))))
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().expect("clock poisoned");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock poisoned")
    }
}

/// The one timestamp format countersign writes as text (SQLite columns, audit hashing):
/// fixed width, UTC, microseconds, so text order is time order.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses what [`format_timestamp`] wrote (and any RFC 3339 time, normalised to UTC).
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microsecond_precision() {
        let t = parse_timestamp("2026-11-21T05:29:43.123456789+01:00").unwrap();
        let text = format_timestamp(t);
        assert_eq!(text, "2026-11-21T04:29:43.123456Z");
        assert_eq!(parse_timestamp(&text).unwrap(), t);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(parse_timestamp("2026-01-01T00:00:00Z").unwrap());
        let before = clock.now();
        clock.advance(chrono::Duration::minutes(5));
        assert_eq!(clock.now() - before, chrono::Duration::minutes(5));
    }
}
