//! SQLite backend: the embedded default. One file, WAL journal, `synchronous = FULL` so a
//! committed proposal survives power loss as well as a crash; the engine's group commit pays
//! that fsync once per batch, not once per proposal.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::batch::{self, BatchTx};
use super::rows::{
    ControlRow, INSERT_CHUNK, IdempotencyRow, ProposalRow, ReportPostRow, SlackJobRow, StoredKey,
    TimerRow, WebhookRow, ballot, callback_failed, control, due_timer, encode, posted_cards,
    report_post, slack_jobs, status_count, webhook_delivery,
};
use super::{
    Command, CommandResult, PoolSettings, Store, StoreError, TotpEnrollment, WebhookAttempt,
    WebhookNext, WebhookRecord,
};
use crate::audit::{AuditEvent, AuditFilter, ChainTip};
use crate::clock::{format_timestamp, parse_timestamp};
use crate::domain::{
    AgentId, DueTimer, PostedCard, Proposal, ProposalId, SlackJob, Status, Vote, WebhookDelivery,
};
use crate::report::ReportPost;

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

fn timestamp(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let text: String = row.try_get(column)?;
    parse_timestamp(&text).map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
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

const SELECT_VOTES: &str = "SELECT voter, eligible, ballot, reason, dedupe, at FROM votes WHERE proposal_id = ?1 ORDER BY at, voter";

const SELECT_PROPOSAL: &str = "SELECT id, agent_id, status, content, decision, outcome, created_at, updated_at FROM proposals WHERE id = ?1";

struct Tx(Transaction<'static, Sqlite>);

#[async_trait]
impl BatchTx for Tx {
    async fn chain_tip(&mut self) -> Result<ChainTip, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(match row {
            Some(row) => ChainTip {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            },
            None => ChainTip::genesis(),
        })
    }

    async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<(), StoreError> {
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_events (seq, at, kind, proposal_id, actor, data, prev_hash, hash) ",
            );
            insert.push_values(chunk, |mut row, e| {
                row.push_bind(e.seq)
                    .push_bind(format_timestamp(e.at))
                    .push_bind(&e.kind)
                    .push_bind(&e.proposal_id)
                    .push_bind(&e.actor)
                    .push_bind(&e.data)
                    .push_bind(&e.prev_hash)
                    .push_bind(&e.hash);
            });
            // The text varies with the row count: not worth a slot in the statement cache.
            insert
                .build()
                .persistent(false)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    async fn load_votes(&mut self, id: &ProposalId) -> Result<Vec<(Vote, String)>, StoreError> {
        let rows = sqlx::query(SELECT_VOTES)
            .bind(id.as_str())
            .fetch_all(&mut *self.0)
            .await?;
        rows.iter().map(vote_row).collect()
    }

    async fn insert_vote(
        &mut self,
        id: &ProposalId,
        vote: &Vote,
        dedupe: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO votes (proposal_id, voter, eligible, ballot, reason, dedupe, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(id.as_str())
        .bind(&vote.voter)
        .bind(serde_json::to_string(&vote.eligible)?)
        .bind(vote.ballot.as_str())
        .bind(&vote.reason)
        .bind(dedupe)
        .bind(format_timestamp(vote.at))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_timers(&mut self, rows: &[TimerRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert =
                QueryBuilder::<Sqlite>::new("INSERT INTO timers (proposal_id, timer, due_at) ");
            insert.push_values(chunk, |mut row, t| {
                row.push_bind(&t.proposal_id)
                    .push_bind(&t.timer)
                    .push_bind(format_timestamp(t.due_at));
            });
            insert
                .build()
                .persistent(false)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    async fn disarm_timers(
        &mut self,
        id: &ProposalId,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE timers SET fired_at = ?1, outcome = 'disarmed', leased_until = NULL WHERE proposal_id = ?2 AND fired_at IS NULL")
            .bind(format_timestamp(at))
            .bind(id.as_str())
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn fire_timer(
        &mut self,
        timer: i64,
        at: DateTime<Utc>,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE timers SET fired_at = ?1, outcome = ?2, leased_until = NULL WHERE id = ?3 AND fired_at IS NULL")
            .bind(format_timestamp(at))
            .bind(outcome)
            .bind(timer)
            .execute(&mut *self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fire_timer_if_pending(
        &mut self,
        timer: i64,
        proposal: &ProposalId,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let outcome = sqlx::query_scalar(
            "UPDATE timers SET fired_at = ?1, leased_until = NULL, outcome = CASE WHEN EXISTS \
             (SELECT 1 FROM proposals WHERE id = ?2 AND status = 'pending') THEN 'fired' ELSE 'disarmed' END \
             WHERE id = ?3 AND fired_at IS NULL RETURNING outcome",
        )
        .bind(format_timestamp(at))
        .bind(proposal.as_str())
        .bind(timer)
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(outcome)
    }

    async fn insert_slack_jobs(&mut self, rows: &[SlackJobRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO slack_outbox (proposal_id, task, due_at) ",
            );
            insert.push_values(chunk, |mut row, job| {
                row.push_bind(&job.proposal_id)
                    .push_bind(&job.task)
                    .push_bind(format_timestamp(job.due_at));
            });
            insert
                .build()
                .persistent(false)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    async fn insert_webhooks(&mut self, rows: &[WebhookRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO webhook_events (id, proposal_id, agent_id, url, body, created_at, next_attempt_at) ",
            );
            insert.push_values(chunk, |mut row, event| {
                let at = format_timestamp(event.created_at);
                row.push_bind(&event.id)
                    .push_bind(&event.proposal_id)
                    .push_bind(&event.agent_id)
                    .push_bind(&event.url)
                    .push_bind(&event.body)
                    .push_bind(at.clone())
                    .push_bind(at);
            });
            insert
                .build()
                .persistent(false)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    async fn upsert_control(&mut self, control: &crate::domain::Control) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_controls (agent_id, action, mode, reason, set_by, set_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (agent_id, action) DO UPDATE SET \
             mode = excluded.mode, reason = excluded.reason, set_by = excluded.set_by, set_at = excluded.set_at",
        )
        .bind(&control.agent)
        .bind(control.action.as_deref().unwrap_or(""))
        .bind(control.mode.as_str())
        .bind(control.reason.as_deref())
        .bind(&control.set_by)
        .bind(format_timestamp(control.set_at))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn delete_control(&mut self, agent: &str, action: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM agent_controls WHERE agent_id = ?1 AND action = ?2")
            .bind(agent)
            .bind(action)
            .execute(&mut *self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn load_proposal(&mut self, id: &ProposalId) -> Result<Option<Proposal>, StoreError> {
        sqlx::query(SELECT_PROPOSAL)
            .bind(id.as_str())
            .fetch_optional(&mut *self.0)
            .await?
            .as_ref()
            .map(proposal_row)
            .transpose()
    }

    async fn insert_proposals(&mut self, rows: &[ProposalRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO proposals (id, agent_id, status, content, decision, outcome, created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut row, p| {
                row.push_bind(&p.id)
                    .push_bind(&p.agent_id)
                    .push_bind(&p.status)
                    .push_bind(&p.content)
                    .push_bind(&p.decision)
                    .push_bind(&p.outcome)
                    .push_bind(format_timestamp(p.created_at))
                    .push_bind(format_timestamp(p.updated_at));
            });
            insert
                .build()
                .persistent(false)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    async fn insert_idempotency_keys(&mut self, rows: &[IdempotencyRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO idempotency_keys (agent_id, key, request_hash, proposal_id, response, created_at) ",
            );
            insert.push_values(chunk, |mut row, k| {
                row.push_bind(&k.agent_id)
                    .push_bind(&k.key)
                    .push_bind(&k.request_hash)
                    .push_bind(&k.proposal_id)
                    .push_bind(&k.response)
                    .push_bind(format_timestamp(k.created_at));
            });
            insert
                .build()
                .persistent(false)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    async fn update_lifecycle(
        &mut self,
        proposal: &Proposal,
        from: Status,
    ) -> Result<bool, StoreError> {
        let encoded = encode(proposal)?;
        let done = sqlx::query(
            "UPDATE proposals SET status = ?1, decision = ?2, outcome = ?3, updated_at = ?4 \
             WHERE id = ?5 AND status = ?6",
        )
        .bind(proposal.status.as_str())
        .bind(encoded.decision)
        .bind(encoded.outcome)
        .bind(format_timestamp(proposal.updated_at))
        .bind(proposal.id.as_str())
        .bind(from.as_str())
        .execute(&mut *self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, proposal_id, response FROM idempotency_keys WHERE agent_id = ?1 AND key = ?2",
        )
        .bind(agent.as_str())
        .bind(key)
        .fetch_optional(&mut *self.0)
        .await?;
        row.map(|row| {
            Ok(StoredKey {
                request_hash: row.try_get("request_hash")?,
                proposal_id: row.try_get("proposal_id")?,
                response: row.try_get("response")?,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
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
        // IMMEDIATE takes the write lock up front: a deferred transaction that reads the chain
        // tip and then writes could fail to upgrade its lock (SQLITE_BUSY) despite busy_timeout.
        let mut tx = Tx(self.pool.begin_with("BEGIN IMMEDIATE").await?);
        let results = batch::run(&mut tx, commands, at).await?;
        tx.0.commit().await?;
        Ok(results)
    }

    async fn proposal(&self, id: &ProposalId) -> Result<Option<Proposal>, StoreError> {
        sqlx::query(SELECT_PROPOSAL)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(proposal_row)
            .transpose()
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM proposals GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| status_count(row.try_get("status")?, row.try_get("n")?))
            .collect()
    }

    async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // One proposal's events come from its index; the optional filter written as
        // `(x IS NULL OR proposal_id = x)` would walk the whole chain instead.
        let sql = if filter.proposal_id.is_some() {
            "SELECT seq, at, kind, proposal_id, actor, data, prev_hash, hash FROM audit_events \
                 WHERE proposal_id = ?3 AND seq > ?1 AND (?2 IS NULL OR at >= ?2) ORDER BY seq LIMIT ?4"
        } else {
            "SELECT seq, at, kind, proposal_id, actor, data, prev_hash, hash FROM audit_events \
                 WHERE seq > ?1 AND (?2 IS NULL OR at >= ?2) AND (?3 IS NULL OR proposal_id = ?3) \
                 ORDER BY seq LIMIT ?4"
        };
        let rows = sqlx::query(sql)
            .bind(after_seq)
            .bind(filter.since.map(format_timestamp))
            .bind(filter.proposal_id.as_deref())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?1")
            .bind(format_timestamp(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn claim_slack_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SlackJob>, StoreError> {
        let rows = sqlx::query(
            "UPDATE slack_outbox SET leased_until = ?1 WHERE id IN (\
               SELECT id FROM slack_outbox WHERE done_at IS NULL AND due_at <= ?2 \
               AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY due_at, id LIMIT ?3) \
             RETURNING id, proposal_id, task, attempts",
        )
        .bind(format_timestamp(lease_until))
        .bind(format_timestamp(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        slack_jobs(&rows)
    }

    async fn renew_slack_leases(
        &self,
        ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        let ids = format!("[{}]", ids.join(","));
        let renewed = sqlx::query(
            "UPDATE slack_outbox SET leased_until = ?1 WHERE id IN (SELECT value FROM json_each(?2)) \
             AND done_at IS NULL AND leased_until IS NOT NULL",
        )
        .bind(format_timestamp(lease_until))
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected())
    }

    async fn finish_slack_job(
        &self,
        job: &SlackJob,
        posted: Option<&PostedCard>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(card) = posted {
            sqlx::query(
                "INSERT INTO slack_messages (proposal_id, role, channel, ts, posted_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (proposal_id, role) DO NOTHING",
            )
            .bind(job.proposal_id.as_str())
            .bind(&card.role)
            .bind(&card.channel)
            .bind(&card.ts)
            .bind(format_timestamp(at))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE slack_outbox SET done_at = ?1, leased_until = NULL WHERE id = ?2")
            .bind(format_timestamp(at))
            .bind(job.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retry_slack_job(
        &self,
        job: &SlackJob,
        due_at: DateTime<Utc>,
        error: &str,
        counted: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE slack_outbox SET due_at = ?1, attempts = attempts + ?2, leased_until = NULL, \
             last_error = ?3 WHERE id = ?4",
        )
        .bind(format_timestamp(due_at))
        .bind(i32::from(counted))
        .bind(error)
        .bind(job.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fail_slack_job(
        &self,
        job: &SlackJob,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE slack_outbox SET done_at = ?1, attempts = attempts + 1, leased_until = NULL, \
             last_error = ?2 WHERE id = ?3",
        )
        .bind(format_timestamp(at))
        .bind(format!("gave up: {error}"))
        .bind(job.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let rows = sqlx::query(
            "UPDATE timers SET leased_until = ?1 WHERE id IN (\
               SELECT id FROM timers WHERE fired_at IS NULL AND due_at <= ?2 \
               AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY due_at, id LIMIT ?3) \
             RETURNING id, proposal_id, timer, due_at",
        )
        .bind(format_timestamp(lease_until))
        .bind(format_timestamp(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut timers = rows
            .iter()
            .map(|row| {
                due_timer(
                    row.try_get("id")?,
                    row.try_get("proposal_id")?,
                    row.try_get("timer")?,
                    timestamp(row, "due_at")?,
                )
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        timers.sort_by_key(|t| (t.due_at, t.id));
        Ok(timers)
    }

    async fn votes(&self, id: &ProposalId) -> Result<Vec<Vote>, StoreError> {
        let rows = sqlx::query(SELECT_VOTES)
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| vote_row(row).map(|(vote, _)| vote))
            .collect()
    }

    async fn posted_cards(&self, id: &ProposalId) -> Result<Vec<PostedCard>, StoreError> {
        let rows = sqlx::query(
            "SELECT role, channel, ts FROM slack_messages WHERE proposal_id = ?1 ORDER BY role",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        posted_cards(&rows)
    }

    async fn card_posts_outstanding(&self, id: &ProposalId) -> Result<bool, StoreError> {
        let outstanding: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM slack_outbox WHERE proposal_id = ?1 AND done_at IS NULL \
             AND task LIKE '%\"kind\":\"post_card\"%'",
        )
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(outstanding > 0)
    }

    async fn totp_enrollment(&self, user: &str) -> Result<Option<TotpEnrollment>, StoreError> {
        let row = sqlx::query(
            "SELECT secret, active, last_step FROM totp_enrollments WHERE user_id = ?1",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TotpEnrollment {
                sealed_secret: row.try_get("secret")?,
                active: row.try_get::<i64, _>("active")? != 0,
                last_step: row.try_get("last_step")?,
            })
        })
        .transpose()
    }

    async fn begin_totp_enrollment(
        &self,
        user: &str,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO totp_enrollments (user_id, secret, active, created_at) VALUES (?1, ?2, 0, ?3) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, last_step = NULL \
             WHERE totp_enrollments.active = 0",
        )
        .bind(user)
        .bind(sealed_secret)
        .bind(format_timestamp(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn activate_totp(
        &self,
        user: &str,
        step: i64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE totp_enrollments SET active = 1, last_step = ?1, activated_at = ?2 \
             WHERE user_id = ?3 AND active = 0",
        )
        .bind(step)
        .bind(format_timestamp(at))
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn use_totp_step(&self, user: &str, step: i64) -> Result<bool, StoreError> {
        // The conditional update is the guard: of two submissions of one code, one wins.
        let done = sqlx::query(
            "UPDATE totp_enrollments SET last_step = ?1 \
             WHERE user_id = ?2 AND active = 1 AND (last_step IS NULL OR last_step < ?1)",
        )
        .bind(step)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_totp(&self, user: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM totp_enrollments WHERE user_id = ?1")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn step_up_failure(
        &self,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO step_up_failures (user_id, at) VALUES (?1, ?2)")
            .bind(user)
            .bind(format_timestamp(at))
            .execute(&mut *tx)
            .await?;
        let recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM step_up_failures WHERE user_id = ?1 AND at > ?2",
        )
        .bind(user)
        .bind(format_timestamp(at - crate::stepup::FAILURE_WINDOW))
        .fetch_one(&mut *tx)
        .await?;
        let locked = if recent >= crate::stepup::MAX_FAILURES {
            let until = at + crate::stepup::LOCKOUT;
            sqlx::query(
                "INSERT INTO step_up_locks (user_id, until) VALUES (?1, ?2) \
                 ON CONFLICT (user_id) DO UPDATE SET until = excluded.until",
            )
            .bind(user)
            .bind(format_timestamp(until))
            .execute(&mut *tx)
            .await?;
            // The lock has counted them: a fresh start once it ends.
            sqlx::query("DELETE FROM step_up_failures WHERE user_id = ?1")
                .bind(user)
                .execute(&mut *tx)
                .await?;
            Some(until)
        } else {
            None
        };
        tx.commit().await?;
        Ok(locked)
    }

    async fn step_up_locked_until(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query("SELECT until FROM step_up_locks WHERE user_id = ?1 AND until > ?2")
            .bind(user)
            .bind(format_timestamp(now))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| timestamp(&row, "until")).transpose()
    }

    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row =
            sqlx::query("SELECT MIN(created_at) AS oldest FROM proposals WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        let oldest: Option<String> = row.try_get("oldest")?;
        oldest
            .map(|text| {
                parse_timestamp(&text)
                    .map_err(|e| StoreError::Corrupt(format!("created_at {text:?}: {e}")))
            })
            .transpose()
    }

    async fn enqueue_report(&self, post: &ReportPost) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO report_posts (dedupe, role, channel, period, as_of, requested_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (dedupe) DO NOTHING",
        )
        .bind(&post.dedupe)
        .bind(&post.role)
        .bind(&post.channel)
        .bind(post.period.to_string())
        .bind(format_timestamp(post.as_of))
        .bind(post.requested_by.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_report_posts(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<ReportPost>, StoreError> {
        let rows = sqlx::query(
            "UPDATE report_posts SET leased_until = ?1 WHERE id IN (\
               SELECT id FROM report_posts WHERE posted_at IS NULL AND attempts < ?4 \
               AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY id LIMIT ?3) \
             RETURNING id, dedupe, role, channel, period, as_of, requested_by, attempts",
        )
        .bind(format_timestamp(lease_until))
        .bind(format_timestamp(now))
        .bind(limit)
        .bind(super::REPORT_ATTEMPTS)
        .fetch_all(&self.pool)
        .await?;
        let mut posts = rows
            .iter()
            .map(|row| {
                report_post(ReportPostRow {
                    id: row.try_get("id")?,
                    dedupe: row.try_get("dedupe")?,
                    role: row.try_get("role")?,
                    channel: row.try_get("channel")?,
                    period: row.try_get("period")?,
                    as_of: timestamp(row, "as_of")?,
                    requested_by: row.try_get("requested_by")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        posts.sort_by_key(|p| p.id);
        Ok(posts)
    }

    async fn finish_report_post(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE report_posts SET posted_at = ?1, leased_until = NULL WHERE id = ?2")
            .bind(format_timestamp(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry_report_post(&self, id: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE report_posts SET attempts = attempts + 1, last_error = ?1 WHERE id = ?2",
        )
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_webhooks(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let rows = sqlx::query(
            "UPDATE webhook_events SET leased_until = ?1 WHERE id IN (\
               SELECT id FROM webhook_events WHERE status = 'pending' AND next_attempt_at <= ?2 \
               AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY next_attempt_at LIMIT ?3) \
             RETURNING id, proposal_id, agent_id, url, body, attempts, next_attempt_at",
        )
        .bind(format_timestamp(lease_until))
        .bind(format_timestamp(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut due = rows
            .iter()
            .map(|row| Ok((timestamp(row, "next_attempt_at")?, webhook_delivery(row)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        due.sort_by_key(|(at, _)| *at);
        Ok(due.into_iter().map(|(_, d)| d).collect())
    }

    async fn record_webhook_attempt(
        &self,
        delivery: &WebhookDelivery,
        attempt: &WebhookAttempt,
        next: &WebhookNext,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (event_id, attempt, at, status_code, error, duration_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(attempt.attempt)
        .bind(format_timestamp(attempt.at))
        .bind(attempt.status_code)
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
        let (status, next_at, error) = match next {
            WebhookNext::Delivered => ("delivered", attempt.at, None),
            WebhookNext::Retry { at } => ("pending", *at, attempt.error.clone()),
            WebhookNext::Failed { error, .. } => ("failed", attempt.at, Some(error.clone())),
        };
        let finished = (status != "pending").then(|| format_timestamp(attempt.at));
        sqlx::query(
            "UPDATE webhook_events SET status = ?1, attempts = ?2, next_attempt_at = ?3, \
             leased_until = NULL, finished_at = ?4, last_error = ?5 WHERE id = ?6",
        )
        .bind(status)
        .bind(attempt.attempt)
        .bind(format_timestamp(next_at))
        .bind(finished)
        .bind(error)
        .bind(&delivery.id)
        .execute(&mut *tx)
        .await?;
        if let WebhookNext::Failed { error, disable } = next {
            if *disable {
                sqlx::query(
                    "INSERT INTO webhook_disabled_endpoints (url, disabled_at, event_id) \
                     VALUES (?1, ?2, ?3) ON CONFLICT (url) DO NOTHING",
                )
                .bind(&delivery.url)
                .bind(format_timestamp(attempt.at))
                .bind(&delivery.id)
                .execute(&mut *tx)
                .await?;
            }
            let task = callback_failed(delivery, error);
            let job = SlackJobRow::new(&delivery.proposal_id, &task, attempt.at)?;
            sqlx::query("INSERT INTO slack_outbox (proposal_id, task, due_at) VALUES (?1, ?2, ?3)")
                .bind(&job.proposal_id)
                .bind(&job.task)
                .bind(format_timestamp(job.due_at))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn endpoint_disabled(&self, url: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM webhook_disabled_endpoints WHERE url = ?1")
            .bind(url)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn webhook_events(&self, id: &ProposalId) -> Result<Vec<WebhookRecord>, StoreError> {
        // One snapshot for the events and their attempts, so an attempt recorded meanwhile is
        // seen with its event's new state or not at all.
        let mut tx = self.pool.begin().await?;
        let events = sqlx::query(
            "SELECT id, url, status, created_at, next_attempt_at, finished_at, last_error \
             FROM webhook_events WHERE proposal_id = ?1 ORDER BY created_at, id",
        )
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let mut records = Vec::with_capacity(events.len());
        for event in &events {
            let event_id: String = event.try_get("id")?;
            let attempts = sqlx::query(
                "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts \
                 WHERE event_id = ?1 ORDER BY attempt",
            )
            .bind(&event_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| {
                Ok(WebhookAttempt {
                    attempt: row.try_get("attempt")?,
                    at: timestamp(row, "at")?,
                    status_code: row.try_get("status_code")?,
                    error: row.try_get("error")?,
                    duration_ms: row.try_get("duration_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let status: String = event.try_get("status")?;
            let finished: Option<String> = event.try_get("finished_at")?;
            records.push(WebhookRecord {
                id: event_id,
                url: event.try_get("url")?,
                next_attempt_at: (status == "pending")
                    .then(|| timestamp(event, "next_attempt_at"))
                    .transpose()?,
                status,
                created_at: timestamp(event, "created_at")?,
                finished_at: finished
                    .map(|text| {
                        parse_timestamp(&text)
                            .map_err(|e| StoreError::Corrupt(format!("finished_at {text:?}: {e}")))
                    })
                    .transpose()?,
                last_error: event.try_get("last_error")?,
                attempts,
            });
        }
        tx.commit().await?;
        Ok(records)
    }

    async fn redeliver_webhook(&self, event: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let url: Option<String> = sqlx::query_scalar(
            "UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = ?1, \
             leased_until = NULL, finished_at = NULL WHERE id = ?2 RETURNING url",
        )
        .bind(format_timestamp(now))
        .bind(event)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(url) = url else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM webhook_attempts WHERE event_id = ?1")
            .bind(event)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_disabled_endpoints WHERE url = ?1")
            .bind(&url)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn latest_verdicts_of(&self, agent: &str, n: i64) -> Result<Vec<Status>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM proposals WHERE agent_id = ?1 AND status IN ('approved', 'rejected') \
             ORDER BY created_at DESC LIMIT ?2",
        )
        .bind(agent)
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|s| {
                Status::parse(s)
                    .ok_or_else(|| StoreError::Corrupt(format!("proposal status {s:?}")))
            })
            .collect()
    }

    async fn auto_approved_usage(
        &self,
        agent: &str,
        day: DateTime<Utc>,
        month: DateTime<Utc>,
    ) -> Result<crate::budgets::Usage, StoreError> {
        let row = sqlx::query(
            "WITH approved AS (\
               SELECT created_at, CASE WHEN json_type(content, '$.params.amount') IN ('integer', 'real') \
                 THEN json_extract(content, '$.params.amount') ELSE 0 END AS amount \
               FROM proposals WHERE agent_id = ?1 AND status = 'approved' AND created_at >= ?3 \
               AND json_extract(decision, '$.by.kind') = 'policy') \
             SELECT COALESCE(SUM(CASE WHEN created_at >= ?2 THEN amount END), 0.0) AS day_amount, \
                    COUNT(CASE WHEN created_at >= ?2 THEN 1 END) AS day_count, \
                    COALESCE(SUM(amount), 0.0) AS month_amount, COUNT(*) AS month_count FROM approved",
        )
        .bind(agent)
        .bind(format_timestamp(day))
        .bind(format_timestamp(month))
        .fetch_one(&self.pool)
        .await?;
        Ok(crate::budgets::Usage {
            day_amount: row.try_get("day_amount")?,
            day_count: row.try_get::<i64, _>("day_count")? as u64,
            month_amount: row.try_get("month_amount")?,
            month_count: row.try_get::<i64, _>("month_count")? as u64,
        })
    }

    async fn proposals_of(
        &self,
        agent: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Proposal>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, agent_id, status, content, decision, outcome, created_at, updated_at \
             FROM proposals WHERE agent_id = ?1 AND created_at >= ?2 ORDER BY created_at",
        )
        .bind(agent)
        .bind(format_timestamp(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(proposal_row).collect()
    }

    async fn pending_of(&self, agent: &str) -> Result<Vec<(ProposalId, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, content FROM proposals WHERE agent_id = ?1 AND status = 'pending' ORDER BY created_at",
        )
        .bind(agent)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let content: String = row.try_get("content")?;
                let action = serde_json::from_str::<serde_json::Value>(&content)?["action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let id = ProposalId::parse(&id)
                    .map_err(|e| StoreError::Corrupt(format!("proposals {id}: {}", e.0)))?;
                Ok((id, action))
            })
            .collect()
    }

    async fn card_roles_of(&self, agent: &str) -> Result<Vec<String>, StoreError> {
        let roles = sqlx::query_scalar(
            "SELECT DISTINCT m.role FROM slack_messages m JOIN proposals p ON p.id = m.proposal_id \
             WHERE p.agent_id = ?1 ORDER BY m.role",
        )
        .bind(agent)
        .fetch_all(&self.pool)
        .await?;
        Ok(roles)
    }

    async fn controls(&self) -> Result<Vec<crate::domain::Control>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, action, mode, reason, set_by, set_at FROM agent_controls \
             ORDER BY agent_id, action",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                control(ControlRow {
                    agent: row.try_get("agent_id")?,
                    action: row.try_get("action")?,
                    mode: row.try_get("mode")?,
                    reason: row.try_get("reason")?,
                    set_by: row.try_get("set_by")?,
                    set_at: timestamp(row, "set_at")?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
