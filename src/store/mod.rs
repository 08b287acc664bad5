//! Storage: one trait, two implementations (SQLite, the embedded default, and PostgreSQL for
//! scale-out), chosen once at startup by [`open`].
//!
//! Every state change is a [`Command`]. A batch of commands runs in one transaction, and each
//! command appends its audit events to the hash chain in that same transaction, so a change and
//! its audit record are never apart. Batching is what makes ingest fast: the engine's writer
//! groups concurrent requests into one commit (see `engine::writer`).

mod batch;
mod families;
mod postgres;
mod rows;
mod sql;
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::AuditDraft;
use crate::domain::{
    Actor, AgentId, Ballot, Decision, DueTimer, ExecutionOutcome, Proposal, ProposalId, SlackTask,
    Status, Vote,
};
use crate::secrets::DatabaseUrl;

/// The storage traits, for code that calls a store's methods: `use crate::store::prelude::*`.
pub mod prelude {
    pub use super::families::{
        AgentReads, AuditReads, Commands, Maintenance, ProposalReads, ReportPosts, SlackOutbox,
        StepUpReads, Store, TimerQueue, WebhookQueue,
    };
}

pub use postgres::{
    PostgresStore, decision_statements as postgres_decision_statements,
    outbox_claim_statement as postgres_outbox_claim,
};
pub use sqlite::outbox_claim_statement as sqlite_outbox_claim;

/// One queue's due work: how many rows, and since when the oldest has been due (its lag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBacklog {
    /// `slack`, `timers` or `callbacks`.
    pub queue: String,
    pub due: i64,
    pub oldest_due: Option<DateTime<Utc>>,
}
pub use sqlite::SqliteStore;

/// Storage failures, stripped of driver types. Logical refusals (not found, wrong state) are
/// not errors: they are [`CommandResult`]s.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Other(String),
}

/// Database error codes that mean "try again later", not "this request is wrong": PostgreSQL's
/// serialization failure, deadlock, lock timeout, query cancel and shutdown classes; SQLite's
/// BUSY and LOCKED.
const TRANSIENT_CODES: &[&str] = &[
    "40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "5", "6",
];

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(error.to_string())
            }
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .is_some_and(|code| TRANSIENT_CODES.contains(&code.as_ref())) =>
            {
                StoreError::Unavailable(error.to_string())
            }
            // A stored SQLite time that does not parse is damaged data, like any stored value.
            sqlx::Error::ColumnDecode {
                ref index,
                ref source,
            } if source.is::<sql::BadTimestamp>() => {
                StoreError::Corrupt(format!("{index} {source}"))
            }
            // A column of an unexpected type is countersign reading its own schema wrong (a
            // bug), not damaged data: "corrupt" is kept for stored values that do not parse.
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Other(format!("cannot read a column: {error}"))
            }
            other => StoreError::Other(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// The idempotency key an agent sent, with the hash of the body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

/// A change to a reviewer's TOTP enrollment or step-up failures ([`Command::StepUp`]).
#[derive(Debug, Clone)]
pub enum StepUpChange {
    /// Starts (or restarts) an enrollment, inactive until confirmed; an active one is left
    /// alone (`changed: false`).
    BeginTotp { sealed_secret: String },
    /// Activates the pending enrollment with the step of its first code, if it is still the one
    /// the code was checked against (`sealed_secret`): a restarted enrollment is not activated
    /// by the old one's code.
    ActivateTotp { step: i64, sealed_secret: String },
    /// Removes the enrollment; when it is active, spending `step` (a current code's) first.
    Unenroll { step: Option<i64> },
    /// An operator removed the enrollment (`countersign totp reset`).
    Reset { by: String },
    /// A wrong answer, while approving `proposal` or unenrolling (`None`): counted, and the one
    /// that makes [`crate::stepup::MAX_FAILURES`] within the window locks the reviewer —
    /// audited, and (for an approval) announced in the proposal's channels through the outbox.
    WrongAnswer { proposal: Option<ProposalId> },
}

/// What asking for a callback's redelivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Started over from the beginning of its schedule.
    Started,
    NoSuchEvent,
    /// A worker is delivering it right now (its lease is live): ask again once it is done, or
    /// the attempt's result would overwrite the fresh start, or a second worker deliver it too.
    InFlight,
}

/// A state change, in domain terms.
#[derive(Debug, Clone)]
pub enum Command {
    /// Store a new proposal (its verdict already decided), honouring an idempotency key.
    Submit {
        proposal: Box<Proposal>,
        idempotency: Option<IdempotencyKey>,
        /// Each routed role's channel as the registry named it at submission: the queue the
        /// card waits in, behind the channel's earlier cards. A role missing here posts
        /// unordered.
        card_channels: std::collections::BTreeMap<String, String>,
    },
    /// A change to a reviewer's step-up state, written with its audit event.
    StepUp { user: String, change: StepUpChange },
    /// The callback worker made one delivery attempt: recorded with what follows (a retry, or
    /// the end: `callback.delivered` / `callback.failed` audited, a failure told to the agent's
    /// owner in Slack), releasing the worker's lease.
    RecordCallbackAttempt {
        delivery: crate::domain::WebhookDelivery,
        attempt: WebhookAttempt,
        next: WebhookNext,
    },
    /// The report worker posted a report: marked posted, with its `report.posted` event.
    ReportPosted {
        post: crate::domain::report::ReportPost,
        at: DateTime<Utc>,
    },
    /// An operator has a callback delivered again from the start of its schedule (same webhook
    /// id), lifting a 410 block on its endpoint.
    Redeliver { event: String, by: String },
    /// The agent withdraws a pending proposal.
    Cancel {
        id: ProposalId,
        agent: AgentId,
        reason: Option<String>,
    },
    /// A pending proposal is decided (`approved`, `rejected` or `expired`).
    Decide {
        id: ProposalId,
        status: Status,
        decision: Decision,
    },
    /// The agent reports what happened after an approval.
    RecordOutcome {
        id: ProposalId,
        agent: AgentId,
        outcome: ExecutionOutcome,
        /// The approval's execution token, as the agent presented it.
        token: String,
        /// The [`crate::domain::ActionDigest`] of what the agent says it executed.
        digest: String,
    },
    /// A reviewer approves or rejects. Who may vote (`eligible`: the routed roles the voter
    /// approves for) and separation of duties are the caller's checks; whether the proposal is
    /// still pending and the voter has not voted are checked here, in the transaction, so
    /// racing clicks see each other. A reject decides at once; an approve decides when it
    /// completes the quorum.
    Vote {
        id: ProposalId,
        voter: String,
        eligible: Vec<String>,
        ballot: Ballot,
        reason: Option<String>,
        /// Identifies the click (Slack's action_ts, user and action) or the modal submission.
        dedupe: String,
        /// The step-up the voter passed for this ballot, checked by the core: audited with the
        /// vote, and a TOTP code's time step spent in the same transaction.
        proof: Option<StepUpProof>,
    },
    /// An SLA timer is due. Fires once (a conditional update in this transaction, so two
    /// replicas cannot both fire it), only for a pending proposal, with the effect the worker
    /// resolved (who to remind or notify).
    FireTimer {
        timer: DueTimer,
        effect: TimerEffect,
    },
    /// Only an audit event: a refused request that named a proposal.
    Audit(AuditDraft),
    /// Puts an override of an agent's mode in force (replacing one for the same scope).
    /// With `reject_pending`, the agent's pending proposals the override covers are rejected in
    /// the same transaction (decided by `by`). Either way the role channels are told, through
    /// the outbox, in that transaction too.
    SetControl {
        control: crate::domain::Control,
        reject_pending: bool,
        by: Actor,
    },
    /// Clears the override for an agent (and action); audited with who and why.
    ClearControl {
        agent: String,
        action: Option<String>,
        by: String,
        reason: Option<String>,
    },
}

impl Command {
    /// The existing proposal this command may change, if any: a batch reads them all up front.
    pub(crate) fn changes(&self) -> Option<&ProposalId> {
        match self {
            Command::Cancel { id, .. }
            | Command::Decide { id, .. }
            | Command::RecordOutcome { id, .. }
            | Command::Vote { id, .. } => Some(id),
            Command::FireTimer {
                timer,
                effect: TimerEffect::Expire,
            } => Some(&timer.proposal_id),
            _ => None,
        }
    }
}

/// What a firing timer does, resolved by the SLA worker against the manifests at firing time.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerEffect {
    /// Slack work (a reminder or an escalation), audited as `kind` with `data`.
    Notify {
        task: SlackTask,
        kind: &'static str,
        data: serde_json::Value,
        /// People the rung makes approvers of this proposal (`grants_approval`), remembered
        /// by key for their clicks.
        grants: Vec<String>,
    },
    /// The proposal expires.
    Expire,
}

/// A step-up the core has checked, carried by the vote it proves.
#[derive(Debug, Clone, PartialEq)]
pub struct StepUpProof {
    /// What the policy asked for (`confirm` or `totp`).
    pub kind: crate::domain::StepUp,
    /// The time step of the TOTP code that matched: spent with the vote, so a code counts once
    /// even when two forms race.
    pub totp_step: Option<i64>,
}

/// Why a vote was not recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteRefusal {
    /// The proposal was decided (or cancelled, or expired) already.
    NotPending,
    /// Its `expires_at` has passed: too late to decide, whatever the SLA worker has done yet.
    Expired,
    /// This person voted already (with a different click).
    AlreadyVoted(Vote),
    /// The proving TOTP code's time step was spent already (or the reviewer is locked out).
    StepUpSpent,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandResult {
    /// Stored.
    Submitted(Box<Proposal>),
    /// The idempotency key was seen before with the same body: the proposal as first stored
    /// (JSON), to answer as the original response did.
    Replayed { response: String },
    /// The idempotency key was seen before with a different body.
    IdempotencyConflict,
    /// The proposal moved; here it is as it is now.
    Updated(Box<Proposal>),
    /// No such proposal for this agent.
    NotFound,
    /// The proposal is not in a state that allows the change.
    WrongState(Status),
    /// An audit-only command was appended.
    Audited,
    /// An override was set, or cleared (`false`: there was none to clear).
    Control(bool),
    /// An override was set; these pending proposals were rejected with it.
    Narrowed(Vec<ProposalId>),
    /// The vote is recorded (or was: `replay` when this was the same click again); the
    /// proposal as it now stands and every vote on it.
    Voted {
        proposal: Box<Proposal>,
        votes: Vec<Vote>,
        replay: bool,
    },
    /// An outcome came with the wrong execution token (audited).
    WrongToken,
    /// An outcome named another digest than the approved one (audited; the token stands).
    DigestMismatch(crate::domain::ActionDigest),
    /// A timer was handled.
    TimerHandled(crate::domain::TimerOutcome),
    /// What asking for a callback's redelivery found.
    Redelivered(Redelivery),
    /// A step-up change: whether it changed anything, and the lock a wrong answer set.
    StepUp {
        changed: bool,
        locked_until: Option<DateTime<Utc>>,
    },
    /// The vote was refused (audited).
    VoteRefused {
        proposal: Box<Proposal>,
        reason: VoteRefusal,
    },
}

pub use families::{
    AgentReads, AuditReads, Commands, Maintenance, ProposalReads, ReportPosts, SlackOutbox,
    StepUpReads, Store, TimerQueue, WebhookQueue,
};

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    /// 1 for the first attempt of the event.
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The HTTP status, when an answer came.
    pub status_code: Option<i32>,
    /// Why the attempt failed without (or despite) an answer.
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What happens to an event after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookNext {
    Delivered,
    Retry {
        at: DateTime<Utc>,
    },
    /// Given up: the schedule ran out, or the endpoint is gone (`disable`: it answered 410).
    Failed {
        error: String,
        disable: bool,
    },
}

/// A callback event and its attempts (the admin API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookRecord {
    /// The `webhook-id`.
    pub id: String,
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub attempts: Vec<WebhookAttempt>,
}

/// Attempts at posting a report before it is given up (it stays in the table with its error).
pub const REPORT_ATTEMPTS: i32 = 5;

/// A stored TOTP enrollment (the secret still sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrollment {
    pub sealed_secret: String,
    pub active: bool,
    pub last_step: Option<i64>,
}

/// Connection settings that are not in the URL.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
        }
    }
}

/// Connects to the configured database. This is the one place a backend is chosen.
pub async fn open(url: &DatabaseUrl, pool: &PoolSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open(path, pool).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PostgresStore::open(url.expose(), pool).await?),
    })
}
