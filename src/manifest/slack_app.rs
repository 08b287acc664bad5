//! `manifests/slack-app.yaml`, read for what it promises: the bot scopes the app asks for, and
//! (from the comment block at the top) what each one is for. `countersign doctor` compares them
//! with what the installed token was granted; the sandbox grants them by default.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::ManifestError;

/// The manifest this build ships: what the code calls when the operator's copy is missing.
pub const SHIPPED_SLACK_APP: &str = include_str!("../../manifests/slack-app.yaml");

/// The bot scopes an app manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackApp {
    /// In the manifest's order.
    pub bot_scopes: Vec<String>,
    /// Scope → what breaks without it, from the `#   scope   what it is for` comment lines.
    pub purposes: BTreeMap<String, String>,
}

// Only the part we read; the rest of the manifest is Slack's business.
#[derive(Deserialize)]
struct File {
    oauth_config: OauthConfig,
}

#[derive(Deserialize)]
struct OauthConfig {
    scopes: Scopes,
}

#[derive(Deserialize)]
struct Scopes {
    #[serde(default)]
    bot: Vec<String>,
}

impl SlackApp {
    /// Parses manifest text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| {
            ManifestError::new(path, e.location().map(|l| l.line()), None, e.to_string())
        })?;
        let bot_scopes = file.oauth_config.scopes.bot;
        if bot_scopes.is_empty() {
            return Err(ManifestError::new(
                path,
                None,
                Some("oauth_config.scopes.bot"),
                "no bot scopes: countersign cannot post without at least chat:write",
            ));
        }
        Ok(Self {
            purposes: purposes(text, &bot_scopes),
            bot_scopes,
        })
    }

    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManifestError::new(path, None, None, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// The manifest built into this binary.
    pub fn shipped() -> Self {
        Self::parse(Path::new("slack-app.yaml (built in)"), SHIPPED_SLACK_APP)
            .expect("the shipped manifest parses (tested)")
    }

    /// `dir/slack-app.yaml` when it exists, else the shipped one (`false`: not the operator's).
    pub fn load_or_shipped(dir: &Path) -> Result<(Self, bool), ManifestError> {
        let path = dir.join("slack-app.yaml");
        if path.exists() {
            Ok((Self::load(&path)?, true))
        } else {
            Ok((Self::shipped(), false))
        }
    }

    /// What a scope is for, or a plain "needed by countersign" when the comment does not say.
    pub fn purpose(&self, scope: &str) -> &str {
        self.purposes
            .get(scope)
            .map_or("needed by countersign", String::as_str)
    }
}

/// The leading comment lines that start with one of the scopes: `#   users:read   users.info`.
fn purposes(text: &str, scopes: &[String]) -> BTreeMap<String, String> {
    text.lines()
        .map_while(|line| line.strip_prefix('#'))
        .filter_map(|line| {
            let line = line.trim();
            let (scope, rest) = line.split_once(char::is_whitespace)?;
            let rest = rest.trim();
            (scopes.iter().any(|s| s == scope) && !rest.is_empty())
                .then(|| (scope.to_owned(), rest.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_manifest_names_a_purpose_for_every_scope() {
        let app = SlackApp::shipped();
        assert!(app.bot_scopes.contains(&"chat:write".to_owned()));
        for scope in &app.bot_scopes {
            assert!(app.purposes.contains_key(scope), "no comment for {scope}");
        }
        assert!(
            app.purpose("usergroups:read")
                .contains("usergroups.users.list")
        );
        assert!(app.purpose("channels:read").contains("doctor"));
    }

    #[test]
    fn comments_after_the_header_and_unknown_words_are_not_purposes() {
        let text = "# The app.\n#   chat:write   posts cards\n#   bogus:scope  nothing\n\
                    oauth_config:\n  scopes:\n    bot: [chat:write, commands]\n# commands later\n";
        let app = SlackApp::parse(Path::new("x.yaml"), text).unwrap();
        assert_eq!(app.bot_scopes, ["chat:write", "commands"]);
        assert_eq!(app.purposes.len(), 1, "{:?}", app.purposes);
        assert_eq!(app.purpose("commands"), "needed by countersign");
    }

    #[test]
    fn a_manifest_without_bot_scopes_is_refused_naming_the_key() {
        let err = SlackApp::parse(
            Path::new("slack-app.yaml"),
            "oauth_config:\n  scopes:\n    bot: []\n",
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("oauth_config.scopes.bot"));
        assert!(SlackApp::parse(Path::new("s.yaml"), "display_information: {}\n").is_err());
    }
}
