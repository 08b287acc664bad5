//! What the sandbox remembers while it runs: messages, open modals, trigger ids, response URLs,
//! uploaded files, rate buckets (one per method, by Slack's tiers; one per channel for
//! chat.postMessage), the log of every Web API call and of every call refused for its rate. In
//! memory only: the sandbox is a stand-in for Slack, whose history is not countersign's to keep.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::slack::budget::{Bucket, Rate};
/// A trigger id opens one modal, within three seconds of the click.
pub const TRIGGER_LIFETIME: chrono::Duration = chrono::Duration::seconds(3);
/// A response_url accepts five posts within thirty minutes.
pub const RESPONSE_URL_USES: u32 = 5;
pub const RESPONSE_URL_LIFETIME: chrono::Duration = chrono::Duration::minutes(30);

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub user: String,
    pub text: String,
    pub blocks: Value,
    /// Set for an ephemeral message: only this user sees it.
    pub ephemeral_for: Option<String>,
    /// Uploaded files shared with the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub id: String,
    pub user: String,
    pub hash: String,
    /// The view as the app sent it, plus Slack's `id`, `hash` and `state` fields.
    pub body: Value,
    /// The message whose button opened it, if any, so a submission can say where it came from.
    #[serde(skip)]
    pub opened_from: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub user: String,
    pub issued_at: DateTime<Utc>,
    pub used: bool,
    pub origin: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ResponseUrl {
    pub channel: String,
    pub user: String,
    pub message_ts: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub uses: u32,
}

#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub name: String,
    pub title: Option<String>,
    pub bytes: Option<Vec<u8>>,
    pub length: usize,
}

/// One Web API call the app made, with the sandbox's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub method: String,
    pub args: Value,
    pub status: u16,
    pub response: Value,
}

/// A call refused with 429, as the control API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub method: String,
    /// What ran dry: `method:<name>`, or `channel:<id>` for chat.postMessage.
    pub bucket: String,
    /// The `Retry-After` it was answered with, in seconds.
    pub retry_after: u64,
    pub at: DateTime<Utc>,
}

#[derive(Default)]
pub struct State {
    pub messages: Vec<Message>,
    pub views: HashMap<String, View>,
    /// Each user's stack of open modals, bottom first.
    pub view_stacks: HashMap<String, Vec<String>>,
    pub triggers: HashMap<String, Trigger>,
    pub response_urls: HashMap<String, ResponseUrl>,
    pub files: HashMap<String, UploadedFile>,
    pub calls: Vec<Call>,
    pub refused: Vec<Refusal>,
    buckets: HashMap<String, Bucket>,
    last_ts: (i64, u32),
    next_id: u64,
}

impl State {
    /// Starts from messages kept by an earlier run; new timestamps continue after theirs.
    pub fn restore(messages: Vec<Message>) -> Self {
        let last_ts = messages
            .iter()
            .filter_map(|m| {
                let (secs, micros) = m.ts.split_once('.')?;
                Some((secs.parse().ok()?, micros.parse().ok()?))
            })
            .max()
            .unwrap_or((0, 0));
        Self {
            messages,
            last_ts,
            ..Self::default()
        }
    }

    /// A message timestamp: unique and increasing, in Slack's `seconds.micros` form.
    pub fn next_ts(&mut self, now: DateTime<Utc>) -> String {
        let mut ts = (now.timestamp(), now.timestamp_subsec_micros());
        if ts <= self.last_ts {
            ts = self.last_ts;
            ts.1 += 1;
            if ts.1 >= 1_000_000 {
                ts = (ts.0 + 1, 0);
            }
        }
        self.last_ts = ts;
        format!("{}.{:06}", ts.0, ts.1)
    }

    /// A fresh id with Slack's prefix for its kind (`V` view, `F` file…).
    pub fn next_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}0SBX{:06}", self.next_id)
    }

    /// Takes one call of `method` from `bucket`, sized `rate` (Slack's documented limit), or
    /// says how many whole seconds to wait (Slack's `Retry-After`) and records the refusal.
    pub fn take_token(
        &mut self,
        method: &str,
        bucket: &str,
        rate: Rate,
        now: DateTime<Utc>,
    ) -> Result<(), u64> {
        let at = now.timestamp_millis();
        let taken = self
            .buckets
            .entry(bucket.to_owned())
            .or_insert_with(|| Bucket::full(rate, at))
            .take(rate, at, 0);
        let Err(wait) = taken else { return Ok(()) };
        let retry_after = u64::try_from(wait).unwrap_or(0).div_ceil(1000).max(1);
        self.refused.push(Refusal {
            method: method.to_owned(),
            bucket: bucket.to_owned(),
            retry_after,
            at: now,
        });
        Err(retry_after)
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<&Message> {
        self.messages
            .iter()
            .find(|m| m.channel == channel && m.ts == ts)
    }

    pub fn message_mut(&mut self, channel: &str, ts: &str) -> Option<&mut Message> {
        self.messages
            .iter_mut()
            .find(|m| m.channel == channel && m.ts == ts)
    }

    /// The modal on top of `user`'s stack.
    pub fn open_view(&self, user: &str) -> Option<&View> {
        self.view_stacks
            .get(user)
            .and_then(|stack| stack.last())
            .and_then(|id| self.views.get(id))
    }

    /// Closes every modal `user` has open (a submission answered with nothing or `clear`).
    pub fn close_views(&mut self, user: &str) {
        for id in self.view_stacks.remove(user).unwrap_or_default() {
            self.views.remove(&id);
        }
    }

    /// Closes the top modal only (the close button).
    pub fn pop_view(&mut self, user: &str) {
        if let Some(stack) = self.view_stacks.get_mut(user)
            && let Some(id) = stack.pop()
        {
            self.views.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_unique_and_increasing_within_one_microsecond() {
        let mut state = State::default();
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 999_999_000).unwrap();
        let a = state.next_ts(now);
        let b = state.next_ts(now);
        assert_eq!(a, "1800000000.999999");
        assert_eq!(b, "1800000001.000000");
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_in_whole_seconds_and_says_so() {
        let mut state = State::default();
        let now = Utc::now();
        let rate = crate::slack::tiers::Tier::PerChannel.slack();
        for _ in 0..rate.burst {
            assert_eq!(
                state.take_token("chat.postMessage", "channel:C1", rate, now),
                Ok(())
            );
        }
        assert_eq!(
            state.take_token("chat.postMessage", "channel:C1", rate, now),
            Err(1)
        );
        assert_eq!(
            state.take_token("chat.postMessage", "channel:C2", rate, now),
            Ok(()),
            "buckets are per key"
        );
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(
            state.take_token("chat.postMessage", "channel:C1", rate, later),
            Ok(())
        );
        assert_eq!(
            state.take_token("chat.postMessage", "channel:C1", rate, later),
            Err(1)
        );
        let refused: Vec<_> = state
            .refused
            .iter()
            .map(|r| (r.bucket.as_str(), r.retry_after))
            .collect();
        assert_eq!(refused, [("channel:C1", 1), ("channel:C1", 1)]);
    }
}
