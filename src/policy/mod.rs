//! Policy: decides what each proposal needs.
//!
//! Rules live in `policies/*.yaml`: a CEL `when` condition and a requirement (a decision, or a
//! review: route, approvals, SLA, step-up, escalation, expiry). Every matching rule applies and
//! they combine to the strictest (see [`requirement::combine`]); when none matches, the defaults
//! for the action's catalog impact apply. Then the agent's limits: a `draft_only` agent, or an
//! action whose autonomy is not `autonomous`, is never auto-approved. A rule that cannot be
//! evaluated for a proposal counts as matched-for-review: policy fails closed.

pub mod autonomy;
pub mod cases;
mod expression;
mod file;
pub mod requirement;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use file::{Defaults, Rule};
use requirement::{Requirement, combine};

use crate::domain::request::ValidRequest;
use crate::domain::{ActionId, Verdict, VerdictOutcome};
use crate::manifest::{Agent, AgentMode, Autonomy, CatalogEntry, ManifestError, Refusal, Roles};

/// The loaded policies.
pub struct PolicySet {
    env: Arc<cel::Env>,
    rules: Vec<Rule>,
    defaults: Defaults,
    /// The facts some condition reads: only those are built for an evaluation.
    reads: Reads,
    autonomy: autonomy::Criteria,
}

/// Which facts the conditions read, worked out once at load.
#[derive(Debug, Default)]
struct Reads {
    agent: bool,
    action: bool,
    /// Proposal fields read, by name (all of them when a condition uses `proposal` whole).
    proposal: BTreeSet<&'static str>,
}

impl Reads {
    fn from_uses<'a>(uses: impl Iterator<Item = &'a String> + Clone) -> Self {
        let has = |wanted: &str| uses.clone().any(|u| u == wanted);
        let any = |root: &str| uses.clone().any(|u| u.starts_with(root));
        Self {
            agent: any("agent."),
            action: any("action."),
            proposal: expression::PROPOSAL_FIELDS
                .into_iter()
                .filter(|f| has("proposal.*") || has(&format!("proposal.{f}")))
                .collect(),
        }
    }
}

/// Everything a verdict is computed from.
pub struct Facts<'a> {
    pub agent: &'a Agent,
    pub action: &'a ActionId,
    pub entry: &'a CatalogEntry,
    pub request: &'a ValidRequest,
    pub now: DateTime<Utc>,
    /// Why auto-approving this proposal would overrun one of the agent's budgets, if it would
    /// (see [`crate::budgets`]): an auto-approval becomes a review naming it.
    pub budget: Option<String>,
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
    /// How each rule fared, in the order of [`PolicySet::rules`].
    pub rules: Vec<RuleOutcome>,
    /// For a decision by policy, the rules that took it: the deny rules of a denial, the
    /// auto-approving ones of an approval. Empty for a review.
    pub decided_by: Vec<String>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("rules", &self.rules)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// A requirement applied to a proposal, under the name the verdict gives it.
type Applied<'a> = (Cow<'a, str>, Cow<'a, Requirement>);

impl PolicySet {
    /// Loads and checks every policy file in `dir` against the declared roles.
    pub fn load(dir: &Path, roles: &Roles) -> Result<Self, ManifestError> {
        let env = expression::environment();
        let (rules, defaults, autonomy) = file::load(dir, roles, &env)?;
        let reads = Reads::from_uses(rules.iter().flat_map(|r| r.condition.uses.iter()));
        Ok(Self {
            env,
            rules,
            defaults,
            reads,
            autonomy,
        })
    }

    /// When an action has earned a wider autonomy tier (or lost its own).
    pub fn autonomy(&self) -> &autonomy::Criteria {
        &self.autonomy
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What applies when no rule matches (read by `countersign doctor` for the people and
    /// groups its escalation ladders name).
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// The one path from a request to a verdict: admits the action for the agent (mode,
    /// catalog), then evaluates the policies.
    pub fn verdict_for(
        &self,
        agent: &Agent,
        request: &ValidRequest,
        now: DateTime<Utc>,
        budget: Option<String>,
    ) -> Result<Evaluation, Refusal> {
        let entry = agent.admit(&request.action)?;
        Ok(self.evaluate(&Facts {
            agent,
            action: &request.action,
            entry,
            request,
            now,
            budget,
        }))
    }

    pub fn evaluate(&self, facts: &Facts<'_>) -> Evaluation {
        let context = self.context(facts);
        let impact = facts.entry.impact;
        let mut outcomes = Vec::with_capacity(self.rules.len());
        let mut applied: Vec<Applied<'_>> = Vec::new();
        for rule in &self.rules {
            let outcome = match rule.condition.evaluate_for(facts.action.as_str(), &context) {
                Ok(true) => {
                    applied.push((Cow::Borrowed(&rule.name), Cow::Borrowed(&rule.requirement)));
                    RuleOutcome::Matched
                }
                Ok(false) => RuleOutcome::NotMatched,
                Err(error) => {
                    let reason =
                        format!("could not be evaluated ({error}): review required (fail closed)");
                    applied.push((
                        Cow::Borrowed(&rule.name),
                        Cow::Owned(self.fail_closed(rule, impact, reason)),
                    ));
                    RuleOutcome::Failed(error)
                }
            };
            outcomes.push(outcome);
        }
        if applied.is_empty() {
            let name = format!("default-{}", impact_name(impact));
            applied.push((
                Cow::Owned(name),
                Cow::Borrowed(self.defaults.for_impact(impact)),
            ));
        }

        let (mut verdict, mut expires_in) = combine_applied(&applied);
        if verdict.outcome == VerdictOutcome::AutoApprove
            && let Some((name, reason)) = autonomy_limit(facts.agent, facts.entry)
        {
            let review = Requirement::review(self.defaults.review_route(impact), reason);
            applied.push((Cow::Borrowed(name), Cow::Owned(review)));
            (verdict, expires_in) = combine_applied(&applied);
        }
        if verdict.outcome == VerdictOutcome::AutoApprove
            && let Some(reason) = &facts.budget
        {
            let review = Requirement::review(self.defaults.review_route(impact), reason.clone());
            applied.push((Cow::Borrowed("budget"), Cow::Owned(review)));
            (verdict, expires_in) = combine_applied(&applied);
        }
        let decided_by = match verdict.outcome {
            VerdictOutcome::NeedsReview => Vec::new(),
            outcome => {
                let wanted = if outcome == VerdictOutcome::Deny {
                    requirement::RuleDecision::Deny
                } else {
                    requirement::RuleDecision::AutoApprove
                };
                applied
                    .iter()
                    .filter(|(_, r)| r.decision == Some(wanted))
                    .map(|(name, _)| name.to_string())
                    .collect()
            }
        };
        Evaluation {
            verdict,
            expires_in,
            rules: outcomes,
            decided_by,
        }
    }

    /// What a rule that could not be evaluated requires: never less than had it matched. A
    /// review rule keeps its whole requirement (route, quorum, step-up, SLA…); a decision rule
    /// becomes the review the action's impact calls for (or the high-impact one).
    fn fail_closed(
        &self,
        rule: &Rule,
        impact: crate::manifest::Impact,
        reason: String,
    ) -> Requirement {
        let base = if rule.requirement.is_review() {
            &rule.requirement
        } else if self.defaults.for_impact(impact).is_review() {
            self.defaults.for_impact(impact)
        } else {
            &self.defaults.high
        };
        Requirement {
            reason,
            ..base.clone()
        }
    }

    /// The facts as CEL values, converted straight from the domain types — only those some
    /// condition reads, as conversion is most of the cost of a verdict (and a 10,000-line diff
    /// is converted only if a rule looks at `proposal.changes`). Optional proposal fields are
    /// present as empty strings, so a rule can compare them without `has()`.
    fn context(&self, facts: &Facts<'_>) -> cel::Context<'static, 'static> {
        let request = facts.request;
        let target = request.target.as_ref();
        fn text(value: Option<&String>) -> &str {
            value.map_or("", String::as_str)
        }
        let wanted = |field: &str| self.reads.proposal.contains(field);
        let mut context = cel::Context::with_env(self.env.clone());
        // These serialize plain data: conversion cannot fail.
        if self.reads.agent {
            let _ = context.add_variable(
                "agent",
                AgentFacts {
                    id: facts.agent.id.as_str(),
                    owner: &facts.agent.owner,
                    mode: facts.agent.mode,
                    description: &facts.agent.description,
                },
            );
        }
        if self.reads.action {
            let _ = context.add_variable(
                "action",
                ActionFacts {
                    id: facts.action.as_str(),
                    impact: facts.entry.impact,
                    data: &facts.entry.data,
                    reversible: facts.entry.reversible,
                    autonomy: facts.entry.autonomy,
                },
            );
        }
        if !self.reads.proposal.is_empty() {
            let _ = context.add_variable(
                "proposal",
                ProposalFacts {
                    action: wanted("action").then_some(request.action.as_str()),
                    summary: wanted("summary").then_some(request.summary.as_str()),
                    rationale: wanted("rationale").then(|| text(request.rationale.as_ref())),
                    params: wanted("params").then_some(&request.params),
                    changes: wanted("changes").then_some(request.changes.as_slice()),
                    data_classes: wanted("data_classes").then_some(request.data_classes.as_slice()),
                    target: wanted("target").then(|| TargetFacts {
                        system: text(target.map(|t| &t.system)),
                        kind: text(target.map(|t| &t.kind)),
                        id: text(target.map(|t| &t.id)),
                        url: text(target.and_then(|t| t.url.as_ref())),
                    }),
                    requested_by: wanted("requested_by")
                        .then(|| text(request.requested_by.as_ref())),
                    evidence: wanted("evidence").then_some(request.evidence.as_slice()),
                    metadata: wanted("metadata").then_some(&request.metadata),
                },
            );
        }
        context.add_variable_from_value("now", cel::Value::Timestamp(facts.now.fixed_offset()));
        context
    }
}

fn combine_applied(applied: &[Applied<'_>]) -> (Verdict, Option<Duration>) {
    let named: Vec<(&str, &Requirement)> = applied
        .iter()
        .map(|(n, r)| (n.as_ref(), r.as_ref()))
        .collect();
    combine(&named)
}

// What conditions see, borrowed from the domain values (the field names are the CEL names).
#[derive(Serialize)]
struct AgentFacts<'a> {
    id: &'a str,
    owner: &'a str,
    mode: AgentMode,
    description: &'a str,
}

#[derive(Serialize)]
struct ActionFacts<'a> {
    id: &'a str,
    impact: crate::manifest::Impact,
    data: &'a [crate::domain::DataClass],
    reversible: bool,
    autonomy: Autonomy,
}

/// The proposal as conditions see it; a field no condition reads is left out (`None`).
#[derive(Serialize)]
struct ProposalFacts<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rationale: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<&'a [crate::domain::Change]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_classes: Option<&'a [crate::domain::DataClass]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<TargetFacts<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<&'a [crate::domain::Evidence]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
struct TargetFacts<'a> {
    system: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    url: &'a str,
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
