//! What a rule (or a default) requires of a proposal, and how several combine into one verdict:
//! to the strictest. Pure functions, no CEL, no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{EscalationLevel, OnTimeout, Quorum, StepUp, Verdict, VerdictOutcome};

/// A decision a rule takes by itself, without a reviewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleDecision {
    AutoApprove,
    Deny,
}

/// The requirement part of a rule, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub decision: Option<RuleDecision>,
    pub reason: String,
    pub route: Vec<String>,
    pub approvals: u32,
    pub each_role: bool,
    pub sla: Option<Duration>,
    pub step_up: StepUp,
    pub escalation: Vec<EscalationLevel>,
    pub on_timeout: Option<OnTimeout>,
    pub expires_in: Option<Duration>,
    pub reject_reasons: Vec<String>,
}

impl Requirement {
    /// A review on `route` with nothing else: what a rule that failed to evaluate requires.
    pub fn review(route: Vec<String>, reason: String) -> Self {
        Self {
            decision: None,
            reason,
            route,
            approvals: 1,
            each_role: false,
            sla: None,
            step_up: StepUp::None,
            escalation: Vec::new(),
            on_timeout: None,
            expires_in: None,
            reject_reasons: Vec::new(),
        }
    }

    pub fn is_review(&self) -> bool {
        self.decision.is_none()
    }
}

fn strength(step_up: StepUp) -> u8 {
    match step_up {
        StepUp::None => 0,
        StepUp::Confirm => 1,
        StepUp::Totp => 2,
    }
}

/// Formats a duration the way policies write them (`30m`, `1h 30m`).
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Combines the requirements of every matching rule (named) into one verdict, to the strictest:
/// deny beats review beats auto-approve; approvals = max; routes = union; SLA = shortest;
/// step-up = strongest; expiry = shortest. The escalation ladder comes with the shortest SLA.
pub fn combine(matched: &[(&str, &Requirement)]) -> (Verdict, Option<Duration>) {
    let rules: Vec<String> = matched.iter().map(|(name, _)| (*name).to_owned()).collect();
    let reasons = |pick: &dyn Fn(&Requirement) -> bool| -> Vec<String> {
        matched
            .iter()
            .filter(|(_, r)| pick(r))
            .map(|(name, r)| format!("{name}: {}", r.reason))
            .collect()
    };

    if matched
        .iter()
        .any(|(_, r)| r.decision == Some(RuleDecision::Deny))
    {
        let reasons = reasons(&|r| r.decision == Some(RuleDecision::Deny));
        return (decided(VerdictOutcome::Deny, rules, reasons), None);
    }
    let reviews: Vec<&Requirement> = matched
        .iter()
        .map(|(_, r)| *r)
        .filter(|r| r.is_review())
        .collect();
    if reviews.is_empty() {
        let reasons = reasons(&|_| true);
        return (decided(VerdictOutcome::AutoApprove, rules, reasons), None);
    }

    let sla = reviews.iter().filter_map(|r| r.sla).min();
    let ladder = reviews
        .iter()
        .filter(|r| !r.escalation.is_empty())
        .min_by_key(|r| r.sla.unwrap_or(Duration::MAX));
    let expires_in = matched.iter().filter_map(|(_, r)| r.expires_in).min();
    let verdict = Verdict {
        outcome: VerdictOutcome::NeedsReview,
        rules,
        reasons: reasons(&|r| r.is_review()),
        route: merged_route(&reviews),
        quorum: merged_quorum(&reviews),
        sla: sla.map(format_duration),
        step_up: reviews
            .iter()
            .map(|r| r.step_up)
            .max_by_key(|s| strength(*s))
            .unwrap_or(StepUp::None),
        escalation: ladder.map(|r| r.escalation.clone()).unwrap_or_default(),
        // Every review rule's preset rejection reasons, once each, in rule order.
        reject_reasons: reviews.iter().flat_map(|r| &r.reject_reasons).fold(
            Vec::new(),
            |mut all, reason| {
                if !all.contains(reason) {
                    all.push(reason.clone());
                }
                all
            },
        ),
        // The ladder's own ending, else the strictest any review rule asks for.
        on_timeout: ladder.and_then(|r| r.on_timeout).or_else(|| {
            reviews
                .iter()
                .filter_map(|r| r.on_timeout)
                .max_by_key(|t| *t == OnTimeout::Expire)
        }),
    };
    (verdict, expires_in)
}

/// A verdict that needs nobody (deny or auto-approve): no route, quorum or deadline.
fn decided(outcome: VerdictOutcome, rules: Vec<String>, reasons: Vec<String>) -> Verdict {
    Verdict {
        outcome,
        rules,
        reasons,
        route: Vec::new(),
        quorum: Quorum {
            approvals: 0,
            each_role: false,
            per_role: BTreeMap::new(),
        },
        sla: None,
        step_up: StepUp::None,
        escalation: Vec::new(),
        on_timeout: None,
        reject_reasons: Vec::new(),
    }
}

/// Every review's roles, once each, in rule order.
fn merged_route(reviews: &[&Requirement]) -> Vec<String> {
    let mut route: Vec<String> = Vec::new();
    for role in reviews.iter().flat_map(|r| &r.route) {
        if !route.contains(role) {
            route.push(role.clone());
        }
    }
    route
}

/// The largest quorum any review asks for, and never less than the per-role minimums added up.
fn merged_quorum(reviews: &[&Requirement]) -> Quorum {
    // Per-role minimums survive the merge: a single-role rule asks its approvals of that role,
    // an each_role rule one of each of its roles. Pooling them would let "two security
    // approvers" be met by one from security and one from legal.
    let mut per_role: BTreeMap<String, u32> = BTreeMap::new();
    for review in reviews {
        let minimum = match review.route.as_slice() {
            [_] => review.approvals,
            _ if review.each_role => 1,
            _ => continue,
        };
        for role in &review.route {
            let entry = per_role.entry(role.clone()).or_default();
            *entry = (*entry).max(minimum);
        }
    }
    let each_role = reviews.iter().any(|r| r.each_role);
    let approvals = reviews
        .iter()
        .map(|r| r.approvals)
        .max()
        .unwrap_or(1)
        .max(per_role.values().sum());
    Quorum {
        approvals,
        each_role,
        per_role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RemindWhom;

    fn review(route: &[&str], approvals: u32, sla_min: u64, step_up: StepUp) -> Requirement {
        Requirement {
            approvals,
            sla: Some(Duration::from_secs(sla_min * 60)),
            step_up,
            ..Requirement::review(
                route.iter().map(|s| s.to_string()).collect(),
                "needs a look".into(),
            )
        }
    }

    fn decided(decision: RuleDecision) -> Requirement {
        Requirement {
            decision: Some(decision),
            ..Requirement::review(vec![], "decided".into())
        }
    }

    #[test]
    fn deny_beats_review_beats_auto_approve() {
        let (auto, deny, rev) = (
            decided(RuleDecision::AutoApprove),
            decided(RuleDecision::Deny),
            review(&["finance"], 1, 30, StepUp::None),
        );
        assert_eq!(
            combine(&[("a", &auto)]).0.outcome,
            VerdictOutcome::AutoApprove
        );
        assert_eq!(
            combine(&[("a", &auto), ("r", &rev)]).0.outcome,
            VerdictOutcome::NeedsReview
        );
        let (verdict, _) = combine(&[("a", &auto), ("r", &rev), ("d", &deny)]);
        assert_eq!(verdict.outcome, VerdictOutcome::Deny);
        assert_eq!(verdict.reasons, ["d: decided"]);
        assert_eq!(verdict.rules, ["a", "r", "d"]);
    }

    #[test]
    fn reviews_combine_to_the_strictest() {
        let finance = review(&["finance"], 1, 30, StepUp::Totp);
        let legal = Requirement {
            expires_in: Some(Duration::from_secs(3600)),
            ..review(&["legal", "finance"], 2, 60, StepUp::Confirm)
        };
        let (verdict, expires_in) = combine(&[("f", &finance), ("l", &legal)]);
        assert_eq!(verdict.route, ["finance", "legal"]);
        assert_eq!(
            verdict.quorum,
            Quorum {
                approvals: 2,
                each_role: false,
                per_role: BTreeMap::from([("finance".into(), 1)]),
            }
        );
        assert_eq!(verdict.sla.as_deref(), Some("30m"));
        assert_eq!(verdict.step_up, StepUp::Totp);
        assert_eq!(expires_in, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn each_role_needs_at_least_one_approval_per_role() {
        let security = Requirement {
            each_role: true,
            ..review(&["security", "legal"], 1, 60, StepUp::None)
        };
        let (verdict, _) = combine(&[("s", &security)]);
        assert_eq!(
            verdict.quorum,
            Quorum {
                approvals: 2,
                each_role: true,
                per_role: BTreeMap::from([("security".into(), 1), ("legal".into(), 1)]),
            }
        );
    }

    #[test]
    fn per_role_minimums_are_not_pooled() {
        // Two security approvers, plus legal: one of each will not do.
        let security = review(&["security"], 2, 60, StepUp::Totp);
        let legal = review(&["legal"], 1, 240, StepUp::None);
        let (verdict, _) = combine(&[("s", &security), ("l", &legal)]);
        assert_eq!(verdict.quorum.approvals, 3);
        assert_eq!(
            verdict.quorum.per_role,
            BTreeMap::from([("security".into(), 2), ("legal".into(), 1)])
        );
    }

    #[test]
    fn the_ladder_comes_with_the_shortest_sla() {
        let level = |after: &str| EscalationLevel {
            after: after.into(),
            remind: Some(RemindWhom::Approvers),
            notify: None,
            repeat: None,
            grants_approval: false,
        };
        let slow = Requirement {
            escalation: vec![level("2h")],
            on_timeout: Some(OnTimeout::Wait),
            ..review(&["a"], 1, 240, StepUp::None)
        };
        let fast = Requirement {
            escalation: vec![level("15m")],
            on_timeout: Some(OnTimeout::Expire),
            ..review(&["b"], 1, 30, StepUp::None)
        };
        let (verdict, _) = combine(&[("slow", &slow), ("fast", &fast)]);
        assert_eq!(verdict.escalation[0].after, "15m");
        assert_eq!(verdict.on_timeout, Some(OnTimeout::Expire));
    }
}
