//! Configuration, layered: built-in defaults, then `countersign.toml`, then `COUNTERSIGN_*`
//! environment variables. Everything is validated once, at start, and every error names the key
//! and where its value came from. Secrets are wrapped in [`Secret`] so they never print.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use url::Url;

pub use crate::secrets::{DatabaseUrl, Secret};

mod keys;

/// What `serve --demo` adds to the configuration; set by `demo::prepare`, never read from a file or
/// the environment.
#[derive(Debug, Clone, Default)]
pub struct DemoSettings {
    /// The agents with an inbox at `/sandbox/agents/{id}/inbox`.
    pub inboxes: Vec<String>,
    /// Values for callback secret variables the environment leaves unset (variable →
    /// `whsec_…`): the callback worker signs with them and the inboxes verify with them.
    pub callback_secrets: BTreeMap<String, Secret>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    pub database_max_connections: u32,
    pub redis_url: Option<Secret>,
    pub slack_bot_token: Option<Secret>,
    pub slack_signing_secret: Option<Secret>,
    /// The Slack app's app-level token (`xapp-…`, scope `connections:write`). Set: Socket Mode
    /// — countersign connects to Slack and receives clicks and commands over a WebSocket, so
    /// Slack needs no way in.
    pub slack_app_token: Option<Secret>,
    pub slack_api_url: Url,
    /// Multiplies Slack's per-method tiers in countersign's Slack budget (1: as Slack documents
    /// them; see [`crate::slack::tiers`]).
    pub slack_tier_scale: u32,
    /// The base URL people and agents reach countersign at (links in responses and cards).
    pub public_url: Url,
    pub policies: PathBuf,
    pub manifests: PathBuf,
    pub admin_token: Option<Secret>,
    /// The key countersign signs its own links with (the full-diff page); ≥ 32 characters.
    /// Unset: a random key per run, so links stop working at a restart.
    pub secret_key: Option<Secret>,
    pub log_format: LogFormat,
    /// When the weekly SLA digest goes to every role channel (`mon 09:00 Europe/London`);
    /// `None` (`off`): no digest.
    pub report_digest: Option<crate::domain::report::DigestSchedule>,
    /// Addresses agent callbacks may reach although the SSRF guard would refuse them
    /// (loopback, private networks): CIDRs or addresses.
    pub callback_allowlist: crate::addresses::Allowlist,
    /// How long one callback attempt may take.
    pub callback_timeout: std::time::Duration,
    /// Who may pause, draft-only and resume agents from Slack: user ids (`U…`) and user groups
    /// (`S…`). Empty: nobody (the admin API still can).
    pub slack_admins: Vec<String>,
    /// What countersign's Redis keys start with (several deployments may share one Redis).
    pub redis_key_prefix: String,
    /// The certificate authority a `rediss://` Redis is checked against when it is not one the
    /// system trusts (a private CA): then only it is trusted for Redis.
    pub redis_ca: Option<RedisCa>,
    /// What this process does: the HTTP API, the background workers, or both.
    pub serve_role: ServeRole,
    /// How many client connections the HTTP server holds at once; past it, new ones wait in
    /// the listen queue, so a flood of idle sockets cannot exhaust file descriptors.
    pub max_connections: usize,
    /// How long a client has, from connecting (or from its previous response), to send a
    /// request's complete headers before the connection is closed (slowloris).
    pub header_read_timeout: std::time::Duration,
    /// Set by `serve --demo` ([`crate::demo::prepare`]), never by a file or the environment:
    /// the demo agents' inboxes and generated callback secrets.
    pub demo: Option<DemoSettings>,
}

/// `redis_ca_file`'s certificates (PEM), read and checked when the configuration is loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCa {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for RedisCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisCa").field(&self.path).finish()
    }
}

impl RedisCa {
    /// The file's certificates, or what is wrong with it.
    fn read(path: PathBuf) -> Result<Self, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pem =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(Self { path, pem })
    }
}

/// `serve --role`: lets a deployment scale the HTTP tier and the workers separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServeRole {
    /// The API, Slack endpoints and the workers (one process does everything).
    #[default]
    All,
    /// The API and Slack endpoints; the durable loops run elsewhere.
    Api,
    /// The durable loops (Slack outbox, SLA timers, reports, callbacks) and the operations
    /// endpoints only.
    Worker,
}

impl ServeRole {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "all" => Some(ServeRole::All),
            "api" => Some(ServeRole::Api),
            "worker" => Some(ServeRole::Worker),
            _ => None,
        }
    }

    pub fn runs_workers(self) -> bool {
        self != ServeRole::Api
    }

    pub fn serves_api(self) -> bool {
        self != ServeRole::Worker
    }
}

/// Every key, in the file's spelling; the env var is `COUNTERSIGN_` + the key in capitals.
pub const KEYS: &[&str] = &[
    "listen",
    "database_url",
    "database_max_connections",
    "redis_url",
    "slack_bot_token",
    "slack_signing_secret",
    "slack_app_token",
    "slack_api_url",
    "slack_tier_scale",
    "public_url",
    "policies",
    "manifests",
    "admin_token",
    "secret_key",
    "log_format",
    "report_digest",
    "callback_allowlist",
    "callback_timeout",
    "slack_admins",
    "redis_key_prefix",
    "redis_ca_file",
    "serve_role",
    "max_connections",
    "header_read_timeout",
];

/// A configuration problem, naming the key and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{key} (from {origin}): {message}")]
    Invalid {
        key: &'static str,
        origin: String,
        message: String,
    },
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Source {
    File(String),
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{path}"),
            Source::Env(var) => write!(f, "env {var}"),
        }
    }
}

/// The default file, read when present.
pub const DEFAULT_FILE: &str = "countersign.toml";

impl Config {
    /// Loads `file` (or `countersign.toml` if it exists) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], with the environment given as a lookup function (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut values: BTreeMap<&'static str, (String, Source)> = BTreeMap::new();
        let (path, required) = match file {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_FILE), false),
        };
        if required || path.exists() {
            for (key, value) in read_file(&path)? {
                values.insert(key, (value, Source::File(path.display().to_string())));
            }
        }
        for key in KEYS {
            let var = format!("COUNTERSIGN_{}", key.to_ascii_uppercase());
            if let Some(value) = env(&var).filter(|v| !v.is_empty()) {
                values.insert(key, (value, Source::Env(var)));
            }
        }
        Self::from_values(values)
    }

    fn from_values(values: BTreeMap<&'static str, (String, Source)>) -> Result<Self, ConfigError> {
        let mut values = keys::Values::new(values);
        // One key after another in this order, so that with several mistakes the first one
        // reported stays the same.
        let listen = keys::listen(&mut values)?;
        let database_url = keys::database_url(&mut values)?;
        let database_max_connections = keys::database_max_connections(&mut values)?;
        let slack_tier_scale = keys::slack_tier_scale(&mut values)?;
        let redis_url = keys::redis_url(&mut values)?;
        let slack = keys::slack_tokens(&mut values)?;
        let slack_api_url = keys::slack_api_url(&mut values)?;
        let public_url = keys::public_url(&mut values, listen)?;
        let policies = keys::policies(&mut values);
        let manifests = keys::manifests(&mut values);
        let admin_token = keys::admin_token(&mut values)?;
        let secret_key = keys::secret_key(&mut values)?;
        let log_format = keys::log_format(&mut values)?;
        let report_digest = keys::report_digest(&mut values)?;
        let callback_allowlist = keys::callback_allowlist(&mut values)?;
        let callback_timeout = keys::callback_timeout(&mut values)?;
        let slack_admins = keys::slack_admins(&mut values)?;
        let redis_key_prefix = keys::redis_key_prefix(&mut values);
        let redis_ca = keys::redis_ca(&mut values, redis_url.as_ref())?;
        let serve_role = keys::serve_role(&mut values)?;
        let max_connections = keys::max_connections(&mut values)?;
        let header_read_timeout = keys::header_read_timeout(&mut values)?;

        Ok(Config {
            listen,
            database_url,
            database_max_connections,
            redis_url,
            slack_bot_token: slack.bot_token,
            slack_signing_secret: slack.signing_secret,
            slack_app_token: slack.app_token,
            slack_api_url,
            slack_tier_scale,
            public_url,
            policies,
            manifests,
            admin_token,
            secret_key,
            log_format,
            report_digest,
            callback_allowlist,
            callback_timeout,
            slack_admins,
            redis_key_prefix,
            redis_ca,
            serve_role,
            max_connections,
            header_read_timeout,
            demo: None,
        })
    }

    /// The defaults, for tests and embedding: as if no file and no environment were given.
    pub fn defaults() -> Self {
        Self::from_values(BTreeMap::new()).expect("defaults are valid")
    }

    /// A one-line-per-key description with secrets shown only as set or unset.
    pub fn describe(&self) -> String {
        let secret = |s: &Option<Secret>| if s.is_some() { "(set)" } else { "(unset)" };
        format!(
            "listen={} max_connections={} header_read_timeout={} database_url={} public_url={} manifests={} policies={} slack_api_url={} slack_bot_token={} slack_signing_secret={} slack_app_token={} redis_url={} admin_token={} secret_key={} report_digest={}",
            self.listen,
            self.max_connections,
            humantime::format_duration(self.header_read_timeout),
            self.database_url,
            self.public_url,
            self.manifests.display(),
            self.policies.display(),
            self.slack_api_url,
            secret(&self.slack_bot_token),
            secret(&self.slack_signing_secret),
            secret(&self.slack_app_token),
            secret(&self.redis_url),
            secret(&self.admin_token),
            secret(&self.secret_key),
            self.report_digest
                .map_or_else(|| "off".to_owned(), |d| d.to_string()),
        )
    }
}

/// Reads the TOML file: a flat table of the known keys; anything else is an error naming it.
fn read_file(path: &Path) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1);
        file_error(match line {
            Some(line) => format!("line {line}: {}", e.message()),
            None => e.message().to_owned(),
        })
    })?;
    let mut values = Vec::new();
    for (key, value) in table {
        let Some(known) = KEYS.iter().find(|k| **k == key) else {
            return Err(file_error(format!(
                "unknown key `{key}` (known keys: {})",
                KEYS.join(", ")
            )));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            other => {
                return Err(file_error(format!(
                    "`{key}` must be a string, not {}",
                    other.type_str()
                )));
            }
        };
        values.push((*known, text));
    }
    Ok(values)
}

#[cfg(test)]
mod tests;
