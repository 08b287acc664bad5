//! SLA figures for one role, computed from the audit trail alone, so a report always agrees with
//! the trail it can be checked against.
//!
//! What counts (also in the README):
//! - The *population* is every proposal routed to the role for review (`needs_review` with the
//!   role in its route) and submitted inside the window; every figure but the backlog is about
//!   these proposals, whenever their later events happened.
//! - *Time to decision* is submission → approval or rejection by people; expiries and
//!   cancellations are not decisions and are left out.
//! - Against its SLA (only proposals that have one), a proposal is *within* when approved or
//!   rejected by its deadline, *breached* when decided or cancelled after it, expired, or still
//!   pending past it. Cancelled or pending before the deadline is neither, yet.
//! - Percentiles are nearest-rank: the p-th percentile is the smallest value at least p% of the
//!   values are not above (the median of 1, 2, 3, 4 is 2).
//! - Days are UTC days.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Period;
use crate::audit::{AuditEvent, kinds};
use crate::domain::Status;

/// Backlog items and breaches listed by name; the counts cover all of them.
pub const LISTED: usize = 10;

/// The SLA report for one role: what `/countersign report` posts and `GET /v1/reports/sla`
/// answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SlaReport {
    pub role: String,
    pub period: Period,
    /// Window start (inclusive) and end (exclusive): proposals submitted in it are reported on.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Proposals routed to the role for review in the window.
    pub proposals: u64,
    pub outcomes: Outcomes,
    pub time_to_decision: TimeToDecision,
    pub sla: SlaFigures,
    /// Breached proposals, latest first (at most ten; `sla.breached` counts them all).
    pub breaches: Vec<Breach>,
    /// SLA reminders sent.
    pub reminders: u64,
    /// Escalations sent, by level: the rung's number in the ladder as Slack shows it
    /// ("Escalation 2"); repeats count each time.
    pub escalations: Vec<LevelCount>,
    pub backlog: Backlog,
    /// Reviewers who voted for this role, most votes first.
    pub reviewers: Vec<ReviewerFigures>,
    /// Per UTC day of the window: decisions and time-to-decision percentiles (the chart).
    pub daily: Vec<DayFigures>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Outcomes {
    pub approved: u64,
    pub rejected: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub pending: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimeToDecision {
    /// Approvals and rejections the figures are over.
    pub decisions: u64,
    pub median_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SlaFigures {
    /// Proposals in the window that had an SLA.
    pub with_sla: u64,
    pub within: u64,
    pub breached: u64,
    /// within ÷ (within + breached); absent when neither has happened yet.
    pub within_share: Option<f64>,
}

/// A proposal that missed its SLA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Breach {
    pub proposal_id: String,
    pub summary: String,
    pub submitted_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// Its status now (`pending` when still waiting past the deadline).
    pub status: Status,
    /// How far past the deadline it was decided, or has been waiting so far.
    pub late_seconds: i64,
    /// Where its card is in the role's channel, when it was posted.
    pub card: Option<CardRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LevelCount {
    pub level: u64,
    pub count: u64,
}

/// Proposals for the role still waiting now, whenever they were submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backlog {
    pub pending: u64,
    /// The oldest waiting (at most ten).
    pub oldest: Vec<Waiting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Waiting {
    pub proposal_id: String,
    pub summary: String,
    pub age_seconds: i64,
    /// Past its SLA deadline.
    pub overdue: bool,
    pub card: Option<CardRef>,
}

/// A posted card: channel and message timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CardRef {
    pub channel: String,
    pub ts: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReviewerFigures {
    /// Slack user id.
    pub user: String,
    pub votes: u64,
    pub approvals: u64,
    pub rejections: u64,
    /// Submission → this reviewer's vote.
    pub median_response_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DayFigures {
    pub date: NaiveDate,
    pub approved: u64,
    pub rejected: u64,
    pub expired: u64,
    pub median_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
}

/// One proposal as the trail tells it.
#[derive(Debug)]
struct Tracked {
    id: String,
    summary: String,
    submitted_at: DateTime<Utc>,
    sla: Option<Duration>,
    ended: Option<(Status, DateTime<Utc>)>,
    votes: Vec<CastVote>,
    reminders: u64,
    escalations: Vec<u64>,
}

#[derive(Debug)]
struct CastVote {
    user: String,
    approve: bool,
    at: DateTime<Utc>,
}

impl Tracked {
    fn deadline(&self) -> Option<DateTime<Utc>> {
        self.sla.map(|sla| self.submitted_at + sla)
    }

    /// Submission → approval or rejection.
    fn time_to_decision(&self) -> Option<(DateTime<Utc>, i64)> {
        match self.ended {
            Some((Status::Approved | Status::Rejected, at)) => {
                Some((at, (at - self.submitted_at).num_seconds()))
            }
            _ => None,
        }
    }

    /// How the proposal stands against its SLA at `now`: `Some(true)` within, `Some(false)`
    /// breached (with how late), `None` not yet known or no SLA.
    fn against_sla(&self, now: DateTime<Utc>) -> Option<(bool, i64)> {
        let deadline = self.deadline()?;
        let late = |at: DateTime<Utc>| (at - deadline).num_seconds();
        match self.ended {
            Some((Status::Expired, at)) => Some((false, late(at).max(0))),
            Some((Status::Approved | Status::Rejected, at)) if at <= deadline => Some((true, 0)),
            Some((_, at)) if at > deadline => Some((false, late(at))),
            Some(_) => None,
            None if now > deadline => Some((false, late(now))),
            None => None,
        }
    }
}

/// Computes the report for `role` over `[to - period, to)` from audit events in chain order.
/// The events must reach back to the oldest proposal still pending, for the backlog.
pub fn compute(role: &str, period: Period, to: DateTime<Utc>, events: &[AuditEvent]) -> SlaReport {
    let from = to - period.duration();
    let tracked = replay(role, events);
    let population: Vec<&Tracked> = tracked
        .iter()
        .filter(|t| t.submitted_at >= from && t.submitted_at < to)
        .collect();

    let mut outcomes = Outcomes::default();
    for t in &population {
        match t.ended.map(|(status, _)| status) {
            Some(Status::Approved) => outcomes.approved += 1,
            Some(Status::Rejected) => outcomes.rejected += 1,
            Some(Status::Expired) => outcomes.expired += 1,
            Some(Status::Cancelled) => outcomes.cancelled += 1,
            Some(Status::Pending) | None => outcomes.pending += 1,
        }
    }

    let mut durations: Vec<i64> = population
        .iter()
        .filter_map(|t| t.time_to_decision().map(|(_, d)| d))
        .collect();
    durations.sort_unstable();
    let time_to_decision = TimeToDecision {
        decisions: durations.len() as u64,
        median_seconds: percentile(&durations, 50),
        p90_seconds: percentile(&durations, 90),
    };

    let mut sla = SlaFigures {
        with_sla: population.iter().filter(|t| t.sla.is_some()).count() as u64,
        ..SlaFigures::default()
    };
    let mut breaches = Vec::new();
    for t in &population {
        match t.against_sla(to) {
            Some((true, _)) => sla.within += 1,
            Some((false, late)) => {
                sla.breached += 1;
                breaches.push(Breach {
                    proposal_id: t.id.clone(),
                    summary: t.summary.clone(),
                    submitted_at: t.submitted_at,
                    deadline: t.deadline().unwrap_or(t.submitted_at),
                    status: t.ended.map_or(Status::Pending, |(status, _)| status),
                    late_seconds: late,
                    card: None,
                });
            }
            None => {}
        }
    }
    let judged = sla.within + sla.breached;
    sla.within_share = (judged > 0).then(|| sla.within as f64 / judged as f64);
    breaches.sort_by_key(|b| std::cmp::Reverse(b.submitted_at));
    breaches.truncate(LISTED);

    let mut levels: BTreeMap<u64, u64> = BTreeMap::new();
    for level in population.iter().flat_map(|t| &t.escalations) {
        *levels.entry(*level).or_default() += 1;
    }

    SlaReport {
        role: role.to_owned(),
        period,
        from,
        to,
        proposals: population.len() as u64,
        outcomes,
        time_to_decision,
        sla,
        breaches,
        reminders: population.iter().map(|t| t.reminders).sum(),
        escalations: levels
            .into_iter()
            .map(|(level, count)| LevelCount { level, count })
            .collect(),
        backlog: backlog(&tracked, to),
        reviewers: reviewers(&population),
        daily: daily(&population, from, to),
    }
}

/// Every proposal routed to `role` for review, rebuilt from its events.
fn replay(role: &str, events: &[AuditEvent]) -> Vec<Tracked> {
    let mut tracked: Vec<Tracked> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for event in events {
        let Some(id) = event.proposal_id.as_deref() else {
            continue;
        };
        if event.kind == kinds::SUBMITTED {
            let data = parse(&event.data);
            let verdict = &data["verdict"];
            let routed = verdict["outcome"] == "needs_review"
                && verdict["route"]
                    .as_array()
                    .is_some_and(|route| route.iter().any(|r| r == role));
            if routed {
                index.insert(id, tracked.len());
                tracked.push(Tracked {
                    id: id.to_owned(),
                    summary: data["summary"].as_str().unwrap_or_default().to_owned(),
                    submitted_at: event.at,
                    sla: verdict["sla"].as_str().and_then(parse_duration),
                    ended: None,
                    votes: Vec::new(),
                    reminders: 0,
                    escalations: Vec::new(),
                });
            }
            continue;
        }
        let Some(t) = index.get(id).map(|&i| &mut tracked[i]) else {
            continue;
        };
        match event.kind.as_str() {
            // A cancellation ends a proposal too (its own kind, the same data).
            kinds::DECIDED | kinds::CANCELLED => {
                let data = parse(&event.data);
                if let Ok(status) = serde_json::from_value::<Status>(data["status"].clone()) {
                    t.ended.get_or_insert((status, event.at));
                }
            }
            kinds::VOTED => {
                let data = parse(&event.data);
                let for_role = data["eligible"]
                    .as_array()
                    .is_some_and(|roles| roles.iter().any(|r| r == role));
                if let (true, Some(user)) = (for_role, event.actor.strip_prefix("reviewer:")) {
                    t.votes.push(CastVote {
                        user: user.to_owned(),
                        approve: data["ballot"] == "approve",
                        at: event.at,
                    });
                }
            }
            kinds::REMINDED => t.reminders += 1,
            kinds::ESCALATED => {
                // The trail keeps the rung's index; people see rung numbers ("Escalation 2").
                let index = parse(&event.data)["level"].as_u64().unwrap_or(0);
                t.escalations.push(index + 1);
            }
            _ => {}
        }
    }
    tracked
}

fn backlog(tracked: &[Tracked], now: DateTime<Utc>) -> Backlog {
    let mut waiting: Vec<&Tracked> = tracked
        .iter()
        .filter(|t| t.ended.is_none() && t.submitted_at <= now)
        .collect();
    waiting.sort_by_key(|t| t.submitted_at);
    Backlog {
        pending: waiting.len() as u64,
        oldest: waiting
            .iter()
            .take(LISTED)
            .map(|t| Waiting {
                proposal_id: t.id.clone(),
                summary: t.summary.clone(),
                age_seconds: (now - t.submitted_at).num_seconds(),
                overdue: t.deadline().is_some_and(|d| now > d),
                card: None,
            })
            .collect(),
    }
}

fn reviewers(population: &[&Tracked]) -> Vec<ReviewerFigures> {
    let mut by_user: BTreeMap<&str, (u64, u64, Vec<i64>)> = BTreeMap::new();
    for t in population {
        for vote in &t.votes {
            let entry = by_user.entry(&vote.user).or_default();
            if vote.approve {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            entry.2.push((vote.at - t.submitted_at).num_seconds());
        }
    }
    let mut figures: Vec<ReviewerFigures> = by_user
        .into_iter()
        .map(|(user, (approvals, rejections, mut responses))| {
            responses.sort_unstable();
            ReviewerFigures {
                user: user.to_owned(),
                votes: approvals + rejections,
                approvals,
                rejections,
                median_response_seconds: percentile(&responses, 50),
            }
        })
        .collect();
    figures.sort_by(|a, b| b.votes.cmp(&a.votes).then_with(|| a.user.cmp(&b.user)));
    figures
}

fn daily(population: &[&Tracked], from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DayFigures> {
    let first = from.date_naive();
    let last = (to - Duration::nanoseconds(1)).date_naive();
    let mut days: BTreeMap<NaiveDate, (DayFigures, Vec<i64>)> = first
        .iter_days()
        .take_while(|day| *day <= last)
        .map(|date| {
            let figures = DayFigures {
                date,
                approved: 0,
                rejected: 0,
                expired: 0,
                median_seconds: None,
                p90_seconds: None,
            };
            (date, (figures, Vec::new()))
        })
        .collect();
    for t in population {
        let Some((status, at)) = t.ended else {
            continue;
        };
        let Some((day, durations)) = days.get_mut(&at.date_naive()) else {
            continue;
        };
        match status {
            Status::Approved => day.approved += 1,
            Status::Rejected => day.rejected += 1,
            Status::Expired => day.expired += 1,
            _ => continue,
        }
        if let Some((_, seconds)) = t.time_to_decision() {
            durations.push(seconds);
        }
    }
    days.into_values()
        .map(|(mut day, mut durations)| {
            durations.sort_unstable();
            day.median_seconds = percentile(&durations, 50);
            day.p90_seconds = percentile(&durations, 90);
            day
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or(Value::Null)
}

fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| Duration::from_std(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 50), Some(3));
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 90), Some(90));
        let eleven: Vec<i64> = (1..=11).collect();
        assert_eq!(percentile(&eleven, 90), Some(10));
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-11-16T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minutes)
    }

    struct Trail(Vec<AuditEvent>);

    impl Trail {
        fn push(&mut self, minute: i64, kind: &str, id: &str, actor: &str, data: Value) {
            self.0.push(AuditEvent {
                seq: self.0.len() as i64 + 1,
                at: at(minute),
                kind: kind.to_owned(),
                proposal_id: Some(id.to_owned()),
                actor: actor.to_owned(),
                data: data.to_string(),
                prev_hash: String::new(),
                hash: String::new(),
            });
        }
        fn submit(&mut self, minute: i64, id: &str, route: &[&str], sla: Option<&str>) {
            let verdict = json!({"outcome": "needs_review", "route": route, "sla": sla});
            let data = json!({"summary": format!("proposal {id}"), "verdict": verdict});
            self.push(minute, kinds::SUBMITTED, id, "agent:a", data);
        }
        fn decide(&mut self, minute: i64, id: &str, status: &str, actor: &str) {
            self.push(minute, kinds::DECIDED, id, actor, json!({"status": status}));
        }
        fn vote(&mut self, minute: i64, id: &str, user: &str, ballot: &str, eligible: &[&str]) {
            let data = json!({"ballot": ballot, "eligible": eligible});
            self.push(minute, kinds::VOTED, id, &format!("reviewer:{user}"), data);
        }
    }

    #[test]
    fn the_population_is_the_roles_reviews_submitted_in_the_window() {
        let mut trail = Trail(Vec::new());
        // Before the window, still pending: backlog only.
        trail.submit(-60, "old", &["finance"], Some("30m"));
        trail.submit(10, "a", &["finance"], Some("30m"));
        trail.submit(20, "b", &["legal"], Some("30m"));
        let auto = json!({"summary": "x", "verdict": {"outcome": "auto_approve", "route": []}});
        trail.push(30, kinds::SUBMITTED, "c", "agent:a", auto);
        trail.vote(25, "a", "U1", "approve", &["finance"]);
        trail.decide(25, "a", "approved", "reviewer:U1");
        let report = compute("finance", Period::Week, at(7 * 24 * 60 - 1), &trail.0);
        assert_eq!(report.from, at(-1));
        assert_eq!(report.proposals, 1);
        assert_eq!(report.outcomes.approved, 1);
        assert_eq!(report.time_to_decision.median_seconds, Some(15 * 60));
        assert_eq!(report.backlog.pending, 1);
        assert_eq!(report.backlog.oldest[0].proposal_id, "old");
        assert!(report.backlog.oldest[0].overdue);
        assert_eq!(report.daily.len(), 8, "the window touches eight UTC days");
        assert_eq!(report.daily[1].approved, 1);
    }

    #[test]
    fn sla_judgement_covers_every_ending() {
        let mut trail = Trail(Vec::new());
        let ids = [
            "in",
            "late",
            "exp",
            "cxl-early",
            "cxl-late",
            "wait",
            "due",
            "nosla",
        ];
        for (i, id) in ids.iter().enumerate() {
            let sla = (*id != "nosla").then_some("1h");
            let due_soon = *id == "due";
            let minute = if due_soon { 24 * 60 } else { i as i64 };
            trail.submit(minute, id, &["finance"], sla);
        }
        trail.decide(30, "in", "rejected", "reviewer:U1");
        trail.decide(90, "late", "approved", "reviewer:U1");
        trail.decide(122, "exp", "expired", "system:sla");
        let cancelled = json!({"status": "cancelled"});
        trail.push(
            40,
            kinds::CANCELLED,
            "cxl-early",
            "agent:a",
            cancelled.clone(),
        );
        trail.push(100, kinds::CANCELLED, "cxl-late", "agent:a", cancelled);
        trail.decide(200, "nosla", "expired", "system:sla");
        let report = compute("finance", Period::Week, at(24 * 60 + 30), &trail.0);
        assert_eq!(report.sla.with_sla, 7);
        assert_eq!(report.sla.within, 1);
        // late, exp, cxl-late, and wait (pending past its deadline); not cxl-early or due.
        assert_eq!(report.sla.breached, 4);
        assert_eq!(report.sla.within_share, Some(0.2));
        let late: Vec<(&str, i64)> = report
            .breaches
            .iter()
            .map(|b| (b.proposal_id.as_str(), b.late_seconds))
            .collect();
        assert_eq!(
            late,
            [
                ("wait", (24 * 60 + 30 - 5 - 60) * 60),
                ("cxl-late", (100 - 4 - 60) * 60),
                ("exp", (122 - 2 - 60) * 60),
                ("late", (90 - 1 - 60) * 60),
            ]
        );
        assert_eq!(report.outcomes.expired, 2);
        assert_eq!(report.time_to_decision.decisions, 2);
    }

    #[test]
    fn reviewers_count_only_votes_for_the_role() {
        let mut trail = Trail(Vec::new());
        trail.submit(0, "a", &["finance", "legal"], None);
        trail.submit(0, "b", &["finance"], None);
        trail.vote(10, "a", "U1", "approve", &["finance"]);
        trail.vote(12, "a", "U9", "approve", &["legal"]);
        trail.vote(30, "b", "U1", "reject", &["finance"]);
        trail.push(40, kinds::ESCALATED, "b", "system:sla", json!({"level": 1}));
        trail.push(50, kinds::ESCALATED, "b", "system:sla", json!({"level": 1}));
        trail.push(5, kinds::REMINDED, "a", "system:sla", json!({"level": 0}));
        let report = compute("finance", Period::Week, at(60), &trail.0);
        assert_eq!(
            report.reviewers,
            [ReviewerFigures {
                user: "U1".into(),
                votes: 2,
                approvals: 1,
                rejections: 1,
                median_response_seconds: Some(600),
            }]
        );
        assert_eq!(report.escalations, [LevelCount { level: 2, count: 2 }]);
        assert_eq!(report.reminders, 1);
    }
}
