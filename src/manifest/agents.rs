//! `manifests/agents/*.yaml`: one file per agent, named after its id.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ManifestError;
use crate::domain::{ActionId, AgentId, DataClass};

/// What an agent may do on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    #[default]
    Active,
    /// Nothing is auto-approved.
    DraftOnly,
    /// Proposals are refused.
    Paused,
}

/// How much harm an action can do; picks the default requirement when no rule matches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    Low,
    Medium,
    High,
}

/// How far an agent may go with an action on its own, narrowest first (the order is the
/// autonomy ladder promotions climb).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Autonomy {
    /// The agent may not propose it at all (it may only read).
    ReadOnly,
    /// The agent drafts; a person decides every time (never auto-approved).
    DraftOnly,
    /// Acts after approval (never auto-approved).
    Approval,
    /// Policy may auto-approve it.
    Autonomous,
}

/// One action in an agent's catalog. (The policy engine reads these; the foundation only
/// validates their shape.)
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub impact: Impact,
    #[serde(default)]
    pub data: Vec<DataClass>,
    pub reversible: bool,
    pub autonomy: Autonomy,
}

/// A declared agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: AgentId,
    /// Slack user id of the human accountable for the agent.
    pub owner: String,
    pub description: String,
    /// SHA-256 of the bearer token (the token itself is never stored); two while a token is
    /// being rotated, the new one first, and either is accepted.
    pub token_hashes: Vec<[u8; 32]>,
    pub callback_url: Option<String>,
    /// Name of the env var holding the callback signing secret.
    pub callback_secret_env: Option<String>,
    pub mode: AgentMode,
    pub actions: BTreeMap<ActionId, CatalogEntry>,
    /// Proposals it may submit: a steady rate with a burst. `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// When to pause it automatically. `None`: never.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Caps on what policy may auto-approve for it; beyond them a person decides.
    pub budgets: Budgets,
}

/// `budgets:` in an agent manifest. Amounts are `params.amount` of its proposals (one currency
/// is assumed); counts are auto-approved proposals. Days and months are UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// The largest amount one proposal may be auto-approved for.
    pub per_proposal: Option<f64>,
    pub daily: Option<BudgetCap>,
    pub monthly: Option<BudgetCap>,
}

/// A period's cap on auto-approved amounts and/or counts.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetCap {
    pub amount: Option<f64>,
    pub count: Option<u64>,
}

impl Budgets {
    pub fn is_empty(&self) -> bool {
        self.per_proposal.is_none() && self.daily.is_none() && self.monthly.is_none()
    }
}

/// `circuit_breaker: {rejections_in_a_row: 5, rate_limited_per_minute: 20}` in an agent manifest:
/// either trips it (a pause by `system:breaker` that a person must resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Its latest this many decided proposals were all rejected (by people or by policy).
    pub rejections_in_a_row: Option<u32>,
    /// This many proposals refused by its rate limit within a minute (a flood).
    pub rate_limited_per_minute: Option<u32>,
}

/// `rate_limit: {per_minute: 60, burst: 10}` in an agent manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Proposals a minute, sustained.
    pub per_minute: u32,
    /// Proposals it may send at once after a quiet spell.
    pub burst: u32,
}

/// Why an agent may not propose an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Paused,
    NotInCatalog,
    ReadOnly,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Paused => "the agent is paused",
            Refusal::NotInCatalog => "the action is not in the agent's catalog",
            Refusal::ReadOnly => "the action is read_only for this agent",
        }
    }
}

impl Agent {
    /// The catalog entry for `action` if this agent may propose it now.
    pub fn admit(&self, action: &ActionId) -> Result<&CatalogEntry, Refusal> {
        if self.mode == AgentMode::Paused {
            return Err(Refusal::Paused);
        }
        match self.actions.get(action) {
            None => Err(Refusal::NotInCatalog),
            Some(entry) if entry.autonomy == Autonomy::ReadOnly => Err(Refusal::ReadOnly),
            Some(entry) => Ok(entry),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    id: Spanned<String>,
    owner: Spanned<String>,
    description: String,
    token_sha256: Spanned<Hashes>,
    callback_url: Option<Spanned<String>>,
    callback_secret_env: Option<Spanned<String>>,
    #[serde(default)]
    mode: AgentMode,
    #[serde(default)]
    actions: BTreeMap<String, Spanned<CatalogEntry>>,
    rate_limit: Option<Spanned<RateLimit>>,
    circuit_breaker: Option<Spanned<CircuitBreaker>>,
    budgets: Option<Spanned<Budgets>>,
}

/// `token_sha256:` one hash, or a list of two while rotating (`[NEW, OLD]`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Hashes {
    One(String),
    Several(Vec<String>),
}

/// Loads every `*.yaml` in `dir`, in name order.
pub fn load_agents(dir: &Path) -> Result<Vec<Agent>, ManifestError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| ManifestError::new(dir, None, None, format!("cannot read directory: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    paths.sort();

    let mut agents: Vec<Agent> = Vec::new();
    let mut seen_tokens: HashMap<[u8; 32], AgentId> = HashMap::new();
    for path in paths {
        let agent = load_agent(&path)?;
        if agents.iter().any(|a| a.id == agent.id) {
            return Err(ManifestError::new(
                &path,
                Some(1),
                Some("id"),
                format!("agent {} is declared twice", agent.id),
            ));
        }
        for hash in &agent.token_hashes {
            if let Some(other) = seen_tokens.insert(*hash, agent.id.clone()) {
                return Err(ManifestError::new(
                    &path,
                    None,
                    Some("token_sha256"),
                    format!("the same token is already used by agent {other}: mint one per agent"),
                ));
            }
        }
        agents.push(agent);
    }
    Ok(agents)
}

fn load_agent(path: &Path) -> Result<Agent, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, None, None, format!("cannot read: {e}")))?;
    let file: AgentFile = serde_saphyr::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        ManifestError::new(path, line, None, e.to_string())
    })?;
    let id = agent_id(path, &file.id)?;
    check_owner(path, &file.owner)?;
    let token_hashes = token_hashes(path, &file.token_sha256)?;
    check_callback(path, &file)?;
    check_limits(path, &file)?;
    let mut actions = BTreeMap::new();
    for (name, entry) in file.actions {
        let action = ActionId::parse(&name).map_err(|e| {
            at(
                path,
                entry.referenced.line(),
                &format!("actions.{name}"),
                e.0,
            )
        })?;
        actions.insert(action, entry.value);
    }
    Ok(Agent {
        id,
        owner: file.owner.value,
        description: file.description,
        token_hashes,
        callback_url: file.callback_url.map(|s| s.value),
        callback_secret_env: file.callback_secret_env.map(|s| s.value),
        mode: file.mode,
        actions,
        rate_limit: file.rate_limit.map(|s| s.value),
        circuit_breaker: file.circuit_breaker.map(|s| s.value),
        budgets: file.budgets.map(|s| s.value).unwrap_or_default(),
    })
}

/// An error at `key` on `line` of the agent's file.
fn at(path: &Path, line: u64, key: &str, message: String) -> ManifestError {
    ManifestError::new(path, Some(line), Some(key), message)
}

/// The agent's id, which must also be its file's name so that an agent is found where its
/// id says.
fn agent_id(path: &Path, id: &Spanned<String>) -> Result<AgentId, ManifestError> {
    let line = id.referenced.line();
    let id = AgentId::parse(&id.value).map_err(|e| at(path, line, "id", e.0))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != id.as_str() {
        return Err(at(
            path,
            line,
            "id",
            format!("the file of agent {id} must be named {id}.yaml"),
        ));
    }
    Ok(id)
}

/// The accountable human is a Slack user id (`U…`, or `W…` on Enterprise Grid).
fn check_owner(path: &Path, owner: &Spanned<String>) -> Result<(), ManifestError> {
    let text = &owner.value;
    let owner_ok = text.len() >= 3
        && text.len() <= 24
        && text.starts_with(['U', 'W'])
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !owner_ok {
        return Err(at(
            path,
            owner.referenced.line(),
            "owner",
            format!("{text:?} is not a Slack user id (U… or W…)"),
        ));
    }
    Ok(())
}

/// One token hash, or two different ones while the token is rotated.
fn token_hashes(path: &Path, hashes: &Spanned<Hashes>) -> Result<Vec<[u8; 32]>, ManifestError> {
    let token_line = hashes.referenced.line();
    let texts = match &hashes.value {
        Hashes::One(text) => vec![text.as_str()],
        Hashes::Several(texts) => texts.iter().map(String::as_str).collect(),
    };
    if texts.is_empty() || texts.len() > 2 {
        return Err(at(
            path,
            token_line,
            "token_sha256",
            "one hash, or a list of two while rotating the token ([NEW, OLD])".into(),
        ));
    }
    let token_hashes = texts
        .iter()
        .map(|text| parse_sha256(text))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            at(
                path,
                token_line,
                "token_sha256",
                "must be 64 hex characters: the SHA-256 of the token (`countersign agent new` prints it)".into(),
            )
        })?;
    if token_hashes.len() == 2 && token_hashes[0] == token_hashes[1] {
        return Err(at(
            path,
            token_line,
            "token_sha256",
            "the two hashes are the same token".into(),
        ));
    }
    Ok(token_hashes)
}

/// Where decisions are delivered, and the variable holding the secret they are signed with.
fn check_callback(path: &Path, file: &AgentFile) -> Result<(), ManifestError> {
    if let Some(url) = &file.callback_url {
        let ok = url::Url::parse(&url.value)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(at(
                path,
                url.referenced.line(),
                "callback_url",
                "must be an http or https URL".into(),
            ));
        }
    }
    if let Some(var) = &file.callback_secret_env {
        let ok = !var.value.is_empty()
            && var
                .value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(at(
                path,
                var.referenced.line(),
                "callback_secret_env",
                "must be an environment variable name (A-Z, 0-9, _)".into(),
            ));
        }
    }
    Ok(())
}

/// The rate limit, circuit breaker and budgets: every threshold within its bounds.
fn check_limits(path: &Path, file: &AgentFile) -> Result<(), ManifestError> {
    if let Some(limit) = &file.rate_limit {
        let ok = (1..=1_000_000).contains(&limit.value.per_minute)
            && (1..=100_000).contains(&limit.value.burst);
        if !ok {
            return Err(at(
                path,
                limit.referenced.line(),
                "rate_limit",
                "per_minute must be 1 to 1,000,000 and burst 1 to 100,000".into(),
            ));
        }
    }
    if let Some(breaker) = &file.circuit_breaker {
        let b = breaker.value;
        let in_range = |n: Option<u32>| n.is_none_or(|n| (1..=10_000).contains(&n));
        if !(in_range(b.rejections_in_a_row) && in_range(b.rate_limited_per_minute)) {
            return Err(at(
                path,
                breaker.referenced.line(),
                "circuit_breaker",
                "each threshold must be 1 to 10,000".into(),
            ));
        }
    }
    if let Some(budgets) = &file.budgets {
        let b = budgets.value;
        let amounts = [
            b.per_proposal,
            b.daily.and_then(|c| c.amount),
            b.monthly.and_then(|c| c.amount),
        ];
        let counts = [
            b.daily.and_then(|c| c.count),
            b.monthly.and_then(|c| c.count),
        ];
        if amounts.iter().flatten().any(|a| !a.is_finite() || *a < 0.0)
            || counts.iter().flatten().any(|c| *c == 0)
        {
            return Err(at(
                path,
                budgets.referenced.line(),
                "budgets",
                "amounts must be numbers ≥ 0 and counts at least 1".into(),
            ));
        }
    }
    Ok(())
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b";

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn agent_yaml(id: &str, hash: &str) -> String {
        format!(
            "id: {id}\nowner: U0OWNER01\ndescription: test agent\ntoken_sha256: {hash}\nmode: active\nactions:\n  crm.lead.tag: {{impact: low, data: [], reversible: true, autonomy: autonomous}}\n"
        )
    }

    #[test]
    fn loads_a_valid_agent() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "revops-crm.yaml",
            &agent_yaml("revops-crm", HASH),
        );
        let agents = load_agents(dir.path()).unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].id.as_str(), "revops-crm");
        assert_eq!(agents[0].token_hashes, vec![parse_sha256(HASH).unwrap()]);
        assert_eq!(agents[0].actions.len(), 1);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", &agent_yaml("a", "not-a-hash"));
        let err = load_agents(dir.path()).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("token_sha256"))
        );
        assert!(err.to_string().starts_with(&format!(
            "{}:4: token_sha256:",
            dir.path().join("a.yaml").display()
        )));
    }

    #[test]
    fn rate_limits_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let with = |limit: &str| {
            agent_yaml("a", HASH).replace(
                "mode: active\n",
                &format!("mode: active\nrate_limit: {limit}\n"),
            )
        };
        write(dir.path(), "a.yaml", &with("{per_minute: 30, burst: 5}"));
        let agents = load_agents(dir.path()).unwrap();
        assert_eq!(
            agents[0].rate_limit,
            Some(RateLimit {
                per_minute: 30,
                burst: 5
            })
        );
        write(dir.path(), "a.yaml", &with("{per_minute: 0, burst: 5}"));
        let err = load_agents(dir.path()).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(6), Some("rate_limit")),
            "{err}"
        );
        write(dir.path(), "a.yaml", &with("{per_minute: 30}"));
        assert!(
            load_agents(dir.path())
                .unwrap_err()
                .to_string()
                .contains("burst")
        );

        let budgets = |b: &str| {
            agent_yaml("a", HASH)
                .replace("mode: active\n", &format!("mode: active\nbudgets: {b}\n"))
        };
        write(
            dir.path(),
            "a.yaml",
            &budgets("{per_proposal: 500, daily: {count: 3}}"),
        );
        assert_eq!(
            load_agents(dir.path()).unwrap()[0].budgets.per_proposal,
            Some(500.0)
        );
        write(dir.path(), "a.yaml", &budgets("{daily: {count: 0}}"));
        let err = load_agents(dir.path()).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(6), Some("budgets")),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_enums_are_located() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            &format!("{}tokn: x\n", agent_yaml("a", HASH)),
        );
        let err = load_agents(dir.path()).unwrap_err();
        assert!(err.to_string().contains("tokn"), "{err}");
        assert_eq!(err.line, Some(8), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            &agent_yaml("a", HASH).replace("mode: active", "mode: asleep"),
        );
        let err = load_agents(dir.path()).unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
    }

    #[test]
    fn file_name_must_match_id_and_tokens_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.yaml", &agent_yaml("a", HASH));
        assert_eq!(
            load_agents(dir.path()).unwrap_err().key.as_deref(),
            Some("id")
        );

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", &agent_yaml("a", HASH));
        write(dir.path(), "b.yaml", &agent_yaml("b", HASH));
        let err = load_agents(dir.path()).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("token_sha256"));
        assert!(err.to_string().contains("agent a"));
    }

    #[test]
    fn a_token_being_rotated_has_two_hashes() {
        const OLD: &str = "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35";
        let dir = tempfile::tempdir().unwrap();
        let with = |hashes: &str| agent_yaml("a", hashes);
        write(dir.path(), "a.yaml", &with(&format!("[{HASH}, {OLD}]")));
        let agents = load_agents(dir.path()).unwrap();
        assert_eq!(
            agents[0].token_hashes,
            vec![parse_sha256(HASH).unwrap(), parse_sha256(OLD).unwrap()]
        );

        for bad in [
            "[]".to_owned(),
            format!("[{HASH}, {OLD}, {HASH}]"),
            format!("[{HASH}, {HASH}]"),
            format!("[{HASH}, nope]"),
        ] {
            write(dir.path(), "a.yaml", &with(&bad));
            let err = load_agents(dir.path()).unwrap_err();
            assert_eq!(
                (err.line, err.key.as_deref()),
                (Some(4), Some("token_sha256")),
                "{bad}: {err}"
            );
        }

        // The old token is still one agent's: another agent cannot take it.
        write(dir.path(), "a.yaml", &with(&format!("[{HASH}, {OLD}]")));
        write(dir.path(), "b.yaml", &agent_yaml("b", OLD));
        let err = load_agents(dir.path()).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("token_sha256"), "{err}");
    }
}
