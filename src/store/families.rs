//! The storage traits, one per table family, each implemented directly by both backends
//! (`store/sql/`), and [`Store`], the umbrella the rest of countersign holds as
//! `Arc<dyn Store>`. Calling a family's methods needs its trait in scope: `use
//! crate::store::prelude::*`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Command, CommandResult, QueueBacklog, StoreError, TotpEnrollment, WebhookRecord};
use crate::audit::{AuditEvent, AuditFilter};
use crate::domain::report::ReportPost;
use crate::domain::{
    DueTimer, PostedCard, Proposal, ProposalId, SlackJob, Status, Vote, WebhookDelivery,
};

/// Every state change: the command batches (see [`Command`]).
#[async_trait]
pub trait Commands: Send + Sync {
    /// Runs `commands` in order in one transaction; audit events are stamped `at`.
    /// Either every command's effect is committed, or none is.
    async fn apply(
        &self,
        commands: Vec<Command>,
        at: DateTime<Utc>,
    ) -> Result<Vec<CommandResult>, StoreError>;
}

/// Proposals and their votes, as stored.
#[async_trait]
pub trait ProposalReads: Send + Sync {
    async fn proposal(&self, id: &ProposalId) -> Result<Option<Proposal>, StoreError>;

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError>;

    /// Every vote on a proposal, oldest first.
    async fn votes(&self, id: &ProposalId) -> Result<Vec<Vote>, StoreError>;

    /// Whether an escalation rung of this proposal that grants approval reached `user`.
    async fn approval_granted(&self, id: &ProposalId, user: &str) -> Result<bool, StoreError>;

    /// When the oldest proposal still pending was submitted (reports reach back to it).
    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
}

/// The audit chain, page by page (verification, export, the admin API).
#[async_trait]
pub trait AuditReads: Send + Sync {
    /// Audit events with `seq > after_seq`, in `seq` order, at most `limit`.
    async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

/// The Slack outbox: jobs the Slack worker claims under a lease, and the cards it posted.
#[async_trait]
pub trait SlackOutbox: Send + Sync {
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
}

/// SLA timers: claimed under a lease by the SLA worker (they fire through [`Command::FireTimer`]).
#[async_trait]
pub trait TimerQueue: Send + Sync {
    /// Claims up to `limit` timers due at `now` that no live lease holds (oldest first), leasing
    /// them until `lease_until`.
    async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError>;

    /// The reminders and escalations of a proposal that took effect, with when, oldest first
    /// (the card's SLA line), read from the timers themselves.
    async fn fired_nudges(
        &self,
        id: &ProposalId,
    ) -> Result<Vec<(crate::domain::Timer, DateTime<Utc>)>, StoreError>;
}

/// Agent callbacks: events the callback worker claims under a lease, their attempts, and endpoints disabled by a 410.
#[async_trait]
pub trait WebhookQueue: Send + Sync {
    /// Claims up to `limit` callback events due at `now` that no live lease holds, leasing them
    /// until `lease_until`. Oldest first.
    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Has this endpoint answered 410 Gone?
    async fn endpoint_disabled(&self, url: &str) -> Result<bool, StoreError>;

    /// Every callback event for a proposal with its attempts, oldest first (the admin API).
    async fn webhook_events(&self, id: &ProposalId) -> Result<Vec<WebhookRecord>, StoreError>;
}

/// Reports owed to channels, claimed under a lease by the report worker.
#[async_trait]
pub trait ReportPosts: Send + Sync {
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

    /// Counts a failed attempt; the row comes back when its lease ends.
    async fn retry_report_post(&self, id: i64, error: &str) -> Result<(), StoreError>;
}

/// Step-up state of reviewers (changed through [`Command::StepUp`]).
#[async_trait]
pub trait StepUpReads: Send + Sync {
    /// A reviewer's TOTP enrollment, if any.
    async fn totp_enrollment(&self, user: &str) -> Result<Option<TotpEnrollment>, StoreError>;

    /// Until when the reviewer's step-up is locked, if it is at `now`.
    async fn step_up_locked_until(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
}

/// Per-agent views: autonomy's recent verdicts, budget usage, controls and the overrides in force.
#[async_trait]
pub trait AgentReads: Send + Sync {
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

    /// The overrides set on an agent since `since` (in force or not since): the action each
    /// named (`None`: the whole agent) and when, oldest first.
    async fn overrides_since(
        &self,
        agent: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Option<String>, DateTime<Utc>)>, StoreError>;
}

/// The schema, health, housekeeping and the queues' backlog (admin and `/metrics`).
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Creates or upgrades the schema (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Is the database answering?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Forgets idempotency keys created before `before`; returns how many.
    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// The background queues' work that is due at `now` and not done (Slack outbox, SLA timers,
    /// callbacks): how far the workers are behind, for `/metrics`.
    async fn backlog(&self, now: DateTime<Utc>) -> Result<Vec<QueueBacklog>, StoreError>;

    async fn close(&self);
}

/// Everything countersign keeps: every family at once, for holding as `Arc<dyn Store>`.
/// Implemented for any type that implements every family.
pub trait Store:
    Commands
    + ProposalReads
    + AuditReads
    + SlackOutbox
    + TimerQueue
    + WebhookQueue
    + ReportPosts
    + StepUpReads
    + AgentReads
    + Maintenance
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Commands
        + ProposalReads
        + AuditReads
        + SlackOutbox
        + TimerQueue
        + WebhookQueue
        + ReportPosts
        + StepUpReads
        + AgentReads
        + Maintenance
        + Send
        + Sync
        + 'static
{
}
