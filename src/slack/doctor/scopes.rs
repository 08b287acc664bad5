//! Which bot scopes the token was granted, against the ones `manifests/slack-app.yaml` asks for.
//!
//! Slack says what a token was granted only in the `x-oauth-scopes` header of its answers, and
//! slack-morphism does not expose headers: so this one `auth.test` goes through reqwest, to the
//! same `slack_api_url`, with the same bot token.

use std::collections::BTreeSet;

use url::Url;

use super::report::Check;
use crate::config::Secret;
use crate::manifest::SlackApp;
use crate::slack::SlackError;
use crate::slack::client::CALL_TIMEOUT;

/// The response header listing a token's scopes, comma-separated.
pub const HEADER: &str = "x-oauth-scopes";

/// Scopes only `countersign doctor` reads (conversations.info on role channels): without them
/// countersign runs, and doctor cannot check channels, so their absence is a warning.
pub const DOCTOR_ONLY: [&str; 2] = ["channels:read", "groups:read"];

/// The scopes in an `x-oauth-scopes` value (`chat:write,commands` — Slack sends no spaces, but a
/// proxy might add them).
pub fn parse(header: &str) -> BTreeSet<String> {
    header
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The manifest's scopes that were not granted, in the manifest's order.
pub fn missing<'a>(wanted: &'a [String], granted: &BTreeSet<String>) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|s| !granted.contains(*s))
        .map(String::as_str)
        .collect()
}

/// The scopes Slack says `token` has; `None` when the answer carried no such header.
pub async fn granted(
    api_url: &Url,
    token: &Secret,
) -> Result<Option<BTreeSet<String>>, SlackError> {
    let url = format!("{}/auth.test", api_url.as_str().trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SlackError::Transport(e.to_string()))?;
    let response = client
        .post(url)
        .bearer_auth(token.expose())
        .send()
        .await
        // Without the URL: it is ours, and the message stays short.
        .map_err(|e| SlackError::Transport(e.without_url().to_string()))?;
    if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let seconds = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(1);
        return Err(SlackError::RateLimited(std::time::Duration::from_secs(
            seconds,
        )));
    }
    let scopes = response
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(parse);
    let body: serde_json::Value = response.json().await.map_err(|e| {
        SlackError::Transport(format!(
            "auth.test answered something not JSON: {}",
            e.without_url()
        ))
    })?;
    if body["ok"] != true {
        let error = body["error"].as_str().unwrap_or("unknown_error");
        return Err(SlackError::Api(error.to_owned()));
    }
    Ok(scopes)
}

/// One line per missing scope (what breaks without it), or one line saying all are there.
/// `manifest` names the file the scopes came from.
pub fn checks(app: &SlackApp, granted: Option<&BTreeSet<String>>, manifest: &str) -> Vec<Check> {
    let Some(granted) = granted else {
        return vec![Check::warn(
            format!(
                "Slack did not say which scopes the token has (no {HEADER} header): not compared"
            ),
            "if a proxy sits between countersign and Slack, let it pass Slack's response headers",
        )];
    };
    let missing = missing(&app.bot_scopes, granted);
    if missing.is_empty() {
        return vec![Check::pass(format!(
            "all {} bot scopes in {manifest} are granted",
            app.bot_scopes.len()
        ))];
    }
    let fix = "add them under OAuth & Permissions → Bot Token Scopes (or update the app from \
               `countersign slack manifest`), then reinstall the app to grant them";
    missing
        .into_iter()
        .map(|scope| {
            let text = format!("missing scope {scope}: {}", app.purpose(scope));
            if DOCTOR_ONLY.contains(&scope) {
                Check::warn(text, fix)
            } else {
                Check::fail(text, fix)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::doctor::report::Status;

    #[test]
    fn the_header_is_a_comma_separated_list() {
        assert_eq!(
            parse("chat:write,commands, im:write,,"),
            ["chat:write", "commands", "im:write"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn missing_scopes_are_named_in_manifest_order_with_what_breaks() {
        let app = SlackApp::shipped();
        let granted = parse(
            "commands,chat:write,users:read,users:read.email,usergroups:read,channels:read,extra:scope",
        );
        assert_eq!(
            missing(&app.bot_scopes, &granted),
            ["im:write", "files:write", "groups:read"]
        );
        let checks = checks(&app, Some(&granted), "manifests/slack-app.yaml");
        let statuses: Vec<Status> = checks.iter().map(|c| c.status).collect();
        assert_eq!(statuses, [Status::Fail, Status::Fail, Status::Warn]);
        assert!(
            checks[0].text.contains("missing scope im:write: DMs"),
            "{checks:?}"
        );
        assert!(checks[1].text.contains("report charts"), "{checks:?}");
        assert!(
            checks[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("reinstall the app to grant them")
        );

        let all = parse(&app.bot_scopes.join(","));
        let fine = super::checks(&app, Some(&all), "manifests/slack-app.yaml");
        assert_eq!(fine.len(), 1);
        assert_eq!(fine[0].status, Status::Pass);
        assert_eq!(super::checks(&app, None, "m")[0].status, Status::Warn);
    }
}
