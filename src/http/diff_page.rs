//! `GET /p/{id}?exp=…&sig=…`: every change of a proposal, for reviewers whose card could show
//! only the first few. Reached from the card by a signed, expiring link (see `links`), so it
//! needs no login; a bad or expired link is refused and shows nothing.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::html::escape;
use crate::domain::{Proposal, ProposalId};

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Deserialize)]
pub struct LinkProof {
    exp: i64,
    sig: String,
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    proof: Result<Query<LinkProof>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let refuse = |status: StatusCode, text: &str| {
        (
            status,
            [(header::CONTENT_SECURITY_POLICY, CSP)],
            Html(page("countersign", &format!("<p>{}</p>", escape(text)))),
        )
            .into_response()
    };
    let Ok(id) = ProposalId::parse(&id) else {
        return refuse(StatusCode::NOT_FOUND, "No such proposal.");
    };
    let now = state.engine.clock().now();
    let valid = proof.is_ok_and(|Query(p)| state.links.verify(&id, p.exp, &p.sig, now));
    if !valid {
        return refuse(
            StatusCode::FORBIDDEN,
            "This link is not valid or has expired. Open the card in Slack again for a fresh one.",
        );
    }
    match state.engine.proposal(&id).await {
        Ok(Some(proposal)) => (
            [
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::CACHE_CONTROL, "no-store"),
            ],
            Html(render(&proposal)),
        )
            .into_response(),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "No such proposal."),
        Err(error) => {
            tracing::error!(%error, "cannot read a proposal for its diff page");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "countersign cannot read its database just now.",
            )
        }
    }
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None => "<td class=\"none\">—</td>".into(),
        Some(Value::String(s)) => format!("<td>{}</td>", escape(s)),
        Some(other) => format!("<td><code>{}</code></td>", escape(&other.to_string())),
    }
}

fn render(proposal: &Proposal) -> String {
    let content = &proposal.content;
    let mut body = format!(
        "<h1>{}</h1><p class=\"meta\">{} · agent <code>{}</code> · action <code>{}</code> · {} change{}</p>",
        escape(&content.summary),
        escape(proposal.status.as_str()),
        escape(proposal.agent.as_str()),
        escape(content.action.as_str()),
        content.changes.len(),
        if content.changes.len() == 1 { "" } else { "s" },
    );
    if let Some(target) = &content.target {
        body.push_str(&format!(
            "<p>Target: {} {} <code>{}</code></p>",
            escape(&target.system),
            escape(&target.kind),
            escape(&target.id)
        ));
    }
    body.push_str("<table><thead><tr><th>#</th><th>field</th><th>before</th><th>after</th></tr></thead><tbody>");
    for (n, change) in content.changes.iter().enumerate() {
        body.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td>{}{}</tr>",
            n + 1,
            escape(&change.path),
            cell(change.before.as_ref()),
            cell(change.after.as_ref())
        ));
    }
    body.push_str("</tbody></table>");
    page(&format!("Changes: {}", content.summary), &body)
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em}}\
         table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}}\
         .meta{{color:#666}}.none{{color:#aaa}}code{{background:#f4f4f4;padding:0 3px}}</style></head>\
         <body>{body}</body></html>",
        escape(title)
    )
}
