//! Reviewers' votes and the quorum arithmetic: which role a vote counts for, and whether the
//! approvals so far meet the verdict's quorum. Pure functions; the store applies them inside
//! the transaction that records the vote, so racing clicks see each other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Quorum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ballot {
    Approve,
    Reject,
}

impl Ballot {
    pub fn as_str(self) -> &'static str {
        match self {
            Ballot::Approve => "approve",
            Ballot::Reject => "reject",
        }
    }
}

/// One reviewer's vote on one proposal (one per person).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Vote {
    /// Slack user id.
    pub voter: String,
    /// The role an approval counts for (a person counts for one role only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub ballot: Ballot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// What each routed role still needs: `(role, missing approvals)`, plus approvals missing
/// overall beyond the per-role minimums.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shortfall {
    pub per_role: Vec<(String, u32)>,
    pub overall: u32,
}

impl Shortfall {
    pub fn is_met(&self) -> bool {
        self.per_role.is_empty() && self.overall == 0
    }

    /// "1 more from legal", "2 more approvals", "1 more from finance, then 1 more approval".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .per_role
            .iter()
            .map(|(role, n)| format!("{n} more from {role}"))
            .collect();
        if self.overall > 0 {
            parts.push(format!(
                "{} more approval{}",
                self.overall,
                if self.overall == 1 { "" } else { "s" }
            ));
        }
        if parts.is_empty() {
            "quorum met".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The minimum approvals each role must give: `per_role`, and 1 for every routed role when the
/// quorum is `each_role`.
fn minimums(quorum: &Quorum, route: &[String]) -> Vec<(String, u32)> {
    route
        .iter()
        .map(|role| {
            let mut min = quorum.per_role.get(role).copied().unwrap_or(0);
            if quorum.each_role {
                min = min.max(1);
            }
            (role.clone(), min)
        })
        .collect()
}

fn approvals_for<'a>(votes: &'a [Vote], role: &'a str) -> impl Iterator<Item = &'a Vote> {
    votes
        .iter()
        .filter(move |v| v.ballot == Ballot::Approve && v.role.as_deref() == Some(role))
}

/// What the approvals in `votes` still lack.
pub fn shortfall(quorum: &Quorum, route: &[String], votes: &[Vote]) -> Shortfall {
    let per_role: Vec<(String, u32)> = minimums(quorum, route)
        .into_iter()
        .filter_map(|(role, min)| {
            let have = approvals_for(votes, &role).count() as u32;
            (have < min).then(|| (role, min - have))
        })
        .collect();
    let approvals = votes.iter().filter(|v| v.ballot == Ballot::Approve).count() as u32;
    let still_needed_by_roles: u32 = per_role.iter().map(|(_, n)| n).sum();
    let overall = quorum
        .approvals
        .saturating_sub(approvals)
        .saturating_sub(still_needed_by_roles);
    Shortfall { per_role, overall }
}

/// The role a new approval from someone who may approve for `eligible` (in route order) counts
/// for: the role that still lacks the most, else the first.
pub fn role_for(
    quorum: &Quorum,
    route: &[String],
    votes: &[Vote],
    eligible: &[String],
) -> Option<String> {
    let lacking = shortfall(quorum, route, votes).per_role;
    let most_lacking = eligible
        .iter()
        .filter_map(|role| {
            lacking
                .iter()
                .find(|(r, _)| r == role)
                .map(|(_, n)| (role, *n))
        })
        .max_by_key(|(role, n)| {
            (
                *n,
                std::cmp::Reverse(eligible.iter().position(|r| r == *role)),
            )
        });
    most_lacking
        .map(|(role, _)| role.clone())
        .or_else(|| eligible.first().cloned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn quorum(approvals: u32, each_role: bool, per_role: &[(&str, u32)]) -> Quorum {
        Quorum {
            approvals,
            each_role,
            per_role: per_role
                .iter()
                .map(|(r, n)| (r.to_string(), *n))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn approve(voter: &str, role: &str) -> Vote {
        Vote {
            voter: voter.into(),
            role: Some(role.into()),
            ballot: Ballot::Approve,
            reason: None,
            at: Utc::now(),
        }
    }

    fn route(roles: &[&str]) -> Vec<String> {
        roles.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn one_approval_from_one_role() {
        let q = quorum(1, false, &[]);
        let r = route(&["finance"]);
        assert_eq!(shortfall(&q, &r, &[]).describe(), "1 more approval");
        assert!(shortfall(&q, &r, &[approve("U1", "finance")]).is_met());
    }

    #[test]
    fn each_role_needs_every_role_and_one_person_counts_once() {
        let q = quorum(2, true, &[]);
        let r = route(&["finance", "legal"]);
        let one = [approve("U1", "finance")];
        assert_eq!(shortfall(&q, &r, &one).describe(), "1 more from legal");
        // A second finance approval does not stand in for legal.
        let two_finance = [approve("U1", "finance"), approve("U2", "finance")];
        assert!(!shortfall(&q, &r, &two_finance).is_met());
        let both = [approve("U1", "finance"), approve("U3", "legal")];
        assert!(shortfall(&q, &r, &both).is_met());
    }

    #[test]
    fn per_role_minimums_and_an_overall_count_combine() {
        let q = quorum(3, false, &[("security", 2)]);
        let r = route(&["security", "revops"]);
        let s = shortfall(&q, &r, &[approve("U1", "revops")]);
        assert_eq!(s.describe(), "2 more from security");
        let s = shortfall(&q, &r, &[approve("U1", "security")]);
        assert_eq!(s.describe(), "1 more from security, 1 more approval");
    }

    #[test]
    fn a_voter_in_two_roles_counts_where_needed_most() {
        let q = quorum(2, true, &[]);
        let r = route(&["finance", "legal"]);
        let both = route(&["finance", "legal"]);
        assert_eq!(
            role_for(&q, &r, &[approve("U1", "finance")], &both).as_deref(),
            Some("legal")
        );
        assert_eq!(role_for(&q, &r, &[], &both).as_deref(), Some("finance"));
        let q = quorum(1, false, &[]);
        assert_eq!(
            role_for(&q, &r, &[], &route(&["legal"])).as_deref(),
            Some("legal")
        );
    }
}
