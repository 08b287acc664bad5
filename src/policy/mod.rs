//! Policy: decides what each proposal needs.
//!
//! Rules live in `policies/*.yaml`: a CEL `when` condition and a requirement (a decision, or a
//! review: route, approvals, SLA, step-up, escalation, expiry). Every matching rule applies and
//! they combine to the strictest (see [`requirement::combine`]); when none matches, the defaults
//! for the action's catalog impact apply. Then the agent's limits: a `draft_only` agent, or an
//! action whose autonomy is not `autonomous`, is never auto-approved. A rule that cannot be
//! evaluated for a proposal counts as matched-for-review: policy fails closed.

pub mod cases;
mod expression;
mod file;
pub mod requirement;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub use file::{Defaults, Rule};
use requirement::{Requirement, combine};

use crate::domain::request::ValidRequest;
use crate::domain::{ActionId, Verdict, VerdictOutcome};
use crate::manifest::{Agent, AgentMode, Autonomy, CatalogEntry, ManifestError, Roles};

/// The loaded policies.
pub struct PolicySet {
    env: Arc<cel::Env>,
    rules: Vec<Rule>,
    defaults: Defaults,
}

/// Everything a verdict is computed from.
pub struct Facts<'a> {
    pub agent: &'a Agent,
    pub action: &'a ActionId,
    pub entry: &'a CatalogEntry,
    pub request: &'a ValidRequest,
    pub now: DateTime<Utc>,
}

/// How one rule fared for one proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutcome {
    Matched,
    NotMatched,
    /// Evaluation failed; the rule counted as matched-for-review.
    Failed(String),
}

/// A verdict with its working: what `policy explain` shows.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub verdict: Verdict,
    /// The shortest `expires_in` among the applied requirements.
    pub expires_in: Option<Duration>,
    pub rules: Vec<(String, RuleOutcome)>,
}

/// The requirement a rule contributes, named, for [`combine`].
type Applied = (String, Requirement);

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("rules", &self.rules)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// Loads and checks every policy file in `dir` against the declared roles.
    pub fn load(dir: &Path, roles: &Roles) -> Result<Self, ManifestError> {
        let env = expression::environment();
        let (rules, defaults) = file::load(dir, roles, &env)?;
        Ok(Self {
            env,
            rules,
            defaults,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn evaluate(&self, facts: &Facts<'_>) -> Evaluation {
        let context = self.context(facts);
        let impact = facts.entry.impact;
        let mut trace = Vec::with_capacity(self.rules.len());
        let mut applied: Vec<Applied> = Vec::new();
        for rule in &self.rules {
            let outcome = match rule.condition.evaluate(&context) {
                Ok(true) => {
                    applied.push((rule.name.clone(), rule.requirement.clone()));
                    RuleOutcome::Matched
                }
                Ok(false) => RuleOutcome::NotMatched,
                Err(error) => {
                    let route = if rule.requirement.route.is_empty() {
                        self.defaults.review_route(impact)
                    } else {
                        rule.requirement.route.clone()
                    };
                    let reason =
                        format!("could not be evaluated ({error}): review required (fail closed)");
                    applied.push((rule.name.clone(), Requirement::review(route, reason)));
                    RuleOutcome::Failed(error)
                }
            };
            trace.push((rule.name.clone(), outcome));
        }
        if applied.is_empty() {
            let name = format!("default-{}", impact_name(impact));
            applied.push((name, self.defaults.for_impact(impact).clone()));
        }

        let mut evaluation = self.finish(&applied, trace.clone());
        if evaluation.verdict.outcome == VerdictOutcome::AutoApprove
            && let Some(limit) = autonomy_limit(facts.agent, facts.entry)
        {
            applied.push((
                limit.0.to_owned(),
                Requirement::review(self.defaults.review_route(impact), limit.1),
            ));
            evaluation = self.finish(&applied, trace);
        }
        evaluation
    }

    fn finish(&self, applied: &[Applied], rules: Vec<(String, RuleOutcome)>) -> Evaluation {
        let named: Vec<(&str, &Requirement)> =
            applied.iter().map(|(n, r)| (n.as_str(), r)).collect();
        let (verdict, expires_in) = combine(&named);
        Evaluation {
            verdict,
            expires_in,
            rules,
        }
    }

    /// The facts as CEL values. Optional proposal fields are present as empty strings or null, so
    /// a rule can compare them without `has()`.
    fn context(&self, facts: &Facts<'_>) -> cel::Context<'static, 'static> {
        let request = facts.request;
        let target = request.target.as_ref();
        let text = |value: Option<&String>| value.cloned().unwrap_or_default();
        let mut context = cel::Context::with_env(self.env.clone());
        let variables: [(&str, Value); 3] = [
            (
                "agent",
                json!({
                    "id": facts.agent.id, "owner": facts.agent.owner,
                    "mode": facts.agent.mode, "description": facts.agent.description,
                }),
            ),
            (
                "action",
                json!({
                    "id": facts.action, "impact": facts.entry.impact, "data": facts.entry.data,
                    "reversible": facts.entry.reversible, "autonomy": facts.entry.autonomy,
                }),
            ),
            (
                "proposal",
                json!({
                    "action": request.action,
                    "summary": request.summary,
                    "rationale": text(request.rationale.as_ref()),
                    "params": request.params,
                    "changes": request.changes,
                    "data_classes": request.data_classes,
                    "target": {
                        "system": text(target.map(|t| &t.system)), "type": text(target.map(|t| &t.kind)),
                        "id": text(target.map(|t| &t.id)), "url": text(target.and_then(|t| t.url.as_ref())),
                    },
                    "requested_by": text(request.requested_by.as_ref()),
                    "evidence": request.evidence,
                    "metadata": request.metadata,
                }),
            ),
        ];
        for (name, value) in variables {
            // Plain JSON always converts.
            let _ = context.add_variable(name, value);
        }
        context.add_variable_from_value("now", cel::Value::Timestamp(facts.now.fixed_offset()));
        context
    }
}

/// Why an auto-approval is not allowed for this agent and action, if it is not.
fn autonomy_limit(agent: &Agent, entry: &CatalogEntry) -> Option<(&'static str, String)> {
    if agent.mode == AgentMode::DraftOnly {
        return Some((
            "agent-draft-only",
            "the agent is in draft_only mode: nothing is auto-approved".into(),
        ));
    }
    match entry.autonomy {
        Autonomy::Autonomous => None,
        other => Some((
            "action-autonomy",
            format!(
                "the action's autonomy is {}: it is never auto-approved",
                serde_json::to_value(other).ok()?.as_str()?
            ),
        )),
    }
}

fn impact_name(impact: crate::manifest::Impact) -> &'static str {
    match impact {
        crate::manifest::Impact::Low => "low",
        crate::manifest::Impact::Medium => "medium",
        crate::manifest::Impact::High => "high",
    }
}
