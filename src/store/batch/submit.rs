//! Storing a new proposal: its idempotency key, its card posts (queued in their channels), its
//! SLA timers, and the callback when policy decided it at once.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::buffer::Batch;
use crate::audit::{AuditDraft, kinds};
use crate::domain::{Actor, Proposal, ProposalId, Status};
use crate::store::IdempotencyKey;
use crate::store::rows::{IdempotencyRow, ProposalRow, SlackJobRow, TimerRow, WebhookRow};
use crate::store::{CommandResult, StoreError};

pub(super) async fn submit(
    tx: &mut Batch<'_>,
    proposal: Box<Proposal>,
    idempotency: Option<IdempotencyKey>,
    card_channels: std::collections::BTreeMap<String, String>,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    if let Some(key) = &idempotency
        && let Some(stored) = tx.find_idempotency(&proposal.agent, &key.key).await?
    {
        if stored.request_hash == key.request_hash {
            let replay = CommandResult::Replayed {
                response: stored.response,
            };
            return Ok((replay, vec![]));
        }
        // Refused, and it names the proposal the key belongs to: audited.
        let refusal = AuditDraft::new(
            kinds::REQUEST_REFUSED,
            ProposalId::parse(&stored.proposal_id).ok().as_ref(),
            Actor::agent(&proposal.agent).audit_name(),
            json!({
                "request": "submit",
                "reason": "idempotency key reused with a different body",
                "idempotency_key": key.key,
            }),
        );
        return Ok((CommandResult::IdempotencyConflict, vec![refusal]));
    }
    tx.proposals.push(ProposalRow::encode(&proposal)?);
    if let Some(key) = idempotency.as_ref() {
        tx.keys.push(IdempotencyRow {
            agent_id: proposal.agent.to_string(),
            key: key.key.clone(),
            request_hash: key.request_hash.clone(),
            proposal_id: proposal.id.to_string(),
            // What a replay answers: the proposal as it was created.
            response: serde_json::to_string(&proposal)?,
            created_at: at,
        });
    }
    let event = AuditDraft::new(
        kinds::SUBMITTED,
        Some(&proposal.id),
        Actor::agent(&proposal.agent).audit_name(),
        json!({
            "action": proposal.content.action,
            "summary": proposal.content.summary,
            "changes": proposal.content.changes.len(),
            "verdict": proposal.content.verdict,
            "idempotency_key": idempotency.as_ref().map(|k| &k.key),
        }),
    );
    // A proposal waiting for people gets its card in every routed role's channel.
    if proposal.status == Status::Pending {
        for role in &proposal.content.verdict.route {
            let channel = card_channels.get(role).map(String::as_str);
            tx.slack_jobs
                .push(SlackJobRow::card_post(&proposal.id, role, channel, at)?);
        }
        // Its SLA timers, armed with it: nothing accepted goes unwatched.
        for (timer, due_at) in crate::domain::timer::arm(&proposal) {
            tx.timers.push(TimerRow {
                proposal_id: proposal.id.to_string(),
                timer: serde_json::to_string(&timer)?,
                due_at,
            });
        }
    }
    let mut events = vec![event];
    // Decided by policy at submission (auto-approved or denied): say so in the trail too,
    // and to the agent's callback.
    if let Some(decision) = &proposal.decision {
        tx.webhooks.extend(WebhookRow::decided(&proposal, &[], at));
        events.push(AuditDraft::new(
            kinds::DECIDED,
            Some(&proposal.id),
            decision.by.audit_name(),
            json!({"status": proposal.status, "reason": decision.reason}),
        ));
    }
    Ok((CommandResult::Submitted(proposal), events))
}
