//! The report worker: schedules the weekly digest for every role channel and posts the reports
//! owed (`report_posts` rows: digests and `/countersign report` requests) — the figures as a
//! message, then the chart as an uploaded image.
//!
//! A digest slot is scheduled by inserting one row per role with a unique key, so however many
//! replicas notice the slot, each role gets one digest. A slot is still posted when countersign
//! comes back up to a day late; later than that it is skipped (next week's follows as usual).
//! If Slack takes the message but the chart upload fails, the retry posts the message again: a
//! rare duplicate is preferred to a lost report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::engine::{Engine, EngineError};
use crate::registry::SharedRegistry;
use crate::report::{self, DigestSchedule, Period, ReportPost, SlaReport};
use crate::slack::{SlackApi, SlackError};

const LEASE: chrono::Duration = chrono::Duration::minutes(2);
const BATCH: i64 = 4;
/// How often an idle worker looks for a due digest or a report nobody woke it for.
const POLL: Duration = Duration::from_secs(5);
/// A digest slot missed by more than this (countersign was down) is skipped.
const DIGEST_GRACE: chrono::Duration = chrono::Duration::hours(24);

#[derive(Clone)]
pub struct ReportWorker {
    pub engine: Engine,
    pub api: SlackApi,
    pub registry: SharedRegistry,
    pub clock: Arc<dyn Clock>,
    /// When the weekly digest is due; `None`: no digest.
    pub digest: Option<DigestSchedule>,
    /// The last digest slot this worker scheduled (saves re-inserting it every poll).
    pub scheduled: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl ReportWorker {
    /// Runs until `shutdown`, waking on `work` or every [`POLL`].
    pub async fn run(self, work: Arc<Notify>, shutdown: impl std::future::Future<Output = ()>) {
        let this = &self;
        super::driver::drive("report", POLL, Some(work), shutdown, || async move {
            this.run_once().await.map(super::driver::Progress::of)
        })
        .await;
    }

    /// Schedules a due digest, then posts the reports it can claim; answers how many it posted.
    pub async fn run_once(&self) -> Result<usize, EngineError> {
        self.schedule_digest().await?;
        let owed = self.engine.claim_reports(LEASE, BATCH).await?;
        let mut posted = 0;
        for post in owed {
            match self.post(&post).await {
                Ok(()) => {
                    self.engine.report_posted(post).await?;
                    posted += 1;
                }
                Err(error) => {
                    tracing::warn!(report = post.id, role = %post.role, %error, attempt = post.attempts + 1, "report worker: cannot post the report; will retry");
                    (self.engine)
                        .retry_report(post.id, &error.to_string())
                        .await?;
                }
            }
        }
        Ok(posted)
    }

    async fn schedule_digest(&self) -> Result<(), EngineError> {
        let Some(schedule) = self.digest else {
            return Ok(());
        };
        let now = self.clock.now();
        let slot = schedule.latest(now);
        let fresh = now - slot <= DIGEST_GRACE;
        if !fresh || *self.scheduled.lock().expect("digest slot lock") == Some(slot) {
            return Ok(());
        }
        let registry = self.registry.current();
        for (role, spec) in registry.roles.iter() {
            let post = ReportPost {
                id: 0,
                dedupe: format!("digest:{role}:{}", slot.to_rfc3339()),
                role: role.to_owned(),
                channel: spec.channel.clone(),
                period: Period::Week,
                as_of: slot,
                requested_by: None,
                attempts: 0,
            };
            if self.engine.enqueue_report(&post).await? {
                tracing::info!(role, %slot, "weekly SLA digest scheduled");
            }
        }
        *self.scheduled.lock().expect("digest slot lock") = Some(slot);
        Ok(())
    }

    async fn post(&self, post: &ReportPost) -> Result<(), PostError> {
        let report = (self.engine)
            .sla_report(&post.role, post.period, post.as_of)
            .await
            .map_err(|e| PostError::Store(e.to_string()))?;
        let links = self.permalinks(&report).await;
        let message = crate::slack::report::message(&report, &links, post.requested_by.as_deref());
        self.api.post_message(&post.channel, &message, None).await?;
        let chart = {
            let report = report.clone();
            tokio::task::spawn_blocking(move || report::chart::png(&report))
                .await
                .map_err(|e| PostError::Chart(e.to_string()))?
                .map_err(PostError::Chart)?
        };
        let name = format!(
            "sla-{}-{}-{}.png",
            post.role,
            post.period,
            post.as_of.format("%Y%m%d")
        );
        let title = format!("SLA · {} · last {}", post.role, post.period);
        self.api
            .upload_png(&post.channel, &name, &title, "", chart)
            .await?;
        Ok(())
    }

    /// Links to the cards the report lists; a card Slack cannot find is listed unlinked.
    async fn permalinks(&self, report: &SlaReport) -> HashMap<String, String> {
        let cards = report
            .breaches
            .iter()
            .filter_map(|b| b.card.as_ref().map(|c| (&b.proposal_id, c)))
            .chain(
                report
                    .backlog
                    .oldest
                    .iter()
                    .filter_map(|w| w.card.as_ref().map(|c| (&w.proposal_id, c))),
            );
        let mut links = HashMap::new();
        for (id, card) in cards {
            if links.contains_key(id) {
                continue;
            }
            match self.api.permalink(&card.channel, &card.ts).await {
                Ok(link) => {
                    links.insert(id.clone(), link);
                }
                Err(error) => tracing::debug!(proposal_id = %id, %error, "no permalink"),
            }
        }
        links
    }
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("store: {0}")]
    Store(String),
    #[error("slack: {0}")]
    Slack(#[from] SlackError),
    #[error("{0}")]
    Chart(String),
}
