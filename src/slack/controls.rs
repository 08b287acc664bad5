//! `/countersign pause | draft-only | resume AGENT [ACTION] [--reject-pending] [reason…]`: the
//! kill switch from Slack, for the people in `slack_admins` only. The change is audited with who
//! and why, in force for the very next request, and posted in the channels of the roles the
//! agent's cards go to (the core queues that announcement; [`control_notice`] renders it, for
//! every way in: Slack, the admin API, the circuit breaker).

use super::SlackState;
use super::escape::{inert, mrkdwn, truncate};
use super::payload::SlashCommand;
use super::rich::Paragraph;
use crate::domain::ControlNotice;
use crate::domain::control::{Setter, setter};
use crate::domain::{Actor, ActorKind, Control, ControlMode};

pub const USAGE: &str = "`/countersign pause AGENT [ACTION] [--reject-pending] [reason]`, `/countersign draft-only AGENT [ACTION] [reason]`, `/countersign resume AGENT [ACTION] [reason]`";

/// Which change a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Narrow(ControlMode),
    Resume,
}

/// Handles one pause / draft-only / resume command; answers the ephemeral reply.
pub async fn handle(
    state: &SlackState,
    command: &SlashCommand,
    change: Change,
    words: &[&str],
) -> String {
    let user = &command.user_id;
    if !state
        .slack
        .directory
        .is_one_of(&state.slack.admins, user)
        .await
    {
        tracing::warn!(%user, "refused a control command from a non-admin");
        return "Only countersign admins may pause or resume agents (the `slack_admins` setting)."
            .into();
    }
    let registry = state.registry.current();
    let request = match Request::read(&registry, words) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let by = Actor {
        kind: ActorKind::Reviewer,
        id: user.clone(),
    };
    match change {
        Change::Narrow(mode) => narrow(state, request, mode, by).await,
        Change::Resume => resume(state, request, by).await,
    }
}

/// `AGENT [ACTION] [--reject-pending] [REASON…]`, read against the agents the registry knows.
struct Request {
    agent: String,
    action: Option<String>,
    reject_pending: bool,
    reason: Option<String>,
    /// How the reply names what changed.
    scope: String,
}

impl Request {
    /// The request, or the reply that says what is wrong with it.
    fn read(registry: &crate::registry::Registry, words: &[&str]) -> Result<Self, String> {
        let Some((agent_word, rest)) = words.split_first() else {
            return Err(format!("Which agent? {USAGE}"));
        };
        let Some(agent) = registry.agents.get(agent_word) else {
            return Err(format!(
                "There is no agent `{}`. {USAGE}",
                mrkdwn(&truncate(agent_word, 60))
            ));
        };
        let mut rest = rest.to_vec();
        let action = match rest.first() {
            Some(word) if agent.actions.keys().any(|a| a.as_str() == *word) => {
                let action = (*word).to_owned();
                rest.remove(0);
                Some(action)
            }
            _ => None,
        };
        let reject_pending = rest.contains(&"--reject-pending");
        rest.retain(|w| *w != "--reject-pending");
        let scope = match &action {
            Some(action) => format!("`{}` of *{}*", action, agent.id),
            None => format!("*{}*", agent.id),
        };
        Ok(Self {
            agent: agent.id.to_string(),
            action,
            reject_pending,
            reason: (!rest.is_empty()).then(|| truncate(&rest.join(" "), 500)),
            scope,
        })
    }
}

const NOT_TAKEN: &str =
    "Sorry, that did not take effect (the database is not answering); try again.";

/// Pause or draft-only, through the core.
async fn narrow(state: &SlackState, request: Request, mode: ControlMode, by: Actor) -> String {
    let engine = &state.engine;
    let control = Control {
        agent: request.agent,
        action: request.action,
        mode,
        reason: request.reason,
        set_by: by.audit_name(),
        set_at: engine.clock().now(),
    };
    let rejected = match engine.narrow(control, request.reject_pending, by).await {
        Ok(rejected) => rejected,
        Err(error) => {
            tracing::error!(%error, "cannot set an agent control");
            return NOT_TAKEN.into();
        }
    };
    let what = match mode {
        ControlMode::Paused => "paused: new proposals are refused",
        ControlMode::DraftOnly => {
            "draft-only: nothing is auto-approved, every proposal needs a person"
        }
    };
    let rejected = if request.reject_pending {
        format!(" {} pending proposal(s) rejected.", rejected.len())
    } else {
        String::new()
    };
    let scope = request.scope;
    format!("{scope} is {what}, until `/countersign resume`.{rejected} The role channels are told.")
}

/// Back to the manifest, through the core.
async fn resume(state: &SlackState, request: Request, by: Actor) -> String {
    let cleared = (state.engine)
        .clear_control(
            &request.agent,
            request.action.as_deref(),
            by.audit_name(),
            request.reason,
        )
        .await;
    let scope = request.scope;
    match cleared {
        Ok(true) => {
            format!("{scope} is back to what its manifest says. The role channels are told.")
        }
        Ok(false) => format!("{scope} had no pause or draft-only to clear."),
        Err(error) => {
            tracing::error!(%error, "cannot clear an agent control");
            NOT_TAKEN.into()
        }
    }
}

/// What the role channels are told of a change to an agent's mode: what changed, who did it
/// (a person, an operator through the admin API, or the circuit breaker), why, and how many
/// pending proposals were rejected with it — each on its own line, the reason as written.
pub fn control_notice(notice: &ControlNotice) -> super::OutgoingMessage {
    let what = match notice.mode {
        Some(crate::domain::ControlMode::Paused) => "paused: new proposals are refused",
        Some(crate::domain::ControlMode::DraftOnly) => {
            "draft-only: nothing is auto-approved, every proposal needs a person"
        }
        None => "resumed: back to its manifest's mode",
    };
    let (emoji, emoji_name) = match notice.mode {
        Some(_) => (":octagonal_sign:", "octagonal_sign"),
        None => (":arrow_forward:", "arrow_forward"),
    };
    let by_text = match setter(&notice.by) {
        Setter::Breaker => "the circuit breaker".to_owned(),
        Setter::SlackUser(user) => format!("<@{user}>"),
        Setter::Operator => "an operator (admin API)".to_owned(),
    };
    let mut text = format!("{emoji} ");
    let mut body = Paragraph::new().emoji(emoji_name).text(" ");
    if let Some(action) = &notice.action {
        text.push_str(&format!("`{}` of ", inert(action)));
        body = body.code(action).text(" of ");
    }
    text.push_str(&format!("*{}* {what} — by ", inert(&notice.agent)));
    body = body.bold(&notice.agent).text(format!(" {what} — by "));
    text.push_str(&by_text);
    body = match setter(&notice.by) {
        Setter::SlackUser(user) => body.user(user),
        _ => body.text(&by_text),
    };
    text.push('.');
    body = body.text(".");
    if let Some(reason) = &notice.reason {
        let reason = truncate(reason, 500);
        text.push_str(&format!("\nReason: {}", inert(&reason)));
        body = body.newline().bold("Reason:").text(" ").text(reason);
    }
    if let Some(rejected) = notice.rejected {
        let line = format!(
            "{rejected} pending proposal{} rejected.",
            if rejected == 1 { "" } else { "s" }
        );
        text.push_str(&format!("\n{line}"));
        body = body.newline().text(line);
    }
    if notice.mode == Some(crate::domain::ControlMode::Paused)
        && setter(&notice.by) == Setter::Breaker
    {
        let next = format!(
            "A person must look, then `/countersign resume {}`.",
            notice.agent
        );
        text.push_str(&format!("\n{}", inert(&next)));
        body = body.newline().text(next);
    }
    super::OutgoingMessage {
        text,
        blocks: vec![super::rich::block(body)],
    }
}
