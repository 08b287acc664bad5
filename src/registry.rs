//! What countersign loads from files in git: agents, roles and policies. Loaded and validated as
//! a whole, and replaced as a whole on reload (SIGHUP), so a request never sees half of a change
//! and a broken change never replaces a working set.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::AgentDirectory;
use crate::manifest::{ManifestError, Manifests, Roles, Schedules};
use crate::policy::PolicySet;

/// One consistent set of manifests and policies.
#[derive(Debug)]
pub struct Registry {
    pub agents: AgentDirectory,
    pub roles: Roles,
    pub oncall: Schedules,
    pub policies: PolicySet,
}

impl Registry {
    /// Loads `manifests/` (agents, roles) and `policies/`, checking policies against the roles.
    pub fn load(manifests: &Path, policies: &Path) -> Result<Self, ManifestError> {
        let Manifests {
            agents,
            roles,
            oncall,
        } = Manifests::load(manifests)?;
        let policies = PolicySet::load(policies, &roles)?;
        Ok(Self {
            agents: AgentDirectory::new(agents),
            roles,
            oncall,
            policies,
        })
    }
}

/// The registry in use, shared by every request; cheap to read, swapped atomically.
#[derive(Clone, Debug)]
pub struct SharedRegistry(Arc<ArcSwap<Registry>>);

impl SharedRegistry {
    pub fn new(registry: Registry) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(registry)))
    }

    pub fn current(&self) -> Arc<Registry> {
        self.0.load_full()
    }

    /// Loads afresh; on success the new set replaces the old one, on error the old one stays.
    pub fn reload(&self, manifests: &Path, policies: &Path) -> Result<(), ManifestError> {
        let registry = Registry::load(manifests, policies)?;
        self.0.store(Arc::new(registry));
        Ok(())
    }
}
