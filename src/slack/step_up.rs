//! Step-up in Slack. Approve on a card whose policy says `step_up` opens a modal bound to that
//! decision (a signed five-minute token naming the proposal, the reviewer and the card version):
//! `confirm` asks for a value taken from the action, `totp` for a code from the reviewer's
//! enrolled authenticator. Only a right answer, from the right person, for the proposal as it
//! still stands, becomes a vote; every outcome is audited. Enrollment is `/countersign enroll`.

use serde_json::json;
use slack_morphism::prelude::*;

use super::Ack;
use super::SlackState;
use super::card::slack_date;
use super::diff;
use super::escape::truncate;
use super::payload::{BlockActions, ViewSubmission};
use super::review::Answer;
use super::rich::Paragraph;
use crate::config::Secret;
use crate::domain::{Ballot, Proposal, StepUp};
use crate::engine::{Enrollment, StepUpRefusal, SteppedApproval, SteppedRefusal, Unenrollment};
use crate::stepup::confirm::challenge;
use crate::stepup::token::{Binding, TokenSigner};
use crate::stepup::totp::Authenticator;
use crate::stepup::vault::Vault;

/// callback_id of the step-up modal.
pub const VIEW: &str = "step_up";
const ANSWER_BLOCK: &str = "answer";
const ANSWER_INPUT: &str = "value";
/// Changes restated in the modal.
const CHANGES_SHOWN: usize = 5;

/// The keys step-up needs: the vault exists only with a configured `secret_key`.
#[derive(Clone)]
pub struct StepUpKeys {
    pub vault: Option<Vault>,
    pub tokens: TokenSigner,
}

impl std::fmt::Debug for StepUpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepUpKeys(***)")
    }
}

impl StepUpKeys {
    pub fn new(secret_key: Option<&Secret>) -> Self {
        Self {
            vault: secret_key.map(Vault::new),
            tokens: TokenSigner::new(secret_key),
        }
    }
}

/// Approve was clicked on a card that needs step-up: open the modal, or say why not.
/// Answers the ephemeral text to send instead, if the modal was not opened.
pub async fn open(
    state: &SlackState,
    click: &BlockActions,
    proposal: &Proposal,
    channel: &str,
) -> Option<String> {
    let user = &click.user.id;
    let now = state.engine.clock().now();
    let step_up = proposal.content.verdict.step_up;
    let vault = state.slack.step_up.vault.as_ref();
    match state.engine.step_up_ready(vault, proposal, user).await {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return Some(refused(refusal)),
        Err(error) => return Some(super::review::unavailable(&proposal.id, &error)),
    }
    let binding = Binding {
        proposal: proposal.id.clone(),
        user: user.clone(),
        version: proposal.version(),
        channel: channel.to_owned(),
    };
    let token = state.slack.step_up.tokens.issue(&binding, now);
    let view = modal(proposal, step_up, token);
    match state.slack.api.open_view(&click.trigger_id, view).await {
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(%error, proposal_id = %proposal.id, "cannot open the step-up modal");
            Some("Slack did not let me open the confirmation form in time; please click Approve again.".into())
        }
    }
}

/// A refused TOTP answer in words, for the reviewer.
fn refused(refusal: StepUpRefusal) -> String {
    match &refusal {
        StepUpRefusal::Off => "This approval needs a TOTP code, but this countersign has no `secret_key` configured, so TOTP step-up is off. Ask an operator; nothing was recorded.".to_owned(),
        StepUpRefusal::LockedOut { until } => format!(
            "Your step-up is locked until {} after too many wrong codes; nothing was recorded.",
            slack_date(*until)
        ),
        StepUpRefusal::NotEnrolled => "This approval needs a code from an authenticator app, and you have not enrolled one yet. Run `/countersign enroll`: I will DM you a QR code to scan, then confirm with `/countersign enroll 123456`. Nothing was recorded.".to_owned(),
        StepUpRefusal::SecretUnreadable => "Your enrollment cannot be read (was secret_key changed?). Ask an operator to run `countersign totp reset`.".to_owned(),
        StepUpRefusal::WrongCode => "That code is not valid now; check your authenticator and try the current code.".to_owned(),
        StepUpRefusal::WrongCodeLockedOut { until } => format!(
            "Wrong code. That was too many: your step-up is locked until {}.",
            slack_date(*until)
        ),
        StepUpRefusal::CodeAlreadyUsed => "That code was already used; wait for the next one.".to_owned(),
        StepUpRefusal::Unavailable => "countersign could not check the code just now; please try again.".to_owned(),
    }
}

fn modal(proposal: &Proposal, step_up: StepUp, token: String) -> SlackModalView {
    let content = &proposal.content;
    let currency = content.params.get("currency").and_then(|c| c.as_str());
    // What is being approved, restated; the agent's words as literal rich text.
    let mut restated = Paragraph::new()
        .text("You are approving: ")
        .bold(truncate(&content.summary, 150))
        .newline()
        .code(proposal.agent.as_str())
        .text(" wants to run ")
        .code(content.action.as_str());
    if let Some(target) = &content.target {
        restated = restated
            .text(" on ")
            .text(truncate(&target.system, 60))
            .text(" ")
            .text(truncate(&target.kind, 60))
            .text(" ")
            .code(truncate(&target.id, 80));
    }
    for change in content.changes.iter().take(CHANGES_SHOWN) {
        restated = restated.newline().append(diff::line(change, currency));
    }
    if content.changes.len() > CHANGES_SHOWN {
        restated = restated.newline().text(format!(
            "…and {} more",
            content.changes.len() - CHANGES_SHOWN
        ));
    }
    let (title, label, hint) = match step_up {
        StepUp::Totp => (
            "Approve with a code",
            "6-digit code from your authenticator".to_owned(),
            "Each code works once.".to_owned(),
        ),
        _ => {
            let asked = challenge(proposal).asks_for;
            (
                "Confirm approval",
                format!("Type {asked} to confirm"),
                format!("Copy it from what you read above: {asked}."),
            )
        }
    };
    let input = SlackInputBlock::new(
        pt!(label),
        SlackInputBlockElement::PlainTextInput(
            SlackBlockPlainTextInputElement::new()
                .with_action_id(ANSWER_INPUT.into())
                .with_max_length(200),
        ),
    )
    .with_block_id(ANSWER_BLOCK.into())
    .with_hint(pt!(hint));
    SlackModalView::new(pt!(title), vec![super::rich::block(restated), input.into()])
        .with_submit(pt!("Approve"))
        .with_close(pt!("Cancel"))
        .with_callback_id(VIEW.into())
        .with_private_metadata(token)
}

fn errors(message: &str) -> Ack {
    // Slack shows a field error as plain text: no date tokens or mentions in it.
    let message = super::escape::plain(message);
    Ack::with(json!({"response_action": "errors", "errors": {ANSWER_BLOCK: message}}))
}

/// The step-up modal was submitted: check the form is the reviewer's own, then let the core
/// check the answer and record the approval.
pub async fn submitted(state: &SlackState, submission: &ViewSubmission) -> Ack {
    let user = submission.user.id.as_str();
    let now = state.engine.clock().now();
    let binding = match state
        .slack
        .step_up
        .tokens
        .check(&submission.view.private_metadata, now)
    {
        Ok(binding) => binding,
        Err(error) => return errors(&format!("{error}; nothing was recorded.")),
    };
    let proposal = match state.engine.proposal(&binding.proposal).await {
        Ok(Some(proposal)) => proposal,
        Ok(None) => return errors("That proposal no longer exists."),
        Err(error) => {
            tracing::error!(%error, "cannot read a proposal for step-up");
            return errors("countersign could not read the proposal just now; please try again.");
        }
    };
    if binding.user != user {
        // Slack shows a form only to whoever opened it: this is a forgery or a bug.
        let reason = "form opened by another reviewer";
        if let Err(error) = state.engine.step_up_failed(&proposal, user, reason).await {
            tracing::error!(%error, "cannot audit a step-up failure");
        }
        return errors(
            "This form was opened by someone else; click Approve on the card yourself. Nothing was recorded.",
        );
    }
    let answer = submission
        .view
        .state
        .value(ANSWER_BLOCK, ANSWER_INPUT)
        .unwrap_or("");
    let attempt = SteppedApproval {
        proposal: &proposal,
        user,
        answer,
        seen: &binding.version,
        dedupe: format!("view:{}", submission.view.id),
    };
    let registry = state.registry.current();
    let vault = state.slack.step_up.vault.as_ref();
    let people = &state.slack.directory;
    let approved = (state.engine)
        .approve_stepped_up(people, &registry, vault, attempt)
        .await;
    let cast = match approved {
        Ok(Ok(cast)) => cast,
        Ok(Err(refusal)) => return errors(&stepped_refusal(&proposal, refusal)),
        Err(error) => return errors(&super::review::unavailable(&proposal.id, &error)),
    };
    match Answer::of(cast, Ballot::Approve) {
        Answer::Recorded { text, .. } => {
            let api = state.slack.api.clone();
            let (channel, user) = (binding.channel, user.to_owned());
            tokio::spawn(async move {
                if let Err(error) = api.post_ephemeral(&channel, &user, &text).await {
                    tracing::warn!(%error, "cannot confirm a stepped-up approval");
                }
            });
            Ack::default()
        }
        Answer::Replay => Ack::default(),
        Answer::Refused(refusal) => errors(&refusal),
    }
}

/// A refused stepped-up approval in words, for the reviewer.
fn stepped_refusal(proposal: &Proposal, refusal: SteppedRefusal) -> String {
    match refusal {
        SteppedRefusal::Changed => format!(
            "The proposal changed since you opened this form (it is now {}); nothing was recorded.",
            proposal.status.as_str()
        ),
        SteppedRefusal::WrongConfirmation { asks_for } => {
            format!("That does not match {asks_for}; nothing was recorded.")
        }
        SteppedRefusal::Totp(refusal) => refused(refusal),
        SteppedRefusal::Click(refusal) => super::review::refused(&refusal),
    }
}

/// `/countersign enroll [CODE]`: without a code, start (or restart) an enrollment and DM the
/// reviewer its QR code; with one, confirm the pending enrollment. Answers the ephemeral reply.
pub async fn enroll(state: &SlackState, user: &str, code: Option<&str>) -> String {
    let vault = state.slack.step_up.vault.as_ref();
    match state.engine.enroll_totp(vault, user, code).await {
        Enrollment::Off => "TOTP enrollment is off: this countersign has no `secret_key` configured. Ask an operator.".into(),
        Enrollment::AlreadyEnrolled => "You are already enrolled. To start over, run `/countersign unenroll CODE` with a current code first.".into(),
        Enrollment::Enrolled => ":white_check_mark: Enrolled. Approvals that need a code will ask for one from this authenticator.".into(),
        Enrollment::StartFirst => "Start with `/countersign enroll` (no code): I will DM you a QR code to scan.".into(),
        Enrollment::CodeMismatch => "That code does not match. Check the time on your phone and enter the current code: `/countersign enroll 123456`.".into(),
        Enrollment::StartAgain => "That enrollment changed meanwhile or cannot be read; run `/countersign enroll` again.".into(),
        Enrollment::Unavailable => "countersign could not start your enrollment just now; please try again.".into(),
        Enrollment::Started(authenticator) => {
            // The DM and the QR upload are several Slack calls: they happen after the answer.
            let api = state.slack.api.clone();
            let user = user.to_owned();
            tokio::spawn(async move {
                if let Err(error) = send_enrollment(&api, &user, &authenticator).await {
                    tracing::warn!(%error, "cannot DM an enrollment QR code");
                }
            });
            "I sent you a DM with a QR code. Scan it with your authenticator app, then confirm with `/countersign enroll 123456` (the code it shows).".into()
        }
    }
}

async fn send_enrollment(
    api: &super::SlackApi,
    user: &str,
    authenticator: &Authenticator,
) -> Result<(), super::SlackError> {
    let channel = api.open_dm(user).await?;
    let text = format!(
        ":lock: Your countersign authenticator. Scan the QR code below, or add this key by hand:\n`{}`\nThen confirm with `/countersign enroll 123456`. This message is only for you; delete it once you are enrolled.",
        authenticator.uri()
    );
    let message = super::OutgoingMessage {
        text,
        blocks: Vec::new(),
    };
    api.post_message(&channel, &message, None).await?;
    let png = authenticator
        .qr_png()
        .map_err(super::SlackError::Transport)?;
    api.upload_png(
        &channel,
        "countersign-authenticator.png",
        "countersign authenticator",
        "Scan with your authenticator app",
        png,
    )
    .await
}

/// `/countersign unenroll CODE`: removes an enrollment, proven with a current code.
pub async fn unenroll(state: &SlackState, user: &str, code: Option<&str>) -> String {
    let Some(code) = code else {
        return "Add a current code: `/countersign unenroll 123456`.".into();
    };
    let vault = state.slack.step_up.vault.as_ref();
    match state.engine.unenroll_totp(vault, user, code).await {
        Ok(Unenrollment::Off) => "TOTP is off on this countersign.".into(),
        Ok(Unenrollment::NotEnrolled) => "You are not enrolled.".into(),
        Ok(Unenrollment::CodeMismatch) => "That code does not match; nothing changed.".into(),
        Ok(Unenrollment::LockedOut { until }) => format!(
            "Your step-up is locked until {} after too many wrong codes; nothing changed.",
            slack_date(until)
        ),
        Ok(Unenrollment::CodeAlreadyUsed) => {
            "That code was already used; wait for the next one.".into()
        }
        Ok(Unenrollment::Unenrolled) => {
            "Unenrolled. Approvals that need a code are closed to you until you enroll again."
                .into()
        }
        Err(error) => {
            tracing::error!(%error, "cannot unenroll");
            "countersign could not change your enrollment just now; please try again.".into()
        }
    }
}
