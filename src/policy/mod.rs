//! Policy: decides what each proposal needs.
//!
//! This is the seam the policy engine (CEL rules over `policies/*.yaml`) plugs into. Until it
//! lands, every proposal waits for review on a default route, so nothing is ever let through
//! without a human.

use crate::domain::request::ValidRequest;
use crate::domain::{Quorum, StepUp, Verdict, VerdictOutcome};
use crate::manifest::Agent;

/// The role every proposal is routed to while no policy is loaded.
pub const DEFAULT_ROUTE: &str = "default";

/// The loaded policies.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {}

impl PolicySet {
    /// The verdict for one proposal. Pure: the same inputs always give the same verdict, which
    /// is stored with the proposal.
    pub fn evaluate(&self, _agent: &Agent, _request: &ValidRequest) -> Verdict {
        Verdict {
            outcome: VerdictOutcome::NeedsReview,
            rules: Vec::new(),
            reasons: vec!["no policy matched: review required on the default route".into()],
            route: vec![DEFAULT_ROUTE.into()],
            quorum: Quorum {
                approvals: 1,
                each_role: false,
            },
            sla: None,
            step_up: StepUp::None,
        }
    }
}
