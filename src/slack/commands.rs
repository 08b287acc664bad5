//! `/countersign …` slash commands. Answered at once, ephemerally, within Slack's 3 seconds.
//! Over HTTP (`POST /slack/commands`) they arrive as a signed form; over Socket Mode as the same
//! fields in JSON. Either way [`run`] answers them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::SlackRejection;
use super::SlackState;
use super::payload::SlashCommand;
use super::{Ack, verified};

const HELP: &str = "*countersign* — approvals for AI agents\n\
• Cards arrive in your role's channel; *Approve* or *Reject* them there.\n\
• `/countersign enroll` — set up an authenticator for approvals that need a code; confirm with `/countersign enroll 123456`\n\
• `/countersign unenroll 123456` — remove it (needs a current code)\n\
• `/countersign report [7d|30d|90d] [role]` — the role's SLA report, posted in its channel
\
• `/countersign pause|draft-only|resume AGENT [ACTION] [reason]` — narrow an agent or widen it back (admins)\n\
• `/countersign autonomy AGENT [30d|90d]` — each action's record and what it has earned\n\
• `/countersign help` — this message";

pub async fn handle(
    State(state): State<SlackState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Ack, SlackRejection> {
    verified(&state, &headers, &body)?;
    let command: SlashCommand = serde_urlencoded_form(&body)?;
    Ok(run(&state, &command).await)
}

/// One slash command, from either transport: the ephemeral reply.
pub(super) async fn run(state: &SlackState, command: &SlashCommand) -> Ack {
    let mut words = command.text.split_whitespace();
    let word = words.next().unwrap_or("help");
    // Only the first word is logged: what follows may be a one-time code.
    tracing::info!(user = %command.user_id, channel = %command.channel_id, command = %command.command, word, "slash command");
    let text = match word {
        "help" => HELP.to_owned(),
        "enroll" => super::step_up::enroll(state, &command.user_id, words.next()).await,
        "unenroll" => super::step_up::unenroll(state, &command.user_id, words.next()).await,
        "pause" | "draft-only" | "resume" => {
            use super::controls::Change;
            let change = match word {
                "pause" => Change::Narrow(crate::domain::ControlMode::Paused),
                "draft-only" => Change::Narrow(crate::domain::ControlMode::DraftOnly),
                _ => Change::Resume,
            };
            let rest: Vec<&str> = words.collect();
            super::controls::handle(state, command, change, &rest).await
        }
        "autonomy" => {
            let rest: Vec<&str> = words.collect();
            super::autonomy::handle(state, &rest).await
        }
        "report" => {
            let rest: Vec<&str> = words.collect();
            super::report::request(state, command, &rest).await
        }
        other => format!(
            "I don't know `{}`.\n{HELP}",
            super::escape::mrkdwn(&super::escape::truncate(other, 40))
        ),
    };
    Ack::with(json!({"response_type": "ephemeral", "text": text}))
}

fn serde_urlencoded_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SlackRejection> {
    let pairs: serde_json::Map<String, Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(Value::Object(pairs))
        .map_err(|e| SlackRejection::Payload(format!("slash command form: {e}")))
}
