//! The built-in Slack sandbox: an in-process fake of the parts of Slack countersign uses, so the
//! default run, the demo and the tests exercise the production path without a Slack workspace.
//!
//! - `/sandbox/api/{method}`: the Web API subset, answered in Slack's envelope, enforcing what
//!   Slack enforces (bot token, Block Kit limits, every method's rate tier and the per-channel
//!   posting rate, single-use trigger ids). countersign's Slack client talks to it over HTTP exactly as it talks to Slack.
//! - `/sandbox/control/*`: JSON endpoints to act as a person (click, submit a modal, run a slash
//!   command) and to read what was posted; each action reaches countersign as a real signed
//!   request on `/slack/*` — or, in Socket Mode ([`Sandbox::with_socket_mode`]), as an envelope
//!   on the WebSocket countersign opened.
//! - `/sandbox`: a Slack-like page built on the control endpoints.
//! - `/sandbox/agents/{agent}/inbox` (`serve --demo`): the demo agents' callback endpoints,
//!   which verify and record what countersign tells them ([`Sandbox::with_inboxes`]).
//!
//! The routes exist only when no Slack token is configured.

mod api;
pub mod blockkit;
mod channels;
mod control;
mod files;
mod inbox;
mod interactivity;
mod mrkdwn;
mod render;
mod scopes;
mod socket;
mod state;
mod ui;
pub mod workspace;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use serde_json::Value;
use tokio::sync::broadcast;
use url::Url;

use crate::clock::Clock;
use crate::config::Secret;
pub use inbox::{Delivery, Inbox};
pub use state::{Call, Message, Refusal, View};
pub use workspace::Workspace;

/// A running sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox(Arc<Inner>);

struct Inner {
    workspace: Workspace,
    bot_token: Secret,
    signing_secret: Secret,
    /// Where countersign itself listens, and so where this sandbox is served (its API, page
    /// and response URLs): interactions and commands are delivered there too, unless
    /// `request_url` says otherwise.
    app_url: Url,
    /// Where interactions and commands go when the sandbox is served apart from countersign
    /// ([`Sandbox::with_request_url`]): the Request URL of a Slack app's settings.
    request_url: Option<Url>,
    clock: Arc<dyn Clock>,
    state: Mutex<state::State>,
    /// Bumped on every change; the page listens to redraw without reloading.
    changes: broadcast::Sender<u64>,
    version: std::sync::atomic::AtomicU64,
    /// Set at shutdown: ends the page's event streams, which would otherwise hold the
    /// graceful shutdown open forever.
    closing: tokio::sync::watch::Sender<bool>,
    http: reqwest::Client,
    /// Set: Socket Mode, as a Slack app with it turned on — interactions and commands go over
    /// the app's WebSocket, never to `app_url`.
    socket: Option<socket::Hub>,
    /// How many times Slack's documented tiers it allows ([`Sandbox::with_tier_scale`]).
    tier_scale: u32,
    /// The demo agents' callback endpoints ([`Sandbox::with_inboxes`]); none outside the demo.
    inboxes: Vec<Inbox>,
    /// What they received, oldest first.
    deliveries: Mutex<Vec<Delivery>>,
}

impl Sandbox {
    pub fn new(
        workspace: Workspace,
        bot_token: Secret,
        signing_secret: Secret,
        app_url: Url,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        Self(Arc::new(Inner {
            workspace,
            bot_token,
            signing_secret,
            app_url,
            request_url: None,
            clock,
            state: Mutex::default(),
            changes: broadcast::channel(64).0,
            version: std::sync::atomic::AtomicU64::new(0),
            closing: tokio::sync::watch::channel(false).0,
            http,
            socket: None,
            tier_scale: 1,
            inboxes: Vec::new(),
            deliveries: Mutex::default(),
        }))
    }

    /// Turns Socket Mode on, as in a Slack app's settings: `apps.connections.open` answers to
    /// `app_token` (an `xapp-` token), and what people do reaches the app over the WebSocket it
    /// opens. For a sandbox served on its own, which countersign reaches as it reaches Slack
    /// (`slack_api_url`, the bot token and `slack_app_token`). Call before sharing the sandbox.
    pub fn with_socket_mode(mut self, app_token: Secret) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("socket mode is set before the sandbox is shared")
            .socket = Some(socket::Hub::new(app_token));
        self
    }

    /// Delivers interactions and commands to countersign at `app` (`slack/interactions`,
    /// `slack/commands` under it), for a sandbox served on its own that countersign reaches as
    /// it reaches Slack. Call before sharing the sandbox.
    pub fn with_request_url(mut self, app: Url) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("the request URL is set before the sandbox is shared")
            .request_url = Some(app);
        self
    }

    /// Allows `scale` times Slack's documented per-method tiers, for a countersign configured
    /// with the same `slack_tier_scale` (a test at a volume Slack's tiers would take minutes
    /// over). Call before sharing the sandbox.
    pub fn with_tier_scale(mut self, scale: u32) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("the tier scale is set before the sandbox is shared")
            .tier_scale = scale.max(1);
        self
    }

    /// Keeps the workspace's messages in `path` (loaded now, saved after changes), so cards
    /// posted before a restart are still there after it, as they would be in Slack.
    pub fn persist_to(&self, path: std::path::PathBuf) {
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Message>>(&bytes) {
                Ok(messages) => *self.state() = state::State::restore(messages),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "sandbox history unreadable: starting empty")
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "cannot read sandbox history")
            }
        }
        let sandbox = self.clone();
        let mut changes = self.0.changes.subscribe();
        let mut closing = self.0.closing.subscribe();
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    changed = changes.recv() => matches!(changed, Err(broadcast::error::RecvError::Closed)),
                    _ = closing.wait_for(|c| *c) => true,
                };
                // Let a burst of changes settle into one write.
                if !stop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    changes = changes.resubscribe();
                }
                sandbox.save(&path);
                if stop {
                    break;
                }
            }
        });
    }

    fn save(&self, path: &std::path::Path) {
        let messages = serde_json::to_vec(&self.state().messages).expect("messages serialize");
        let temporary = path.with_extension("json.tmp");
        let written =
            std::fs::write(&temporary, messages).and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "cannot save sandbox history");
        }
    }

    /// Ends every open event stream (call when the server starts shutting down).
    pub fn close(&self) {
        self.0.closing.send_replace(true);
    }

    /// The Web API base URL to give countersign's Slack client.
    pub fn api_url(&self) -> Url {
        self.url("sandbox/api")
    }

    /// The page, for people.
    pub fn page_url(&self) -> Url {
        self.url("sandbox")
    }

    fn url(&self, path: &str) -> Url {
        self.0.app_url.join(path).expect("relative path joins")
    }

    /// Where a delivery to countersign's `path` goes.
    fn request_url(&self, path: &str) -> Url {
        let base = self.0.request_url.as_ref().unwrap_or(&self.0.app_url);
        base.join(path).expect("relative path joins")
    }

    pub fn workspace(&self) -> &Workspace {
        &self.0.workspace
    }

    /// The routes under `/sandbox`.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .merge(api::routes())
            .merge(control::routes())
            .merge(ui::routes())
            .merge(inbox::routes())
            .with_state(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, state::State> {
        self.0.state.lock().expect("sandbox state poisoned")
    }

    /// Tells listeners (the page) that something changed.
    fn changed(&self) {
        let version = self
            .0
            .version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let _ = self.0.changes.send(version);
    }

    /// Every message in `channel` (a channel id, a DM id, or `@U…` for the DM with that user)
    /// that `viewer` can see, oldest first. Without a viewer, ephemeral messages are included.
    pub fn messages(&self, channel: &str, viewer: Option<&str>) -> Vec<Message> {
        let Some(channel) = self.resolve_channel(channel) else {
            return Vec::new();
        };
        self.state()
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .filter(|m| match (&m.ephemeral_for, viewer) {
                (Some(for_user), Some(viewer)) => for_user == viewer,
                _ => true,
            })
            .cloned()
            .collect()
    }

    fn resolve_channel(&self, channel: &str) -> Option<String> {
        let id = channel.strip_prefix('@').unwrap_or(channel);
        self.0.workspace.channel(id).map(|c| c.id.clone())
    }

    /// Every Web API call countersign made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Every call refused for its rate (429), in order.
    pub fn refused(&self) -> Vec<Refusal> {
        self.state().refused.clone()
    }

    /// A trigger id as a click by `user` would carry (for scripts and tests of views.open).
    pub fn issue_trigger(&self, user: &str) -> String {
        interactivity::issue_trigger(self, user, None, None).0
    }

    /// The modal `user` has open, if any.
    pub fn open_view(&self, user: &str) -> Option<View> {
        self.state().open_view(user).cloned()
    }
}

/// Parses a value that Slack accepts either as JSON or as a JSON string (form-encoded calls send
/// `blocks` and `view` as strings).
fn json_argument(value: Option<&Value>) -> Option<Value> {
    match value? {
        Value::String(text) => serde_json::from_str(text).ok(),
        other => Some(other.clone()),
    }
}
