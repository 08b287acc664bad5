//! The transaction a command batch runs in: the primitives of [`BatchTx`], and `apply`, which
//! opens it with the write lock and hands it to the shared batch logic.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::query_builder::Separated;
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::SqliteStore;
use super::dialect;
use crate::audit::{AuditEvent, ChainTip};
use crate::domain::{AgentId, Proposal, ProposalId, Vote};
use crate::store::batch::{self, BatchTx};
use crate::store::rows::{
    DisarmRow, GrantRow, INSERT_CHUNK, IdempotencyRow, LifecycleRow, ProposalRow, SlackJobRow,
    StoredKey, TimerRow, VoteRow, WebhookRow,
};
use crate::store::rows::{proposal_row, vote_row};
use crate::store::sql::Timestamp;
use crate::store::sql::batch::sqlite as shared;
use crate::store::sql::proposals::{SELECT_PROPOSAL, SELECT_VOTES};
use crate::store::{Command, CommandResult, StoreError};

struct Tx(Transaction<'static, Sqlite>);

impl Tx {
    /// `head` (`INSERT INTO table (columns) `) with a VALUES list of `rows`, [`INSERT_CHUNK`] to a
    /// statement, each row's values bound by `bind`. The text varies with the row count: not
    /// worth a slot in the statement cache.
    async fn insert_rows<T>(
        &mut self,
        head: &'static str,
        rows: &[T],
        mut bind: impl FnMut(Separated<'_, Sqlite, &'static str>, &T),
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<Sqlite>::new(head);
            insert.push_values(chunk, &mut bind);
            insert
                .build()
                .persistent(false)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl BatchTx for Tx {
    async fn chain_tip(&mut self) -> Result<ChainTip, StoreError> {
        // One writer at a time (BEGIN IMMEDIATE): the tip cannot move under this batch.
        shared::chain_tip(&mut self.0).await
    }

    async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.insert_rows(
            "INSERT INTO audit_events (seq, at, kind, proposal_id, actor, data, prev_hash, hash) ",
            events,
            |mut row, e| {
                row.push_bind(e.seq)
                    .push_bind(Timestamp(e.at))
                    .push_bind(&e.kind)
                    .push_bind(&e.proposal_id)
                    .push_bind(&e.actor)
                    .push_bind(&e.data)
                    .push_bind(&e.prev_hash)
                    .push_bind(&e.hash);
            },
        )
        .await
    }

    async fn load_votes(
        &mut self,
        ids: &[&str],
    ) -> Result<Vec<(String, Vote, String)>, StoreError> {
        // In-process: one cached statement per proposal costs no round trip.
        let mut votes = Vec::new();
        for id in ids {
            let rows = sqlx::query(SELECT_VOTES)
                .bind(*id)
                .fetch_all(&mut *self.0)
                .await?;
            for row in &rows {
                let (vote, dedupe) = vote_row(row)?;
                votes.push(((*id).to_owned(), vote, dedupe));
            }
        }
        Ok(votes)
    }

    async fn insert_votes(&mut self, rows: &[VoteRow]) -> Result<(), StoreError> {
        self.insert_rows(
            "INSERT INTO votes (proposal_id, voter, eligible, ballot, reason, dedupe, at) ",
            rows,
            |mut row, v| {
                row.push_bind(&v.proposal_id)
                    .push_bind(&v.voter)
                    .push_bind(&v.eligible)
                    .push_bind(v.ballot)
                    .push_bind(&v.reason)
                    .push_bind(&v.dedupe)
                    .push_bind(Timestamp(v.at));
            },
        )
        .await
    }

    async fn insert_grants(&mut self, rows: &[GrantRow]) -> Result<(), StoreError> {
        for grant in rows {
            sqlx::query(
                "INSERT INTO approval_grants (proposal_id, user_id, granted_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (proposal_id, user_id) DO NOTHING",
            )
            .bind(&grant.proposal_id)
            .bind(&grant.user_id)
            .bind(Timestamp(grant.granted_at))
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn insert_timers(&mut self, rows: &[TimerRow]) -> Result<(), StoreError> {
        self.insert_rows(
            "INSERT INTO timers (proposal_id, timer, due_at) ",
            rows,
            |mut row, t| {
                row.push_bind(&t.proposal_id)
                    .push_bind(&t.timer)
                    .push_bind(Timestamp(t.due_at));
            },
        )
        .await
    }

    async fn disarm_timers(&mut self, rows: &[DisarmRow]) -> Result<(), StoreError> {
        for row in rows {
            sqlx::query("UPDATE timers SET fired_at = $1, outcome = 'disarmed', leased_until = NULL WHERE proposal_id = $2 AND fired_at IS NULL")
                .bind(Timestamp(row.at))
                .bind(&row.proposal_id)
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
        self.insert_rows(
            "INSERT INTO slack_outbox (proposal_id, task, due_at, channel) ",
            rows,
            |mut row, job| {
                row.push_bind(&job.proposal_id)
                    .push_bind(&job.task)
                    .push_bind(Timestamp(job.due_at))
                    .push_bind(&job.channel);
            },
        )
        .await
    }

    async fn insert_webhooks(&mut self, rows: &[WebhookRow]) -> Result<(), StoreError> {
        self.insert_rows("INSERT INTO webhook_events (id, proposal_id, agent_id, url, body, created_at, next_attempt_at) ", rows, |mut row, event| {
            let at = Timestamp(event.created_at);
            row.push_bind(&event.id)
                .push_bind(&event.proposal_id)
                .push_bind(&event.agent_id)
                .push_bind(&event.url)
                .push_bind(&event.body)
                .push_bind(at)
                .push_bind(at);
        })
        .await
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
        crate::store::sql::step_up::sqlite::begin_totp_enrollment(
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
        crate::store::sql::step_up::sqlite::activate_totp(
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
        crate::store::sql::step_up::sqlite::use_totp_step(&mut self.0, user, step, at).await
    }

    async fn delete_totp(&mut self, user: &str) -> Result<bool, StoreError> {
        crate::store::sql::step_up::sqlite::delete_totp(&mut self.0, user).await
    }

    async fn step_up_failure(
        &mut self,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        crate::store::sql::step_up::sqlite::step_up_failure(&mut self.0, user, at).await
    }

    async fn redeliver_webhook(
        &mut self,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<String, crate::store::Redelivery>, StoreError> {
        crate::store::sql::webhooks::sqlite::redeliver_webhook(&mut self.0, event, now).await
    }

    async fn record_webhook_attempt(
        &mut self,
        delivery: &crate::domain::WebhookDelivery,
        attempt: &crate::store::WebhookAttempt,
        next: &crate::store::WebhookNext,
    ) -> Result<(), StoreError> {
        crate::store::sql::webhooks::sqlite::record_attempt(&mut self.0, delivery, attempt, next)
            .await
    }

    async fn finish_report_post(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        crate::store::sql::reports::sqlite::finish_post(&mut self.0, id, at).await
    }

    async fn pending_of(&mut self, agent: &str) -> Result<Vec<String>, StoreError> {
        shared::pending_of(&mut self.0, agent).await
    }

    async fn load_proposals(&mut self, ids: &[&str]) -> Result<Vec<Proposal>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = sqlx::query(SELECT_PROPOSAL)
                .bind(*id)
                .fetch_optional(&mut *self.0)
                .await?
            {
                found.push(proposal_row(&row)?);
            }
        }
        Ok(found)
    }

    async fn insert_proposals(&mut self, rows: &[ProposalRow]) -> Result<(), StoreError> {
        self.insert_rows("INSERT INTO proposals (id, agent_id, status, content, decision, outcome, created_at, updated_at) ", rows, |mut row, p| {
            row.push_bind(&p.id)
                .push_bind(&p.agent_id)
                .push_bind(&p.status)
                .push_bind(&p.content)
                .push_bind(&p.decision)
                .push_bind(&p.outcome)
                .push_bind(Timestamp(p.created_at))
                .push_bind(Timestamp(p.updated_at));
        })
        .await
    }

    async fn insert_idempotency_keys(&mut self, rows: &[IdempotencyRow]) -> Result<(), StoreError> {
        self.insert_rows("INSERT INTO idempotency_keys (agent_id, key, request_hash, proposal_id, response, created_at) ", rows, |mut row, k| {
            row.push_bind(&k.agent_id)
                .push_bind(&k.key)
                .push_bind(&k.request_hash)
                .push_bind(&k.proposal_id)
                .push_bind(&k.response)
                .push_bind(Timestamp(k.created_at));
        })
        .await
    }

    async fn update_lifecycles(&mut self, rows: &[LifecycleRow]) -> Result<u64, StoreError> {
        let mut written = 0;
        for row in rows {
            let done = sqlx::query(
                "UPDATE proposals SET status = $1, decision = $2, outcome = $3, updated_at = $4 \
                 WHERE id = $5 AND status = $6",
            )
            .bind(row.status)
            .bind(&row.decision)
            .bind(&row.outcome)
            .bind(Timestamp(row.updated_at))
            .bind(&row.id)
            .bind(row.from)
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
impl crate::store::Commands for SqliteStore {
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
