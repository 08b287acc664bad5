//! Plain domain types: no I/O, no HTTP, no SQL. Everything untrusted is parsed into one of these
//! at the edge.

mod action_digest;
pub mod callback;
pub mod control;
mod digest;
pub mod ids;
pub mod outbox;
pub mod proposal;
pub mod report;
pub mod request;
pub mod timer;
pub mod verdict;
pub mod vote;

pub use action_digest::ActionDigest;
pub use callback::WebhookDelivery;
pub use control::{Control, ControlMode, ControlNotice};
pub use ids::{ActionId, AgentId, ProposalId};
pub use outbox::{PostedCard, SlackJob, SlackTask};
pub use proposal::{
    Actor, ActorKind, Change, DataClass, Decision, Evidence, ExecutionOutcome, ExecutionResult,
    Proposal, ProposalContent, Status, Target,
};
pub use timer::{DueTimer, Timer, TimerOutcome};
pub use verdict::{
    EscalationLevel, EscalationTarget, OnTimeout, Quorum, RemindWhom, StepUp, Verdict,
    VerdictOutcome,
};
pub use vote::{Ballot, Vote};
