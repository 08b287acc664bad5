//! What a batch writes through: the primitive reads and writes each backend's transaction
//! supplies ([`BatchTx`]), and the buffer that holds writes back so that a batch reads and
//! writes each table in a constant number of statements, however many commands it holds
//! ([`Batch`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::{AuditEvent, ChainTip};
use crate::domain::{AgentId, Proposal, ProposalId, Status, Vote};
use crate::store::StoreError;
use crate::store::rows::{
    DisarmRow, GrantRow, IdempotencyRow, LifecycleRow, ProposalRow, SlackJobRow, StoredKey,
    TimerRow, VoteRow, WebhookRow,
};

/// Primitive operations inside one open transaction. The transaction already holds whatever
/// lock makes it the only writer of the audit chain (and so of proposals and votes: every
/// change to them is a command batch). Reads and writes take many rows at once, so a batch
/// touches each table in one statement (PostgreSQL) or in cached per-row statements without a
/// round trip (SQLite).
#[async_trait]
pub(in crate::store) trait BatchTx: Send {
    async fn chain_tip(&mut self) -> Result<ChainTip, StoreError>;
    async fn insert_proposals(&mut self, rows: &[ProposalRow]) -> Result<(), StoreError>;
    async fn insert_idempotency_keys(&mut self, rows: &[IdempotencyRow]) -> Result<(), StoreError>;
    async fn append_audit(&mut self, events: &[AuditEvent]) -> Result<(), StoreError>;
    async fn insert_slack_jobs(&mut self, rows: &[SlackJobRow]) -> Result<(), StoreError>;
    async fn insert_timers(&mut self, rows: &[TimerRow]) -> Result<(), StoreError>;
    async fn insert_webhooks(&mut self, rows: &[WebhookRow]) -> Result<(), StoreError>;
    async fn insert_votes(&mut self, rows: &[VoteRow]) -> Result<(), StoreError>;
    /// Remembers approvals granted by escalation; a grant already there is kept.
    async fn insert_grants(&mut self, rows: &[GrantRow]) -> Result<(), StoreError>;
    async fn upsert_control(&mut self, control: &crate::domain::Control) -> Result<(), StoreError>;
    /// Deletes an override; false if there was none.
    async fn delete_control(&mut self, agent: &str, action: &str) -> Result<bool, StoreError>;
    /// Marks every unfired timer of each proposal disarmed (it was decided).
    async fn disarm_timers(&mut self, rows: &[DisarmRow]) -> Result<(), StoreError>;
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
    /// The ids of an agent's pending proposals, oldest first.
    async fn pending_of(&mut self, agent: &str) -> Result<Vec<String>, StoreError>;
    /// The proposals among `ids` that exist (any order).
    async fn load_proposals(&mut self, ids: &[&str]) -> Result<Vec<Proposal>, StoreError>;
    /// Votes on the proposals `ids`: (proposal id, vote, the dedupe key it was cast with), each
    /// proposal's oldest first.
    async fn load_votes(&mut self, ids: &[&str])
    -> Result<Vec<(String, Vote, String)>, StoreError>;
    /// Writes each row's lifecycle columns where the stored status is still its `from`;
    /// answers how many rows were written.
    async fn update_lifecycles(&mut self, rows: &[LifecycleRow]) -> Result<u64, StoreError>;
    /// Starts (or restarts) `user`'s inactive enrollment; false if an active one is there.
    async fn begin_totp(
        &mut self,
        user: &str,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Activates `user`'s pending enrollment at `step` if its secret is still `sealed_secret`;
    /// false if there is none (or it was restarted meanwhile).
    async fn activate_totp(
        &mut self,
        user: &str,
        step: i64,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Spends `step` of `user`'s active enrollment; false if it or a later one was spent, or
    /// the reviewer is locked out at `at`.
    async fn use_totp_step(
        &mut self,
        user: &str,
        step: i64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Removes `user`'s enrollment; false if there was none.
    async fn delete_totp(&mut self, user: &str) -> Result<bool, StoreError>;
    /// Counts a wrong step-up answer; answers the lock it sets, if it is the one too many.
    async fn step_up_failure(
        &mut self,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Starts a callback event over and lifts its endpoint's 410 block, unless a worker holds
    /// it; answers its proposal, or why not.
    async fn redeliver_webhook(
        &mut self,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<String, crate::store::Redelivery>, StoreError>;
    /// Records a callback delivery attempt and what follows (`sql::webhooks::record_attempt`).
    async fn record_webhook_attempt(
        &mut self,
        delivery: &crate::domain::WebhookDelivery,
        attempt: &crate::store::WebhookAttempt,
        next: &crate::store::WebhookNext,
    ) -> Result<(), StoreError>;
    /// Marks a report posted.
    async fn finish_report_post(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// What is remembered of this agent's key.
    async fn find_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<StoredKey>, StoreError>;
}

/// A proposal as this batch knows it: read once (or found missing), then kept up to date by
/// the batch's own commands. Every change to proposals and votes is a command batch holding the
/// chain's lock, so nothing else changes them while the batch runs.
struct Known {
    proposal: Option<Proposal>,
    /// Its status as stored when the batch read it: the guard of its conditional update.
    stored_status: Option<Status>,
    /// Every vote with its dedupe key, oldest first; `None` until read.
    votes: Option<Vec<(Vote, String)>>,
    /// The batch changed its lifecycle columns: written at the next flush.
    changed: bool,
}

/// A transaction with its writes held back until something needs the database to show them:
/// then (and at the end) they are written, one statement per table. Proposals and their votes
/// are read once per batch (all the batch's proposals in one statement) and kept here, so a
/// batch of 256 clicks costs a handful of statements, not a dozen per click.
pub(super) struct Batch<'a> {
    pub(super) tx: &'a mut dyn BatchTx,
    pub(super) proposals: Vec<ProposalRow>,
    pub(super) keys: Vec<IdempotencyRow>,
    pub(super) events: Vec<AuditEvent>,
    pub(super) slack_jobs: Vec<SlackJobRow>,
    pub(super) timers: Vec<TimerRow>,
    pub(super) webhooks: Vec<WebhookRow>,
    pub(super) grants: Vec<GrantRow>,
    votes: Vec<VoteRow>,
    disarms: Vec<DisarmRow>,
    known: HashMap<ProposalId, Known>,
}

impl<'a> Batch<'a> {
    pub(super) fn new(tx: &'a mut dyn BatchTx) -> Self {
        Self {
            tx,
            proposals: Vec::new(),
            keys: Vec::new(),
            events: Vec::new(),
            slack_jobs: Vec::new(),
            timers: Vec::new(),
            webhooks: Vec::new(),
            grants: Vec::new(),
            votes: Vec::new(),
            disarms: Vec::new(),
            known: HashMap::new(),
        }
    }

    /// Reads the proposals the batch's commands name, and their votes, in two statements.
    pub(super) async fn prefetch(&mut self, ids: &[&ProposalId]) -> Result<(), StoreError> {
        let mut wanted: Vec<&str> = ids
            .iter()
            .filter(|id| !self.known.contains_key(**id))
            .map(|id| id.as_str())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let proposals = self.tx.load_proposals(&wanted).await?;
        let votes = self.tx.load_votes(&wanted).await?;
        for id in &wanted {
            let id = ProposalId::parse(id).map_err(|e| StoreError::Other(e.0))?;
            self.known.insert(
                id,
                Known {
                    proposal: None,
                    stored_status: None,
                    votes: Some(Vec::new()),
                    changed: false,
                },
            );
        }
        for proposal in proposals {
            if let Some(known) = self.known.get_mut(&proposal.id) {
                known.stored_status = Some(proposal.status);
                known.proposal = Some(proposal);
            }
        }
        for (id, vote, dedupe) in votes {
            let id = ProposalId::parse(&id).map_err(|e| StoreError::Corrupt(e.0))?;
            if let Some(votes) = self.known.get_mut(&id).and_then(|k| k.votes.as_mut()) {
                votes.push((vote, dedupe));
            }
        }
        Ok(())
    }

    /// The proposal as this batch sees it (its own changes included).
    pub(super) async fn load_proposal(
        &mut self,
        id: &ProposalId,
    ) -> Result<Option<Proposal>, StoreError> {
        if !self.known.contains_key(id) {
            // Submitted earlier in this very batch, or not named by any command up front.
            self.flush_proposals().await?;
            self.prefetch(&[id]).await?;
        }
        Ok(self.known.get(id).and_then(|k| k.proposal.clone()))
    }

    /// Every vote on `id` with its dedupe key, oldest first (this batch's votes included).
    pub(super) async fn votes(
        &mut self,
        id: &ProposalId,
    ) -> Result<Vec<(Vote, String)>, StoreError> {
        if !self.known.contains_key(id) {
            self.load_proposal(id).await?;
        }
        Ok(self
            .known
            .get(id)
            .and_then(|k| k.votes.clone())
            .unwrap_or_default())
    }

    /// Records a vote (written at the next flush).
    pub(super) async fn insert_vote(
        &mut self,
        id: &ProposalId,
        vote: &Vote,
        dedupe: &str,
    ) -> Result<(), StoreError> {
        self.votes(id).await?;
        self.votes.push(VoteRow::new(id, vote, dedupe)?);
        if let Some(votes) = self.known.get_mut(id).and_then(|k| k.votes.as_mut()) {
            votes.push((vote.clone(), dedupe.to_owned()));
        }
        Ok(())
    }

    /// Moves `proposal`'s lifecycle columns if its status (as this batch sees it) is still
    /// `from`; false otherwise. Written at the next flush, guarded there by the stored status.
    pub(super) async fn update_lifecycle(
        &mut self,
        proposal: &Proposal,
        from: Status,
    ) -> Result<bool, StoreError> {
        if self.load_proposal(&proposal.id).await?.map(|p| p.status) != Some(from) {
            return Ok(false);
        }
        let known = self.known.get_mut(&proposal.id).expect("loaded just above");
        known.proposal = Some(proposal.clone());
        known.changed = true;
        Ok(true)
    }

    /// Disarms the unfired timers of a decided proposal (at the next flush).
    pub(super) fn disarm_timers(&mut self, id: &ProposalId, at: DateTime<Utc>) {
        self.disarms.push(DisarmRow {
            proposal_id: id.to_string(),
            at,
        });
    }

    /// Writes everything held back.
    pub(super) async fn flush(&mut self) -> Result<(), StoreError> {
        self.flush_proposals().await?;
        if !self.keys.is_empty() {
            self.tx.insert_idempotency_keys(&self.keys).await?;
            self.keys.clear();
        }
        if !self.votes.is_empty() {
            self.tx.insert_votes(&self.votes).await?;
            self.votes.clear();
        }
        if !self.disarms.is_empty() {
            self.tx.disarm_timers(&self.disarms).await?;
            self.disarms.clear();
        }
        if !self.grants.is_empty() {
            self.tx.insert_grants(&self.grants).await?;
            self.grants.clear();
        }
        crash_point::before_audit(&self.events);
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

    /// Writes the held-back proposal rows and lifecycle changes, the only writes a statement
    /// that reads `proposals` itself (a timer firing only while its proposal is pending) can
    /// see; audit events, Slack jobs and timers stay held back for one statement each.
    pub(super) async fn flush_proposals(&mut self) -> Result<(), StoreError> {
        if !self.proposals.is_empty() {
            self.tx.insert_proposals(&self.proposals).await?;
            self.proposals.clear();
        }
        let mut rows = Vec::new();
        for known in self.known.values_mut().filter(|k| k.changed) {
            let (Some(proposal), Some(from)) = (&known.proposal, known.stored_status) else {
                continue;
            };
            rows.push(LifecycleRow::new(proposal, from)?);
            known.stored_status = Some(proposal.status);
            known.changed = false;
        }
        if !rows.is_empty() {
            let written = self.tx.update_lifecycles(&rows).await?;
            // Cannot happen while every change goes through a batch under the chain's lock;
            // if it ever does, the writer retries each command alone and the guard holds.
            if written != rows.len() as u64 {
                return Err(StoreError::Other(format!(
                    "{} of {} proposals changed underneath the batch",
                    rows.len() as u64 - written,
                    rows.len()
                )));
            }
        }
        Ok(())
    }

    /// What is remembered of this agent's key, including keys this batch holds back.
    pub(super) async fn find_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        if let Some(held) = self
            .keys
            .iter()
            .find(|k| k.agent_id == agent.as_str() && k.key == key)
        {
            return Ok(Some(StoredKey {
                request_hash: held.request_hash.clone(),
                proposal_id: held.proposal_id.clone(),
                response: held.response.clone(),
            }));
        }
        self.tx.find_idempotency(agent, key).await
    }
}

/// A test's way to kill the process between a change and its audit events: with
/// `COUNTERSIGN_CRASH_BEFORE_AUDIT=<kind>` set, a batch about to append an event of that kind
/// aborts the process, its changes written but not committed (`tests/it/crash_atomicity.rs`
/// then finds neither). Unset, as in production, it costs one read of a cached `None`.
mod crash_point {
    use std::sync::OnceLock;

    use crate::audit::AuditEvent;

    pub(super) fn before_audit(events: &[AuditEvent]) {
        static KIND: OnceLock<Option<String>> = OnceLock::new();
        let kind = KIND.get_or_init(|| std::env::var("COUNTERSIGN_CRASH_BEFORE_AUDIT").ok());
        if let Some(kind) = kind
            && events.iter().any(|event| event.kind == *kind)
        {
            eprintln!("COUNTERSIGN_CRASH_BEFORE_AUDIT: aborting before writing {kind}");
            std::process::abort();
        }
    }
}
