//! What Slack attaches to an interaction — a single-use trigger id and a response URL — and the
//! response URL itself, on which the app answers a click or a command.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Sandbox;
use super::api::{Reply, envelope, text_arg};
use super::state::{Message, RESPONSE_URL_LIFETIME, RESPONSE_URL_USES};
use super::workspace::BOT_USER;

/// A `response_url` from an interaction or a command: posts ephemerally to the person who
/// acted, in channel, or replaces the original message; five uses within thirty minutes.
pub(super) async fn respond(
    State(sandbox): State<Sandbox>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(args)) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    let now = sandbox.0.clock.now();
    let answer = {
        let mut state = sandbox.state();
        let Some(url) = state.response_urls.get_mut(&token) else {
            return (StatusCode::NOT_FOUND, "no_such_response_url").into_response();
        };
        if url.uses >= RESPONSE_URL_USES || now - url.issued_at > RESPONSE_URL_LIFETIME {
            return (StatusCode::NOT_FOUND, "expired_url").into_response();
        }
        url.uses += 1;
        let url = url.clone();
        drop(state);
        let content = match sandbox.content(&args) {
            Ok(content) => content,
            Err(reply) => return envelope(reply).into_response(),
        };
        let mut state = sandbox.state();
        let replace = args.get("replace_original").and_then(Value::as_bool) == Some(true);
        let delete = args.get("delete_original").and_then(Value::as_bool) == Some(true);
        match (&url.message_ts, replace, delete) {
            (Some(ts), _, true) => state
                .messages
                .retain(|m| !(m.channel == url.channel && &m.ts == ts)),
            (Some(ts), true, _) => {
                if let Some(message) = state.message_mut(&url.channel, ts) {
                    (message.text, message.blocks) = content;
                }
            }
            _ => {
                let in_channel =
                    args.get("response_type").and_then(Value::as_str) == Some("in_channel");
                let ts = state.next_ts(now);
                state.messages.push(Message {
                    channel: url.channel.clone(),
                    ts,
                    thread_ts: text_arg(&args, "thread_ts").map(str::to_owned),
                    user: BOT_USER.into(),
                    text: content.0,
                    blocks: content.1,
                    ephemeral_for: (!in_channel).then(|| url.user.clone()),
                    files: Vec::new(),
                    edited: None,
                });
            }
        }
        envelope(Reply::Ok(json!({})))
    };
    sandbox.changed();
    answer.into_response()
}

/// Issues what Slack attaches to an interaction: a trigger id and a response URL.
pub(super) fn issue_trigger(
    sandbox: &Sandbox,
    user: &str,
    channel: Option<&str>,
    message_ts: Option<&str>,
) -> (String, String) {
    let now = sandbox.0.clock.now();
    let mut state = sandbox.state();
    let trigger = format!(
        "{}.{}",
        state.next_id("T"),
        hex::encode(rand::random::<[u8; 8]>())
    );
    let origin = channel
        .zip(message_ts)
        .map(|(c, t)| (c.to_owned(), t.to_owned()));
    state.triggers.insert(
        trigger.clone(),
        super::state::Trigger {
            user: user.to_owned(),
            issued_at: now,
            used: false,
            origin,
        },
    );
    let token = hex::encode(rand::random::<[u8; 16]>());
    if let Some(channel) = channel {
        state.response_urls.insert(
            token.clone(),
            super::state::ResponseUrl {
                channel: channel.to_owned(),
                user: user.to_owned(),
                message_ts: message_ts.map(str::to_owned),
                issued_at: now,
                uses: 0,
            },
        );
    }
    let url = sandbox.url(&format!("sandbox/response/{token}"));
    (trigger, url.to_string())
}
