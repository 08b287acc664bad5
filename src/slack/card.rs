//! The approval card: what a reviewer sees in the role channel (the messages around it —
//! thread replies, DMs — are in `messages`). Every piece of agent-supplied
//! text is escaped for mrkdwn and cut to Slack's limits here, so a card can never be refused
//! by Slack or smuggle a mention.

use serde_json::Value;
use slack_morphism::prelude::*;

use super::client::OutgoingMessage;
use super::diff;
use super::escape::{fit, inert, mrkdwn, truncate};
use super::rich::{self, Paragraph, RichText};
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
/// The rationale's share of a card.
const RATIONALE_CHARS: usize = 2800;

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

/// A time every reader sees in their own time zone.
pub fn slack_date(at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        at.timestamp(),
        at.format("%Y-%m-%d %H:%M UTC")
    )
}

/// The status line at the top of the card.
pub(super) fn status_line(proposal: &Proposal) -> String {
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
    let summary = truncate(&content.summary, 150);
    let currency = content.params.get("currency").and_then(Value::as_str);
    let badges = risk_badges(proposal, ctx.catalog);

    let blocks: Vec<SlackBlock> = [
        Some(SlackHeaderBlock::new(pt!(summary.clone())).into()),
        Some(section(card_status(proposal, ctx))),
        Some(who_block(proposal, ctx)),
        target_block(proposal),
        (!badges.is_empty()).then(|| context(badges.join("   "))),
        changes_block(proposal, currency),
        rationale_block(proposal),
        evidence_block(proposal),
        Some(why_block(proposal)),
        votes_block(proposal, ctx),
        buttons_block(proposal, ctx),
        Some(footer_block(proposal)),
    ]
    .into_iter()
    .flatten()
    .collect();

    // The notification fallback is mrkdwn: the summary goes in made inert.
    let text = format!("{} — {}", status_plain(proposal.status), inert(&summary));
    OutgoingMessage { text, blocks }
}

/// The status line, with the latest SLA event while the proposal waits.
fn card_status(proposal: &Proposal, ctx: &CardContext<'_>) -> String {
    let mut status = status_line(proposal);
    if proposal.status == Status::Pending
        && let Some((note, at)) = &ctx.sla_note
    {
        status.push_str(&format!(" · :rotating_light: {note} {}", slack_date(*at)));
    }
    status
}

/// Who: the agent, its accountable owner, and the human it acts for.
fn who_block(proposal: &Proposal, ctx: &CardContext<'_>) -> SlackBlock {
    let content = &proposal.content;
    let mut who = Paragraph::new()
        .bold("Agent")
        .text(" ")
        .code(proposal.agent.as_str())
        .text(" proposes ")
        .code(content.action.as_str());
    if let Some(owner) = ctx.owner {
        who = who.text(" · owner ").user(owner);
    }
    match (ctx.requester, &content.requested_by) {
        (Some(user), _) => who = who.text(" · for ").user(user),
        (None, Some(text)) => who = who.text(" · for ").text(truncate(text, 80)),
        (None, None) => {}
    }
    rich::block(who)
}

fn target_block(proposal: &Proposal) -> Option<SlackBlock> {
    let target = proposal.content.target.as_ref()?;
    let mut line = Paragraph::new()
        .bold("Target")
        .text(" ")
        .text(truncate(&target.system, 80))
        .text(" ")
        .text(truncate(&target.kind, 80))
        .text(" ")
        .code(truncate(&target.id, 120));
    // The link's real host, always visible: a label can lie, the host cannot.
    if let Some(url) = target.url.as_deref().and_then(|u| url::Url::parse(u).ok())
        && let Some(host) = url.host_str()
    {
        line = line
            .text(" · ")
            .link(url.as_str(), &format!("open on {host}"));
    }
    Some(rich::block(line))
}

/// The first [`CHANGES_SHOWN`] changes as diff lines, and how many more there are.
fn changes_block(proposal: &Proposal, currency: Option<&str>) -> Option<SlackBlock> {
    let changes = &proposal.content.changes;
    if changes.is_empty() {
        return None;
    }
    let heading = if changes.len() == 1 {
        "Change".to_owned()
    } else {
        format!("Changes ({})", changes.len())
    };
    let mut lines = Paragraph::new().bold(heading);
    for change in changes.iter().take(CHANGES_SHOWN) {
        lines = lines.newline().append(diff::line(change, currency));
    }
    let hidden = changes.len().saturating_sub(CHANGES_SHOWN);
    if hidden > 0 {
        lines = lines
            .newline()
            .text(format!("…and {hidden} more (see all {})", changes.len()));
    }
    Some(rich::block(lines))
}

fn rationale_block(proposal: &Proposal) -> Option<SlackBlock> {
    let rationale = proposal.content.rationale.as_ref()?;
    Some(rich::block(
        Paragraph::new()
            .bold("Why the agent wants this")
            .newline()
            .text(truncate(rationale, RATIONALE_CHARS)),
    ))
}

/// The first [`EVIDENCE_SHOWN`] items: label, the link's host and the excerpt, quoted.
fn evidence_block(proposal: &Proposal) -> Option<SlackBlock> {
    let items = &proposal.content.evidence;
    if items.is_empty() {
        return None;
    }
    let mut evidence = RichText::new();
    let mut heading = Some(Paragraph::new().bold("Evidence"));
    for e in items.iter().take(EVIDENCE_SHOWN) {
        let mut line = heading
            .take()
            .map_or_else(Paragraph::new, Paragraph::newline);
        line = line.text("• ").bold(truncate(&e.label, 120));
        if let Some(host) = e
            .url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            line = line.text(format!(" ({host})"));
        }
        evidence = evidence.paragraph(line);
        if let Some(excerpt) = &e.excerpt {
            evidence = evidence.quote(Paragraph::new().text(truncate(excerpt, 300)));
        }
    }
    if items.len() > EVIDENCE_SHOWN {
        evidence = evidence.paragraph(
            Paragraph::new().text(format!("…and {} more", items.len() - EVIDENCE_SHOWN)),
        );
    }
    Some(evidence.block())
}

/// Why this needs you: the rules, the quorum, the step-up, the deadline.
fn why_block(proposal: &Proposal) -> SlackBlock {
    let verdict = &proposal.content.verdict;
    let mut why = Paragraph::new().bold("Why this needs you");
    for reason in &verdict.reasons {
        why = why.newline().text(format!("• {}", truncate(reason, 300)));
    }
    why = why
        .newline()
        .bold("Quorum")
        .text(format!(": {}", quorum_text(verdict)));
    if let Some(step_up) = step_up_text(verdict.step_up) {
        why = why.newline().bold("Step-up").text(step_up);
    }
    let sla_due = verdict
        .sla
        .as_deref()
        .and_then(|sla| humantime::parse_duration(sla).ok())
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| proposal.created_at + d);
    if let Some(due) = sla_due {
        why = why.newline().bold("Decide by").text(" ").date(due);
    }
    if let Some(expires) = proposal.content.expires_at {
        why = why.newline().bold("Expires").text(" ").date(expires);
    }
    rich::block(why)
}

/// How many approvals, from which roles: "one each" when every role must approve.
fn quorum_text(verdict: &crate::domain::Verdict) -> String {
    let approvals = verdict.quorum.approvals;
    if verdict.quorum.each_role && verdict.route.len() > 1 {
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
    }
}

/// What an approver must add to their click, after "Step-up"; `None` when nothing.
fn step_up_text(step_up: StepUp) -> Option<&'static str> {
    match step_up {
        StepUp::None => None,
        StepUp::Confirm => Some(": typed confirmation of the value"),
        StepUp::Totp => Some(": a code from the approver's authenticator (TOTP)"),
    }
}

/// The votes so far and, while pending, what is still needed; nothing once decided without
/// votes.
fn votes_block(proposal: &Proposal, ctx: &CardContext<'_>) -> Option<SlackBlock> {
    let pending = proposal.status == Status::Pending;
    if ctx.votes.is_empty() && !pending {
        return None;
    }
    let verdict = &proposal.content.verdict;
    let tally = tally(&verdict.quorum, &verdict.route, ctx.votes);
    let mut lines = Paragraph::new().bold("Votes");
    for (vote, role) in ctx.votes.iter().zip(&tally.roles) {
        lines = lines.newline().append(vote_line(vote, role.as_deref()));
    }
    if pending {
        lines = lines
            .newline()
            .text(format!("Still needed: {}", tally.shortfall.describe()));
    }
    Some(rich::block(lines))
}

/// Approve and Reject while pending; a link to every change when the card shows only some.
fn buttons_block(proposal: &Proposal, ctx: &CardContext<'_>) -> Option<SlackBlock> {
    let changes = proposal.content.changes.len();
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
    if changes > CHANGES_SHOWN
        && let Some(url) = ctx.full_diff.and_then(|u| url::Url::parse(u).ok())
    {
        buttons.push(
            SlackBlockButtonElement::new(pt!(format!("See all {changes} changes")))
                .with_action_id(FULL_DIFF.into())
                .with_url(url)
                .into(),
        );
    }
    if buttons.is_empty() {
        return None;
    }
    Some(
        SlackActionsBlock::new(buttons)
            .with_block_id(DECIDE_BLOCK.into())
            .into(),
    )
}

/// The proposal id and the rules that matched, for whoever has to trace the card back.
/// The proposal's id, the short form of the digest an approval is bound to (what the agent's
/// outcome must name), and the rules that routed it.
fn footer_block(proposal: &Proposal) -> SlackBlock {
    let rules = proposal.content.verdict.rules.join(", ");
    let digest = crate::domain::ActionDigest::of(&proposal.content);
    let text = format!(
        "{} · action sha256:{}… · rules: {rules}",
        proposal.id,
        digest.short()
    );
    SlackContextBlock::new(vec![SlackContextBlockElement::Plain(
        SlackBlockPlainText::new(truncate(&text, 2000)),
    )])
    .into()
}

/// A vote as a line of the card: who, for which role, when, and a rejection's reason (the
/// reviewer's words, literal).
pub(super) fn vote_line(vote: &Vote, role: Option<&str>) -> Paragraph {
    let role = role.map(|r| format!(" for {r}")).unwrap_or_default();
    match vote.ballot {
        Ballot::Approve => Paragraph::new()
            .emoji("white_check_mark")
            .text(" ")
            .user(&vote.voter)
            .text(format!(" approved{role} "))
            .date(vote.at),
        Ballot::Reject => Paragraph::new()
            .emoji("x")
            .text(" ")
            .user(&vote.voter)
            .text(" rejected ")
            .date(vote.at)
            .text(": ")
            .text(truncate(vote.reason.as_deref().unwrap_or(""), 2000)),
    }
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
        // A fixed seed: the same cases on every run, so CI's verdict is not luck.
        #![proptest_config(ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_ca2d),
            ..ProptestConfig::default()
        })]
        #[test]
        fn any_proposal_renders_within_limits_and_agent_text_never_styles_or_mentions(
            summary in hostile(),
            rationale in prop::collection::vec(hostile(), 1..12).prop_map(|parts| parts.concat()),
            texts in prop::collection::vec(hostile(), 0..30),
        ) {
            // Every agent-written string carries a sentinel, to find where it ended up.
            let mark = |t: &str| format!("§{t}");
            let texts: Vec<String> = texts.iter().map(|t| mark(t)).collect();
            let p = proposal(&mark(&summary), &mark(&rationale), &texts);
            let card = render(&p, &CardContext::default());
            let blocks = serde_json::to_value(&card.blocks).unwrap();
            prop_assert_eq!(blockkit::message_blocks(&blocks), Ok(()));
            // No agent text in any mrkdwn field: there, `*`, `_`, `~` and backticks would style.
            let mut texts = Vec::new();
            mrkdwn_texts(&blocks, &mut texts);
            for text in &texts {
                prop_assert!(!text.contains('§'), "agent text in mrkdwn: {text:?}");
            }
            // The notification fallback is mrkdwn: there the agent's summary is inert.
            let (_, summary_shown) = card.text.split_once(" — ").unwrap();
            prop_assert!(
                !summary_shown.contains(['*', '_', '~', '`', '<', '>']),
                "live formatting in the fallback: {:?}", card.text
            );
            // Everywhere else agent text is a literal rich_text run or plain_text.
            let mut carriers = Vec::new();
            agent_text_carriers(&blocks, &mut carriers);
            for carrier in carriers {
                prop_assert!(
                    carrier == "text" || carrier == "plain_text" || carrier == "link",
                    "agent text in a {carrier} element"
                );
            }
        }
    }

    /// The `type` of every element whose `text` holds the sentinel.
    fn agent_text_carriers(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map
                    .get("text")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.contains('§'))
                {
                    out.push(
                        map.get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_owned(),
                    );
                }
                map.values().for_each(|v| agent_text_carriers(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| agent_text_carriers(v, out)),
            _ => {}
        }
    }

    #[test]
    fn a_long_rationale_full_of_ampersands_still_fits() {
        let p = proposal("s", &"R&D ".repeat(625), &[]);
        let card = render(&p, &CardContext::default());
        let blocks = serde_json::to_value(&card.blocks).unwrap();
        assert_eq!(blockkit::message_blocks(&blocks), Ok(()));
    }

    #[test]
    fn the_footer_shows_the_digest_the_approval_is_bound_to() {
        let p = proposal("s", "r", &[]);
        let card = render(&p, &CardContext::default());
        let text = serde_json::to_value(&card.blocks).unwrap().to_string();
        let digest = crate::domain::ActionDigest::of(&p.content);
        assert!(
            text.contains(&format!("action sha256:{}…", digest.short())),
            "{text}"
        );
    }
}
