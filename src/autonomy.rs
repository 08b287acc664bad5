//! Earned autonomy: each action's record over the last 30 or 90 days, and what the promotion
//! criteria in policy (`autonomy:` in a policy file) make of it. Nothing changes by itself: the
//! report recommends, a person edits the agent's catalog.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{ExecutionResult, Proposal, Status};
use crate::manifest::{Agent, Autonomy};

pub use crate::policy::autonomy::{Criteria, Demotion, Promotion};

/// One action's record and what it earns.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ActionRecord {
    pub action: String,
    /// Its tier in the agent's catalog now.
    #[schema(value_type = String)]
    pub autonomy: Autonomy,
    pub proposals: u64,
    pub approved: u64,
    pub rejected: u64,
    /// approved ÷ (approved + rejected); absent with nothing decided.
    pub approval_rate: Option<f64>,
    /// Rejection reasons, most frequent first, with how often.
    pub rejection_reasons: Vec<(String, u64)>,
    /// Operators' pauses and draft-onlys that covered it in the window.
    pub overrides: u64,
    pub executed: u64,
    pub failed_executions: u64,
    /// `promote`, `demote` or `keep`, with why.
    pub recommendation: String,
    pub reason: String,
}

/// The record of every action in the agent's catalog from its proposals submitted since the
/// window began (and the overrides set on it), judged by `criteria`.
pub fn records(
    agent: &Agent,
    proposals: &[Proposal],
    overrides: &[(Option<String>, DateTime<Utc>)],
    criteria: &Criteria,
) -> Vec<ActionRecord> {
    agent
        .actions
        .iter()
        .map(|(action, entry)| {
            let mine: Vec<&Proposal> = proposals
                .iter()
                .filter(|p| &p.content.action == action)
                .collect();
            let count = |status: Status| mine.iter().filter(|p| p.status == status).count() as u64;
            let (approved, rejected) = (count(Status::Approved), count(Status::Rejected));
            let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
            for p in mine.iter().filter(|p| p.status == Status::Rejected) {
                let reason = p
                    .decision
                    .as_ref()
                    .and_then(|d| d.reason.clone())
                    .unwrap_or_else(|| "(no reason given)".into());
                *reasons.entry(reason).or_default() += 1;
            }
            let mut rejection_reasons: Vec<(String, u64)> = reasons.into_iter().collect();
            rejection_reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let outcome = |result: ExecutionResult| {
                mine.iter()
                    .filter(|p| p.outcome.as_ref().is_some_and(|o| o.result == result))
                    .count() as u64
            };
            let decided = approved + rejected;
            let mut record = ActionRecord {
                action: action.to_string(),
                autonomy: entry.autonomy,
                proposals: mine.len() as u64,
                approved,
                rejected,
                approval_rate: (decided > 0).then(|| approved as f64 / decided as f64),
                rejection_reasons,
                overrides: overrides
                    .iter()
                    .filter(|(scope, _)| scope.as_deref().is_none_or(|a| a == action.as_str()))
                    .count() as u64,
                executed: outcome(ExecutionResult::Executed),
                failed_executions: outcome(ExecutionResult::Failed),
                recommendation: String::new(),
                reason: String::new(),
            };
            (record.recommendation, record.reason) = recommend(&record, criteria);
            record
        })
        .collect()
}

fn recommend(record: &ActionRecord, criteria: &Criteria) -> (String, String) {
    let decided = record.approved + record.rejected;
    let rejected_share = if decided == 0 {
        0.0
    } else {
        record.rejected as f64 / decided as f64
    };
    let reported = record.executed + record.failed_executions;
    let failed_share = if reported == 0 {
        0.0
    } else {
        record.failed_executions as f64 / reported as f64
    };
    let percent = |share: f64| format!("{:.1}%", share * 100.0);
    if let Some(demote) = &criteria.demote
        && decided >= demote.min_decided
    {
        if rejected_share > demote.max_rejected {
            return (
                "demote".into(),
                format!(
                    "{} of {decided} decided were rejected, above {}",
                    percent(rejected_share),
                    percent(demote.max_rejected)
                ),
            );
        }
        if let Some(max) = demote.max_failed
            && failed_share > max
        {
            return (
                "demote".into(),
                format!(
                    "{} of {reported} reported executions failed, above {}",
                    percent(failed_share),
                    percent(max)
                ),
            );
        }
    }
    if let Some(promotion) = criteria.promote.iter().find(|p| p.from == record.autonomy) {
        let tier = serde_json::to_value(promotion.to)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if decided >= promotion.min_decided && rejected_share < promotion.max_rejected {
            return (
                "promote".into(),
                format!(
                    "{decided} decided with {} rejected (criteria: at least {} with under {}): eligible for {tier}",
                    percent(rejected_share),
                    promotion.min_decided,
                    percent(promotion.max_rejected)
                ),
            );
        }
        return (
            "keep".into(),
            format!(
                "{tier} needs at least {} decided with under {} rejected; so far {decided} with {}",
                promotion.min_decided,
                percent(promotion.max_rejected),
                percent(rejected_share)
            ),
        );
    }
    (
        "keep".into(),
        "no promotion criteria apply to this tier".into(),
    )
}

/// The autonomy report for one agent over a window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AutonomyReport {
    pub agent: String,
    #[schema(value_type = String)]
    pub period: crate::report::Period,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub actions: Vec<ActionRecord>,
}

/// Reads the agent's proposals and the overrides set on it in the window, and judges each
/// action of its catalog.
pub async fn report(
    store: &dyn crate::store::Store,
    agent: &Agent,
    period: crate::report::Period,
    now: DateTime<Utc>,
    criteria: &Criteria,
) -> Result<AutonomyReport, crate::store::StoreError> {
    let from = now - period.duration();
    let proposals = store.proposals_of(agent.id.as_str(), from).await?;
    // Written with each override (`control_history`), never read back out of the audit trail.
    let overrides = store.overrides_since(agent.id.as_str(), from).await?;
    Ok(AutonomyReport {
        agent: agent.id.to_string(),
        period,
        from,
        to: now,
        actions: records(agent, &proposals, &overrides, criteria),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(approved: u64, rejected: u64, executed: u64, failed: u64) -> ActionRecord {
        ActionRecord {
            action: "a.b".into(),
            autonomy: Autonomy::Approval,
            proposals: approved + rejected,
            approved,
            rejected,
            approval_rate: None,
            rejection_reasons: vec![],
            overrides: 0,
            executed,
            failed_executions: failed,
            recommendation: String::new(),
            reason: String::new(),
        }
    }

    fn criteria() -> Criteria {
        Criteria {
            promote: vec![Promotion {
                from: Autonomy::Approval,
                to: Autonomy::Autonomous,
                min_decided: 100,
                max_rejected: 0.02,
            }],
            demote: Some(Demotion {
                min_decided: 20,
                max_rejected: 0.10,
                max_failed: Some(0.05),
            }),
        }
    }

    #[test]
    fn promotion_needs_volume_and_a_clean_record() {
        assert_eq!(recommend(&record(99, 1, 0, 0), &criteria()).0, "promote");
        assert_eq!(
            recommend(&record(98, 2, 0, 0), &criteria()).0,
            "keep",
            "2% is not under 2%"
        );
        let (verdict, why) = recommend(&record(50, 0, 0, 0), &criteria());
        assert_eq!(verdict, "keep");
        assert!(why.contains("so far 50"), "{why}");
    }

    #[test]
    fn demotion_on_rejections_or_failed_executions() {
        let (verdict, why) = recommend(&record(17, 3, 0, 0), &criteria());
        assert_eq!(
            (verdict.as_str(), why.as_str()),
            ("demote", "15.0% of 20 decided were rejected, above 10.0%")
        );
        assert_eq!(
            recommend(&record(100, 0, 19, 1), &criteria()).0,
            "promote",
            "5% failed is not above 5%"
        );
        assert_eq!(recommend(&record(100, 0, 18, 2), &criteria()).0, "demote");
        // Too few decided to judge.
        assert_eq!(recommend(&record(5, 5, 0, 0), &criteria()).0, "keep");
    }
}
