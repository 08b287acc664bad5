//! Manifests: files in git that declare who may talk to countersign. Validated at start; every
//! error names the file, the line and the key.

mod agents;
mod oncall;
mod roles;
mod slack_app;

pub use agents::{
    Agent, AgentMode, Autonomy, BudgetCap, Budgets, CatalogEntry, CircuitBreaker, Impact,
    RateLimit, Refusal, load_agents,
};
pub use oncall::{Schedule, Schedules, load_oncall};
pub use roles::{Approvers, Role, Roles, load_roles};
pub use slack_app::{SHIPPED_SLACK_APP, SlackApp};

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub key: Option<String>,
    pub message: String,
}

impl ManifestError {
    pub fn new(
        file: &Path,
        line: Option<u64>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything loaded from the manifests directory.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub agents: Vec<Agent>,
    pub roles: Roles,
    pub oncall: Schedules,
}

impl Manifests {
    /// Loads `dir/agents/*.yaml` and `dir/roles.yaml`. A missing `agents` directory is an empty set (countersign then
    /// accepts no agent until one is declared); a broken file is an error.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let roles = load_roles(&dir.join("roles.yaml"))?;
        let oncall_path = dir.join("oncall.yaml");
        let oncall = load_oncall(&oncall_path)?;
        // Once there are schedules, every role's `oncall` must name one.
        if oncall_path.exists() {
            for (name, role) in roles.iter() {
                if let Some(schedule) = &role.oncall
                    && oncall.get(schedule).is_none()
                {
                    return Err(ManifestError::new(
                        &dir.join("roles.yaml"),
                        None,
                        Some(&format!("roles.{name}.oncall")),
                        format!("no schedule named {schedule:?} in oncall.yaml"),
                    ));
                }
            }
        }
        Ok(Self {
            agents: load_agents(&dir.join("agents"))?,
            roles,
            oncall,
        })
    }
}
