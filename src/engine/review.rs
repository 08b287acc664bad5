//! Who may decide a proposal, in the core: a vote counts only from an approver of a routed
//! role (named in the role, in its user group, or granted approval by an escalation rung), an
//! approval never from the agent's owner nor from the person the agent acts for (separation
//! of duties), and an approval of a proposal that asks for step-up only once the reviewer
//! passed it. Every refused click is audited here. Any way in (Slack's buttons, a modal, a
//! future API or MCP tool) asks the same questions and gets the same typed answers; the
//! adapter only words them.

use async_trait::async_trait;

use super::{Engine, EngineError};
use crate::domain::{AgentId, Ballot, Proposal, ProposalId, StepUp, Vote};
use crate::manifest::Role;
use crate::registry::Registry;
use crate::store::{Command, CommandResult, StepUpProof, VoteRefusal};

/// What the core must ask the chat workspace about people (the Slack directory answers,
/// from its caches): who approves for a role, and who an email address is.
#[async_trait]
pub trait People: Send + Sync {
    /// Whether `user` approves for `role` (named in it, or a member of its user group).
    async fn approves_for(&self, role: &Role, user: &str) -> bool;
    /// The workspace's user with this email, if any; `Err` when the workspace cannot answer.
    async fn user_by_email(&self, email: &str) -> Result<Option<String>, String>;
}

/// Why a reviewer's ballot does not count. Audited when the core refuses it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClickRefusal {
    /// Not an approver of any routed role (listed: the route).
    NotAnApprover {
        route: Vec<String>,
    },
    /// The clicker owns the agent (separation of duties).
    OwnsTheAgent {
        agent: AgentId,
    },
    /// The agent acts for the clicker (separation of duties).
    ActsForYou,
    /// The workspace could not say whether the agent acts for the clicker: refused rather
    /// than risk it.
    RequesterUnknown,
    /// An approval of a proposal that asks for step-up, not through the step-up form.
    StepUpRequired,
    /// Already decided (or cancelled): the proposal as it now stands.
    Decided(Box<Proposal>),
    Expired(Box<Proposal>),
    /// One vote per person: theirs.
    AlreadyVoted(Vote),
    NotFound,
}

impl ClickRefusal {
    /// The reason as the audit trail records it.
    pub fn audit_reason(&self) -> String {
        match self {
            Self::NotAnApprover { route } => {
                format!("not an approver for {}", route.join(" or "))
            }
            Self::OwnsTheAgent { agent } => {
                format!("separation of duties: owns the agent {agent}")
            }
            Self::ActsForYou => "separation of duties: the agent acts for them".into(),
            Self::RequesterUnknown => {
                "separation of duties: the requester could not be looked up".into()
            }
            Self::StepUpRequired => "step-up required".into(),
            Self::Decided(proposal) => format!("already {}", proposal.status.as_str()),
            Self::Expired(_) => "expired".into(),
            Self::AlreadyVoted(_) => "already voted".into(),
            Self::NotFound => "no such proposal".into(),
        }
    }
}

/// A ballot the core admitted: who casts it for which routed roles.
pub(super) struct Admitted<'a> {
    pub proposal: &'a ProposalId,
    pub user: &'a str,
    pub eligible: Vec<String>,
    pub ballot: Ballot,
    pub reason: Option<String>,
    /// Identifies the click or form submission (a repeat is a replay).
    pub dedupe: String,
}

/// What recording an admitted ballot gave.
pub(super) enum Recorded {
    Cast(Cast),
    Refused(ClickRefusal),
    /// The TOTP code proving it was spent already (another form, racing).
    CodeSpent,
}

/// A ballot that counted.
#[derive(Debug)]
pub enum Cast {
    /// Recorded: the proposal as it now stands and every vote on it.
    Recorded {
        proposal: Box<Proposal>,
        votes: Vec<Vote>,
    },
    /// The same click again: already recorded, nothing to say.
    Replay,
}

impl Engine {
    /// Whether `user` may cast `ballot` on `proposal` at all, whatever its state: answers the
    /// routed roles they may cast it for. A refusal is audited.
    pub async fn admit(
        &self,
        people: &dyn People,
        registry: &Registry,
        proposal: &Proposal,
        user: &str,
        ballot: Ballot,
    ) -> Result<Result<Vec<String>, ClickRefusal>, EngineError> {
        let admitted = self
            .eligibility(people, registry, proposal, user, ballot)
            .await;
        if let Err(refusal) = &admitted {
            self.refuse_click(&proposal.id, user, ballot, &refusal.audit_reason())
                .await?;
        }
        Ok(admitted)
    }

    /// Checks the voter and records the ballot; the writer checks the proposal's state again.
    /// An approval of a proposal that asks for step-up is refused here: it only ever counts
    /// through [`Engine::approve_stepped_up`].
    #[allow(clippy::too_many_arguments)] // one ballot's facts, each needed; no natural group
    pub async fn review(
        &self,
        people: &dyn People,
        registry: &Registry,
        proposal: &Proposal,
        user: &str,
        ballot: Ballot,
        reason: Option<String>,
        dedupe: String,
    ) -> Result<Result<Cast, ClickRefusal>, EngineError> {
        let mut admitted = self
            .eligibility(people, registry, proposal, user, ballot)
            .await;
        if admitted.is_ok()
            && ballot == Ballot::Approve
            && proposal.content.verdict.step_up != StepUp::None
        {
            admitted = Err(ClickRefusal::StepUpRequired);
        }
        let eligible = match admitted {
            Ok(eligible) => eligible,
            Err(refusal) => {
                self.refuse_click(&proposal.id, user, ballot, &refusal.audit_reason())
                    .await?;
                return Ok(Err(refusal));
            }
        };
        let ballot = Admitted {
            proposal: &proposal.id,
            user,
            eligible,
            ballot,
            reason,
            dedupe,
        };
        Ok(match self.record(ballot, None).await? {
            Recorded::Cast(cast) => Ok(cast),
            Recorded::Refused(refusal) => Err(refusal),
            // Cannot happen without a proof; an approval without one needs it.
            Recorded::CodeSpent => Err(ClickRefusal::StepUpRequired),
        })
    }

    /// Records an admitted ballot, with the step-up it passed (if any), in one command.
    pub(super) async fn record(
        &self,
        ballot: Admitted<'_>,
        proof: Option<StepUpProof>,
    ) -> Result<Recorded, EngineError> {
        let command = Command::Vote {
            id: ballot.proposal.clone(),
            voter: ballot.user.to_owned(),
            eligible: ballot.eligible,
            ballot: ballot.ballot,
            reason: ballot.reason,
            dedupe: ballot.dedupe,
            proof,
        };
        Ok(match self.apply(command).await? {
            CommandResult::Voted { replay: true, .. } => Recorded::Cast(Cast::Replay),
            CommandResult::Voted {
                proposal, votes, ..
            } => {
                tracing::info!(
                    proposal_id = %proposal.id,
                    voter = ballot.user,
                    ballot = ballot.ballot.as_str(),
                    status = proposal.status.as_str(),
                    votes = votes.len(),
                    "vote recorded"
                );
                Recorded::Cast(Cast::Recorded { proposal, votes })
            }
            CommandResult::VoteRefused { proposal, reason } => match reason {
                VoteRefusal::NotPending => Recorded::Refused(ClickRefusal::Decided(proposal)),
                VoteRefusal::Expired => Recorded::Refused(ClickRefusal::Expired(proposal)),
                VoteRefusal::AlreadyVoted(earlier) => {
                    Recorded::Refused(ClickRefusal::AlreadyVoted(earlier))
                }
                VoteRefusal::StepUpSpent => Recorded::CodeSpent,
            },
            _ => Recorded::Refused(ClickRefusal::NotFound),
        })
    }

    pub(super) async fn eligibility(
        &self,
        people: &dyn People,
        registry: &Registry,
        proposal: &Proposal,
        user: &str,
        ballot: Ballot,
    ) -> Result<Vec<String>, ClickRefusal> {
        let eligible = self.eligible_roles(people, registry, proposal, user).await;
        if eligible.is_empty() {
            return Err(ClickRefusal::NotAnApprover {
                route: proposal.content.verdict.route.clone(),
            });
        }
        if ballot == Ballot::Approve {
            separation_of_duties(people, registry, proposal, user).await?;
        }
        Ok(eligible)
    }

    /// The routed roles `user` approves for, in route order.
    async fn eligible_roles(
        &self,
        people: &dyn People,
        registry: &Registry,
        proposal: &Proposal,
        user: &str,
    ) -> Vec<String> {
        let mut eligible = Vec::new();
        for name in &proposal.content.verdict.route {
            if let Some(role) = registry.roles.get(name)
                && people.approves_for(role, user).await
            {
                eligible.push(name.clone());
            }
        }
        if eligible.is_empty() && self.escalation_granted(proposal, user).await {
            // Brought in by an escalation rung with `grants_approval`: may approve for any
            // routed role (still one vote, counted where it is needed).
            eligible = proposal.content.verdict.route.clone();
        }
        eligible
    }

    /// Was `user` notified by an escalation rung of this proposal that grants approval?
    /// Recorded by key when the rung fired. A store that cannot answer grants nothing.
    async fn escalation_granted(&self, proposal: &Proposal, user: &str) -> bool {
        match self.store.approval_granted(&proposal.id, user).await {
            Ok(granted) => granted,
            Err(error) => {
                tracing::warn!(%error, proposal_id = %proposal.id, "cannot read approval grants");
                false
            }
        }
    }
}

/// The agent's owner and the person the agent acts for may not approve it. `requested_by` is
/// the agent's word: a user id is compared as is, an email is looked up in the workspace (if
/// it cannot answer, the approval is refused rather than risk it).
async fn separation_of_duties(
    people: &dyn People,
    registry: &Registry,
    proposal: &Proposal,
    user: &str,
) -> Result<(), ClickRefusal> {
    let owner = registry
        .agents
        .get(proposal.agent.as_str())
        .map(|a| a.owner.as_str());
    if owner == Some(user) {
        return Err(ClickRefusal::OwnsTheAgent {
            agent: proposal.agent.clone(),
        });
    }
    let Some(requester) = proposal.content.requested_by.as_deref().map(str::trim) else {
        return Ok(());
    };
    if requester == user {
        return Err(ClickRefusal::ActsForYou);
    }
    if requester.contains('@') {
        match people.user_by_email(requester).await {
            Ok(Some(id)) if id == user => return Err(ClickRefusal::ActsForYou),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot look up requested_by for separation of duties");
                return Err(ClickRefusal::RequesterUnknown);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;
    use crate::engine::testing::{NOBODY_SPECIAL, Workspace, core};

    #[tokio::test]
    async fn only_approvers_of_a_routed_role_vote_and_each_refusal_is_audited() {
        let core = core().await;
        let proposal = core.pending(StepUp::None).await;
        let refused = core
            .approve(&NOBODY_SPECIAL, &proposal, "U0SEC001", "c1")
            .await;
        assert_eq!(
            refused.unwrap_err(),
            ClickRefusal::NotAnApprover {
                route: vec!["finance".into()]
            }
        );
        let cast = core
            .approve(&NOBODY_SPECIAL, &proposal, "U0FIN001", "c2")
            .await
            .unwrap();
        let Cast::Recorded {
            proposal: decided,
            votes,
        } = cast
        else {
            panic!("not recorded");
        };
        assert_eq!((decided.status, votes.len()), (Status::Approved, 1));
        // The same click again is a replay; another click on a decided proposal is refused.
        assert!(matches!(
            core.approve(&NOBODY_SPECIAL, &proposal, "U0FIN001", "c2")
                .await,
            Ok(Cast::Replay)
        ));
        let late = core
            .approve(&NOBODY_SPECIAL, &proposal, "U0FIN002", "c3")
            .await;
        assert!(matches!(late, Err(ClickRefusal::Decided(p)) if p.status == Status::Approved));
        assert_eq!(
            core.reasons(&proposal.id, crate::audit::kinds::REQUEST_REFUSED)
                .await,
            [
                "not an approver for finance",
                "proposal is no longer pending"
            ]
        );
    }

    #[tokio::test]
    async fn neither_the_owner_nor_the_person_it_acts_for_approves() {
        let core = core().await;
        let proposal = core.pending(StepUp::None).await;
        // The agent's owner made an approver of every role: only separation of duties stops them.
        let owner_approves = Workspace {
            jane: Ok(None),
            also_approves: Some("U0REVOPS01"),
        };
        let owner = core
            .approve(&owner_approves, &proposal, "U0REVOPS01", "c1")
            .await;
        assert!(matches!(owner, Err(ClickRefusal::OwnsTheAgent { .. })));
        let jane_is_fin1 = Workspace {
            jane: Ok(Some("U0FIN001".into())),
            also_approves: None,
        };
        let jane = core
            .approve(&jane_is_fin1, &proposal, "U0FIN001", "c2")
            .await;
        assert_eq!(jane.unwrap_err(), ClickRefusal::ActsForYou);
        let unknown = Workspace {
            jane: Err("ratelimited".into()),
            also_approves: None,
        };
        let unsure = core.approve(&unknown, &proposal, "U0FIN002", "c3").await;
        assert_eq!(unsure.unwrap_err(), ClickRefusal::RequesterUnknown);
        // A rejection is no conflict of duties.
        let rejected = (core.engine)
            .review(
                &jane_is_fin1,
                &core.registry,
                &proposal,
                "U0FIN001",
                Ballot::Reject,
                Some("no".into()),
                "c4".into(),
            )
            .await
            .unwrap();
        assert!(
            matches!(rejected, Ok(Cast::Recorded { proposal, .. }) if proposal.status == Status::Rejected)
        );
        let reasons = core
            .reasons(&proposal.id, crate::audit::kinds::REQUEST_REFUSED)
            .await;
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons
                .iter()
                .all(|r| r.starts_with("separation of duties")),
            "{reasons:?}"
        );
    }
}
