//! The click load: each click approves a distinct proposal. Two modes, over a fixed set of
//! keep-alive connections (one worker each):
//! - saturating: every worker sends its next click as soon as the last is answered, so the rate
//!   is what the server sustains; latency is from send to answer;
//! - paced (open loop): click `i` is due at `start + i / rate` whether or not earlier ones were
//!   answered, and its latency is counted from when it was due. A stalled server therefore shows
//!   as latency on every click that should have gone out meanwhile, instead of as fewer clicks
//!   sent (coordinated omission, which a closed loop hides). Nothing new is sent after the
//!   duration, so a server far slower than the rate ends the run on time; the clicks that fell
//!   due but were never sent are counted as `unsent`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use countersign::config::Secret;

use crate::payload::Clicker;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Saturate,
    Paced { per_second: f64 },
}

/// Everything a run needs, shared by its workers.
pub struct Load {
    pub http: reqwest::Client,
    /// `…/slack/interactions`.
    pub url: String,
    pub clicker: Clicker,
    pub secret: Secret,
    pub ids: Vec<String>,
    pub mode: Mode,
    pub connections: usize,
    pub duration: Duration,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Ids of the proposals whose click was answered `200`.
    pub answered: Vec<String>,
    pub non_200: usize,
    /// Requests that got no HTTP answer at all.
    pub errors: usize,
    /// Paced: clicks due within the duration that were not sent before it ended.
    pub unsent: usize,
    /// Every answer's latency (`200` or not), unsorted.
    pub latencies: Vec<Duration>,
    /// From the start to the last answer.
    pub seconds: f64,
}

/// Runs the load until `duration` has passed or every id has been clicked.
pub async fn drive(load: Arc<Load>) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..load.connections.max(1) {
        workers.spawn(worker(load.clone(), next.clone(), start));
    }
    let mut total = Outcome::default();
    let mut last = start;
    while let Some(done) = workers.join_next().await {
        let (outcome, finished) = done.expect("click worker");
        total.answered.extend(outcome.answered);
        total.non_200 += outcome.non_200;
        total.errors += outcome.errors;
        total.latencies.extend(outcome.latencies);
        last = last.max(finished);
    }
    total.seconds = (last - start).as_secs_f64();
    if let Mode::Paced { per_second } = load.mode {
        let due = ((per_second * load.duration.as_secs_f64()).ceil() as usize).min(load.ids.len());
        let sent = total.answered.len() + total.non_200 + total.errors;
        total.unsent = due.saturating_sub(sent);
    }
    total
}

async fn worker(load: Arc<Load>, next: Arc<AtomicUsize>, start: Instant) -> (Outcome, Instant) {
    let end = start + load.duration;
    let mut outcome = Outcome::default();
    let mut finished = start;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(id) = load.ids.get(i) else { break };
        let due = match load.mode {
            Mode::Saturate => None,
            Mode::Paced { per_second } => {
                Some(start + Duration::from_secs_f64(i as f64 / per_second))
            }
        };
        // Past the end nothing more is sent: in paced mode the clicks still due are unsent.
        if due.unwrap_or(start) >= end || Instant::now() >= end {
            break;
        }
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let signed = load.clicker.signed(&load.secret, id, i as u64, unix);
        let sent = Instant::now();
        let answer = load
            .http
            .post(&load.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", signed.timestamp)
            .header("x-slack-signature", signed.signature)
            .body(signed.body)
            .send()
            .await;
        let answer = match answer {
            Ok(response) => {
                let status = response.status();
                response.bytes().await.map(|body| (status, body))
            }
            Err(error) => Err(error),
        };
        finished = Instant::now();
        match answer {
            Ok((status, body)) => {
                outcome.latencies.push(finished - due.unwrap_or(sent));
                if status == 200 {
                    outcome.answered.push(id.clone());
                } else {
                    if outcome.non_200 < 3 {
                        eprintln!("clicks: {status} {}", String::from_utf8_lossy(&body));
                    }
                    outcome.non_200 += 1;
                }
            }
            Err(error) => {
                if outcome.errors < 3 {
                    eprintln!("clicks: {error}");
                }
                outcome.errors += 1;
            }
        }
    }
    (outcome, finished)
}

/// The `q` quantile (0–1) of sorted latencies, by the nearest-rank method.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
