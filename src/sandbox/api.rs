//! The Slack Web API subset, at `/sandbox/api/{method}`. Arguments come as Slack accepts them
//! (query string, form or JSON body); answers are Slack's envelope with `Content-Type:
//! application/json` (the Slack client decodes anything else as `{}`), and errors use Slack's
//! names so countersign handles them as it would in production.
//!
//! Every method is rate limited at its documented tier ([`crate::slack::tiers`]), on the
//! sandbox's clock: past it, `429` with `Retry-After` and `{"ok": false, "error":
//! "ratelimited"}`, as Slack answers. Only calls with a valid token count (Slack counts per app).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::blockkit::{self, ViewProblem};
use super::state::{Message, TRIGGER_LIFETIME, UploadedFile, View};
use super::workspace::{BOT_ID, BOT_USER};
use super::{Sandbox, json_argument};
use crate::slack::tiers::{self, Tier};

/// Slack refuses message text longer than this with `msg_too_long`.
const TEXT_LIMIT: usize = 40_000;
/// Modals stacked with views.push.
const VIEW_STACK_LIMIT: usize = 3;

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/sandbox/api/{method}", get(call).post(call))
        .route("/sandbox/upload/{file}", post(super::files::upload))
        .route("/sandbox/files/{file}", get(super::files::download))
        .route(
            "/sandbox/response/{token}",
            post(super::interactivity::respond),
        )
        .route("/sandbox/socket", get(super::socket::upgrade))
}

/// What a method answers.
pub(super) enum Reply {
    Ok(Value),
    Error(&'static str, Option<Vec<String>>),
    /// `missing_scope`, naming the scope needed (the call adds what was provided).
    MissingScope(&'static str),
    RateLimited(u64),
}

fn error(name: &'static str) -> Reply {
    Reply::Error(name, None)
}

type Args = Map<String, Value>;

/// A call's arguments, as Slack reads them: the query string, then a form or JSON body (JSON
/// overriding); and its token, from `Authorization: Bearer` or the `token` argument.
fn arguments(
    query: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Args, Option<String>), Reply> {
    let mut args = Args::new();
    if let Some(query) = query {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            args.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") && !body.is_empty() {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => args.extend(fields),
            _ => return Err(Reply::Error("invalid_json", None)),
        }
    } else if !body.is_empty() {
        for (k, v) in url::form_urlencoded::parse(body) {
            args.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| {
            args.remove("token")
                .and_then(|t| t.as_str().map(str::to_owned))
        });
    Ok((args, token))
}

async fn call(
    State(sandbox): State<Sandbox>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (args, token) = match arguments(query, &headers, &body) {
        Ok(read) => read,
        Err(refused) => return envelope(refused).into_response(),
    };

    // As Slack: the bot token for everything but apps.connections.open, which takes only the
    // app-level token (and that token nothing else).
    let sockets = method == "apps.connections.open";
    let authed = token.as_deref().is_some_and(|token| {
        bool::from(
            token
                .as_bytes()
                .ct_eq(sandbox.0.bot_token.expose().as_bytes()),
        )
    });
    let granted = &sandbox.0.workspace.bot_scopes;
    let reply = match token {
        None => error("not_authed"),
        Some(_) if authed && sockets => error("not_allowed_token_type"),
        Some(_) if authed => match super::scopes::required(&method, &args) {
            Some(needed) if !granted.iter().any(|s| s == needed) => Reply::MissingScope(needed),
            _ => match sandbox.within_tier(&method) {
                Ok(()) => sandbox.dispatch(&method, &args),
                Err(refused) => refused,
            },
        },
        Some(token)
            if sandbox
                .0
                .socket
                .as_ref()
                .is_some_and(|hub| hub.accepts(&token)) =>
        {
            if sockets {
                match sandbox.within_tier(&method) {
                    Ok(()) => sandbox.open_connection(),
                    Err(refused) => refused,
                }
            } else {
                error("not_allowed_token_type")
            }
        }
        Some(_) => error("invalid_auth"),
    };
    let mut answer = envelope(reply);
    if let Some(body) = answer.body.as_object_mut()
        && body.get("error").is_some_and(|e| e == "missing_scope")
    {
        body.insert("provided".into(), json!(granted.join(",")));
    }
    sandbox.record(&method, args, &answer);
    let mut response = answer.into_response();
    // Slack tells an authenticated caller what its token was granted, on every answer.
    if authed && let Ok(value) = granted.join(",").parse() {
        response.headers_mut().insert(super::scopes::HEADER, value);
    }
    response
}

/// An answer ready to send, kept as parts so the call log can record it.
pub(super) struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

pub(super) fn envelope(reply: Reply) -> Answer {
    match reply {
        Reply::Ok(mut body) => {
            body["ok"] = Value::Bool(true);
            Answer {
                status: StatusCode::OK,
                retry_after: None,
                body,
            }
        }
        Reply::Error(name, errors) => {
            let mut body = json!({"ok": false, "error": name});
            if let Some(errors) = errors {
                body["errors"] = json!(errors);
                body["response_metadata"] = json!({"messages": errors});
            }
            Answer {
                status: StatusCode::OK,
                retry_after: None,
                body,
            }
        }
        Reply::MissingScope(needed) => Answer {
            status: StatusCode::OK,
            retry_after: None,
            body: json!({"ok": false, "error": "missing_scope", "needed": needed}),
        },
        Reply::RateLimited(seconds) => Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(seconds),
            body: json!({"ok": false, "error": "ratelimited"}),
        },
    }
}

pub(super) fn text_arg<'a>(args: &'a Args, key: &str) -> Option<&'a str> {
    args.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Sandbox {
    fn record(&self, method: &str, args: Args, answer: &Answer) {
        self.state().calls.push(super::Call {
            method: method.to_owned(),
            args: Value::Object(args),
            status: answer.status.as_u16(),
            response: answer.body.clone(),
        });
        self.changed();
    }

    /// Spends one call from the method's tier bucket. chat.postMessage is counted per channel
    /// instead, once the post is known to be valid ([`Sandbox::post_message`]).
    fn within_tier(&self, method: &str) -> Result<(), Reply> {
        match tiers::of(method) {
            None | Some(Tier::PerChannel) => Ok(()),
            Some(tier) => self.spend(method, &format!("method:{method}"), tier),
        }
    }

    fn spend(&self, method: &str, bucket: &str, tier: Tier) -> Result<(), Reply> {
        let now = self.0.clock.now();
        let rate = tier.scaled(tier.slack(), self.0.tier_scale);
        self.state()
            .take_token(method, bucket, rate, now)
            .map_err(Reply::RateLimited)
    }

    fn dispatch(&self, method: &str, args: &Args) -> Reply {
        match method {
            "auth.test" => Reply::Ok(json!({
                "url": self.page_url().as_str(), "team": self.0.workspace.team_name,
                "team_id": self.0.workspace.team_id, "user": "countersign",
                "user_id": BOT_USER, "bot_id": BOT_ID,
            })),
            "chat.postMessage" => self.post_message(args),
            "chat.update" => self.update_message(args),
            "chat.postEphemeral" => self.post_ephemeral(args),
            "chat.getPermalink" => self.permalink(args),
            "views.open" => self.views_open(args, false),
            "views.push" => self.views_open(args, true),
            "views.update" => self.update_view(args),
            "conversations.open" => self.conversations_open(args),
            "conversations.info" => self.conversation_info(args),
            "usergroups.users.list" => match text_arg(args, "usergroup")
                .and_then(|id| self.0.workspace.usergroups.get(id))
            {
                Some(group) => Reply::Ok(json!({"users": group.users})),
                None => error("no_such_subteam"),
            },
            "users.info" => {
                match text_arg(args, "user").and_then(|id| self.0.workspace.users.get(id)) {
                    Some(user) => Reply::Ok(json!({"user": user_json(user)})),
                    None => error("user_not_found"),
                }
            }
            "users.lookupByEmail" => {
                match text_arg(args, "email").and_then(|e| self.0.workspace.user_by_email(e)) {
                    Some(user) => Reply::Ok(json!({"user": user_json(user)})),
                    None => error("users_not_found"),
                }
            }
            "files.getUploadURLExternal" => self.upload_url(args),
            "files.completeUploadExternal" => self.complete_upload(args),
            _ => error("unknown_method"),
        }
    }

    /// The message content common to postMessage, postEphemeral and update: text and blocks,
    /// checked as Slack checks them.
    pub(super) fn content(&self, args: &Args) -> Result<(String, Value), Reply> {
        let text = text_arg(args, "text").unwrap_or("").to_owned();
        let blocks = match args.get("blocks") {
            None | Some(Value::Null) => Value::Null,
            Some(value) => json_argument(Some(value)).ok_or(error("invalid_blocks_format"))?,
        };
        if text.is_empty() && blocks.as_array().is_none_or(Vec::is_empty) {
            return Err(error("no_text"));
        }
        if text.chars().count() > TEXT_LIMIT {
            return Err(error("msg_too_long"));
        }
        if !blocks.is_null()
            && let Err(violations) = blockkit::message_blocks(&blocks)
        {
            return Err(Reply::Error("invalid_blocks", Some(violations)));
        }
        Ok((text, blocks))
    }

    fn post_message(&self, args: &Args) -> Reply {
        let Some(channel) = text_arg(args, "channel").and_then(|c| self.0.workspace.channel(c))
        else {
            return error("channel_not_found");
        };
        if channel.archived {
            return error("is_archived");
        }
        if !channel.bot_member {
            return error("not_in_channel");
        }
        let (text, blocks) = match self.content(args) {
            Ok(content) => content,
            Err(reply) => return reply,
        };
        let now = self.0.clock.now();
        let mut state = self.state();
        let thread_ts = text_arg(args, "thread_ts").map(str::to_owned);
        if let Some(thread) = &thread_ts
            && state.message(&channel.id, thread).is_none()
        {
            return error("thread_not_found");
        }
        let bucket = format!("channel:{}", channel.id);
        let rate = Tier::PerChannel.slack();
        if let Err(retry_after) = state.take_token("chat.postMessage", &bucket, rate, now) {
            return Reply::RateLimited(retry_after);
        }
        let ts = state.next_ts(now);
        let message = Message {
            channel: channel.id.clone(),
            ts: ts.clone(),
            thread_ts,
            user: BOT_USER.into(),
            text,
            blocks,
            ephemeral_for: None,
            files: Vec::new(),
            edited: None,
        };
        let body = json!({"channel": channel.id, "ts": ts, "message": message_json(&message)});
        state.messages.push(message);
        Reply::Ok(body)
    }

    fn update_message(&self, args: &Args) -> Reply {
        let Some(channel) = text_arg(args, "channel").and_then(|c| self.0.workspace.channel(c))
        else {
            return error("channel_not_found");
        };
        let Some(ts) = text_arg(args, "ts") else {
            return error("message_not_found");
        };
        let (text, blocks) = match self.content(args) {
            Ok(content) => content,
            Err(reply) => return reply,
        };
        let now = self.0.clock.now();
        let mut state = self.state();
        let edited = state.next_ts(now);
        let Some(message) = state.message_mut(&channel.id, ts) else {
            return error("message_not_found");
        };
        if message.user != BOT_USER || message.ephemeral_for.is_some() {
            return error("cant_update_message");
        }
        message.text = text.clone();
        message.blocks = blocks;
        message.edited = Some(edited);
        Reply::Ok(
            json!({"channel": channel.id, "ts": ts, "text": text, "message": message_json(message)}),
        )
    }

    fn post_ephemeral(&self, args: &Args) -> Reply {
        let Some(channel) = text_arg(args, "channel").and_then(|c| self.0.workspace.channel(c))
        else {
            return error("channel_not_found");
        };
        let Some(user) = text_arg(args, "user").filter(|u| self.0.workspace.users.contains_key(*u))
        else {
            return error("user_not_found");
        };
        let (text, blocks) = match self.content(args) {
            Ok(content) => content,
            Err(reply) => return reply,
        };
        let mut state = self.state();
        let ts = state.next_ts(self.0.clock.now());
        state.messages.push(Message {
            channel: channel.id.clone(),
            ts: ts.clone(),
            thread_ts: text_arg(args, "thread_ts").map(str::to_owned),
            user: BOT_USER.into(),
            text,
            blocks,
            ephemeral_for: Some(user.to_owned()),
            files: Vec::new(),
            edited: None,
        });
        Reply::Ok(json!({"message_ts": ts}))
    }

    fn permalink(&self, args: &Args) -> Reply {
        let (Some(channel), Some(ts)) = (text_arg(args, "channel"), text_arg(args, "message_ts"))
        else {
            return error("channel_not_found");
        };
        if self.state().message(channel, ts).is_none() {
            return error("message_not_found");
        }
        let mut link = self.page_url();
        link.set_fragment(Some(&format!("{channel}/{ts}")));
        Reply::Ok(json!({"channel": channel, "permalink": link.as_str()}))
    }

    fn views_open(&self, args: &Args, push: bool) -> Reply {
        let Some(trigger_id) = text_arg(args, "trigger_id") else {
            return error("invalid_trigger_id");
        };
        let Some(view) = json_argument(args.get("view")) else {
            return error("invalid_arguments");
        };
        if let Err(reply) = check_view(&view) {
            return reply;
        }
        let now = self.0.clock.now();
        let mut state = self.state();
        let Some(trigger) = state.triggers.get_mut(trigger_id) else {
            return error("invalid_trigger_id");
        };
        if trigger.used {
            return error("exchanged_trigger_id");
        }
        if now - trigger.issued_at > TRIGGER_LIFETIME {
            return error("expired_trigger_id");
        }
        trigger.used = true;
        let (user, origin) = (trigger.user.clone(), trigger.origin.clone());
        let depth = state.view_stacks.get(&user).map_or(0, Vec::len);
        if push && depth == 0 {
            return error("not_found");
        }
        if push && depth >= VIEW_STACK_LIMIT {
            return error("push_limit_reached");
        }
        if !push {
            // views.open replaces whatever the user had open.
            state.close_views(&user);
        }
        let id = state.next_id("V");
        let hash = state.next_ts(now);
        let body = view_json(view, &id, &hash, &self.0.workspace.team_id);
        state.views.insert(
            id.clone(),
            View {
                id: id.clone(),
                user: user.clone(),
                hash,
                body: body.clone(),
                opened_from: origin,
            },
        );
        state.view_stacks.entry(user).or_default().push(id);
        Reply::Ok(json!({"view": body}))
    }

    fn update_view(&self, args: &Args) -> Reply {
        let Some(view) = json_argument(args.get("view")) else {
            return error("invalid_arguments");
        };
        if let Err(reply) = check_view(&view) {
            return reply;
        }
        let now = self.0.clock.now();
        let mut state = self.state();
        let id = match (text_arg(args, "view_id"), text_arg(args, "external_id")) {
            (Some(id), _) => Some(id.to_owned()),
            (None, Some(external)) => state
                .views
                .values()
                .find(|v| v.body.get("external_id").and_then(Value::as_str) == Some(external))
                .map(|v| v.id.clone()),
            (None, None) => None,
        };
        let hash = state.next_ts(now);
        let team = self.0.workspace.team_id.clone();
        let Some(current) = id.and_then(|id| state.views.get_mut(&id)) else {
            return error("not_found");
        };
        if let Some(expected) = text_arg(args, "hash")
            && expected != current.hash
        {
            return error("hash_conflict");
        }
        current.body = view_json(view, &current.id, &hash, &team);
        current.hash = hash;
        Reply::Ok(json!({"view": current.body}))
    }

    fn conversations_open(&self, args: &Args) -> Reply {
        // A comma-separated string (form calls) or a JSON array (slack-morphism sends one).
        let users: Vec<&str> = match args.get("users") {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => text_arg(args, "users")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .collect(),
        };
        match users.as_slice() {
            [user] if !user.is_empty() => match self.0.workspace.channel(user) {
                Some(dm) => {
                    Reply::Ok(json!({"channel": {"id": dm.id, "is_im": true, "user": user}}))
                }
                None => error("user_not_found"),
            },
            [""] | [] => error("users_list_not_supplied"),
            _ => error("not_supported"),
        }
    }

    fn upload_url(&self, args: &Args) -> Reply {
        let Some(name) = text_arg(args, "filename") else {
            return error("invalid_arguments");
        };
        let length = args
            .get("length")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
        let Some(length) = length.filter(|n| *n > 0) else {
            return error("invalid_arguments");
        };
        let mut state = self.state();
        let id = state.next_id("F");
        state.files.insert(
            id.clone(),
            UploadedFile {
                name: name.to_owned(),
                title: None,
                bytes: None,
                length: length as usize,
            },
        );
        let url = self.url(&format!("sandbox/upload/{id}"));
        Reply::Ok(json!({"upload_url": url.as_str(), "file_id": id}))
    }

    fn complete_upload(&self, args: &Args) -> Reply {
        let Some(Value::Array(files)) = json_argument(args.get("files")) else {
            return error("invalid_arguments");
        };
        let channel = match text_arg(args, "channel_id") {
            Some(id) => match self.0.workspace.channel(id) {
                Some(channel) => Some(channel.id.clone()),
                None => return error("channel_not_found"),
            },
            None => None,
        };
        let now = self.0.clock.now();
        let mut state = self.state();
        let mut ids = Vec::new();
        for file in &files {
            let id = file.get("id").and_then(Value::as_str).unwrap_or_default();
            match state.files.get_mut(id) {
                Some(stored) if stored.bytes.is_some() => {
                    stored.title = file.get("title").and_then(Value::as_str).map(str::to_owned);
                    ids.push(id.to_owned());
                }
                _ => return error("file_not_found"),
            }
        }
        if let Some(channel) = channel {
            let ts = state.next_ts(now);
            state.messages.push(Message {
                channel,
                ts,
                thread_ts: text_arg(args, "thread_ts").map(str::to_owned),
                user: BOT_USER.into(),
                text: text_arg(args, "initial_comment").unwrap_or("").to_owned(),
                blocks: Value::Null,
                ephemeral_for: None,
                files: ids.clone(),
                edited: None,
            });
        }
        let files: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "title": state.files[id].title, "name": state.files[id].name}))
            .collect();
        Reply::Ok(json!({"files": files}))
    }
}

fn check_view(view: &Value) -> Result<(), Reply> {
    match blockkit::view(view) {
        Ok(()) => Ok(()),
        Err(ViewProblem::Arguments(v)) => Err(Reply::Error("invalid_arguments", Some(v))),
        Err(ViewProblem::Blocks(v)) => Err(Reply::Error("invalid_blocks", Some(v))),
    }
}

/// A view as Slack returns it: what the app sent plus id, hash, team and an empty state.
fn view_json(mut view: Value, id: &str, hash: &str, team: &str) -> Value {
    view["id"] = json!(id);
    view["hash"] = json!(hash);
    view["team_id"] = json!(team);
    view["state"] = json!({"values": {}});
    for key in ["private_metadata", "callback_id", "external_id"] {
        if view.get(key).is_none() {
            view[key] = json!("");
        }
    }
    view
}

fn user_json(user: &super::workspace::User) -> Value {
    json!({
        "id": user.id, "name": user.name, "real_name": user.real_name,
        "is_admin": user.is_admin, "is_owner": false, "is_bot": user.is_bot,
        "deleted": user.deleted,
        "tz": "Europe/London",
        "profile": {"email": user.email, "real_name": user.real_name, "display_name": user.name},
    })
}

fn message_json(message: &Message) -> Value {
    let mut body = json!({"type": "message", "user": message.user, "bot_id": BOT_ID,
                          "text": message.text, "ts": message.ts});
    if !message.blocks.is_null() {
        body["blocks"] = message.blocks.clone();
    }
    if let Some(thread) = &message.thread_ts {
        body["thread_ts"] = json!(thread);
    }
    body
}
