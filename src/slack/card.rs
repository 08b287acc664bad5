//! The approval card: what a reviewer sees in the role channel. Every piece of agent-supplied
//! text is escaped for mrkdwn and cut to Slack's limits here, so a card can never be refused
//! by Slack or smuggle a mention.

use slack_morphism::prelude::*;

use super::client::OutgoingMessage;
use super::escape::{fit, mrkdwn, truncate};
use crate::domain::vote::tally;
use crate::domain::{Ballot, Proposal, Status, Vote};

/// Action ids of the card's buttons; the interaction handler matches on them.
pub const APPROVE: &str = "approve";
pub const REJECT: &str = "reject";
/// Block id of the buttons.
pub const DECIDE_BLOCK: &str = "decide";

/// Diff lines shown on the card before "…and N more".
const CHANGES_SHOWN: usize = 8;

/// What the card needs beyond the proposal.
pub struct CardContext<'a> {
    /// The agent's accountable human (a Slack user id from the manifest: trusted).
    pub owner: Option<&'a str>,
    /// Votes so far, oldest first.
    pub votes: &'a [Vote],
}

/// The status line at the top of the card.
fn status_line(proposal: &Proposal) -> String {
    let decided = proposal.decision.as_ref().map(|d| {
        let who = match d.by.kind {
            crate::domain::ActorKind::Reviewer => format!("<@{}>", d.by.id),
            _ => mrkdwn(&d.by.audit_name()),
        };
        format!(
            " by {who} <!date^{}^{{date_short_pretty}} {{time}}|{}>",
            d.at.timestamp(),
            d.at.to_rfc3339()
        )
    });
    match proposal.status {
        Status::Pending => ":hourglass_flowing_sand: *Pending review*".to_owned(),
        Status::Approved => format!(
            ":white_check_mark: *Approved*{}",
            decided.unwrap_or_default()
        ),
        Status::Rejected => format!(":x: *Rejected*{}", decided.unwrap_or_default()),
        Status::Expired => ":hourglass: *Expired*: nobody decided in time".to_owned(),
        Status::Cancelled => format!(":no_entry_sign: *Cancelled*{}", decided.unwrap_or_default()),
    }
}

fn value_text(value: &Option<serde_json::Value>) -> String {
    match value {
        None => "∅".to_owned(),
        Some(serde_json::Value::String(s)) => mrkdwn(&truncate(s, 200)),
        Some(other) => mrkdwn(&truncate(&other.to_string(), 200)),
    }
}

/// Renders the card for `proposal` as it stands.
pub fn render(proposal: &Proposal, context: &CardContext<'_>) -> OutgoingMessage {
    let content = &proposal.content;
    let summary = truncate(&content.summary, 150);
    let mut blocks: Vec<SlackBlock> = Vec::new();

    blocks.push(SlackHeaderBlock::new(pt!(summary.clone())).into());
    blocks.push(
        SlackSectionBlock::new()
            .with_text(md!(status_line(proposal)))
            .into(),
    );

    let mut who = format!("*Agent* `{}` proposes `{}`", proposal.agent, content.action);
    if let Some(owner) = context.owner {
        who.push_str(&format!(" · owner <@{owner}>"));
    }
    if let Some(requested_by) = &content.requested_by {
        who.push_str(&format!(
            " · on behalf of {}",
            mrkdwn(&truncate(requested_by, 80))
        ));
    }
    blocks.push(SlackSectionBlock::new().with_text(md!(who)).into());

    if let Some(target) = &content.target {
        let mut line = format!(
            "*Target* {} {} `{}`",
            mrkdwn(&truncate(&target.system, 80)),
            mrkdwn(&truncate(&target.kind, 80)),
            mrkdwn(&truncate(&target.id, 120))
        );
        if let Some(host) = target
            .url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            line.push_str(&format!(" (link on {})", mrkdwn(&host)));
        }
        blocks.push(SlackSectionBlock::new().with_text(md!(line)).into());
    }

    if !content.changes.is_empty() {
        let mut lines: Vec<String> = content
            .changes
            .iter()
            .take(CHANGES_SHOWN)
            .map(|c| {
                format!(
                    "• `{}`: {} → {}",
                    mrkdwn(&truncate(&c.path, 120)),
                    value_text(&c.before),
                    value_text(&c.after)
                )
            })
            .collect();
        if content.changes.len() > CHANGES_SHOWN {
            lines.push(format!(
                "…and {} more",
                content.changes.len() - CHANGES_SHOWN
            ));
        }
        let text = fit(&format!("*Changes*\n{}", lines.join("\n")), 3000);
        blocks.push(SlackSectionBlock::new().with_text(md!(text)).into());
    }

    if let Some(rationale) = &content.rationale {
        let text = format!(
            "*Why the agent wants this*\n{}",
            fit(&mrkdwn(rationale), 2900)
        );
        blocks.push(SlackSectionBlock::new().with_text(md!(text)).into());
    }

    let verdict = &content.verdict;
    if !verdict.reasons.is_empty() {
        let reasons: Vec<String> = verdict
            .reasons
            .iter()
            .map(|r| format!("• {}", mrkdwn(r)))
            .collect();
        let text = fit(
            &format!("*Why this needs you*\n{}", reasons.join("\n")),
            3000,
        );
        blocks.push(SlackSectionBlock::new().with_text(md!(text)).into());
    }
    let mut facts = vec![format!(
        "{} approval{} needed from {}",
        verdict.quorum.approvals,
        if verdict.quorum.approvals == 1 {
            ""
        } else {
            "s"
        },
        verdict.route.join(" and ")
    )];
    if let Some(expires_at) = content.expires_at {
        facts.push(format!(
            "expires <!date^{}^{{date_short_pretty}} {{time}}|{}>",
            expires_at.timestamp(),
            expires_at.to_rfc3339()
        ));
    }
    facts.push(format!("rules: {}", verdict.rules.join(", ")));
    blocks.push(
        SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
            SlackBlockMarkDownText::new(fit(&facts.join(" · "), 3000)),
        )])
        .into(),
    );

    if !context.votes.is_empty() || proposal.status == Status::Pending {
        let tally = tally(&verdict.quorum, &verdict.route, context.votes);
        let mut lines: Vec<String> = context
            .votes
            .iter()
            .zip(&tally.roles)
            .map(|(vote, role)| {
                let role = role
                    .as_deref()
                    .map(|r| format!(" for {r}"))
                    .unwrap_or_default();
                let when = super::review::slack_date(vote.at);
                match vote.ballot {
                    Ballot::Approve => {
                        format!(":white_check_mark: <@{}> approved{role} {when}", vote.voter)
                    }
                    Ballot::Reject => format!(
                        ":x: <@{}> rejected {when}: {}",
                        vote.voter,
                        mrkdwn(&truncate(vote.reason.as_deref().unwrap_or(""), 300))
                    ),
                }
            })
            .collect();
        if proposal.status == Status::Pending {
            lines.push(format!("Still needed: {}", tally.shortfall.describe()));
        }
        let text = fit(&format!("*Votes*\n{}", lines.join("\n")), 3000);
        blocks.push(SlackSectionBlock::new().with_text(md!(text)).into());
    }

    if proposal.status == Status::Pending {
        let value = proposal.id.to_string();
        let approve = SlackBlockButtonElement::new(pt!("Approve"))
            .with_action_id(APPROVE.into())
            .with_style(SlackBlockButtonStyle::Primary)
            .with_value(value.clone());
        let reject = SlackBlockButtonElement::new(pt!("Reject"))
            .with_action_id(REJECT.into())
            .with_style(SlackBlockButtonStyle::Danger)
            .with_value(value);
        blocks.push(
            SlackActionsBlock::new(vec![approve.into(), reject.into()])
                .with_block_id(DECIDE_BLOCK.into())
                .into(),
        );
    }
    blocks.push(
        SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
            SlackBlockMarkDownText::new(format!("`{}`", proposal.id)),
        )])
        .into(),
    );

    let text = format!("{} — {}", status_plain(proposal.status), mrkdwn(&summary));
    OutgoingMessage { text, blocks }
}

fn status_plain(status: Status) -> &'static str {
    match status {
        Status::Pending => "Approval needed",
        Status::Approved => "Approved",
        Status::Rejected => "Rejected",
        Status::Expired => "Expired",
        Status::Cancelled => "Cancelled",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::sandbox::blockkit;

    fn proposal(summary: &str, rationale: &str, texts: &[String]) -> Proposal {
        let changes: Vec<Value> = texts
            .iter()
            .map(|t| json!({"path": t, "before": t, "after": {"nested": t}}))
            .collect();
        let evidence: Vec<Value> = texts
            .iter()
            .take(3)
            .map(|t| json!({"label": t, "excerpt": t}))
            .collect();
        let value = json!({
            "id": "prop_01kaf3yq5x8m2n4p6r8t0v2w4y", "agent": "revops-crm", "status": "pending",
            "action": "crm.opportunity.update", "summary": summary, "rationale": rationale,
            "target": {"system": texts.first().cloned().unwrap_or_default(), "type": "T", "id": summary,
                       "url": "https://evil.example/<!here>"},
            "changes": changes, "params": {}, "evidence": evidence, "data_classes": [],
            "requested_by": rationale, "metadata": {},
            "expires_at": "2026-11-21T17:00:00Z",
            "verdict": {"outcome": "needs_review", "rules": ["r"], "reasons": texts, "route": ["finance"],
                        "quorum": {"approvals": 1, "each_role": false}, "step_up": "none"},
            "created_at": "2026-11-21T09:00:00Z", "updated_at": "2026-11-21T09:00:00Z"
        });
        serde_json::from_value(value).unwrap()
    }

    /// Every mrkdwn text of the card.
    fn mrkdwn_texts(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.get("type") == Some(&json!("mrkdwn"))
                    && let Some(Value::String(text)) = map.get("text")
                {
                    out.push(text.clone());
                }
                map.values().for_each(|v| mrkdwn_texts(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| mrkdwn_texts(v, out)),
            _ => {}
        }
    }

    fn hostile() -> impl Strategy<Value = String> {
        prop::string::string_regex(r"([&<>*_~`|!@#^]|<!channel>|<!here>|<@U0FIN001>|<!subteam\^S1>|<https://evil\.example\|bank>|&amp;|[a-zé ]){0,400}").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_proposal_renders_within_limits_and_without_live_control_sequences(
            summary in hostile(),
            rationale in prop::collection::vec(hostile(), 1..12).prop_map(|parts| parts.concat()),
            texts in prop::collection::vec(hostile(), 0..30),
        ) {
            let p = proposal(if summary.is_empty() { "s" } else { &summary }, &rationale, &texts);
            let card = render(&p, &CardContext { owner: None, votes: &[] });
            let blocks = serde_json::to_value(&card.blocks).unwrap();
            prop_assert_eq!(blockkit::message_blocks(&blocks), Ok(()));
            let mut texts = vec![card.text.clone()];
            mrkdwn_texts(&blocks, &mut texts);
            for text in texts {
                // The only control sequence on an unvoted card is countersign's own date.
                for (at, _) in text.match_indices('<') {
                    prop_assert!(text[at..].starts_with("<!date^"), "live sequence in {text:?}");
                }
            }
        }
    }

    #[test]
    fn a_long_rationale_full_of_ampersands_still_fits() {
        let p = proposal("s", &"R&D ".repeat(625), &[]);
        let card = render(
            &p,
            &CardContext {
                owner: None,
                votes: &[],
            },
        );
        let blocks = serde_json::to_value(&card.blocks).unwrap();
        assert_eq!(blockkit::message_blocks(&blocks), Ok(()));
    }
}
