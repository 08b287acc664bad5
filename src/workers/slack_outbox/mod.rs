//! The Slack outbox worker: claims due rows of `slack_outbox`, does them (post a card, refresh
//! the posted cards), and marks them done. Rows are written in the same transaction as the
//! change that calls for them, so a crash loses no card; a row whose worker died comes back when
//! its (short, renewed while in hand) [`Lease`] ends.
//!
//! A job that works on the posted cards (a refresh, a reply in their threads) waits while a
//! post of one of them is still outstanding: replicas do rows in parallel, and an escalation
//! due before its card got through the channel's budget would otherwise find no thread.
//!
//! Slack's answer decides what happens to a row: success → done; 429 (or countersign's own
//! Slack budget spent, which reads the same) → due again after `Retry-After`, however often it
//! takes, on a slot booked for it ([`Bookings`]: the jobs a bucket turned away come back a
//! token apart, not all at once); a card's post stays its channel's oldest undone card, so the
//! channel's later cards wait for it on every replica (the claim, migration 0010); a refusal
//! such as `invalid_blocks` or `channel_not_found` → given up at once, logged (retrying cannot
//! help); unreachable → retried on [`BACKOFF`], then given up.
//!
//! Here: the loop, the claim and the leases, and settling each job's outcome; what a job does
//! is `jobs`, how its messages go out within the budget is `sending`.

mod jobs;
mod sending;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Bookings, Bucket};
use crate::clock::Clock;
use crate::domain::{PostedCard, SlackJob, SlackTask};
use crate::links::LinkSigner;
use crate::registry::SharedRegistry;
use crate::slack::{Directory, SlackApi};
use crate::store::{Store, StoreError};

/// Delays between attempts when Slack cannot be reached.
pub const BACKOFF: &[Duration] = &[
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
];
/// How long a claimed row stays ours, and how often a pass still holding it says so.
///
/// The lease is short so that the rows of a worker that died (SIGKILL, a lost node) come back
/// within seconds; a live pass renews it for every row it has not finished, however slow Slack
/// is, so a second worker does not post the same card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub length: chrono::Duration,
    /// Wall time between renewals; a third of `length`, so one slow renewal does not lose it.
    pub renew_every: Duration,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            length: chrono::Duration::seconds(30),
            renew_every: Duration::from_secs(10),
        }
    }
}

/// How soon a job that works on the cards looks again while a card is still being posted.
const CARD_WAIT: Duration = Duration::from_secs(1);
/// Rows claimed per pass.
const BATCH: i64 = 8;
/// Idle poll, for rows that become due while nobody rings (retries, other replicas' work).
const POLL: Duration = Duration::from_millis(500);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pass {
    pub done: usize,
    pub retried: usize,
    pub failed: usize,
}

impl Pass {
    pub fn claimed(&self) -> usize {
        self.done + self.retried + self.failed
    }
}

/// What a job about a proposal works from, read once.
struct Scene {
    proposal: crate::domain::Proposal,
    registry: Arc<crate::registry::Registry>,
    agent: Option<Arc<crate::manifest::Agent>>,
    /// The Slack user the agent acts for, when the workspace knows them.
    requester: Option<String>,
    votes: Vec<crate::domain::Vote>,
    posted: Vec<PostedCard>,
}

/// What became of one job.
enum JobOutcome {
    Done(Option<PostedCard>),
    /// Try again after this long; `counted` against [`BACKOFF`] (a 429 is not).
    Retry {
        after: Duration,
        error: String,
        counted: bool,
        /// Set when the budget (or Slack's 429) turned the job away: it is booked a slot of
        /// this bucket.
        bucket: Option<Bucket>,
    },
    Fail(String),
}

#[derive(Clone)]
pub struct SlackOutbox {
    pub store: Arc<dyn Store>,
    pub api: SlackApi,
    pub directory: Directory,
    pub registry: SharedRegistry,
    pub clock: Arc<dyn Clock>,
    pub links: LinkSigner,
    /// Base of the links cards carry (the full-diff page).
    pub public_url: url::Url,
    /// The budget's coming tokens, booked by the jobs it turned away.
    pub bookings: Bookings,
    pub lease: Lease,
}

impl SlackOutbox {
    /// Runs until `shutdown`, waking on `work` or every [`POLL`]; after a pass in which every
    /// job had to wait (rate limited, Slack unreachable) it waits out the poll (see
    /// [`super::driver::Progress::Stalled`]).
    pub async fn run(self, work: Arc<Notify>, shutdown: impl std::future::Future<Output = ()>) {
        use super::driver::Progress;
        let this = &self;
        super::driver::drive("slack outbox", POLL, Some(work), shutdown, || async move {
            let pass = this.run_once().await?;
            Ok::<_, StoreError>(if pass.done + pass.failed > 0 {
                Progress::Done
            } else if pass.retried > 0 {
                Progress::Stalled
            } else {
                Progress::Idle
            })
        })
        .await;
    }

    /// Claims the due rows and does them, one after another (a row's card posts are ordered),
    /// renewing the leases of the rows still in hand until the pass ends.
    pub async fn run_once(&self) -> Result<Pass, StoreError> {
        let now = self.clock.now();
        let jobs = self
            .store
            .claim_slack_jobs(now, now + self.lease.length, BATCH)
            .await?;
        if jobs.is_empty() {
            return Ok(Pass::default());
        }
        let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
        let work = async {
            let mut pass = Pass::default();
            // Cards refreshed in this pass: every row claimed with them was committed before
            // the claim, so before the refresh read the proposal, and is already shown.
            let mut refreshed = std::collections::HashSet::new();
            for job in &jobs {
                let attempted = self.clock.now();
                let outcome = if job.task == SlackTask::RefreshCards
                    && refreshed.contains(&job.proposal_id)
                {
                    JobOutcome::Done(None)
                } else {
                    self.perform(job).await
                };
                if job.task == SlackTask::RefreshCards && matches!(outcome, JobOutcome::Done(_)) {
                    refreshed.insert(job.proposal_id.clone());
                }
                self.settle(job, outcome, attempted, &mut pass).await?;
            }
            Ok(pass)
        };
        tokio::select! {
            pass = work => pass,
            () = self.keep_leases(&ids) => unreachable!("renewing ends only with the pass"),
        }
    }

    /// Extends the leases of `ids` every [`Lease::renew_every`], forever; rows already settled
    /// are left alone by the store (they are done or were put back).
    async fn keep_leases(&self, ids: &[i64]) {
        let mut ticks = tokio::time::interval(self.lease.renew_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let until = self.clock.now() + self.lease.length;
            if let Err(error) = self.store.renew_slack_leases(ids, until).await {
                tracing::warn!(%error, "slack outbox: cannot renew leases");
            }
        }
    }

    /// Records what became of a job. A retry's wait counts from `attempted`, when the job was
    /// taken up: a wait the budget measured then must not grow by the time the job took (with a
    /// clock moved by hand meanwhile, it could become due only after a time that never comes).
    async fn settle(
        &self,
        job: &SlackJob,
        outcome: JobOutcome,
        attempted: chrono::DateTime<chrono::Utc>,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        match outcome {
            JobOutcome::Done(posted) => {
                self.store
                    .finish_slack_job(job, posted.as_ref(), now)
                    .await?;
                pass.done += 1;
            }
            JobOutcome::Retry {
                after,
                error,
                counted,
                bucket,
            } => {
                let mut due =
                    attempted + chrono::Duration::from_std(after).unwrap_or(self.lease.length);
                if let Some(bucket) = &bucket {
                    due = self.bookings.book(bucket, job.id, due, now);
                }
                tracing::info!(job = job.id, proposal_id = ?job.proposal_id, %error, retry_in = ?after, "slack outbox: will retry");
                self.store
                    .retry_slack_job(job, due, &error, counted)
                    .await?;
                pass.retried += 1;
            }
            JobOutcome::Fail(error) => {
                tracing::error!(job = job.id, proposal_id = ?job.proposal_id, %error, "slack outbox: giving up");
                self.store.fail_slack_job(job, now, &error).await?;
                pass.failed += 1;
            }
        }
        Ok(())
    }
}
