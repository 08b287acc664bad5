//! `conversations.info` in the sandbox: what Slack tells an app about a channel — whether it
//! exists (a private one only if the bot is in it), whether it is archived, whether the bot is
//! a member.

use serde_json::json;

use super::Sandbox;
use super::api::{Reply, text_arg};

impl Sandbox {
    pub(super) fn conversation_info(
        &self,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Reply {
        let found = text_arg(args, "channel").and_then(|id| self.0.workspace.channels.get(id));
        // Slack hides a private channel from an app outside it.
        let Some(channel) = found.filter(|c| c.bot_member || !c.is_private()) else {
            return Reply::Error("channel_not_found", None);
        };
        // A fixed creation time: Slack always sends one (and slack-morphism requires it).
        let created = 1_767_225_600; // 2026-01-01T00:00:00Z
        let body = match &channel.user {
            Some(user) => json!({
                "id": channel.id, "created": created, "is_im": true, "is_org_shared": false,
                "user": user, "is_user_deleted": false,
            }),
            None => json!({
                "id": channel.id, "name": channel.name, "name_normalized": channel.name,
                "created": created, "creator": super::workspace::BOT_USER,
                "is_channel": !channel.is_private(), "is_group": channel.is_private(),
                "is_im": false, "is_mpim": false, "is_private": channel.is_private(),
                "is_archived": channel.archived, "is_general": false, "is_shared": false,
                "is_org_shared": false, "is_member": channel.bot_member,
                "topic": {"value": "", "creator": "", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0},
                "previous_names": [],
            }),
        };
        Reply::Ok(json!({"channel": body}))
    }
}
