//! Submitting a proposal: the operator's override narrows the agent, policy decides the
//! verdict (within the agent's auto-approval budgets), and the proposal is stored with it —
//! decided at once by policy, or pending with its cards queued to the routed roles' channels.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Engine, EngineError, Submitted, controls};
use crate::audit::{AuditDraft, kinds};
use crate::domain::request::ValidRequest;
use crate::domain::{
    ActionDigest, Actor, ActorKind, Control, Decision, Proposal, ProposalId, Status, VerdictOutcome,
};
use crate::manifest::{Agent, Refusal};
use crate::policy::Evaluation;
use crate::registry::Registry;
use crate::store::{Command, CommandResult, IdempotencyKey};

impl Engine {
    /// Checks the agent may propose the action, evaluates policy and stores the proposal with
    /// its verdict. An auto-approved or denied proposal is decided at once, by policy.
    ///
    /// `registry` is the snapshot the agent was authenticated against: the agent's mode and
    /// catalog and the policies come from one consistent set, even across a reload.
    #[tracing::instrument(skip_all, fields(agent = %agent.id, action = %request.action))]
    pub async fn submit(
        &self,
        registry: &Registry,
        agent: &Agent,
        request: ValidRequest,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Submitted, EngineError> {
        let now = self.clock.now();
        // An operator's override narrows the manifest's mode for this proposal.
        let control = self
            .controls
            .applying(agent.id.as_str(), request.action.as_str());
        let narrowed;
        let agent = match &control {
            Some(control) => {
                narrowed = controls::narrowed(agent, control);
                &narrowed
            }
            None => agent,
        };
        let evaluation = match self.evaluate(registry, agent, &request).await? {
            Ok(evaluation) => evaluation,
            Err(refusal) => return self.refuse(agent, &request, refusal, control).await,
        };
        let proposal = new_proposal(agent, request, evaluation, now);
        let card_channels = card_channels(registry, &proposal);
        let result = self
            .apply(Command::Submit {
                proposal: Box::new(proposal),
                idempotency,
                card_channels,
            })
            .await?;
        Ok(match result {
            CommandResult::Submitted(proposal) => {
                tracing::info!(proposal_id = %proposal.id, status = proposal.status.as_str(), "proposal submitted");
                Submitted::Created(proposal)
            }
            CommandResult::Replayed { response } => Submitted::Replayed(response),
            _ => Submitted::KeyReused,
        })
    }

    /// Policy's verdict on the request. An auto-approval must also fit the agent's budgets;
    /// beyond them a person decides (the verdict is taken again with the overrun as reason).
    async fn evaluate(
        &self,
        registry: &Registry,
        agent: &Agent,
        request: &ValidRequest,
    ) -> Result<Result<Evaluation, Refusal>, EngineError> {
        let now = self.clock.now();
        let verdict = registry.policies.verdict_for(agent, request, now, None);
        let Ok(evaluation) = &verdict else {
            return Ok(verdict);
        };
        if evaluation.verdict.outcome != VerdictOutcome::AutoApprove || agent.budgets.is_empty() {
            return Ok(verdict);
        }
        let (day, month) = crate::budgets::periods(now);
        let usage = self
            .store
            .auto_approved_usage(agent.id.as_str(), day, month)
            .await?;
        let amount = request.params.get("amount").and_then(Value::as_f64);
        Ok(
            match crate::budgets::overrun(&agent.budgets, amount, &usage) {
                Some(reason) => registry
                    .policies
                    .verdict_for(agent, request, now, Some(reason)),
                None => verdict,
            },
        )
    }

    /// A request the agent may not make: audited although it names no proposal (it is exactly
    /// what an operator wants to see), and answered.
    async fn refuse(
        &self,
        agent: &Agent,
        request: &ValidRequest,
        refusal: Refusal,
        control: Option<Control>,
    ) -> Result<Submitted, EngineError> {
        let event = AuditDraft::new(
            kinds::REQUEST_REFUSED,
            None,
            Actor::agent(&agent.id).audit_name(),
            json!({"request": "submit", "action": request.action, "reason": refusal.reason()}),
        );
        self.apply(Command::Audit(event)).await?;
        tracing::info!(reason = refusal.reason(), "proposal refused");
        Ok(match refusal {
            Refusal::Paused => Submitted::AgentPaused(control),
            _ => Submitted::NotPermitted(format!(
                "{} for agent {}: {}",
                request.action,
                agent.id,
                refusal.reason()
            )),
        })
    }
}

/// The proposal as policy left it: pending for review, or decided by the rules that took the
/// decision (an approval with its execution token). It expires at the earlier of the agent's
/// `expires_in` and the policy's.
fn new_proposal(
    agent: &Agent,
    request: ValidRequest,
    evaluation: Evaluation,
    now: chrono::DateTime<chrono::Utc>,
) -> Proposal {
    let verdict = evaluation.verdict;
    let expires_in = [request.expires_in, evaluation.expires_in]
        .into_iter()
        .flatten()
        .min();
    let expires_at = expires_in
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| now + d);
    let status = match verdict.outcome {
        VerdictOutcome::NeedsReview => Status::Pending,
        VerdictOutcome::AutoApprove => Status::Approved,
        VerdictOutcome::Deny => Status::Rejected,
    };
    let reason = Some(verdict.reasons.join("; "));
    let content = request.into_content(verdict, expires_at);
    let approved = status == Status::Approved;
    let decision = (status != Status::Pending).then(|| Decision {
        by: Actor {
            kind: ActorKind::Policy,
            id: evaluation.decided_by.join(","),
        },
        at: now,
        reason,
        execution_token: approved.then(crate::domain::callback::new_execution_token),
        digest: approved.then(|| ActionDigest::of(&content)),
    });
    let mut proposal = Proposal {
        id: ProposalId::generate(),
        agent: agent.id.clone(),
        status,
        content,
        decision,
        outcome: None,
        created_at: now,
        updated_at: now,
    };
    if proposal.content.callback_url.is_none() {
        proposal.content.callback_url = agent.callback_url.clone();
    }
    proposal
}

/// Each routed role's channel, where its card goes (in submission order, per channel).
fn card_channels(registry: &Registry, proposal: &Proposal) -> BTreeMap<String, String> {
    (proposal.content.verdict.route.iter())
        .filter_map(|role| {
            let channel = &registry.roles.get(role)?.channel;
            Some((role.clone(), channel.clone()))
        })
        .collect()
}
