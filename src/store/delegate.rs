//! The one `impl Store` of both backends, written once: every method but `migrate`, `ping` and
//! `close` delegates to the backend's inherent method of the same name (its family files hold
//! the SQL). Expanded in each backend's `mod.rs`, it uses that module's imports and its
//! `MIGRATOR`; Rust picks the inherent method before the trait's, which is what makes
//! `self.claim_timers(..)` the family's (a family method renamed away would make its
//! delegation recurse, not fail to compile).

macro_rules! impl_store_by_delegation {
    ($backend:ty) => {
        #[async_trait]
        impl Store for $backend {
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
                self.apply(commands, at).await
            }

            async fn proposal(&self, id: &ProposalId) -> Result<Option<Proposal>, StoreError> {
                self.proposal(id).await
            }

            async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
                self.count_by_status().await
            }

            async fn audit_page(
                &self,
                filter: &AuditFilter,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                self.audit_page(filter, after_seq, limit).await
            }

            async fn purge_idempotency_keys(
                &self,
                before: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                self.purge_idempotency_keys(before).await
            }

            async fn claim_slack_jobs(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<SlackJob>, StoreError> {
                self.claim_slack_jobs(now, lease_until, limit).await
            }

            async fn renew_slack_leases(
                &self,
                ids: &[i64],
                lease_until: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                self.renew_slack_leases(ids, lease_until).await
            }

            async fn finish_slack_job(
                &self,
                job: &SlackJob,
                posted: Option<&PostedCard>,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                self.finish_slack_job(job, posted, at).await
            }

            async fn retry_slack_job(
                &self,
                job: &SlackJob,
                due_at: DateTime<Utc>,
                error: &str,
                counted: bool,
            ) -> Result<(), StoreError> {
                self.retry_slack_job(job, due_at, error, counted).await
            }

            async fn fail_slack_job(
                &self,
                job: &SlackJob,
                at: DateTime<Utc>,
                error: &str,
            ) -> Result<(), StoreError> {
                self.fail_slack_job(job, at, error).await
            }

            async fn claim_timers(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<DueTimer>, StoreError> {
                self.claim_timers(now, lease_until, limit).await
            }

            async fn votes(&self, id: &ProposalId) -> Result<Vec<Vote>, StoreError> {
                self.votes(id).await
            }

            async fn approval_granted(
                &self,
                id: &ProposalId,
                user: &str,
            ) -> Result<bool, StoreError> {
                self.approval_granted(id, user).await
            }

            async fn card_posts_in_flight(
                &self,
                id: &ProposalId,
                now: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                self.card_posts_in_flight(id, now).await
            }

            async fn coalesce_slack_jobs(
                &self,
                job: &SlackJob,
                now: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                self.coalesce_slack_jobs(job, now).await
            }

            async fn fired_nudges(
                &self,
                id: &ProposalId,
            ) -> Result<Vec<(crate::domain::Timer, DateTime<Utc>)>, StoreError> {
                self.fired_nudges(id).await
            }

            async fn posted_cards(&self, id: &ProposalId) -> Result<Vec<PostedCard>, StoreError> {
                self.posted_cards(id).await
            }

            async fn card_posts_outstanding(&self, id: &ProposalId) -> Result<bool, StoreError> {
                self.card_posts_outstanding(id).await
            }

            async fn totp_enrollment(
                &self,
                user: &str,
            ) -> Result<Option<TotpEnrollment>, StoreError> {
                self.totp_enrollment(user).await
            }

            async fn step_up_locked_until(
                &self,
                user: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<DateTime<Utc>>, StoreError> {
                self.step_up_locked_until(user, now).await
            }

            async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
                self.oldest_pending().await
            }

            async fn backlog(
                &self,
                now: DateTime<Utc>,
            ) -> Result<Vec<super::QueueBacklog>, StoreError> {
                self.backlog(now).await
            }

            async fn enqueue_report(&self, post: &ReportPost) -> Result<bool, StoreError> {
                self.enqueue_report(post).await
            }

            async fn claim_report_posts(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<ReportPost>, StoreError> {
                self.claim_report_posts(now, lease_until, limit).await
            }

            async fn finish_report_post(
                &self,
                id: i64,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                self.finish_report_post(id, at).await
            }

            async fn retry_report_post(&self, id: i64, error: &str) -> Result<(), StoreError> {
                self.retry_report_post(id, error).await
            }

            async fn claim_webhooks(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<WebhookDelivery>, StoreError> {
                self.claim_webhooks(now, lease_until, limit).await
            }

            async fn record_webhook_attempt(
                &self,
                delivery: &WebhookDelivery,
                attempt: &WebhookAttempt,
                next: &WebhookNext,
            ) -> Result<(), StoreError> {
                self.record_webhook_attempt(delivery, attempt, next).await
            }

            async fn endpoint_disabled(&self, url: &str) -> Result<bool, StoreError> {
                self.endpoint_disabled(url).await
            }

            async fn webhook_events(
                &self,
                id: &ProposalId,
            ) -> Result<Vec<WebhookRecord>, StoreError> {
                self.webhook_events(id).await
            }

            async fn latest_verdicts_of(
                &self,
                agent: &str,
                n: i64,
            ) -> Result<Vec<Status>, StoreError> {
                self.latest_verdicts_of(agent, n).await
            }

            async fn auto_approved_usage(
                &self,
                agent: &str,
                day: DateTime<Utc>,
                month: DateTime<Utc>,
            ) -> Result<crate::budgets::Usage, StoreError> {
                self.auto_approved_usage(agent, day, month).await
            }

            async fn proposals_of(
                &self,
                agent: &str,
                since: DateTime<Utc>,
            ) -> Result<Vec<Proposal>, StoreError> {
                self.proposals_of(agent, since).await
            }

            async fn pending_of(
                &self,
                agent: &str,
            ) -> Result<Vec<(ProposalId, String)>, StoreError> {
                self.pending_of(agent).await
            }

            async fn card_roles_of(&self, agent: &str) -> Result<Vec<String>, StoreError> {
                self.card_roles_of(agent).await
            }

            async fn controls(&self) -> Result<Vec<crate::domain::Control>, StoreError> {
                self.controls().await
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}
