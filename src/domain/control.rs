//! Operators' overrides of an agent's boundary: pause or draft-only, for the whole agent or one
//! action, set from Slack or the admin API without a deploy, and stronger than the manifest
//! until cleared.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an override does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ControlMode {
    /// Nothing is auto-approved: every proposal waits for a person.
    DraftOnly,
    /// New proposals are refused (423).
    Paused,
}

impl ControlMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlMode::DraftOnly => "draft_only",
            ControlMode::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "draft_only" => Some(ControlMode::DraftOnly),
            "paused" => Some(ControlMode::Paused),
            _ => None,
        }
    }
}

/// One override in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Control {
    pub agent: String,
    /// The action it is limited to; `None`: every action of the agent.
    pub action: Option<String>,
    pub mode: ControlMode,
    pub reason: Option<String>,
    /// Who set it: `reviewer:U…` from Slack, `admin` from the API, `system:breaker`.
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

/// What the role channels are told of a change to an agent's mode, whoever made it (a Slack
/// admin, the admin API, the circuit breaker). Queued in the transaction of the change, so it
/// is sent through the outbox, within the channels' budgets, retried, never lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlNotice {
    pub agent: String,
    pub action: Option<String>,
    /// The mode put in force; `None`: the override was cleared (resumed).
    pub mode: Option<ControlMode>,
    /// Who: `reviewer:U…` (a Slack admin), `system:admin…` (the admin API), `system:breaker`.
    pub by: String,
    pub reason: Option<String>,
    /// Pending proposals rejected with it (`--reject-pending`).
    pub rejected: Option<usize>,
}

/// Who set an override, as a sentence's subject: the breaker, an operator, or a Slack user id.
pub fn setter(set_by: &str) -> Setter<'_> {
    if set_by == BREAKER {
        Setter::Breaker
    } else if let Some(user) = set_by.strip_prefix("reviewer:") {
        Setter::SlackUser(user)
    } else {
        Setter::Operator
    }
}

/// The circuit breaker's actor name.
pub const BREAKER: &str = "system:breaker";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter<'a> {
    Breaker,
    SlackUser(&'a str),
    Operator,
}

/// The strictest override that applies to `action` of an agent, from its overrides.
pub fn strictest<'a>(controls: &'a [Control], action: &str) -> Option<&'a Control> {
    controls
        .iter()
        .filter(|c| c.action.as_deref().is_none_or(|a| a == action))
        .max_by_key(|c| c.mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(action: Option<&str>, mode: ControlMode) -> Control {
        Control {
            agent: "a".into(),
            action: action.map(str::to_owned),
            mode,
            reason: None,
            set_by: "admin".into(),
            set_at: "2026-11-21T09:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn the_strictest_applicable_override_wins() {
        let controls = [
            control(None, ControlMode::DraftOnly),
            control(Some("crm.records.merge"), ControlMode::Paused),
        ];
        assert_eq!(
            strictest(&controls, "crm.records.merge").map(|c| c.mode),
            Some(ControlMode::Paused)
        );
        assert_eq!(
            strictest(&controls, "crm.lead.tag").map(|c| c.mode),
            Some(ControlMode::DraftOnly)
        );
        assert_eq!(strictest(&controls[1..], "crm.lead.tag"), None);
    }
}
