//! What an agent is told when its proposal is decided: the `proposal.decided` event (Standard
//! Webhooks payload shape), the delivery schedule, and the execution token of an approval.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Proposal, ProposalId, Status, Vote};

pub const DECIDED_EVENT: &str = "proposal.decided";

/// Delays before each attempt, after the previous one failed (the first is immediate): then the
/// delivery has failed. Standard Webhooks' (and Svix's) schedule, about 28 hours in all.
pub const SCHEDULE: [std::time::Duration; 8] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(5 * 60),
    std::time::Duration::from_secs(30 * 60),
    std::time::Duration::from_secs(2 * 3600),
    std::time::Duration::from_secs(5 * 3600),
    std::time::Duration::from_secs(10 * 3600),
    std::time::Duration::from_secs(10 * 3600),
];

/// How long to wait after `attempts` failed attempts, before jitter; `None`: give up.
pub fn retry_delay(attempts: i32) -> Option<std::time::Duration> {
    SCHEDULE.get(usize::try_from(attempts).ok()?).copied()
}

/// A `proposal.decided` event owed to an agent, as claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The `webhook-id`: the same on every attempt, so receivers can drop duplicates.
    pub id: String,
    pub proposal_id: ProposalId,
    pub agent: String,
    pub url: String,
    /// Sent byte for byte on every attempt.
    pub body: String,
    /// Attempts made so far.
    pub attempts: i32,
}

/// A fresh webhook id: `msg_` and a ULID.
pub fn new_event_id() -> String {
    format!("msg_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A fresh execution token for an approval: what the agent presents, once, with its outcome.
pub fn new_execution_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 24] = rand::random();
    format!(
        "cxt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The event body for a decided proposal: the decision (who, when, why), every vote, the
/// step-up the policy required of approvers, the rules that routed it, and for an approval the
/// execution token and the digest of what was approved (which the outcome must name).
pub fn decided_body(proposal: &Proposal, votes: &[Vote], at: DateTime<Utc>) -> Value {
    let verdict = &proposal.content.verdict;
    let decision = proposal.decision.as_ref();
    let rejection_reason = (proposal.status == Status::Rejected)
        .then(|| decision.and_then(|d| d.reason.clone()))
        .flatten();
    json!({
        "type": DECIDED_EVENT,
        "timestamp": at,
        "data": {
            "proposal_id": proposal.id,
            "agent": proposal.agent,
            "action": proposal.content.action,
            "summary": proposal.content.summary,
            "target": proposal.content.target,
            "status": proposal.status,
            "decided_by": decision.map(|d| &d.by),
            "decided_at": decision.map(|d| d.at),
            "reason": decision.and_then(|d| d.reason.as_ref()),
            "rejection_reason": rejection_reason,
            "votes": votes.iter().map(|v| json!({
                "voter": v.voter, "ballot": v.ballot, "roles": v.eligible,
                "reason": v.reason, "at": v.at,
            })).collect::<Vec<_>>(),
            "step_up": verdict.step_up,
            "rules": verdict.rules,
            "execution_token": decision.and_then(|d| d.execution_token.as_ref()),
            "digest": decision.and_then(|d| d.digest.as_ref()),
            "metadata": proposal.content.metadata,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_eight_attempts_then_nothing() {
        assert_eq!(retry_delay(0), Some(std::time::Duration::ZERO));
        assert_eq!(retry_delay(1), Some(std::time::Duration::from_secs(5)));
        assert_eq!(retry_delay(7), Some(std::time::Duration::from_secs(36_000)));
        assert_eq!(retry_delay(8), None);
        assert_eq!(retry_delay(-1), None);
    }

    #[test]
    fn tokens_and_ids_are_fresh_and_url_safe() {
        let (a, b) = (new_execution_token(), new_execution_token());
        assert_ne!(a, b);
        assert!(a.starts_with("cxt_") && a.len() == 36);
        assert!(
            a[4..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(new_event_id().starts_with("msg_"));
    }
}
