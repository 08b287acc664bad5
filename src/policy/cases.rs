//! `countersign policy explain` and `countersign policy test`: policies reviewed like code.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{Evaluation, RuleOutcome};
use crate::domain::request::{ProposalRequest, ValidRequest};
use crate::domain::{StepUp, VerdictOutcome};
use crate::manifest::Agent;
use crate::registry::Registry;

/// Evaluates the proposal `body` (as an agent would POST it) for agent `agent_id`.
pub fn evaluate(
    registry: &Registry,
    agent_id: &str,
    body: Value,
    now: DateTime<Utc>,
) -> Result<(Agent, ValidRequest, Evaluation), String> {
    let agent = registry
        .agents
        .get(agent_id)
        .ok_or_else(|| format!("no agent {agent_id:?} in the manifests"))?;
    let request = ProposalRequest::from_json(body)
        .map_err(|e| vec![e])
        .and_then(ProposalRequest::validate)
        .map_err(|errors| {
            let list: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            format!("invalid proposal: {}", list.join("; "))
        })?;
    let evaluation = registry
        .policies
        .verdict_for(agent, &request, now, None)
        .map_err(|refusal| {
            let status = if refusal == crate::manifest::Refusal::Paused {
                423
            } else {
                403
            };
            format!("refused before policy ({status}): {}", refusal.reason())
        })?;
    Ok(((**agent).clone(), request, evaluation))
}

/// A human-readable account of a verdict: every rule, matched or not and why, then the verdict.
pub fn explain(
    registry: &Registry,
    agent: &Agent,
    request: &ValidRequest,
    evaluation: &Evaluation,
) -> String {
    let mut out = String::new();
    let entry = &agent.actions[&request.action];
    let _ = writeln!(
        out,
        "agent {} ({} mode), action {} (impact {}, data {}, {}, autonomy {})",
        agent.id,
        name(&agent.mode),
        request.action,
        name(&entry.impact),
        name(&entry.data),
        if entry.reversible {
            "reversible"
        } else {
            "irreversible"
        },
        name(&entry.autonomy),
    );
    let _ = writeln!(out, "\nrules:");
    for (index, rule) in registry.policies.rules().iter().enumerate() {
        let outcome = evaluation.rules.get(index);
        let place = format!("{}:{}", rule.file.display(), rule.line);
        let line = match outcome {
            Some(RuleOutcome::Matched) => format!(
                "  MATCH   {} ({place}): {}",
                rule.name, rule.requirement.reason
            ),
            Some(RuleOutcome::NotMatched) => format!("  -       {} ({place})", rule.name),
            Some(RuleOutcome::Failed(error)) => format!(
                "  ERROR   {} ({place}): {error}; counted as matched-for-review (fail closed)",
                rule.name
            ),
            None => format!("  ?       {} ({place})", rule.name),
        };
        let _ = writeln!(out, "{line}");
    }
    let v = &evaluation.verdict;
    let _ = writeln!(out, "\nverdict: {}", name(&v.outcome));
    if v.outcome == VerdictOutcome::NeedsReview {
        let _ = writeln!(
            out,
            "  route: {}   approvals: {}{}   sla: {}   step-up: {}",
            v.route.join(", "),
            v.quorum.approvals,
            if v.quorum.each_role {
                " (one per role)"
            } else {
                ""
            },
            v.sla.as_deref().unwrap_or("none"),
            name(&v.step_up),
        );
    }
    for reason in &v.reasons {
        let _ = writeln!(out, "  because {reason}");
    }
    out
}

/// A value as its policy files spell it (`needs_review`, `[pii, financial]`).
fn name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text,
        Ok(Value::Array(items)) => {
            let names: Vec<String> = items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_owned())
                .collect();
            format!("[{}]", names.join(", "))
        }
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// One table test: a proposal and what its verdict must be.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    agent: String,
    proposal: Value,
    /// Evaluate at this time (default: now).
    now: Option<DateTime<Utc>>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `auto_approve`, `deny`, `needs_review`, or `refused` (403/423 before policy).
    outcome: String,
    route: Option<Vec<String>>,
    approvals: Option<u32>,
    each_role: Option<bool>,
    /// Minimum approvals per role.
    per_role: Option<std::collections::BTreeMap<String, u32>>,
    step_up: Option<StepUp>,
    sla: Option<String>,
    /// The matched rules, in order.
    rules: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    tests: Vec<Case>,
}

/// What `policy test` found.
#[derive(Debug, Default)]
pub struct TestReport {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
}

/// Runs every `*.yaml` table test in `dir`.
pub fn run_tests(registry: &Registry, dir: &Path) -> Result<TestReport, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut report = TestReport::default();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let cases: CaseFile = serde_saphyr::from_str(&text).map_err(|e| {
            let line = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            format!("{}{line}: {e}", file.display())
        })?;
        for case in cases.tests {
            let label = format!("{}: {}", file.display(), case.name);
            match check(registry, &case) {
                Ok(()) => report.passed.push(label),
                Err(why) => report.failed.push(format!("{label}: {why}")),
            }
        }
    }
    Ok(report)
}

fn check(registry: &Registry, case: &Case) -> Result<(), String> {
    let now = case.now.unwrap_or_else(Utc::now);
    let verdict = match evaluate(registry, &case.agent, case.proposal.clone(), now) {
        Ok((_, _, evaluation)) => evaluation.verdict,
        Err(refused) if refused.starts_with("refused") => {
            return if case.expect.outcome == "refused" {
                Ok(())
            } else {
                Err(refused)
            };
        }
        Err(other) => return Err(other),
    };
    let mut problems = Vec::new();
    let outcome = name(&verdict.outcome);
    if outcome != case.expect.outcome {
        problems.push(format!(
            "outcome {outcome}, expected {}",
            case.expect.outcome
        ));
    }
    if let Some(route) = &case.expect.route
        && route != &verdict.route
    {
        problems.push(format!("route {:?}, expected {route:?}", verdict.route));
    }
    if let Some(approvals) = case.expect.approvals
        && approvals != verdict.quorum.approvals
    {
        problems.push(format!(
            "approvals {}, expected {approvals}",
            verdict.quorum.approvals
        ));
    }
    if let Some(each_role) = case.expect.each_role
        && each_role != verdict.quorum.each_role
    {
        problems.push(format!(
            "each_role {}, expected {each_role}",
            verdict.quorum.each_role
        ));
    }
    if let Some(per_role) = &case.expect.per_role
        && per_role != &verdict.quorum.per_role
    {
        problems.push(format!(
            "per_role {:?}, expected {per_role:?}",
            verdict.quorum.per_role
        ));
    }
    if let Some(step_up) = case.expect.step_up
        && step_up != verdict.step_up
    {
        problems.push(format!(
            "step_up {:?}, expected {step_up:?}",
            verdict.step_up
        ));
    }
    if let Some(sla) = &case.expect.sla
        && Some(sla) != verdict.sla.as_ref()
    {
        problems.push(format!("sla {:?}, expected {sla}", verdict.sla));
    }
    if let Some(rules) = &case.expect.rules
        && rules != &verdict.rules
    {
        problems.push(format!("rules {:?}, expected {rules:?}", verdict.rules));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
