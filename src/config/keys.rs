//! Each key's rule: what its value must look like and what it is when unset. Kept apart from
//! [`super::Config::load_from`] so that the layering (file, then environment) and the rules can
//! be read separately.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use super::{ConfigError, DatabaseUrl, LogFormat, RedisCa, Secret, ServeRole, Source};

/// The most `max_connections` may say: beyond it the server's file descriptors, not the
/// setting, would be the limit.
const MAX_CONNECTIONS_LIMIT: usize = 100_000;

/// The weekly digest's slot unless configured otherwise.
const DEFAULT_DIGEST: &str = "mon 09:00 UTC";

/// The layered values not yet read, each with where it came from. Reading a key takes it out, so
/// each is read once.
pub(super) struct Values(BTreeMap<&'static str, (String, Source)>);

impl Values {
    pub(super) fn new(values: BTreeMap<&'static str, (String, Source)>) -> Self {
        Self(values)
    }

    /// The key's text as given, for keys that take any text.
    fn text(&mut self, key: &'static str) -> Option<String> {
        self.0.remove(key).map(|(value, _)| value)
    }

    /// The key's value as `parse` reads it (`None` when unset); `parse`'s complaint becomes an
    /// error naming the key and where its value came from.
    fn parse<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.0.remove(key) {
            Some((value, source)) => parse(&value)
                .map(Some)
                .map_err(|message| invalid(key, &source, message)),
            None => Ok(None),
        }
    }

    /// As [`Values::parse`], also returning where the value came from, for a rule that involves
    /// another key and must name this one's origin.
    fn parse_with_source<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(String) -> Result<T, String>,
    ) -> Result<Option<(T, Source)>, ConfigError> {
        match self.0.remove(key) {
            Some((value, source)) => match parse(value) {
                Ok(parsed) => Ok(Some((parsed, source))),
                Err(message) => Err(invalid(key, &source, message)),
            },
            None => Ok(None),
        }
    }
}

fn invalid(key: &'static str, source: &Source, message: String) -> ConfigError {
    ConfigError::Invalid {
        key,
        origin: source.to_string(),
        message,
    }
}

/// A whole number within `range`, as every numeric key is.
fn number_in<T>(text: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + std::fmt::Display,
{
    match text.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// A duration within `range`; `message` says the range the way people write it (`5m`, not
/// `300s`), which humantime's formatting would not.
fn duration_in(
    text: &str,
    range: RangeInclusive<Duration>,
    message: &str,
) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if range.contains(&d) => Ok(d),
        _ => Err(message.into()),
    }
}

/// A secret long enough not to be guessed.
fn secret_of_at_least(text: &str, min: usize, message: &str) -> Result<Secret, String> {
    if text.len() < min {
        return Err(message.into());
    }
    Ok(Secret::new(text.to_owned()))
}

pub(super) fn http_url(text: &str) -> Result<Url, String> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        Ok(_) => Err("must be an http or https URL".into()),
        Err(e) => Err(format!(
            "not a URL: {}",
            crate::addresses::url_error(text, e)
        )),
    }
}

pub(super) fn listen(values: &mut Values) -> Result<SocketAddr, ConfigError> {
    let listen = values.parse("listen", |v| {
        v.parse::<SocketAddr>().map_err(|e| {
            format!(
                "not a socket address such as 127.0.0.1:8080: {}",
                crate::addresses::socket_error(v, e)
            )
        })
    })?;
    Ok(listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))))
}

pub(super) fn database_url(values: &mut Values) -> Result<DatabaseUrl, ConfigError> {
    let url = values.parse("database_url", DatabaseUrl::parse)?;
    Ok(url.unwrap_or_else(|| DatabaseUrl::Sqlite(PathBuf::from("data/countersign.db"))))
}

pub(super) fn database_max_connections(values: &mut Values) -> Result<u32, ConfigError> {
    let n = values.parse("database_max_connections", |v| number_in(v, 1..=1000))?;
    Ok(n.unwrap_or(10))
}

pub(super) fn slack_tier_scale(values: &mut Values) -> Result<u32, ConfigError> {
    Ok(values
        .parse("slack_tier_scale", |v| number_in(v, 1..=100))?
        .unwrap_or(1))
}

pub(super) fn redis_url(values: &mut Values) -> Result<Option<Secret>, ConfigError> {
    values.parse("redis_url", |v| {
        let ok = Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss"));
        if !ok {
            return Err("must be a redis:// or rediss:// URL".into());
        }
        Ok(Secret::new(v.to_owned()))
    })
}

/// The Slack app's credentials, checked together: which ones are needed depends on whether
/// Slack reaches countersign over HTTP or over Socket Mode.
pub(super) struct SlackTokens {
    pub(super) bot_token: Option<Secret>,
    pub(super) signing_secret: Option<Secret>,
    pub(super) app_token: Option<Secret>,
}

pub(super) fn slack_tokens(values: &mut Values) -> Result<SlackTokens, ConfigError> {
    let bot_token = values.parse_with_source("slack_bot_token", Ok)?;
    let signing_secret = values.text("slack_signing_secret").map(Secret::new);
    let app_token = values.parse_with_source("slack_app_token", Ok)?;
    if let Some((token, src)) = &app_token {
        // Slack's app-level tokens start so; a bot token here is the usual mix-up, and
        // Slack would refuse it (not_allowed_token_type) at every reconnection.
        if !token.starts_with("xapp-") {
            return Err(invalid(
                "slack_app_token",
                src,
                "must be an app-level token, xapp-… (Basic Information → App-Level Tokens, scope connections:write)".into(),
            ));
        }
        if bot_token.is_none() {
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
    if let Some((_, src)) = &bot_token
        && signing_secret.is_none()
        && app_token.is_none()
    {
        return Err(invalid(
            "slack_bot_token",
            src,
            "needs slack_signing_secret too (Basic Information → App Credentials in the Slack app), or slack_app_token for Socket Mode".into(),
        ));
    }
    Ok(SlackTokens {
        bot_token: bot_token.map(|(v, _)| Secret::new(v)),
        signing_secret,
        app_token: app_token.map(|(v, _)| Secret::new(v)),
    })
}

pub(super) fn slack_api_url(values: &mut Values) -> Result<Url, ConfigError> {
    let url = values.parse("slack_api_url", http_url)?;
    Ok(url.unwrap_or_else(|| Url::parse("https://slack.com/api").expect("valid default")))
}

/// Unset, the address countersign listens on: right for a single machine.
pub(super) fn public_url(values: &mut Values, listen: SocketAddr) -> Result<Url, ConfigError> {
    let url = values.parse("public_url", http_url)?;
    Ok(url.unwrap_or_else(|| {
        Url::parse(&format!("http://{listen}")).expect("socket address is a valid host")
    }))
}

pub(super) fn policies(values: &mut Values) -> PathBuf {
    PathBuf::from(values.text("policies").unwrap_or_else(|| "policies".into()))
}

pub(super) fn manifests(values: &mut Values) -> PathBuf {
    PathBuf::from(
        values
            .text("manifests")
            .unwrap_or_else(|| "manifests".into()),
    )
}

pub(super) fn admin_token(values: &mut Values) -> Result<Option<Secret>, ConfigError> {
    values.parse("admin_token", |v| {
        secret_of_at_least(v, 24, "must be at least 24 characters")
    })
}

pub(super) fn secret_key(values: &mut Values) -> Result<Option<Secret>, ConfigError> {
    values.parse("secret_key", |v| {
        secret_of_at_least(
            v,
            32,
            "must be at least 32 characters (e.g. `openssl rand -base64 32`)",
        )
    })
}

pub(super) fn log_format(values: &mut Values) -> Result<LogFormat, ConfigError> {
    let format = values.parse("log_format", |v| match v {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be pretty or json".into()),
    })?;
    Ok(format.unwrap_or(LogFormat::Pretty))
}

/// `off` turns the digest off; unset, it goes out at [`DEFAULT_DIGEST`].
pub(super) fn report_digest(
    values: &mut Values,
) -> Result<Option<crate::domain::report::DigestSchedule>, ConfigError> {
    let digest = values.parse("report_digest", |v| {
        if v.trim() == "off" {
            return Ok(None);
        }
        v.parse().map(Some)
    })?;
    Ok(digest.unwrap_or_else(|| Some(DEFAULT_DIGEST.parse().expect("valid default"))))
}

pub(super) fn callback_allowlist(
    values: &mut Values,
) -> Result<crate::addresses::Allowlist, ConfigError> {
    let allowlist = values.parse("callback_allowlist", |v| {
        crate::addresses::Allowlist::parse(v).map_err(|e| e.to_string())
    })?;
    Ok(allowlist.unwrap_or_default())
}

pub(super) fn callback_timeout(values: &mut Values) -> Result<Duration, ConfigError> {
    let timeout = values.parse("callback_timeout", |v| {
        duration_in(
            v,
            Duration::from_millis(100)..=Duration::from_secs(60),
            "must be a duration from 100ms to 60s, e.g. 15s",
        )
    })?;
    Ok(timeout.unwrap_or(Duration::from_secs(15)))
}

/// User ids (`U…`, `W…` on Enterprise Grid) and user group ids (`S…`), separated by commas or
/// spaces.
pub(super) fn slack_admins(values: &mut Values) -> Result<Vec<String>, ConfigError> {
    let admins = values.parse("slack_admins", |v| {
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
            return Err(format!(
                "`{bad}` is not a Slack user id (U…) or user group id (S…)"
            ));
        }
        Ok(ids)
    })?;
    Ok(admins.unwrap_or_default())
}

pub(super) fn redis_key_prefix(values: &mut Values) -> String {
    values
        .text("redis_key_prefix")
        .unwrap_or_else(|| "countersign:".to_owned())
}

/// Only a TLS Redis (`rediss://`) has a certificate to check, so the file is refused otherwise
/// rather than silently ignored.
pub(super) fn redis_ca(
    values: &mut Values,
    redis_url: Option<&Secret>,
) -> Result<Option<RedisCa>, ConfigError> {
    values.parse("redis_ca_file", |v| {
        let tls = redis_url.is_some_and(|url| url.expose().starts_with("rediss://"));
        if !tls {
            return Err("is only used with a rediss:// redis_url (TLS)".into());
        }
        RedisCa::read(PathBuf::from(v))
    })
}

pub(super) fn serve_role(values: &mut Values) -> Result<ServeRole, ConfigError> {
    let role = values.parse("serve_role", |v| {
        ServeRole::parse(v).ok_or_else(|| "must be all, api or worker".into())
    })?;
    Ok(role.unwrap_or(ServeRole::All))
}

pub(super) fn max_connections(values: &mut Values) -> Result<usize, ConfigError> {
    let n = values.parse("max_connections", |v| {
        number_in(v, 1..=MAX_CONNECTIONS_LIMIT)
    })?;
    Ok(n.unwrap_or(1024))
}

pub(super) fn header_read_timeout(values: &mut Values) -> Result<Duration, ConfigError> {
    let timeout = values.parse("header_read_timeout", |v| {
        duration_in(
            v,
            Duration::from_millis(100)..=Duration::from_secs(300),
            "must be a duration from 100ms to 5m, e.g. 10s",
        )
    })?;
    Ok(timeout.unwrap_or(Duration::from_secs(10)))
}
