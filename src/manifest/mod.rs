//! Manifests: files in git that declare who may talk to countersign. Validated at start; every
//! error names the file, the line and the key.

mod agents;
mod roles;

pub use agents::{Agent, AgentMode, Autonomy, CatalogEntry, Impact, Refusal, load_agents};
pub use roles::{Approvers, Role, Roles, load_roles};

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
}

impl Manifests {
    /// Loads `dir/agents/*.yaml` and `dir/roles.yaml`. A missing `agents` directory is an empty set (countersign then
    /// accepts no agent until one is declared); a broken file is an error.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        Ok(Self {
            agents: load_agents(&dir.join("agents"))?,
            roles: load_roles(&dir.join("roles.yaml"))?,
        })
    }
}
