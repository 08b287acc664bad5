//! Who may decide a proposal, in the core: a vote counts only from an approver of a routed
//! role (named in the role, in its user group, or granted approval by an escalation rung), an
//! approval never from the agent's owner nor from the person the agent acts for (separation
//! of duties), and an approval of a proposal that asks for step-up only once the reviewer
//! passed it. Every refused click is audited here. Any way in (Slack's buttons, a modal, a
//! future API or MCP tool) asks the same questions and gets the same typed answers; the
//! adapter only words them.

use async_trait::async_trait;

use super::{Engine, EngineError, Voted};
use crate::domain::{AgentId, Ballot, Proposal, StepUp, Vote};
use crate::manifest::Role;
use crate::registry::Registry;
use crate::store::VoteRefusal;

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
    /// `stepped_up`: the reviewer has just passed the step-up the policy asks for.
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
        stepped_up: bool,
    ) -> Result<Result<Cast, ClickRefusal>, EngineError> {
        let mut admitted = self
            .eligibility(people, registry, proposal, user, ballot)
            .await;
        // Defence in depth: an approval of a step-up proposal only ever comes through the form.
        if admitted.is_ok()
            && ballot == Ballot::Approve
            && !stepped_up
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
        let voted = self
            .vote(
                proposal.id.clone(),
                user.to_owned(),
                eligible,
                ballot,
                reason,
                dedupe,
            )
            .await?;
        Ok(match voted {
            Voted::Recorded { replay: true, .. } => Ok(Cast::Replay),
            Voted::Recorded {
                proposal, votes, ..
            } => Ok(Cast::Recorded { proposal, votes }),
            Voted::Refused { proposal, reason } => Err(match reason {
                VoteRefusal::NotPending => ClickRefusal::Decided(proposal),
                VoteRefusal::Expired => ClickRefusal::Expired(proposal),
                VoteRefusal::AlreadyVoted(earlier) => ClickRefusal::AlreadyVoted(earlier),
            }),
            Voted::NotFound => Err(ClickRefusal::NotFound),
        })
    }

    async fn eligibility(
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
    use std::path::Path;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::domain::request::ProposalRequest;
    use crate::domain::{ProposalId, Quorum, Status, Verdict, VerdictOutcome};
    use crate::store::{Command, Store};

    /// The workspace as the tests need it: the manifests' approvers, and one email.
    struct Workspace {
        /// `jane@example.com`'s user, or the lookup failing.
        jane: Result<Option<String>, String>,
        /// Approves for every role besides the manifests' approvers.
        also_approves: Option<&'static str>,
    }

    #[async_trait]
    impl People for Workspace {
        async fn approves_for(&self, role: &Role, user: &str) -> bool {
            self.also_approves == Some(user) || role.approvers.users.iter().any(|u| u == user)
        }
        async fn user_by_email(&self, email: &str) -> Result<Option<String>, String> {
            assert_eq!(email, "jane@example.com");
            self.jane.clone()
        }
    }

    struct Core {
        engine: Engine,
        store: Arc<dyn Store>,
        registry: Registry,
        _core: super::super::testing::TestCore,
    }

    async fn core() -> Core {
        let core = super::super::testing::core().await;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let registry = Registry::load(&root.join("manifests"), &root.join("policies")).unwrap();
        Core {
            engine: core.engine.clone(),
            store: core.store.clone(),
            registry,
            _core: core,
        }
    }

    impl Core {
        /// A pending discount of revops-crm (owned by U0REVOPS01) for jane, routed to finance
        /// (U0FIN001, U0FIN002), one approval, with `step_up`.
        async fn pending(&self, step_up: StepUp) -> Proposal {
            let request = ProposalRequest::from_json(json!({
                "action": "crm.opportunity.update",
                "summary": "Apply 15% discount",
                "params": {"discount_percent": 15},
                "requested_by": "jane@example.com",
            }))
            .unwrap()
            .validate()
            .unwrap();
            let verdict = Verdict {
                outcome: VerdictOutcome::NeedsReview,
                rules: vec!["large-discount".into()],
                reasons: Vec::new(),
                route: vec!["finance".into()],
                quorum: Quorum {
                    approvals: 1,
                    each_role: false,
                    per_role: Default::default(),
                },
                sla: None,
                step_up,
                escalation: Vec::new(),
                on_timeout: None,
                reject_reasons: Vec::new(),
            };
            let now = self.engine.clock().now();
            let proposal = Proposal {
                id: ProposalId::generate(),
                agent: AgentId::parse("revops-crm").unwrap(),
                status: Status::Pending,
                content: request.into_content(verdict, None),
                decision: None,
                outcome: None,
                created_at: now,
                updated_at: now,
            };
            let submit = Command::Submit {
                proposal: Box::new(proposal.clone()),
                idempotency: None,
                card_channels: Default::default(),
            };
            self.engine.apply(submit).await.unwrap();
            proposal
        }

        async fn approve(
            &self,
            people: &Workspace,
            proposal: &Proposal,
            user: &str,
            dedupe: &str,
        ) -> Result<Cast, ClickRefusal> {
            (self.engine)
                .review(
                    people,
                    &self.registry,
                    proposal,
                    user,
                    Ballot::Approve,
                    None,
                    dedupe.into(),
                    false,
                )
                .await
                .unwrap()
        }

        /// The reasons of the refused clicks audited on `proposal`.
        async fn refusals(&self, proposal: &Proposal) -> Vec<String> {
            let filter = crate::audit::AuditFilter {
                since: None,
                proposal_id: Some(proposal.id.to_string()),
            };
            let events = self.store.audit_page(&filter, 0, 100).await.unwrap();
            events
                .into_iter()
                .filter(|e| e.kind == crate::audit::kinds::REQUEST_REFUSED)
                .map(|e| {
                    let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                    data["reason"].as_str().unwrap().to_owned()
                })
                .collect()
        }
    }

    const NOBODY_SPECIAL: Workspace = Workspace {
        jane: Ok(None),
        also_approves: None,
    };

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
            core.refusals(&proposal).await,
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
                false,
            )
            .await
            .unwrap();
        assert!(
            matches!(rejected, Ok(Cast::Recorded { proposal, .. }) if proposal.status == Status::Rejected)
        );
        let reasons = core.refusals(&proposal).await;
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons
                .iter()
                .all(|r| r.starts_with("separation of duties")),
            "{reasons:?}"
        );
    }

    #[tokio::test]
    async fn a_step_up_approval_counts_only_through_the_step_up() {
        let core = core().await;
        let proposal = core.pending(StepUp::Confirm).await;
        let direct = core
            .approve(&NOBODY_SPECIAL, &proposal, "U0FIN001", "c1")
            .await;
        assert_eq!(direct.unwrap_err(), ClickRefusal::StepUpRequired);
        // Admitted to the form all the same: they may approve once they pass it.
        let admitted = (core.engine)
            .admit(
                &NOBODY_SPECIAL,
                &core.registry,
                &proposal,
                "U0FIN001",
                Ballot::Approve,
            )
            .await
            .unwrap();
        assert_eq!(admitted, Ok(vec!["finance".to_owned()]));
        let stepped_up = (core.engine)
            .review(
                &NOBODY_SPECIAL,
                &core.registry,
                &proposal,
                "U0FIN001",
                Ballot::Approve,
                None,
                "view:1".into(),
                true,
            )
            .await
            .unwrap();
        assert!(matches!(stepped_up, Ok(Cast::Recorded { .. })));
    }
}
