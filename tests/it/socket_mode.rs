//! Socket Mode end to end. countersign runs in its production configuration — a bot token, an
//! app-level token, no signing secret, `slack_api_url` — against a Slack of its own: the sandbox
//! served on another port with Socket Mode on, which speaks Slack's protocol (apps.connections.open,
//! hello, envelopes, acknowledgements, disconnect) over a real WebSocket. Nothing reaches
//! countersign over HTTP: `/slack/*` is not even served.

use countersign::config::{Config, Secret};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::both_backends;
use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, test_config};
use crate::sandbox_api::{self, SlowAnswers, Standalone};
use crate::slack_client::{Slack, card_in, status_of, votes_of};

const APP_TOKEN: &str = "xapp-1-A0COUNTERSIGN-fake-slack";

/// The sandbox on its own port, in Socket Mode: to countersign, simply Slack.
struct FakeSlack(Standalone);

impl FakeSlack {
    async fn start() -> Self {
        Self::start_wrapped(|router| router).await
    }

    /// With its routes passed through `wrap` (slow answers, say).
    async fn start_wrapped(wrap: impl FnOnce(axum::Router) -> axum::Router) -> Self {
        Self(
            Standalone::start_wrapped(
                |sandbox| sandbox.with_socket_mode(Secret::new(APP_TOKEN)),
                wrap,
            )
            .await,
        )
    }

    /// countersign's configuration for this Slack.
    fn config(&self, db: &TestDb) -> Config {
        let mut config = test_config(db);
        config.slack_bot_token = Some(Secret::new(sandbox_api::TOKEN));
        config.slack_app_token = Some(Secret::new(APP_TOKEN));
        config.slack_signing_secret = None;
        config.slack_api_url = url::Url::parse(&format!("{}/sandbox/api", self.0.base)).unwrap();
        config
    }

    fn slack(&self) -> Slack<'_> {
        Slack::at(&self.0.http, &self.0.base)
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .0
            .http
            .request(method, format!("{}{path}", self.0.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    /// countersign started against this Slack, once its first connection is open.
    async fn connected_app(&self, db: &TestDb) -> TestApp {
        let app = TestApp::start_with(self.config(db)).await;
        self.wait_for_connections(&[1], 1).await;
        app
    }

    /// POSTs to one of the sandbox's Socket Mode controls (`disconnect`, `drop`, `stall`).
    async fn socket_control(&self, name: &str, body: Value) -> Value {
        self.control(
            reqwest::Method::POST,
            &format!("/sandbox/control/socket/{name}"),
            body,
        )
        .await
    }

    /// `{connections: [open ids], opened, deliveries: [{envelope_id, type, connection, acknowledged}]}`.
    async fn socket(&self) -> Value {
        self.control(reqwest::Method::GET, "/sandbox/control/socket", json!({}))
            .await
    }

    /// Waits until the open connections are exactly `open`, `opened` having been opened in all.
    async fn wait_for_connections(&self, open: &[u64], opened: u64) -> Value {
        let reached = self
            .slack()
            .wait_until(|| async {
                let status = self.socket().await;
                (status["connections"] == json!(open) && status["opened"] == opened)
                    .then_some(status)
            })
            .await;
        match reached {
            Some(status) => status,
            None => panic!(
                "timed out waiting for connections {open:?} of {opened}: {}",
                self.socket().await
            ),
        }
    }

    async fn calls_to(&self, method: &str) -> usize {
        self.slack()
            .calls()
            .await
            .iter()
            .filter(|c| c["method"] == method)
            .count()
    }
}

async fn clicks_modals_and_commands_arrive_over_the_socket(db: TestDb) {
    let slack = FakeSlack::start().await;
    let app = slack.connected_app(&db).await;
    let fake = slack.slack();

    // No public endpoint: without a signing secret, /slack/* does not exist.
    let refused = app
        .http
        .post(app.url("/slack/interactions"))
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);

    // The card goes out through the Web API with the bot token; the click comes back as an
    // `interactive` envelope and the vote is recorded before the acknowledgement.
    let (id, card) = card_in(&fake, &app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let id = id.as_str();
    let acted = fake.click("U0FIN001", &card, "approve").await;
    assert_eq!(acted.status, 200, "{acted:?}");
    assert_eq!(votes_of(&db, id).await.len(), 1);
    assert_eq!(status_of(&app, REVOPS, id).await["status"], "approved");
    fake.wait_for_card("C0FINANCE", id, "the approved card", |m| {
        m.visible_text().contains("*Approved*")
    })
    .await;

    // Reject opens the modal inline (the envelope's trigger id); the modal's answer —
    // response_action errors — travels back in the acknowledgement's payload.
    let mut second = discount_proposal();
    second["summary"] = json!("Apply 15% discount to Globex renewal");
    let (id, card) = card_in(&fake, &app, REVOPS, &second, "C0FINANCE").await;
    let id = id.as_str();
    let opened = fake.click("U0FIN002", &card, "reject").await;
    let view = opened.view.expect("the click opened the rejection modal");
    assert_eq!(view["callback_id"], "reject");
    let view_id = view["id"].as_str().unwrap();
    let empty = fake.submit("U0FIN002", view_id, json!({})).await;
    assert!(
        empty.errors.unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("Say why"),
        "the form stays open with the error"
    );
    assert_eq!(status_of(&app, REVOPS, id).await["status"], "pending");
    let values = json!({"preset": {"choice": "Needs a deal desk review first"}});
    let done = fake.submit("U0FIN002", view_id, values).await;
    assert_eq!((done.status, done.errors), (200, None));
    let decided = status_of(&app, REVOPS, id).await;
    assert_eq!(decided["status"], "rejected");
    assert_eq!(
        decided["decision"]["reason"],
        "Needs a deal desk review first"
    );

    // A slash command's reply is the acknowledgement's payload, shown to the person alone.
    let help = fake.command("U0FIN001", "C0FINANCE", "help").await;
    assert_eq!(help.status, 200);
    assert_eq!(help.body["response_type"], "ephemeral");
    fake.wait_for_ephemeral("C0FINANCE", "U0FIN001", "approvals for AI agents")
        .await;

    let status = slack.socket().await;
    let deliveries = status["deliveries"].as_array().unwrap();
    assert!(
        deliveries
            .iter()
            .all(|d| d["connection"] == 1 && d["acknowledged"] == true),
        "{status}"
    );
    let kinds: Vec<&str> = deliveries
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "interactive",
            "interactive",
            "interactive",
            "interactive",
            "slash_commands"
        ]
    );
    assert_eq!(slack.calls_to("apps.connections.open").await, 1);

    // Stopping closes the connection properly.
    app.stop().await.unwrap();
    slack.wait_for_connections(&[], 1).await;
}
both_backends!(clicks_modals_and_commands_arrive_over_the_socket);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_hands_over_to_a_new_connection_before_the_old_one_closes() {
    let db = TestDb::sqlite();
    let slack = FakeSlack::start().await;
    let app = slack.connected_app(&db).await;
    let (id, card) = card_in(
        &slack.slack(),
        &app,
        REVOPS,
        &discount_proposal(),
        "C0FINANCE",
    )
    .await;

    // Slack warns, and would close the old connection ten seconds later; countersign has
    // already moved to a new one and closed the old itself.
    let warned = slack
        .socket_control(
            "disconnect",
            // Later than the wait below: only countersign can have closed it in time.
            json!({"reason": "refresh_requested", "close_after_ms": 60_000}),
        )
        .await;
    assert_eq!(warned["warned"], 1);
    slack.wait_for_connections(&[2], 2).await;
    assert_eq!(slack.calls_to("apps.connections.open").await, 2);

    let acted = slack.slack().click("U0FIN001", &card, "approve").await;
    assert_eq!(acted.status, 200, "{acted:?}");
    assert_eq!(status_of(&app, REVOPS, &id).await["status"], "approved");
    let status = slack.socket().await;
    assert_eq!(status["deliveries"][0]["connection"], 2, "{status}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_in_flight_during_a_refresh_is_finished_and_acknowledged_on_its_connection() {
    let db = TestDb::sqlite();
    let slow = SlowAnswers::new("views.open");
    let slack = FakeSlack::start_wrapped(|router| slow.layer(router)).await;
    let app = slack.connected_app(&db).await;
    let (_, card) = card_in(
        &slack.slack(),
        &app,
        REVOPS,
        &discount_proposal(),
        "C0FINANCE",
    )
    .await;

    // Reject is clicked; its handler is waiting on Slack (views.open) when the refresh comes.
    let click = tokio::spawn({
        let (http, base) = (slack.0.http.clone(), slack.0.base.clone());
        async move {
            Slack::at(&http, &base)
                .click("U0FIN002", &card, "reject")
                .await
        }
    });
    slow.arrived.notified().await;
    slack
        .socket_control(
            "disconnect",
            json!({"reason": "refresh_requested", "close_after_ms": 60_000}),
        )
        .await;
    // The new connection serves; the old one stays open while its click is in hand…
    slack.wait_for_connections(&[1, 2], 2).await;

    // …and answers it there, then closes.
    slow.release.add_permits(1);
    let opened = click.await.unwrap();
    assert_eq!(opened.status, 200, "{opened:?}");
    assert_eq!(
        opened.view.expect("the rejection modal")["callback_id"],
        "reject"
    );
    let status = slack.wait_for_connections(&[2], 2).await;
    assert_eq!(status["deliveries"][0]["connection"], 1, "{status}");
    assert_eq!(status["deliveries"][0]["acknowledged"], true, "{status}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reopened() {
    let db = TestDb::sqlite();
    let slack = FakeSlack::start().await;
    let app = slack.connected_app(&db).await;

    // The network drops the connection without a close frame.
    let dropped = slack.socket_control("drop", json!({})).await;
    assert_eq!(dropped["dropped"], 1);
    slack.wait_for_connections(&[2], 2).await;

    let help = slack.slack().command("U0FIN001", "C0FINANCE", "help").await;
    assert_eq!(help.status, 200, "{help:?}");
    assert_eq!(help.body["response_type"], "ephemeral");
    app.stop().await.unwrap();
}

/// A connection that goes quiet with its TCP still open (a NAT that forgot it) is given up once
/// nothing, not even a pong, has come from it for `SILENT_LIMIT`. Slow by nature: 30–40 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_given_up_and_replaced() {
    use countersign::slack::socket::{PING_EVERY, SILENT_LIMIT};
    let db = TestDb::sqlite();
    let slack = FakeSlack::start().await;
    let app = slack.connected_app(&db).await;
    let stalled = slack.socket_control("stall", json!({})).await;
    assert_eq!(stalled["stalled"], 1);
    let started = std::time::Instant::now();
    let deadline = SILENT_LIMIT + PING_EVERY + std::time::Duration::from_secs(15);
    loop {
        let status = slack.socket().await;
        if status["connections"] == json!([2]) {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "no new connection within {deadline:?}: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        started.elapsed() >= SILENT_LIMIT,
        "given up only after {SILENT_LIMIT:?} of silence"
    );
    let help = slack.slack().command("U0FIN001", "C0FINANCE", "help").await;
    assert_eq!(help.status, 200, "{help:?}");
    app.stop().await.unwrap();
}

/// The fake itself, driven by hand as the protocol is written: what countersign's client is
/// tested against is Slack's protocol, not an echo of that client.
#[tokio::test]
async fn the_fake_speaks_slacks_protocol() {
    let slack = FakeSlack::start().await;
    let open = |token: &'static str| {
        let slack = &slack;
        async move {
            slack
                .0
                .http
                .post(format!(
                    "{}/sandbox/api/apps.connections.open",
                    slack.0.base
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        open(sandbox_api::TOKEN).await,
        json!({"ok": false, "error": "not_allowed_token_type"})
    );
    assert_eq!(open("xapp-wrong").await["error"], "invalid_auth");
    let posted = slack
        .0
        .http
        .post(format!("{}/sandbox/api/chat.postMessage", slack.0.base))
        .bearer_auth(APP_TOKEN)
        .json(&json!({"channel": "C0FINANCE", "text": "hi"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(posted["error"], "not_allowed_token_type");

    let opened = open(APP_TOKEN).await;
    assert_eq!(opened["ok"], true);
    let url = opened["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello: Value = match socket.next().await.unwrap().unwrap() {
        Frame::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("hello expected, got {other:?}"),
    };
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["num_connections"], 1);
    assert_eq!(hello["connection_info"]["app_id"], "A0COUNTERSIGN");
    // The URL was good for one connection.
    let again = tokio_tungstenite::connect_async(&url).await;
    assert!(again.is_err(), "a used ticket is refused");

    // A person runs a command; the envelope comes, and the acknowledgement is the answer.
    let fake = Slack::at(&slack.0.http, &slack.0.base);
    let (acted, ()) = tokio::join!(fake.command("U0FIN001", "C0FINANCE", "help"), async {
        let envelope: Value = match socket.next().await.unwrap().unwrap() {
            Frame::Text(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("an envelope expected, got {other:?}"),
        };
        assert_eq!(envelope["type"], "slash_commands");
        assert_eq!(envelope["accepts_response_payload"], true);
        assert_eq!(envelope["retry_attempt"], 0);
        assert_eq!(envelope["payload"]["command"], "/countersign");
        assert_eq!(envelope["payload"]["user_id"], "U0FIN001");
        assert_eq!(envelope["payload"]["text"], "help");
        let ack = json!({"envelope_id": envelope["envelope_id"], "payload": {"text": "by hand"}});
        socket.send(Frame::text(ack.to_string())).await.unwrap();
    });
    assert_eq!(
        (acted.status, acted.body),
        (200, json!({"text": "by hand"}))
    );
    fake.wait_for_ephemeral("C0FINANCE", "U0FIN001", "by hand")
        .await;

    // Slack's warning before it closes a connection, then the close.
    slack
        .socket_control(
            "disconnect",
            json!({"reason": "warning", "close_after_ms": 0}),
        )
        .await;
    let warning: Value = match socket.next().await.unwrap().unwrap() {
        Frame::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("disconnect expected, got {other:?}"),
    };
    assert_eq!(warning["type"], "disconnect");
    assert_eq!(warning["reason"], "warning");
    assert!(matches!(
        socket.next().await,
        Some(Ok(Frame::Close(_))) | None
    ));
}
