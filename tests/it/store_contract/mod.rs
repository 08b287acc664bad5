//! The storage contract: the same cases against SQLite and PostgreSQL, straight at the trait,
//! by table family; the fixtures here are shared with other suites.

mod outbox;
mod proposals;
mod timers_and_reports;
mod votes_and_step_up;

use std::sync::Arc;

use chrono::Duration;
use countersign::audit::{AuditDraft, AuditFilter};
use countersign::domain::request::ProposalRequest;
use countersign::domain::*;
use countersign::store::{
    Command, CommandResult, IdempotencyKey, Redelivery, StepUpChange, StepUpProof, Store,
    VoteRefusal,
};
use serde_json::json;

use crate::both_backends;
use crate::common::{TestDb, discount_proposal, start_time};

pub fn proposal(agent: &str) -> Proposal {
    let request = ProposalRequest::from_json(discount_proposal())
        .unwrap()
        .validate()
        .unwrap();
    let at = start_time();
    Proposal {
        id: ProposalId::generate(),
        agent: AgentId::parse(agent).unwrap(),
        status: Status::Pending,
        content: request.into_content(
            Verdict {
                outcome: VerdictOutcome::NeedsReview,
                rules: vec!["large-discount".into()],
                reasons: vec!["large-discount: Discounts above 10% need finance".into()],
                route: vec!["finance".into()],
                quorum: Quorum {
                    approvals: 1,
                    each_role: false,
                    per_role: [("finance".to_owned(), 1)].into(),
                },
                sla: Some("30m".into()),
                step_up: StepUp::None,
                escalation: Vec::new(),
                on_timeout: None,
                reject_reasons: Vec::new(),
            },
            Some(at + Duration::hours(8)),
        ),
        decision: None,
        outcome: None,
        created_at: at,
        updated_at: at,
    }
}

pub fn submit(p: &Proposal, key: Option<(&str, &str)>) -> Command {
    Command::Submit {
        proposal: Box::new(p.clone()),
        idempotency: key.map(|(key, hash)| IdempotencyKey {
            key: key.into(),
            request_hash: hash.into(),
        }),
        card_channels: Default::default(),
    }
}

/// [`submit`] whose finance card is queued in `channel` behind that channel's earlier cards.
pub fn submit_to_channel(p: &Proposal, channel: &str) -> Command {
    Command::Submit {
        proposal: Box::new(p.clone()),
        idempotency: None,
        card_channels: [("finance".to_owned(), channel.to_owned())].into(),
    }
}

pub fn decide(p: &Proposal, status: Status) -> Command {
    Command::Decide {
        id: p.id.clone(),
        status,
        decision: Decision {
            by: Actor::policy(),
            at: start_time(),
            reason: Some("test".into()),
            execution_token: None,
            digest: None,
        },
    }
}

pub(super) async fn apply_one(store: &dyn Store, command: Command) -> CommandResult {
    store
        .apply(vec![command], start_time())
        .await
        .unwrap()
        .remove(0)
}
