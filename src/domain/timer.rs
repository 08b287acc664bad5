//! SLA timers: what is armed for a pending proposal, from its verdict. Pure; the store keeps the
//! rows and the SLA worker fires them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EscalationTarget, OnTimeout, Proposal};

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timer {
    /// Remind the approvers who have not voted.
    Remind { level: usize },
    /// Notify a rung's target.
    Escalate {
        level: usize,
        target: EscalationTarget,
        grants_approval: bool,
    },
    /// The proposal expires.
    Expire,
}

/// A claimed timer row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub id: i64,
    pub proposal_id: super::ProposalId,
    pub timer: Timer,
    pub due_at: DateTime<Utc>,
}

fn duration(text: &str) -> Option<chrono::Duration> {
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
}

/// Every timer a pending proposal needs, measured from its submission: each rung of the ladder
/// (and its repeats, `after` apart), then — when the ladder ends in `expire` — expiry one more
/// `after` past the last rung (or at the SLA when there is no ladder), and always the hard
/// `expires_at`.
pub fn arm(proposal: &Proposal) -> Vec<(Timer, DateTime<Utc>)> {
    let verdict = &proposal.content.verdict;
    let start = proposal.created_at;
    let mut timers = Vec::new();
    let mut last: Option<(DateTime<Utc>, chrono::Duration)> = None;
    for (level, rung) in verdict.escalation.iter().enumerate() {
        let Some(after) = duration(&rung.after) else {
            continue;
        };
        let timer = match (&rung.remind, &rung.notify) {
            (_, Some(target)) => Timer::Escalate {
                level,
                target: target.clone(),
                grants_approval: rung.grants_approval,
            },
            _ => Timer::Remind { level },
        };
        for repeat in 0..=rung.repeat.unwrap_or(0) {
            let due = start + after * (repeat as i32 + 1);
            timers.push((timer.clone(), due));
            if last.is_none_or(|(at, _)| due > at) {
                last = Some((due, after));
            }
        }
    }
    if verdict.on_timeout == Some(OnTimeout::Expire) {
        let sla = verdict.sla.as_deref().and_then(duration).map(|d| start + d);
        let end = match (last, sla) {
            (Some((at, after)), _) => Some(at + after),
            (None, sla) => sla,
        };
        if let Some(end) = end {
            timers.push((Timer::Expire, end));
        }
    }
    if let Some(hard) = proposal.content.expires_at
        && !timers
            .iter()
            .any(|(t, at)| *t == Timer::Expire && *at <= hard)
    {
        timers.push((Timer::Expire, hard));
    }
    timers
}
