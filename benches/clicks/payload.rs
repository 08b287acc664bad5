//! The interaction a reviewer's click makes: the `block_actions` payload Slack POSTs to
//! `/slack/interactions`, form-encoded and signed, in the shape the sandbox's control API sends
//! (src/sandbox/control.rs) — the whole clicked message included, as Slack does, so the server
//! parses what it would parse in production.
//!
//! The trigger id and response URL are shaped like the sandbox's but not issued by it. An Approve
//! without step-up opens no modal (only Reject and step-up use the trigger id); countersign does
//! answer the clicker on the response URL, which the sandbox refuses (404, a warning in the
//! server's log): the benchmark pays that request but not the sandbox's storing of the reply. The
//! card's `message_ts` is the template card's, which the vote does not read: the proposal is the
//! button's value.

use countersign::config::Secret;
use serde_json::{Value, json};

/// Who clicks, where, and on what kind of card: everything but the proposal.
#[derive(Debug, Clone)]
pub struct Clicker {
    pub team_id: String,
    pub user_id: String,
    pub user_name: String,
    pub channel_id: String,
    pub channel_name: String,
    /// A real card from the channel: its message and its Approve button, reused for every click
    /// (only the button's value, the proposal id, changes).
    pub message: Value,
    pub block_id: String,
    pub button: Value,
    /// Where the sandbox issues response URLs (`{base}/sandbox/response/`).
    pub base_url: String,
}

/// One signed request's parts.
pub struct Signed {
    pub body: String,
    pub timestamp: String,
    pub signature: String,
}

impl Clicker {
    /// The form body of a click on Approve for `proposal_id`; `seq` makes its trigger id, action
    /// timestamp and response URL distinct, as Slack's are.
    pub fn body(&self, proposal_id: &str, seq: u64, now: i64) -> String {
        let mut action = self.button.clone();
        action["value"] = json!(proposal_id);
        action["block_id"] = json!(self.block_id);
        action["action_ts"] = json!(format!("{now}.{:06}", seq % 1_000_000));
        let payload = json!({
            "type": "block_actions",
            "team": {"id": self.team_id, "domain": "sandbox"},
            "user": {"id": self.user_id, "username": self.user_name, "name": self.user_name, "team_id": self.team_id},
            "api_app_id": countersign::sandbox::workspace::APP_ID,
            "token": "sandbox-verification-token",
            "container": {"type": "message", "message_ts": self.message["ts"], "channel_id": self.channel_id,
                          "is_ephemeral": false},
            "trigger_id": format!("{seq}.{now}.{:016x}", rand::random::<u64>()),
            "channel": {"id": self.channel_id, "name": self.channel_name},
            "message": self.message,
            "response_url": format!("{}sandbox/response/{:032x}", self.base_url, rand::random::<u128>()),
            "actions": [action],
        });
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
    }

    /// [`Clicker::body`], signed with the app's signing secret at `now` (unix seconds).
    pub fn signed(&self, secret: &Secret, proposal_id: &str, seq: u64, now: i64) -> Signed {
        let body = self.body(proposal_id, seq, now);
        let signature = countersign::slack::signature::sign(secret, now, body.as_bytes());
        Signed {
            body,
            timestamp: now.to_string(),
            signature,
        }
    }
}

/// The message as Slack puts it in an interaction (`message` of the payload), from a message
/// the sandbox's control API lists.
pub fn message_of(listed: &Value) -> Value {
    json!({"type": "message", "user": listed["user"], "bot_id": countersign::sandbox::workspace::BOT_ID,
           "ts": listed["ts"], "text": listed["text"], "blocks": listed["blocks"],
           "thread_ts": listed["thread_ts"]})
}

/// The Approve button of a listed card and the block it sits in.
pub fn approve_button(listed: &Value) -> Option<(String, Value)> {
    listed["blocks"].as_array()?.iter().find_map(|block| {
        let button = block["elements"]
            .as_array()?
            .iter()
            .find(|e| e["action_id"] == countersign::slack::card::APPROVE)?;
        Some((block["block_id"].as_str()?.to_owned(), button.clone()))
    })
}
