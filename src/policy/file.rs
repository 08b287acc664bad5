//! `policies/*.yaml`: rules and the per-impact defaults, parsed and validated against the roles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::expression::Condition;
use super::requirement::{Requirement, RuleDecision};
use crate::domain::{EscalationLevel, EscalationTarget, OnTimeout, StepUp};
use crate::manifest::{Impact, ManifestError, Roles};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<Spanned<Spec>>,
    defaults: Option<Spanned<BTreeMap<Impact, Spanned<Spec>>>>,
    autonomy: Option<Spanned<super::autonomy::Criteria>>,
}

/// A rule or a default as written. One shape for both, since serde cannot combine `flatten`
/// with `deny_unknown_fields` (and a typo must be an error): a rule must have `name` and `when`,
/// a default must have neither.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: Option<String>,
    #[serde(default)]
    description: String,
    when: Option<Spanned<String>>,
    decision: Option<RuleDecision>,
    reason: Option<String>,
    #[serde(default)]
    route: Vec<String>,
    approvals: Option<u32>,
    #[serde(default)]
    each_role: bool,
    sla: Option<String>,
    step_up: Option<StepUp>,
    #[serde(default)]
    escalation: Vec<EscalationLevel>,
    on_timeout: Option<OnTimeout>,
    expires_in: Option<String>,
    /// Reasons a reviewer can pick when rejecting (shown in the rejection form).
    #[serde(default)]
    reject_reasons: Vec<String>,
}

/// A loaded rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub line: u64,
    pub condition: Condition,
    pub requirement: Requirement,
}

/// What applies when no rule matches, per catalog impact.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub low: Requirement,
    pub medium: Requirement,
    pub high: Requirement,
}

impl Defaults {
    pub fn for_impact(&self, impact: Impact) -> &Requirement {
        match impact {
            Impact::Low => &self.low,
            Impact::Medium => &self.medium,
            Impact::High => &self.high,
        }
    }

    /// Where a review goes when the rule that asked for it names no route: the impact's default
    /// route, or the high-impact one (which always has a route).
    pub fn review_route(&self, impact: Impact) -> Vec<String> {
        let own = &self.for_impact(impact).route;
        if own.is_empty() {
            self.high.route.clone()
        } else {
            own.clone()
        }
    }
}

/// Every rule, the defaults and the autonomy criteria, from every `*.yaml` directly in `dir`, in
/// file-name order.
pub fn load(
    dir: &Path,
    roles: &Roles,
    env: &cel::Env,
) -> Result<(Vec<Rule>, Defaults, super::autonomy::Criteria), ManifestError> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut defaults: Option<(PathBuf, Defaults)> = None;
    let mut autonomy: Option<super::autonomy::Criteria> = None;
    for path in policy_files(dir)? {
        let file = read_policy_file(&path)?;
        for (index, spanned) in file.rules.into_iter().enumerate() {
            let rule = rule(&path, index, spanned, &rules, roles, env)?;
            rules.push(rule);
        }
        if let Some(spanned) = file.autonomy {
            autonomy = Some(autonomy_criteria(&path, spanned, autonomy.is_some())?);
        }
        if let Some(spanned) = file.defaults {
            let other = defaults.as_ref().map(|(other, _)| other.as_path());
            let parsed = impact_defaults(&path, spanned, other, roles)?;
            defaults = Some((path.clone(), parsed));
        }
    }
    let (_, defaults) = defaults.ok_or_else(|| {
        ManifestError::new(dir, None, Some("defaults"), "no policy file defines `defaults` (low, medium, high): they apply when no rule matches")
    })?;
    Ok((rules, defaults, autonomy.unwrap_or_default()))
}

/// The `*.yaml` and `*.yml` files directly in `dir`, sorted, so rules keep the order they were
/// written in across files.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) => {
            return Err(ManifestError::new(
                dir,
                None,
                None,
                format!("cannot read policy directory: {e}"),
            ));
        }
    };
    paths.sort();
    Ok(paths)
}

fn read_policy_file(path: &Path) -> Result<PolicyFile, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, None, None, format!("cannot read: {e}")))?;
    serde_saphyr::from_str(&text)
        .map_err(|e| ManifestError::new(path, e.location().map(|l| l.line()), None, e.to_string()))
}

/// The `index`th rule of the file at `path`: named uniquely among `earlier` (every file's),
/// its condition compiled, its requirement checked against the roles.
fn rule(
    path: &Path,
    index: usize,
    spanned: Spanned<Spec>,
    earlier: &[Rule],
    roles: &Roles,
    env: &cel::Env,
) -> Result<Rule, ManifestError> {
    let line = spanned.referenced.line();
    let mut spec = spanned.value;
    let key = |field: &str| format!("rules[{index}].{field}");
    let fail = |field: &str, message: String| {
        ManifestError::new(path, Some(line), Some(&key(field)), message)
    };
    let name = spec
        .name
        .take()
        .ok_or_else(|| fail("name", "a rule needs a name".into()))?;
    let when = spec
        .when
        .take()
        .ok_or_else(|| fail("when", format!("rule {name} needs a `when` condition")))?;
    if crate::domain::AgentId::parse(&name).is_err() {
        return Err(fail(
            "name",
            format!("{name:?}: use lowercase letters, digits, '-', '_'"),
        ));
    }
    if let Some(other) = earlier.iter().find(|r| r.name == name) {
        return Err(fail(
            "name",
            format!(
                "rule {name} is already defined at {}:{}",
                other.file.display(),
                other.line
            ),
        ));
    }
    let condition = Condition::compile(env, &when.value).map_err(|message| {
        ManifestError::new(
            path,
            Some(when.referenced.line()),
            Some(&key("when")),
            format!("rule {name}: {message}"),
        )
    })?;
    let description = std::mem::take(&mut spec.description);
    let requirement = requirement(spec, roles)
        .map_err(|(field, message)| fail(field, format!("rule {name}: {message}")))?;
    Ok(Rule {
        name,
        description,
        file: path.to_path_buf(),
        line,
        condition,
        requirement,
    })
}

/// The autonomy criteria, defined once across all files, with shares that are fractions and
/// promotions that widen.
fn autonomy_criteria(
    path: &Path,
    spanned: Spanned<super::autonomy::Criteria>,
    already_defined: bool,
) -> Result<super::autonomy::Criteria, ManifestError> {
    let line = spanned.referenced.line();
    let fail =
        |message: &str| ManifestError::new(path, Some(line), Some("autonomy"), message.to_owned());
    if already_defined {
        return Err(fail(
            "autonomy criteria are defined in more than one policy file",
        ));
    }
    let criteria = spanned.value;
    let shares = criteria.promote.iter().map(|p| p.max_rejected).chain(
        criteria
            .demote
            .iter()
            .flat_map(|d| [Some(d.max_rejected), d.max_failed])
            .flatten(),
    );
    if shares.into_iter().any(|s| !(0.0..=1.0).contains(&s)) {
        return Err(fail("shares are fractions from 0 to 1 (0.02 = 2%)"));
    }
    if criteria.promote.iter().any(|p| p.to <= p.from) {
        return Err(fail(
            "a promotion goes to a wider tier (read_only < draft_only < approval < autonomous)",
        ));
    }
    Ok(criteria)
}

/// The per-impact defaults, defined once across all files (`other` is where they already
/// were); the high one must route for review, as failed rules fall back to it.
fn impact_defaults(
    path: &Path,
    spanned: Spanned<BTreeMap<Impact, Spanned<Spec>>>,
    other: Option<&Path>,
    roles: &Roles,
) -> Result<Defaults, ManifestError> {
    let line = spanned.referenced.line();
    if let Some(other) = other {
        return Err(ManifestError::new(
            path,
            Some(line),
            Some("defaults"),
            format!("defaults are already defined in {}", other.display()),
        ));
    }
    let mut by_impact = spanned.value;
    let mut take = |impact: Impact, name: &str| -> Result<Requirement, ManifestError> {
        let spec = by_impact.remove(&impact).ok_or_else(|| {
            ManifestError::new(
                path,
                Some(line),
                Some("defaults"),
                format!("defaults.{name} is missing (low, medium and high are all required)"),
            )
        })?;
        default_requirement(path, name, spec, roles)
    };
    let parsed = Defaults {
        low: take(Impact::Low, "low")?,
        medium: take(Impact::Medium, "medium")?,
        high: take(Impact::High, "high")?,
    };
    if !parsed.high.is_review() {
        return Err(ManifestError::new(
            path,
            Some(line),
            Some("defaults.high"),
            "must require a review with a route: it is also where failed rules send proposals",
        ));
    }
    Ok(parsed)
}

/// One impact's default (`defaults.{name}`): a requirement without a rule's name or condition.
fn default_requirement(
    path: &Path,
    name: &str,
    spec: Spanned<Spec>,
    roles: &Roles,
) -> Result<Requirement, ManifestError> {
    let line = spec.referenced.line();
    if spec.value.name.is_some() || spec.value.when.is_some() {
        return Err(ManifestError::new(
            path,
            Some(line),
            Some(&format!("defaults.{name}")),
            "a default applies when no rule matches: it takes no name or when",
        ));
    }
    requirement(spec.value, roles).map_err(|(field, message)| {
        ManifestError::new(
            path,
            Some(line),
            Some(&format!("defaults.{name}.{field}")),
            message,
        )
    })
}

fn duration(field: &'static str, text: &str) -> Result<Duration, (&'static str, String)> {
    humantime::parse_duration(text).map_err(|e| {
        (
            field,
            format!("{text:?} is not a duration such as 30m or 8h: {e}"),
        )
    })
}

/// Validates a requirement: decisions carry a reason and nothing else; reviews carry a route of
/// known roles.
fn requirement(spec: Spec, roles: &Roles) -> Result<Requirement, (&'static str, String)> {
    let reason = spec.reason.clone().unwrap_or_default();
    check_shape(&spec, &reason)?;
    check_route(&spec, roles)?;
    check_reject_reasons(&spec.reject_reasons)?;
    check_escalation(&spec.escalation, roles)?;
    Ok(Requirement {
        decision: spec.decision,
        reason: if reason.is_empty() {
            "review required".into()
        } else {
            reason
        },
        route: spec.route,
        approvals: spec.approvals.unwrap_or(1),
        each_role: spec.each_role,
        sla: spec
            .sla
            .as_deref()
            .map(|t| duration("sla", t))
            .transpose()?,
        step_up: spec.step_up.unwrap_or(StepUp::None),
        escalation: spec.escalation,
        on_timeout: spec.on_timeout,
        reject_reasons: spec.reject_reasons,
        expires_in: spec
            .expires_in
            .as_deref()
            .map(|t| duration("expires_in", t))
            .transpose()?,
    })
}

/// A requirement either decides (with a reason) or routes for review, never both.
fn check_shape(spec: &Spec, reason: &str) -> Result<(), (&'static str, String)> {
    if spec.decision.is_some() {
        if reason.trim().is_empty() {
            return Err((
                "reason",
                "a decision (auto_approve or deny) needs a reason".into(),
            ));
        }
        let review_keys = !spec.route.is_empty()
            || spec.approvals.is_some()
            || spec.each_role
            || spec.sla.is_some()
            || spec.step_up.is_some()
            || !spec.escalation.is_empty();
        if review_keys {
            return Err(("decision", "a rule either decides (decision) or routes for review (route, approvals, sla, step_up, escalation), not both".into()));
        }
    } else if spec.route.is_empty() {
        return Err((
            "route",
            "a review needs a route (one or more roles), or a decision".into(),
        ));
    }
    Ok(())
}

/// The route names known roles, and the quorum is one its approvers can reach.
fn check_route(spec: &Spec, roles: &Roles) -> Result<(), (&'static str, String)> {
    for role in &spec.route {
        if !roles.contains(role) {
            return Err((
                "route",
                format!("no role named {role:?} in manifests/roles.yaml"),
            ));
        }
    }
    if spec.each_role && spec.approvals.is_some() {
        return Err((
            "each_role",
            "use either approvals: N or each_role: true".into(),
        ));
    }
    if spec.approvals == Some(0) {
        return Err(("approvals", "at least 1".into()));
    }
    // A quorum the route cannot reach would leave proposals waiting forever. (A user group's
    // size is not known here: a role with one is given the benefit of the doubt.)
    let reachable: Option<usize> = spec
        .route
        .iter()
        .map(|name| {
            roles
                .get(name)
                .filter(|r| r.approvers.usergroup.is_none())
                .map(|r| r.approvers.users.len())
        })
        .sum();
    if let (Some(approvals), Some(reachable)) = (spec.approvals, reachable)
        && approvals as usize > reachable
    {
        return Err((
            "approvals",
            format!("{approvals} approvals, but the route's roles name only {reachable} approvers"),
        ));
    }
    Ok(())
}

/// Each reason becomes an option in the rejection form's menu: short, and few enough to scan.
fn check_reject_reasons(reasons: &[String]) -> Result<(), (&'static str, String)> {
    if let Some(long) = reasons
        .iter()
        .find(|r| r.trim().is_empty() || r.chars().count() > 75)
    {
        return Err((
            "reject_reasons",
            format!(
                "{long:?}: each reason is 1 to 75 characters (it becomes a menu option in Slack)"
            ),
        ));
    }
    if reasons.len() > 20 {
        return Err(("reject_reasons", "at most 20 reasons".into()));
    }
    Ok(())
}

/// Each level waits a real duration, then either reminds the approvers or notifies someone; a
/// role it notifies must exist.
fn check_escalation(
    levels: &[EscalationLevel],
    roles: &Roles,
) -> Result<(), (&'static str, String)> {
    for level in levels {
        duration("escalation", &level.after)?;
        if level.remind.is_none() == level.notify.is_none() {
            return Err((
                "escalation",
                "each level has either remind: approvers or notify: …".into(),
            ));
        }
        if let Some(EscalationTarget::Role(role)) = &level.notify
            && !roles.contains(role)
        {
            return Err(("escalation", format!("no role named {role:?}")));
        }
    }
    Ok(())
}
