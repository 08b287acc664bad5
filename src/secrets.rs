//! Values that carry credentials, at the bottom of the crate (configuration, the store and the
//! Slack client all hold them): never printed in full.

use std::fmt;
use std::path::PathBuf;

use url::Url;

/// A value that must never reach a log: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file, created on first run.
    Sqlite(PathBuf),
    /// A PostgreSQL URL; it may carry a password, hence secret.
    Postgres(Secret),
}

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err("a SQLite URL needs a file path, e.g. sqlite://data/countersign.db (in-memory databases lose everything)".into());
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Url::parse(text).map_err(|e| {
                format!("not a valid URL: {}", crate::addresses::url_error(text, e))
            })?;
            Ok(Self::Postgres(Secret::new(text)))
        } else {
            Err("must start with sqlite:// or postgres://".into())
        }
    }
}

impl fmt::Display for DatabaseUrl {
    /// Shows where the database is without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => match Url::parse(url.expose()) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    // Passwords may also come as query parameters.
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let secret = k.contains("password");
                            (
                                k.into_owned(),
                                if secret {
                                    "***".to_owned()
                                } else {
                                    v.into_owned()
                                },
                            )
                        })
                        .collect();
                    if !pairs.is_empty() {
                        url.query_pairs_mut().clear().extend_pairs(pairs);
                    }
                    write!(f, "{url}")
                }
                Err(_) => f.write_str("postgres://***"),
            },
        }
    }
}
