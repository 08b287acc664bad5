//! What policy concluded about a proposal: stored with it, so a later policy change never rewrites
//! why an old proposal was routed the way it was.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What policy concluded about a proposal at submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictOutcome {
    AutoApprove,
    Deny,
    NeedsReview,
}

/// Extra confirmation a reviewer must give with the click.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepUp {
    None,
    Confirm,
    Totp,
}

/// How many approvals a decision needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quorum {
    /// Approvals needed in all.
    pub approvals: u32,
    /// A rule asked for one approval from every one of its roles.
    pub each_role: bool,
    /// Approvals needed from each role at least (a role absent here has no minimum of its own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_role: BTreeMap<String, u32>,
}

/// The policy engine's answer for one proposal; stored with it, so a later policy change never
/// rewrites why an old proposal was routed the way it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    pub outcome: VerdictOutcome,
    /// Names of the rules that matched.
    pub rules: Vec<String>,
    pub reasons: Vec<String>,
    /// Roles whose channels review the proposal.
    pub route: Vec<String>,
    pub quorum: Quorum,
    /// Time to decide, as a duration (`30m`), when a rule sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<String>,
    pub step_up: StepUp,
    /// The escalation ladder for the SLA worker (from the rule with the shortest SLA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<EscalationLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Reasons a reviewer can pick when rejecting, from the matched rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reject_reasons: Vec<String>,
}

/// Whom an escalation level reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalationTarget {
    /// The role's current on-call person.
    Oncall,
    Role(String),
    User(String),
    Usergroup(String),
}

/// One rung of an escalation ladder (the SLA worker acts on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevel {
    /// Delay after the card is posted, e.g. `15m`.
    pub after: String,
    /// `approvers`: remind those who have not voted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind: Option<RemindWhom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<EscalationTarget>,
    /// Repeat this level N more times, `after` apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// Whether the notified people may approve this proposal too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grants_approval: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RemindWhom {
    Approvers,
}

/// What happens when the escalation ladder runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    Expire,
    Wait,
}
