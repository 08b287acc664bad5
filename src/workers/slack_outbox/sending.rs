//! How a job's messages go out within the Slack budget: posts and DMs checked against the
//! bookings first, replies in several channels paid for before any is posted, and what
//! Slack's answer makes of the job.

use chrono::{DateTime, Utc};

use super::{BACKOFF, JobOutcome, SlackOutbox};
use crate::domain::{PostedCard, SlackJob};
use crate::slack::SlackError;
use crate::workers::Bucket;

impl SlackOutbox {
    /// A reply in every card's thread: paid for in every channel first, so that a refusal
    /// comes before any reply and a retry repeats none.
    pub(super) async fn thread_replies(
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
    pub(super) async fn post_everywhere(
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
    pub(super) async fn announce(
        &self,
        job: &SlackJob,
        notice: &crate::domain::ControlNotice,
    ) -> JobOutcome {
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
    pub(super) async fn post(
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
    pub(super) async fn dm(
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
    pub(super) fn outcome_of(
        &self,
        job: &SlackJob,
        error: SlackError,
        bucket: Option<Bucket>,
    ) -> JobOutcome {
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
pub(super) fn booked(bucket: Bucket, until: DateTime<Utc>, now: DateTime<Utc>) -> JobOutcome {
    JobOutcome::Retry {
        after: (until - now).to_std().unwrap_or_default(),
        error: "waiting for the Slack budget, behind earlier jobs".into(),
        counted: false,
        bucket: Some(bucket),
    }
}

/// A step's result as the job's outcome.
pub(super) fn done<T>(result: Result<T, JobOutcome>) -> JobOutcome {
    match result {
        Ok(_) => JobOutcome::Done(None),
        Err(outcome) => outcome,
    }
}

/// A failure that may pass: retried on [`BACKOFF`], then given up.
pub(super) fn transient(job: &SlackJob, error: String) -> JobOutcome {
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
