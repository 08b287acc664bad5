//! SQLite backend: the embedded default. One file, WAL journal, `synchronous = FULL` so a
//! committed proposal survives power loss as well as a crash; the engine's group commit pays
//! that fsync once per batch, not once per proposal.
//!
//! The SQL lives by table family: `tx` (the command batch's transaction), `proposals`
//! (proposals, votes, the audit chain), `outbox` (Slack jobs and posted cards), `timers`,
//! `webhooks` (agent callbacks), `reports`, `step_up` (TOTP and lockouts) and `agents`
//! (controls, budgets, per-agent queries); `Maintenance` (schema, purge, backlog for
//! `/metrics`) is here. Each file implements its family's storage trait (`store/families.rs`)
//! for [`SqliteStore`] directly. The PostgreSQL backend is laid out the same way.

mod agents;
mod outbox;
mod proposals;
mod reports;
mod step_up;
mod timers;
mod tx;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::rows::{ProposalRow, ballot};
use super::{Maintenance, PoolSettings, QueueBacklog, StoreError};
use crate::audit::AuditEvent;
use crate::domain::{Proposal, Vote};
use crate::store::sql::{Timestamp, optional_timestamp, timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed, with its directory) the database file at `path`.
    pub async fn open(path: &Path, settings: &PoolSettings) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

fn proposal_row(row: &SqliteRow) -> Result<Proposal, StoreError> {
    ProposalRow {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        status: row.try_get("status")?,
        content: row.try_get("content")?,
        decision: row.try_get("decision")?,
        outcome: row.try_get("outcome")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    }
    .decode()
}

fn audit_row(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: row.try_get("seq")?,
        at: timestamp(row, "at")?,
        kind: row.try_get("kind")?,
        proposal_id: row.try_get("proposal_id")?,
        actor: row.try_get("actor")?,
        data: row.try_get("data")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn vote_row(row: &SqliteRow) -> Result<(Vote, String), StoreError> {
    let vote = Vote {
        voter: row.try_get("voter")?,
        eligible: serde_json::from_str(&row.try_get::<String, _>("eligible")?)?,
        ballot: ballot(&row.try_get::<String, _>("ballot")?)?,
        reason: row.try_get("reason")?,
        at: timestamp(row, "at")?,
    };
    Ok((vote, row.try_get("dedupe")?))
}

const SELECT_VOTES: &str = "SELECT voter, eligible, ballot, reason, dedupe, at FROM votes WHERE proposal_id = $1 ORDER BY at, voter";

const SELECT_PROPOSAL: &str = "SELECT id, agent_id, status, content, decision, outcome, created_at, updated_at FROM proposals WHERE id = $1";

#[async_trait]
impl Maintenance for SqliteStore {
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
            .bind(Timestamp(before))
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
        .bind(Timestamp(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueBacklog {
                    queue: row.try_get("queue")?,
                    due: row.try_get("due")?,
                    oldest_due: optional_timestamp(row, "oldest")?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// The Slack outbox's claim (parameters: lease end, now, limit), for the test suite's check that
/// it reaches its rows by index.
pub fn outbox_claim_statement() -> &'static str {
    outbox::CLAIM_SLACK_JOBS
}
