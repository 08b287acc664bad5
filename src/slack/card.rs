//! The approval card: what a reviewer sees in the role channel. Every piece of agent-supplied
//! text is escaped for mrkdwn and cut to Slack's limits here, so a card can never be refused
//! by Slack or smuggle a mention.

use serde_json::Value;
use slack_morphism::prelude::*;

use super::client::OutgoingMessage;
use super::diff;
use super::escape::{fit, mrkdwn, truncate};
use crate::domain::vote::tally;
use crate::domain::{Ballot, DataClass, Proposal, Status, StepUp, Vote};
use crate::manifest::{CatalogEntry, Impact};

/// Action ids of the card's buttons; the interaction handler matches on them.
pub const APPROVE: &str = "approve";
pub const REJECT: &str = "reject";
pub const FULL_DIFF: &str = "full_diff";
/// Block id of the buttons.
pub const DECIDE_BLOCK: &str = "decide";

/// Diff lines shown on the card before "…and N more".
const CHANGES_SHOWN: usize = 8;
/// Evidence items shown.
const EVIDENCE_SHOWN: usize = 3;

/// What the card needs beyond the proposal.
#[derive(Default)]
pub struct CardContext<'a> {
    /// The agent's accountable human (a Slack user id from the manifest: trusted).
    pub owner: Option<&'a str>,
    /// The Slack user `requested_by` resolved to (looked up by countersign, not taken from the
    /// agent's text); only then is the requester shown as a mention.
    pub requester: Option<&'a str>,
    /// The action's catalog entry, for the risk badges.
    pub catalog: Option<&'a CatalogEntry>,
    /// Votes so far, oldest first.
    pub votes: &'a [Vote],
    /// A signed link to every change (`/p/{id}?…`).
    pub full_diff: Option<&'a str>,
    /// The latest SLA event while pending: "reminded" or "escalated (level N)", and when.
    pub sla_note: Option<(String, chrono::DateTime<chrono::Utc>)>,
}

/// The DM to an agent's owner when the agent could not be told of a decision. The URL and the
/// error come from the agent's manifest or proposal and the receiver's answer: escaped.
pub fn callback_failed(proposal: &Proposal, event: &str, url: &str, error: &str) -> String {
    format!(
        ":warning: countersign could not tell agent `{}` that *{}* was {}: the callback to `{}` failed ({}). \
         It will not be retried; an operator can redeliver it: `POST /v1/admin/deliveries/{}/redeliver`.",
        mrkdwn(proposal.agent.as_str()),
        mrkdwn(&truncate(&proposal.content.summary, 150)),
        proposal.status.as_str(),
        mrkdwn(&truncate(url, 200)),
        mrkdwn(&truncate(error, 300)),
        mrkdwn(event)
    )
}

/// A time every reader sees in their own time zone.
pub fn slack_date(at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        at.timestamp(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

/// The status line at the top of the card.
fn status_line(proposal: &Proposal) -> String {
    let decided = proposal.decision.as_ref().map(|d| {
        let who = match d.by.kind {
            crate::domain::ActorKind::Reviewer => format!("<@{}>", d.by.id),
            _ => mrkdwn(&d.by.audit_name()),
        };
        format!(" by {who} {}", slack_date(d.at))
    });
    let decided = decided.unwrap_or_default();
    match proposal.status {
        Status::Pending => ":hourglass_flowing_sand: *Pending review*".to_owned(),
        Status::Approved => format!(":white_check_mark: *Approved*{decided}"),
        Status::Rejected => format!(":x: *Rejected*{decided}"),
        Status::Expired => ":hourglass: *Expired*: nobody decided in time".to_owned(),
        Status::Cancelled => format!(":no_entry_sign: *Cancelled*{decided}"),
    }
}

/// Badges for what makes the action risky: from the catalog (impact, reversibility, data) and
/// the proposal (data classes, money, external sends, recipients).
fn risk_badges(proposal: &Proposal, catalog: Option<&CatalogEntry>) -> Vec<String> {
    let content = &proposal.content;
    let params = &content.params;
    let mut badges = Vec::new();
    if catalog.is_some_and(|c| c.impact == Impact::High) {
        badges.push(":rotating_light: high impact".to_owned());
    }
    let classes: Vec<DataClass> = content
        .data_classes
        .iter()
        .chain(catalog.map(|c| c.data.as_slice()).unwrap_or_default())
        .copied()
        .collect();
    if classes.contains(&DataClass::Pii) {
        badges.push(":lock: PII".into());
    }
    if classes.contains(&DataClass::Health) {
        badges.push(":lock: health data".into());
    }
    let amount = params.get("amount").and_then(Value::as_f64);
    if classes.contains(&DataClass::Financial) || amount.is_some() {
        badges.push(":moneybag: money".into());
    }
    if catalog.is_some_and(|c| !c.reversible) {
        badges.push(":warning: irreversible".into());
    }
    if params.get("audience").and_then(Value::as_str) == Some("external") {
        badges.push(":email: external send".into());
    }
    let recipients = params
        .get("recipient_count")
        .and_then(Value::as_u64)
        .or_else(|| {
            params
                .get("recipients")
                .and_then(Value::as_array)
                .map(|r| r.len() as u64)
        });
    if let Some(n) = recipients {
        badges.push(format!(
            ":busts_in_silhouette: {n} recipient{}",
            if n == 1 { "" } else { "s" }
        ));
    }
    badges
}

/// A mrkdwn section, cut to Slack's limit.
pub(super) fn section(text: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(md!(fit(&text, 3000)))
        .into()
}

/// A mrkdwn context line, cut to Slack's limit.
pub(super) fn context(text: String) -> SlackBlock {
    SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
        SlackBlockMarkDownText::new(fit(&text, 3000)),
    )])
    .into()
}

/// Renders the card for `proposal` as it stands.
pub fn render(proposal: &Proposal, ctx: &CardContext<'_>) -> OutgoingMessage {
    let content = &proposal.content;
    let verdict = &content.verdict;
    let summary = truncate(&content.summary, 150);
    let currency = content.params.get("currency").and_then(Value::as_str);
    let mut blocks: Vec<SlackBlock> = Vec::new();

    blocks.push(SlackHeaderBlock::new(pt!(summary.clone())).into());
    let mut status = status_line(proposal);
    if proposal.status == Status::Pending
        && let Some((note, at)) = &ctx.sla_note
    {
        status.push_str(&format!(" · :rotating_light: {note} {}", slack_date(*at)));
    }
    blocks.push(section(status));

    // Who: the agent, its accountable owner, and the human it acts for.
    let mut who = format!("*Agent* `{}` proposes `{}`", proposal.agent, content.action);
    if let Some(owner) = ctx.owner {
        who.push_str(&format!(" · owner <@{owner}>"));
    }
    match (ctx.requester, &content.requested_by) {
        (Some(user), _) => who.push_str(&format!(" · for <@{user}>")),
        (None, Some(text)) => who.push_str(&format!(" · for {}", mrkdwn(&truncate(text, 80)))),
        (None, None) => {}
    }
    blocks.push(section(who));

    if let Some(target) = &content.target {
        let mut line = format!(
            "*Target* {} {} `{}`",
            mrkdwn(&truncate(&target.system, 80)),
            mrkdwn(&truncate(&target.kind, 80)),
            mrkdwn(&truncate(&target.id, 120)).replace('`', "'")
        );
        // The link's real host, always visible: a label can lie, the host cannot.
        if let Some(url) = target.url.as_deref().and_then(|u| url::Url::parse(u).ok())
            && let Some(host) = url.host_str()
        {
            line.push_str(&format!(
                " · <{}|open on {}>",
                mrkdwn(url.as_str()).replace('|', "%7C"),
                mrkdwn(host)
            ));
        }
        blocks.push(section(line));
    }

    let badges = risk_badges(proposal, ctx.catalog);
    if !badges.is_empty() {
        blocks.push(context(badges.join("   ")));
    }

    if !content.changes.is_empty() {
        let mut lines: Vec<String> = content
            .changes
            .iter()
            .take(CHANGES_SHOWN)
            .map(|c| diff::line(c, currency))
            .collect();
        let hidden = content.changes.len().saturating_sub(CHANGES_SHOWN);
        if hidden > 0 {
            lines.push(format!(
                "…and {hidden} more (see all {})",
                content.changes.len()
            ));
        }
        let heading = if content.changes.len() == 1 {
            "*Change*".to_owned()
        } else {
            format!("*Changes* ({})", content.changes.len())
        };
        blocks.push(section(format!("{heading}\n{}", lines.join("\n"))));
    }

    if let Some(rationale) = &content.rationale {
        blocks.push(section(format!(
            "*Why the agent wants this*\n{}",
            mrkdwn(rationale)
        )));
    }

    if !content.evidence.is_empty() {
        let mut lines: Vec<String> = content
            .evidence
            .iter()
            .take(EVIDENCE_SHOWN)
            .map(|e| {
                let mut line = format!("• *{}*", mrkdwn(&truncate(&e.label, 120)));
                if let Some(host) = e
                    .url
                    .as_deref()
                    .and_then(|u| url::Url::parse(u).ok())
                    .and_then(|u| u.host_str().map(str::to_owned))
                {
                    line.push_str(&format!(" ({})", mrkdwn(&host)));
                }
                if let Some(excerpt) = &e.excerpt {
                    line.push_str(&format!(
                        "\n> {}",
                        mrkdwn(&truncate(excerpt, 300)).replace('\n', " ")
                    ));
                }
                line
            })
            .collect();
        if content.evidence.len() > EVIDENCE_SHOWN {
            lines.push(format!(
                "…and {} more",
                content.evidence.len() - EVIDENCE_SHOWN
            ));
        }
        blocks.push(section(format!("*Evidence*\n{}", lines.join("\n"))));
    }

    // Why this needs you: the rules, the quorum, the step-up, the deadline.
    let mut why: Vec<String> = verdict
        .reasons
        .iter()
        .map(|r| format!("• {}", mrkdwn(r)))
        .collect();
    let approvals = verdict.quorum.approvals;
    let quorum = if verdict.quorum.each_role && verdict.route.len() > 1 {
        format!(
            "{approvals} approvals: one each from {}",
            verdict.route.join(" and ")
        )
    } else {
        format!(
            "{approvals} approval{} from {}",
            if approvals == 1 { "" } else { "s" },
            verdict.route.join(" or ")
        )
    };
    why.push(format!("*Quorum*: {quorum}"));
    match verdict.step_up {
        StepUp::None => {}
        StepUp::Confirm => why.push("*Step-up*: typed confirmation of the value".into()),
        StepUp::Totp => {
            why.push("*Step-up*: a code from the approver's authenticator (TOTP)".into())
        }
    }
    let sla_due = verdict
        .sla
        .as_deref()
        .and_then(|sla| humantime::parse_duration(sla).ok())
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| proposal.created_at + d);
    if let Some(due) = sla_due {
        why.push(format!("*Decide by* {}", slack_date(due)));
    }
    if let Some(expires) = content.expires_at {
        why.push(format!("*Expires* {}", slack_date(expires)));
    }
    blocks.push(section(format!("*Why this needs you*\n{}", why.join("\n"))));

    if !ctx.votes.is_empty() || proposal.status == Status::Pending {
        let tally = tally(&verdict.quorum, &verdict.route, ctx.votes);
        let mut lines: Vec<String> = ctx
            .votes
            .iter()
            .zip(&tally.roles)
            .map(|(vote, role)| vote_reply(vote, role.as_deref()))
            .collect();
        if proposal.status == Status::Pending {
            lines.push(format!("Still needed: {}", tally.shortfall.describe()));
        }
        blocks.push(section(format!("*Votes*\n{}", lines.join("\n"))));
    }

    let mut buttons: Vec<SlackActionBlockElement> = Vec::new();
    if proposal.status == Status::Pending {
        let value = proposal.id.to_string();
        buttons.push(
            SlackBlockButtonElement::new(pt!("Approve"))
                .with_action_id(APPROVE.into())
                .with_style(SlackBlockButtonStyle::Primary)
                .with_value(value.clone())
                .into(),
        );
        buttons.push(
            SlackBlockButtonElement::new(pt!("Reject"))
                .with_action_id(REJECT.into())
                .with_style(SlackBlockButtonStyle::Danger)
                .with_value(value)
                .into(),
        );
    }
    if content.changes.len() > CHANGES_SHOWN
        && let Some(url) = ctx.full_diff.and_then(|u| url::Url::parse(u).ok())
    {
        buttons.push(
            SlackBlockButtonElement::new(pt!(format!("See all {} changes", content.changes.len())))
                .with_action_id(FULL_DIFF.into())
                .with_url(url)
                .into(),
        );
    }
    if !buttons.is_empty() {
        blocks.push(
            SlackActionsBlock::new(buttons)
                .with_block_id(DECIDE_BLOCK.into())
                .into(),
        );
    }
    blocks.push(context(format!(
        "`{}` · rules: {}",
        proposal.id,
        verdict.rules.join(", ")
    )));

    let text = format!("{} — {}", status_plain(proposal.status), mrkdwn(&summary));
    OutgoingMessage { text, blocks }
}

/// The thread reply that records a vote under the card.
pub fn vote_reply(vote: &Vote, role: Option<&str>) -> String {
    let role = role.map(|r| format!(" for {r}")).unwrap_or_default();
    match vote.ballot {
        Ballot::Approve => format!(
            ":white_check_mark: <@{}> approved{role} {}",
            vote.voter,
            slack_date(vote.at)
        ),
        Ballot::Reject => format!(
            ":x: <@{}> rejected {}: {}",
            vote.voter,
            slack_date(vote.at),
            mrkdwn(&truncate(vote.reason.as_deref().unwrap_or(""), 2000))
        ),
    }
}

/// The DM to the person the agent acted for, once the proposal is decided.
pub fn outcome_notice(proposal: &Proposal) -> String {
    let summary = mrkdwn(&truncate(&proposal.content.summary, 150));
    let reason = proposal
        .decision
        .as_ref()
        .and_then(|d| d.reason.as_deref())
        .map(|r| format!("\n> {}", mrkdwn(&truncate(r, 1000)).replace('\n', " ")))
        .unwrap_or_default();
    format!(
        "{} `{}` asked on your behalf: *{summary}*{reason}",
        status_line(proposal),
        proposal.agent
    )
}

/// An SLA reminder in the card's thread.
pub fn reminder(proposal: &Proposal, mentions: &[String]) -> String {
    let who = if mentions.is_empty() {
        "Approvers".to_owned()
    } else {
        mentions.join(" ")
    };
    format!(
        ":bell: Reminder: {who}, *{}* is still waiting for a decision.",
        mrkdwn(&truncate(&proposal.content.summary, 150))
    )
}

/// An escalation rung, in the card's thread, a DM and (for a role) its channel.
pub fn escalation(proposal: &Proposal, level: usize, label: &str, mentions: &[String]) -> String {
    format!(
        ":rotating_light: Escalation {} ({}): {} — *{}* from `{}` has not been decided in time (`{}`).",
        level + 1,
        mrkdwn(label),
        if mentions.is_empty() {
            "please take a look".to_owned()
        } else {
            format!("{} please take a look", mentions.join(" "))
        },
        mrkdwn(&truncate(&proposal.content.summary, 150)),
        proposal.agent,
        proposal.id
    )
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
            let card = render(&p, &CardContext::default());
            let blocks = serde_json::to_value(&card.blocks).unwrap();
            prop_assert_eq!(blockkit::message_blocks(&blocks), Ok(()));
            let mut texts = vec![card.text.clone()];
            mrkdwn_texts(&blocks, &mut texts);
            for text in texts {
                // The only control sequences on an unvoted card are countersign's own: dates,
                // and the target's link, labelled with its real host.
                for (at, _) in text.match_indices('<') {
                    let rest = &text[at..];
                    let ours = rest.starts_with("<!date^")
                        || (rest.starts_with("<https://evil.example/") && rest.contains("|open on evil.example>"));
                    prop_assert!(ours, "live sequence in {text:?}");
                }
            }
        }
    }

    #[test]
    fn a_long_rationale_full_of_ampersands_still_fits() {
        let p = proposal("s", &"R&D ".repeat(625), &[]);
        let card = render(&p, &CardContext::default());
        let blocks = serde_json::to_value(&card.blocks).unwrap();
        assert_eq!(blockkit::message_blocks(&blocks), Ok(()));
    }
}
