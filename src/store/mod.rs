//! Storage: one trait, two implementations (SQLite, the embedded default, and PostgreSQL for
//! scale-out), chosen once at startup by [`open`].
//!
//! Every state change is a [`Command`]. A batch of commands runs in one transaction, and each
//! command appends its audit events to the hash chain in that same transaction, so a change and
//! its audit record are never apart. Batching is what makes ingest fast: the engine's writer
//! groups concurrent requests into one commit (see `engine::writer`).

mod batch;
#[macro_use]
mod delegate;
mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::{AuditDraft, AuditEvent, AuditFilter};
use crate::domain::report::ReportPost;
use crate::domain::{
    Actor, AgentId, Ballot, Decision, DueTimer, ExecutionOutcome, PostedCard, Proposal, ProposalId,
    SlackJob, SlackTask, Status, Vote, WebhookDelivery,
};
use crate::secrets::DatabaseUrl;

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

/// Everything countersign keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the schema (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Is the database answering?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Runs `commands` in order in one transaction; audit events are stamped `at`.
    /// Either every command's effect is committed, or none is.
    async fn apply(
        &self,
        commands: Vec<Command>,
        at: DateTime<Utc>,
    ) -> Result<Vec<CommandResult>, StoreError>;

    async fn proposal(&self, id: &ProposalId) -> Result<Option<Proposal>, StoreError>;

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError>;

    /// Audit events with `seq > after_seq`, in `seq` order, at most `limit`.
    async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Forgets idempotency keys created before `before`; returns how many.
    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Claims up to `limit` Slack outbox rows due at `now` that no live lease holds, leasing
    /// them until `lease_until`. A worker that dies mid-job loses only its lease; the row comes
    /// back when the lease ends. Oldest first.
    async fn claim_slack_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SlackJob>, StoreError>;

    /// Extends the leases of claimed jobs still in hand (not done, not put back) to
    /// `lease_until`; a pass renews while it works so that its leases can be short and a dead
    /// worker's rows come back soon. Returns how many leases were extended.
    async fn renew_slack_leases(
        &self,
        ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Marks a job done and, for a posted card, remembers where it went (same transaction).
    async fn finish_slack_job(
        &self,
        job: &SlackJob,
        posted: Option<&PostedCard>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Puts a job back to be tried again at `due_at`, counting the attempt when `counted`
    /// (a rate limit is not a failed attempt).
    async fn retry_slack_job(
        &self,
        job: &SlackJob,
        due_at: DateTime<Utc>,
        error: &str,
        counted: bool,
    ) -> Result<(), StoreError>;

    /// Gives up on a job after its last attempt; it stays in the table with its error.
    async fn fail_slack_job(
        &self,
        job: &SlackJob,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Claims up to `limit` timers due at `now` that no live lease holds (oldest first), leasing
    /// them until `lease_until`.
    async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError>;

    /// Every vote on a proposal, oldest first.
    async fn votes(&self, id: &ProposalId) -> Result<Vec<Vote>, StoreError>;

    /// Whether an escalation rung of this proposal that grants approval reached `user`.
    async fn approval_granted(&self, id: &ProposalId, user: &str) -> Result<bool, StoreError>;

    /// Every card posted for a proposal.
    async fn posted_cards(&self, id: &ProposalId) -> Result<Vec<PostedCard>, StoreError>;

    /// Whether a post of one of the proposal's cards is still to be done (due, retrying, or in
    /// a worker's hands): replies in its thread and updates of it wait for it.
    async fn card_posts_outstanding(&self, id: &ProposalId) -> Result<bool, StoreError>;

    /// Whether a post of one of the proposal's cards is in a worker's hands at `now` (claimed,
    /// lease running): a refresh must wait for it, as the card it posts may show older state.
    /// A post not yet claimed will render the proposal as it is then.
    async fn card_posts_in_flight(
        &self,
        id: &ProposalId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Marks done the other due, unclaimed rows of `job`'s proposal with the same task: `job`,
    /// done after this, renders the proposal as it is then, which covers what each of them
    /// asked for. For tasks whose effect is "show the latest state" only (card refreshes).
    /// Answers how many were folded in.
    async fn coalesce_slack_jobs(
        &self,
        job: &SlackJob,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// The reminders and escalations of a proposal that took effect, with when, oldest first
    /// (the card's SLA line), read from the timers themselves.
    async fn fired_nudges(
        &self,
        id: &ProposalId,
    ) -> Result<Vec<(crate::domain::Timer, DateTime<Utc>)>, StoreError>;

    /// A reviewer's TOTP enrollment, if any.
    async fn totp_enrollment(&self, user: &str) -> Result<Option<TotpEnrollment>, StoreError>;

    /// Until when the reviewer's step-up is locked, if it is at `now`.
    async fn step_up_locked_until(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// When the oldest proposal still pending was submitted (reports reach back to it).
    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// The background queues' work that is due at `now` and not done (Slack outbox, SLA timers,
    /// callbacks): how far the workers are behind, for `/metrics`.
    async fn backlog(&self, now: DateTime<Utc>) -> Result<Vec<QueueBacklog>, StoreError>;

    /// Records a report owed to a channel; false when its `dedupe` is already there (another
    /// replica scheduled the same digest).
    async fn enqueue_report(&self, post: &ReportPost) -> Result<bool, StoreError>;

    /// Claims up to `limit` unposted reports that no live lease holds and that have failed
    /// fewer than [`REPORT_ATTEMPTS`] times, leasing them until `lease_until`. Oldest first.
    async fn claim_report_posts(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ReportPost>, StoreError>;

    /// Marks a report posted.
    async fn finish_report_post(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Counts a failed attempt; the row comes back when its lease ends.
    async fn retry_report_post(&self, id: i64, error: &str) -> Result<(), StoreError>;

    /// Claims up to `limit` callback events due at `now` that no live lease holds, leasing them
    /// until `lease_until`. Oldest first.
    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Records one delivery attempt and what follows from it, in one transaction; a failed
    /// delivery also queues the Slack message that tells the agent's owner.
    async fn record_webhook_attempt(
        &self,
        delivery: &WebhookDelivery,
        attempt: &WebhookAttempt,
        next: &WebhookNext,
    ) -> Result<(), StoreError>;

    /// Has this endpoint answered 410 Gone?
    async fn endpoint_disabled(&self, url: &str) -> Result<bool, StoreError>;

    /// Every callback event for a proposal with its attempts, oldest first (the admin API).
    async fn webhook_events(&self, id: &ProposalId) -> Result<Vec<WebhookRecord>, StoreError>;

    /// The statuses of an agent's latest `n` proposals decided approved or rejected, newest
    /// first (by submission).
    async fn latest_verdicts_of(&self, agent: &str, n: i64) -> Result<Vec<Status>, StoreError>;

    /// What policy auto-approved for an agent since `day` and since `month` (amounts are
    /// `params.amount`).
    async fn auto_approved_usage(
        &self,
        agent: &str,
        day: DateTime<Utc>,
        month: DateTime<Utc>,
    ) -> Result<crate::budgets::Usage, StoreError>;

    /// An agent's proposals submitted since `since`, oldest first.
    async fn proposals_of(
        &self,
        agent: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Proposal>, StoreError>;

    /// An agent's pending proposals: id and action.
    async fn pending_of(&self, agent: &str) -> Result<Vec<(ProposalId, String)>, StoreError>;

    /// The roles an agent's cards have been posted for (whose channels hear of its controls).
    async fn card_roles_of(&self, agent: &str) -> Result<Vec<String>, StoreError>;

    /// Every override of an agent's mode in force.
    async fn controls(&self) -> Result<Vec<crate::domain::Control>, StoreError>;

    async fn close(&self);
}

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
