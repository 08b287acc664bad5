//! Scopes in the sandbox, as Slack applies them: every answer to the bot carries the token's
//! scopes in `x-oauth-scopes`, and a method whose scope was not granted answers `missing_scope`
//! with `needed` and `provided`. (The scopes granted are the workspace's `bot_scopes`.)

use serde_json::{Map, Value};

use super::api::text_arg;

/// The header in which Slack lists a token's scopes, comma-separated.
pub const HEADER: &str = "x-oauth-scopes";

/// The bot scope a method needs, per Slack's method reference; `None` for methods that need
/// none (auth.test, chat.getPermalink, views.*).
pub fn required(method: &str, args: &Map<String, Value>) -> Option<&'static str> {
    Some(match method {
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" => "chat:write",
        "conversations.open" => "im:write",
        "users.info" => "users:read",
        "users.lookupByEmail" => "users:read.email",
        "usergroups.users.list" => "usergroups:read",
        "files.getUploadURLExternal" | "files.completeUploadExternal" => "files:write",
        // Which one depends on the kind of conversation asked about.
        "conversations.info" => match text_arg(args, "channel") {
            Some(id) if id.starts_with('G') => "groups:read",
            Some(id) if id.starts_with('D') => "im:read",
            _ => "channels:read",
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_info_needs_the_scope_of_its_kind_of_channel() {
        let args = |channel: &str| {
            let mut args = Map::new();
            args.insert("channel".into(), Value::String(channel.into()));
            args
        };
        assert_eq!(
            required("conversations.info", &args("C0FIN")),
            Some("channels:read")
        );
        assert_eq!(
            required("conversations.info", &args("G0SEC")),
            Some("groups:read")
        );
        assert_eq!(
            required("chat.postMessage", &args("C0FIN")),
            Some("chat:write")
        );
        assert_eq!(required("auth.test", &Map::new()), None);
    }
}
