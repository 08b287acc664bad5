//! The tamper-evident audit trail: an append-only, hash-chained log of everything that happened
//! to proposals.
//!
//! Each event's `hash` is SHA-256 over the previous event's hash and the event's canonical
//! encoding, so editing, deleting or reordering any row breaks the chain from that row on.
//! Truncating the tail cannot be seen from the chain alone: that is why `audit verify` prints the
//! head hash for operators to anchor elsewhere, and accepts an anchor to check against.

mod chain;
mod export;

pub use chain::{ChainBreak, ChainVerifier, GENESIS_HASH, event_hash};
pub use export::export_line;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::ProposalId;

/// An event about to be appended: everything but its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    pub kind: &'static str,
    pub proposal_id: Option<ProposalId>,
    /// `agent:revops-crm`, `policy`, `reviewer:U…`, `system:timer`.
    pub actor: String,
    pub data: Value,
}

impl AuditDraft {
    pub fn new(
        kind: &'static str,
        proposal_id: Option<&ProposalId>,
        actor: String,
        data: Value,
    ) -> Self {
        Self {
            kind,
            proposal_id: proposal_id.cloned(),
            actor,
            data,
        }
    }

    /// Gives the draft its place in the chain, right after `tip`, and moves `tip` onto it.
    pub fn seal(self, tip: &mut ChainTip, at: DateTime<Utc>) -> AuditEvent {
        let seq = tip.seq + 1;
        let prev_hash = std::mem::take(&mut tip.hash);
        let data = crate::canonical::to_string(&self.data);
        let proposal_id = self.proposal_id.map(String::from);
        let hash = event_hash(
            &prev_hash,
            seq,
            at,
            self.kind,
            proposal_id.as_deref(),
            &self.actor,
            &data,
        );
        tip.seq = seq;
        tip.hash = hash.clone();
        AuditEvent {
            seq,
            at,
            kind: self.kind.to_owned(),
            proposal_id,
            actor: self.actor,
            data,
            prev_hash,
            hash,
        }
    }
}

/// The last event of the chain: where the next one attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    pub seq: i64,
    pub hash: String,
}

impl ChainTip {
    /// The tip of an empty log.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// A row of the audit log, exactly as stored. `data` is canonical JSON text and is hashed as
/// stored, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub proposal_id: Option<String>,
    pub actor: String,
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Which events to read (export); verification always reads them all.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub proposal_id: Option<String>,
}

/// Event kinds, in one place so exports and tests agree on their names.
pub mod kinds {
    pub const SUBMITTED: &str = "proposal.submitted";
    pub const DECIDED: &str = "proposal.decided";
    pub const CANCELLED: &str = "proposal.cancelled";
    pub const OUTCOME_RECORDED: &str = "proposal.outcome_recorded";
    /// A reviewer's approve or reject was recorded.
    pub const VOTED: &str = "proposal.voted";
    /// SLA: approvers reminded; an escalation rung notified.
    pub const REMINDED: &str = "proposal.reminded";
    pub const ESCALATED: &str = "proposal.escalated";
    /// Step-up confirmation before an approval: passed, failed (and why), locked out.
    pub const STEP_UP_PASSED: &str = "step_up.passed";
    pub const STEP_UP_FAILED: &str = "step_up.failed";
    pub const STEP_UP_LOCKED: &str = "step_up.locked";
    /// TOTP enrollment: started, confirmed, removed by the reviewer, reset by an operator.
    pub const TOTP_ENROLLMENT_STARTED: &str = "totp.enrollment_started";
    pub const TOTP_ENROLLED: &str = "totp.enrolled";
    pub const TOTP_UNENROLLED: &str = "totp.unenrolled";
    pub const TOTP_RESET: &str = "totp.reset";
    /// A request that named a proposal and was refused (wrong state, another agent's proposal).
    pub const REQUEST_REFUSED: &str = "request.refused";
    /// The agent's callback for a decision: delivered, or given up (and the owner told).
    pub const CALLBACK_DELIVERED: &str = "callback.delivered";
    pub const CALLBACK_FAILED: &str = "callback.failed";
    /// An operator narrowed an agent (paused, draft_only) or cleared that (resumed).
    pub const AGENT_CONTROLLED: &str = "agent.controlled";
    pub const AGENT_RESUMED: &str = "agent.resumed";
    /// An SLA report (a digest or an answer to `/countersign report`) was posted.
    pub const REPORT_POSTED: &str = "report.posted";
    /// An operator had a callback delivered again (the admin API's redeliver).
    pub const CALLBACK_REDELIVERED: &str = "callback.redelivered";
}
