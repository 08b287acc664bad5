//! SLA timers: what is armed for a pending proposal, from its verdict. Pure; the store keeps the
//! rows and the SLA worker fires them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EscalationTarget, OnTimeout, Proposal};

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timer {
    /// Remind the approvers who have not voted: a ladder rung, or (`None`) the default reminder
    /// at half the SLA.
    Remind { level: Option<usize> },
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
/// (and its repeats, `after` apart), a reminder at half the SLA if no rung reminds, then — when the ladder ends in `expire` — expiry one more
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
            _ => Timer::Remind { level: Some(level) },
        };
        for repeat in 0..=rung.repeat.unwrap_or(0) {
            let due = start + after * (repeat as i32 + 1);
            timers.push((timer.clone(), due));
            if last.is_none_or(|(at, _)| due > at) {
                last = Some((due, after));
            }
        }
    }
    // Without a reminder rung, approvers are reminded halfway through the SLA.
    let sla = verdict.sla.as_deref().and_then(duration);
    if let Some(sla) = sla
        && !timers
            .iter()
            .any(|(t, _)| matches!(t, Timer::Remind { .. }))
    {
        timers.push((Timer::Remind { level: None }, start + sla / 2));
    }
    if verdict.on_timeout == Some(OnTimeout::Expire) {
        let sla = sla.map(|d| start + d);
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

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;

    fn proposal(verdict: serde_json::Value, expires_at: Option<&str>) -> Proposal {
        serde_json::from_value(json!({
            "id": "prop_01kaf3yq5x8m2n4p6r8t0v2w4y", "agent": "a", "status": "pending",
            "action": "x.y", "summary": "s", "changes": [], "params": {}, "evidence": [],
            "data_classes": [], "metadata": {}, "expires_at": expires_at, "verdict": verdict,
            "created_at": "2026-11-21T09:00:00Z", "updated_at": "2026-11-21T09:00:00Z"
        }))
        .unwrap()
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(minutes)
    }

    fn verdict(extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({"outcome": "needs_review", "rules": [], "reasons": [], "route": ["finance"],
                           "quorum": {"approvals": 1, "each_role": false}, "step_up": "none"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn a_ladder_with_repeats_then_expiry_one_step_past_its_end() {
        let p = proposal(
            verdict(json!({"sla": "30m", "on_timeout": "expire", "escalation": [
                {"after": "15m", "remind": "approvers"},
                {"after": "30m", "notify": "oncall", "repeat": 2}
            ]})),
            Some("2026-11-21T17:00:00Z"),
        );
        let oncall = |level| Timer::Escalate {
            level,
            target: crate::domain::EscalationTarget::Oncall,
            grants_approval: false,
        };
        assert_eq!(
            arm(&p),
            [
                (Timer::Remind { level: Some(0) }, at(15)),
                (oncall(1), at(30)),
                (oncall(1), at(60)),
                (oncall(1), at(90)),
                (Timer::Expire, at(120)),
            ]
        );
    }

    #[test]
    fn without_a_reminder_rung_approvers_are_reminded_halfway_and_the_hard_expiry_stands() {
        let p = proposal(verdict(json!({"sla": "4h"})), Some("2026-11-21T17:00:00Z"));
        assert_eq!(
            arm(&p),
            [
                (Timer::Remind { level: None }, at(120)),
                (Timer::Expire, at(480))
            ]
        );
        let no_sla = proposal(verdict(json!({})), None);
        assert_eq!(arm(&no_sla), []);
    }
}

/// What became of a due timer when a worker fired it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOutcome {
    /// It took effect (a reminder, an escalation, the expiry).
    Fired,
    /// Its proposal was no longer pending: nothing to do.
    Disarmed,
    /// Another worker fired it first.
    AlreadyFired,
}

impl TimerOutcome {
    /// As the `timers.outcome` column and the logs say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::Disarmed => "disarmed",
            Self::AlreadyFired => "already fired",
        }
    }
}
