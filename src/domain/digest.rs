//! When the weekly SLA digest is due: a weekday and a wall-clock time in a time zone
//! (`mon 09:00 Europe/London`), so it arrives at nine on Monday morning all year round.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// The digest's weekly slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestSchedule {
    pub weekday: Weekday,
    pub time: NaiveTime,
    pub zone: Tz,
}

impl DigestSchedule {
    /// The latest slot at or before `now`.
    pub fn latest(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let today = now.with_timezone(&self.zone).date_naive();
        let back =
            (7 + today.weekday().num_days_from_monday() - self.weekday.num_days_from_monday()) % 7;
        let mut date = today - Duration::days(i64::from(back));
        loop {
            let slot = self.slot_on(date);
            if slot <= now {
                return slot;
            }
            date -= Duration::days(7);
        }
    }

    /// The slot on `date` (local). A time the clocks skip that day (spring forward) is taken an
    /// hour later; one that happens twice (fall back) is the first.
    fn slot_on(&self, date: NaiveDate) -> DateTime<Utc> {
        let local = date.and_time(self.time);
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
            LocalResult::None => self
                .zone
                .from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
                .map_or_else(|| local.and_utc(), |at| at.with_timezone(&Utc)),
        }
    }
}

impl FromStr for DigestSchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage =
            "expected `WEEKDAY HH:MM [TIME_ZONE]`, e.g. `mon 09:00 Europe/London`, or `off`";
        let words: Vec<&str> = text.split_whitespace().collect();
        let (day, time, zone) = match words.as_slice() {
            [day, time] => (*day, *time, "UTC"),
            [day, time, zone] => (*day, *time, *zone),
            _ => return Err(usage.to_owned()),
        };
        let weekday = day
            .parse::<Weekday>()
            .map_err(|_| format!("`{day}` is not a weekday ({usage})"))?;
        let time = NaiveTime::parse_from_str(time, "%H:%M")
            .map_err(|_| format!("`{time}` is not a time of day HH:MM ({usage})"))?;
        let zone = zone
            .parse::<Tz>()
            .map_err(|_| format!("`{zone}` is not an IANA time zone ({usage})"))?;
        Ok(Self {
            weekday,
            time,
            zone,
        })
    }
}

impl fmt::Display for DigestSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = format!("{:?}", self.weekday).to_lowercase();
        write!(f, "{day} {} {}", self.time.format("%H:%M"), self.zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        let schedule: DigestSchedule = "mon 09:00 Europe/London".parse().unwrap();
        assert_eq!(schedule.to_string(), "mon 09:00 Europe/London");
        assert_eq!("fri 17:30".parse::<DigestSchedule>().unwrap().zone, Tz::UTC);
        assert!(
            "someday 09:00"
                .parse::<DigestSchedule>()
                .unwrap_err()
                .contains("weekday")
        );
        assert!(
            "mon 9am"
                .parse::<DigestSchedule>()
                .unwrap_err()
                .contains("HH:MM")
        );
        assert!(
            "mon 09:00 Mars/Base"
                .parse::<DigestSchedule>()
                .unwrap_err()
                .contains("time zone")
        );
        assert!("".parse::<DigestSchedule>().is_err());
    }

    #[test]
    fn latest_slot_is_this_weeks_once_passed_else_last_weeks() {
        let schedule: DigestSchedule = "mon 09:00 UTC".parse().unwrap();
        // Monday 2026-11-16.
        assert_eq!(
            schedule.latest(utc("2026-11-16T09:00:00Z")),
            utc("2026-11-16T09:00:00Z")
        );
        assert_eq!(
            schedule.latest(utc("2026-11-16T08:59:59Z")),
            utc("2026-11-09T09:00:00Z")
        );
        assert_eq!(
            schedule.latest(utc("2026-11-21T12:00:00Z")),
            utc("2026-11-16T09:00:00Z")
        );
    }

    #[test]
    fn local_time_holds_across_daylight_saving() {
        let schedule: DigestSchedule = "mon 09:00 Europe/London".parse().unwrap();
        // Summer: 09:00 BST is 08:00 UTC; winter: 09:00 GMT.
        assert_eq!(
            schedule.latest(utc("2026-03-30T12:00:00Z")),
            utc("2026-03-30T08:00:00Z")
        );
        assert_eq!(
            schedule.latest(utc("2026-10-26T12:00:00Z")),
            utc("2026-10-26T09:00:00Z")
        );
        // A slot inside the spring gap (01:30 on 2026-03-29, a Sunday) is an hour later.
        let gap: DigestSchedule = "sun 01:30 Europe/London".parse().unwrap();
        assert_eq!(
            gap.latest(utc("2026-03-29T12:00:00Z")),
            utc("2026-03-29T01:30:00Z")
        );
    }
}
