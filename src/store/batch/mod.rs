//! The logic of a command batch, shared by both backends. Each backend supplies a transaction
//! with a handful of primitive reads and writes ([`BatchTx`]); what a command means lives here
//! once.

mod buffer;
mod step_up;
mod vote;

use buffer::Batch;
pub(super) use buffer::BatchTx;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::rows::{GrantRow, IdempotencyRow, ProposalRow, SlackJobRow, TimerRow, WebhookRow};
use super::{Command, CommandResult, StoreError, TimerEffect};
use crate::audit::{AuditDraft, kinds};
use crate::domain::{
    Actor, ActorKind, AgentId, ControlNotice, Decision, Proposal, ProposalId, SlackTask, Status,
    TimerOutcome, Vote,
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
        } => {
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
        Command::StepUp { user, change } => step_up::run(tx, &user, change, at).await,
        Command::Cancel { id, agent, reason } => {
            let decision = Decision {
                by: Actor::agent(&agent),
                at,
                reason,
                execution_token: None,
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
        } => {
            let mut proposal = match owned_by(tx, &id, &agent, "outcome").await? {
                Ok(proposal) => proposal,
                Err(refusal) => return Ok(refusal),
            };
            let actor = Actor::agent(&agent).audit_name();
            if proposal.status != Status::Approved {
                return Ok(refused(
                    &proposal,
                    actor,
                    "outcome",
                    "proposal is not approved",
                ));
            }
            let issued = proposal
                .decision
                .as_ref()
                .and_then(|d| d.execution_token.as_deref());
            let token_matches = issued.is_some_and(|issued| {
                subtle::ConstantTimeEq::ct_eq(issued.as_bytes(), token.as_bytes()).into()
            });
            if !token_matches {
                return Ok(refusal_of(
                    &proposal,
                    actor,
                    "outcome",
                    "wrong execution token",
                    CommandResult::WrongToken,
                ));
            }
            if proposal.outcome.is_some() {
                return Ok(refused(
                    &proposal,
                    actor,
                    "outcome",
                    "execution token already used",
                ));
            }
            proposal.outcome = Some(outcome);
            proposal.updated_at = at;
            if !tx.update_lifecycle(&proposal, Status::Approved).await? {
                return Ok((CommandResult::WrongState(proposal.status), vec![]));
            }
            let event = AuditDraft::new(
                kinds::OUTCOME_RECORDED,
                Some(&proposal.id),
                actor,
                json!({"outcome": proposal.outcome}),
            );
            Ok((CommandResult::Updated(Box::new(proposal)), vec![event]))
        }
        Command::Vote {
            id,
            voter,
            eligible,
            ballot,
            reason,
            dedupe,
        } => {
            let vote = Vote {
                voter,
                eligible,
                ballot,
                reason,
                at,
            };
            vote::cast(tx, id, vote, dedupe).await
        }
        // A notification needs only whether the proposal is still pending: one statement both
        // decides that and fires the timer (a batch of due timers is mostly these).
        Command::FireTimer {
            timer,
            effect:
                TimerEffect::Notify {
                    task,
                    kind,
                    data,
                    grants,
                },
        } => {
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
        Command::FireTimer {
            timer,
            effect: TimerEffect::Expire,
        } => {
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
        Command::Audit(draft) => Ok((CommandResult::Audited, vec![draft])),
        Command::SetControl {
            control,
            reject_pending,
            by,
        } => {
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
        Command::ClearControl {
            agent,
            action,
            by,
            reason,
        } => {
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
    proposal.decision = Some(Decision {
        execution_token: (to == Status::Approved)
            .then(crate::domain::callback::new_execution_token),
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
