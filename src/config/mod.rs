//! Configuration, layered: built-in defaults, then `countersign.toml`, then `COUNTERSIGN_*`
//! environment variables. Everything is validated once, at start, and every error names the key
//! and where its value came from. Secrets are wrapped in [`Secret`] so they never print.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use url::Url;

pub use crate::secrets::{DatabaseUrl, Secret};

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

/// The most `max_connections` may say: beyond it the server's file descriptors, not the
/// setting, would be the limit.
const MAX_CONNECTIONS_LIMIT: usize = 100_000;

/// The weekly digest's slot unless configured otherwise.
const DEFAULT_DIGEST: &str = "mon 09:00 UTC";

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

    fn from_values(
        mut values: BTreeMap<&'static str, (String, Source)>,
    ) -> Result<Self, ConfigError> {
        let mut take = |key: &'static str| values.remove(key);
        let invalid = |key: &'static str, source: &Source, message: String| ConfigError::Invalid {
            key,
            origin: source.to_string(),
            message,
        };

        let listen = match take("listen") {
            Some((v, src)) => v.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "listen",
                    &src,
                    format!(
                        "not a socket address such as 127.0.0.1:8080: {}",
                        crate::addresses::socket_error(&v, e)
                    ),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let database_url = match take("database_url") {
            Some((v, src)) => {
                DatabaseUrl::parse(&v).map_err(|e| invalid("database_url", &src, e))?
            }
            None => DatabaseUrl::Sqlite(PathBuf::from("data/countersign.db")),
        };
        let database_max_connections = match take("database_max_connections") {
            Some((v, src)) => match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "database_max_connections",
                        &src,
                        "must be a number from 1 to 1000".into(),
                    ));
                }
            },
            None => 10,
        };
        let slack_tier_scale = match take("slack_tier_scale") {
            Some((v, src)) => match v.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "slack_tier_scale",
                        &src,
                        "must be a number from 1 to 100".into(),
                    ));
                }
            },
            None => 1,
        };
        let redis_url = match take("redis_url") {
            Some((v, src)) => {
                let ok = Url::parse(&v).is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss"));
                if !ok {
                    return Err(invalid(
                        "redis_url",
                        &src,
                        "must be a redis:// or rediss:// URL".into(),
                    ));
                }
                Some(Secret::new(v))
            }
            None => None,
        };
        let slack_bot_token = take("slack_bot_token");
        let slack_signing_secret = take("slack_signing_secret").map(|(v, _)| Secret::new(v));
        let slack_app_token = take("slack_app_token");
        if let Some((token, src)) = &slack_app_token {
            // Slack's app-level tokens start so; a bot token here is the usual mix-up, and
            // Slack would refuse it (not_allowed_token_type) at every reconnection.
            if !token.starts_with("xapp-") {
                return Err(invalid(
                    "slack_app_token",
                    src,
                    "must be an app-level token, xapp-… (Basic Information → App-Level Tokens, scope connections:write)".into(),
                ));
            }
            if slack_bot_token.is_none() {
                return Err(invalid(
                    "slack_app_token",
                    src,
                    "needs slack_bot_token too: Socket Mode only receives; cards are posted with the bot token".into(),
                ));
            }
        }
        // Over HTTP, a real workspace without its signing secret could not tell Slack's clicks
        // from forgeries. Over Socket Mode nothing arrives on a public endpoint: the connection
        // countersign opened with the app token is the proof.
        if let Some((_, src)) = &slack_bot_token
            && slack_signing_secret.is_none()
            && slack_app_token.is_none()
        {
            return Err(invalid(
                "slack_bot_token",
                src,
                "needs slack_signing_secret too (Basic Information → App Credentials in the Slack app), or slack_app_token for Socket Mode".into(),
            ));
        }
        let slack_bot_token = slack_bot_token.map(|(v, _)| Secret::new(v));
        let slack_app_token = slack_app_token.map(|(v, _)| Secret::new(v));
        let slack_api_url = match take("slack_api_url") {
            Some((v, src)) => http_url(&v).map_err(|e| invalid("slack_api_url", &src, e))?,
            None => Url::parse("https://slack.com/api").expect("valid default"),
        };
        let public_url = match take("public_url") {
            Some((v, src)) => http_url(&v).map_err(|e| invalid("public_url", &src, e))?,
            None => {
                Url::parse(&format!("http://{listen}")).expect("socket address is a valid host")
            }
        };
        let policies =
            take("policies").map_or_else(|| PathBuf::from("policies"), |(v, _)| PathBuf::from(v));
        let manifests =
            take("manifests").map_or_else(|| PathBuf::from("manifests"), |(v, _)| PathBuf::from(v));
        let admin_token = match take("admin_token") {
            Some((v, src)) if v.len() < 24 => {
                return Err(invalid(
                    "admin_token",
                    &src,
                    "must be at least 24 characters".into(),
                ));
            }
            Some((v, _)) => Some(Secret::new(v)),
            None => None,
        };
        let secret_key = match take("secret_key") {
            Some((v, src)) if v.len() < 32 => {
                return Err(invalid(
                    "secret_key",
                    &src,
                    "must be at least 32 characters (e.g. `openssl rand -base64 32`)".into(),
                ));
            }
            Some((v, _)) => Some(Secret::new(v)),
            None => None,
        };
        let log_format = match take("log_format") {
            Some((v, src)) => match v.as_str() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => return Err(invalid("log_format", &src, "must be pretty or json".into())),
            },
            None => LogFormat::Pretty,
        };
        let report_digest = match take("report_digest") {
            Some((v, _)) if v.trim() == "off" => None,
            Some((v, src)) => Some(v.parse().map_err(|e| invalid("report_digest", &src, e))?),
            None => Some(DEFAULT_DIGEST.parse().expect("valid default")),
        };
        let callback_allowlist = match take("callback_allowlist") {
            Some((v, src)) => crate::addresses::Allowlist::parse(&v)
                .map_err(|e| invalid("callback_allowlist", &src, e.to_string()))?,
            None => Default::default(),
        };
        let callback_timeout = match take("callback_timeout") {
            Some((v, src)) => match humantime::parse_duration(&v) {
                Ok(d)
                    if d >= std::time::Duration::from_millis(100)
                        && d <= std::time::Duration::from_secs(60) =>
                {
                    d
                }
                _ => {
                    return Err(invalid(
                        "callback_timeout",
                        &src,
                        "must be a duration from 100ms to 60s, e.g. 15s".into(),
                    ));
                }
            },
            None => std::time::Duration::from_secs(15),
        };
        let slack_admins = match take("slack_admins") {
            Some((v, src)) => {
                let ids: Vec<String> = v
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = ids.iter().find(|id| {
                    !(id.starts_with(['U', 'W', 'S'])
                        && id
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
                }) {
                    return Err(invalid(
                        "slack_admins",
                        &src,
                        format!("`{bad}` is not a Slack user id (U…) or user group id (S…)"),
                    ));
                }
                ids
            }
            None => Vec::new(),
        };
        let redis_key_prefix =
            take("redis_key_prefix").map_or_else(|| "countersign:".to_owned(), |(v, _)| v);
        let redis_ca = match take("redis_ca_file") {
            Some((v, src)) => {
                let tls = redis_url
                    .as_ref()
                    .is_some_and(|url| url.expose().starts_with("rediss://"));
                if !tls {
                    return Err(invalid(
                        "redis_ca_file",
                        &src,
                        "is only used with a rediss:// redis_url (TLS)".into(),
                    ));
                }
                Some(
                    RedisCa::read(PathBuf::from(v))
                        .map_err(|m| invalid("redis_ca_file", &src, m))?,
                )
            }
            None => None,
        };
        let serve_role = match take("serve_role") {
            Some((v, src)) => ServeRole::parse(&v)
                .ok_or_else(|| invalid("serve_role", &src, "must be all, api or worker".into()))?,
            None => ServeRole::All,
        };
        let max_connections = match take("max_connections") {
            Some((v, src)) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_CONNECTIONS_LIMIT).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "max_connections",
                        &src,
                        format!("must be a number from 1 to {MAX_CONNECTIONS_LIMIT}"),
                    ));
                }
            },
            None => 1024,
        };
        let header_read_timeout = match take("header_read_timeout") {
            Some((v, src)) => match humantime::parse_duration(&v) {
                Ok(d)
                    if d >= std::time::Duration::from_millis(100)
                        && d <= std::time::Duration::from_secs(300) =>
                {
                    d
                }
                _ => {
                    return Err(invalid(
                        "header_read_timeout",
                        &src,
                        "must be a duration from 100ms to 5m, e.g. 10s".into(),
                    ));
                }
            },
            None => std::time::Duration::from_secs(10),
        };

        Ok(Config {
            listen,
            database_url,
            database_max_connections,
            redis_url,
            slack_bot_token,
            slack_signing_secret,
            slack_app_token,
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

fn http_url(text: &str) -> Result<Url, String> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        Ok(_) => Err("must be an http or https URL".into()),
        Err(e) => Err(format!(
            "not a URL: {}",
            crate::addresses::url_error(text, e)
        )),
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
