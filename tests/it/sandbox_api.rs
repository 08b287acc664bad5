//! The sandbox's Web API on its own, driven by countersign's real Slack client over HTTP: it
//! must answer as Slack does, limits and errors included.

use std::sync::Arc;

use countersign::clock::{Clock, ManualClock};
use countersign::config::Secret;
use countersign::registry::Registry;
use countersign::sandbox::{Sandbox, Workspace};
use countersign::slack::tiers::Tier;
use countersign::slack::{OutgoingMessage, SlackApi, SlackBudget, SlackError};
use serde_json::{Value, json};
use slack_morphism::prelude::*;

use crate::common::{manifests_dir, policies_dir, start_time};

pub const TOKEN: &str = "xoxb-sandbox-test";
/// The signing secret a standalone sandbox signs its deliveries with.
pub const SIGNING_SECRET: &str = "signing";

/// Slack slow to answer one Web API method: the call is done at once, its answer held (while
/// holding, as at first) until the test releases it.
#[derive(Clone)]
pub struct SlowAnswers {
    method: &'static str,
    holding: Arc<std::sync::atomic::AtomicBool>,
    /// Notified when a held answer is waiting.
    pub arrived: Arc<tokio::sync::Notify>,
    /// A permit lets one held answer go.
    pub release: Arc<tokio::sync::Semaphore>,
}

impl SlowAnswers {
    pub fn new(method: &'static str) -> Self {
        Self {
            method,
            holding: Arc::new(true.into()),
            arrived: Arc::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    pub fn hold(&self, holding: bool) {
        self.holding
            .store(holding, std::sync::atomic::Ordering::SeqCst);
    }

    /// For [`Standalone::start_wrapped`].
    pub fn layer(&self, router: axum::Router) -> axum::Router {
        let gate = self.clone();
        router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let gate = gate.clone();
                async move {
                    let held = request.uri().path().ends_with(&format!("/{}", gate.method))
                        && gate.holding.load(std::sync::atomic::Ordering::SeqCst);
                    let answer = next.run(request).await;
                    if held {
                        gate.arrived.notify_one();
                        gate.release.acquire().await.unwrap().forget();
                    }
                    answer
                }
            },
        ))
    }
}

pub struct Standalone {
    pub sandbox: Sandbox,
    pub api: SlackApi,
    pub clock: ManualClock,
    pub base: String,
    pub http: reqwest::Client,
}

impl Standalone {
    pub async fn start() -> Self {
        Self::start_with(|sandbox| sandbox).await
    }

    /// A sandbox of its own on its own port, `setup` (e.g. Socket Mode on) before it serves.
    pub async fn start_with(setup: impl FnOnce(Sandbox) -> Sandbox) -> Self {
        Self::start_wrapped(setup, |router| router).await
    }

    /// Like [`Standalone::start_with`], its routes passed through `wrap` (a layer standing for
    /// Slack's network: held requests, say).
    pub async fn start_wrapped(
        setup: impl FnOnce(Sandbox) -> Sandbox,
        wrap: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Self {
        Self::start_serving(setup, wrap).await
    }

    /// A sandbox that delivers clicks and commands over HTTP to the app at `app`
    /// (`/slack/interactions`, signed with [`SIGNING_SECRET`]), as Slack does.
    pub async fn start_for(app: &url::Url) -> Self {
        let app = app.clone();
        Self::start_serving(
            move |sandbox| sandbox.with_request_url(app),
            |router| router,
        )
        .await
    }

    async fn start_serving(
        setup: impl FnOnce(Sandbox) -> Sandbox,
        wrap: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let url = url::Url::parse(&format!("{base}/")).unwrap();
        let registry = Registry::load(&manifests_dir(), &policies_dir()).unwrap();
        let workspace = Workspace::seed(&registry, &manifests_dir()).unwrap();
        let clock = ManualClock::new(start_time());
        let sandbox = setup(Sandbox::new(
            workspace,
            Secret::new(TOKEN),
            Secret::new(SIGNING_SECRET),
            url,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
        ));
        let router: axum::Router = wrap(sandbox.routes());
        tokio::spawn(async move { axum::serve(listener, router).await });
        // countersign's client, its budget on the same clock as the sandbox's limits (as in the
        // app, where both run on the app's clock).
        let api = SlackApi::new(&sandbox.api_url(), &Secret::new(TOKEN))
            .with_budget(SlackBudget::new(Arc::new(clock.clone()), None));
        Self {
            sandbox,
            api,
            clock,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// A raw Web API call (for methods countersign's client does not wrap, or another app's
    /// calls, outside countersign's budget).
    pub async fn call(&self, method: &str, args: Value) -> (u16, Value) {
        let answer = self.raw(method, args).await;
        (answer.status, answer.body)
    }

    /// [`Standalone::call`] with the `Retry-After` header.
    pub async fn raw(&self, method: &str, args: Value) -> RawAnswer {
        let response = self
            .http
            .post(format!("{}/{method}", self.sandbox.api_url()))
            .bearer_auth(TOKEN)
            .json(&args)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "Slack's content type"
        );
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        RawAnswer {
            status,
            retry_after,
            body: response.json().await.unwrap(),
        }
    }

    /// Another app posts into `channel` until Slack's burst for it is spent.
    pub async fn spend_channel(&self, channel: &str) {
        for _ in 0..Tier::PerChannel.slack().burst {
            let (status, _) = self
                .call(
                    "chat.postMessage",
                    json!({"channel": channel, "text": "busy channel"}),
                )
                .await;
            assert_eq!(status, 200);
        }
    }

    /// `GET /sandbox/control/refused`.
    pub async fn refused(&self) -> Value {
        let url = format!("{}/sandbox/control/refused", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

pub struct RawAnswer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Value,
}

fn message(blocks: Value) -> OutgoingMessage {
    OutgoingMessage {
        text: "fallback".into(),
        blocks: serde_json::from_value(blocks).unwrap(),
    }
}

fn header(text: &str) -> Value {
    json!([{"type": "header", "text": {"type": "plain_text", "text": text}}])
}

#[tokio::test]
async fn a_card_over_a_block_kit_limit_is_refused_as_slack_refuses_it() {
    let s = Standalone::start().await;
    assert!(
        s.api
            .post_message("C0FINANCE", &message(header(&"h".repeat(150))), None)
            .await
            .is_ok()
    );
    let refused = s
        .api
        .post_message("C0FINANCE", &message(header(&"h".repeat(151))), None)
        .await;
    match refused {
        Err(SlackError::Api(error)) => {
            assert!(error.starts_with("invalid_blocks"), "{error}");
            assert!(
                error.contains(
                    "must be less than 151 characters [json-pointer:/blocks/0/text/text]"
                ),
                "{error}"
            );
        }
        other => panic!("expected invalid_blocks, got {other:?}"),
    }
    let too_many = Value::Array(vec![json!({"type": "divider"}); 51]);
    let (_, body) = s
        .call(
            "chat.postMessage",
            json!({"channel": "C0FINANCE", "text": "x", "blocks": too_many}),
        )
        .await;
    assert_eq!(body["error"], "invalid_blocks");
    let (_, body) = s
        .call(
            "chat.postMessage",
            json!({"channel": "C0FINANCE", "text": "x".repeat(40_001)}),
        )
        .await;
    assert_eq!(body["error"], "msg_too_long");
    let (_, body) = s
        .call(
            "chat.postMessage",
            json!({"channel": "C0NOPE", "text": "x"}),
        )
        .await;
    assert_eq!(body["error"], "channel_not_found");
    assert_eq!(
        s.sandbox.messages("C0FINANCE", None).len(),
        1,
        "refused messages are not posted"
    );
}

#[tokio::test]
async fn only_the_bot_token_is_accepted() {
    let s = Standalone::start().await;
    let wrong = SlackApi::new(&s.sandbox.api_url(), &Secret::new("xoxb-guess"));
    assert_eq!(
        wrong.auth_test().await,
        Err(SlackError::Api("invalid_auth".into()))
    );
    let response = s
        .http
        .post(format!("{}/auth.test", s.sandbox.api_url()))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"ok": false, "error": "not_authed"}));
    assert_eq!(s.api.auth_test().await.unwrap(), "U0COUNTERSIGN");
}

#[tokio::test]
async fn a_burst_of_posts_to_one_channel_gets_429_with_retry_after() {
    let s = Standalone::start().await;
    // Slack's limit: a burst of four per channel, then one a second.
    s.spend_channel("C0FINANCE").await;
    let refused = s
        .raw(
            "chat.postMessage",
            json!({"channel": "C0FINANCE", "text": "x"}),
        )
        .await;
    assert_eq!((refused.status, refused.retry_after), (429, Some(1)));
    assert_eq!(refused.body, json!({"ok": false, "error": "ratelimited"}));
    // Other channels have their own; a second later this one has room again.
    let post = |channel: &'static str| {
        s.call("chat.postMessage", json!({"channel": channel, "text": "x"}))
    };
    assert_eq!(post("C0LEGAL").await.0, 200);
    s.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(post("C0FINANCE").await.0, 200);
    let limited = s.sandbox.calls().iter().filter(|c| c.status == 429).count();
    assert_eq!(limited, 1);
}

/// A message in #finance to update, posted by another app (outside countersign's budget).
async fn a_message(s: &Standalone) -> String {
    let (status, posted) = s
        .call(
            "chat.postMessage",
            json!({"channel": "C0FINANCE", "text": "v0"}),
        )
        .await;
    assert_eq!(status, 200);
    posted["ts"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_method_is_limited_at_its_documented_tier() {
    let s = Standalone::start().await;
    let ts = a_message(&s).await;
    let update = || {
        s.raw(
            "chat.update",
            json!({"channel": "C0FINANCE", "ts": ts, "text": "v1"}),
        )
    };
    // chat.update is Tier 3: fifty in a minute…
    for _ in 0..50 {
        assert_eq!(update().await.status, 200);
    }
    // …and the 51st is refused as Slack refuses it, until a fiftieth of a minute has passed
    // (1.2 s, said in whole seconds).
    let refused = update().await;
    assert_eq!((refused.status, refused.retry_after), (429, Some(2)));
    assert_eq!(refused.body, json!({"ok": false, "error": "ratelimited"}));
    // Each method has its own bucket.
    let (status, _) = s.call("users.info", json!({"user": "U0FIN001"})).await;
    assert_eq!(status, 200);
    s.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(update().await.status, 200);

    // usergroups.users.list is Tier 2: twenty, then three seconds a call.
    let members = || s.raw("usergroups.users.list", json!({"usergroup": "S0FINAPPR"}));
    for _ in 0..20 {
        assert_eq!(members().await.status, 200);
    }
    let refused = members().await;
    assert_eq!((refused.status, refused.retry_after), (429, Some(3)));

    // The control API lists what was refused.
    let listed = s.refused().await;
    assert_eq!(
        listed["by_method"],
        json!({"chat.update": 1, "usergroups.users.list": 1})
    );
    let refusals = listed["refusals"].as_array().unwrap();
    assert_eq!(refusals[0]["bucket"], "method:chat.update");
    assert_eq!(refusals[0]["retry_after"], 2);
    assert_eq!(refusals[1]["bucket"], "method:usergroups.users.list");
}

#[tokio::test]
async fn countersigns_client_spends_from_its_own_budget_before_slack_refuses() {
    let s = Standalone::start().await;
    let text = message(header("hello"));
    // A channel: three at once (Slack allows four).
    for _ in 0..3 {
        s.api.post_message("C0FINANCE", &text, None).await.unwrap();
    }
    assert_eq!(
        s.api.post_message("C0FINANCE", &text, None).await,
        Err(SlackError::RateLimited(std::time::Duration::from_secs(1)))
    );
    // chat.update: twenty-five at once (Slack allows fifty), then one each 1.2 s.
    let ts = a_message(&s).await;
    for _ in 0..25 {
        s.api.update_message("C0FINANCE", &ts, &text).await.unwrap();
    }
    assert_eq!(
        s.api.update_message("C0FINANCE", &ts, &text).await,
        Err(SlackError::RateLimited(std::time::Duration::from_millis(
            1200
        )))
    );
    // Neither refusal reached Slack.
    let calls = s.sandbox.calls();
    let count = |method: &str| calls.iter().filter(|c| c.method == method).count();
    assert_eq!((count("chat.postMessage"), count("chat.update")), (4, 25));
    assert!(calls.iter().all(|c| c.status == 200));
    assert_eq!(s.refused().await["refusals"], json!([]));
}

#[tokio::test]
async fn a_429_pauses_the_method_until_its_retry_after() {
    let s = Standalone::start().await;
    let ts = a_message(&s).await;
    let text = message(header("hello"));
    // Another app has spent the workspace's minute of chat.update.
    for _ in 0..50 {
        let (status, _) = s
            .call(
                "chat.update",
                json!({"channel": "C0FINANCE", "ts": ts, "text": "theirs"}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let wait = |seconds| {
        Err(SlackError::RateLimited(std::time::Duration::from_secs(
            seconds,
        )))
    };
    assert_eq!(s.api.update_message("C0FINANCE", &ts, &text).await, wait(2));
    // Paused: nothing more goes to Slack before Retry-After has passed.
    let calls = s.sandbox.calls().len();
    assert_eq!(s.api.update_message("C0FINANCE", &ts, &text).await, wait(2));
    s.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(s.api.update_message("C0FINANCE", &ts, &text).await, wait(1));
    assert_eq!(s.sandbox.calls().len(), calls, "no call while paused");
    s.clock.advance(chrono::Duration::seconds(1));
    s.api.update_message("C0FINANCE", &ts, &text).await.unwrap();
    let limited = s.sandbox.calls().iter().filter(|c| c.status == 429).count();
    assert_eq!(limited, 1, "the 429 was waited out, not repeated");
}

fn modal(title: &str) -> SlackModalView {
    SlackModalView::new(pt!(title.to_owned()), vec![SlackDividerBlock::new().into()])
}

#[tokio::test]
async fn trigger_ids_open_one_modal_within_three_seconds() {
    let s = Standalone::start().await;
    let trigger = s.sandbox.issue_trigger("U0FIN001");
    let view_id = s.api.open_view(&trigger, modal("Reject")).await.unwrap();
    assert_eq!(s.sandbox.open_view("U0FIN001").unwrap().id, view_id);
    assert_eq!(
        s.api.open_view(&trigger, modal("Again")).await,
        Err(SlackError::Api("exchanged_trigger_id".into()))
    );
    let late = s.sandbox.issue_trigger("U0FIN001");
    s.clock.advance(chrono::Duration::milliseconds(3001));
    assert_eq!(
        s.api.open_view(&late, modal("Late")).await,
        Err(SlackError::Api("expired_trigger_id".into()))
    );
    let fresh = s.sandbox.issue_trigger("U0FIN001");
    let refused = s.api.open_view(&fresh, modal(&"t".repeat(25))).await;
    assert!(matches!(refused, Err(SlackError::Api(e)) if e.starts_with("invalid_arguments")));
    assert_eq!(
        s.api.open_view("nonsense", modal("x")).await,
        Err(SlackError::Api("invalid_trigger_id".into()))
    );
}

#[tokio::test]
async fn the_workspace_is_seeded_from_the_manifests() {
    let s = Standalone::start().await;
    let (_, user) = s.call("users.info", json!({"user": "U0FIN001"})).await;
    assert_eq!(user["user"]["real_name"], "Priya Natarajan");
    let (_, found) = s
        .call(
            "users.lookupByEmail",
            json!({"email": "amara@acme.example"}),
        )
        .await;
    assert_eq!(found["user"]["id"], "U0LEG001");
    let (_, missing) = s
        .call(
            "users.lookupByEmail",
            json!({"email": "nobody@acme.example"}),
        )
        .await;
    assert_eq!(missing["error"], "users_not_found");
    assert_eq!(
        s.api.usergroup_members("S0FINAPPR").await.unwrap(),
        ["U0FIN001", "U0FIN002", "U0MGR001"]
    );
    let (_, dm) = s
        .call("conversations.open", json!({"users": "U0SEC001"}))
        .await;
    assert_eq!(dm["channel"]["id"], "D0SEC001");
    // Every role's approvers exist as people, every role's channel as a channel.
    let registry = Registry::load(&manifests_dir(), &policies_dir()).unwrap();
    for (_, role) in registry.roles.iter() {
        assert!(s.sandbox.workspace().channels.contains_key(&role.channel));
        for user in &role.approvers.users {
            assert!(s.sandbox.workspace().users.contains_key(user), "{user}");
        }
    }
}

#[tokio::test]
async fn files_upload_in_three_steps_and_appear_in_the_channel() {
    let s = Standalone::start().await;
    let png = b"\x89PNG\r\n\x1a\nnot really";
    let (_, url) = s
        .call(
            "files.getUploadURLExternal",
            json!({"filename": "chart.png", "length": png.len()}),
        )
        .await;
    let upload = url["upload_url"].as_str().unwrap();
    let file = url["file_id"].as_str().unwrap();
    let (_, early) = s
        .call(
            "files.completeUploadExternal",
            json!({"files": [{"id": file}], "channel_id": "C0FINANCE"}),
        )
        .await;
    assert_eq!(early["error"], "file_not_found", "bytes first");
    let uploaded = s.http.post(upload).body(png.to_vec()).send().await.unwrap();
    assert_eq!(
        uploaded.text().await.unwrap(),
        format!("OK - {}", png.len())
    );
    let (_, done) = s
        .call("files.completeUploadExternal", json!({"files": [{"id": file, "title": "SLA"}], "channel_id": "C0FINANCE", "initial_comment": "Weekly SLA"}))
        .await;
    assert_eq!(done["files"][0]["title"], "SLA");
    let posted = s.sandbox.messages("C0FINANCE", None);
    assert_eq!(posted.last().unwrap().text, "Weekly SLA");
    let served = s
        .http
        .get(format!(
            "{}sandbox/files/{file}",
            s.sandbox.page_url().as_str().trim_end_matches("sandbox")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(served.bytes().await.unwrap().as_ref(), png);
}
