//! Socket Mode, Slack's side of it, for a sandbox made with [`Sandbox::with_socket_mode`]: the
//! app asks `apps.connections.open` (with the app-level token) for a single-use URL, opens a
//! WebSocket there, is greeted with `hello`, and from then on every click, modal submission and
//! slash command reaches it as an envelope on one of its connections (taken in turn) instead of
//! an HTTP request; its acknowledgement is the answer. Written from Slack's protocol, not from
//! countersign's client, so the tests check one against the other.
//!
//! The control API can also make the trouble Slack makes: `disconnect` frames ahead of a refresh
//! (then closing the connection as Slack does), connections dropped without a word, and
//! connections that go quiet while their TCP stays open (a NAT that forgot them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Sandbox;
use super::api::Reply;
use super::workspace::APP_ID;
use crate::config::Secret;

/// A URL from `apps.connections.open` is good for one connection, soon.
const TICKET_LIFETIME: chrono::Duration = chrono::Duration::seconds(30);
/// Slack closes a connection this long after warning it (`disconnect`), unless told otherwise.
const CLOSE_AFTER_WARNING: Duration = Duration::from_secs(10);
/// How long the sandbox waits for an acknowledgement (Slack shows the person an error after
/// 3 s; the sandbox waits as long as for an HTTP answer, so a slow test machine is not a failure).
pub(super) const ACK_WITHIN: Duration = Duration::from_secs(10);

/// Socket Mode's state: tickets, open connections, envelopes awaiting acknowledgement.
pub(super) struct Hub {
    app_token: Secret,
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    tickets: HashMap<String, DateTime<Utc>>,
    connections: BTreeMap<u64, mpsc::UnboundedSender<Out>>,
    opened: u64,
    /// Envelopes sent, awaiting their acknowledgement: on which connection, and who waits.
    waiting: HashMap<String, (u64, oneshot::Sender<Option<Value>>)>,
    turn: usize,
    log: Vec<Delivery>,
}

/// What the sandbox tells a connection's task.
enum Out {
    Frame(String),
    /// Close it properly (a close frame), as Slack does after a warning.
    Close,
    /// Drop it without a word, as a network failure does.
    Drop,
    /// Go quiet: Slack stops using it, and nothing more is read or written on it (pings go
    /// unanswered), while the TCP connection stays open — for [`STALL_FOR`].
    Stall,
}

/// How long a stalled connection's TCP stays open.
const STALL_FOR: Duration = Duration::from_secs(120);

/// One envelope, for the control API.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub envelope_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub connection: u64,
    pub acknowledged: bool,
}

impl Hub {
    pub(super) fn new(app_token: Secret) -> Self {
        Self {
            app_token,
            state: Mutex::default(),
        }
    }

    pub(super) fn accepts(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        token
            .as_bytes()
            .ct_eq(self.app_token.expose().as_bytes())
            .into()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().expect("socket hub poisoned")
    }
}

impl Sandbox {
    fn hub(&self) -> Option<&Hub> {
        self.0.socket.as_ref()
    }

    /// `apps.connections.open`: a single-use WebSocket URL.
    pub(super) fn open_connection(&self) -> Reply {
        let Some(hub) = self.hub() else {
            return Reply::Error("invalid_auth", None);
        };
        let ticket = hex::encode(rand::random::<[u8; 16]>());
        let now = self.0.clock.now();
        {
            let mut state = hub.state();
            state.tickets.retain(|_, at| now - *at <= TICKET_LIFETIME);
            state.tickets.insert(ticket.clone(), now);
        }
        let mut url = self.url("sandbox/socket");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).expect("http(s) becomes ws(s)");
        url.query_pairs_mut()
            .append_pair("ticket", &ticket)
            .append_pair("app_id", APP_ID);
        Reply::Ok(json!({"url": url.as_str()}))
    }

    /// Sends an envelope to one of the app's connections (in turn) and waits for its
    /// acknowledgement: `(200, payload)` (`""` when it carried none, as an empty HTTP answer
    /// reads), `503` with no connection, `502` if the connection went first, `504` past
    /// [`ACK_WITHIN`].
    pub(super) async fn deliver_envelope(
        &self,
        kind: &str,
        payload: Value,
        accepts_response_payload: bool,
    ) -> (u16, Value) {
        let hub = self.hub().expect("socket mode is on");
        let envelope_id = format!(
            "{}-{}",
            hex::encode(rand::random::<[u8; 4]>()),
            hex::encode(rand::random::<[u8; 12]>())
        );
        let envelope = json!({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": 0, "retry_reason": "",
        });
        let (answered, answer) = oneshot::channel();
        {
            let mut state = hub.state();
            let ids: Vec<u64> = state.connections.keys().copied().collect();
            if ids.is_empty() {
                return (
                    503,
                    json!("no Socket Mode connection: the app is not connected"),
                );
            }
            let connection = ids[state.turn % ids.len()];
            state.turn = state.turn.wrapping_add(1);
            state
                .waiting
                .insert(envelope_id.clone(), (connection, answered));
            state.log.push(Delivery {
                envelope_id: envelope_id.clone(),
                kind: kind.to_owned(),
                connection,
                acknowledged: false,
            });
            let _ = state.connections[&connection].send(Out::Frame(envelope.to_string()));
        }
        match tokio::time::timeout(ACK_WITHIN, answer).await {
            Ok(Ok(payload)) => (200, payload.unwrap_or_else(|| json!(""))),
            Ok(Err(_)) => (
                502,
                json!("the connection closed before acknowledging the envelope"),
            ),
            Err(_) => {
                hub.state().waiting.remove(&envelope_id);
                (
                    504,
                    json!(format!("no acknowledgement within {ACK_WITHIN:?}")),
                )
            }
        }
    }

    /// Runs one connection until either side ends it.
    async fn serve_socket<S>(self, socket: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let hub = self.hub().expect("socket mode is on");
        let (to_connection, mut outgoing) = mpsc::unbounded_channel();
        let (id, count) = {
            let mut state = hub.state();
            state.opened += 1;
            let id = state.opened;
            state.connections.insert(id, to_connection);
            (id, state.connections.len())
        };
        let (mut sink, mut frames) = socket.split();
        let hello = json!({
            "type": "hello", "num_connections": count,
            "debug_info": {"host": "sandbox", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        });
        let mut open = sink.send(Message::text(hello.to_string())).await.is_ok();
        self.changed();
        while open {
            tokio::select! {
                out = outgoing.recv() => match out {
                    Some(Out::Frame(text)) => open = sink.send(Message::text(text)).await.is_ok(),
                    Some(Out::Close) => {
                        let _ = sink.send(Message::Close(None)).await;
                        open = false;
                    }
                    Some(Out::Drop) | None => open = false,
                    Some(Out::Stall) => {
                        hub.state().connections.remove(&id);
                        self.changed();
                        tokio::time::sleep(STALL_FOR).await;
                        open = false;
                    }
                },
                frame = frames.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.acknowledged(id, &text),
                    // Pings are answered by tungstenite itself.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => open = false,
                    Some(Ok(_)) => {}
                },
            }
        }
        {
            let mut state = hub.state();
            state.connections.remove(&id);
            // Whoever waits on an envelope this connection carried hears it will not come.
            state.waiting.retain(|_, (on, _)| *on != id);
        }
        self.changed();
    }

    fn acknowledged(&self, connection: u64, text: &str) {
        #[derive(Deserialize)]
        struct Ack {
            envelope_id: String,
            payload: Option<Value>,
        }
        let Ok(ack) = serde_json::from_str::<Ack>(text) else {
            tracing::warn!(text, "sandbox: not an acknowledgement");
            return;
        };
        let hub = self.hub().expect("socket mode is on");
        let mut state = hub.state();
        // An acknowledgement counts on the connection that carried the envelope, as in Slack.
        match state.waiting.remove(&ack.envelope_id) {
            Some((on, answered)) if on == connection => {
                let _ = answered.send(ack.payload);
                if let Some(delivery) = state
                    .log
                    .iter_mut()
                    .rev()
                    .find(|d| d.envelope_id == ack.envelope_id)
                {
                    delivery.acknowledged = true;
                }
            }
            Some(other) => {
                state.waiting.insert(ack.envelope_id, other);
            }
            None => {
                tracing::debug!(envelope_id = %ack.envelope_id, "sandbox: acknowledgement of nothing awaited")
            }
        }
    }

    /// What the control API shows of Socket Mode.
    pub(super) fn socket_status(&self) -> Option<Value> {
        let hub = self.hub()?;
        let state = hub.state();
        Some(json!({
            "connections": state.connections.keys().collect::<Vec<_>>(),
            "opened": state.opened,
            "deliveries": state.log,
        }))
    }

    /// Sends `disconnect` with `reason` on every open connection, and closes each `close_after`
    /// later unless the app closed it first.
    pub(super) fn warn_connections(&self, reason: &str, close_after: Duration) -> usize {
        let Some(hub) = self.hub() else { return 0 };
        let frame =
            json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "sandbox"}});
        let targets: Vec<mpsc::UnboundedSender<Out>> =
            hub.state().connections.values().cloned().collect();
        for connection in &targets {
            let _ = connection.send(Out::Frame(frame.to_string()));
            let connection = connection.clone();
            tokio::spawn(async move {
                tokio::time::sleep(close_after).await;
                let _ = connection.send(Out::Close);
            });
        }
        targets.len()
    }

    /// Drops every connection without a close frame, or (`stall`) makes each go quiet.
    fn break_connections(&self, stall: bool) -> usize {
        let Some(hub) = self.hub() else { return 0 };
        let state = hub.state();
        for connection in state.connections.values() {
            let _ = connection.send(if stall { Out::Stall } else { Out::Drop });
        }
        state.connections.len()
    }
}

#[derive(Deserialize)]
pub(super) struct Ticket {
    #[serde(default)]
    ticket: String,
}

/// `GET /sandbox/socket?ticket=…`: the WebSocket handshake (RFC 6455), for a valid ticket.
pub(super) async fn upgrade(
    State(sandbox): State<Sandbox>,
    Query(query): Query<Ticket>,
    mut request: Request,
) -> Response {
    let Some(hub) = sandbox.hub() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let headers = request.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
    };
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let (true, true, true, Some(key)) = (
        has(header::UPGRADE, "websocket"),
        has(header::CONNECTION, "upgrade"),
        has(header::SEC_WEBSOCKET_VERSION, "13"),
        key,
    ) else {
        return (StatusCode::BAD_REQUEST, "a WebSocket handshake expected").into_response();
    };
    let now = sandbox.0.clock.now();
    let redeemed = hub
        .state()
        .tickets
        .remove(&query.ticket)
        .is_some_and(|issued| now - issued <= TICKET_LIFETIME);
    if !redeemed {
        return (StatusCode::UNAUTHORIZED, "invalid or used ticket").into_response();
    }
    let upgrading = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrading.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                sandbox.serve_socket(socket).await;
            }
            Err(error) => tracing::warn!(%error, "sandbox: WebSocket upgrade failed"),
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .expect("a valid response")
}

/// `GET /sandbox/control/socket`.
pub(super) async fn status(State(sandbox): State<Sandbox>) -> Response {
    match sandbox.socket_status() {
        Some(status) => Json(status).into_response(),
        None => super::control::refuse(StatusCode::NOT_FOUND, "socket mode is off"),
    }
}

#[derive(Deserialize)]
pub(super) struct Disconnect {
    #[serde(default = "default_reason")]
    reason: String,
    /// When the sandbox closes the connections itself; default 10 s.
    close_after_ms: Option<u64>,
}

fn default_reason() -> String {
    "refresh_requested".into()
}

/// `POST /sandbox/control/socket/disconnect {reason?, close_after_ms?}`.
pub(super) async fn disconnect(
    State(sandbox): State<Sandbox>,
    Json(disconnect): Json<Disconnect>,
) -> Json<Value> {
    let close_after = disconnect
        .close_after_ms
        .map_or(CLOSE_AFTER_WARNING, Duration::from_millis);
    let warned = sandbox.warn_connections(&disconnect.reason, close_after);
    Json(json!({"warned": warned}))
}

/// `POST /sandbox/control/socket/drop`.
pub(super) async fn drop_all(State(sandbox): State<Sandbox>) -> Json<Value> {
    Json(json!({"dropped": sandbox.break_connections(false)}))
}

/// `POST /sandbox/control/socket/stall`.
pub(super) async fn stall_all(State(sandbox): State<Sandbox>) -> Json<Value> {
    Json(json!({"stalled": sandbox.break_connections(true)}))
}
