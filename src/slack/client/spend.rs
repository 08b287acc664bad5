//! How every call spends from the [`SlackBudget`]: which bucket (the method's tier, or for
//! chat.postMessage the channel's), how long it may wait for a token, and the pause a 429 puts
//! on that bucket. In one place, so that no call of [`SlackApi`] can skip it.

use std::future::Future;
use std::time::Duration;

use slack_morphism::errors::SlackClientError;

use super::{SlackApi, SlackError};
use crate::slack::budget::{Rate, SlackBudget};
use crate::slack::tiers::{self, Tier};

/// How long a call a person is waiting on may wait for its budget.
pub const PERSON_WAITS: Duration = Duration::from_secs(1);
/// Calls no one waits on (the workers') do not wait: they are put off and retried.
pub(super) const NOBODY_WAITS: Duration = Duration::ZERO;

/// What a call spends from: its method's bucket, or (chat.postMessage) its channel's.
pub(super) enum Spend<'a> {
    Method(&'static str),
    Channel(&'a str),
}

/// One chat.postMessage already paid for from its channel's budget ([`SlackApi::reserve_post`]):
/// a job posting into several channels pays for all of them before posting any, so that a
/// refusal comes before, not between, its posts.
#[derive(Debug)]
#[must_use = "a permit is spent from the budget: post with it"]
pub struct PostPermit {
    pub(super) channel: String,
}

impl PostPermit {
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

/// A bucket of the budget, and how long one of its tokens takes to come back: what a worker
/// turned away by it books its retry on (`workers::bookings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetBucket {
    pub key: String,
    pub refill: Duration,
}

impl SlackApi {
    /// The bucket a post in `channel` spends from.
    pub fn channel_bucket(&self, channel: &str) -> BudgetBucket {
        self.budget_bucket(&Spend::Channel(channel))
    }

    /// The bucket a call of `method` spends from.
    pub fn method_bucket(&self, method: &'static str) -> BudgetBucket {
        self.budget_bucket(&Spend::Method(method))
    }

    fn budget_bucket(&self, spend: &Spend<'_>) -> BudgetBucket {
        let (key, rate) = self.bucket(spend);
        BudgetBucket {
            key,
            refill: Duration::from_secs(60) / rate.per_minute.max(1),
        }
    }

    /// Spends from `budget` (the app's: on its clock, shared through Redis when configured).
    pub fn with_budget(mut self, budget: SlackBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The bucket `spend` draws from, and its size.
    fn bucket(&self, spend: &Spend<'_>) -> (String, Rate) {
        match spend {
            Spend::Method(method) => (
                format!("{}:method:{method}", self.workspace),
                // A method missing from the table: Slack's most common tier.
                self.budget.rate(tiers::of(method).unwrap_or(Tier::Two)),
            ),
            Spend::Channel(channel) => (
                format!("{}:channel:{channel}", self.workspace),
                self.budget.rate(Tier::PerChannel),
            ),
        }
    }

    /// Takes the call's token, waiting for it up to `patience`; an empty budget reads as a 429.
    pub(super) async fn spend(
        &self,
        spend: &Spend<'_>,
        patience: Duration,
    ) -> Result<(), SlackError> {
        let (key, rate) = self.bucket(spend);
        match self.budget.take(&key, rate, patience).await {
            Ok(delay) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(())
            }
            Err(wait) => Err(SlackError::RateLimited(wait)),
        }
    }

    /// Makes a call (sent now) and passes Slack's answer on, after pausing the call's bucket
    /// if it was a 429.
    pub(super) async fn send<T>(
        &self,
        spend: &Spend<'_>,
        call: impl Future<Output = Result<T, SlackError>>,
    ) -> Result<T, SlackError> {
        let sent = self.budget.now();
        let answer = call.await;
        if let Err(SlackError::RateLimited(retry_after)) = &answer {
            let (key, rate) = self.bucket(spend);
            tracing::info!(bucket = %key, ?retry_after, "Slack answered 429: pausing that budget");
            self.budget.pause(&key, rate, sent, *retry_after).await;
        }
        answer
    }

    /// One slack-morphism call to `method`, within the method's budget.
    pub(super) async fn call<T>(
        &self,
        method: &'static str,
        patience: Duration,
        call: impl Future<Output = Result<T, SlackClientError>>,
    ) -> Result<T, SlackError> {
        let spend = Spend::Method(method);
        self.spend(&spend, patience).await?;
        self.send(&spend, Self::bounded(call)).await
    }

    /// A call to `method` that slack-morphism cannot make (doctor reads a response header),
    /// within the method's budget like every other.
    pub async fn within_budget<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, SlackError>>,
    ) -> Result<T, SlackError> {
        let spend = Spend::Method(method);
        self.spend(&spend, NOBODY_WAITS).await?;
        self.send(&spend, call).await
    }

    /// Pays for one post in `channel` now, to post later with [`SlackApi::post_paid`].
    pub async fn reserve_post(&self, channel: &str) -> Result<PostPermit, SlackError> {
        self.spend(&Spend::Channel(channel), NOBODY_WAITS).await?;
        Ok(PostPermit {
            channel: channel.to_owned(),
        })
    }
}
