//! The demo agents' inboxes (`serve --demo`): a built-in receiver for each demo agent's
//! callbacks, so one run shows the loop's last step — the agent learning the decision.
//!
//! `POST /sandbox/agents/{agent}/inbox` does what an agent's endpoint should: it verifies the
//! Standard Webhooks signature with the agent's secret (countersign's own verifier), answers
//! `204` (or `401` when the signature does not verify, which countersign retries), and records
//! the delivery with what the agent would do next. The page shows each agent's inbox, newest
//! first; `GET /sandbox/control/inbox?agent=…` answers the same as JSON. In memory: an inbox
//! lasts one run.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Sandbox;
use super::control::refuse;
use super::mrkdwn::escape_html;
use crate::callbacks::signature::{self, WebhookSecret};

/// Deliveries kept (all inboxes together); older ones are forgotten.
const KEPT: usize = 500;

/// One demo agent's inbox: who it is and the secrets it verifies with.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub agent: String,
    /// Empty when the agent's secret could not be read: every delivery then fails to verify.
    pub secrets: Vec<WebhookSecret>,
}

/// One callback as the agent received it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub agent: String,
    /// When it arrived, on the sandbox's clock.
    pub received_at: DateTime<Utc>,
    /// `webhook-id`: the same on every retry of one event.
    pub webhook_id: String,
    /// The event's `type`, e.g. `proposal.decided`.
    pub event: Option<String>,
    pub proposal_id: Option<String>,
    pub summary: Option<String>,
    /// The proposal's status as the event tells it.
    pub status: Option<String>,
    /// Whether the signature verified with the agent's secret (and the timestamp was fresh).
    pub verified: bool,
    /// What the inbox answered: 204, or 401 for a signature that does not verify.
    pub answered: u16,
    /// What the agent would do next.
    pub next: String,
}

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/sandbox/agents/{agent}/inbox", post(receive))
        .route("/sandbox/control/inbox", get(list))
        .route("/sandbox/ui/inboxes", get(inboxes))
        .route("/sandbox/ui/inbox", get(page))
}

impl Sandbox {
    /// Gives these agents an inbox (call before sharing the sandbox).
    pub fn with_inboxes(mut self, inboxes: Vec<Inbox>) -> Self {
        std::sync::Arc::get_mut(&mut self.0)
            .expect("inboxes are set before the sandbox is shared")
            .inboxes = inboxes;
        self
    }

    fn inbox(&self, agent: &str) -> Option<&Inbox> {
        self.0.inboxes.iter().find(|i| i.agent == agent)
    }

    /// What `agent`'s inbox received (every inbox's without one), newest first.
    pub fn deliveries(&self, agent: Option<&str>) -> Vec<Delivery> {
        let kept = self.0.deliveries.lock().expect("inbox poisoned");
        kept.iter()
            .rev()
            .filter(|d| agent.is_none_or(|a| d.agent == a))
            .cloned()
            .collect()
    }
}

/// A callback arrives for `agent`.
async fn receive(
    State(sandbox): State<Sandbox>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(inbox) = sandbox.inbox(&agent) else {
        return refuse(StatusCode::NOT_FOUND, "no_such_inbox");
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let webhook_id = header(signature::ID_HEADER);
    let verified = match header(signature::TIMESTAMP_HEADER).parse::<i64>() {
        Ok(timestamp) => signature::verify(
            &inbox.secrets,
            &webhook_id,
            timestamp,
            &body,
            &header(signature::SIGNATURE_HEADER),
            sandbox.0.clock.now().timestamp(),
        ),
        Err(_) => false,
    };
    // Read for the page even when unverified; an agent would not act on such a body.
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let data = &event["data"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let answered = if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut deliveries = sandbox.0.deliveries.lock().expect("inbox poisoned");
    let seen = verified
        && deliveries
            .iter()
            .any(|d| d.agent == agent && d.verified && d.webhook_id == webhook_id);
    let next = if !verified {
        "ignore it: the signature does not verify with the agent's secret (answered 401, so countersign retries)".to_owned()
    } else if seen {
        format!("nothing: {webhook_id} was handled already (a redelivery); drop it")
    } else {
        next_step(&event)
    };
    deliveries.push(Delivery {
        agent: agent.clone(),
        received_at: sandbox.0.clock.now(),
        webhook_id,
        event: text(&event["type"]),
        proposal_id: text(&data["proposal_id"]),
        summary: text(&data["summary"]),
        status: text(&data["status"]),
        verified,
        answered: answered.as_u16(),
        next,
    });
    let excess = deliveries.len().saturating_sub(KEPT);
    deliveries.drain(..excess);
    drop(deliveries);
    if !verified {
        tracing::warn!(%agent, "sandbox inbox: a callback's signature did not verify (answered 401)");
    }
    sandbox.changed();
    answered.into_response()
}

/// What an agent does on a verified event (README, "For agent authors").
fn next_step(event: &Value) -> String {
    if event["type"] != crate::domain::callback::DECIDED_EVENT {
        return "nothing: not an event this agent knows; acknowledge it".into();
    }
    let data = &event["data"];
    let id = data["proposal_id"].as_str().unwrap_or("?");
    match data["status"].as_str().unwrap_or_default() {
        "approved" => {
            let token = data["execution_token"].as_str().unwrap_or("?");
            let digest = data["digest"].as_str().unwrap_or("?");
            format!(
                "run it exactly as approved (digest {digest}) with execution_token {token}, then POST /v1/proposals/{id}/outcome {{\"execution_token\": \"{token}\", \"digest\": \"{digest}\", \"result\": \"executed\"}} (accepted once)"
            )
        }
        "rejected" => {
            let reason = data["rejection_reason"]
                .as_str()
                .or(data["reason"].as_str())
                .unwrap_or("none given");
            format!(
                "do not retry the same action; change the plan or hand over to a person. Reason: {reason}"
            )
        }
        "expired" => "nobody decided in time: propose again only if it is still relevant".into(),
        "cancelled" => "nothing: the agent withdrew it".into(),
        other => format!("nothing: the proposal is {other}"),
    }
}

#[derive(Deserialize)]
struct InboxQuery {
    agent: Option<String>,
}

/// `GET /sandbox/control/inbox?agent=…`: the deliveries, newest first.
async fn list(State(sandbox): State<Sandbox>, Query(q): Query<InboxQuery>) -> Response {
    if let Some(agent) = &q.agent
        && sandbox.inbox(agent).is_none()
    {
        return refuse(StatusCode::NOT_FOUND, "no_such_inbox");
    }
    Json(sandbox.deliveries(q.agent.as_deref())).into_response()
}

/// The inboxes the page lists, with how many deliveries each holds.
async fn inboxes(State(sandbox): State<Sandbox>) -> Json<Value> {
    let agents: Vec<Value> = sandbox
        .0
        .inboxes
        .iter()
        .map(|i| json!({"agent": i.agent, "count": sandbox.deliveries(Some(&i.agent)).len()}))
        .collect();
    Json(json!({"inboxes": agents}))
}

#[derive(Deserialize)]
struct PageQuery {
    agent: String,
}

/// One inbox, rendered for the page.
async fn page(State(sandbox): State<Sandbox>, Query(q): Query<PageQuery>) -> Response {
    if sandbox.inbox(&q.agent).is_none() {
        return refuse(StatusCode::NOT_FOUND, "no_such_inbox");
    }
    let html = render(&q.agent, &sandbox.deliveries(Some(&q.agent)));
    Json(json!({"html": html})).into_response()
}

/// The inbox as HTML; every value from the event is escaped.
fn render(agent: &str, deliveries: &[Delivery]) -> String {
    let mut html = format!(
        "<p class=\"inbox-intro\">What <b>{}</b>'s callback endpoint received from countersign, newest first: each delivery's signature checked with the agent's secret, and what the agent would do next.</p>",
        escape_html(agent)
    );
    if deliveries.is_empty() {
        html.push_str("<p class=\"inbox-empty\">Nothing yet. Approve or reject one of this agent's cards: the decision arrives here as a signed <code>proposal.decided</code> callback.</p>");
    }
    for d in deliveries {
        let optional = |v: &Option<String>| escape_html(v.as_deref().unwrap_or("?"));
        let (class, badge) = if d.verified {
            ("verified", "signature verified")
        } else {
            ("unverified", "signature NOT verified")
        };
        let _ = write!(
            html,
            "<article class=\"delivery {class}\"><header><b>{}</b> <span class=\"badge {class}\">{badge}</span> <time data-unix=\"{}\"></time> <small>answered {}</small></header>\
             <div class=\"delivery-what\"><code>{}</code> {} <b>{}</b></div>\
             <div class=\"delivery-next\"><b>Next:</b> {}</div>\
             <small class=\"delivery-id\">webhook-id {}</small></article>",
            optional(&d.event),
            d.received_at.timestamp(),
            d.answered,
            optional(&d.proposal_id),
            optional(&d.summary),
            optional(&d.status),
            escape_html(&d.next),
            escape_html(&d.webhook_id),
        );
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(status: &str) -> Value {
        json!({"type": "proposal.decided", "data": {
            "proposal_id": "prop_1", "status": status, "execution_token": "cxt_abc",
            "digest": "sha256:00ff",
            "rejection_reason": "Above the <b>playbook</b>", "reason": "policy"}})
    }

    #[test]
    fn the_next_step_follows_the_outcome() {
        let approved = next_step(&decided("approved"));
        assert!(approved.starts_with("run it exactly as approved (digest sha256:00ff)"));
        assert!(approved.contains("with execution_token cxt_abc"));
        assert!(approved.contains(r#""digest": "sha256:00ff""#));
        assert!(approved.contains("POST /v1/proposals/prop_1/outcome"));
        let rejected = next_step(&decided("rejected"));
        assert!(rejected.starts_with("do not retry the same action"));
        assert!(rejected.ends_with("Reason: Above the <b>playbook</b>"));
        assert!(next_step(&decided("expired")).contains("propose again only if"));
        assert!(next_step(&decided("cancelled")).contains("withdrew"));
        assert!(next_step(&json!({"type": "other"})).contains("not an event"));
    }

    #[test]
    fn agent_text_is_escaped() {
        let delivery = Delivery {
            agent: "a".into(),
            received_at: Utc::now(),
            webhook_id: "msg_<x>".into(),
            event: Some("proposal.decided".into()),
            proposal_id: Some("prop_1".into()),
            summary: Some("<script>alert(1)</script>".into()),
            status: Some("rejected".into()),
            verified: true,
            answered: 204,
            next: next_step(&decided("rejected")),
        };
        let html = render("a", &[delivery]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>playbook"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("signature verified"));
    }
}
