//! The sandbox page: a Slack-like view of the workspace. The page's script asks for rendered
//! conversations and modals (HTML made by [`super::render`]) and acts through the control API;
//! a server-sent event stream tells it when something changed, so it redraws without reloading.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;

use super::Sandbox;
use super::mrkdwn::escape_html;
use super::render;

const PAGE: &str = include_str!("assets/sandbox.html");
const SCRIPT: &str = include_str!("assets/sandbox.js");
const STYLE: &str = include_str!("assets/sandbox.css");

/// The page allows only its own script and style, so even a rendering bug cannot run
/// injected script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/sandbox", get(page))
        .route("/sandbox/", get(page))
        .route("/sandbox/assets/sandbox.js", get(script))
        .route("/sandbox/assets/sandbox.css", get(style))
        .route("/sandbox/ui/conversation", get(conversation))
        .route("/sandbox/ui/view", get(view))
        .route("/sandbox/events", get(events))
}

async fn page() -> Response {
    ([(header::CONTENT_SECURITY_POLICY, CSP)], Html(PAGE)).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

#[derive(Deserialize)]
struct ConversationQuery {
    channel: String,
    viewer: String,
    /// Show one thread (its parent and replies) instead of the channel.
    thread: Option<String>,
}

async fn conversation(
    State(sandbox): State<Sandbox>,
    Query(q): Query<ConversationQuery>,
) -> Json<Value> {
    let messages = sandbox.messages(&q.channel, Some(&q.viewer));
    let workspace = sandbox.workspace();
    let mut html = String::new();
    let in_thread =
        |m: &super::Message, parent: &str| m.ts == parent || m.thread_ts.as_deref() == Some(parent);
    for message in &messages {
        let is_reply = message.thread_ts.as_ref().is_some_and(|t| *t != message.ts);
        let shown = match &q.thread {
            Some(parent) => in_thread(message, parent),
            None => !is_reply,
        };
        if shown {
            let replies = if q.thread.is_none() {
                messages
                    .iter()
                    .filter(|m| m.thread_ts.as_deref() == Some(&message.ts) && m.ts != message.ts)
                    .count()
            } else {
                0
            };
            html.push_str(&render::message(message, replies, workspace));
        }
    }
    Json(json!({"html": html}))
}

#[derive(Deserialize)]
struct ViewQuery {
    user: String,
}

/// The modal `user` has open, rendered.
async fn view(State(sandbox): State<Sandbox>, Query(q): Query<ViewQuery>) -> Json<Value> {
    let Some(view) = sandbox.open_view(&q.user) else {
        return Json(json!({"view": null}));
    };
    let body = &view.body;
    let label = |key: &str| {
        body.get(key)
            .and_then(|t| t.get("text"))
            .and_then(Value::as_str)
            .map(escape_html)
    };
    Json(json!({"view": {
        "id": view.id,
        "title": label("title").unwrap_or_default(),
        "submit": label("submit"),
        "close": label("close").unwrap_or_else(|| "Cancel".into()),
        "html": render::blocks(body.get("blocks").unwrap_or(&Value::Null), sandbox.workspace()),
    }}))
}

/// One event per change (its data is a version number); the page refetches what it shows.
async fn events(
    State(sandbox): State<Sandbox>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut closing = sandbox.0.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let stream = BroadcastStream::new(sandbox.0.changes.subscribe())
        .map(|version| {
            // A lagging page only missed intermediate versions; any event makes it refetch.
            let data = version.map_or_else(|_| "lagged".to_owned(), |v| v.to_string());
            Ok(Event::default().event("changed").data(data))
        })
        .take_until(closed);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
