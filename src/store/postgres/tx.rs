//! The transaction a command batch runs in: the primitives of [`BatchTx`], and `apply`, which
//! opens it and hands it to the shared batch logic. Its first statement takes the advisory lock
//! that makes it the audit chain's only writer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row, Transaction};

use super::PostgresStore;
use super::dialect;
use crate::audit::{AuditEvent, ChainTip};
use crate::domain::{AgentId, Proposal, ProposalId, Vote};
use crate::store::batch::{self, BatchTx};
use crate::store::rows::{
    DisarmRow, GrantRow, INSERT_CHUNK, IdempotencyRow, LifecycleRow, ProposalRow, SlackJobRow,
    StoredKey, TimerRow, VoteRow, WebhookRow,
};
use crate::store::rows::{proposal_row, vote_row};
use crate::store::sql::batch::postgres as shared;
use crate::store::{Command, CommandResult, StoreError};

/// Key of the advisory lock that makes one transaction at a time the audit chain's writer
/// ("cs-audit" in ASCII).
const AUDIT_CHAIN_LOCK: i64 = 0x6373_2d61_7564_6974;

/// One text column of a multi-row insert, as the array `UNNEST` takes.
fn column<T>(rows: &[T], field: impl Fn(&T) -> &String) -> Vec<&str> {
    rows.iter().map(|row| field(row).as_str()).collect()
}

/// A batch's proposals, by primary key.
pub(super) const SELECT_PROPOSALS: &str = "SELECT id, agent_id, status, content, decision, outcome, created_at, updated_at \
     FROM proposals WHERE id = ANY($1::text[])";

/// The votes on a batch's proposals.
pub(super) const SELECT_VOTES_OF: &str = "SELECT proposal_id, voter, eligible, ballot, reason, dedupe, at \
     FROM votes WHERE proposal_id = ANY($1::text[]) ORDER BY proposal_id, at, voter";

/// Decided proposals' unfired timers.
pub(super) const DISARM_TIMERS: &str = "UPDATE timers t SET fired_at = d.at, outcome = 'disarmed', leased_until = NULL \
     FROM UNNEST($1::text[], $2::timestamptz[]) AS d(proposal_id, at) \
     WHERE t.proposal_id = d.proposal_id AND t.fired_at IS NULL";

/// Lifecycle columns of many proposals, each only if its status is still the one read.
pub(super) const UPDATE_LIFECYCLES: &str = "UPDATE proposals p SET status = u.status, decision = u.decision, \
     outcome = u.outcome, updated_at = u.updated_at \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[]) \
     AS u(id, status, decision, outcome, updated_at, from_status) \
     WHERE p.id = u.id AND p.status = u.from_status";

struct Tx(Transaction<'static, Postgres>);

#[async_trait]
impl BatchTx for Tx {
    async fn chain_tip(&mut self) -> Result<ChainTip, StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_CHAIN_LOCK)
            .execute(&mut *self.0)
            .await?;
        shared::chain_tip(&mut self.0).await
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

    async fn insert_webhooks(&mut self, rows: &[WebhookRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO webhook_events (id, proposal_id, agent_id, url, body, created_at, next_attempt_at) \
                 SELECT id, p, a, u, b, t, t FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::timestamptz[]) AS e(id, p, a, u, b, t)",
            )
            .bind(column(chunk, |e| &e.id))
            .bind(column(chunk, |e| &e.proposal_id))
            .bind(column(chunk, |e| &e.agent_id))
            .bind(column(chunk, |e| &e.url))
            .bind(column(chunk, |e| &e.body))
            .bind(chunk.iter().map(|e| e.created_at).collect::<Vec<_>>())
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn upsert_control(&mut self, control: &crate::domain::Control) -> Result<(), StoreError> {
        shared::upsert_control(&mut self.0, control).await
    }

    async fn delete_control(&mut self, agent: &str, action: &str) -> Result<bool, StoreError> {
        shared::delete_control(&mut self.0, agent, action).await
    }

    async fn begin_totp(
        &mut self,
        user: &str,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        crate::store::sql::step_up::postgres::begin_totp_enrollment(
            &mut self.0,
            user,
            sealed_secret,
            at,
        )
        .await
    }

    async fn activate_totp(
        &mut self,
        user: &str,
        step: i64,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        crate::store::sql::step_up::postgres::activate_totp(
            &mut self.0,
            user,
            step,
            sealed_secret,
            at,
        )
        .await
    }

    async fn use_totp_step(
        &mut self,
        user: &str,
        step: i64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        crate::store::sql::step_up::postgres::use_totp_step(&mut self.0, user, step, at).await
    }

    async fn delete_totp(&mut self, user: &str) -> Result<bool, StoreError> {
        crate::store::sql::step_up::postgres::delete_totp(&mut self.0, user).await
    }

    async fn step_up_failure(
        &mut self,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        crate::store::sql::step_up::postgres::step_up_failure(&mut self.0, user, at).await
    }

    async fn redeliver_webhook(
        &mut self,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<String, crate::store::Redelivery>, StoreError> {
        crate::store::sql::webhooks::postgres::redeliver_webhook(&mut self.0, event, now).await
    }

    async fn record_webhook_attempt(
        &mut self,
        delivery: &crate::domain::WebhookDelivery,
        attempt: &crate::store::WebhookAttempt,
        next: &crate::store::WebhookNext,
    ) -> Result<(), StoreError> {
        crate::store::sql::webhooks::postgres::record_attempt(&mut self.0, delivery, attempt, next)
            .await
    }

    async fn finish_report_post(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        crate::store::sql::reports::postgres::finish_post(&mut self.0, id, at).await
    }

    async fn pending_of(&mut self, agent: &str) -> Result<Vec<String>, StoreError> {
        shared::pending_of(&mut self.0, agent).await
    }

    async fn load_proposals(&mut self, ids: &[&str]) -> Result<Vec<Proposal>, StoreError> {
        let rows = sqlx::query(SELECT_PROPOSALS)
            .bind(ids)
            .fetch_all(&mut *self.0)
            .await?;
        rows.iter().map(proposal_row).collect()
    }

    async fn load_votes(
        &mut self,
        ids: &[&str],
    ) -> Result<Vec<(String, Vote, String)>, StoreError> {
        let rows = sqlx::query(SELECT_VOTES_OF)
            .bind(ids)
            .fetch_all(&mut *self.0)
            .await?;
        rows.iter()
            .map(|row| {
                let (vote, dedupe) = vote_row(row)?;
                Ok((row.try_get("proposal_id")?, vote, dedupe))
            })
            .collect()
    }

    async fn insert_votes(&mut self, rows: &[VoteRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO votes (proposal_id, voter, eligible, ballot, reason, dedupe, at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::timestamptz[])",
            )
            .bind(column(chunk, |v| &v.proposal_id))
            .bind(column(chunk, |v| &v.voter))
            .bind(column(chunk, |v| &v.eligible))
            .bind(chunk.iter().map(|v| v.ballot).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|v| v.reason.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(column(chunk, |v| &v.dedupe))
            .bind(chunk.iter().map(|v| v.at).collect::<Vec<_>>())
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn insert_grants(&mut self, rows: &[GrantRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO approval_grants (proposal_id, user_id, granted_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) \
                 ON CONFLICT (proposal_id, user_id) DO NOTHING",
            )
            .bind(column(chunk, |g| &g.proposal_id))
            .bind(column(chunk, |g| &g.user_id))
            .bind(chunk.iter().map(|g| g.granted_at).collect::<Vec<_>>())
            .execute(&mut *self.0)
            .await?;
        }
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

    async fn disarm_timers(&mut self, rows: &[DisarmRow]) -> Result<(), StoreError> {
        // Reaches the unfired timers through `timers_unfired_by_proposal`, also as a generic
        // plan: the cost of a decision does not grow with the timers still armed elsewhere.
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(DISARM_TIMERS)
                .bind(column(chunk, |d| &d.proposal_id))
                .bind(chunk.iter().map(|d| d.at).collect::<Vec<_>>())
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    async fn fire_timer(
        &mut self,
        timer: i64,
        at: DateTime<Utc>,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        shared::fire_timer(&mut self.0, timer, at, outcome).await
    }

    async fn fire_timer_if_pending(
        &mut self,
        timer: i64,
        proposal: &ProposalId,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        shared::fire_timer_if_pending(&mut self.0, timer, proposal, at).await
    }

    async fn insert_slack_jobs(&mut self, rows: &[SlackJobRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            sqlx::query(
                "INSERT INTO slack_outbox (proposal_id, task, due_at, channel) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[])",
            )
            .bind(column(chunk, |j| &j.proposal_id))
            .bind(column(chunk, |j| &j.task))
            .bind(chunk.iter().map(|j| j.due_at).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|j| j.channel.as_deref())
                    .collect::<Vec<_>>(),
            )
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

    async fn update_lifecycles(&mut self, rows: &[LifecycleRow]) -> Result<u64, StoreError> {
        let mut written = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let done = sqlx::query(UPDATE_LIFECYCLES)
                .bind(column(chunk, |r| &r.id))
                .bind(chunk.iter().map(|r| r.status).collect::<Vec<_>>())
                .bind(
                    chunk
                        .iter()
                        .map(|r| r.decision.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    chunk
                        .iter()
                        .map(|r| r.outcome.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(chunk.iter().map(|r| r.updated_at).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.from).collect::<Vec<_>>())
                .execute(&mut *self.0)
                .await?;
            written += done.rows_affected();
        }
        Ok(written)
    }

    async fn find_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        shared::find_idempotency(&mut self.0, agent, key).await
    }
}

#[async_trait]
impl crate::store::Commands for PostgresStore {
    async fn apply(
        &self,
        commands: Vec<Command>,
        at: DateTime<Utc>,
    ) -> Result<Vec<CommandResult>, StoreError> {
        let mut tx = Tx(self.pool.begin_with(dialect::BEGIN_BATCH).await?);
        let results = batch::run(&mut tx, commands, at).await?;
        tx.0.commit().await?;
        Ok(results)
    }
}
