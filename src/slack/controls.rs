//! `/countersign pause | draft-only | resume AGENT [ACTION] [--reject-pending] [reason…]`: the
//! kill switch from Slack, for the people in `slack_admins` only. The change is audited with who
//! and why, in force for the very next request, and posted in the channels of the roles the
//! agent's cards go to.

use super::escape::{mrkdwn, truncate};
use super::payload::SlashCommand;
use crate::domain::{Actor, ActorKind, Control, ControlMode};
use crate::http::AppState;

pub const USAGE: &str = "`/countersign pause AGENT [ACTION] [--reject-pending] [reason]`, `/countersign draft-only AGENT [ACTION] [reason]`, `/countersign resume AGENT [ACTION] [reason]`";

/// Which change a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Narrow(ControlMode),
    Resume,
}

/// Handles one pause / draft-only / resume command; answers the ephemeral reply.
pub async fn handle(
    state: &AppState,
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
    let Some((agent_word, rest)) = words.split_first() else {
        return format!("Which agent? {USAGE}");
    };
    let Some(agent) = registry.agents.get(agent_word) else {
        return format!(
            "There is no agent `{}`. {USAGE}",
            mrkdwn(&truncate(agent_word, 60))
        );
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
    let reason = (!rest.is_empty()).then(|| truncate(&rest.join(" "), 500));
    let scope = match &action {
        Some(action) => format!("`{}` of *{}*", action, agent.id),
        None => format!("*{}*", agent.id),
    };
    let by = Actor {
        kind: ActorKind::Reviewer,
        id: user.clone(),
    };
    let engine = &state.engine;
    let (reply, notice) = match change {
        Change::Narrow(mode) => {
            let control = Control {
                agent: agent.id.to_string(),
                action: action.clone(),
                mode,
                reason: reason.clone(),
                set_by: by.audit_name(),
                set_at: engine.clock().now(),
            };
            let rejected = match engine.narrow(control, reject_pending, by).await {
                Ok(rejected) => rejected,
                Err(error) => {
                    tracing::error!(%error, "cannot set an agent control");
                    return "Sorry, that did not take effect (the database is not answering); try again.".into();
                }
            };
            let what = match mode {
                ControlMode::Paused => "paused: new proposals are refused",
                ControlMode::DraftOnly => {
                    "draft-only: nothing is auto-approved, every proposal needs a person"
                }
            };
            let rejected = if reject_pending {
                format!(" {} pending proposal(s) rejected.", rejected.len())
            } else {
                String::new()
            };
            let why = reason
                .as_deref()
                .map_or(String::new(), |r| format!(" Reason: {}", mrkdwn(r)));
            (
                format!("{scope} is {what}, until `/countersign resume`.{rejected}"),
                format!(":octagonal_sign: {scope} {what} — by <@{user}>.{why}{rejected}"),
            )
        }
        Change::Resume => {
            let agent_id = agent.id.to_string();
            match engine
                .clear_control(
                    &agent_id,
                    action.as_deref(),
                    by.audit_name(),
                    reason.clone(),
                )
                .await
            {
                Ok(true) => (
                    format!("{scope} is back to what its manifest says."),
                    format!(
                        ":arrow_forward: {scope} resumed by <@{user}>: back to its manifest's mode."
                    ),
                ),
                Ok(false) => return format!("{scope} had no pause or draft-only to clear."),
                Err(error) => {
                    tracing::error!(%error, "cannot clear an agent control");
                    return "Sorry, that did not take effect (the database is not answering); try again.".into();
                }
            }
        }
    };
    announce(state, agent.id.as_str(), notice).await;
    reply
}

/// Posts the change in the channels of the roles the agent's cards have gone to.
pub async fn announce(state: &AppState, agent: &str, text: String) {
    let roles = match state.engine.store().card_roles_of(agent).await {
        Ok(roles) => roles,
        Err(error) => {
            tracing::warn!(%error, "cannot find the channels to announce a control in");
            return;
        }
    };
    let registry = state.registry.current();
    let channels: std::collections::BTreeSet<String> = roles
        .iter()
        .filter_map(|role| registry.roles.get(role).map(|r| r.channel.clone()))
        .collect();
    let message = super::OutgoingMessage {
        text,
        blocks: Vec::new(),
    };
    for channel in channels {
        let api = state.slack.api.clone();
        let message = message.clone();
        // Not on the command's path: Slack wants its answer within 3 seconds.
        tokio::spawn(async move {
            if let Err(error) = api.post_message(&channel, &message, None).await {
                tracing::warn!(%error, %channel, "cannot announce an agent control");
            }
        });
    }
}
