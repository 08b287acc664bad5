//! PostgreSQL backend, for several replicas sharing one database. Writers of the audit chain
//! serialise on a transaction-scoped advisory lock, so every batch from every replica extends the
//! chain in turn; the engine's group commit keeps that lock's cost per proposal small.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::batch::{self, BatchTx};
use super::rows::{
    INSERT_CHUNK, IdempotencyRow, ProposalRow, SlackJobRow, StoredKey, TimerRow, ballot, due_timer,
    encode, posted_cards, slack_jobs, status_count,
};
use super::{Command, CommandResult, PoolSettings, Store, StoreError, TotpEnrollment};
use crate::audit::{AuditEvent, AuditFilter, ChainTip};
use crate::domain::{AgentId, DueTimer, PostedCard, Proposal, ProposalId, SlackJob, Status, Vote};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the advisory lock that makes one transaction at a time the audit chain's writer
/// ("cs-audit" in ASCII).
const AUDIT_CHAIN_LOCK: i64 = 0x6373_2d61_7564_6974;

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

/// One text column of a multi-row insert, as the array `UNNEST` takes.
fn column<T>(rows: &[T], field: impl Fn(&T) -> &String) -> Vec<&str> {
    rows.iter().map(|row| field(row).as_str()).collect()
}

struct Tx(Transaction<'static, Postgres>);

#[async_trait]
impl BatchTx for Tx {
    async fn chain_tip(&mut self) -> Result<ChainTip, StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_CHAIN_LOCK)
            .execute(&mut *self.0)
            .await?;
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
            sqlx::query(
                "INSERT INTO audit_events (seq, at, kind, proposal_id, actor, data, prev_hash, hash) \
                 SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], \
                 $5::text[], $6::text[], $7::text[], $8::text[])",
            )
            .bind(chunk.iter().map(|e| e.seq).collect::<Vec<_>>())
            .bind(chunk.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(column(chunk, |e| &e.kind))
            .bind(chunk.iter().map(|e| e.proposal_id.as_deref()).collect::<Vec<_>>())
            .bind(column(chunk, |e| &e.actor))
            .bind(column(chunk, |e| &e.data))
            .bind(column(chunk, |e| &e.prev_hash))
            .bind(column(chunk, |e| &e.hash))
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(&vote.voter)
        .bind(serde_json::to_string(&vote.eligible)?)
        .bind(vote.ballot.as_str())
        .bind(&vote.reason)
        .bind(dedupe)
        .bind(vote.at)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_timers(&mut self, rows: &[TimerRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO timers (proposal_id, timer, due_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[])",
            )
            .bind(column(chunk, |t| &t.proposal_id))
            .bind(column(chunk, |t| &t.timer))
            .bind(chunk.iter().map(|t| t.due_at).collect::<Vec<_>>())
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
        sqlx::query("UPDATE timers SET fired_at = $1, outcome = 'disarmed', leased_until = NULL WHERE proposal_id = $2 AND fired_at IS NULL")
            .bind(at)
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
        let done = sqlx::query("UPDATE timers SET fired_at = $1, outcome = $2, leased_until = NULL WHERE id = $3 AND fired_at IS NULL")
            .bind(at)
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
            "UPDATE timers SET fired_at = $1, leased_until = NULL, outcome = CASE WHEN EXISTS \
             (SELECT 1 FROM proposals WHERE id = $2 AND status = 'pending') THEN 'fired' ELSE 'disarmed' END \
             WHERE id = $3 AND fired_at IS NULL RETURNING outcome",
        )
        .bind(at)
        .bind(proposal.as_str())
        .bind(timer)
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(outcome)
    }

    async fn insert_slack_jobs(&mut self, rows: &[SlackJobRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO slack_outbox (proposal_id, task, due_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[])",
            )
            .bind(column(chunk, |j| &j.proposal_id))
            .bind(column(chunk, |j| &j.task))
            .bind(chunk.iter().map(|j| j.due_at).collect::<Vec<_>>())
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn insert_proposals(&mut self, rows: &[ProposalRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO proposals (id, agent_id, status, content, decision, outcome, created_at, updated_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::timestamptz[], $8::timestamptz[])",
            )
            .bind(column(chunk, |p| &p.id))
            .bind(column(chunk, |p| &p.agent_id))
            .bind(column(chunk, |p| &p.status))
            .bind(column(chunk, |p| &p.content))
            .bind(chunk.iter().map(|p| p.decision.as_deref()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|p| p.outcome.as_deref()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|p| p.created_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|p| p.updated_at).collect::<Vec<_>>())
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn insert_idempotency_keys(&mut self, rows: &[IdempotencyRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO idempotency_keys (agent_id, key, request_hash, proposal_id, response, created_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
            )
            .bind(column(chunk, |k| &k.agent_id))
            .bind(column(chunk, |k| &k.key))
            .bind(column(chunk, |k| &k.request_hash))
            .bind(column(chunk, |k| &k.proposal_id))
            .bind(column(chunk, |k| &k.response))
            .bind(chunk.iter().map(|k| k.created_at).collect::<Vec<_>>())
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
            "UPDATE proposals SET status = $1, decision = $2, outcome = $3, updated_at = $4 \
             WHERE id = $5 AND status = $6",
        )
        .bind(proposal.status.as_str())
        .bind(encoded.decision)
        .bind(encoded.outcome)
        .bind(proposal.updated_at)
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
            "SELECT request_hash, proposal_id, response FROM idempotency_keys WHERE agent_id = $1 AND key = $2",
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
        // The chain tip must be read after the advisory lock is granted, which needs a fresh
        // snapshot per statement: READ COMMITTED, whatever the database's default.
        let mut tx = Tx(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?);
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
                 WHERE proposal_id = $3 AND seq > $1 AND ($2::timestamptz IS NULL OR at >= $2) \
                 ORDER BY seq LIMIT $4"
        } else {
            "SELECT seq, at, kind, proposal_id, actor, data, prev_hash, hash FROM audit_events \
                 WHERE seq > $1 AND ($2::timestamptz IS NULL OR at >= $2) \
                 AND ($3::text IS NULL OR proposal_id = $3) ORDER BY seq LIMIT $4"
        };
        let rows = sqlx::query(sql)
            .bind(after_seq)
            .bind(filter.since)
            .bind(filter.proposal_id.as_deref())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
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
        // SKIP LOCKED: replicas claiming at the same moment take different rows, never wait.
        let rows = sqlx::query(
            "UPDATE slack_outbox SET leased_until = $1 WHERE id IN (\
               SELECT id FROM slack_outbox WHERE done_at IS NULL AND due_at <= $2 \
               AND (leased_until IS NULL OR leased_until <= $2) ORDER BY due_at, id LIMIT $3 \
               FOR UPDATE SKIP LOCKED) \
             RETURNING id, proposal_id, task, attempts",
        )
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        slack_jobs(&rows)
    }

    async fn finish_slack_job(
        &self,
        job: &SlackJob,
        posted: Option<&PostedCard>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(card) = posted {
            sqlx::query(
                "INSERT INTO slack_messages (proposal_id, role, channel, ts, posted_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (proposal_id, role) DO NOTHING",
            )
            .bind(job.proposal_id.as_str())
            .bind(&card.role)
            .bind(&card.channel)
            .bind(&card.ts)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE slack_outbox SET done_at = $1, leased_until = NULL WHERE id = $2")
            .bind(at)
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
            "UPDATE slack_outbox SET due_at = $1, attempts = attempts + $2, leased_until = NULL, \
             last_error = $3 WHERE id = $4",
        )
        .bind(due_at)
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
            "UPDATE slack_outbox SET done_at = $1, attempts = attempts + 1, leased_until = NULL, \
             last_error = $2 WHERE id = $3",
        )
        .bind(at)
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
            "UPDATE timers SET leased_until = $1 WHERE id IN (\
               SELECT id FROM timers WHERE fired_at IS NULL AND due_at <= $2 \
               AND (leased_until IS NULL OR leased_until <= $2) ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, proposal_id, timer, due_at",
        )
        .bind(lease_until)
        .bind(now)
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
                    row.try_get("due_at")?,
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
            "SELECT role, channel, ts FROM slack_messages WHERE proposal_id = $1 ORDER BY role",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        posted_cards(&rows)
    }

    async fn totp_enrollment(&self, user: &str) -> Result<Option<TotpEnrollment>, StoreError> {
        let row = sqlx::query(
            "SELECT secret, active, last_step FROM totp_enrollments WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TotpEnrollment {
                sealed_secret: row.try_get("secret")?,
                active: row.try_get("active")?,
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
            "INSERT INTO totp_enrollments (user_id, secret, active, created_at) VALUES ($1, $2, FALSE, $3) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, last_step = NULL \
             WHERE totp_enrollments.active = FALSE",
        )
        .bind(user)
        .bind(sealed_secret)
        .bind(at)
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
            "UPDATE totp_enrollments SET active = TRUE, last_step = $1, activated_at = $2 \
             WHERE user_id = $3 AND active = FALSE",
        )
        .bind(step)
        .bind(at)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn use_totp_step(&self, user: &str, step: i64) -> Result<bool, StoreError> {
        // The conditional update is the guard: of two submissions of one code, one wins.
        let done = sqlx::query(
            "UPDATE totp_enrollments SET last_step = $1 \
             WHERE user_id = $2 AND active = TRUE AND (last_step IS NULL OR last_step < $1)",
        )
        .bind(step)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_totp(&self, user: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM totp_enrollments WHERE user_id = $1")
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO step_up_failures (user_id, at) VALUES ($1, $2)")
            .bind(user)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        let recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM step_up_failures WHERE user_id = $1 AND at > $2",
        )
        .bind(user)
        .bind(at - crate::stepup::FAILURE_WINDOW)
        .fetch_one(&mut *tx)
        .await?;
        let locked = if recent >= crate::stepup::MAX_FAILURES {
            let until = at + crate::stepup::LOCKOUT;
            sqlx::query(
                "INSERT INTO step_up_locks (user_id, until) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO UPDATE SET until = excluded.until",
            )
            .bind(user)
            .bind(until)
            .execute(&mut *tx)
            .await?;
            // The lock has counted them: a fresh start once it ends.
            sqlx::query("DELETE FROM step_up_failures WHERE user_id = $1")
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
        let row = sqlx::query("SELECT until FROM step_up_locks WHERE user_id = $1 AND until > $2")
            .bind(user)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(row.try_get("until")?)).transpose()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
