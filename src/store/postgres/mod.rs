//! PostgreSQL backend, for several replicas sharing one database. Writers of the audit chain
//! serialise on a transaction-scoped advisory lock, so every batch from every replica extends the
//! chain in turn; the engine's group commit keeps that lock's cost per proposal small.
//!
//! The SQL lives by table family, as in the SQLite backend: `tx` (the command batch's
//! transaction, with the advisory lock), `proposals` (proposals, votes, the audit chain),
//! `outbox` (Slack jobs and posted cards), `timers`, `webhooks` (agent callbacks), `reports`,
//! `step_up` (TOTP and lockouts) and `agents` (controls, budgets, per-agent queries). Each family
//! adds inherent methods to [`PostgresStore`], and the one `impl Store` below only delegates to
//! them: a trait impl must be one block, and splitting the trait instead would need its parts
//! imported wherever an `Arc<dyn Store>` is used.
//!
//! The inherent methods share the trait's names, and Rust picks an inherent method before a trait
//! method, so `self.claim_timers(..)` in the impl calls the family's. A family method renamed or
//! removed would turn its delegation into endless recursion, not a compile error.

mod agents;
mod outbox;
mod proposals;
mod queues;
mod reports;
mod step_up;
mod timers;
mod tx;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::rows::{ProposalRow, ballot};
use super::{
    Command, CommandResult, PoolSettings, Store, StoreError, TotpEnrollment, WebhookAttempt,
    WebhookNext, WebhookRecord,
};
use crate::audit::{AuditEvent, AuditFilter};
use crate::domain::{
    DueTimer, PostedCard, Proposal, ProposalId, SlackJob, Status, Vote, WebhookDelivery,
};
use crate::report::ReportPost;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn open(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        // A replica that stalls holding the audit-chain lock must not stall every other replica:
        // bound lock waits and idle transactions.
        let options = PgConnectOptions::from_str(url)?.options([
            ("lock_timeout", "10s"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

fn proposal_row(row: &PgRow) -> Result<Proposal, StoreError> {
    ProposalRow {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        status: row.try_get("status")?,
        content: row.try_get("content")?,
        decision: row.try_get("decision")?,
        outcome: row.try_get("outcome")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    }
    .decode()
}

fn audit_row(row: &PgRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        proposal_id: row.try_get("proposal_id")?,
        actor: row.try_get("actor")?,
        data: row.try_get("data")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn vote_row(row: &PgRow) -> Result<(Vote, String), StoreError> {
    let vote = Vote {
        voter: row.try_get("voter")?,
        eligible: serde_json::from_str(&row.try_get::<String, _>("eligible")?)?,
        ballot: ballot(&row.try_get::<String, _>("ballot")?)?,
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
    };
    Ok((vote, row.try_get("dedupe")?))
}

const SELECT_VOTES: &str = "SELECT voter, eligible, ballot, reason, dedupe, at FROM votes WHERE proposal_id = $1 ORDER BY at, voter";

const SELECT_PROPOSAL: &str = "SELECT id, agent_id, status, content, decision, outcome, created_at, updated_at FROM proposals WHERE id = $1";

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn apply(
        &self,
        commands: Vec<Command>,
        at: DateTime<Utc>,
    ) -> Result<Vec<CommandResult>, StoreError> {
        self.apply(commands, at).await
    }

    async fn proposal(&self, id: &ProposalId) -> Result<Option<Proposal>, StoreError> {
        self.proposal(id).await
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        self.count_by_status().await
    }

    async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.audit_page(filter, after_seq, limit).await
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge_idempotency_keys(before).await
    }

    async fn claim_slack_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SlackJob>, StoreError> {
        self.claim_slack_jobs(now, lease_until, limit).await
    }

    async fn renew_slack_leases(
        &self,
        ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.renew_slack_leases(ids, lease_until).await
    }

    async fn finish_slack_job(
        &self,
        job: &SlackJob,
        posted: Option<&PostedCard>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.finish_slack_job(job, posted, at).await
    }

    async fn retry_slack_job(
        &self,
        job: &SlackJob,
        due_at: DateTime<Utc>,
        error: &str,
        counted: bool,
    ) -> Result<(), StoreError> {
        self.retry_slack_job(job, due_at, error, counted).await
    }

    async fn fail_slack_job(
        &self,
        job: &SlackJob,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.fail_slack_job(job, at, error).await
    }

    async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError> {
        self.claim_timers(now, lease_until, limit).await
    }

    async fn votes(&self, id: &ProposalId) -> Result<Vec<Vote>, StoreError> {
        self.votes(id).await
    }

    async fn posted_cards(&self, id: &ProposalId) -> Result<Vec<PostedCard>, StoreError> {
        self.posted_cards(id).await
    }

    async fn card_posts_outstanding(&self, id: &ProposalId) -> Result<bool, StoreError> {
        self.card_posts_outstanding(id).await
    }

    async fn totp_enrollment(&self, user: &str) -> Result<Option<TotpEnrollment>, StoreError> {
        self.totp_enrollment(user).await
    }

    async fn begin_totp_enrollment(
        &self,
        user: &str,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.begin_totp_enrollment(user, sealed_secret, at).await
    }

    async fn activate_totp(
        &self,
        user: &str,
        step: i64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.activate_totp(user, step, at).await
    }

    async fn use_totp_step(&self, user: &str, step: i64) -> Result<bool, StoreError> {
        self.use_totp_step(user, step).await
    }

    async fn delete_totp(&self, user: &str) -> Result<bool, StoreError> {
        self.delete_totp(user).await
    }

    async fn step_up_failure(
        &self,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.step_up_failure(user, at).await
    }

    async fn step_up_locked_until(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.step_up_locked_until(user, now).await
    }

    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.oldest_pending().await
    }

    async fn backlog(&self, now: DateTime<Utc>) -> Result<Vec<super::QueueBacklog>, StoreError> {
        self.backlog(now).await
    }

    async fn enqueue_report(&self, post: &ReportPost) -> Result<bool, StoreError> {
        self.enqueue_report(post).await
    }

    async fn claim_report_posts(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ReportPost>, StoreError> {
        self.claim_report_posts(now, lease_until, limit).await
    }

    async fn finish_report_post(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.finish_report_post(id, at).await
    }

    async fn retry_report_post(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.retry_report_post(id, error).await
    }

    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.claim_webhooks(now, lease_until, limit).await
    }

    async fn record_webhook_attempt(
        &self,
        delivery: &WebhookDelivery,
        attempt: &WebhookAttempt,
        next: &WebhookNext,
    ) -> Result<(), StoreError> {
        self.record_webhook_attempt(delivery, attempt, next).await
    }

    async fn endpoint_disabled(&self, url: &str) -> Result<bool, StoreError> {
        self.endpoint_disabled(url).await
    }

    async fn webhook_events(&self, id: &ProposalId) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhook_events(id).await
    }

    async fn redeliver_webhook(&self, event: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.redeliver_webhook(event, now).await
    }

    async fn latest_verdicts_of(&self, agent: &str, n: i64) -> Result<Vec<Status>, StoreError> {
        self.latest_verdicts_of(agent, n).await
    }

    async fn auto_approved_usage(
        &self,
        agent: &str,
        day: DateTime<Utc>,
        month: DateTime<Utc>,
    ) -> Result<crate::budgets::Usage, StoreError> {
        self.auto_approved_usage(agent, day, month).await
    }

    async fn proposals_of(
        &self,
        agent: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Proposal>, StoreError> {
        self.proposals_of(agent, since).await
    }

    async fn pending_of(&self, agent: &str) -> Result<Vec<(ProposalId, String)>, StoreError> {
        self.pending_of(agent).await
    }

    async fn card_roles_of(&self, agent: &str) -> Result<Vec<String>, StoreError> {
        self.card_roles_of(agent).await
    }

    async fn controls(&self) -> Result<Vec<crate::domain::Control>, StoreError> {
        self.controls().await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
