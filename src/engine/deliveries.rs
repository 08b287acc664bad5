//! The leased queues the delivery workers drive through the core: agent callbacks and SLA
//! reports. Claims and retries touch only the queue; what a delivery's end means (delivered,
//! failed, posted) is a command, written with its audit event.

use chrono::Duration;

use super::{Engine, EngineError};
use crate::domain::WebhookDelivery;
use crate::domain::report::{Period, ReportPost};
use crate::store::{Command, WebhookAttempt, WebhookNext};

impl Engine {
    /// Claims up to `limit` due callback deliveries for `lease`.
    pub async fn claim_callbacks(
        &self,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, EngineError> {
        let now = self.clock.now();
        Ok(self.store.claim_webhooks(now, now + lease, limit).await?)
    }

    /// Whether `url` answered 410 Gone: its deliveries are stopped until an operator
    /// redelivers.
    pub async fn endpoint_disabled(&self, url: &str) -> Result<bool, EngineError> {
        Ok(self.store.endpoint_disabled(url).await?)
    }

    /// Records one attempt at a claimed delivery and what follows from it.
    pub async fn record_callback_attempt(
        &self,
        delivery: WebhookDelivery,
        attempt: WebhookAttempt,
        next: WebhookNext,
    ) -> Result<(), EngineError> {
        let failed = matches!(next, WebhookNext::Failed { .. });
        let command = Command::RecordCallbackAttempt {
            delivery,
            attempt,
            next,
        };
        self.apply(command).await?;
        if failed {
            self.announce_slack_work();
        }
        Ok(())
    }

    /// Claims up to `limit` reports owed to channels for `lease`.
    pub async fn claim_reports(
        &self,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ReportPost>, EngineError> {
        let now = self.clock.now();
        Ok(self
            .store
            .claim_report_posts(now, now + lease, limit)
            .await?)
    }

    /// The SLA report of `role` over `period` up to `as_of`, as a report post shows it.
    pub async fn sla_report(
        &self,
        role: &str,
        period: Period,
        as_of: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::report::SlaReport, EngineError> {
        Ok(crate::report::build(self.store.as_ref(), role, period, as_of).await?)
    }

    /// A claimed report went out: marked posted, with its audit event.
    pub async fn report_posted(&self, post: ReportPost) -> Result<(), EngineError> {
        let at = self.clock.now();
        self.apply(Command::ReportPosted { post, at }).await?;
        Ok(())
    }

    /// A claimed report could not go out: counted; it comes back when its lease ends.
    pub async fn retry_report(&self, id: i64, error: &str) -> Result<(), EngineError> {
        Ok(self.store.retry_report_post(id, error).await?)
    }
}
