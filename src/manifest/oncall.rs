//! `manifests/oncall.yaml`: who is on call for a role, right now. Schedules in the spirit of
//! PagerDuty's: layers of rotations (a list of users taking turns, from a start date, each shift
//! a rotation length long, handing off at a local time in the schedule's time zone), later layers
//! taking precedence over earlier ones, and dated overrides above everything.
//!
//! Rotations measured in whole days hand off at the same *local* time every day, across
//! daylight-saving changes (a "daily 09:00" shift is 23 or 25 hours long on those days); a
//! rotation in hours is a fixed length of time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ManifestError;

/// A layer of a schedule: users taking turns.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub users: Vec<String>,
    /// The day the first user's first shift starts (local, in the schedule's zone).
    pub start: NaiveDate,
    pub handoff: NaiveTime,
    pub rotation: Rotation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Whole days: hand-offs at the local hand-off time.
    Days(u32),
    /// A fixed length of time.
    Fixed(Duration),
}

/// A dated replacement: `user` is on call from `start` to `end` (local times).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub user: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub time_zone: Tz,
    pub layers: Vec<Layer>,
    pub overrides: Vec<Override>,
}

/// Every schedule, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedules(BTreeMap<String, Schedule>);

impl Schedules {
    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Who is on call on `schedule` at `at`, if the schedule exists and covers that time.
    pub fn who(&self, schedule: &str, at: DateTime<Utc>) -> Option<&str> {
        self.0.get(schedule)?.who(at)
    }
}

impl Schedule {
    /// Who is on call at `at`: an override, else the last layer that has started.
    pub fn who(&self, at: DateTime<Utc>) -> Option<&str> {
        if let Some(o) = self
            .overrides
            .iter()
            .rev()
            .find(|o| o.start <= at && at < o.end)
        {
            return Some(&o.user);
        }
        self.layers
            .iter()
            .rev()
            .find_map(|layer| layer.who(self.time_zone, at))
    }
}

/// `date` at `time` in `zone`, as an instant. A time skipped by a DST change moves forward to
/// the first instant after the gap; an ambiguous one (repeated) takes the earlier.
fn local_instant(zone: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut local = NaiveDateTime::new(date, time);
    loop {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earlier, _) => return earlier.with_timezone(&Utc),
            LocalResult::None => local += chrono::Duration::minutes(1),
        }
    }
}

impl Layer {
    fn who(&self, zone: Tz, at: DateTime<Utc>) -> Option<&str> {
        let first = local_instant(zone, self.start, self.handoff);
        if at < first || self.users.is_empty() {
            return None;
        }
        let shift = match self.rotation {
            Rotation::Days(days) => {
                // Count local hand-offs: the local date, less one if before today's hand-off.
                let local_date = at.with_timezone(&zone).date_naive();
                let mut elapsed = (local_date - self.start).num_days();
                if at < local_instant(zone, local_date, self.handoff) {
                    elapsed -= 1;
                }
                elapsed.max(0) / i64::from(days)
            }
            Rotation::Fixed(length) => {
                let length = chrono::Duration::from_std(length)
                    .ok()?
                    .num_seconds()
                    .max(1);
                (at - first).num_seconds() / length
            }
        };
        let index = usize::try_from(shift).ok()? % self.users.len();
        Some(&self.users[index])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OncallFile {
    schedules: BTreeMap<String, Spanned<ScheduleSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    time_zone: String,
    layers: Vec<LayerSpec>,
    #[serde(default)]
    overrides: Vec<OverrideSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerSpec {
    users: Vec<String>,
    start: String,
    rotation: String,
    handoff: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    user: String,
    start: String,
    end: String,
}

fn parse_local(zone: Tz, text: &str) -> Result<DateTime<Utc>, String> {
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN))
        })
        .map_err(|_| {
            format!("{text:?} is not a local time such as 2026-12-24T09:00 or 2026-12-24")
        })?;
    Ok(local_instant(zone, local.date(), local.time()))
}

fn parse_rotation(text: &str) -> Result<Rotation, String> {
    let length = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a length such as 1d, 7d, 1w or 12h"))?;
    if length.as_secs() < 3600 {
        return Err(format!("{text:?}: a rotation is at least an hour"));
    }
    let day = 86_400;
    Ok(if length.as_secs() % day == 0 {
        Rotation::Days((length.as_secs() / day) as u32)
    } else {
        Rotation::Fixed(length)
    })
}

/// Loads `path`; a missing file is no schedules.
pub fn load_oncall(path: &Path) -> Result<Schedules, ManifestError> {
    if !path.exists() {
        return Ok(Schedules::default());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, None, None, format!("cannot read: {e}")))?;
    let file: OncallFile = serde_saphyr::from_str(&text).map_err(|e| {
        ManifestError::new(path, e.location().map(|l| l.line()), None, e.to_string())
    })?;
    let mut schedules = BTreeMap::new();
    for (name, spec) in file.schedules {
        let site = Site {
            path,
            line: spec.referenced.line(),
            schedule: &name,
        };
        let schedule = schedule(&site, spec.value)?;
        schedules.insert(name, schedule);
    }
    Ok(Schedules(schedules))
}

/// Where a schedule was written, for errors: every error names the schedule's line and a key
/// under `schedules.{name}`.
struct Site<'a> {
    path: &'a Path,
    line: u64,
    schedule: &'a str,
}

impl Site<'_> {
    fn fail(&self, key: String, message: String) -> ManifestError {
        ManifestError::new(
            self.path,
            Some(self.line),
            Some(&format!("schedules.{}.{key}", self.schedule)),
            message,
        )
    }
}

fn schedule(site: &Site<'_>, spec: ScheduleSpec) -> Result<Schedule, ManifestError> {
    let zone: Tz = spec.time_zone.parse().map_err(|_| {
        site.fail(
            "time_zone".into(),
            format!(
                "{:?} is not an IANA time zone such as Europe/London",
                spec.time_zone
            ),
        )
    })?;
    if spec.layers.is_empty() {
        return Err(site.fail(
            "layers".into(),
            "a schedule needs at least one layer".into(),
        ));
    }
    let layers = spec
        .layers
        .into_iter()
        .enumerate()
        .map(|(i, layer)| self::layer(site, i, layer))
        .collect::<Result<Vec<_>, _>>()?;
    let overrides = spec
        .overrides
        .into_iter()
        .enumerate()
        .map(|(i, o)| override_of(site, zone, i, o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Schedule {
        time_zone: zone,
        layers,
        overrides,
    })
}

/// The `i`th layer: Slack users taking turns from a start date, handing off at a local time.
fn layer(site: &Site<'_>, i: usize, layer: LayerSpec) -> Result<Layer, ManifestError> {
    let key = |k: &str| format!("layers[{i}].{k}");
    if layer.users.is_empty() {
        return Err(site.fail(key("users"), "a layer needs users".into()));
    }
    if let Some(bad) = layer
        .users
        .iter()
        .find(|u| !super::roles::slack_id(u, &['U', 'W']))
    {
        return Err(site.fail(key("users"), format!("{bad:?} is not a Slack user id (U…)")));
    }
    let start = NaiveDate::parse_from_str(&layer.start, "%Y-%m-%d").map_err(|_| {
        site.fail(
            key("start"),
            format!("{:?} is not a date such as 2026-01-05", layer.start),
        )
    })?;
    let handoff = NaiveTime::parse_from_str(&layer.handoff, "%H:%M").map_err(|_| {
        site.fail(
            key("handoff"),
            format!("{:?} is not a time such as 09:00", layer.handoff),
        )
    })?;
    let rotation = parse_rotation(&layer.rotation).map_err(|e| site.fail(key("rotation"), e))?;
    Ok(Layer {
        users: layer.users,
        start,
        handoff,
        rotation,
    })
}

/// The `i`th override: a Slack user, between two local times in `zone`, the end after the start.
fn override_of(
    site: &Site<'_>,
    zone: Tz,
    i: usize,
    o: OverrideSpec,
) -> Result<Override, ManifestError> {
    let key = |k: &str| format!("overrides[{i}].{k}");
    if !super::roles::slack_id(&o.user, &['U', 'W']) {
        return Err(site.fail(
            key("user"),
            format!("{:?} is not a Slack user id (U…)", o.user),
        ));
    }
    let start = parse_local(zone, &o.start).map_err(|e| site.fail(key("start"), e))?;
    let end = parse_local(zone, &o.end).map_err(|e| site.fail(key("end"), e))?;
    if end <= start {
        return Err(site.fail(key("end"), "an override must end after it starts".into()));
    }
    Ok(Override {
        user: o.user,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(yaml: &str) -> Schedule {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oncall.yaml");
        std::fs::write(&path, yaml).unwrap();
        load_oncall(&path).unwrap().get("s").unwrap().clone()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    const DAILY_LONDON: &str = "schedules:\n  s:\n    time_zone: Europe/London\n    layers:\n      - {users: [U01, U02, U03], start: 2026-03-27, rotation: 1d, handoff: \"09:00\"}\n";

    #[test]
    fn shifts_hand_off_at_the_local_time() {
        let s = schedule(DAILY_LONDON);
        assert_eq!(
            s.who(utc("2026-03-27T08:59:59Z")),
            None,
            "before the first shift"
        );
        assert_eq!(s.who(utc("2026-03-27T09:00:00Z")), Some("U01"));
        assert_eq!(
            s.who(utc("2026-03-28T08:59:59Z")),
            Some("U01"),
            "one second before hand-off"
        );
        assert_eq!(s.who(utc("2026-03-28T09:00:00Z")), Some("U02"));
        assert_eq!(
            s.who(utc("2026-03-30T09:00:00Z")),
            Some("U01"),
            "wraps around"
        );
    }

    #[test]
    fn hand_offs_follow_daylight_saving_time() {
        // Clocks go forward in London on 29 March 2026: 09:00 local is 08:00 UTC from then on.
        let s = schedule(DAILY_LONDON);
        assert_eq!(
            s.who(utc("2026-03-29T07:59:59Z")),
            Some("U02"),
            "still Saturday's shift"
        );
        assert_eq!(s.who(utc("2026-03-29T08:00:00Z")), Some("U03"), "09:00 BST");
        // And back on 25 October 2026: 09:00 local is 09:00 UTC again.
        let autumn = schedule(&DAILY_LONDON.replace("2026-03-27", "2026-10-24"));
        assert_eq!(
            autumn.who(utc("2026-10-25T08:00:00Z")),
            Some("U01"),
            "08:00 GMT: not yet"
        );
        assert_eq!(autumn.who(utc("2026-10-25T09:00:00Z")), Some("U02"));
    }

    #[test]
    fn later_layers_and_overrides_take_precedence() {
        let s = schedule(
            "schedules:\n  s:\n    time_zone: America/New_York\n    layers:\n      - {users: [U01, U02], start: 2026-01-05, rotation: 1w, handoff: \"10:00\"}\n      - {users: [U09], start: 2026-02-02, rotation: 12h, handoff: \"22:00\"}\n    overrides:\n      - {user: U07, start: \"2026-01-07T00:00\", end: \"2026-01-08T00:00\"}\n",
        );
        assert_eq!(s.who(utc("2026-01-06T12:00:00Z")), Some("U01"));
        assert_eq!(s.who(utc("2026-01-07T12:00:00Z")), Some("U07"), "override");
        assert_eq!(
            s.who(utc("2026-01-08T05:00:00Z")),
            Some("U01"),
            "override ended at local midnight"
        );
        assert_eq!(
            s.who(utc("2026-01-12T15:00:00Z")),
            Some("U02"),
            "second week"
        );
        assert_eq!(
            s.who(utc("2026-02-03T12:00:00Z")),
            Some("U09"),
            "the later layer"
        );
    }

    #[test]
    fn errors_name_the_schedule_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oncall.yaml");
        for (yaml, expected) in [
            (
                "schedules:\n  s:\n    time_zone: Mars/Olympus\n    layers: []\n",
                "schedules.s.time_zone",
            ),
            (
                "schedules:\n  s:\n    time_zone: UTC\n    layers:\n      - {users: [bob], start: 2026-01-01, rotation: 1d, handoff: \"09:00\"}\n",
                "layers[0].users",
            ),
            (
                "schedules:\n  s:\n    time_zone: UTC\n    layers:\n      - {users: [U01], start: 2026-01-01, rotation: 5m, handoff: \"09:00\"}\n",
                "layers[0].rotation",
            ),
            (
                "schedules:\n  s:\n    time_zone: UTC\n    layers:\n      - {users: [U01], start: 2026-01-01, rotation: 1d, handoff: \"25:00\"}\n",
                "layers[0].handoff",
            ),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let error = load_oncall(&path).unwrap_err().to_string();
            assert!(
                error.contains(expected) && error.contains("oncall.yaml:3"),
                "{error}"
            );
        }
    }
}
