//! The vote command: a reviewer approves or rejects, and a reject or the approval that completes
//! the quorum decides the proposal. Whether the voter may vote is the caller's check; whether
//! the proposal is still pending and the voter has not voted yet are checked here, in the
//! batch's transaction, so racing clicks see each other.

use serde_json::json;

use super::{Batch, transition};
use crate::audit::{AuditDraft, kinds};
use crate::domain::vote::tally;
use crate::domain::{
    Actor, ActorKind, Ballot, Decision, Proposal, ProposalId, SlackTask, Status, Vote,
};
use crate::store::rows::SlackJobRow;
use crate::store::{CommandResult, StepUpProof, StoreError, VoteRefusal};

/// Runs [`crate::store::Command::Vote`]: `vote` is the vote as commanded (not yet checked or
/// stored), `dedupe` identifies the click or submission it came from, `proof` the step-up the
/// core checked for it (spent and audited here, before the proposal's state is looked at: a
/// right code is used up even when the vote then comes too late, as it would be at the form).
pub(super) async fn cast(
    tx: &mut Batch<'_>,
    id: ProposalId,
    vote: Vote,
    dedupe: String,
    proof: Option<StepUpProof>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let Some(proposal) = tx.load_proposal(&id).await? else {
        return Ok((CommandResult::NotFound, vec![]));
    };
    let actor = Actor {
        kind: ActorKind::Reviewer,
        id: vote.voter.clone(),
    };
    let stored = tx.votes(&id).await?;
    let votes: Vec<Vote> = stored.iter().map(|(v, _)| v.clone()).collect();
    let earlier = stored.iter().find(|(v, _)| v.voter == vote.voter);
    // The same click delivered again (Slack retries, double clicks): answered as before.
    if earlier.is_some_and(|(_, earlier_dedupe)| *earlier_dedupe == dedupe) {
        let replay = CommandResult::Voted {
            proposal: Box::new(proposal),
            votes,
            replay: true,
        };
        return Ok((replay, vec![]));
    }
    let mut events = Vec::new();
    if let Some(proof) = &proof {
        let (proven, event) = prove(tx, &proposal, &actor, proof, vote.at).await?;
        events.push(event);
        if !proven {
            let refused = CommandResult::VoteRefused {
                proposal: Box::new(proposal),
                reason: VoteRefusal::StepUpSpent,
            };
            return Ok((refused, events));
        }
    }
    let expired = proposal
        .content
        .expires_at
        .is_some_and(|expiry| vote.at >= expiry);
    let refusal = if proposal.status != Status::Pending {
        Some(("proposal is no longer pending", VoteRefusal::NotPending))
    } else if expired {
        Some(("proposal has expired", VoteRefusal::Expired))
    } else {
        earlier.map(|(vote, _)| ("already voted", VoteRefusal::AlreadyVoted(vote.clone())))
    };
    if let Some((why, reason)) = refusal {
        events.push(vote_refused(&proposal, &actor, vote.ballot, why));
        let result = CommandResult::VoteRefused {
            proposal: Box::new(proposal),
            reason,
        };
        return Ok((result, events));
    }
    let (result, more) = record(tx, proposal, votes, vote, actor, dedupe).await?;
    events.extend(more);
    Ok((result, events))
}

/// Spends the proof's TOTP step, if it has one: answers whether the proof stands, with its
/// audit event (`step_up.passed`, or `step_up.failed` for a code used already).
async fn prove(
    tx: &mut Batch<'_>,
    proposal: &Proposal,
    actor: &Actor,
    proof: &StepUpProof,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(bool, AuditDraft), StoreError> {
    let spent = match proof.totp_step {
        Some(step) => !tx.tx.use_totp_step(&actor.id, step, at).await?,
        None => false,
    };
    let (kind, data) = if spent {
        let reason = crate::stepup::CODE_ALREADY_USED;
        let data = json!({"step_up": proof.kind, "reason": reason});
        (kinds::STEP_UP_FAILED, data)
    } else {
        (kinds::STEP_UP_PASSED, json!({"step_up": proof.kind}))
    };
    let event = AuditDraft::new(kind, Some(&proposal.id), actor.audit_name(), data);
    Ok((!spent, event))
}

/// Stores a vote that counts, and decides the proposal if it is a reject or the approval that
/// completes the quorum (otherwise its cards are refreshed to show the vote).
async fn record(
    tx: &mut Batch<'_>,
    proposal: Proposal,
    mut votes: Vec<Vote>,
    vote: Vote,
    actor: Actor,
    dedupe: String,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let id = proposal.id.clone();
    let (ballot, reason, at) = (vote.ballot, vote.reason.clone(), vote.at);
    tx.insert_vote(&id, &vote, &dedupe).await?;
    let announce = SlackTask::AnnounceVote {
        voter: vote.voter.clone(),
    };
    tx.slack_jobs.push(SlackJobRow::new(&id, &announce, at)?);
    let mut events = vec![AuditDraft::new(
        kinds::VOTED,
        Some(&id),
        actor.audit_name(),
        json!({"ballot": ballot, "eligible": vote.eligible, "reason": reason, "dedupe": dedupe}),
    )];
    votes.push(vote);
    let verdict = &proposal.content.verdict;
    let tally = tally(&verdict.quorum, &verdict.route, &votes);
    let decided = match ballot {
        Ballot::Reject => Some((Status::Rejected, reason)),
        Ballot::Approve if tally.shortfall.is_met() => {
            Some((Status::Approved, Some(quorum_reason(&votes, &tally.roles))))
        }
        Ballot::Approve => None,
    };
    let proposal = match decided {
        Some((status, reason)) => {
            let decision = Decision {
                by: actor,
                at,
                reason,
                execution_token: None,
                digest: None,
            };
            let (result, more) = transition(
                tx,
                proposal,
                status,
                decision,
                kinds::DECIDED,
                ballot.as_str(),
            )
            .await?;
            events.extend(more);
            match result {
                CommandResult::Updated(proposal) => proposal,
                // Cannot happen: the proposal was pending in this very transaction.
                other => {
                    return Err(StoreError::Other(format!("vote: unexpected {other:?}")));
                }
            }
        }
        None => {
            tx.slack_jobs
                .push(SlackJobRow::new(&id, &SlackTask::RefreshCards, at)?);
            Box::new(proposal)
        }
    };
    let result = CommandResult::Voted {
        proposal,
        votes,
        replay: false,
    };
    Ok((result, events))
}

/// The decision reason when approvals complete the quorum: who approved for which role.
fn quorum_reason(votes: &[Vote], roles: &[Option<String>]) -> String {
    let approvals: Vec<String> = votes
        .iter()
        .zip(roles)
        .filter(|(v, _)| v.ballot == Ballot::Approve)
        .map(|(v, role)| match role {
            Some(role) => format!("{} ({role})", v.voter),
            None => v.voter.clone(),
        })
        .collect();
    format!("quorum met: {}", approvals.join(", "))
}

fn vote_refused(proposal: &Proposal, actor: &Actor, ballot: Ballot, reason: &str) -> AuditDraft {
    AuditDraft::new(
        kinds::REQUEST_REFUSED,
        Some(&proposal.id),
        actor.audit_name(),
        json!({"request": ballot.as_str(), "reason": reason, "status": proposal.status}),
    )
}
