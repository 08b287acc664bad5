//! The `autonomy:` section of a policy file: the criteria by which an action earns a wider
//! tier or loses its own. Only their shape lives here; judging an agent's record against them
//! is the autonomy report's (`crate::autonomy`).

use serde::Deserialize;

use crate::manifest::Autonomy;

/// `autonomy:` in a policy file: when an action has earned a wider tier, or lost its own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// The first whose `from` is the action's tier applies: met, it is recommended.
    #[serde(default)]
    pub promote: Vec<Promotion>,
    pub demote: Option<Demotion>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    pub from: Autonomy,
    pub to: Autonomy,
    /// At least this many proposals decided (approved or rejected) in the window.
    pub min_decided: u64,
    /// Rejected share of those below this (0.02 = 2%).
    pub max_rejected: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demotion {
    /// Only judged on at least this many decided proposals.
    pub min_decided: u64,
    /// A rejected share above this recommends a narrower tier.
    pub max_rejected: f64,
    /// A failed share of reported executions above this does too.
    #[serde(default)]
    pub max_failed: Option<f64>,
}
