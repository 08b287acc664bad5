//! A due SLA timer fires: a reminder or escalation (queued for Slack, granting approval where
//! the rung says so), or the expiry that decides the proposal.

use chrono::{DateTime, Utc};

use super::buffer::Batch;
use super::transition;
use crate::audit::{AuditDraft, kinds};
use crate::domain::{Actor, ActorKind, Decision, DueTimer, SlackTask, Status, TimerOutcome};
use crate::store::rows::{GrantRow, SlackJobRow};
use crate::store::{CommandResult, StoreError};

/// A notification needs only whether the proposal is still pending: one statement both decides
/// that and fires the timer (a batch of due timers is mostly these).
pub(super) async fn notify(
    tx: &mut Batch<'_>,
    timer: DueTimer,
    task: SlackTask,
    kind: &'static str,
    data: serde_json::Value,
    grants: Vec<String>,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    tx.flush_proposals().await?;
    let id = &timer.proposal_id;
    match tx
        .tx
        .fire_timer_if_pending(timer.id, id, at)
        .await?
        .as_deref()
    {
        None => Ok((
            CommandResult::TimerHandled(TimerOutcome::AlreadyFired),
            vec![],
        )),
        Some("fired") => {
            tx.grants.extend(grants.into_iter().map(|user_id| GrantRow {
                proposal_id: id.to_string(),
                user_id,
                granted_at: at,
            }));
            tx.slack_jobs.push(SlackJobRow::new(id, &task, at)?);
            // The card's status line says it was reminded or escalated.
            tx.slack_jobs
                .push(SlackJobRow::new(id, &SlackTask::RefreshCards, at)?);
            let event = AuditDraft::new(kind, Some(id), "system:sla".into(), data);
            Ok((
                CommandResult::TimerHandled(TimerOutcome::Fired),
                vec![event],
            ))
        }
        Some(_) => Ok((CommandResult::TimerHandled(TimerOutcome::Disarmed), vec![])),
    }
}

pub(super) async fn expire(
    tx: &mut Batch<'_>,
    timer: DueTimer,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let proposal = tx.load_proposal(&timer.proposal_id).await?;
    let pending = proposal
        .as_ref()
        .is_some_and(|p| p.status == Status::Pending);
    let outcome = if pending {
        TimerOutcome::Fired
    } else {
        TimerOutcome::Disarmed
    };
    if !tx.tx.fire_timer(timer.id, at, outcome.as_str()).await? {
        return Ok((
            CommandResult::TimerHandled(TimerOutcome::AlreadyFired),
            vec![],
        ));
    }
    let Some(proposal) = proposal.filter(|_| pending) else {
        return Ok((CommandResult::TimerHandled(TimerOutcome::Disarmed), vec![]));
    };
    let decision = Decision {
        by: Actor {
            kind: ActorKind::System,
            id: "sla".into(),
        },
        at,
        reason: Some("nobody decided in time".into()),
        execution_token: None,
        digest: None,
    };
    let (result, events) = transition(
        tx,
        proposal,
        Status::Expired,
        decision,
        kinds::DECIDED,
        "expire",
    )
    .await?;
    let handled = if matches!(result, CommandResult::Updated(_)) {
        TimerOutcome::Fired
    } else {
        TimerOutcome::Disarmed
    };
    Ok((CommandResult::TimerHandled(handled), events))
}
