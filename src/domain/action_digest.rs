//! What an approval is bound to: a digest of exactly what would be executed — the action, its
//! target, its changes and its params — and nothing a reviewer reads only for context (summary,
//! rationale, evidence, metadata). The decision and the `proposal.decided` callback carry it,
//! and the agent's outcome must name it: an agent can prove it ran exactly what was approved,
//! and a proposal edited after a vote is a different action, with a different digest.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::ProposalContent;

/// `sha256:` and 64 lowercase hex digits: SHA-256 over the canonical JSON (keys sorted, no
/// white space) of `{"action", "target", "changes", "params"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionDigest(String);

impl ActionDigest {
    pub const PREFIX: &'static str = "sha256:";

    pub fn of(content: &ProposalContent) -> Self {
        let executed = json!({
            "action": content.action,
            "target": content.target,
            "changes": content.changes,
            "params": content.params,
        });
        let hash = Sha256::digest(crate::canonical::to_string(&executed).as_bytes());
        Self(format!("{}{}", Self::PREFIX, hex::encode(hash)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for people to compare at a glance (cards, logs).
    pub fn short(&self) -> &str {
        &self.0[Self::PREFIX.len()..Self::PREFIX.len() + 12]
    }

    /// Whether `named` (what an agent says it executed) is this digest; constant time.
    pub fn matches(&self, named: &str) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.0.as_bytes(), named.trim().as_bytes()).into()
    }
}

impl std::fmt::Display for ActionDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::request::ProposalRequest;

    fn content(body: serde_json::Value) -> ProposalContent {
        let request = ProposalRequest::from_json(body)
            .unwrap()
            .validate()
            .unwrap();
        let verdict = crate::domain::Verdict {
            outcome: crate::domain::VerdictOutcome::NeedsReview,
            rules: Vec::new(),
            reasons: Vec::new(),
            route: Vec::new(),
            quorum: crate::domain::Quorum {
                approvals: 1,
                each_role: false,
                per_role: Default::default(),
            },
            sla: None,
            step_up: crate::domain::StepUp::None,
            escalation: Vec::new(),
            on_timeout: None,
            reject_reasons: Vec::new(),
        };
        request.into_content(verdict, None)
    }

    #[test]
    fn binds_what_runs_and_nothing_else() {
        let base = json!({"action": "crm.opportunity.update", "summary": "Apply 15%",
                          "target": {"system": "crm", "type": "opportunity", "id": "006A"},
                          "params": {"discount_percent": 15, "currency": "EUR"}});
        let digest = ActionDigest::of(&content(base.clone()));
        assert!(digest.as_str().starts_with("sha256:") && digest.as_str().len() == 71);
        assert_eq!(digest.short().len(), 12);
        // Key order and context do not change it…
        let mut reordered = json!({"params": {"currency": "EUR", "discount_percent": 15}});
        for key in ["action", "target"] {
            reordered[key] = base[key].clone();
        }
        reordered["summary"] = json!("Same action, other words");
        reordered["rationale"] = json!("Renewal at risk");
        assert_eq!(ActionDigest::of(&content(reordered)), digest);
        // …what would run does.
        let mut lower = base.clone();
        lower["params"]["discount_percent"] = json!(8);
        assert_ne!(ActionDigest::of(&content(lower)), digest);
        let mut other = base;
        other["target"]["id"] = json!("006B");
        assert_ne!(ActionDigest::of(&content(other)), digest);
        assert!(digest.matches(&format!(" {digest}\n")));
        assert!(!digest.matches(digest.short()));
    }
}
