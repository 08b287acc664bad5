//! A proposal: what an agent wants to do, the verdict policy gave it, and where it is in its
//! lifecycle (`pending` → `approved | rejected | expired | cancelled`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{ActionId, AgentId, ProposalId, Verdict};

/// Lifecycle state. Every state but `pending` is terminal: a decision never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Approved,
        Status::Rejected,
        Status::Expired,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        self != Status::Pending
    }
}

/// The system a proposal acts on (`salesforce` / `Opportunity` / `006…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub system: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One line of the diff: the field at `path` goes from `before` to `after`. A missing `before`
/// means the value is added; a missing `after` that it is removed. An explicit `null` is a value
/// (the field was, or becomes, null) and is kept as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub path: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// A field that is present is `Some`, even when it is `null` (serde would make that `None`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Something the agent cites in support of the proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

/// Data sensitivity classes a proposal touches; policies and risk badges read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    Pii,
    Financial,
    Health,
    Contractual,
    Confidential,
}

/// Who moved a proposal: an agent (cancel), policy (auto decisions), a reviewer, or the system
/// (timers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Agent,
    Policy,
    Reviewer,
    System,
}

impl Actor {
    pub fn agent(id: &AgentId) -> Self {
        Self {
            kind: ActorKind::Agent,
            id: id.to_string(),
        }
    }

    pub fn policy() -> Self {
        Self {
            kind: ActorKind::Policy,
            id: "policy".into(),
        }
    }

    /// The compact form used in the audit log: `agent:revops-crm`, `policy`.
    pub fn audit_name(&self) -> String {
        match self.kind {
            ActorKind::Policy if self.id.is_empty() || self.id == "policy" => "policy".into(),
            ActorKind::Policy => format!("policy:{}", self.id),
            ActorKind::Agent => format!("agent:{}", self.id),
            ActorKind::Reviewer => format!("reviewer:{}", self.id),
            ActorKind::System => format!("system:{}", self.id),
        }
    }
}

/// How a proposal left `pending`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub by: Actor,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For an approval: what the agent presents, once, with its outcome
    /// (`POST /v1/proposals/{id}/outcome`), so one approval is acted on at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_token: Option<String>,
    /// For an approval: the [`ActionDigest`](super::ActionDigest) of what was approved, which
    /// the outcome must name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "sha256:5f0c…")]
    pub digest: Option<super::ActionDigest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionResult {
    Executed,
    Failed,
}

/// What the agent reports after acting on an approval; closes the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionOutcome {
    pub result: ExecutionResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    pub at: DateTime<Utc>,
}

/// The part of a proposal fixed at submission: what the agent sent, normalised, plus the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProposalContent {
    #[schema(value_type = String, example = "crm.opportunity.update")]
    pub action: ActionId,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    pub changes: Vec<Change>,
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    pub evidence: Vec<Evidence>,
    pub data_classes: Vec<DataClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub verdict: Verdict,
}

/// A stored proposal as agents see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Proposal {
    #[schema(value_type = String, example = "prop_01jd2m3k4n5p6q7r8s9t0v1w2x")]
    pub id: ProposalId,
    #[schema(value_type = String, example = "revops-crm")]
    pub agent: AgentId,
    pub status: Status,
    #[serde(flatten)]
    pub content: ProposalContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ExecutionOutcome>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Proposal {
    /// Names the proposal as it stands: its status and its last change. A reviewer's form is
    /// bound to the version they were shown, and an answer to an older one does not count.
    pub fn version(&self) -> String {
        format!(
            "{}@{}",
            self.status.as_str(),
            self.updated_at.timestamp_micros()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_absent_stay_distinct_in_a_change() {
        let change: Change =
            serde_json::from_str(r#"{"path": "owner", "before": null, "after": "bob"}"#).unwrap();
        assert_eq!(change.before, Some(Value::Null));
        let added: Change = serde_json::from_str(r#"{"path": "owner", "after": "bob"}"#).unwrap();
        assert_eq!(added.before, None);
        let round_trip: Change =
            serde_json::from_str(&serde_json::to_string(&change).unwrap()).unwrap();
        assert_eq!(round_trip, change);
    }

    #[test]
    fn status_names_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                Value::String(status.as_str().into())
            );
        }
        assert!(!Status::Pending.is_terminal());
        assert!(Status::Cancelled.is_terminal());
    }
}
