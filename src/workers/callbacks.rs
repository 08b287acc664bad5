//! The callback worker: delivers `proposal.decided` events to agents, signed the Standard
//! Webhooks way, under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so any replica may
//! deliver), each delivery in its own task so a slow endpoint never holds up the others.
//!
//! What an answer means: any 2xx is delivered; a redirect is not followed (it is a failed
//! attempt); 410 Gone stops deliveries to that URL until an operator redelivers; 429 and 503
//! are retried after their `Retry-After`; anything else, a timeout or a refused connection is
//! retried on [`crate::domain::callback::SCHEDULE`] (with up to 10% jitter) and, when that runs
//! out, the delivery has failed and the agent's owner is told in Slack. A URL the SSRF guard
//! refuses fails at once, whether it names a refused IP or a host name that resolves only to
//! refused addresses; a host name is resolved again at every attempt, and only the addresses the
//! guard allows are ever connected to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use crate::callbacks::secrets::SecretSource;
use crate::callbacks::signature::{self, WebhookSecret};
use crate::callbacks::ssrf::Guard;
use crate::clock::Clock;
use crate::domain::WebhookDelivery;
use crate::domain::callback::retry_delay;
use crate::engine::Engine;
use crate::engine::EngineError;
use crate::registry::SharedRegistry;
use crate::store::{WebhookAttempt, WebhookNext};

/// Deliveries in flight at once, per process.
const IN_FLIGHT: usize = 64;
/// How often an idle worker looks for due deliveries (decisions in this process wake it).
const POLL: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);

#[derive(Clone)]
pub struct CallbackWorker {
    pub engine: Engine,
    pub registry: SharedRegistry,
    pub clock: Arc<dyn Clock>,
    pub guard: Arc<Guard>,
    /// Built by [`CallbackWorker::client`]: guarded resolver, no proxy, no redirects.
    pub http: reqwest::Client,
    /// One attempt's limit; the lease is twice this, so a crashed worker's deliveries come back
    /// soon after.
    pub timeout: Duration,
    pub in_flight: Arc<Semaphore>,
    /// Where agents' signing secrets are read: the environment, and what demo mode gives.
    pub secret_source: SecretSource,
}

/// How one attempt went.
#[derive(Debug)]
enum Answer {
    Status(u16, Option<Duration>),
    /// A 3xx, recorded with its status but never followed (the target could be anywhere).
    Redirect(u16, String),
    Failed(String),
}

impl Answer {
    fn status_code(&self) -> Option<i32> {
        match self {
            Answer::Status(code, _) | Answer::Redirect(code, _) => Some(i32::from(*code)),
            Answer::Failed(_) => None,
        }
    }

    /// Why the attempt did not deliver, if it did not.
    fn error(&self) -> Option<String> {
        match self {
            Answer::Status(code, _) if (200..300).contains(code) => None,
            Answer::Status(code, _) => Some(format!("answered {code}")),
            Answer::Redirect(code, to) => {
                Some(format!("answered {code} (redirect to {to}), not followed"))
            }
            Answer::Failed(error) => Some(error.clone()),
        }
    }
}

impl CallbackWorker {
    pub fn new(
        engine: Engine,
        registry: SharedRegistry,
        clock: Arc<dyn Clock>,
        guard: Guard,
        timeout: Duration,
    ) -> Self {
        let guard = Arc::new(guard);
        let http = guard
            .client_builder()
            .timeout(timeout)
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the callback HTTP client builds");
        Self {
            engine,
            registry,
            clock,
            guard,
            http,
            timeout,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            secret_source: SecretSource::default(),
        }
    }

    /// Reads agents' secrets from `source` (the environment, and values given in-process).
    pub fn with_secret_source(mut self, source: SecretSource) -> Self {
        self.secret_source = source;
        self
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.timeout * 2).unwrap_or(chrono::Duration::seconds(30))
    }

    /// Runs until `shutdown`, waking on `work` or every [`POLL`]; deliveries in flight finish.
    pub async fn run(self, work: Arc<Notify>, shutdown: impl std::future::Future<Output = ()>) {
        let this = &self;
        super::driver::drive("callback", POLL, Some(work), shutdown, || async move {
            this.start_due().await.map(super::driver::Progress::of)
        })
        .await;
        // Let deliveries in flight finish (each is bounded by the timeout).
        let _ = self.in_flight.acquire_many(IN_FLIGHT as u32).await;
    }

    /// Claims as many due deliveries as there are free slots and starts each in its own task;
    /// answers how many it started.
    pub async fn start_due(&self) -> Result<usize, EngineError> {
        let free = self.in_flight.available_permits();
        if free == 0 {
            return Ok(0);
        }
        let due = (self.engine)
            .claim_callbacks(self.lease(), free as i64)
            .await?;
        let started = due.len();
        for delivery in due {
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                break;
            };
            let worker = self.clone();
            tokio::spawn(async move {
                if let Err(error) = worker.deliver(&delivery).await {
                    tracing::warn!(event = %delivery.id, %error, "callback worker: cannot record the attempt; it will be retried when its lease ends");
                }
                drop(permit);
            });
        }
        Ok(started)
    }

    /// One attempt at one delivery, recorded with what follows from it.
    async fn deliver(&self, delivery: &WebhookDelivery) -> Result<(), EngineError> {
        let attempt = delivery.attempts + 1;
        let started_at = self.clock.now();
        let started = Instant::now();
        let (answer, permanent) = self.attempt(delivery).await;
        let record = WebhookAttempt {
            attempt,
            at: started_at,
            status_code: answer.status_code(),
            error: answer.error(),
            duration_ms: started.elapsed().as_millis() as i64,
        };
        let next = next_step(&answer, permanent, attempt, started_at);
        let outcome = match &next {
            WebhookNext::Delivered => "delivered",
            WebhookNext::Retry { .. } => "retry",
            WebhookNext::Failed { .. } => "failed",
        };
        metrics::counter!("countersign_callback_attempts_total", "outcome" => outcome).increment(1);
        tracing::info!(event = %delivery.id, proposal_id = %delivery.proposal_id, attempt, status = ?record.status_code, error = ?record.error, outcome, "callback attempt");
        let retry_at = match &next {
            WebhookNext::Retry { at } => Some(*at),
            _ => None,
        };
        (self.engine)
            .record_callback_attempt(delivery.clone(), record, next)
            .await?;
        if let Some(at) = retry_at {
            // Claimed when it is due, not at the next idle poll (which made the "5 s" first
            // retry come at 6 s): a wake-up at the retry time. Other replicas, and a restart,
            // still find it by polling.
            let wait = (at - self.clock.now()).to_std().unwrap_or_default();
            let work = self.engine.callback_work();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                work.notify_one();
            });
        }
        Ok(())
    }

    /// Makes the request; answers what came back and whether a failure is permanent.
    async fn attempt(&self, delivery: &WebhookDelivery) -> (Answer, bool) {
        if matches!(self.engine.endpoint_disabled(&delivery.url).await, Ok(true)) {
            let gone = "the endpoint answered 410 Gone earlier: deliveries to it are stopped";
            return (Answer::Failed(gone.into()), true);
        }
        let url = match url::Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(error) => return (Answer::Failed(format!("not a URL: {error}")), true),
        };
        match self.guard.check_url(&url) {
            Ok(()) => {}
            Err(refused) => {
                return (Answer::Failed(format!("refused: {refused}")), true);
            }
        }
        let secrets = match self.secrets(&delivery.agent) {
            Ok(secrets) => secrets,
            // The operator may yet set it: retried on the schedule.
            Err(error) => return (Answer::Failed(error), false),
        };
        let timestamp = self.clock.now().timestamp();
        let body = delivery.body.as_bytes();
        let request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(signature::ID_HEADER, &delivery.id)
            .header(signature::TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(&secrets, &delivery.id, timestamp, body),
            )
            .body(delivery.body.clone());
        match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after = retry_after(response.headers(), self.clock.now());
                if response.status().is_redirection() {
                    let to = response
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?");
                    let to: String = to.chars().take(200).collect();
                    return (Answer::Redirect(code, to), false);
                }
                (Answer::Status(code, retry_after), false)
            }
            Err(error) if error.is_timeout() => (
                Answer::Failed(format!("no answer within {:?}", self.timeout)),
                false,
            ),
            // A name that resolves only to addresses the guard refuses is refused as an
            // IP literal is: at once, for good, in the same words.
            Err(error) => match refused_name(&error) {
                Some(refused) => (Answer::Failed(format!("refused: {refused}")), true),
                None => (Answer::Failed(error_chain(&error)), false),
            },
        }
    }

    /// The agent's signing secrets, from the variable its manifest names.
    fn secrets(&self, agent: &str) -> Result<Vec<WebhookSecret>, String> {
        let registry = self.registry.current();
        let Some(agent) = registry.agents.get(agent) else {
            return Err(format!("agent {agent} is no longer declared"));
        };
        let Some(var) = &agent.callback_secret_env else {
            return Err(format!(
                "agent {} has no callback_secret_env in its manifest: callbacks are signed",
                agent.id
            ));
        };
        self.secret_source.secrets(var)
    }
}

/// What follows an attempt.
fn next_step(answer: &Answer, permanent: bool, attempt: i32, at: DateTime<Utc>) -> WebhookNext {
    let give_up = |error: String| WebhookNext::Failed {
        error,
        disable: false,
    };
    let error = match answer {
        Answer::Status(code, _) if (200..300).contains(code) => return WebhookNext::Delivered,
        Answer::Status(410, _) => {
            return WebhookNext::Failed {
                error: "answered 410 Gone: deliveries to this endpoint are stopped".into(),
                disable: true,
            };
        }
        Answer::Status(code @ (429 | 503), Some(after)) => {
            if retry_delay(attempt).is_none() {
                return give_up(format!("answered {code}; no attempts left"));
            }
            let after = chrono::Duration::from_std((*after).min(MAX_RETRY_AFTER))
                .unwrap_or(chrono::Duration::hours(10));
            return WebhookNext::Retry { at: at + after };
        }
        other => other.error().unwrap_or_default(),
    };
    if permanent {
        return give_up(error);
    }
    match retry_delay(attempt) {
        Some(delay) => {
            let jitter = delay.mul_f64(rand::random::<f64>() * 0.1);
            let delay = chrono::Duration::from_std(delay + jitter).unwrap_or_default();
            WebhookNext::Retry { at: at + delay }
        }
        None => give_up(format!("{error}; gave up after {attempt} attempts")),
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    (at - now).to_std().ok()
}

/// The guarded resolver's refusal inside a request error, if that is why it failed.
fn refused_name(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<crate::callbacks::ssrf::NoPermittedAddress>()
            && !refused.refused.is_empty()
        {
            return Some(format!("callback URL host {refused}"));
        }
        source = cause.source();
    }
    None
}

/// An error with its causes, which is where reqwest keeps the useful part (and where the SSRF
/// resolver's refusal is).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-11-21T09:00:00Z".parse().unwrap()
    }

    #[test]
    fn answers_decide_what_follows() {
        let ok = Answer::Status(204, None);
        assert_eq!(next_step(&ok, false, 1, at()), WebhookNext::Delivered);
        let gone = next_step(&Answer::Status(410, None), false, 1, at());
        assert!(matches!(gone, WebhookNext::Failed { disable: true, .. }));
        let busy = Answer::Status(429, Some(Duration::from_secs(120)));
        assert_eq!(
            next_step(&busy, false, 1, at()),
            WebhookNext::Retry {
                at: at() + chrono::Duration::seconds(120)
            }
        );
        // The second attempt comes 5 s (plus at most 10%) after the first failed.
        let WebhookNext::Retry { at: next } = next_step(&Answer::Status(500, None), false, 1, at())
        else {
            panic!()
        };
        assert!(next >= at() + chrono::Duration::seconds(5));
        assert!(next <= at() + chrono::Duration::milliseconds(5500));
        let last = next_step(&Answer::Status(500, None), false, 8, at());
        assert!(
            matches!(last, WebhookNext::Failed { disable: false, ref error } if error.contains("gave up after 8"))
        );
        let refused = Answer::Failed("refused: 10.0.0.1 is private".into());
        assert!(matches!(
            next_step(&refused, true, 1, at()),
            WebhookNext::Failed { .. }
        ));
    }

    #[tokio::test]
    async fn https_callbacks_can_be_made() {
        // Agents' endpoints are HTTPS: the client must speak TLS (a build without it fails
        // every such callback with "scheme is not http").
        let allow = crate::callbacks::ssrf::Allowlist::parse("127.0.0.1").unwrap();
        let client = Arc::new(Guard::new(allow))
            .client_builder()
            .build()
            .unwrap();
        let error = client
            .post("https://127.0.0.1:1/")
            .send()
            .await
            .unwrap_err();
        let text = error_chain(&error);
        assert!(!text.contains("scheme is not http"), "{text}");
        assert!(error.is_connect(), "{text}");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "120".parse().unwrap());
        assert_eq!(retry_after(&headers, at()), Some(Duration::from_secs(120)));
        headers.insert(
            "retry-after",
            "Sat, 21 Nov 2026 09:01:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, at()), Some(Duration::from_secs(60)));
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, at()), None);
    }
}
