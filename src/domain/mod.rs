//! Plain domain types: no I/O, no HTTP, no SQL. Everything untrusted is parsed into one of these
//! at the edge.

pub mod ids;
pub mod proposal;
pub mod request;

pub use ids::{ActionId, AgentId, ProposalId};
pub use proposal::{
    Actor, Change, DataClass, Decision, Evidence, ExecutionOutcome, ExecutionResult, Proposal,
    ProposalContent, Quorum, Status, StepUp, Target, Verdict, VerdictOutcome,
};
