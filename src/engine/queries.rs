//! What the adapters may read, and the few operator actions that are not proposal commands:
//! the core's narrow query interface. The adapters (HTTP, Slack) never reach the store
//! themselves; the callback, report and SLA workers drive their leased queues through the
//! core (`deliveries.rs`, `timers.rs`); only the Slack outbox worker holds the store, for its
//! own queue's claims and leases and the reads a card is rendered from.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError};
use crate::domain::report::{Period, ReportPost};
use crate::domain::{Proposal, ProposalId, Status};
use crate::store::{Command, CommandResult, QueueBacklog, Redelivery, WebhookRecord};

impl Engine {
    /// Any proposal, as reviewers and operators see it (not scoped to an agent: that is
    /// [`Engine::get`]).
    pub async fn proposal(&self, id: &ProposalId) -> Result<Option<Proposal>, EngineError> {
        Ok(self.store.proposal(id).await?)
    }

    /// The callbacks owed for a proposal and their attempts; `None` if there is no such
    /// proposal.
    pub async fn deliveries(
        &self,
        id: &ProposalId,
    ) -> Result<Option<Vec<WebhookRecord>>, EngineError> {
        if self.store.proposal(id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.store.webhook_events(id).await?))
    }

    /// Delivers a callback again from the start of its schedule (same webhook id), and lifts
    /// a 410 block on its endpoint, audited as `by`'s; not while a worker is delivering it.
    pub async fn redeliver(&self, event: &str, by: &str) -> Result<Redelivery, EngineError> {
        let command = Command::Redeliver {
            event: event.to_owned(),
            by: by.to_owned(),
        };
        match self.apply(command).await? {
            CommandResult::Redelivered(outcome) => {
                if outcome == Redelivery::Started {
                    self.callback_work.notify_one();
                }
                Ok(outcome)
            }
            other => Err(EngineError::Store(crate::store::StoreError::Other(
                format!("a redelivery answered {other:?}"),
            ))),
        }
    }

    /// SLA reports for `roles` over `period`, up to now.
    pub async fn sla_reports(
        &self,
        roles: &[String],
        period: Period,
    ) -> Result<Vec<crate::report::SlaReport>, EngineError> {
        let now = self.clock.now();
        Ok(crate::report::build_all(self.store.as_ref(), roles, period, now).await?)
    }

    /// An agent's earned-autonomy record over `period`, judged by `criteria`.
    pub async fn autonomy_report(
        &self,
        agent: &crate::manifest::Agent,
        period: Period,
        criteria: &crate::autonomy::Criteria,
    ) -> Result<crate::autonomy::AutonomyReport, EngineError> {
        let now = self.clock.now();
        let report = crate::autonomy::report(self.store.as_ref(), agent, period, now, criteria);
        Ok(report.await?)
    }

    /// Records a report owed to a channel (false: the same one is already owed).
    pub async fn enqueue_report(&self, post: &ReportPost) -> Result<bool, EngineError> {
        Ok(self.store.enqueue_report(post).await?)
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), EngineError> {
        Ok(self.store.ping().await?)
    }

    /// Proposals by status (metrics).
    pub async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, EngineError> {
        Ok(self.store.count_by_status().await?)
    }

    /// How far behind the background queues are at `now` (metrics).
    pub async fn backlog(&self, now: DateTime<Utc>) -> Result<Vec<QueueBacklog>, EngineError> {
        Ok(self.store.backlog(now).await?)
    }
}
