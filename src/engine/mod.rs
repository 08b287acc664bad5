//! Use cases: submit, read, cancel, decide, record an outcome. The engine speaks domain types
//! only; HTTP and Slack adapters call it.

pub mod audit_log;
pub mod breaker;
mod controls;
mod deliveries;
mod queries;
mod review;
mod step_up;
mod stepped_approval;
mod submission;
#[cfg(test)]
mod testing;
mod timers;
mod waiters;
mod writer;

pub use controls::Controls;
pub use review::{Cast, ClickRefusal, People};
pub use step_up::{Enrollment, StepUpRefusal, Unenrollment};
pub use stepped_approval::{SteppedApproval, SteppedRefusal};
pub use waiters::{DecisionWaiters, Waiter};

use std::sync::Arc;

use serde_json::{Value, json};

pub use writer::Writer;

use crate::audit::{AuditDraft, kinds};
use crate::clock::Clock;
use crate::cluster::{Wake, WakeTarget, Wakeups};
use crate::domain::{
    Actor, Ballot, Decision, ExecutionOutcome, ExecutionResult, Proposal, ProposalId, Status,
};
use crate::manifest::Agent;
use crate::store::{Command, CommandResult, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the writer has stopped (shutting down)")]
    WriterStopped,
}

/// What submitting gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Created(Box<Proposal>),
    /// Same idempotency key, same body: the original response body.
    Replayed(String),
    /// Same idempotency key, different body.
    KeyReused,
    /// The agent may not propose this action (not in its catalog, or read-only).
    NotPermitted(String),
    /// The agent is paused: it may propose nothing. By its manifest (`None`), or by the
    /// override in force: who set it (`set_by`) and why.
    AgentPaused(Option<crate::domain::Control>),
}

/// What an agent presents with an outcome: the approval's execution token, and the digest of
/// what it executed.
#[derive(Debug, Clone)]
pub struct OutcomeProof {
    pub execution_token: String,
    pub digest: String,
}

/// What a transition (cancel, decide, outcome) gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Done(Box<Proposal>),
    NotFound,
    WrongState(Status),
    /// An outcome presented a token that is not the approval's.
    WrongToken,
    /// An outcome named another digest than the approved one: this one.
    DigestMismatch(crate::domain::ActionDigest),
}

impl From<CommandResult> for Transition {
    fn from(result: CommandResult) -> Self {
        match result {
            CommandResult::Updated(p) => Transition::Done(p),
            CommandResult::WrongState(s) => Transition::WrongState(s),
            CommandResult::WrongToken => Transition::WrongToken,
            CommandResult::DigestMismatch(approved) => Transition::DigestMismatch(approved),
            _ => Transition::NotFound,
        }
    }
}

/// The approval engine.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    writer: Writer,
    clock: Arc<dyn Clock>,
    /// Rung after a change that left Slack work in the outbox, so the worker starts at once
    /// instead of at its next poll.
    slack_work: Arc<tokio::sync::Notify>,
    /// Rung after a decision: a callback is owed.
    callback_work: Arc<tokio::sync::Notify>,
    /// Long-polls waiting for decisions.
    waiters: Arc<DecisionWaiters>,
    /// Operators' overrides of agents' modes.
    controls: Arc<Controls>,
    /// Tells other replicas about decisions and queued Slack work (a no-op for one process).
    wakeups: Wakeups,
}

impl Engine {
    /// Starts the engine's writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let writer = Writer::spawn(store.clone(), clock.clone());
        Self {
            store,
            writer,
            clock,
            slack_work: Arc::default(),
            callback_work: Arc::default(),
            waiters: Arc::default(),
            controls: Arc::default(),
            wakeups: Wakeups::default(),
        }
    }

    /// Shares wake-ups with other replicas (call before cloning the engine; run the wake-ups
    /// with [`Wakeups::run`] and this engine as their target).
    pub fn with_wakeups(mut self, wakeups: Wakeups) -> Self {
        self.wakeups = wakeups;
        self
    }

    /// Whether other replicas' decisions may currently go unannounced (long-polls then poll).
    pub fn missing_peer_wakeups(&self) -> bool {
        self.wakeups.missing_peers()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Notified whenever a decision queued a callback (see the callback worker).
    pub fn callback_work(&self) -> Arc<tokio::sync::Notify> {
        self.callback_work.clone()
    }

    /// The overrides in force (see [`Engine::refresh_controls`]).
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// Reloads the overrides from the database (at start, and periodically for other
    /// replicas' changes).
    pub async fn refresh_controls(&self) -> Result<(), EngineError> {
        let all = self.store.controls().await?;
        self.controls.replace(all);
        Ok(())
    }

    /// Narrows an agent (or one action): audited, in force for the next request, and announced
    /// in the role channels (through the outbox, in the same transaction). With
    /// `reject_pending`, its pending proposals that the override covers are rejected in that
    /// transaction too, decided by `by` with the override's reason. Answers those rejected.
    pub async fn narrow(
        &self,
        control: crate::domain::Control,
        reject_pending: bool,
        by: Actor,
    ) -> Result<Vec<ProposalId>, EngineError> {
        let command = Command::SetControl {
            control,
            reject_pending,
            by,
        };
        let rejected = match self.apply(command).await? {
            CommandResult::Narrowed(rejected) => rejected,
            other => {
                return Err(EngineError::Store(StoreError::Other(format!(
                    "narrow: unexpected {other:?}"
                ))));
            }
        };
        self.refresh_controls().await?;
        Ok(rejected)
    }

    /// Clears an override (announced in the role channels, through the outbox); false if there
    /// was none.
    pub async fn clear_control(
        &self,
        agent: &str,
        action: Option<&str>,
        by: String,
        reason: Option<String>,
    ) -> Result<bool, EngineError> {
        let command = Command::ClearControl {
            agent: agent.to_owned(),
            action: action.map(str::to_owned),
            by,
            reason,
        };
        let cleared = matches!(self.apply(command).await?, CommandResult::Control(true));
        self.refresh_controls().await?;
        Ok(cleared)
    }

    /// Long-polls park here until their proposal is decided.
    pub fn waiters(&self) -> &DecisionWaiters {
        &self.waiters
    }

    /// Wakes whatever waits on a decision of `proposal`.
    fn decided(&self, proposal: &Proposal) {
        if proposal.status != Status::Pending {
            self.announce_decision(&proposal.id);
        }
    }

    /// Ends this replica's long-polls on `id`, starts the callback worker, and tells the other
    /// replicas to do the same.
    fn announce_decision(&self, id: &ProposalId) {
        self.waiters.decided(id);
        self.callback_work.notify_one();
        self.wakeups.publish(Wake::Decided(id.clone()));
    }

    /// Starts the Slack worker here and on the other replicas.
    fn announce_slack_work(&self) {
        self.slack_work.notify_one();
        self.wakeups.publish(Wake::SlackWork);
    }

    /// Notified whenever a change queued Slack work (see the Slack worker).
    pub fn slack_work(&self) -> Arc<tokio::sync::Notify> {
        self.slack_work.clone()
    }

    /// Applies a command through the writer, waking the Slack worker when it changed anything.
    async fn apply(&self, command: Command) -> Result<CommandResult, EngineError> {
        let result = self.writer.apply(command).await?;
        match &result {
            CommandResult::Submitted(proposal)
            | CommandResult::Updated(proposal)
            | CommandResult::Voted { proposal, .. } => {
                self.announce_slack_work();
                self.decided(proposal);
            }
            CommandResult::Narrowed(rejected) => {
                self.announce_slack_work();
                rejected.iter().for_each(|id| self.announce_decision(id));
            }
            CommandResult::Control(true)
            | CommandResult::StepUp {
                locked_until: Some(_),
                ..
            } => self.announce_slack_work(),
            _ => {}
        }
        Ok(result)
    }

    /// The proposal `id` if `agent` owns it. Asking for another agent's proposal is audited and
    /// answered as if it did not exist.
    #[tracing::instrument(skip_all, fields(agent = %agent.id, proposal_id = %id))]
    pub async fn get(
        &self,
        agent: &Agent,
        id: &ProposalId,
    ) -> Result<Option<Proposal>, EngineError> {
        match self.store.proposal(id).await? {
            Some(proposal) if proposal.agent == agent.id => Ok(Some(proposal)),
            Some(proposal) => {
                let refusal = AuditDraft::new(
                    kinds::REQUEST_REFUSED,
                    Some(&proposal.id),
                    Actor::agent(&agent.id).audit_name(),
                    json!({"request": "read", "reason": "proposal belongs to another agent"}),
                );
                self.apply(Command::Audit(refusal)).await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The agent withdraws its pending proposal.
    #[tracing::instrument(skip_all, fields(agent = %agent.id, proposal_id = %id))]
    pub async fn cancel(
        &self,
        agent: &Agent,
        id: ProposalId,
        reason: Option<String>,
    ) -> Result<Transition, EngineError> {
        let command = Command::Cancel {
            id,
            agent: agent.id.clone(),
            reason,
        };
        Ok(self.apply(command).await?.into())
    }

    /// Decides a pending proposal. Of two racing decisions exactly one wins; the other gets
    /// [`Transition::WrongState`].
    #[tracing::instrument(skip_all, fields(proposal_id = %id, status = status.as_str()))]
    pub async fn decide(
        &self,
        id: ProposalId,
        status: Status,
        by: Actor,
        reason: Option<String>,
    ) -> Result<Transition, EngineError> {
        assert!(
            matches!(
                status,
                Status::Approved | Status::Rejected | Status::Expired
            ),
            "decide() moves a proposal to approved, rejected or expired"
        );
        // An approval's execution token is issued by the transition itself.
        let decision = Decision {
            by,
            at: self.clock.now(),
            reason,
            execution_token: None,
            digest: None,
        };
        Ok(self
            .apply(Command::Decide {
                id,
                status,
                decision,
            })
            .await?
            .into())
    }

    /// Records what the agent did after an approval (once).
    #[tracing::instrument(skip_all, fields(agent = %agent.id, proposal_id = %id))]
    pub async fn record_outcome(
        &self,
        agent: &Agent,
        id: ProposalId,
        result: ExecutionResult,
        details: Option<Value>,
        proof: OutcomeProof,
    ) -> Result<Transition, EngineError> {
        let outcome = ExecutionOutcome {
            result,
            details,
            at: self.clock.now(),
        };
        let command = Command::RecordOutcome {
            id,
            agent: agent.id.clone(),
            outcome,
            token: proof.execution_token,
            digest: proof.digest,
        };
        Ok(self.apply(command).await?.into())
    }

    /// Audits a click refused before it reached the proposal (not an approver, separation of
    /// duties…).
    pub(super) async fn refuse_click(
        &self,
        id: &ProposalId,
        voter: &str,
        ballot: Ballot,
        reason: &str,
    ) -> Result<(), EngineError> {
        let event = AuditDraft::new(
            kinds::REQUEST_REFUSED,
            Some(id),
            format!("reviewer:{voter}"),
            json!({"request": ballot.as_str(), "reason": reason}),
        );
        tracing::info!(proposal_id = %id, voter, reason, "click refused");
        self.apply(Command::Audit(event)).await?;
        Ok(())
    }

    /// Appends an audit event that goes with no state change (step-up outcomes, enrollments).
    pub async fn audit(
        &self,
        kind: &'static str,
        proposal: Option<&ProposalId>,
        actor: String,
        data: Value,
    ) -> Result<(), EngineError> {
        self.apply(Command::Audit(AuditDraft::new(kind, proposal, actor, data)))
            .await?;
        Ok(())
    }
}

/// Other replicas' wake-ups, acted on here.
impl WakeTarget for Engine {
    fn woken(&self, wake: Wake) {
        match wake {
            Wake::Decided(id) => {
                self.waiters.decided(&id);
                self.callback_work.notify_one();
            }
            Wake::SlackWork => self.slack_work.notify_one(),
        }
    }

    fn resync(&self) {
        self.waiters.wake_all();
        self.callback_work.notify_one();
        self.slack_work.notify_one();
    }
}
