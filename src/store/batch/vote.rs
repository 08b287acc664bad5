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
use crate::store::{CommandResult, StoreError, VoteRefusal};

/// Runs [`crate::store::Command::Vote`]: `vote` is the vote as commanded (not yet checked or
/// stored), `dedupe` identifies the click or submission it came from.
pub(super) async fn cast(
    tx: &mut Batch<'_>,
    id: ProposalId,
    vote: Vote,
    dedupe: String,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let Vote {
        voter,
        eligible,
        ballot,
        reason,
        at,
    } = vote;
    let Some(proposal) = tx.load_proposal(&id).await? else {
        return Ok((CommandResult::NotFound, vec![]));
    };
    let actor = Actor {
        kind: ActorKind::Reviewer,
        id: voter.clone(),
    };
    let stored = tx.votes(&id).await?;
    let mut votes: Vec<Vote> = stored.iter().map(|(v, _)| v.clone()).collect();
    let earlier = stored.iter().find(|(v, _)| v.voter == voter);
    // The same click delivered again (Slack retries, double clicks): answered as before.
    if earlier.is_some_and(|(_, earlier_dedupe)| *earlier_dedupe == dedupe) {
        let replay = CommandResult::Voted {
            proposal: Box::new(proposal),
            votes,
            replay: true,
        };
        return Ok((replay, vec![]));
    }
    let expired = proposal
        .content
        .expires_at
        .is_some_and(|expiry| at >= expiry);
    let refusal = if proposal.status != Status::Pending {
        Some(("proposal is no longer pending", VoteRefusal::NotPending))
    } else if expired {
        Some(("proposal has expired", VoteRefusal::Expired))
    } else {
        earlier.map(|(vote, _)| ("already voted", VoteRefusal::AlreadyVoted(vote.clone())))
    };
    if let Some((why, reason)) = refusal {
        let event = vote_refused(&proposal, &actor, ballot, why);
        let result = CommandResult::VoteRefused {
            proposal: Box::new(proposal),
            reason,
        };
        return Ok((result, vec![event]));
    }
    let verdict = &proposal.content.verdict;
    let vote = Vote {
        voter: voter.clone(),
        eligible,
        ballot,
        reason: reason.clone(),
        at,
    };
    tx.insert_vote(&id, &vote, &dedupe).await?;
    let announce = SlackTask::AnnounceVote {
        voter: voter.clone(),
    };
    tx.slack_jobs.push(SlackJobRow::new(&id, &announce, at)?);
    let mut events = vec![AuditDraft::new(
        kinds::VOTED,
        Some(&id),
        actor.audit_name(),
        json!({"ballot": ballot, "eligible": vote.eligible, "reason": reason, "dedupe": dedupe}),
    )];
    votes.push(vote);
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
