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
//! channel's later cards wait for it on every replica (the claim, migration 0010); a refusal such as `invalid_blocks` or
//! `channel_not_found` → given up at once, logged (retrying cannot help); unreachable → retried
//! on [`BACKOFF`], then given up.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{Bookings, Bucket};
use crate::clock::Clock;
use crate::domain::{PostedCard, ProposalId, SlackJob, SlackTask};
use crate::links::LinkSigner;
use crate::registry::SharedRegistry;
use crate::slack::card::{self, CardContext};
use crate::slack::{Directory, SlackApi, SlackError};
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

    #[tracing::instrument(skip_all, fields(job = job.id, proposal_id = ?job.proposal_id))]
    async fn perform(&self, job: &SlackJob) -> JobOutcome {
        let proposal_id = match (&job.task, &job.proposal_id) {
            (SlackTask::AnnounceControl { notice }, _) => return self.announce(job, notice).await,
            (_, Some(id)) => id,
            (_, None) => return JobOutcome::Fail("the job names no proposal".into()),
        };
        if job.task == SlackTask::RefreshCards
            && let Some(outcome) = self.before_refresh(job).await
        {
            return outcome;
        }
        let scene = match self.scene(job, proposal_id).await {
            Ok(scene) => scene,
            Err(outcome) => return outcome,
        };
        if job.task.works_on_the_cards()
            && let Some(outcome) = self.wait_for_cards(job, &scene).await
        {
            return outcome;
        }
        self.act(job, &scene).await
    }

    /// A refresh whose bucket is booked ahead waits behind the refreshes turned away before
    /// it, unread and unrendered; otherwise it folds in the refreshes of its card that are
    /// also due (several changes before the refresh went out: one update, rendered from the
    /// proposal as read after this, shows them all).
    async fn before_refresh(&self, job: &SlackJob) -> Option<JobOutcome> {
        let bucket = self.api.method_bucket("chat.update");
        let now = self.clock.now();
        if let Some(until) = self.bookings.wait_for(&bucket.key, job.id, now) {
            return Some(booked(bucket, until, now));
        }
        match self.store.coalesce_slack_jobs(job, now).await {
            Ok(0) => None,
            Ok(folded) => {
                tracing::debug!(folded, "card refreshes coalesced");
                None
            }
            Err(error) => Some(transient(job, error.to_string())),
        }
    }

    /// Reads what a job about a proposal works from.
    async fn scene(&self, job: &SlackJob, id: &ProposalId) -> Result<Scene, JobOutcome> {
        let proposal = match self.store.proposal(id).await {
            Ok(Some(proposal)) => proposal,
            Ok(None) => return Err(JobOutcome::Fail("proposal not found".into())),
            Err(error) => return Err(transient(job, error.to_string())),
        };
        let registry = self.registry.current();
        let agent = registry.agents.get(proposal.agent.as_str()).cloned();
        let requester = match &proposal.content.requested_by {
            Some(text) => self.directory.person(text).await,
            None => None,
        };
        let (votes, posted) = tokio::try_join!(
            self.store.votes(&proposal.id),
            self.store.posted_cards(&proposal.id)
        )
        .map_err(|error| transient(job, error.to_string()))?;
        Ok(Scene {
            proposal,
            registry,
            agent,
            requester,
            votes,
            posted,
        })
    }

    /// A job that works on the cards waits while one of them is still being posted: a refresh
    /// only for a post in a worker's hands (it may carry older state; a post not yet claimed
    /// will show the state of its time), a thread reply for every post (it needs the thread).
    async fn wait_for_cards(&self, job: &SlackJob, scene: &Scene) -> Option<JobOutcome> {
        let proposal = &scene.proposal;
        let unposted = proposal
            .content
            .verdict
            .route
            .iter()
            .any(|role| !scene.posted.iter().any(|c| &c.role == role));
        if !unposted {
            return None;
        }
        let waiting = if job.task == SlackTask::RefreshCards {
            self.store
                .card_posts_in_flight(&proposal.id, self.clock.now())
                .await
        } else {
            self.store.card_posts_outstanding(&proposal.id).await
        };
        match waiting {
            Ok(true) => Some(JobOutcome::Retry {
                after: CARD_WAIT,
                error: "waiting for its card to be posted".into(),
                counted: false,
                bucket: None,
            }),
            Ok(false) => None,
            Err(error) => Some(transient(job, error.to_string())),
        }
    }

    /// The card as it stands now.
    async fn render(&self, scene: &Scene) -> crate::slack::OutgoingMessage {
        let proposal = &scene.proposal;
        let full_diff = format!(
            "{}p/{}?{}",
            self.public_url.as_str().trim_end_matches('/').to_owned() + "/",
            proposal.id,
            self.links.query(&proposal.id, self.clock.now())
        );
        let sla_note = self.sla_note(&proposal.id).await;
        let context = CardContext {
            owner: scene.agent.as_ref().map(|a| a.owner.as_str()),
            requester: scene.requester.as_deref(),
            catalog: (scene.agent.as_ref()).and_then(|a| a.actions.get(&proposal.content.action)),
            votes: &scene.votes,
            full_diff: Some(&full_diff),
            sla_note,
        };
        card::render(proposal, &context)
    }

    /// Does the job's task.
    async fn act(&self, job: &SlackJob, scene: &Scene) -> JobOutcome {
        let Scene {
            proposal,
            registry,
            agent,
            requester,
            votes,
            posted,
        } = scene;
        match &job.task {
            SlackTask::PostCard { role } => {
                if posted.iter().any(|card| &card.role == role) {
                    return JobOutcome::Done(None);
                }
                let Some(channel) = registry.roles.get(role).map(|r| r.channel.clone()) else {
                    return JobOutcome::Fail(format!("role {role:?} is no longer declared"));
                };
                let message = self.render(scene).await;
                match self.post(job, &channel, &message, None).await {
                    Ok(ts) => JobOutcome::Done(Some(PostedCard {
                        role: role.clone(),
                        channel,
                        ts,
                    })),
                    Err(outcome) => outcome,
                }
            }
            SlackTask::RefreshCards => {
                let message = self.render(scene).await;
                self.refresh(job, posted, &message).await
            }
            SlackTask::AnnounceVote { voter } => {
                let tally = crate::domain::vote::tally(
                    &proposal.content.verdict.quorum,
                    &proposal.content.verdict.route,
                    votes,
                );
                let Some((vote, role)) = votes
                    .iter()
                    .zip(&tally.roles)
                    .find(|(v, _)| &v.voter == voter)
                else {
                    return JobOutcome::Fail(format!("no vote by {voter}"));
                };
                let text = crate::slack::messages::vote_reply(vote, role.as_deref());
                done(self.thread_replies(job, posted, &text).await)
            }
            SlackTask::Remind { mentions } => {
                let text = crate::slack::messages::reminder(proposal, mentions);
                done(self.thread_replies(job, posted, &text).await)
            }
            SlackTask::Escalate {
                level,
                label,
                users,
                mentions,
                channel,
            } => {
                let text = crate::slack::messages::escalation(proposal, *level, label, mentions);
                if let Some(channel) = channel
                    && let Err(outcome) = self.post(job, channel, &text, None).await
                {
                    return outcome;
                }
                for user in users {
                    if let Err(outcome) = self.dm(job, user, &text).await {
                        return outcome;
                    }
                }
                done(self.thread_replies(job, posted, &text).await)
            }
            SlackTask::CallbackFailed { event, url, error } => {
                let Some(owner) = agent.as_ref().map(|a| a.owner.clone()) else {
                    return JobOutcome::Done(None);
                };
                let notice = crate::slack::messages::callback_failed(proposal, event, url, error);
                done(self.dm(job, &owner, &notice).await)
            }
            SlackTask::NotifyRequester => {
                let Some(user) = requester.as_deref() else {
                    return JobOutcome::Done(None);
                };
                let notice = crate::slack::messages::outcome_notice(proposal);
                done(self.dm(job, user, &notice).await)
            }
            SlackTask::LockoutAlert { user, until } => {
                let channels: std::collections::BTreeSet<&str> = proposal
                    .content
                    .verdict
                    .route
                    .iter()
                    .filter_map(|role| registry.roles.get(role).map(|r| r.channel.as_str()))
                    .collect();
                let places: Vec<(&str, Option<&str>)> =
                    channels.into_iter().map(|c| (c, None)).collect();
                let alert = crate::slack::messages::lockout_alert(proposal, user, *until);
                done(self.post_everywhere(job, &places, &alert).await)
            }
            // Handled before the proposal is read (it names none).
            SlackTask::AnnounceControl { notice } => self.announce(job, notice).await,
        }
    }

    /// Brings every posted copy of the card up to date. Every copy is updated even if one
    /// fails: a deleted message must not leave the other channels showing live buttons.
    async fn refresh(
        &self,
        job: &SlackJob,
        posted: &[PostedCard],
        message: &crate::slack::OutgoingMessage,
    ) -> JobOutcome {
        let mut outcome = JobOutcome::Done(None);
        for card in posted {
            match self
                .api
                .update_message(&card.channel, &card.ts, message)
                .await
            {
                Ok(()) => {}
                Err(SlackError::Api(error)) if error.starts_with("message_not_found") => {
                    tracing::warn!(channel = %card.channel, ts = %card.ts, "a card was deleted in Slack; not updating it");
                }
                Err(error) => {
                    // A retry redoes every copy: it books a token for each.
                    let mut bucket = self.api.method_bucket("chat.update");
                    bucket.refill *= u32::try_from(posted.len()).unwrap_or(1).max(1);
                    let this = self.outcome_of(job, error, Some(bucket));
                    // Prefer a retry (which redoes every copy) over giving up, and waiting for
                    // the budget over a retry counted towards giving up.
                    let better = match (&outcome, &this) {
                        (
                            JobOutcome::Retry { counted: true, .. },
                            JobOutcome::Retry { counted: false, .. },
                        ) => true,
                        (JobOutcome::Retry { .. }, _) => false,
                        _ => true,
                    };
                    if better {
                        outcome = this;
                    }
                }
            }
        }
        outcome
    }

    /// The latest reminder or escalation of a proposal that took effect, from its timers.
    async fn sla_note(
        &self,
        id: &crate::domain::ProposalId,
    ) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        let nudges = match self.store.fired_nudges(id).await {
            Ok(nudges) => nudges,
            Err(error) => {
                tracing::warn!(%error, "cannot read a proposal's reminders");
                return None;
            }
        };
        let (timer, at) = nudges.into_iter().last()?;
        let note = match timer {
            crate::domain::Timer::Escalate { level, .. } => {
                format!("escalated (level {})", level + 1)
            }
            _ => "approvers reminded".to_owned(),
        };
        Some((note, at))
    }

    /// A reply in every card's thread: paid for in every channel first, so that a refusal
    /// comes before any reply and a retry repeats none.
    async fn thread_replies(
        &self,
        job: &SlackJob,
        posted: &[PostedCard],
        message: &crate::slack::OutgoingMessage,
    ) -> Result<(), JobOutcome> {
        let threads: Vec<(&str, Option<&str>)> = posted
            .iter()
            .map(|card| (card.channel.as_str(), Some(card.ts.as_str())))
            .collect();
        self.post_everywhere(job, &threads, message).await
    }

    /// Posts `message` in each (channel, thread), budgeted for all of them before any is
    /// posted, so a retry repeats none.
    async fn post_everywhere(
        &self,
        job: &SlackJob,
        places: &[(&str, Option<&str>)],
        message: &crate::slack::OutgoingMessage,
    ) -> Result<(), JobOutcome> {
        let now = self.clock.now();
        // Every channel's bookings first, before any token is spent: the job waits for the
        // latest of them (a token reserved in one channel and then dropped for another's
        // wait would be wasted, and the job would alternate between the two).
        let waits = places.iter().filter_map(|(channel, _)| {
            let bucket = self.api.channel_bucket(channel);
            let until = self.bookings.wait_for(&bucket.key, job.id, now)?;
            Some((until, bucket))
        });
        if let Some((until, bucket)) = waits.max_by_key(|(until, _)| *until) {
            return Err(booked(bucket, until, now));
        }
        let mut permits = Vec::with_capacity(places.len());
        for (channel, thread) in places {
            let bucket = self.api.channel_bucket(channel);
            match self.api.reserve_post(channel).await {
                Ok(permit) => permits.push((permit, *thread)),
                Err(error) => return Err(self.outcome_of(job, error, Some(bucket))),
            }
        }
        for (permit, thread) in permits {
            let bucket = self.api.channel_bucket(permit.channel());
            if let Err(error) = self.api.post_paid(permit, message, thread).await {
                return Err(self.outcome_of(job, error, Some(bucket)));
            }
        }
        Ok(())
    }

    /// An agent's change of mode, posted in the channels of the roles its cards have gone to.
    async fn announce(&self, job: &SlackJob, notice: &crate::domain::ControlNotice) -> JobOutcome {
        let roles = match self.store.card_roles_of(&notice.agent).await {
            Ok(roles) => roles,
            Err(error) => return transient(job, error.to_string()),
        };
        let registry = self.registry.current();
        let channels: std::collections::BTreeSet<String> = roles
            .iter()
            .filter_map(|role| registry.roles.get(role).map(|r| r.channel.clone()))
            .collect();
        let places: Vec<(&str, Option<&str>)> =
            channels.iter().map(|c| (c.as_str(), None)).collect();
        let message = crate::slack::control_notice(notice);
        done(self.post_everywhere(job, &places, &message).await)
    }

    /// Posts in `channel` unless jobs turned away by its budget are booked ahead ([`Bookings`]);
    /// the client spends from the channel's budget, an empty one reading like Slack's 429.
    async fn post(
        &self,
        job: &SlackJob,
        channel: &str,
        message: &crate::slack::OutgoingMessage,
        thread_ts: Option<&str>,
    ) -> Result<String, JobOutcome> {
        let now = self.clock.now();
        let bucket = self.api.channel_bucket(channel);
        if let Some(until) = self.bookings.wait_for(&bucket.key, job.id, now) {
            return Err(booked(bucket, until, now));
        }
        self.api
            .post_message(channel, message, thread_ts)
            .await
            .map_err(|error| self.outcome_of(job, error, Some(bucket)))
    }

    /// A message to `user`, in the DM the bot opens with them.
    async fn dm(
        &self,
        job: &SlackJob,
        user: &str,
        message: &crate::slack::OutgoingMessage,
    ) -> Result<String, JobOutcome> {
        let channel = self.directory.dm_channel(user).await.map_err(|error| {
            let bucket = self.api.method_bucket("conversations.open");
            self.outcome_of(job, error, Some(bucket))
        })?;
        self.post(job, &channel, message, None).await
    }

    /// What Slack's answer makes of a job; a rate limit books it a slot of the `bucket` the
    /// call spent from.
    fn outcome_of(&self, job: &SlackJob, error: SlackError, bucket: Option<Bucket>) -> JobOutcome {
        match error {
            SlackError::RateLimited(after) => JobOutcome::Retry {
                after,
                error: "rate limited".into(),
                counted: false,
                bucket,
            },
            SlackError::Api(error) => JobOutcome::Fail(error),
            SlackError::Transport(error) => transient(job, error),
        }
    }
}

/// A job whose bucket is booked up to `until` by jobs turned away before it: it takes the
/// next slot, behind them, without asking.
fn booked(bucket: Bucket, until: DateTime<Utc>, now: DateTime<Utc>) -> JobOutcome {
    JobOutcome::Retry {
        after: (until - now).to_std().unwrap_or_default(),
        error: "waiting for the Slack budget, behind earlier jobs".into(),
        counted: false,
        bucket: Some(bucket),
    }
}

/// A step's result as the job's outcome.
fn done<T>(result: Result<T, JobOutcome>) -> JobOutcome {
    match result {
        Ok(_) => JobOutcome::Done(None),
        Err(outcome) => outcome,
    }
}

/// A failure that may pass: retried on [`BACKOFF`], then given up.
fn transient(job: &SlackJob, error: String) -> JobOutcome {
    match BACKOFF.get(usize::try_from(job.attempts).unwrap_or(usize::MAX)) {
        Some(after) => JobOutcome::Retry {
            after: *after,
            error,
            counted: true,
            bucket: None,
        },
        None => JobOutcome::Fail(error),
    }
}
