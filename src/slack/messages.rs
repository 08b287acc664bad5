//! The messages around a card: the thread replies (votes, reminders, escalations) and the DMs
//! (the requester's outcome, an owner's failed callback). Each is rich text, the agent's words
//! literal runs, beside a mrkdwn notification fallback in which they are made inert.

use super::card::{slack_date, status_line, vote_line};
use super::client::OutgoingMessage;
use super::escape::{inert, truncate};
use super::rich::{self, Paragraph};
use crate::domain::{Ballot, Proposal, Status, Vote};

/// A message whose body is rich text, with the mrkdwn notification fallback `text` beside it.
fn rich_message(text: String, body: Paragraph) -> OutgoingMessage {
    OutgoingMessage {
        text,
        blocks: vec![rich::block(body)],
    }
}

/// The thread reply that records a vote under the card.
pub fn vote_reply(vote: &Vote, role: Option<&str>) -> OutgoingMessage {
    let role_text = role.map(|r| format!(" for {r}")).unwrap_or_default();
    let text = match vote.ballot {
        Ballot::Approve => format!(
            ":white_check_mark: <@{}> approved{role_text} {}",
            vote.voter,
            slack_date(vote.at)
        ),
        Ballot::Reject => format!(
            ":x: <@{}> rejected {}: {}",
            vote.voter,
            slack_date(vote.at),
            inert(&truncate(vote.reason.as_deref().unwrap_or(""), 2000))
        ),
    };
    rich_message(text, vote_line(vote, role))
}

/// The DM to the person the agent acted for, once the proposal is decided.
pub fn outcome_notice(proposal: &Proposal) -> OutgoingMessage {
    let summary = truncate(&proposal.content.summary, 150);
    let reason = proposal
        .decision
        .as_ref()
        .and_then(|d| d.reason.as_deref())
        .map(|r| truncate(r, 1000).replace('\n', " "));
    let text = format!(
        "{} `{}` asked on your behalf: {}{}",
        status_line(proposal),
        proposal.agent,
        inert(&summary),
        reason
            .as_deref()
            .map(|r| format!("\n> {}", inert(r)))
            .unwrap_or_default()
    );
    let mut body = status_paragraph(proposal)
        .text(" ")
        .code(proposal.agent.as_str())
        .text(" asked on your behalf: ")
        .bold(summary);
    if let Some(reason) = reason {
        body = body.newline().text(format!("> {reason}"));
    }
    rich_message(text, body)
}

/// `<@U…>` and `<!subteam^S…>`, as countersign writes mentions, made rich-text elements.
fn mention(paragraph: Paragraph, mention: &str) -> Paragraph {
    if let Some(user) = mention.strip_prefix("<@").and_then(|m| m.strip_suffix('>')) {
        paragraph.user(user)
    } else if let Some(group) = mention
        .strip_prefix("<!subteam^")
        .and_then(|m| m.strip_suffix('>'))
    {
        paragraph.usergroup(group)
    } else {
        paragraph.text(mention)
    }
}

fn mentions(mut paragraph: Paragraph, all: &[String]) -> Paragraph {
    for (i, m) in all.iter().enumerate() {
        if i > 0 {
            paragraph = paragraph.text(" ");
        }
        paragraph = mention(paragraph, m);
    }
    paragraph
}

/// An SLA reminder in the card's thread.
pub fn reminder(proposal: &Proposal, who: &[String]) -> OutgoingMessage {
    let summary = truncate(&proposal.content.summary, 150);
    let named = if who.is_empty() {
        "Approvers".to_owned()
    } else {
        who.join(" ")
    };
    let text = format!(
        ":bell: Reminder: {named}, {} is still waiting for a decision.",
        inert(&summary)
    );
    let mut body = Paragraph::new().emoji("bell").text(" Reminder: ");
    body = if who.is_empty() {
        body.text("Approvers")
    } else {
        mentions(body, who)
    };
    let body = body
        .text(", ")
        .bold(summary)
        .text(" is still waiting for a decision.");
    rich_message(text, body)
}

/// An escalation rung, in the card's thread, a DM and (for a role) its channel. `label` is
/// countersign's (a rung's target, which may be a mention).
pub fn escalation(
    proposal: &Proposal,
    level: usize,
    label: &str,
    who: &[String],
) -> OutgoingMessage {
    let summary = truncate(&proposal.content.summary, 150);
    let asked = if who.is_empty() {
        "please take a look".to_owned()
    } else {
        format!("{} please take a look", who.join(" "))
    };
    let text = format!(
        ":rotating_light: Escalation {} ({}): {asked} — {} from `{}` has not been decided in time (`{}`).",
        level + 1,
        label,
        inert(&summary),
        proposal.agent,
        proposal.id
    );
    let body = Paragraph::new()
        .emoji("rotating_light")
        .text(format!(" Escalation {} (", level + 1));
    let body = mention(body, label).text("): ");
    let body = if who.is_empty() {
        body
    } else {
        mentions(body, who).text(" ")
    };
    let body = body
        .text("please take a look — ")
        .bold(summary)
        .text(" from ")
        .code(proposal.agent.as_str())
        .text(" has not been decided in time (")
        .code(proposal.id.as_str())
        .text(").");
    rich_message(text, body)
}

/// [`status_line`] as rich text.
fn status_paragraph(proposal: &Proposal) -> Paragraph {
    let decided = |p: Paragraph| match &proposal.decision {
        Some(d) => {
            let p = p.text(" by ");
            let p = match d.by.kind {
                crate::domain::ActorKind::Reviewer => p.user(&d.by.id),
                _ => p.text(d.by.audit_name()),
            };
            p.text(" ").date(d.at)
        }
        None => p,
    };
    let base = Paragraph::new();
    match proposal.status {
        Status::Pending => base
            .emoji("hourglass_flowing_sand")
            .text(" ")
            .bold("Pending review"),
        Status::Approved => decided(base.emoji("white_check_mark").text(" ").bold("Approved")),
        Status::Rejected => decided(base.emoji("x").text(" ").bold("Rejected")),
        Status::Expired => base
            .emoji("hourglass")
            .text(" ")
            .bold("Expired")
            .text(": nobody decided in time"),
        Status::Cancelled => decided(base.emoji("no_entry_sign").text(" ").bold("Cancelled")),
    }
}

/// The DM to an agent's owner when the agent could not be told of a decision. The URL and the
/// error come from the agent's manifest or proposal and the receiver's answer: literal.
pub fn callback_failed(
    proposal: &Proposal,
    event: &str,
    url: &str,
    error: &str,
) -> OutgoingMessage {
    let summary = truncate(&proposal.content.summary, 150);
    let (url, error) = (truncate(url, 200), truncate(error, 300));
    let redeliver = format!("POST /v1/admin/deliveries/{event}/redeliver");
    let text = format!(
        ":warning: countersign could not tell agent `{}` that {} was {}: the callback to {} failed ({}). \
         It will not be retried; an operator can redeliver it: `{}`.",
        inert(proposal.agent.as_str()),
        inert(&summary),
        proposal.status.as_str(),
        inert(&url),
        inert(&error),
        inert(&redeliver)
    );
    let body = Paragraph::new()
        .emoji("warning")
        .text(" countersign could not tell agent ")
        .code(proposal.agent.as_str())
        .text(" that ")
        .bold(summary)
        .text(format!(
            " was {}: the callback to ",
            proposal.status.as_str()
        ))
        .code(url)
        .text(format!(
            " failed ({error}). It will not be retried; an operator can redeliver it: "
        ))
        .code(redeliver)
        .text(".");
    rich_message(text, body)
}

/// A reviewer's step-up was locked while approving `proposal`: said in its role channels, as
/// someone else may be using their Slack account.
pub fn lockout_alert(
    proposal: &Proposal,
    user: &str,
    until: chrono::DateTime<chrono::Utc>,
) -> OutgoingMessage {
    let text = format!(
        ":lock: <@{user}>'s step-up is locked until {} after {} wrong codes (while approving `{}`). If that was not them, their Slack account may be in someone else's hands.",
        slack_date(until),
        crate::stepup::MAX_FAILURES,
        proposal.id
    );
    OutgoingMessage {
        text,
        blocks: Vec::new(),
    }
}
