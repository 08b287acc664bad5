//! Reviewers' votes and the quorum arithmetic: which role each approval counts for, and whether
//! the approvals so far meet the verdict's quorum. Pure functions; the store applies them inside
//! the transaction that records the vote, so racing clicks see each other.
//!
//! A person may approve for several routed roles but counts for one. Which one is not fixed when
//! they vote: the roles are assigned over all approvals together (a maximum matching of approvers
//! to the roles' required seats), so an early vote never blocks a quorum a later one completes.

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
    /// The routed roles the voter may approve for, in route order (checked when they voted).
    pub eligible: Vec<String>,
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

/// Which role each vote counts for (`None` for a rejection), and what is still missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub roles: Vec<Option<String>>,
    pub shortfall: Shortfall,
}

/// Assigns approvals to roles so that as many per-role minimums as possible are met (augmenting
/// paths: a voter already seated may move to another of their roles to make room), then seats
/// everyone else in their first role.
pub fn tally(quorum: &Quorum, route: &[String], votes: &[Vote]) -> Tally {
    let minimums = minimums(quorum, route);
    let role_index = |name: &str| minimums.iter().position(|(role, _)| role == name);
    let mut seat: Vec<Option<usize>> = vec![None; votes.len()];
    let mut load = vec![0u32; minimums.len()];
    for voter in 0..votes.len() {
        if votes[voter].ballot == Ballot::Approve {
            let mut visited = vec![false; minimums.len()];
            seat_voter(
                voter,
                votes,
                &minimums,
                &role_index,
                &mut seat,
                &mut load,
                &mut visited,
            );
        }
    }
    let roles = votes
        .iter()
        .zip(&seat)
        .map(|(vote, seat)| match (vote.ballot, seat) {
            (Ballot::Reject, _) => None,
            (Ballot::Approve, Some(role)) => Some(minimums[*role].0.clone()),
            (Ballot::Approve, None) => vote.eligible.first().cloned(),
        })
        .collect();
    let per_role: Vec<(String, u32)> = minimums
        .iter()
        .zip(&load)
        .filter(|((_, min), have)| *have < min)
        .map(|((role, min), have)| (role.clone(), min - have))
        .collect();
    let approvals = votes.iter().filter(|v| v.ballot == Ballot::Approve).count() as u32;
    let still_needed_by_roles: u32 = per_role.iter().map(|(_, n)| n).sum();
    let overall = quorum
        .approvals
        .saturating_sub(approvals)
        .saturating_sub(still_needed_by_roles);
    Tally {
        roles,
        shortfall: Shortfall { per_role, overall },
    }
}

/// What the approvals in `votes` still lack.
pub fn shortfall(quorum: &Quorum, route: &[String], votes: &[Vote]) -> Shortfall {
    tally(quorum, route, votes).shortfall
}

/// Finds `voter` a seat in one of their roles with room, moving seated voters along if that
/// frees one (Kuhn's augmenting path).
fn seat_voter(
    voter: usize,
    votes: &[Vote],
    minimums: &[(String, u32)],
    role_index: &dyn Fn(&str) -> Option<usize>,
    seat: &mut [Option<usize>],
    load: &mut [u32],
    visited: &mut [bool],
) -> bool {
    for role in votes[voter].eligible.iter().filter_map(|r| role_index(r)) {
        if visited[role] || minimums[role].1 == 0 {
            continue;
        }
        visited[role] = true;
        if load[role] < minimums[role].1 {
            seat[voter] = Some(role);
            load[role] += 1;
            return true;
        }
        let seated: Vec<usize> = (0..votes.len())
            .filter(|&v| seat[v] == Some(role))
            .collect();
        for other in seated {
            load[role] -= 1;
            seat[other] = None;
            if seat_voter(other, votes, minimums, role_index, seat, load, visited) {
                seat[voter] = Some(role);
                load[role] += 1;
                return true;
            }
            seat[other] = Some(role);
            load[role] += 1;
        }
    }
    false
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

    fn approve(voter: &str, roles: &[&str]) -> Vote {
        Vote {
            voter: voter.into(),
            eligible: route(roles),
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
        assert!(shortfall(&q, &r, &[approve("U1", &["finance"])]).is_met());
    }

    #[test]
    fn each_role_needs_every_role_and_one_person_counts_once() {
        let q = quorum(2, true, &[]);
        let r = route(&["finance", "legal"]);
        let one = [approve("U1", &["finance"])];
        assert_eq!(shortfall(&q, &r, &one).describe(), "1 more from legal");
        // A second finance approval does not stand in for legal.
        let two_finance = [approve("U1", &["finance"]), approve("U2", &["finance"])];
        assert!(!shortfall(&q, &r, &two_finance).is_met());
        // One person in both roles is one approval, not two.
        let both = [approve("U1", &["finance", "legal"])];
        assert_eq!(shortfall(&q, &r, &both).describe(), "1 more from legal");
        let done = [approve("U1", &["finance"]), approve("U3", &["legal"])];
        assert!(shortfall(&q, &r, &done).is_met());
    }

    #[test]
    fn an_early_voter_in_two_roles_moves_aside_for_a_later_one() {
        let q = quorum(2, true, &[]);
        let r = route(&["finance", "legal"]);
        // U1 could sit in finance or legal and is seated in finance first; U2 can only be
        // finance: U1 moves to legal and the quorum is met.
        let votes = [
            approve("U1", &["finance", "legal"]),
            approve("U2", &["finance"]),
        ];
        let tally = tally(&q, &r, &votes);
        assert!(tally.shortfall.is_met(), "{:?}", tally.shortfall);
        assert_eq!(
            tally.roles,
            [Some("legal".to_owned()), Some("finance".to_owned())]
        );
    }

    #[test]
    fn per_role_minimums_and_an_overall_count_combine() {
        let q = quorum(3, false, &[("security", 2)]);
        let r = route(&["security", "revops"]);
        let s = shortfall(&q, &r, &[approve("U1", &["revops"])]);
        assert_eq!(s.describe(), "2 more from security");
        let s = shortfall(&q, &r, &[approve("U1", &["security"])]);
        assert_eq!(s.describe(), "1 more from security, 1 more approval");
        let s = shortfall(
            &q,
            &r,
            &[
                approve("U1", &["security"]),
                approve("U2", &["security"]),
                approve("U3", &["revops"]),
            ],
        );
        assert!(s.is_met());
    }

    #[test]
    fn rejections_sit_nowhere() {
        let q = quorum(1, false, &[]);
        let r = route(&["finance"]);
        let mut no = approve("U1", &["finance"]);
        no.ballot = Ballot::Reject;
        let tally = tally(&q, &r, &[no]);
        assert_eq!(tally.roles, [None]);
        assert!(!tally.shortfall.is_met());
    }
}
