//! The overrides of agents' modes in force, kept in memory for the submission path (read on
//! every proposal, changed rarely). This process updates it as soon as it changes an override;
//! other replicas' changes arrive with the periodic refresh from the database.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::domain::control::strictest;
use crate::domain::{Control, ControlMode};
use crate::manifest::{Agent, AgentMode};

#[derive(Default)]
pub struct Controls {
    by_agent: RwLock<HashMap<String, Vec<Control>>>,
}

impl Controls {
    /// Replaces everything with what the database holds.
    pub fn replace(&self, all: Vec<Control>) {
        let mut by_agent: HashMap<String, Vec<Control>> = HashMap::new();
        for control in all {
            by_agent
                .entry(control.agent.clone())
                .or_default()
                .push(control);
        }
        *self.by_agent.write().expect("controls lock") = by_agent;
    }

    /// The overrides in force for an agent.
    pub fn of(&self, agent: &str) -> Vec<Control> {
        self.by_agent
            .read()
            .expect("controls lock")
            .get(agent)
            .cloned()
            .unwrap_or_default()
    }

    /// The strictest override for this agent's `action`, if any.
    pub fn applying(&self, agent: &str, action: &str) -> Option<Control> {
        let by_agent = self.by_agent.read().expect("controls lock");
        strictest(by_agent.get(agent)?, action).cloned()
    }
}

/// The agent as an override leaves it: its manifest mode, narrowed (never widened).
pub fn narrowed(agent: &Agent, control: &Control) -> Agent {
    let mode = match (agent.mode, control.mode) {
        (AgentMode::Paused, _) | (_, ControlMode::Paused) => AgentMode::Paused,
        _ => AgentMode::DraftOnly,
    };
    Agent {
        mode,
        ..agent.clone()
    }
}
