//! PostgreSQL backend, for several replicas sharing one database. Writers of the audit chain
//! serialise on a transaction-scoped advisory lock, so every batch from every replica extends the
//! chain in turn; the engine's group commit keeps that lock's cost per proposal small.
//!
//! The SQL lives by table family, as in the SQLite backend: `tx` (the command batch's
//! transaction, with the advisory lock), `proposals` (proposals, votes, the audit chain),
//! `outbox` (Slack jobs and posted cards), `timers`, `webhooks` (agent callbacks), `reports`,
//! `step_up` (TOTP and lockouts), `agents` (controls, budgets, per-agent queries), and
//! `Maintenance` (schema, purge, backlog for `/metrics`) here. Each file implements its family's
//! storage trait (`store/families.rs`) for [`PostgresStore`] directly.

mod agents;
mod outbox;
mod proposals;
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
use super::{Maintenance, PoolSettings, QueueBacklog, StoreError};
use crate::audit::AuditEvent;
use crate::domain::{Proposal, Vote};

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
impl Maintenance for PostgresStore {
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

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn backlog(&self, now: DateTime<Utc>) -> Result<Vec<QueueBacklog>, StoreError> {
        let rows = sqlx::query(
            "SELECT 'slack' AS queue, COUNT(*) AS due, MIN(due_at) AS oldest FROM slack_outbox \
             WHERE done_at IS NULL AND due_at <= $1 \
             UNION ALL SELECT 'timers', COUNT(*), MIN(due_at) FROM timers \
             WHERE fired_at IS NULL AND due_at <= $1 \
             UNION ALL SELECT 'callbacks', COUNT(*), MIN(next_attempt_at) FROM webhook_events \
             WHERE status = 'pending' AND next_attempt_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueBacklog {
                    queue: row.try_get("queue")?,
                    due: row.try_get("due")?,
                    oldest_due: row.try_get("oldest")?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// What a reviewer's click runs on PostgreSQL, besides the inserts: (name, parameter types,
/// SQL, sample arguments). Each must stay an index access when PostgreSQL plans it generically
/// (prepared statements go generic after five runs), whatever the backlog; the test suite
/// checks their plans on a database holding tens of thousands of timers and proposals.
pub fn decision_statements() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        ("read the proposal", "text", SELECT_PROPOSAL, "'p1'"),
        (
            "escalation grant",
            "text, text",
            proposals::SELECT_GRANT,
            "'p1', 'U1'",
        ),
        ("chain tip", "", tx::CHAIN_TIP, ""),
        (
            "batch's proposals",
            "text[]",
            tx::SELECT_PROPOSALS,
            "ARRAY['p1']",
        ),
        (
            "batch's votes",
            "text[]",
            tx::SELECT_VOTES_OF,
            "ARRAY['p1']",
        ),
        (
            "decisions",
            "text[], text[], text[], text[], timestamptz[], text[]",
            tx::UPDATE_LIFECYCLES,
            "ARRAY['p1'], ARRAY['approved'], ARRAY['{}'], ARRAY[NULL], ARRAY[now()], ARRAY['pending']",
        ),
        (
            "disarm timers",
            "text[], timestamptz[]",
            tx::DISARM_TIMERS,
            "ARRAY['p1'], ARRAY[now()]",
        ),
    ]
}

/// The Slack outbox's claim (parameters: lease end, now, limit). Its cost must not grow with the
/// cards waiting in one channel; the test suite checks the rows it touches on a long queue.
pub fn outbox_claim_statement() -> &'static str {
    outbox::CLAIM_SLACK_JOBS
}
