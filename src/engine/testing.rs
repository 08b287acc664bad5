//! The core on a temporary SQLite file with its clock in hand, for the core's unit tests: a
//! real store, the repository's manifests and policies, a workspace that answers from the
//! manifests; no Slack, no HTTP.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Cast, ClickRefusal, Engine, People};
use crate::audit::AuditFilter;
use crate::clock::ManualClock;
use crate::domain::request::ProposalRequest;
use crate::domain::{
    AgentId, Ballot, Proposal, ProposalId, Quorum, Status, StepUp, Verdict, VerdictOutcome,
};
use crate::manifest::Role;
use crate::registry::Registry;
use crate::store::prelude::*;
use crate::store::{Command, PoolSettings, SqliteStore, Store};

/// The workspace as the tests need it: the manifests' approvers, and one email.
pub(super) struct Workspace {
    /// `jane@example.com`'s user, or the lookup failing.
    pub jane: Result<Option<String>, String>,
    /// Approves for every role besides the manifests' approvers.
    pub also_approves: Option<&'static str>,
}

#[async_trait]
impl People for Workspace {
    async fn approves_for(&self, role: &Role, user: &str) -> bool {
        self.also_approves == Some(user) || role.approvers.users.iter().any(|u| u == user)
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<String>, String> {
        assert_eq!(email, "jane@example.com");
        self.jane.clone()
    }
}

/// Nobody is jane; only the manifests' approvers approve.
pub(super) const NOBODY_SPECIAL: Workspace = Workspace {
    jane: Ok(None),
    also_approves: None,
};

pub(super) struct Core {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub clock: ManualClock,
    pub registry: Registry,
    _dir: tempfile::TempDir,
}

/// A migrated store in a fresh temporary directory and an engine on it, at 2026-12-02 09:00 UTC.
pub(super) async fn core() -> Core {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("cs.db"), &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let clock = ManualClock::new(crate::clock::parse_timestamp("2026-12-02T09:00:00Z").unwrap());
    let engine = Engine::start(store.clone(), Arc::new(clock.clone()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let registry = Registry::load(&root.join("manifests"), &root.join("policies")).unwrap();
    Core {
        engine,
        store,
        clock,
        registry,
        _dir: dir,
    }
}

impl Core {
    /// A pending discount of revops-crm (owned by U0REVOPS01) for jane, routed to finance
    /// (U0FIN001, U0FIN002), one approval, with `step_up`.
    pub async fn pending(&self, step_up: StepUp) -> Proposal {
        let request = ProposalRequest::from_json(json!({
            "action": "crm.opportunity.update",
            "summary": "Apply 15% discount",
            "params": {"discount_percent": 15},
            "requested_by": "jane@example.com",
        }))
        .unwrap()
        .validate()
        .unwrap();
        let verdict = Verdict {
            outcome: VerdictOutcome::NeedsReview,
            rules: vec!["large-discount".into()],
            reasons: Vec::new(),
            route: vec!["finance".into()],
            quorum: Quorum {
                approvals: 1,
                each_role: false,
                per_role: Default::default(),
            },
            sla: None,
            step_up,
            escalation: Vec::new(),
            on_timeout: None,
            reject_reasons: Vec::new(),
        };
        let now = self.engine.clock().now();
        let proposal = Proposal {
            id: ProposalId::generate(),
            agent: AgentId::parse("revops-crm").unwrap(),
            status: Status::Pending,
            content: request.into_content(verdict, None),
            decision: None,
            outcome: None,
            created_at: now,
            updated_at: now,
        };
        let submit = Command::Submit {
            proposal: Box::new(proposal.clone()),
            idempotency: None,
            card_channels: Default::default(),
        };
        self.engine.apply(submit).await.unwrap();
        proposal
    }

    /// A plain approve click.
    pub async fn approve(
        &self,
        people: &Workspace,
        proposal: &Proposal,
        user: &str,
        dedupe: &str,
    ) -> Result<Cast, ClickRefusal> {
        (self.engine)
            .review(
                people,
                &self.registry,
                proposal,
                user,
                Ballot::Approve,
                None,
                dedupe.into(),
            )
            .await
            .unwrap()
    }

    /// The audit events on `proposal`, as (kind, data), in order.
    pub async fn audit_of(&self, proposal: &ProposalId) -> Vec<(String, Value)> {
        let filter = AuditFilter {
            since: None,
            proposal_id: Some(proposal.to_string()),
        };
        let events = self.store.audit_page(&filter, 0, 100).await.unwrap();
        events
            .into_iter()
            .map(|e| (e.kind, serde_json::from_str(&e.data).unwrap()))
            .collect()
    }

    /// The reasons of the events of `kind` audited on `proposal`.
    pub async fn reasons(&self, proposal: &ProposalId, kind: &str) -> Vec<String> {
        self.audit_of(proposal)
            .await
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, data)| data["reason"].as_str().unwrap().to_owned())
            .collect()
    }
}
