//! `countersign doctor`: after connecting a real Slack workspace, check everything countersign
//! needs from it — the configuration, the token, its scopes, every role channel, user group and
//! person the files name — and say, for each problem, what to do. Operators meet these problems
//! otherwise one at a time, as cards that never appear or clicks that are refused.

mod references;
pub mod report;
mod scopes;
mod workspace;

pub use references::{References, RoleChannel};
pub use report::{Check, Report, Status};

use std::collections::BTreeSet;

use crate::config::Config;
use crate::manifest::SlackApp;
use crate::registry::Registry;
use crate::slack::SlackApi;

/// Runs every check `config` allows and reports them all; never fails as such (a broken file or
/// an unreachable Slack is a failed check).
pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    let Some(token) = &config.slack_bot_token else {
        report.section("Configuration", no_workspace());
        return report;
    };
    report.section("Configuration", configuration(config, token.expose()));

    // Each stage needs the one before: a section that cannot go on ends the report there.
    let files = match files(config) {
        Ok((files, checks)) => {
            report.section("Files", checks);
            files
        }
        Err(checks) => {
            report.section("Files", checks);
            return report;
        }
    };

    // The Slack connector needs a process-wide TLS provider (app::run installs the same one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = SlackApi::new(&config.slack_api_url, token);
    let caller = workspace::Caller::default();
    let identity = match workspace::token(&caller, &api, &config.slack_api_url).await {
        Ok((identity, check)) => {
            report.section("Token", vec![check]);
            identity
        }
        Err(check) => {
            report.section("Token", vec![check]);
            report.note = Some("(the other checks need a token Slack accepts)".into());
            return report;
        }
    };

    let (granted, scope_checks) = scopes(config, &caller, &api, token, &files).await;
    report.section("Scopes", scope_checks);
    let refs = References::collect(
        &files.registry,
        &config.slack_admins,
        &config.manifests,
        &config.policies,
    );
    let bot = identity.user.as_str();
    let (channels, groups, users) =
        workspace_sections(&caller, &api, bot, &refs, granted.as_ref()).await;
    report.section("Channels", channels);
    report.section("User groups", groups);
    report.section("Users", users);
    report
}

/// Without a bot token there is no workspace: say how to connect one.
fn no_workspace() -> Vec<Check> {
    vec![Check::warn(
        "no slack_bot_token: `countersign serve` would run the built-in Slack sandbox, \
         so there is no Slack workspace to check",
        "to connect Slack, follow \"Connect to Slack in ten minutes\" in the README and \
         set COUNTERSIGN_SLACK_BOT_TOKEN, and COUNTERSIGN_SLACK_APP_TOKEN (Socket Mode) \
         or COUNTERSIGN_SLACK_SIGNING_SECRET (HTTP)",
    )]
}

/// What the workspace checks compare against: the loaded files and the app manifest.
struct Files {
    registry: Registry,
    app: SlackApp,
    /// How the report names the app manifest the scopes come from.
    manifest_name: String,
}

/// The manifests, policies and app manifest loaded, with the "Files" section's checks; `Err`
/// holds the section when something does not load, and nothing further can be checked.
fn files(config: &Config) -> Result<(Files, Vec<Check>), Vec<Check>> {
    let registry = Registry::load(&config.manifests, &config.policies).map_err(|error| {
        vec![Check::fail(
            error.to_string(),
            "fix that file (`countersign policy check` shows the same), then run doctor again",
        )]
    })?;
    let (app, manifest_name, mut checks) = match SlackApp::load_or_shipped(&config.manifests) {
        Ok((app, true)) => {
            let name = config
                .manifests
                .join("slack-app.yaml")
                .display()
                .to_string();
            (app, name, Vec::new())
        }
        Ok((app, false)) => (
            app,
            "the built-in app manifest".to_owned(),
            vec![Check::warn(
                format!(
                    "no {}: scopes are compared with the app manifest built into countersign",
                    config.manifests.join("slack-app.yaml").display()
                ),
                "keep the app manifest beside the others (`countersign slack manifest` prints it)",
            )],
        ),
        Err(error) => {
            return Err(vec![Check::fail(
                error.to_string(),
                "fix it, or print a fresh one with `countersign slack manifest`",
            )]);
        }
    };
    checks.insert(
        0,
        Check::pass(format!(
            "{} roles, {} agents and the policies load",
            registry.roles.names().count(),
            registry.agents.agents().len()
        )),
    );
    let files = Files {
        registry,
        app,
        manifest_name,
    };
    Ok((files, checks))
}

/// The token's scopes (`None` when Slack did not say) and how they compare with the app
/// manifest's.
async fn scopes(
    config: &Config,
    caller: &workspace::Caller,
    api: &SlackApi,
    token: &crate::config::Secret,
    files: &Files,
) -> (Option<BTreeSet<String>>, Vec<Check>) {
    match caller
        .call(|| api.within_budget("auth.test", scopes::granted(&config.slack_api_url, token)))
        .await
    {
        Ok(granted) => {
            let checks = scopes::checks(&files.app, granted.as_ref(), &files.manifest_name);
            (granted, checks)
        }
        Err(error) => (
            None,
            vec![Check::fail(
                format!("cannot read the token's scopes: {error}"),
                "run doctor again; if it persists, check slack_api_url and the network",
            )],
        ),
    }
}

/// The role channels, user groups and users the files name, checked at once; a check the
/// token's scopes do not allow says so instead.
async fn workspace_sections(
    caller: &workspace::Caller,
    api: &SlackApi,
    bot: &str,
    refs: &References,
    granted: Option<&BTreeSet<String>>,
) -> (Vec<Check>, Vec<Check>, Vec<Check>) {
    let lacks = |scope: &str| granted.is_some_and(|g| !g.contains(scope));
    let not_checked = |what: &str, scope: &str| {
        vec![Check::fail(
            format!("{what} not checked: the token lacks {scope} (see Scopes)"),
            format!("grant {scope} and reinstall the app"),
        )]
    };
    let channels = async {
        if lacks("channels:read") {
            vec![Check::warn(
                "role channels could not be checked: the token lacks channels:read (read only by doctor)",
                "add channels:read and groups:read to the app's bot scopes (they are in \
                 manifests/slack-app.yaml) and reinstall the app",
            )]
        } else {
            workspace::channels(caller, api, bot, &refs.channels).await
        }
    };
    let groups = async {
        if refs.groups.is_empty() {
            vec![Check::pass("no user groups named")]
        } else if lacks("usergroups:read") {
            not_checked("user groups", "usergroups:read")
        } else {
            workspace::groups(caller, api, &refs.groups).await
        }
    };
    let users = async {
        if lacks("users:read") {
            not_checked("users", "users:read")
        } else {
            workspace::users(caller, api, &refs.users).await
        }
    };
    tokio::join!(channels, groups, users)
}

/// What the configuration says, before asking Slack anything.
fn configuration(config: &Config, token: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    // Only the prefix is looked at; nothing of the token is ever printed.
    checks.push(if token.starts_with("xoxb-") {
        Check::pass("slack_bot_token is set (a bot token, xoxb-…)")
    } else {
        Check::fail(
            "slack_bot_token is set but is not a bot token (it does not start with xoxb-)",
            "use the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page",
        )
    });
    // In Socket Mode the app-level token carries Slack's requests; otherwise the signing secret
    // verifies them.
    checks.push(match (&config.slack_app_token, &config.slack_signing_secret) {
        (Some(_), _) => Check::pass("slack_app_token is set: Socket Mode (no request URLs needed)"),
        (None, Some(_)) => Check::pass("slack_signing_secret is set"),
        (None, None) => Check::fail(
            "neither slack_signing_secret nor slack_app_token is set: Slack's clicks and commands cannot reach countersign",
            "set COUNTERSIGN_SLACK_SIGNING_SECRET from Basic Information → App Credentials, or COUNTERSIGN_SLACK_APP_TOKEN (xapp-…) for Socket Mode",
        ),
    });
    checks.push(public_url(&config.public_url));
    checks
}

/// Links on cards and Slack's request URLs use `public_url`: it must be reachable by people
/// and by Slack, which only calls `https://`.
fn public_url(url: &url::Url) -> Check {
    let local = match url.host() {
        Some(url::Host::Domain(host)) => host == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        None => true,
    };
    let fix = "set COUNTERSIGN_PUBLIC_URL (public_url) to the https:// address Slack and \
               reviewers reach countersign at";
    if local {
        Check::fail(
            format!(
                "public_url is {url}: links on cards would point at this machine, and Slack cannot reach it"
            ),
            fix,
        )
    } else if url.scheme() != "https" {
        // Socket Mode: without request URLs, plain http is only a problem for links.
        Check::warn(
            format!("public_url is {url}: Slack only sends clicks and commands to https:// URLs"),
            fix,
        )
    } else {
        Check::pass(format!("public_url is {url}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_must_be_reachable_and_https() {
        let check = |u: &str| public_url(&url::Url::parse(u).unwrap()).status;
        assert_eq!(check("http://127.0.0.1:8080/"), Status::Fail);
        assert_eq!(check("http://localhost:8080/"), Status::Fail);
        assert_eq!(check("http://[::1]:8080/"), Status::Fail);
        assert_eq!(check("http://cs.internal.example/"), Status::Warn);
        assert_eq!(check("https://cs.acme.example/"), Status::Pass);
    }
}
