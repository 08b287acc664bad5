//! `countersign demo` and `serve --demo`: post the example proposals in `policies/examples/`
//! as the example agents, so a new user sees cards in the sandbox's role channels at once.
//! Each post carries an idempotency key, so running it again (or restarting `serve --demo`)
//! shows the same proposals instead of piling up copies. What `serve --demo` sets up besides
//! (a secret key, the demo agents' inboxes) is in [`setup`].

mod setup;

use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use url::Url;

use crate::auth::DEMO_TOKENS;
pub use setup::{CALLBACK_SECRETS_FILE, DemoSettings, Inboxes, SECRET_KEY_FILE, data_dir, prepare};

/// The examples, with the example agent that proposes each.
const EXAMPLES: &[(&str, &str)] = &[
    ("discount.json", "revops-crm"),
    ("large-payment.json", "billing"),
    ("access-grant.json", "revops-crm"),
    ("tag-lead.json", "revops-crm"),
    ("health-export.json", "revops-crm"),
];

/// What became of one example.
#[derive(Debug)]
pub struct Posted {
    pub file: &'static str,
    pub agent: &'static str,
    pub outcome: Result<Value, String>,
}

/// Posts every example to the countersign at `base`; with `inboxes` (`serve --demo`), each
/// asks to be called back at its agent's inbox.
pub async fn post_examples(
    base: &Url,
    examples: &Path,
    inboxes: Option<&Inboxes>,
) -> anyhow::Result<Vec<Posted>> {
    let http = reqwest::Client::new();
    let mut posted = Vec::new();
    for (file, agent) in EXAMPLES {
        let path = examples.join(file);
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut body: Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let mut key = format!("demo-{file}");
        if let Some(inbox) = inboxes.and_then(|i| i.url(agent)) {
            body["callback_url"] = Value::String(inbox.to_string());
            // Another port is another inbox: a new proposal, not a clash with the old key.
            key.push_str(&format!("@{}", inboxes.map_or(0, Inboxes::port)));
        }
        // The demo tokens are named after their agents: cs_demo_<agent with _>_d3m0t0k3n.
        let prefix = format!("cs_demo_{}_", agent.replace('-', "_"));
        let token = DEMO_TOKENS
            .iter()
            .find(|token| token.starts_with(&prefix))
            .expect("every example agent has a demo token");
        let response = http
            .post(base.join("v1/proposals")?)
            .bearer_auth(*token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("cannot reach countersign at {base}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let outcome = if status.is_success() {
            Ok(answer)
        } else {
            Err(format!(
                "{status}: {}",
                answer["detail"]
                    .as_str()
                    .or(answer["title"].as_str())
                    .unwrap_or("refused")
            ))
        };
        posted.push(Posted {
            file,
            agent,
            outcome,
        });
    }
    Ok(posted)
}

/// One line per example, for people.
pub fn describe(posted: &[Posted]) -> String {
    let mut lines = Vec::new();
    for p in posted {
        lines.push(match &p.outcome {
            Ok(proposal) => {
                let route = proposal["verdict"]["route"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" + ")
                    })
                    .unwrap_or_default();
                let status = proposal["status"].as_str().unwrap_or("?");
                let whither = if route.is_empty() {
                    String::new()
                } else {
                    format!(" → card for {route}")
                };
                format!("  {:<20} {:<11} {status}{whither}", p.file, p.agent)
            }
            Err(error) => format!("  {:<20} {:<11} refused: {error}", p.file, p.agent),
        });
    }
    lines.join("\n")
}
