//! Socket Mode: countersign opens a WebSocket to Slack (`apps.connections.open` with the
//! app-level token) and receives clicks, modal submissions and slash commands over it, so Slack
//! needs no way in. Each envelope's payload is exactly what Slack would have POSTed to
//! `/slack/*`; it goes to the same handler (`interactions::dispatch`, `commands::run`) and the
//! handler's [`Ack`] goes back as the envelope's acknowledgement.
//!
//! The protocol, as Slack runs it:
//! - Slack greets a new connection with `{"type": "hello", …}`.
//! - It delivers `{"envelope_id", "type": "interactive" | "slash_commands" | "events_api",
//!   "payload", "accepts_response_payload", "retry_attempt", …}`; the app answers
//!   `{"envelope_id", "payload"?}` within 3 seconds.
//! - It refreshes connections every few hours, first sending `{"type": "disconnect", "reason":
//!   "warning" | "refresh_requested" | "link_disabled"}`. countersign then opens the replacement
//!   while the old connection still delivers, and closes the old one once the new one has said
//!   hello and every envelope the old one carried is acknowledged on it: nothing falls between.
//! - A connection can also die silently (a NAT forgetting it): countersign pings every
//!   [`PING_EVERY`] and gives a connection up once nothing at all has come from it for
//!   [`SILENT_LIMIT`].
//!
//! Each replica serving the API keeps one connection; Slack spreads envelopes over an app's
//! connections (up to 10), and whichever replica gets one handles it against the shared database.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::SlackState;
use super::payload::{Interaction, SlashCommand};
use super::{Ack, SlackError, commands, interactions};
use crate::config::Secret;

/// How often countersign pings Slack on an idle connection.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// A connection from which nothing (no frame, no pong) has come for this long is dead.
pub const SILENT_LIMIT: Duration = Duration::from_secs(30);
/// The WebSocket handshake after `apps.connections.open`.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// How long a replaced connection may take to acknowledge what it still carries.
const DRAIN_WITHIN: Duration = Duration::from_secs(5);
/// A connection that served this long was healthy: the next failure starts the backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Reconnection attempts back off exponentially up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Slack's payloads are small (a view is at most 250 kB); anything far bigger is not Slack.
const MAX_FRAME: usize = 4 << 20;

/// What a connection tells the supervisor.
#[derive(Debug)]
enum Event {
    /// Slack greeted it: it delivers from now on.
    Hello(u64),
    /// Slack announced it will close it.
    Disconnect(u64, String),
    /// It ended.
    Closed(u64, String),
}

/// Keeps one live Socket Mode connection until `stop` resolves: opens it, replaces it when Slack
/// asks, reconnects (backing off) when it fails. On `stop`, every connection acknowledges what it
/// carries, then closes.
pub async fn run(state: SlackState, app_token: Secret, stop: impl Future<Output = ()>) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor::new(state, events_tx);
    tokio::pin!(stop);
    loop {
        let wanted = supervisor.wants_connection();
        if wanted && Instant::now() >= supervisor.not_before {
            let opened = tokio::select! {
                () = &mut stop => break,
                opened = supervisor.state.slack.api.open_socket(&app_token) => opened,
            };
            supervisor.opened(opened);
            continue;
        }
        let not_before = supervisor.not_before;
        let gate = async {
            if wanted {
                tokio::time::sleep_until(not_before).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = &mut stop => break,
            () = gate => {}
            Some(event) = events.recv() => match event {
                Event::Hello(id) => supervisor.greeted(id),
                Event::Disconnect(id, reason) => supervisor.disconnecting(id, &reason),
                Event::Closed(id, why) => supervisor.closed(id, &why),
            },
        }
    }
    supervisor.stop().await;
    tracing::info!("Socket Mode stopped");
}

/// The connections [`run`] keeps and what it knows of each, changed by one event at a time.
struct Supervisor {
    state: SlackState,
    events: mpsc::UnboundedSender<Event>,
    connections: HashMap<u64, Connection>,
    next_id: u64,
    /// The connection Slack last greeted (it serves).
    current: Option<u64>,
    /// A connection opened but not greeted yet.
    pending: Option<u64>,
    /// Slack announced it will close `current`: open its replacement now.
    replace: bool,
    backoff: Backoff,
    /// No connection is opened before this (the backoff after a failure).
    not_before: Instant,
}

impl Supervisor {
    fn new(state: SlackState, events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            state,
            events,
            connections: HashMap::new(),
            next_id: 0,
            current: None,
            pending: None,
            replace: false,
            backoff: Backoff::default(),
            not_before: Instant::now(),
        }
    }

    /// Whether a connection should be opened: none is on its way, and none serves or the one
    /// serving is about to be closed by Slack.
    fn wants_connection(&self) -> bool {
        self.pending.is_none() && (self.current.is_none() || self.replace)
    }

    /// `apps.connections.open` answered: serve the URL on a new connection, or back off.
    fn opened(&mut self, opened: Result<url::Url, SlackError>) {
        match opened {
            Ok(url) => {
                self.next_id += 1;
                let (close, closing) = watch::channel(false);
                let task = tokio::spawn(serve(
                    self.state.clone(),
                    self.next_id,
                    url,
                    self.events.clone(),
                    closing,
                ));
                let connection = Connection {
                    close,
                    task,
                    greeted_at: None,
                };
                self.connections.insert(self.next_id, connection);
                self.pending = Some(self.next_id);
            }
            Err(error) => {
                let delay = self.backoff.failed(&error);
                log_open_failure(&error, delay);
                self.not_before = Instant::now() + delay;
            }
        }
    }

    /// Slack greeted connection `id`: it serves from now on.
    fn greeted(&mut self, id: u64) {
        if self.pending == Some(id) {
            self.pending = None;
        }
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.greeted_at = Some(Instant::now());
        }
        // The newcomer serves; the one it replaces drains and closes.
        if let Some(old) = self.current.replace(id).filter(|old| *old != id)
            && let Some(connection) = self.connections.get(&old)
        {
            let _ = connection.close.send(true);
        }
        self.replace = false;
        metrics::gauge!("countersign_slack_socket_connected").set(1.0);
    }

    /// Slack announced it will close connection `id`.
    fn disconnecting(&mut self, id: u64, reason: &str) {
        if reason == "link_disabled" {
            tracing::error!(
                "Slack turned Socket Mode off in the app's settings: clicks now go to its request URLs; reconnecting in case it is turned back on"
            );
        } else {
            tracing::info!(connection = id, %reason, "Slack will close the Socket Mode connection; opening its replacement");
        }
        if self.current == Some(id) {
            self.replace = true;
        }
    }

    /// Connection `id` ended: if it was the one on its way or the one serving, another is
    /// opened, at once or after the backoff.
    fn closed(&mut self, id: u64, why: &str) {
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        let stable = connection
            .greeted_at
            .is_some_and(|at| at.elapsed() >= STABLE_AFTER);
        if stable {
            self.backoff.reset();
        }
        if self.pending == Some(id) {
            self.pending = None;
            let delay = self.backoff.next();
            tracing::warn!(connection = id, %why, retry_in = ?delay, "Socket Mode connection failed before Slack greeted it");
            self.not_before = Instant::now() + delay;
        } else if self.current == Some(id) {
            self.current = None;
            self.replace = false;
            metrics::gauge!("countersign_slack_socket_connected").set(0.0);
            // A healthy connection that dropped is replaced at once; one that keeps
            // dropping, after the backoff.
            let delay = if stable {
                Duration::ZERO
            } else {
                self.backoff.next()
            };
            tracing::warn!(connection = id, %why, retry_in = ?delay, "Socket Mode connection lost; reconnecting");
            self.not_before = Instant::now() + delay;
        } else {
            tracing::debug!(connection = id, %why, "replaced Socket Mode connection closed");
        }
    }

    /// Closes every connection, each after acknowledging what it carries.
    async fn stop(self) {
        metrics::gauge!("countersign_slack_socket_connected").set(0.0);
        for connection in self.connections.values() {
            let _ = connection.close.send(true);
        }
        for (id, connection) in self.connections {
            if tokio::time::timeout(DRAIN_WITHIN + Duration::from_secs(1), connection.task)
                .await
                .is_err()
            {
                tracing::warn!(
                    connection = id,
                    "Socket Mode connection did not close in time"
                );
            }
        }
    }
}

struct Connection {
    close: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    greeted_at: Option<Instant>,
}

fn log_open_failure(error: &SlackError, retry_in: Duration) {
    match error {
        // A token problem does not mend itself; say which setting to look at.
        SlackError::Api(code)
            if [
                "invalid_auth",
                "not_authed",
                "not_allowed_token_type",
                "token_revoked",
            ]
            .iter()
            .any(|c| code.starts_with(c)) =>
        {
            tracing::error!(%error, ?retry_in, "Slack refused slack_app_token for Socket Mode: it must be the app's app-level token (xapp-…) with the connections:write scope");
        }
        _ => tracing::warn!(%error, ?retry_in, "cannot open a Socket Mode connection"),
    }
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`]; a 429 waits as told.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_secs(1 << (self.failures - 1).min(6)).min(MAX_BACKOFF);
        base.mul_f64(1.0 + rand::random::<f64>() * 0.1)
    }

    fn failed(&mut self, error: &SlackError) -> Duration {
        match error {
            SlackError::RateLimited(after) => {
                self.failures = self.failures.saturating_add(1);
                *after
            }
            _ => self.next(),
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How long a handled envelope's id is remembered (Slack retries within minutes).
const ENVELOPE_DEDUP: Duration = Duration::from_secs(600);

/// One connection: reads frames, hands envelopes to the handlers, writes their acknowledgements,
/// pings, and reports how it ended.
async fn serve(
    state: SlackState,
    id: u64,
    url: url::Url,
    events: mpsc::UnboundedSender<Event>,
    mut close: watch::Receiver<bool>,
) {
    let host = url.host_str().unwrap_or("?").to_owned();
    let socket = match connect(&url, &host).await {
        Ok(socket) => socket,
        Err(why) => {
            let _ = events.send(Event::Closed(id, why));
            return;
        }
    };
    tracing::debug!(connection = id, %host, "Socket Mode connection open");
    let (mut sink, mut frames) = socket.split();
    let mut handlers: JoinSet<String> = JoinSet::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = Instant::now();
    let mut drain_until: Option<Instant> = None;
    let ended = loop {
        if let Some(deadline) = drain_until
            && (handlers.is_empty() || Instant::now() >= deadline)
        {
            let _ = sink.send(Message::Close(None)).await;
            break "closed by countersign".to_owned();
        }
        let drained = async {
            match drain_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = frames.next() => {
                heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        take_frame(read_frame(&text), id, &host, &events, &state, &mut handlers);
                    }
                    // tungstenite answers pings by itself; pongs and pings only prove life.
                    Some(Ok(Message::Close(frame))) => {
                        break format!("closed by Slack ({})", frame.map_or_else(|| "no reason".to_owned(), |f| f.to_string()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => break error.to_string(),
                    None => break "connection ended".to_owned(),
                }
            }
            Some(done) = handlers.join_next(), if !handlers.is_empty() => {
                match done {
                    Ok(ack) => {
                        if let Err(error) = sink.send(Message::text(ack)).await {
                            break format!("cannot acknowledge: {error}");
                        }
                    }
                    Err(error) => tracing::error!(connection = id, %error, "Socket Mode handler failed; Slack will show the person an error"),
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= SILENT_LIMIT {
                    break format!("nothing from Slack for {:?}", heard.elapsed());
                }
                if let Err(error) = sink.send(Message::Ping(Default::default())).await {
                    break format!("cannot ping: {error}");
                }
            }
            Ok(()) = close.changed(), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + DRAIN_WITHIN);
            }
            () = drained => {}
        }
    };
    // Handlers still running finish on their own (a vote is never cut short); only their
    // acknowledgements are lost, as when an HTTP client hangs up.
    handlers.detach_all();
    let _ = events.send(Event::Closed(id, ended));
}

/// Passes a greeting or a disconnection warning to the supervisor, and an envelope to a
/// handler whose acknowledgement `serve` sends when it is ready.
fn take_frame(
    frame: Frame,
    id: u64,
    host: &str,
    events: &mpsc::UnboundedSender<Event>,
    state: &SlackState,
    handlers: &mut JoinSet<String>,
) {
    match frame {
        Frame::Hello { num_connections } => {
            tracing::info!(connection = id, %host, num_connections, "Socket Mode connected");
            let _ = events.send(Event::Hello(id));
        }
        Frame::Disconnect { reason } => {
            let _ = events.send(Event::Disconnect(id, reason));
        }
        Frame::Envelope(envelope) => {
            let state = state.clone();
            handlers.spawn(async move { envelope.answer(&state).await });
        }
        Frame::Unknown(kind) => tracing::debug!(connection = id, kind, "Socket Mode frame ignored"),
    }
}

/// The WebSocket to `url`, or why there is none (said as [`Event::Closed`] says it).
async fn connect(
    url: &url::Url,
    host: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let connected = tokio::time::timeout(
        CONNECT_WITHIN,
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false),
    )
    .await;
    match connected {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(format!("cannot connect to {host}: {error}")),
        Err(_) => Err(format!(
            "no WebSocket handshake from {host} within {CONNECT_WITHIN:?}"
        )),
    }
}

/// A frame from Slack, as far as countersign reads it.
#[derive(Debug, PartialEq)]
enum Frame {
    Hello { num_connections: Option<u64> },
    Disconnect { reason: String },
    Envelope(Envelope),
    Unknown(String),
}

/// A delivery to acknowledge.
#[derive(Debug, PartialEq)]
struct Envelope {
    id: String,
    kind: String,
    payload: Value,
    accepts_response_payload: bool,
}

fn read_frame(text: &str) -> Frame {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "type", default)]
        kind: String,
        envelope_id: Option<String>,
        #[serde(default)]
        payload: Value,
        #[serde(default)]
        accepts_response_payload: bool,
        #[serde(default)]
        reason: String,
        num_connections: Option<u64>,
    }
    let Ok(raw) = serde_json::from_str::<Raw>(text) else {
        return Frame::Unknown("(not JSON)".into());
    };
    match (raw.envelope_id, raw.kind.as_str()) {
        // Anything carrying an envelope id is acknowledged, even of a type unknown here, or
        // Slack would deliver it again.
        (Some(id), _) => Frame::Envelope(Envelope {
            id,
            kind: raw.kind,
            payload: raw.payload,
            accepts_response_payload: raw.accepts_response_payload,
        }),
        (None, "hello") => Frame::Hello {
            num_connections: raw.num_connections,
        },
        (None, "disconnect") => Frame::Disconnect { reason: raw.reason },
        (None, _) => Frame::Unknown(raw.kind),
    }
}

impl Envelope {
    /// Runs the handler the HTTP endpoint runs; answers the acknowledgement to send.
    async fn answer(self, state: &SlackState) -> String {
        metrics::counter!("countersign_slack_socket_envelopes_total", "type" => self.kind.clone())
            .increment(1);
        // Slack redelivers an envelope whose acknowledgement it did not get, possibly to
        // another replica: the first delivery did the work (and votes are idempotent anyway).
        if !state
            .seen
            .first_time(&format!("envelope:{}", self.id), ENVELOPE_DEDUP)
            .await
        {
            tracing::debug!(envelope = %self.id, "redelivered envelope already handled");
            return acknowledgement(&self.id, Ack::default(), self.accepts_response_payload);
        }
        let ack = match self.kind.as_str() {
            "interactive" => match serde_json::from_value::<Interaction>(self.payload) {
                Ok(interaction) => interactions::dispatch(state.clone(), interaction)
                    .await
                    .unwrap_or_else(|error| {
                        tracing::error!(%error, "Socket Mode interaction failed");
                        Ack::default()
                    }),
                Err(error) => {
                    tracing::warn!(%error, "unreadable interaction over Socket Mode");
                    Ack::default()
                }
            },
            "slash_commands" => match serde_json::from_value::<SlashCommand>(self.payload) {
                Ok(command) => commands::run(state, &command).await,
                Err(error) => {
                    tracing::warn!(%error, "unreadable slash command over Socket Mode");
                    Ack::default()
                }
            },
            // countersign subscribes to no events; one that arrives is acknowledged and dropped.
            other => {
                tracing::debug!(kind = other, "Socket Mode delivery ignored");
                Ack::default()
            }
        };
        acknowledgement(&self.id, ack, self.accepts_response_payload)
    }
}

/// `{"envelope_id", "payload"?}`. A body goes only where Slack takes one.
fn acknowledgement(envelope_id: &str, ack: Ack, accepts_response_payload: bool) -> String {
    match ack.0 {
        Some(payload) if accepts_response_payload => {
            json!({"envelope_id": envelope_id, "payload": payload})
        }
        Some(_) => {
            tracing::debug!("Slack takes no payload with this acknowledgement; dropped");
            json!({"envelope_id": envelope_id})
        }
        None => json!({"envelope_id": envelope_id}),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_slacks_frames() {
        let hello = r#"{"type":"hello","num_connections":2,"debug_info":{"host":"applink-7","build_number":10,"approximate_connection_time":18060},"connection_info":{"app_id":"A0"}}"#;
        assert_eq!(
            read_frame(hello),
            Frame::Hello {
                num_connections: Some(2)
            }
        );
        let disconnect = r#"{"type":"disconnect","reason":"refresh_requested","debug_info":{"host":"applink-7"}}"#;
        assert_eq!(
            read_frame(disconnect),
            Frame::Disconnect {
                reason: "refresh_requested".into()
            }
        );
        let command = r#"{"envelope_id":"e-1","payload":{"command":"/countersign","text":"help","user_id":"U1","channel_id":"C1"},"type":"slash_commands","accepts_response_payload":true,"retry_attempt":0,"retry_reason":""}"#;
        let Frame::Envelope(envelope) = read_frame(command) else {
            panic!("an envelope");
        };
        assert_eq!(
            (envelope.id.as_str(), envelope.kind.as_str()),
            ("e-1", "slash_commands")
        );
        assert!(envelope.accepts_response_payload);
        assert_eq!(envelope.payload["text"], "help");
        // A type this build does not know is still an envelope to acknowledge.
        let novel = r#"{"envelope_id":"e-2","type":"something_new","payload":{}}"#;
        assert!(matches!(read_frame(novel), Frame::Envelope(e) if e.id == "e-2"));
        assert_eq!(read_frame("not json"), Frame::Unknown("(not JSON)".into()));
    }

    #[test]
    fn acknowledgements_carry_a_payload_only_where_slack_takes_one() {
        let body = json!({"response_action": "errors", "errors": {"reason": "Say why"}});
        let with: Value =
            serde_json::from_str(&acknowledgement("e-1", Ack::with(body.clone()), true)).unwrap();
        assert_eq!(with, json!({"envelope_id": "e-1", "payload": body}));
        let refused: Value =
            serde_json::from_str(&acknowledgement("e-1", Ack::with(body), false)).unwrap();
        assert_eq!(refused, json!({"envelope_id": "e-1"}));
        let bare: Value =
            serde_json::from_str(&acknowledgement("e-2", Ack::default(), true)).unwrap();
        assert_eq!(bare, json!({"envelope_id": "e-2"}));
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_honours_retry_after() {
        let mut backoff = Backoff::default();
        for base in [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0] {
            let delay = backoff.next().as_secs_f64();
            // Up to 10% of jitter, so replicas do not reconnect in step.
            assert!(delay >= base && delay <= base * 1.1, "{delay} for {base}");
        }
        assert_eq!(
            backoff.failed(&SlackError::RateLimited(Duration::from_secs(42))),
            Duration::from_secs(42)
        );
        backoff.reset();
        assert!(backoff.next() < Duration::from_millis(1101));
    }
}
