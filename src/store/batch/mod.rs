//! The logic of a command batch, shared by both backends. Each backend supplies a transaction
//! with a handful of primitive reads and writes ([`BatchTx`]); what a command means lives here
//! once.

mod buffer;
mod controls;
mod deliveries;
mod outcome;
mod step_up;
mod submit;
mod timers;
mod vote;

use buffer::Batch;
pub(super) use buffer::BatchTx;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::rows::{SlackJobRow, WebhookRow};
use super::{Command, CommandResult, Redelivery, StoreError, TimerEffect};
use crate::audit::{AuditDraft, kinds};
use crate::domain::{
    ActionDigest, Actor, AgentId, Decision, Proposal, ProposalId, SlackTask, Status, Vote,
};

/// Runs every command against `tx`, appending audit events as it goes.
pub(super) async fn run(
    tx: &mut dyn BatchTx,
    commands: Vec<Command>,
    at: DateTime<Utc>,
) -> Result<Vec<CommandResult>, StoreError> {
    let mut tip = tx.chain_tip().await?;
    let mut batch = Batch::new(tx);
    // Every stored proposal the batch's commands change, with its votes, read in one go (one
    // submitted in this same batch is read once its row is written).
    let submitted: std::collections::HashSet<&ProposalId> = commands
        .iter()
        .filter_map(|command| match command {
            Command::Submit { proposal, .. } => Some(&proposal.id),
            _ => None,
        })
        .collect();
    let named: Vec<&ProposalId> = commands
        .iter()
        .filter_map(Command::changes)
        .filter(|id| !submitted.contains(id))
        .collect();
    batch.prefetch(&named).await?;
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        let (result, drafts) = run_one(&mut batch, command, at).await?;
        batch
            .events
            .extend(drafts.into_iter().map(|draft| draft.seal(&mut tip, at)));
        results.push(result);
    }
    batch.flush().await?;
    Ok(results)
}

/// One command's effect: a dispatch, one arm per command (their logic is in the submodules and
/// below). Long because there are many commands, each arm a few lines of unpacking and a call:
/// the one place to see every command, kept whole on purpose.
async fn run_one(
    tx: &mut Batch<'_>,
    command: Command,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    match command {
        Command::Submit {
            proposal,
            idempotency,
            card_channels,
        } => submit::submit(tx, proposal, idempotency, card_channels, at).await,
        Command::StepUp { user, change } => step_up::run(tx, &user, change, at).await,
        Command::Redeliver { event, by } => {
            let proposal = match tx.tx.redeliver_webhook(&event, at).await? {
                Ok(proposal) => proposal,
                Err(refused) => return Ok((CommandResult::Redelivered(refused), vec![])),
            };
            let proposal = ProposalId::parse(&proposal).map_err(|e| StoreError::Corrupt(e.0))?;
            let event = AuditDraft::new(
                kinds::CALLBACK_REDELIVERED,
                Some(&proposal),
                by,
                json!({"event": event}),
            );
            Ok((CommandResult::Redelivered(Redelivery::Started), vec![event]))
        }
        Command::Cancel { id, agent, reason } => {
            let decision = Decision {
                by: Actor::agent(&agent),
                at,
                reason,
                execution_token: None,
                digest: None,
            };
            let owned = match owned_by(tx, &id, &agent, "cancel").await? {
                Ok(proposal) => proposal,
                Err(refusal) => return Ok(refusal),
            };
            transition(
                tx,
                owned,
                Status::Cancelled,
                decision,
                kinds::CANCELLED,
                "cancel",
            )
            .await
        }
        Command::Decide {
            id,
            status,
            decision,
        } => match tx.load_proposal(&id).await? {
            None => Ok((CommandResult::NotFound, vec![])),
            Some(proposal) => {
                transition(tx, proposal, status, decision, kinds::DECIDED, "decide").await
            }
        },
        Command::RecordOutcome {
            id,
            agent,
            outcome,
            token,
            digest,
        } => {
            let report = outcome::Report {
                outcome,
                token,
                digest,
            };
            outcome::record_outcome(tx, id, agent, report, at).await
        }
        Command::Vote {
            id,
            voter,
            eligible,
            ballot,
            reason,
            dedupe,
            proof,
        } => {
            let vote = Vote {
                voter,
                eligible,
                ballot,
                reason,
                at,
            };
            vote::cast(tx, id, vote, dedupe, proof).await
        }
        Command::FireTimer {
            timer,
            effect:
                TimerEffect::Notify {
                    task,
                    kind,
                    data,
                    grants,
                },
        } => timers::notify(tx, timer, task, kind, data, grants, at).await,
        Command::FireTimer {
            timer,
            effect: TimerEffect::Expire,
        } => timers::expire(tx, timer, at).await,
        Command::Audit(draft) => Ok((CommandResult::Audited, vec![draft])),
        Command::RecordCallbackAttempt {
            delivery,
            attempt,
            next,
        } => deliveries::callback_attempt(tx, delivery, attempt, next).await,
        Command::ReportPosted { post, at } => deliveries::report_posted(tx, post, at).await,
        Command::SetControl {
            control,
            reject_pending,
            by,
        } => controls::set(tx, control, reject_pending, by, at).await,
        Command::ClearControl {
            agent,
            action,
            by,
            reason,
        } => controls::clear(tx, agent, action, by, reason, at).await,
    }
}

/// Loads `id` if `agent` owns it. Another agent's proposal is refused as if it did not exist,
/// but the attempt is audited: it names a real proposal.
async fn owned_by(
    tx: &mut Batch<'_>,
    id: &ProposalId,
    agent: &AgentId,
    request: &str,
) -> Result<Result<Proposal, (CommandResult, Vec<AuditDraft>)>, StoreError> {
    Ok(match tx.load_proposal(id).await? {
        Some(proposal) if &proposal.agent == agent => Ok(proposal),
        Some(proposal) => Err(refusal_of(
            &proposal,
            Actor::agent(agent).audit_name(),
            request,
            "proposal belongs to another agent",
            CommandResult::NotFound,
        )),
        None => Err((CommandResult::NotFound, vec![])),
    })
}

/// Moves a pending proposal to `to`, or refuses (audited) when it is no longer pending.
async fn transition(
    tx: &mut Batch<'_>,
    mut proposal: Proposal,
    to: Status,
    decision: Decision,
    kind: &'static str,
    request: &str,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let actor = decision.by.audit_name();
    if proposal.status != Status::Pending {
        return Ok(refused(
            &proposal,
            actor,
            request,
            "proposal is no longer pending",
        ));
    }
    proposal.status = to;
    proposal.updated_at = decision.at;
    // An approval is bound to exactly what it approved, and acted on once.
    let approved = to == Status::Approved;
    proposal.decision = Some(Decision {
        execution_token: approved.then(crate::domain::callback::new_execution_token),
        digest: approved.then(|| ActionDigest::of(&proposal.content)),
        ..decision
    });
    // Of two racing transitions exactly one wins: they meet in one batch, which sees the first
    // one's change, or in two batches serialised by the chain's lock; the write is conditional
    // on the stored status all the same.
    if !tx.update_lifecycle(&proposal, Status::Pending).await? {
        let current = tx
            .load_proposal(&proposal.id)
            .await?
            .map_or(Status::Pending, |p| p.status);
        return Ok((CommandResult::WrongState(current), vec![]));
    }
    // Decided: its timers are disarmed.
    tx.disarm_timers(&proposal.id, decision_at(&proposal));
    // The agent is told (by the callback worker), with every vote.
    let votes: Vec<Vote> = tx
        .votes(&proposal.id)
        .await?
        .into_iter()
        .map(|(vote, _)| vote)
        .collect();
    tx.webhooks.extend(WebhookRow::decided(
        &proposal,
        &votes,
        decision_at(&proposal),
    ));
    // Every posted copy of the card must now show the outcome, and the requester hear of it.
    for task in [SlackTask::RefreshCards, SlackTask::NotifyRequester] {
        tx.slack_jobs.push(SlackJobRow::new(
            &proposal.id,
            &task,
            decision_at(&proposal),
        )?);
    }
    let event = AuditDraft::new(
        kind,
        Some(&proposal.id),
        actor,
        json!({"status": to, "reason": proposal.decision.as_ref().and_then(|d| d.reason.clone())}),
    );
    Ok((CommandResult::Updated(Box::new(proposal)), vec![event]))
}

fn refused(
    proposal: &Proposal,
    actor: String,
    request: &str,
    reason: &str,
) -> (CommandResult, Vec<AuditDraft>) {
    refusal_of(
        proposal,
        actor,
        request,
        reason,
        CommandResult::WrongState(proposal.status),
    )
}

fn refusal_of(
    proposal: &Proposal,
    actor: String,
    request: &str,
    reason: &str,
    result: CommandResult,
) -> (CommandResult, Vec<AuditDraft>) {
    let event = AuditDraft::new(
        kinds::REQUEST_REFUSED,
        Some(&proposal.id),
        actor,
        json!({"request": request, "reason": reason, "status": proposal.status}),
    );
    (result, vec![event])
}

fn decision_at(proposal: &Proposal) -> DateTime<Utc> {
    proposal
        .decision
        .as_ref()
        .map_or(proposal.updated_at, |d| d.at)
}
