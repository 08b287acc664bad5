//! The Slack Web API client: slack-morphism over hyper, pointed at Slack or at the sandbox. The
//! connector accepts `http` as well as `https` because the sandbox (and only the sandbox) is
//! plain HTTP on this machine; Slack itself is always https.
//!
//! Every call spends from the [`SlackBudget`] first (the method's tier, or for chat.postMessage
//! the channel's), and a 429 pauses that bucket: no caller can forget either. An empty budget
//! answers [`SlackError::RateLimited`], exactly as Slack's 429 would, so callers handle one
//! thing. Calls made while a person waits on the answer (a modal after a click, the ephemeral
//! reply to it, whether the clicker may vote) wait up to [`PERSON_WAITS`] for a token instead:
//! Slack's trigger id and acknowledgement both expire after 3 s, so a short wait can still
//! serve the click where failing at once could not, and a longer one would lose it anyway.

use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use url::Url;

use super::budget::SlackBudget;
use crate::config::Secret;

mod spend;

pub use spend::{BudgetBucket, PERSON_WAITS, PostPermit};
use spend::{NOBODY_WAITS, Spend};

/// The longest any one Web API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A Slack call that did not succeed, in the terms the callers act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// 429: try again after this long.
    #[error("rate limited (retry after {0:?})")]
    RateLimited(Duration),
    /// Slack answered `ok: false` with this error name (and details, for invalid_blocks).
    #[error("slack refused: {0}")]
    Api(String),
    /// Slack could not be reached or answered garbage.
    #[error("slack unreachable: {0}")]
    Transport(String),
}

impl From<SlackClientError> for SlackError {
    fn from(error: SlackClientError) -> Self {
        match error {
            SlackClientError::RateLimitError(e) => {
                SlackError::RateLimited(e.retry_after.unwrap_or(Duration::from_secs(1)))
            }
            SlackClientError::ApiError(e) => {
                let details = e.errors.map(|v| format!(" {v:?}")).unwrap_or_default();
                SlackError::Api(format!("{}{details}", e.code))
            }
            other => SlackError::Transport(other.to_string()),
        }
    }
}

/// A message to post or to put in place of an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// The notification fallback (what a phone shows); always set.
    pub text: String,
    pub blocks: Vec<SlackBlock>,
}

impl OutgoingMessage {
    fn content(&self) -> SlackMessageContent {
        SlackMessageContent::new()
            .with_text(self.text.clone())
            .with_blocks(self.blocks.clone())
    }
}

/// The bot's connection to one workspace.
#[derive(Clone)]
pub struct SlackApi {
    client: Arc<SlackHyperClient>,
    token: SlackApiToken,
    budget: SlackBudget,
    /// Scopes the budget's buckets: Slack counts per app per workspace, which one bot token
    /// is. A digest, not the token: the keys live in Redis.
    workspace: Arc<str>,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackApi(***)")
    }
}

impl SlackApi {
    /// A client for the Web API at `api_url` (`https://slack.com/api`, or the sandbox's), with
    /// a budget of its own on the wall clock until [`SlackApi::with_budget`] gives it the app's.
    pub fn new(api_url: &Url, token: &Secret) -> Self {
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(error) => {
                // No CA bundle on this machine: plain HTTP (the sandbox) still works.
                tracing::warn!(%error, "no system CA certificates: HTTPS to Slack will fail until ca-certificates is installed");
                let roots = rustls::RootCertStore::empty();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
        };
        let https = builder.https_or_http().enable_http1().build();
        let connector = SlackClientHyperConnector::from(https)
            .with_slack_api_url(api_url.as_str().trim_end_matches('/'));
        let digest = sha2::Sha256::digest(token.expose().as_bytes());
        Self {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(SlackApiTokenValue::new(token.expose().to_owned())),
            budget: SlackBudget::default(),
            workspace: hex::encode(&digest[..6]).into(),
        }
    }

    fn session(&self) -> SlackClientSession<'_, SlackClientHyperHttpsConnector> {
        self.client.open_session(&self.token)
    }

    /// Every call is bounded: the client itself has no timeout, and a hung call would hold a
    /// worker (and its lease) or a reviewer's click.
    async fn bounded<T>(
        call: impl std::future::Future<Output = Result<T, SlackClientError>>,
    ) -> Result<T, SlackError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result.map_err(SlackError::from),
            Err(_) => Err(SlackError::Transport(format!(
                "no answer within {CALL_TIMEOUT:?}"
            ))),
        }
    }

    /// Posts in a channel (or a thread of it), within the channel's budget; answers the
    /// message's `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        message: &OutgoingMessage,
        thread_ts: Option<&str>,
    ) -> Result<String, SlackError> {
        let permit = self.reserve_post(channel).await?;
        self.post_paid(permit, message, thread_ts).await
    }

    /// Posts what `permit` paid for (in its channel, or a thread of it); answers the `ts`.
    pub async fn post_paid(
        &self,
        permit: PostPermit,
        message: &OutgoingMessage,
        thread_ts: Option<&str>,
    ) -> Result<String, SlackError> {
        let channel = permit.channel;
        let mut request =
            SlackApiChatPostMessageRequest::new(channel.as_str().into(), message.content());
        request.thread_ts = thread_ts.map(|ts| SlackTs::new(ts.to_owned()));
        let session = self.session();
        let call = Self::bounded(session.chat_post_message(&request));
        let response = self.send(&Spend::Channel(&channel), call).await?;
        Ok(response.ts.to_string())
    }

    /// Replaces a message the bot posted.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        message: &OutgoingMessage,
    ) -> Result<(), SlackError> {
        let request = SlackApiChatUpdateRequest::new(
            channel.into(),
            message.content(),
            SlackTs::new(ts.to_owned()),
        );
        self.call(
            "chat.update",
            NOBODY_WAITS,
            self.session().chat_update(&request),
        )
        .await?;
        Ok(())
    }

    /// A message only `user` sees, in `channel`.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let request = SlackApiChatPostEphemeralRequest::new(
            channel.into(),
            user.into(),
            SlackMessageContent::new().with_text(text.to_owned()),
        );
        self.call(
            "chat.postEphemeral",
            PERSON_WAITS,
            self.session().chat_post_ephemeral(&request),
        )
        .await?;
        Ok(())
    }

    /// Opens a modal with a click's trigger id (valid for three seconds: call this first).
    pub async fn open_view(
        &self,
        trigger_id: &str,
        view: SlackModalView,
    ) -> Result<String, SlackError> {
        let request = SlackApiViewsOpenRequest::new(trigger_id.into(), SlackView::Modal(view));
        let response = self
            .call(
                "views.open",
                PERSON_WAITS,
                self.session().views_open(&request),
            )
            .await?;
        Ok(response.view.state_params.id.to_string())
    }

    /// The bot's DM channel with `user`.
    pub async fn open_dm(&self, user: &str) -> Result<String, SlackError> {
        let request = SlackApiConversationsOpenRequest::new().with_users(vec![user.into()]);
        let response = self
            .call(
                "conversations.open",
                NOBODY_WAITS,
                self.session().conversations_open(&request),
            )
            .await?;
        Ok(response.channel.id.to_string())
    }

    /// Shares a PNG in `channel` with a comment, by Slack's three-step upload.
    pub async fn upload_png(
        &self,
        channel: &str,
        filename: &str,
        title: &str,
        comment: &str,
        png: Vec<u8>,
    ) -> Result<(), SlackError> {
        let session = self.session();
        let request = SlackApiFilesGetUploadUrlExternalRequest::new(filename.to_owned(), png.len());
        let target = self
            .call(
                "files.getUploadURLExternal",
                NOBODY_WAITS,
                session.get_upload_url_external(&request),
            )
            .await?;
        let upload =
            SlackApiFilesUploadViaUrlRequest::new(target.upload_url, png, "image/png".into());
        // Not a Web API method: the bytes go to Slack's file store, which the tiers do not cover.
        Self::bounded(session.files_upload_via_url(&upload)).await?;
        let complete = SlackApiFilesCompleteUploadExternalRequest::new(vec![
            SlackApiFilesComplete::new(target.file_id).with_title(title.to_owned()),
        ])
        .with_channel_id(channel.into())
        .with_initial_comment(comment.to_owned());
        self.call(
            "files.completeUploadExternal",
            NOBODY_WAITS,
            session.files_complete_upload_external(&complete),
        )
        .await?;
        Ok(())
    }

    /// A link to a message that opens it in Slack.
    pub async fn permalink(&self, channel: &str, ts: &str) -> Result<String, SlackError> {
        let request =
            SlackApiChatGetPermalinkRequest::new(channel.into(), SlackTs::new(ts.to_owned()));
        let response = self
            .call(
                "chat.getPermalink",
                NOBODY_WAITS,
                self.session().chat_get_permalink(&request),
            )
            .await?;
        Ok(response.permalink.to_string())
    }

    /// Members of a user group.
    pub async fn usergroup_members(&self, usergroup: &str) -> Result<Vec<String>, SlackError> {
        let request = SlackApiUserGroupsUsersListRequest::new(usergroup.into());
        let response = self
            .call(
                "usergroups.users.list",
                PERSON_WAITS,
                self.session().usergroups_users_list(&request),
            )
            .await?;
        Ok(response.users.into_iter().map(|u| u.to_string()).collect())
    }

    /// The workspace member with this email, if there is one.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<String>, SlackError> {
        let request = SlackApiUsersLookupByEmailRequest::new(EmailAddress(email.to_owned()));
        let session = self.session();
        let call = session.users_lookup_by_email(&request);
        match self.call("users.lookupByEmail", NOBODY_WAITS, call).await {
            Ok(response) => Ok(Some(response.user.id.to_string())),
            Err(SlackError::Api(error)) if error.starts_with("users_not_found") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// A fresh Socket Mode URL (`apps.connections.open`). Called with the app-level token, not
    /// the bot's; each URL is good for one connection.
    pub async fn open_socket(&self, app_token: &Secret) -> Result<Url, SlackError> {
        let token = SlackApiToken::new(SlackApiTokenValue::new(app_token.expose().to_owned()));
        let session = self.client.open_session(&token);
        let request = SlackApiAppsConnectionOpenRequest::new();
        let response = self
            .call(
                "apps.connections.open",
                NOBODY_WAITS,
                session.apps_connections_open(&request),
            )
            .await?;
        Ok(response.url.0)
    }

    /// Who the token belongs to: a cheap check that the token works.
    pub async fn auth_test(&self) -> Result<String, SlackError> {
        Ok(self.identity().await?.user_id)
    }

    /// `auth.test` in full: the workspace and the bot user the token speaks for.
    pub async fn identity(&self) -> Result<BotIdentity, SlackError> {
        let response = self
            .call("auth.test", NOBODY_WAITS, self.session().auth_test())
            .await?;
        Ok(BotIdentity {
            team: response.team,
            team_id: response.team_id.to_string(),
            user: response.user.unwrap_or_default(),
            user_id: response.user_id.to_string(),
        })
    }

    /// `conversations.info`: does the channel exist, is it archived, is the bot in it.
    pub async fn channel_info(&self, channel: &str) -> Result<ChannelInfo, SlackError> {
        let request = SlackApiConversationsInfoRequest::new(channel.into());
        let response = self
            .call(
                "conversations.info",
                NOBODY_WAITS,
                self.session().conversations_info(&request),
            )
            .await?;
        let flags = response.channel.flags;
        Ok(ChannelInfo {
            name: response.channel.name.unwrap_or_default(),
            is_member: flags.is_member.unwrap_or(false),
            is_archived: flags.is_archived.unwrap_or(false),
            is_private: flags.is_private.unwrap_or(false),
        })
    }

    /// `users.info`: whether a user id is a live person.
    pub async fn user_info(&self, user: &str) -> Result<UserInfo, SlackError> {
        let request = SlackApiUsersInfoRequest::new(user.into());
        let response = self
            .call(
                "users.info",
                NOBODY_WAITS,
                self.session().users_info(&request),
            )
            .await?;
        let user = response.user;
        Ok(UserInfo {
            name: user.name.unwrap_or_default(),
            deleted: user.deleted.unwrap_or(false),
            is_bot: user.flags.is_bot.unwrap_or(false),
        })
    }
}

/// Whom a token speaks for (`auth.test`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    pub team: String,
    pub team_id: String,
    /// The bot user's name (what `@…` mentions it by).
    pub user: String,
    pub user_id: String,
}

/// What `conversations.info` says about a channel, in the terms countersign cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    /// Whether the bot is in it: Slack refuses its posts (`not_in_channel`) otherwise.
    pub is_member: bool,
    pub is_archived: bool,
    pub is_private: bool,
}

/// What `users.info` says about a user: a deleted account or a bot cannot review anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub deleted: bool,
    pub is_bot: bool,
}
