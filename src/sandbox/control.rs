//! `/sandbox/control/*`: act as a person in the sandbox workspace without a browser. Each action
//! reaches countersign exactly as Slack would deliver it: a signed, form-encoded request on
//! `/slack/interactions` or `/slack/commands`, or in Socket Mode the same payload in an envelope
//! on countersign's WebSocket. The page and the tests use the same endpoints.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::interactivity::issue_trigger;
use super::state::Message;
use super::workspace::{APP_ID, BOT_ID, BOT_USER};
use super::{Sandbox, json_argument};
use crate::slack::signature;

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/sandbox/control/workspace", get(workspace))
        .route("/sandbox/control/messages", get(messages))
        .route("/sandbox/control/calls", get(calls))
        .route("/sandbox/control/refused", get(refused))
        .route("/sandbox/control/view", get(open_view))
        .route("/sandbox/control/click", post(click))
        .route("/sandbox/control/submit", post(submit))
        .route("/sandbox/control/close", post(close))
        .route("/sandbox/control/command", post(command))
        .route("/sandbox/control/socket", get(super::socket::status))
        .route(
            "/sandbox/control/socket/disconnect",
            post(super::socket::disconnect),
        )
        .route(
            "/sandbox/control/socket/drop",
            post(super::socket::drop_all),
        )
        .route(
            "/sandbox/control/socket/stall",
            post(super::socket::stall_all),
        )
}

pub(super) fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn workspace(State(sandbox): State<Sandbox>) -> Json<Value> {
    let w = sandbox.workspace();
    Json(json!({
        "team": {"id": w.team_id, "name": w.team_name},
        "users": w.users.values().collect::<Vec<_>>(),
        "channels": w.channels.values().collect::<Vec<_>>(),
        "usergroups": w.usergroups.values().collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
struct MessagesQuery {
    channel: String,
    /// Show what this user sees (their own ephemeral messages only).
    viewer: Option<String>,
}

async fn messages(State(sandbox): State<Sandbox>, Query(q): Query<MessagesQuery>) -> Response {
    if sandbox.resolve_channel(&q.channel).is_none() {
        return refuse(StatusCode::NOT_FOUND, "channel_not_found");
    }
    Json(sandbox.messages(&q.channel, q.viewer.as_deref())).into_response()
}

async fn calls(State(sandbox): State<Sandbox>) -> Json<Vec<super::Call>> {
    Json(sandbox.calls())
}

/// The calls refused for their rate (429): per method, and each with its bucket, Retry-After
/// and time, oldest first.
async fn refused(State(sandbox): State<Sandbox>) -> Json<Value> {
    let refused = sandbox.refused();
    let mut by_method = Map::new();
    for refusal in &refused {
        let count = by_method.entry(refusal.method.clone()).or_insert(json!(0));
        *count = json!(count.as_u64().unwrap_or(0) + 1);
    }
    Json(json!({"by_method": by_method, "refusals": refused}))
}

#[derive(Deserialize)]
struct ViewQuery {
    user: String,
}

async fn open_view(State(sandbox): State<Sandbox>, Query(q): Query<ViewQuery>) -> Json<Value> {
    Json(json!({"view": sandbox.open_view(&q.user).map(|v| v.body)}))
}

#[derive(Deserialize)]
struct Click {
    user: String,
    channel: String,
    ts: String,
    action_id: String,
    block_id: Option<String>,
}

/// A person clicks a button: the sandbox sends the `block_actions` payload Slack would send.
async fn click(State(sandbox): State<Sandbox>, Json(click): Json<Click>) -> Response {
    let Some(user) = sandbox.workspace().users.get(&click.user).cloned() else {
        return refuse(StatusCode::NOT_FOUND, "user_not_found");
    };
    let Some(channel) = sandbox.resolve_channel(&click.channel) else {
        return refuse(StatusCode::NOT_FOUND, "channel_not_found");
    };
    let Some(message) = sandbox.state().message(&channel, &click.ts).cloned() else {
        return refuse(StatusCode::NOT_FOUND, "message_not_found");
    };
    if message
        .ephemeral_for
        .as_ref()
        .is_some_and(|u| *u != user.id)
    {
        return refuse(StatusCode::NOT_FOUND, "message_not_found");
    }
    let Some((block_id, element)) =
        find_element(&message, &click.action_id, click.block_id.as_deref())
    else {
        return refuse(StatusCode::NOT_FOUND, "no such button on that message");
    };
    let (trigger_id, response_url) =
        issue_trigger(&sandbox, &user.id, Some(&channel), Some(&message.ts));
    let action_ts = sandbox.state().next_ts(sandbox.0.clock.now());
    let channel_name = sandbox
        .workspace()
        .channels
        .get(&channel)
        .map(|c| c.name.clone());
    let payload = json!({
        "type": "block_actions",
        "team": {"id": sandbox.workspace().team_id, "domain": "sandbox"},
        "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": sandbox.workspace().team_id},
        "api_app_id": APP_ID,
        "token": "sandbox-verification-token",
        "container": {"type": "message", "message_ts": message.ts, "channel_id": channel,
                      "is_ephemeral": message.ephemeral_for.is_some()},
        "trigger_id": trigger_id,
        "channel": {"id": channel, "name": channel_name},
        "message": message_payload(&message),
        "response_url": response_url,
        "actions": [{
            "type": element.get("type").cloned().unwrap_or(json!("button")),
            "action_id": click.action_id,
            "block_id": block_id,
            "text": element.get("text").cloned().unwrap_or(Value::Null),
            "value": element.get("value").cloned().unwrap_or(Value::Null),
            "style": element.get("style").cloned().unwrap_or(Value::Null),
            "action_ts": action_ts,
        }],
    });
    let (status, body) = sandbox.deliver_interaction(&payload).await;
    let view = {
        let state = sandbox.state();
        let opened = state.triggers.get(&trigger_id).is_some_and(|t| t.used);
        opened
            .then(|| state.open_view(&user.id).map(|v| v.body.clone()))
            .flatten()
    };
    sandbox.changed();
    Json(json!({"status": status, "body": body, "view": view})).into_response()
}

/// The element a click targets and the block it sits in: action buttons and section accessories.
fn find_element(
    message: &Message,
    action_id: &str,
    block_id: Option<&str>,
) -> Option<(Value, Value)> {
    for block in message.blocks.as_array()? {
        let this_block = block.get("block_id").cloned().unwrap_or(Value::Null);
        if block_id.is_some_and(|wanted| this_block.as_str() != Some(wanted)) {
            continue;
        }
        let candidates: Vec<&Value> = match block.get("type").and_then(Value::as_str) {
            Some("actions") => block
                .get("elements")
                .and_then(Value::as_array)
                .map(|e| e.iter().collect())
                .unwrap_or_default(),
            Some("section") => block.get("accessory").into_iter().collect(),
            _ => Vec::new(),
        };
        if let Some(element) = candidates
            .into_iter()
            .find(|e| e.get("action_id").and_then(Value::as_str) == Some(action_id))
        {
            return Some((this_block, element.clone()));
        }
    }
    None
}

fn message_payload(message: &Message) -> Value {
    json!({"type": "message", "user": message.user, "bot_id": BOT_ID, "ts": message.ts,
           "text": message.text, "blocks": message.blocks, "thread_ts": message.thread_ts})
}

#[derive(Deserialize)]
struct Submit {
    user: String,
    view_id: String,
    /// `{block_id: {action_id: value}}`; a value is a string (text input, select value) or a
    /// list of strings (checkboxes).
    #[serde(default)]
    values: Map<String, Value>,
}

/// A person submits the modal they have open: the sandbox sends `view_submission` and applies
/// the app's answer (close, errors, update or push) as Slack would.
async fn submit(State(sandbox): State<Sandbox>, Json(submit): Json<Submit>) -> Response {
    let Some(view) = sandbox.state().views.get(&submit.view_id).cloned() else {
        return refuse(StatusCode::NOT_FOUND, "view_not_found");
    };
    if view.user != submit.user {
        return refuse(StatusCode::NOT_FOUND, "view_not_found");
    }
    let Some(user) = sandbox.workspace().users.get(&submit.user).cloned() else {
        return refuse(StatusCode::NOT_FOUND, "user_not_found");
    };
    let mut body = view.body.clone();
    body["state"] = json!({"values": state_values(&view.body, &submit.values)});
    let (trigger_id, _) = issue_trigger(&sandbox, &user.id, None, None);
    let payload = json!({
        "type": "view_submission",
        "team": {"id": sandbox.workspace().team_id, "domain": "sandbox"},
        "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": sandbox.workspace().team_id},
        "api_app_id": APP_ID,
        "token": "sandbox-verification-token",
        "trigger_id": trigger_id,
        "view": body,
    });
    let (status, answer) = sandbox.deliver_interaction(&payload).await;
    let mut errors = Value::Null;
    if (200..300).contains(&status) {
        let action = answer.get("response_action").and_then(Value::as_str);
        let mut state = sandbox.state();
        match action {
            Some("errors") => errors = answer.get("errors").cloned().unwrap_or(Value::Null),
            Some("update") | Some("push") => {
                if let Some(next) = answer.get("view").cloned() {
                    let now = sandbox.0.clock.now();
                    if action == Some("update") {
                        state.pop_view(&user.id);
                    }
                    let id = state.next_id("V");
                    let hash = state.next_ts(now);
                    let mut next = next;
                    next["id"] = json!(id);
                    next["hash"] = json!(hash);
                    state.views.insert(
                        id.clone(),
                        super::View {
                            id: id.clone(),
                            user: user.id.clone(),
                            hash,
                            body: next,
                            opened_from: view.opened_from.clone(),
                        },
                    );
                    state
                        .view_stacks
                        .entry(user.id.clone())
                        .or_default()
                        .push(id);
                }
            }
            Some("clear") => state.close_views(&user.id),
            _ => state.pop_view(&user.id),
        }
    }
    sandbox.changed();
    Json(json!({"status": status, "body": answer, "errors": errors})).into_response()
}

/// The `state.values` Slack builds from what the person entered, keyed like the view's inputs.
fn state_values(view: &Value, entered: &Map<String, Value>) -> Value {
    let mut values = Map::new();
    for block in view
        .get("blocks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(block_id), Some(element)) = (
            block.get("block_id").and_then(Value::as_str),
            block.get("element"),
        ) else {
            continue;
        };
        let Some(action_id) = element.get("action_id").and_then(Value::as_str) else {
            continue;
        };
        let kind = element
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("plain_text_input");
        let given = entered.get(block_id).and_then(|b| b.get(action_id));
        let option = |value: &str| {
            element
                .get("options")
                .and_then(Value::as_array)
                .and_then(|options| {
                    options
                        .iter()
                        .find(|o| o.get("value").and_then(Value::as_str) == Some(value))
                })
                .cloned()
        };
        let state = match kind {
            "static_select" | "radio_buttons" => {
                json!({"type": kind, "selected_option": given.and_then(Value::as_str).and_then(option)})
            }
            "checkboxes" => {
                let selected: Vec<Value> = given
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().and_then(option))
                    .collect();
                json!({"type": kind, "selected_options": selected})
            }
            _ => json!({"type": kind, "value": given.and_then(Value::as_str)}),
        };
        values.insert(block_id.to_owned(), json!({ action_id: state }));
    }
    Value::Object(values)
}

#[derive(Deserialize)]
struct Close {
    user: String,
    view_id: String,
}

/// The modal's close button (no payload is sent: countersign's modals do not ask for `view_closed`).
async fn close(State(sandbox): State<Sandbox>, Json(close): Json<Close>) -> Response {
    let closed = {
        let mut state = sandbox.state();
        let on_top = state
            .open_view(&close.user)
            .is_some_and(|v| v.id == close.view_id);
        if on_top {
            state.pop_view(&close.user);
        }
        on_top
    };
    sandbox.changed();
    if closed {
        Json(json!({"ok": true})).into_response()
    } else {
        refuse(StatusCode::NOT_FOUND, "view_not_found")
    }
}

#[derive(Deserialize)]
struct Command {
    user: String,
    channel: String,
    #[serde(default)]
    text: String,
    #[serde(default = "default_command")]
    command: String,
}

fn default_command() -> String {
    "/countersign".into()
}

/// A person runs a slash command: the sandbox sends the signed form Slack sends and shows the
/// app's immediate answer (ephemeral unless `response_type: in_channel`).
async fn command(State(sandbox): State<Sandbox>, Json(command): Json<Command>) -> Response {
    let Some(user) = sandbox.workspace().users.get(&command.user).cloned() else {
        return refuse(StatusCode::NOT_FOUND, "user_not_found");
    };
    let Some(channel) = sandbox.resolve_channel(&command.channel) else {
        return refuse(StatusCode::NOT_FOUND, "channel_not_found");
    };
    let (trigger_id, response_url) = issue_trigger(&sandbox, &user.id, Some(&channel), None);
    let channel_name = sandbox
        .workspace()
        .channels
        .get(&channel)
        .map_or(String::new(), |c| c.name.clone());
    let fields = [
        ("token", "sandbox-verification-token"),
        ("team_id", &sandbox.workspace().team_id),
        ("team_domain", "sandbox"),
        ("channel_id", &channel),
        ("channel_name", &channel_name),
        ("user_id", &user.id),
        ("user_name", &user.name),
        ("command", &command.command),
        ("text", &command.text),
        ("api_app_id", APP_ID),
        ("response_url", &response_url),
        ("trigger_id", &trigger_id),
    ];
    let (status, body) = sandbox.deliver_command(&fields).await;
    // The immediate answer to a command is shown like a response_url post.
    let reply = match &body {
        Value::Object(_) => Some(body.clone()),
        Value::String(text) if !text.is_empty() => Some(json!({"text": text})),
        _ => None,
    };
    if (200..300).contains(&status)
        && let Some(reply) = reply
    {
        let text = reply
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let blocks = json_argument(reply.get("blocks")).unwrap_or(Value::Null);
        let in_channel = reply.get("response_type").and_then(Value::as_str) == Some("in_channel");
        let mut state = sandbox.state();
        let ts = state.next_ts(sandbox.0.clock.now());
        state.messages.push(Message {
            channel: channel.clone(),
            ts,
            thread_ts: None,
            user: BOT_USER.into(),
            text,
            blocks,
            ephemeral_for: (!in_channel).then(|| user.id.clone()),
            files: Vec::new(),
            edited: None,
        });
    }
    sandbox.changed();
    Json(json!({"status": status, "body": body})).into_response()
}

impl Sandbox {
    /// Sends an interaction payload to countersign: over its socket (an `interactive` envelope),
    /// or form-encoded (`payload=<json>`) on `/slack/interactions`.
    async fn deliver_interaction(&self, payload: &Value) -> (u16, Value) {
        if self.0.socket.is_some() {
            // A modal's submission may be answered with a response_action; a click may not.
            let answerable = payload.get("type").and_then(Value::as_str) == Some("view_submission");
            return self
                .deliver_envelope("interactive", payload.clone(), answerable)
                .await;
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        self.deliver("slack/interactions", form.into_bytes()).await
    }

    /// Sends a slash command's fields to countersign: over its socket (a `slash_commands`
    /// envelope, the fields as JSON strings), or as the form on `/slack/commands`.
    async fn deliver_command(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        if self.0.socket.is_some() {
            let payload: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .chain([("is_enterprise_install".to_owned(), json!("false"))])
                .collect();
            return self
                .deliver_envelope("slash_commands", Value::Object(payload), true)
                .await;
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.deliver("slack/commands", form.into_bytes()).await
    }

    /// POSTs a signed form body to countersign; answers its status and body (JSON if it is JSON).
    async fn deliver(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let timestamp = self.0.clock.now().timestamp();
        let signature = signature::sign(&self.0.signing_secret, timestamp, &body);
        let sent = self
            .0
            .http
            .post(self.request_url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(signature::TIMESTAMP_HEADER, timestamp.to_string())
            .header(signature::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                (status, body)
            }
            Err(error) => {
                tracing::warn!(%error, path, "sandbox: cannot deliver to countersign");
                (502, json!(error.to_string()))
            }
        }
    }
}
