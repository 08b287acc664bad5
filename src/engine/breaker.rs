//! The circuit breaker: an agent whose latest proposals are all rejected, or that floods its
//! rate limit, is paused automatically (`system:breaker`), the role channels are told why, and a
//! person must resume it (`/countersign resume AGENT`). Thresholds come from the agent's
//! manifest (`circuit_breaker`); without them it never trips.

//!
//! A rule of the core: every adapter that sees a rejection or a flood (the agent API, Slack)
//! reports it here.

use super::Engine;
use crate::domain::{Control, ControlMode, Status};
use crate::registry::Registry;

pub const ACTOR: &str = crate::domain::control::BREAKER;

impl Engine {
    /// After a proposal of `agent` was rejected (by people or by policy).
    pub async fn after_rejection(&self, registry: &Registry, agent: &str) {
        let Some(threshold) = registry
            .agents
            .get(agent)
            .and_then(|a| a.circuit_breaker)
            .and_then(|b| b.rejections_in_a_row)
        else {
            return;
        };
        let latest = match self
            .store
            .latest_verdicts_of(agent, i64::from(threshold))
            .await
        {
            Ok(latest) => latest,
            Err(error) => {
                tracing::warn!(%error, %agent, "circuit breaker: cannot read the agent's record");
                return;
            }
        };
        let tripped =
            latest.len() == threshold as usize && latest.iter().all(|s| *s == Status::Rejected);
        if tripped {
            let reason = format!("its last {threshold} proposals were all rejected");
            self.trip(agent, reason).await;
        }
    }

    /// After the rate limit refused `agent` for the `refused`-th time within a minute.
    pub async fn after_rate_limited(&self, agent: &crate::manifest::Agent, refused: u32) {
        let threshold = agent
            .circuit_breaker
            .and_then(|b| b.rate_limited_per_minute);
        if threshold.is_some_and(|t| refused == t) {
            let reason =
                format!("it flooded: {refused} proposals over its rate limit within a minute");
            self.trip(agent.id.as_str(), reason).await;
        }
    }

    /// Pauses the agent unless it already is, and says so where its cards go.
    async fn trip(&self, agent: &str, reason: String) {
        let engine = self;
        let paused = engine
            .controls()
            .of(agent)
            .iter()
            .any(|c| c.action.is_none() && c.mode == ControlMode::Paused);
        if paused {
            return;
        }
        let control = Control {
            agent: agent.to_owned(),
            action: None,
            mode: ControlMode::Paused,
            reason: Some(reason.clone()),
            set_by: ACTOR.into(),
            set_at: engine.clock().now(),
        };
        // Audited and announced in the role channels in one transaction.
        let by = crate::domain::Actor {
            kind: crate::domain::ActorKind::System,
            id: "breaker".into(),
        };
        if let Err(error) = engine.narrow(control, false, by).await {
            tracing::error!(%error, agent, "circuit breaker: cannot pause the agent");
            return;
        }
        tracing::warn!(agent, %reason, "circuit breaker tripped: agent paused");
        metrics::counter!("countersign_circuit_breaker_trips_total", "agent" => agent.to_owned())
            .increment(1);
    }
}
