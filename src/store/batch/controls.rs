//! Operators' overrides of agents' modes: set (optionally rejecting the agent's pending
//! proposals with it) or cleared, each announced in the role channels through the outbox.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::buffer::Batch;
use super::transition;
use crate::audit::{AuditDraft, kinds};
use crate::domain::{Actor, ControlNotice, Decision, ProposalId, Status};
use crate::store::rows::SlackJobRow;
use crate::store::{CommandResult, StoreError};

pub(super) async fn set(
    tx: &mut Batch<'_>,
    control: crate::domain::Control,
    reject_pending: bool,
    by: Actor,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    tx.flush().await?;
    tx.tx.upsert_control(&control).await?;
    let mut events = vec![AuditDraft::new(
        kinds::AGENT_CONTROLLED,
        None,
        control.set_by.clone(),
        json!({"agent": control.agent, "action": control.action, "mode": control.mode, "reason": control.reason, "reject_pending": reject_pending}),
    )];
    let mut rejected = Vec::new();
    if reject_pending {
        let reason = format!(
            "agent {} {}: {}",
            control.mode.as_str().replace('_', "-"),
            control.agent,
            control.reason.as_deref().unwrap_or("no reason given")
        );
        let pending = tx.tx.pending_of(&control.agent).await?;
        let ids: Vec<ProposalId> = pending
            .iter()
            .map(|id| ProposalId::parse(id).map_err(|e| StoreError::Corrupt(e.0)))
            .collect::<Result<_, _>>()?;
        tx.prefetch(&ids.iter().collect::<Vec<_>>()).await?;
        for id in ids {
            let Some(proposal) = tx.load_proposal(&id).await? else {
                continue;
            };
            if control
                .action
                .as_deref()
                .is_some_and(|scope| scope != proposal.content.action.as_str())
            {
                continue;
            }
            let decision = Decision {
                by: by.clone(),
                at,
                reason: Some(reason.clone()),
                execution_token: None,
                digest: None,
            };
            let (result, more) = transition(
                tx,
                proposal,
                Status::Rejected,
                decision,
                kinds::DECIDED,
                "reject pending",
            )
            .await?;
            events.extend(more);
            if matches!(result, CommandResult::Updated(_)) {
                rejected.push(id);
            }
        }
    }
    let notice = ControlNotice {
        agent: control.agent.clone(),
        action: control.action.clone(),
        mode: Some(control.mode),
        by: control.set_by.clone(),
        reason: control.reason.clone(),
        rejected: reject_pending.then_some(rejected.len()),
    };
    tx.slack_jobs.push(SlackJobRow::announcement(&notice, at)?);
    Ok((CommandResult::Narrowed(rejected), events))
}

pub(super) async fn clear(
    tx: &mut Batch<'_>,
    agent: String,
    action: Option<String>,
    by: String,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    tx.flush().await?;
    let cleared = tx
        .tx
        .delete_control(&agent, action.as_deref().unwrap_or(""))
        .await?;
    let events = if cleared {
        let notice = ControlNotice {
            agent: agent.clone(),
            action: action.clone(),
            mode: None,
            by: by.clone(),
            reason: reason.clone(),
            rejected: None,
        };
        tx.slack_jobs.push(SlackJobRow::announcement(&notice, at)?);
        vec![AuditDraft::new(
            kinds::AGENT_RESUMED,
            None,
            by,
            json!({"agent": agent, "action": action, "reason": reason}),
        )]
    } else {
        vec![]
    };
    Ok((CommandResult::Control(cleared), events))
}
