//! What `serve --demo` sets up before the server starts, so one run shows the whole loop —
//! proposal, card, click, step-up, callback — with nothing to configure:
//!
//! - **A secret key**, when `secret_key` is not configured: made once (32 random bytes), kept in
//!   the data directory with mode 0600 and reused, so TOTP step-up is on and enrollments and
//!   card links survive a restart.
//! - **The demo agents' callbacks** (the agents holding a published demo token): a `whsec_`
//!   secret for each whose `callback_secret_env` variable is unset, kept beside the key; an inbox
//!   in the sandbox (`POST /sandbox/agents/{agent}/inbox`) that verifies and records what it
//!   receives; the examples' `callback_url` pointed there; and the SSRF guard told to allow
//!   exactly this server's own address, which it otherwise refuses as loopback.
//!
//! Everything is handed to [`crate::app::run`] in the [`Config`]: nothing is written to the
//! process environment.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use url::Url;

use crate::config::{Config, DatabaseUrl, Secret};
use crate::registry::Registry;

/// The key file's name in the data directory.
pub const SECRET_KEY_FILE: &str = "demo-secret-key";
/// The demo agents' callback secrets' file (`VAR=whsec_…` lines, as a shell reads them).
pub const CALLBACK_SECRETS_FILE: &str = "demo-callback-secrets";

pub use crate::config::DemoSettings;

/// Where the examples' callbacks go: this server's agent inboxes.
#[derive(Debug, Clone)]
pub struct Inboxes {
    base: Url,
    agents: Vec<String>,
}

impl Inboxes {
    /// The inbox of `agent`, if it has one.
    pub fn url(&self, agent: &str) -> Option<Url> {
        self.agents
            .iter()
            .any(|a| a == agent)
            .then(|| {
                self.base
                    .join(&format!("sandbox/agents/{agent}/inbox"))
                    .ok()
            })
            .flatten()
    }

    /// This server's address as the callback URLs name it (the idempotency keys carry its
    /// port: proposals posted for another port call back there).
    pub fn port(&self) -> u16 {
        self.base.port_or_known_default().unwrap_or(80)
    }
}

/// Readies `config` for `serve --demo` on `address` (the bound listener's), keeping its files in
/// `dir` (`serve --demo` passes [`data_dir`]): the secret key, the demo agents' callback secrets
/// and inboxes, and the SSRF allowance for this server's own address. Answers where the
/// examples' callbacks should go (`None` when a Slack token is configured: there is no sandbox,
/// hence no inbox).
pub fn prepare(
    config: &mut Config,
    address: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Option<Inboxes>> {
    if config.secret_key.is_none() {
        let path = dir.join(SECRET_KEY_FILE);
        let (key, made) = secret_key(&path)?;
        config.secret_key = Some(key);
        // Said once per start, at warn: a production server must not run on this.
        if made {
            tracing::warn!(path = %path.display(), "demo mode: secret_key is not set, so countersign made one and keeps it in this file for the next runs (TOTP step-up is on); in production set COUNTERSIGN_SECRET_KEY instead");
        } else {
            tracing::warn!(path = %path.display(), "demo mode: secret_key is not set, so countersign uses the one it keeps in this file (TOTP step-up is on); in production set COUNTERSIGN_SECRET_KEY instead");
        }
    }
    if config.slack_bot_token.is_some() {
        return Ok(None);
    }

    let registry = Registry::load(&config.manifests, &config.policies)
        .context("invalid manifest or policy")?;
    let demo_agents = registry.agents.demo_token_agents();
    // Agents without a secret variable cannot have signed callbacks: no inbox for them.
    let with_variable: Vec<(&str, &str)> = demo_agents
        .iter()
        .filter_map(|a| Some((a.id.as_str(), a.callback_secret_env.as_deref()?)))
        .collect();
    let unset: Vec<&str> = with_variable
        .iter()
        .map(|(_, var)| *var)
        .filter(|var| std::env::var(var).is_err())
        .collect();
    let mut settings = DemoSettings {
        inboxes: with_variable.iter().map(|(a, _)| (*a).to_owned()).collect(),
        callback_secrets: BTreeMap::new(),
    };
    if !unset.is_empty() {
        let path = dir.join(CALLBACK_SECRETS_FILE);
        settings.callback_secrets = callback_secrets(&path, &unset)?;
        tracing::info!(
            path = %path.display(),
            variables = %unset.join(", "),
            "demo mode: the demo agents' callback secret variables are unset, so countersign signs their callbacks with secrets kept in this file"
        );
    }

    let own = crate::app::own_url(address);
    let own_address = own_address(&own).context("this server's own address")?;
    config.callback_allowlist =
        std::mem::take(&mut config.callback_allowlist).with_address(own_address);
    tracing::info!(
        address = %own_address,
        agents = %settings.inboxes.join(", "),
        "demo mode: the examples call back to the sandbox's agent inboxes (/sandbox/agents/{{agent}}/inbox), so callbacks may reach this server's own address although the SSRF guard refuses loopback; nothing else on it"
    );
    let inboxes = Inboxes {
        base: own,
        agents: settings.inboxes.clone(),
    };
    config.demo = Some(settings);
    Ok(Some(inboxes))
}

/// Where demo mode keeps its files: beside the SQLite database, or `data/` with PostgreSQL.
pub fn data_dir(database: &DatabaseUrl) -> PathBuf {
    match database {
        DatabaseUrl::Sqlite(path) => match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        },
        DatabaseUrl::Postgres(_) => PathBuf::from("data"),
    }
}

fn own_address(url: &Url) -> Option<SocketAddr> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => ip.into(),
        url::Host::Ipv6(ip) => ip.into(),
        url::Host::Domain(_) => return None,
    };
    Some(SocketAddr::new(ip, url.port_or_known_default()?))
}

/// The key in `path`, or a new one written there; and whether it was made now.
fn secret_key(path: &Path) -> anyhow::Result<(Secret, bool)> {
    let made = BASE64.encode(rand::random::<[u8; 32]>());
    let (text, made) = match create_private(path, &format!("{made}\n")) {
        Ok(()) => (made, true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            (read_private(path)?, false)
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot write {}", path.display()));
        }
    };
    let key = text.trim();
    if key.len() < 32 {
        anyhow::bail!(
            "{}: the demo secret key is shorter than 32 characters; delete the file to make a new one",
            path.display()
        );
    }
    Ok((Secret::new(key), made))
}

/// The secrets for `variables` from `path`, making (and saving) those it lacks.
fn callback_secrets(path: &Path, variables: &[&str]) -> anyhow::Result<BTreeMap<String, Secret>> {
    let mut kept = BTreeMap::new();
    let text = match std::fs::metadata(path) {
        Ok(_) => read_private(path)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((var, value)) = line.split_once('=') else {
            anyhow::bail!(
                "{}:{}: not VAR=whsec_…; delete the file to make new secrets",
                path.display(),
                number + 1
            );
        };
        if let Err(error) = crate::callbacks::signature::parse_all(value) {
            anyhow::bail!(
                "{}:{}: {var}: {error}; delete the file to make new secrets",
                path.display(),
                number + 1
            );
        }
        kept.insert(var.trim().to_owned(), value.trim().to_owned());
    }
    let missing: Vec<&str> = variables
        .iter()
        .copied()
        .filter(|var| !kept.contains_key(*var))
        .collect();
    if !missing.is_empty() {
        for var in missing {
            let secret = format!("whsec_{}", BASE64.encode(rand::random::<[u8; 32]>()));
            kept.insert(var.to_owned(), secret);
        }
        let mut contents = String::from(
            "# Made by `countersign serve --demo`: the demo agents' callback signing secrets, for\n\
             # the variables their manifests name. Real agents get theirs from your secret store.\n",
        );
        for (var, value) in &kept {
            contents.push_str(&format!("{var}={value}\n"));
        }
        replace_private(path, &contents)?;
    }
    Ok(variables
        .iter()
        .filter_map(|var| Some(((*var).to_owned(), Secret::new(kept.get(*var)?.clone()))))
        .collect())
}

/// Creates `path` with `contents`, readable by this user only; fails if it exists.
fn create_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Writes `contents` to `path` whole (a new file renamed over it), readable by this user only.
fn replace_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    create_private(&temporary, contents)
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a file of secrets; one others may read is made private again (and said so).
fn read_private(path: &Path) -> anyhow::Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))?;
            tracing::warn!(path = %path.display(), "the file was readable by others: its mode is now 0600");
        }
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_is_the_databases_or_data() {
        let sqlite = |p: &str| DatabaseUrl::Sqlite(PathBuf::from(p));
        assert_eq!(
            data_dir(&sqlite("data/countersign.db")),
            PathBuf::from("data")
        );
        assert_eq!(
            data_dir(&sqlite("/var/lib/cs/x.db")),
            PathBuf::from("/var/lib/cs")
        );
        assert_eq!(data_dir(&sqlite("x.db")), PathBuf::from("."));
        let postgres = DatabaseUrl::Postgres(Secret::new("postgres://h/db"));
        assert_eq!(data_dir(&postgres), PathBuf::from("data"));
    }

    #[test]
    fn the_key_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(SECRET_KEY_FILE);
        let (first, made) = secret_key(&path).unwrap();
        assert!(made);
        assert!(first.expose().len() >= 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, made) = secret_key(&path).unwrap();
        assert!(!made);
        assert_eq!(again, first);
    }

    #[test]
    fn callback_secrets_are_kept_per_variable_and_added_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CALLBACK_SECRETS_FILE);
        let first = callback_secrets(&path, &["A_WHSEC"]).unwrap();
        let a = first["A_WHSEC"].clone();
        assert!(crate::callbacks::signature::parse_all(a.expose()).is_ok());
        let both = callback_secrets(&path, &["A_WHSEC", "B_WHSEC"]).unwrap();
        assert_eq!(both["A_WHSEC"], a);
        assert_ne!(both["B_WHSEC"], a);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| l.contains("=whsec_")).count(), 2);

        std::fs::write(&path, "A_WHSEC=not-a-secret\n").unwrap();
        let error = callback_secrets(&path, &["A_WHSEC"])
            .unwrap_err()
            .to_string();
        assert!(error.contains(":1: A_WHSEC"), "{error}");
        assert!(!error.contains("not-a-secret"), "{error}");
    }
}
