//! Agent authentication: bearer tokens checked against SHA-256 hashes from the manifests.

use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::manifest::Agent;

/// Prefix of every token countersign mints, so a leaked one is recognisable in secret scanners.
pub const TOKEN_PREFIX: &str = "cs_";

/// Tokens of the example agents shipped in `manifests/agents/`, published in the README so a
/// newcomer's first curl works. Startup warns loudly while any of them is still accepted.
pub const DEMO_TOKENS: &[&str] = &[
    "cs_demo_revops_crm_d3m0t0k3n",
    "cs_demo_billing_d3m0t0k3n",
    "cs_demo_outbound_email_d3m0t0k3n",
];

/// A freshly minted token and the hash to put in the manifest.
pub struct MintedToken {
    pub token: String,
    pub sha256_hex: String,
}

/// 32 random bytes from the OS generator, base64url.
pub fn mint_token() -> MintedToken {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let sha256_hex = hex::encode(Sha256::digest(token.as_bytes()));
    MintedToken { token, sha256_hex }
}

/// The declared agents, looked up by token.
#[derive(Debug, Clone, Default)]
pub struct AgentDirectory {
    agents: Arc<[Arc<Agent>]>,
}

impl AgentDirectory {
    pub fn new(agents: Vec<Agent>) -> Self {
        Self {
            agents: agents.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// The declared agent with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Agent>> {
        self.agents.iter().find(|a| a.id.as_str() == id)
    }

    /// The agent holding `token`, if any. Every declared hash is compared, in constant time and
    /// without stopping at a match, so timing tells nothing about which hash came close. While
    /// an agent's token is rotated its manifest lists two hashes and either token is accepted;
    /// a request with the old one is logged, so operators see when the agent has switched.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u32;
        let mut slot = 0u32;
        for (i, agent) in self.agents.iter().enumerate() {
            for (j, hash) in agent.token_hashes.iter().enumerate() {
                let hit = hash.ct_eq(&presented);
                index = u32::conditional_select(&index, &(i as u32), hit);
                slot = u32::conditional_select(&slot, &(j as u32), hit);
                found |= hit;
            }
        }
        let agent = bool::from(found).then(|| self.agents[index as usize].clone())?;
        if slot > 0 {
            tracing::info!(agent = %agent.id, "authenticated with the agent's previous token (the second token_sha256): it has not switched to the new one yet");
        }
        Some(agent)
    }

    /// Agents still configured with a published demo token.
    pub fn demo_token_agents(&self) -> Vec<&Agent> {
        let demo: Vec<[u8; 32]> = DEMO_TOKENS
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        self.agents
            .iter()
            .filter(|a| a.token_hashes.iter().any(|h| demo.contains(h)))
            .map(|a| a.as_ref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgentId;

    fn agent(id: &str, token: &str) -> Agent {
        Agent {
            id: AgentId::parse(id).unwrap(),
            owner: "U0OWNER01".into(),
            description: String::new(),
            token_hashes: token
                .split(' ')
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
            callback_url: None,
            callback_secret_env: None,
            rate_limit: None,
            circuit_breaker: None,
            budgets: Default::default(),
            mode: Default::default(),
            actions: Default::default(),
        }
    }

    #[test]
    fn finds_the_agent_holding_the_token() {
        let directory = AgentDirectory::new(vec![agent("a", "tok-a"), agent("b", "tok-b")]);
        assert_eq!(directory.authenticate("tok-b").unwrap().id.as_str(), "b");
        assert_eq!(directory.authenticate("tok-a").unwrap().id.as_str(), "a");
        assert!(directory.authenticate("tok-c").is_none());
        assert!(directory.authenticate("").is_none());
        assert!(AgentDirectory::default().authenticate("tok-a").is_none());
    }

    #[test]
    fn both_tokens_work_while_one_is_rotated() {
        let directory = AgentDirectory::new(vec![agent("a", "tok-a"), agent("b", "new-b old-b")]);
        assert_eq!(directory.authenticate("new-b").unwrap().id.as_str(), "b");
        assert_eq!(directory.authenticate("old-b").unwrap().id.as_str(), "b");
        assert_eq!(directory.authenticate("tok-a").unwrap().id.as_str(), "a");
        assert!(directory.authenticate("new-b old-b").is_none());
    }

    #[test]
    fn minted_tokens_are_unique_and_hash_to_what_is_printed() {
        let a = mint_token();
        let b = mint_token();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with(TOKEN_PREFIX) && a.token.len() > 40);
        assert_eq!(
            a.sha256_hex,
            hex::encode(Sha256::digest(a.token.as_bytes()))
        );
    }
}
