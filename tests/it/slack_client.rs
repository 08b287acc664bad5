//! A small typed client for the sandbox's control API: read channels, click as a person, submit
//! modals, run slash commands. Waiting is event-driven: the sandbox's change stream
//! (`/sandbox/events`) wakes the check, with a deadline so a broken build fails instead of hanging.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{TestApp, TestDb, discount_proposal};

const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    #[serde(default)]
    pub blocks: Value,
    pub ephemeral_for: Option<String>,
    /// Files shared with the message (ids; `/sandbox/files/{id}` serves them).
    #[serde(default)]
    pub files: Vec<String>,
}

impl Message {
    /// Every text in the message's blocks, joined: what a reader sees.
    pub fn visible_text(&self) -> String {
        let mut out = vec![self.text.clone()];
        collect_text(&self.blocks, &mut out);
        out.join("\n")
    }

    /// Action ids of the buttons on the message.
    pub fn buttons(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for block in self.blocks.as_array().into_iter().flatten() {
            for element in block
                .get("elements")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if element["type"] == "button" {
                    ids.push(element["action_id"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        ids
    }

    /// The proposal a card is about (the buttons' value, or the id in its footer).
    pub fn proposal_id(&self) -> Option<String> {
        let text = self.visible_text();
        let start = text.find("prop_")?;
        Some(
            text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        )
    }
}

fn collect_text(value: &Value, out: &mut Vec<String>) {
    match value {
        // A rich text paragraph reads as one line: its runs, mentions as `<@U…>`, dates by
        // their fallback.
        Value::Object(map)
            if matches!(
                map.get("type").and_then(Value::as_str),
                Some("rich_text_section" | "rich_text_quote")
            ) =>
        {
            let mut line = String::new();
            for item in map
                .get("elements")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let field = |key: &str| item[key].as_str().unwrap_or_default().to_owned();
                line.push_str(&match item["type"].as_str().unwrap_or_default() {
                    "user" => format!("<@{}>", field("user_id")),
                    "usergroup" => format!("<!subteam^{}>", field("usergroup_id")),
                    "date" => field("fallback"),
                    "emoji" => format!(":{}:", field("name")),
                    _ => field("text"),
                });
            }
            out.push(line);
        }
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get("text") {
                out.push(text.clone());
            }
            for (key, child) in map {
                if key != "text" || !child.is_string() {
                    collect_text(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_text(item, out)),
        _ => {}
    }
}

/// What a click or a submission gave: countersign's HTTP answer, and the modal it opened.
#[derive(Debug, Deserialize)]
pub struct Acted {
    pub status: u16,
    pub body: Value,
    #[serde(default)]
    pub view: Option<Value>,
    #[serde(default)]
    pub errors: Option<Value>,
}

/// A sandbox's control API: the app's own, or a sandbox served on its own.
pub struct Slack<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
}

impl TestApp {
    pub fn slack(&self) -> Slack<'_> {
        Slack::at(&self.http, &self.base)
    }
}

impl<'a> Slack<'a> {
    /// The sandbox served at `base` (`http://127.0.0.1:PORT`).
    pub fn at(http: &'a reqwest::Client, base: &'a str) -> Self {
        Self { http, base }
    }
}

impl Slack<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What `viewer` sees in `channel` (`@U…` for their DM with countersign), oldest first.
    pub async fn messages(&self, channel: &str, viewer: &str) -> Vec<Message> {
        let response = self
            .http
            .get(self.url("/sandbox/control/messages"))
            .query(&[("channel", channel), ("viewer", viewer)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{channel}");
        response.json().await.unwrap()
    }

    /// Waits until `check` finds what it looks for among what `viewer` sees in `channel`.
    pub async fn wait_for<T>(
        &self,
        channel: &str,
        viewer: &str,
        what: &str,
        check: impl Fn(&[Message]) -> Option<T>,
    ) -> T {
        let found = self
            .wait_until(|| async { check(&self.messages(channel, viewer).await) })
            .await;
        match found {
            Some(found) => found,
            None => panic!(
                "timed out waiting for {what} in {channel}; it holds: {:#?}",
                self.messages(channel, viewer).await
            ),
        }
    }

    /// Re-runs `check` after every change in the sandbox until it answers, or the deadline.
    pub async fn wait_until<T, F: std::future::Future<Output = Option<T>>>(
        &self,
        check: impl Fn() -> F,
    ) -> Option<T> {
        // Subscribed before the first look, so no change can slip between a look and the wait.
        let events = self
            .http
            .get(self.url("/sandbox/events"))
            .send()
            .await
            .unwrap();
        let mut events = events.bytes_stream();
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(found) = check().await {
                    return found;
                }
                events.next().await.expect("event stream open").unwrap();
            }
        })
        .await
        .ok()
    }

    /// Waits for the card about `proposal_id` in `channel` to satisfy `check`.
    pub async fn wait_for_card(
        &self,
        channel: &str,
        proposal_id: &str,
        what: &str,
        check: impl Fn(&Message) -> bool,
    ) -> Message {
        self.wait_for(channel, "U0NOBODY", what, |messages| {
            messages
                .iter()
                .find(|m| m.proposal_id().as_deref() == Some(proposal_id) && check(m))
                .cloned()
        })
        .await
    }

    /// Waits for an ephemeral message to `user` in `channel` containing `needle`.
    pub async fn wait_for_ephemeral(&self, channel: &str, user: &str, needle: &str) -> Message {
        self.wait_for(
            channel,
            user,
            &format!("an ephemeral {needle:?} to {user}"),
            |messages| {
                messages
                    .iter()
                    .find(|m| m.ephemeral_for.as_deref() == Some(user) && m.text.contains(needle))
                    .cloned()
            },
        )
        .await
    }

    async fn control(&self, path: &str, body: Value) -> Acted {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "{path}: {:?}",
            response.text().await
        );
        response.json().await.unwrap()
    }

    pub async fn click(&self, user: &str, message: &Message, action_id: &str) -> Acted {
        self.control(
            "/sandbox/control/click",
            json!({"user": user, "channel": message.channel, "ts": message.ts, "action_id": action_id}),
        )
        .await
    }

    pub async fn submit(&self, user: &str, view_id: &str, values: Value) -> Acted {
        self.control(
            "/sandbox/control/submit",
            json!({"user": user, "view_id": view_id, "values": values}),
        )
        .await
    }

    pub async fn command(&self, user: &str, channel: &str, text: &str) -> Acted {
        self.control(
            "/sandbox/control/command",
            json!({"user": user, "channel": channel, "text": text}),
        )
        .await
    }

    /// Every Web API call countersign made, in order.
    pub async fn calls(&self) -> Vec<Value> {
        let response = self
            .http
            .get(self.url("/sandbox/control/calls"))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

// Proposals and cards the Slack tests share.

pub fn large_payment() -> Value {
    json!({
        "action": "billing.invoice.pay",
        "summary": "Pay Initech invoice INV-2291",
        "target": {"system": "netsuite", "type": "VendorBill", "id": "INV-2291"},
        "params": {"amount": 25000, "currency": "USD", "vendor": "Initech"}
    })
}

/// A discount that touches personal data: finance (the discount) and legal (PII), one each, no
/// step-up.
pub fn discount_with_pii() -> Value {
    let mut body = discount_proposal();
    body["data_classes"] = json!(["financial", "pii"]);
    body
}

pub fn is_pending(card: &Message) -> bool {
    card.buttons() == ["approve", "reject"]
}

/// Submits `body` and waits for its card, pending, in `channel`.
pub async fn card_for(
    app: &TestApp,
    token: &str,
    body: &Value,
    channel: &str,
) -> (String, Message) {
    card_in(&app.slack(), app, token, body, channel).await
}

/// [`card_for`] with the card looked for in `slack` (a sandbox other than the app's own).
pub async fn card_in(
    slack: &Slack<'_>,
    app: &TestApp,
    token: &str,
    body: &Value,
    channel: &str,
) -> (String, Message) {
    let created = app.create(token, body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let card = slack
        .wait_for_card(channel, &id, "the card", is_pending)
        .await;
    (id, card)
}

pub async fn votes_of(db: &TestDb, id: &str) -> Vec<countersign::domain::Vote> {
    let id = countersign::domain::ProposalId::parse(id).unwrap();
    db.store().await.votes(&id).await.unwrap()
}

pub async fn status_of(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(token, id).await.json().await.unwrap()
}
