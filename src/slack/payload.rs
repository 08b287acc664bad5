//! The parts of Slack's interaction payloads countersign reads. Deliberately narrow: Slack adds
//! fields all the time, and a payload must never fail to parse because of one we ignore.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `payload` of a POST to `/slack/interactions`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Interaction {
    BlockActions(BlockActions),
    ViewSubmission(ViewSubmission),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct UserRef {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct ChannelRef {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct Container {
    pub channel_id: Option<String>,
    pub message_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct BlockActions {
    pub user: UserRef,
    pub trigger_id: String,
    #[serde(default)]
    pub actions: Vec<Action>,
    pub container: Option<Container>,
    pub channel: Option<ChannelRef>,
    /// Where to answer the clicker (Slack's; absent in some surfaces, e.g. App Home).
    pub response_url: Option<String>,
}

impl BlockActions {
    /// The channel the clicked message is in.
    pub fn channel_id(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.channel_id.as_deref())
            .or(self.channel.as_ref().map(|c| c.id.as_str()))
    }
}

#[derive(Debug, Deserialize)]
pub struct Action {
    pub action_id: String,
    pub block_id: Option<String>,
    pub value: Option<String>,
    pub action_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ViewSubmission {
    pub user: UserRef,
    pub view: SubmittedView,
}

#[derive(Debug, Deserialize)]
pub struct SubmittedView {
    pub id: String,
    #[serde(default)]
    pub callback_id: String,
    #[serde(default)]
    pub private_metadata: String,
    #[serde(default)]
    pub state: ViewState,
}

#[derive(Debug, Default, Deserialize)]
pub struct ViewState {
    /// `values[block_id][action_id]`.
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, InputValue>>,
}

impl ViewState {
    /// What the person entered or chose in one input.
    pub fn value(&self, block_id: &str, action_id: &str) -> Option<&str> {
        let input = self.values.get(block_id)?.get(action_id)?;
        input
            .value
            .as_deref()
            .or(input.selected_option.as_ref().map(|o| o.value.as_str()))
    }
}

#[derive(Debug, Deserialize)]
pub struct InputValue {
    pub value: Option<String>,
    pub selected_option: Option<SelectedOption>,
}

#[derive(Debug, Deserialize)]
pub struct SelectedOption {
    pub value: String,
}

/// A slash command (form fields).
#[derive(Debug, Deserialize)]
pub struct SlashCommand {
    pub user_id: String,
    pub channel_id: String,
    pub command: String,
    #[serde(default)]
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_block_actions_payload_and_ignores_the_rest() {
        let payload = r#"{"type":"block_actions","user":{"id":"U1","name":"p"},"trigger_id":"t.1",
            "team":{"id":"T"},"unknown":{"deep":[1,2]},
            "container":{"type":"message","message_ts":"1.2","channel_id":"C1"},
            "actions":[{"type":"button","action_id":"approve","block_id":"decide","value":"prop_x","action_ts":"3.4"}]}"#;
        let Interaction::BlockActions(actions) = serde_json::from_str(payload).unwrap() else {
            panic!("block_actions expected");
        };
        assert_eq!(actions.user.id, "U1");
        assert_eq!(actions.channel_id(), Some("C1"));
        assert_eq!(actions.actions[0].value.as_deref(), Some("prop_x"));
    }

    #[test]
    fn unknown_interaction_types_are_other() {
        let parsed: Interaction = serde_json::from_str(r#"{"type":"shortcut","x":1}"#).unwrap();
        assert!(matches!(parsed, Interaction::Other));
    }

    #[test]
    fn view_state_values_by_block_and_action() {
        let payload = r#"{"type":"view_submission","user":{"id":"U1"},"view":{"id":"V1","callback_id":"reject",
            "private_metadata":"m","state":{"values":{"reason":{"text":{"type":"plain_text_input","value":"too big"}},
            "preset":{"choice":{"type":"static_select","selected_option":{"value":"duplicate","text":{}}}}}}}}"#;
        let Interaction::ViewSubmission(submission) = serde_json::from_str(payload).unwrap() else {
            panic!("view_submission expected");
        };
        assert_eq!(
            submission.view.state.value("reason", "text"),
            Some("too big")
        );
        assert_eq!(
            submission.view.state.value("preset", "choice"),
            Some("duplicate")
        );
        assert_eq!(submission.view.state.value("nope", "text"), None);
    }
}
