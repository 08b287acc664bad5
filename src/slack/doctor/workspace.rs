//! The checks that ask Slack: the token (`auth.test`), role channels (`conversations.info`),
//! user groups (`usergroups.users.list`) and people (`users.info`). Independent calls run
//! concurrently, at most [`CONCURRENCY`] at a time, and a 429 is waited out (its Retry-After)
//! a few times before the check gives up.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Semaphore;

use super::references::RoleChannel;
use super::report::Check;
use crate::slack::client::{BotIdentity, ChannelInfo, UserInfo};
use crate::slack::{SlackApi, SlackError};

/// Calls in flight at once: quick on a large manifest, gentle on Slack's per-method limits.
pub const CONCURRENCY: usize = 8;
/// How many 429s one call waits out before its check fails.
const RETRIES: u32 = 3;
/// The longest Retry-After honoured; a longer one fails the check rather than hang doctor.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// Runs Slack calls with bounded concurrency, waiting out rate limits.
#[derive(Clone)]
pub struct Caller {
    permits: Arc<Semaphore>,
}

impl Default for Caller {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
        }
    }
}

impl Caller {
    /// Runs `call` once a permit is free, again after each 429 (up to [`RETRIES`] times, each
    /// after its Retry-After). The permit is kept while waiting: a 429 should slow every call.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, SlackError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SlackError>>,
    {
        let _permit = self.permits.acquire().await.expect("never closed");
        let mut waited = 0;
        loop {
            match call().await {
                Err(SlackError::RateLimited(wait)) if waited < RETRIES && wait <= LONGEST_WAIT => {
                    waited += 1;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// Slack's error name, without the details slack-morphism appends.
fn error_name(error: &SlackError) -> Option<&str> {
    match error {
        SlackError::Api(text) => text.split_whitespace().next(),
        _ => None,
    }
}

/// A failure nobody can fix from the manifests: Slack unreachable, or an unexpected error.
fn trouble(what: String, error: &SlackError) -> Check {
    let fix = match error {
        SlackError::RateLimited(_) => {
            "Slack kept answering 429 (rate limited): run doctor again in a minute"
        }
        SlackError::Transport(_) => {
            "check slack_api_url and this machine's network, then run doctor again"
        }
        SlackError::Api(_) => "see Slack's documentation of that error, then run doctor again",
    };
    Check::fail(format!("{what}: cannot check: {error}"), fix)
}

/// `auth.test`: whom the token speaks for, or why Slack refuses it.
pub async fn token(
    caller: &Caller,
    api: &SlackApi,
    api_url: &url::Url,
) -> Result<(BotIdentity, Check), Check> {
    match caller.call(|| api.identity()).await {
        Ok(identity) => {
            let check = Check::pass(format!(
                "auth.test: bot @{} ({}) in workspace {} ({})",
                identity.user, identity.user_id, identity.team, identity.team_id
            ));
            Ok((identity, check))
        }
        Err(error) => Err(token_failure(&error, api_url)),
    }
}

fn token_failure(error: &SlackError, api_url: &url::Url) -> Check {
    let new_token = "copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions \
                     page into COUNTERSIGN_SLACK_BOT_TOKEN (slack_bot_token)";
    let reinstall = "reinstall the app to the workspace (Settings → Install App) and use the new \
                     Bot User OAuth Token";
    let (what, fix) = match error_name(error) {
        Some("invalid_auth") => (
            "invalid_auth: Slack does not accept the token (mistyped, cut short, or another app's or workspace's)",
            new_token.to_owned(),
        ),
        Some("not_authed") => (
            "not_authed: no token reached Slack",
            format!(
                "{new_token}; if a proxy sits in between, let it pass the Authorization header"
            ),
        ),
        Some("token_revoked") => (
            "token_revoked: the token was revoked (the app was uninstalled, or its tokens were regenerated)",
            reinstall.to_owned(),
        ),
        Some("account_inactive") => (
            "account_inactive: the token belongs to a deactivated app or a workspace that no longer exists",
            reinstall.to_owned(),
        ),
        Some("token_expired") => (
            "token_expired: the app rotates its tokens, and countersign does not refresh them",
            format!("turn token rotation off for the app, then {reinstall}"),
        ),
        _ => {
            let fix = match error {
                SlackError::Transport(_) => format!(
                    "check slack_api_url ({api_url}) and this machine's network or proxy; HTTPS \
                     to Slack needs the system's CA certificates (ca-certificates)"
                ),
                _ => "see Slack's documentation of auth.test for that error".to_owned(),
            };
            return Check::fail(format!("auth.test failed: {error}"), fix);
        }
    };
    Check::fail(format!("auth.test: {what}"), fix)
}

/// Each role channel exists, is live, and has the bot in it.
pub async fn channels(
    caller: &Caller,
    api: &SlackApi,
    bot: &str,
    channels: &[RoleChannel],
) -> Vec<Check> {
    let answers = join_all(
        channels
            .iter()
            .map(|c| caller.call(move || api.channel_info(&c.channel))),
    )
    .await;
    channels
        .iter()
        .zip(answers)
        .map(|(c, answer)| channel_check(c, bot, answer))
        .collect()
}

fn channel_check(c: &RoleChannel, bot: &str, answer: Result<ChannelInfo, SlackError>) -> Check {
    let (role, id) = (&c.role, &c.channel);
    let key = format!("roles.yaml key roles.{role}.channel");
    match answer {
        Ok(info) if info.is_archived => Check::fail(
            format!(
                "roles.{role}: #{} ({id}) is archived: Slack refuses posts there",
                info.name
            ),
            format!("unarchive #{}, or point {key} at a live channel", info.name),
        ),
        Ok(info) if !info.is_member => Check::fail(
            format!(
                "roles.{role}: @{bot} is not a member of #{} ({id}): Slack refuses its cards there (not_in_channel)",
                info.name
            ),
            format!(
                "invite @{bot} to #{} (`/invite @{bot}` in the channel)",
                info.name
            ),
        ),
        Ok(info) => Check::pass(format!(
            "roles.{role}: #{} ({id}), @{bot} is a member",
            info.name
        )),
        Err(error) => match error_name(&error) {
            Some("channel_not_found") => Check::fail(
                format!("roles.{role}: channel {id} not found"),
                format!(
                    "create the channel and invite @{bot}, or fix {key} (a private channel is \
                     invisible to the app until @{bot} is invited: `/invite @{bot}`)"
                ),
            ),
            Some("missing_scope") => Check::warn(
                format!(
                    "roles.{role}: channel {id} could not be checked (the token lacks channels:read or groups:read)"
                ),
                "add channels:read and groups:read to the app's bot scopes and reinstall the app",
            ),
            _ => trouble(format!("roles.{role}: channel {id}"), &error),
        },
    }
}

/// Each user group resolves and has at least one member.
pub async fn groups(
    caller: &Caller,
    api: &SlackApi,
    groups: &BTreeMap<String, Vec<String>>,
) -> Vec<Check> {
    let answers = join_all(
        groups
            .keys()
            .map(|g| caller.call(move || api.usergroup_members(g))),
    )
    .await;
    groups
        .iter()
        .zip(answers)
        .map(|((group, places), answer)| {
            let named = places.join("; ");
            match answer {
                Ok(members) if members.is_empty() => Check::fail(
                    format!("user group {group} has no members, so nobody approves through it (named in {named})"),
                    format!("add people to the group in Slack, or name another group in {named}"),
                ),
                Ok(members) => Check::pass(format!(
                    "user group {group}: {} member{}",
                    members.len(),
                    if members.len() == 1 { "" } else { "s" }
                )),
                Err(error) => match error_name(&error) {
                    Some("no_such_subteam") | Some("subteam_not_found") => Check::fail(
                        format!("user group {group} does not exist in this workspace (named in {named})"),
                        format!(
                            "fix the id in {named} (a user group id starts with S; Slack shows it \
                             in the group's link), or create the group"
                        ),
                    ),
                    _ => trouble(format!("user group {group} ({named})"), &error),
                },
            }
        })
        .collect()
}

/// Each person named exists, is active, and is a person.
pub async fn users(
    caller: &Caller,
    api: &SlackApi,
    users: &BTreeMap<String, Vec<String>>,
) -> Vec<Check> {
    let answers = join_all(users.keys().map(|u| caller.call(move || api.user_info(u)))).await;
    users
        .iter()
        .zip(answers)
        .map(|((user, places), answer)| user_check(user, &places.join("; "), answer))
        .collect()
}

fn user_check(user: &str, named: &str, answer: Result<UserInfo, SlackError>) -> Check {
    let replace = format!("replace {user} in {named} with an active person's member id");
    match answer {
        Ok(info) if info.deleted => Check::fail(
            format!("{user} (@{}) is deactivated (named in {named})", info.name),
            replace,
        ),
        Ok(info) if info.is_bot => Check::fail(
            format!(
                "{user} (@{}) is a bot, not a person (named in {named})",
                info.name
            ),
            replace,
        ),
        Ok(info) => Check::pass(format!("{user} @{}", info.name)),
        Err(error) => match error_name(&error) {
            Some("user_not_found") => Check::fail(
                format!("{user} is not a user of this workspace (named in {named})"),
                format!(
                    "fix the id in {named} (in Slack: the person's profile → ⋯ → Copy member ID)"
                ),
            ),
            _ => trouble(format!("{user} ({named})"), &error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::doctor::report::Status;

    #[test]
    fn a_channel_the_bot_is_not_in_names_the_role_and_the_invite() {
        let role = RoleChannel {
            role: "legal".into(),
            channel: "C0LEGAL".into(),
        };
        let info = |is_member, is_archived| {
            Ok(ChannelInfo {
                name: "legal-approvals".into(),
                is_member,
                is_archived,
                is_private: false,
            })
        };
        let out = channel_check(&role, "countersign", info(false, false));
        assert_eq!(out.status, Status::Fail);
        assert!(
            out.text.starts_with(
                "roles.legal: @countersign is not a member of #legal-approvals (C0LEGAL)"
            ),
            "{out:?}"
        );
        assert_eq!(
            out.fix.as_deref(),
            Some("invite @countersign to #legal-approvals (`/invite @countersign` in the channel)")
        );
        assert_eq!(
            channel_check(&role, "cs", info(true, true)).status,
            Status::Fail
        );
        assert_eq!(
            channel_check(&role, "cs", info(true, false)).status,
            Status::Pass
        );
        let gone = channel_check(
            &role,
            "cs",
            Err(SlackError::Api("channel_not_found".into())),
        );
        assert!(
            gone.fix
                .unwrap()
                .contains("fix roles.yaml key roles.legal.channel")
        );
        let scope = channel_check(&role, "cs", Err(SlackError::Api("missing_scope".into())));
        assert_eq!(scope.status, Status::Warn);
    }

    #[test]
    fn token_errors_are_explained() {
        let url = url::Url::parse("https://slack.com/api").unwrap();
        for (code, words) in [
            ("invalid_auth", "does not accept the token"),
            ("not_authed", "no token reached Slack"),
            ("token_revoked", "revoked"),
            ("account_inactive", "deactivated app"),
        ] {
            let check = token_failure(&SlackError::Api(code.into()), &url);
            assert_eq!(check.status, Status::Fail);
            assert!(
                check.text.contains(code) && check.text.contains(words),
                "{check:?}"
            );
            assert!(check.fix.unwrap().contains("Bot User OAuth Token"));
        }
        let down = token_failure(&SlackError::Transport("connection refused".into()), &url);
        assert!(
            down.fix
                .unwrap()
                .contains("slack_api_url (https://slack.com/api)")
        );
    }

    #[tokio::test]
    async fn a_429_is_waited_out_then_given_up() {
        let caller = Caller::default();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let answer = caller
            .call(|| {
                let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(SlackError::RateLimited(Duration::from_millis(5)))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(answer, Ok(2));
        let always = caller
            .call(|| async { Err::<(), _>(SlackError::RateLimited(Duration::from_millis(1))) })
            .await;
        assert_eq!(
            always,
            Err(SlackError::RateLimited(Duration::from_millis(1)))
        );
        let too_long = caller
            .call(|| async { Err::<(), _>(SlackError::RateLimited(Duration::from_secs(600))) })
            .await;
        // Not waited at all: a wait longer than LONGEST_WAIT fails at once.
        assert!(too_long.is_err());
    }
}
