//! What a batch writes through: the primitive reads and writes each backend's transaction
//! supplies ([`BatchTx`]), and the buffer that holds inserts back so that a batch writes each
//! table in one statement ([`Batch`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::{AuditEvent, ChainTip};
use crate::domain::{AgentId, Proposal, ProposalId, Status, Vote};
use crate::store::StoreError;
use crate::store::rows::{
    IdempotencyRow, ProposalRow, SlackJobRow, StoredKey, TimerRow, WebhookRow,
};

/// Primitive operations inside one open transaction. The transaction already holds whatever
/// lock makes it the only writer of the audit chain. Inserts take many rows at once, so a batch
/// writes each table in one statement.
#[async_trait]
pub(in crate::store) trait BatchTx: Send {
    async fn chain_tip(&mut self) -> Result<ChainTip, StoreError>;
    async fn insert_proposals(&mut self, rows: &[ProposalRow]) -> Result<(), StoreError>;
    async fn insert_idempotency_keys(&mut self, rows: &[IdempotencyRow]) -> Result<(), StoreError>;
    async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<(), StoreError>;
    async fn insert_slack_jobs(&mut self, rows: &[SlackJobRow]) -> Result<(), StoreError>;
    async fn insert_timers(&mut self, rows: &[TimerRow]) -> Result<(), StoreError>;
    async fn insert_webhooks(&mut self, rows: &[WebhookRow]) -> Result<(), StoreError>;
    async fn upsert_control(&mut self, control: &crate::domain::Control) -> Result<(), StoreError>;
    /// Deletes an override; false if there was none.
    async fn delete_control(&mut self, agent: &str, action: &str) -> Result<bool, StoreError>;
    /// Marks every unfired timer of a proposal disarmed (it was decided).
    async fn disarm_timers(&mut self, id: &ProposalId, at: DateTime<Utc>)
    -> Result<(), StoreError>;
    /// Marks one timer fired, if it has not fired yet: the guard that makes it fire once.
    async fn fire_timer(
        &mut self,
        timer: i64,
        at: DateTime<Utc>,
        outcome: &str,
    ) -> Result<bool, StoreError>;
    /// Marks one timer fired, if it has not fired yet, with outcome `fired` while its proposal is
    /// pending and `disarmed` otherwise, in one statement; answers the outcome, or `None` if it
    /// had already fired.
    async fn fire_timer_if_pending(
        &mut self,
        timer: i64,
        proposal: &ProposalId,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;
    /// Votes on a proposal with the dedupe key each was cast with, oldest first.
    async fn load_votes(&mut self, id: &ProposalId) -> Result<Vec<(Vote, String)>, StoreError>;
    async fn insert_vote(
        &mut self,
        id: &ProposalId,
        vote: &Vote,
        dedupe: &str,
    ) -> Result<(), StoreError>;
    async fn load_proposal(&mut self, id: &ProposalId) -> Result<Option<Proposal>, StoreError>;
    /// Writes `proposal`'s lifecycle columns if its stored status is still `from`.
    async fn update_lifecycle(
        &mut self,
        proposal: &Proposal,
        from: Status,
    ) -> Result<bool, StoreError>;
    /// What is remembered of this agent's key.
    async fn find_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<StoredKey>, StoreError>;
}

/// A transaction with its inserts held back until something needs to read or update: then (and
/// at the end) they are written, one statement per table. Every command therefore sees the
/// effects of the commands before it, while a batch of plain submissions costs a handful of
/// statements instead of two per proposal.
pub(super) struct Batch<'a> {
    pub(super) tx: &'a mut dyn BatchTx,
    pub(super) proposals: Vec<ProposalRow>,
    pub(super) keys: Vec<IdempotencyRow>,
    pub(super) events: Vec<AuditEvent>,
    pub(super) slack_jobs: Vec<SlackJobRow>,
    pub(super) timers: Vec<TimerRow>,
    pub(super) webhooks: Vec<WebhookRow>,
}

impl Batch<'_> {
    pub(super) async fn flush(&mut self) -> Result<(), StoreError> {
        if !self.proposals.is_empty() {
            self.tx.insert_proposals(&self.proposals).await?;
            self.proposals.clear();
        }
        if !self.keys.is_empty() {
            self.tx.insert_idempotency_keys(&self.keys).await?;
            self.keys.clear();
        }
        if !self.events.is_empty() {
            self.tx.append_audit(&self.events).await?;
            self.events.clear();
        }
        if !self.slack_jobs.is_empty() {
            self.tx.insert_slack_jobs(&self.slack_jobs).await?;
            self.slack_jobs.clear();
        }
        if !self.timers.is_empty() {
            self.tx.insert_timers(&self.timers).await?;
            self.timers.clear();
        }
        if !self.webhooks.is_empty() {
            self.tx.insert_webhooks(&self.webhooks).await?;
            self.webhooks.clear();
        }
        Ok(())
    }

    /// Only held-back proposal rows can change what this reads, so only they are written first;
    /// audit events, Slack jobs and timers stay held back for one statement each. (A batch of
    /// fired timers reads a proposal per timer: a full flush there would cost two statements
    /// more per timer.)
    pub(super) async fn load_proposal(
        &mut self,
        id: &ProposalId,
    ) -> Result<Option<Proposal>, StoreError> {
        self.flush_proposals().await?;
        self.tx.load_proposal(id).await
    }

    pub(super) async fn flush_proposals(&mut self) -> Result<(), StoreError> {
        if !self.proposals.is_empty() {
            self.tx.insert_proposals(&self.proposals).await?;
            self.proposals.clear();
        }
        Ok(())
    }

    pub(super) async fn update_lifecycle(
        &mut self,
        proposal: &Proposal,
        from: Status,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        self.tx.update_lifecycle(proposal, from).await
    }

    pub(super) async fn find_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        self.flush().await?;
        self.tx.find_idempotency(agent, key).await
    }
}
