//! Step-up in Slack. Approve on a card whose policy says `step_up` opens a modal bound to that
//! decision (a signed five-minute token naming the proposal, the reviewer and the card version):
//! `confirm` asks for a value taken from the action, `totp` for a code from the reviewer's
//! enrolled authenticator. Only a right answer, from the right person, for the proposal as it
//! still stands, becomes a vote; every outcome is audited. Enrollment is `/countersign enroll`.

use serde_json::json;
use slack_morphism::prelude::*;

use super::Ack;
use super::card::slack_date;
use super::diff;
use super::escape::truncate;
use super::payload::{BlockActions, ViewSubmission};
use super::rich::Paragraph;
use crate::audit::kinds;
use crate::config::Secret;
use crate::domain::{Ballot, Proposal, StepUp};
use crate::http::AppState;
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

/// What a step-up form was opened against: the proposal's status and its last change.
fn card_version(proposal: &Proposal) -> String {
    format!(
        "{}@{}",
        proposal.status.as_str(),
        proposal.updated_at.timestamp_micros()
    )
}

fn actor(user: &str) -> String {
    format!("reviewer:{user}")
}

/// Approve was clicked on a card that needs step-up: open the modal, or say why not.
/// Answers the ephemeral text to send instead, if the modal was not opened.
pub async fn open(
    state: &AppState,
    click: &BlockActions,
    proposal: &Proposal,
    channel: &str,
) -> Option<String> {
    let user = &click.user.id;
    let now = state.engine.clock().now();
    let step_up = proposal.content.verdict.step_up;
    if step_up == StepUp::Totp
        && let Err((reason, text)) = totp_ready(state, user, now).await
    {
        audit_failure(state, proposal, user, reason).await;
        return Some(text);
    }
    let binding = Binding {
        proposal: proposal.id.clone(),
        user: user.clone(),
        version: card_version(proposal),
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

/// Can `user` answer a TOTP step-up now? Err: (audit reason, what to tell them).
async fn totp_ready(
    state: &AppState,
    user: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), (&'static str, String)> {
    let store = state.engine.store();
    if state.slack.step_up.vault.is_none() {
        return Err((
            "totp not configured",
            "This approval needs a TOTP code, but this countersign has no `secret_key` configured, so TOTP step-up is off. Ask an operator; nothing was recorded.".into(),
        ));
    }
    if let Ok(Some(until)) = store.step_up_locked_until(user, now).await {
        return Err((
            "locked out",
            format!(
                "Your step-up is locked until {} after too many wrong codes; nothing was recorded.",
                slack_date(until)
            ),
        ));
    }
    match store.totp_enrollment(user).await {
        Ok(Some(enrollment)) if enrollment.active => Ok(()),
        Ok(_) => Err((
            "not enrolled",
            "This approval needs a code from an authenticator app, and you have not enrolled one yet. Run `/countersign enroll`: I will DM you a QR code to scan, then confirm with `/countersign enroll 123456`. Nothing was recorded.".into(),
        )),
        Err(error) => {
            tracing::error!(%error, "cannot read a TOTP enrollment");
            Err(("unavailable", "countersign could not check your enrollment just now; please try again.".into()))
        }
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

async fn audit_failure(state: &AppState, proposal: &Proposal, user: &str, reason: &str) {
    let data = json!({"step_up": proposal.content.verdict.step_up, "reason": reason});
    if let Err(error) = state
        .engine
        .audit(kinds::STEP_UP_FAILED, Some(&proposal.id), actor(user), data)
        .await
    {
        tracing::error!(%error, "cannot audit a step-up failure");
    }
}

/// The step-up modal was submitted: check the form, then the answer, then vote.
pub async fn submitted(state: &AppState, submission: &ViewSubmission) -> Ack {
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
    let proposal = match state.engine.store().proposal(&binding.proposal).await {
        Ok(Some(proposal)) => proposal,
        Ok(None) => return errors("That proposal no longer exists."),
        Err(error) => {
            tracing::error!(%error, "cannot read a proposal for step-up");
            return errors("countersign could not read the proposal just now; please try again.");
        }
    };
    if binding.user != user {
        audit_failure(state, &proposal, user, "form opened by another reviewer").await;
        return errors(
            "This form was opened by someone else; click Approve on the card yourself. Nothing was recorded.",
        );
    }
    if card_version(&proposal) != binding.version {
        audit_failure(
            state,
            &proposal,
            user,
            "proposal changed since the form opened",
        )
        .await;
        return errors(&format!(
            "The proposal changed since you opened this form (it is now {}); nothing was recorded.",
            proposal.status.as_str()
        ));
    }
    let answer = submission
        .view
        .state
        .value(ANSWER_BLOCK, ANSWER_INPUT)
        .unwrap_or("");
    let step_up = proposal.content.verdict.step_up;
    let checked = match step_up {
        StepUp::None => Ok(()),
        StepUp::Confirm => {
            let asked = challenge(&proposal);
            if asked.accepts(answer) {
                Ok(())
            } else {
                Err((
                    "wrong confirmation value",
                    format!(
                        "That does not match {}; nothing was recorded.",
                        asked.asks_for
                    ),
                ))
            }
        }
        StepUp::Totp => check_code(state, &proposal, user, answer, now).await,
    };
    if let Err((reason, message)) = checked {
        audit_failure(state, &proposal, user, reason).await;
        return errors(&message);
    }
    let data = json!({"step_up": step_up});
    if let Err(error) = state
        .engine
        .audit(kinds::STEP_UP_PASSED, Some(&proposal.id), actor(user), data)
        .await
    {
        tracing::error!(%error, "cannot audit a step-up");
        return errors(
            "countersign could not record that just now; nothing was recorded. Please try again.",
        );
    }
    let dedupe = format!("view:{}", submission.view.id);
    match super::review::vote(state, &proposal, user, Ballot::Approve, None, dedupe, true).await {
        Ok(message) => {
            if let Some((text, _)) = message {
                let api = state.slack.api.clone();
                let (channel, user) = (binding.channel, user.to_owned());
                tokio::spawn(async move {
                    if let Err(error) = api.post_ephemeral(&channel, &user, &text).await {
                        tracing::warn!(%error, "cannot confirm a stepped-up approval");
                    }
                });
            }
            Ack::default()
        }
        Err(refusal) => errors(&refusal),
    }
}

/// Checks a TOTP code: not locked out, valid within one step of drift, and its step not used.
/// Err: (audit reason, what to tell the reviewer).
async fn check_code(
    state: &AppState,
    proposal: &Proposal,
    user: &str,
    code: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), (&'static str, String)> {
    totp_ready(state, user, now).await?;
    let store = state.engine.store();
    let vault = state
        .slack
        .step_up
        .vault
        .as_ref()
        .expect("checked by totp_ready");
    let unavailable = || {
        (
            "unavailable",
            "countersign could not check the code just now; please try again.".to_owned(),
        )
    };
    let enrollment = store
        .totp_enrollment(user)
        .await
        .map_err(|_| unavailable())?
        .ok_or_else(unavailable)?;
    let secret = vault.open(user, &enrollment.sealed_secret).ok_or_else(|| {
        tracing::error!(user, "a TOTP secret does not open with the configured secret_key");
        ("secret unreadable", "Your enrollment cannot be read (was secret_key changed?). Ask an operator to run `countersign totp reset`.".to_owned())
    })?;
    let authenticator = Authenticator::new(secret, user).map_err(|_| unavailable())?;
    let Some(step) = authenticator.matching_step(code, now.timestamp()) else {
        let locked = store
            .step_up_failure(user, now)
            .await
            .map_err(|_| unavailable())?;
        if let Some(until) = locked {
            lockout_alert(state, proposal, user, until).await;
            return Err((
                "wrong code; locked out",
                format!(
                    "Wrong code. That was too many: your step-up is locked until {}.",
                    slack_date(until)
                ),
            ));
        }
        return Err((
            "wrong code",
            "That code is not valid now; check your authenticator and try the current code.".into(),
        ));
    };
    if !store
        .use_totp_step(user, step)
        .await
        .map_err(|_| unavailable())?
    {
        return Err((
            "code already used",
            "That code was already used; wait for the next one.".into(),
        ));
    }
    Ok(())
}

/// Five wrong codes: audited, and the proposal's role channels told.
async fn lockout_alert(
    state: &AppState,
    proposal: &Proposal,
    user: &str,
    until: chrono::DateTime<chrono::Utc>,
) {
    let data = json!({"until": until, "after_failures": crate::stepup::MAX_FAILURES});
    if let Err(error) = state
        .engine
        .audit(kinds::STEP_UP_LOCKED, Some(&proposal.id), actor(user), data)
        .await
    {
        tracing::error!(%error, "cannot audit a step-up lockout");
    }
    let registry = state.registry.current();
    let channels: Vec<String> = proposal
        .content
        .verdict
        .route
        .iter()
        .filter_map(|role| registry.roles.get(role).map(|r| r.channel.clone()))
        .collect();
    let text = format!(
        ":lock: <@{user}>'s step-up is locked until {} after {} wrong codes (while approving `{}`). If that was not them, their Slack account may be in someone else's hands.",
        slack_date(until),
        crate::stepup::MAX_FAILURES,
        proposal.id
    );
    let api = state.slack.api.clone();
    tokio::spawn(async move {
        let message = super::OutgoingMessage {
            text,
            blocks: Vec::new(),
        };
        for channel in channels {
            if let Err(error) = api.post_message(&channel, &message, None).await {
                tracing::warn!(%error, channel, "cannot post a step-up lockout alert");
            }
        }
    });
}

/// `/countersign enroll [CODE]`: without a code, start (or restart) an enrollment and DM the
/// reviewer its QR code; with one, confirm the pending enrollment. Answers the ephemeral reply.
pub async fn enroll(state: &AppState, user: &str, code: Option<&str>) -> String {
    let Some(vault) = state.slack.step_up.vault.clone() else {
        return "TOTP enrollment is off: this countersign has no `secret_key` configured. Ask an operator.".into();
    };
    let store = state.engine.store();
    let now = state.engine.clock().now();
    let existing = match store.totp_enrollment(user).await {
        Ok(existing) => existing,
        Err(error) => {
            tracing::error!(%error, "cannot read a TOTP enrollment");
            return "countersign could not read your enrollment just now; please try again.".into();
        }
    };
    match (existing, code) {
        (Some(enrollment), _) if enrollment.active => {
            "You are already enrolled. To start over, run `/countersign unenroll CODE` with a current code first.".into()
        }
        (Some(pending), Some(code)) => {
            let Some(secret) = vault.open(user, &pending.sealed_secret) else {
                return "Your pending enrollment cannot be read; run `/countersign enroll` again.".into();
            };
            let Ok(authenticator) = Authenticator::new(secret, user) else {
                return "Your pending enrollment cannot be read; run `/countersign enroll` again.".into();
            };
            match authenticator.matching_step(code, now.timestamp()) {
                Some(step) => match store.activate_totp(user, step, now).await {
                    Ok(true) => {
                        audit_enrollment(state, kinds::TOTP_ENROLLED, user).await;
                        ":white_check_mark: Enrolled. Approvals that need a code will ask for one from this authenticator.".into()
                    }
                    _ => "That enrollment changed meanwhile; run `/countersign enroll` again.".into(),
                },
                None => "That code does not match. Check the time on your phone and enter the current code: `/countersign enroll 123456`.".into(),
            }
        }
        (None, Some(_)) => "Start with `/countersign enroll` (no code): I will DM you a QR code to scan.".into(),
        (_, None) => {
            let secret = Authenticator::generate_secret();
            let sealed = vault.seal(user, &secret);
            match store.begin_totp_enrollment(user, &sealed, now).await {
                Ok(true) => {}
                Ok(false) => return "You are already enrolled.".into(),
                Err(error) => {
                    tracing::error!(%error, "cannot store a TOTP enrollment");
                    return "countersign could not start your enrollment just now; please try again.".into();
                }
            }
            audit_enrollment(state, kinds::TOTP_ENROLLMENT_STARTED, user).await;
            let Ok(authenticator) = Authenticator::new(secret, user) else {
                return "countersign could not create your authenticator entry; please try again.".into();
            };
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
pub async fn unenroll(state: &AppState, user: &str, code: Option<&str>) -> String {
    let Some(code) = code else {
        return "Add a current code: `/countersign unenroll 123456`.".into();
    };
    let Some(vault) = state.slack.step_up.vault.clone() else {
        return "TOTP is off on this countersign.".into();
    };
    let store = state.engine.store();
    let now = state.engine.clock().now();
    let Ok(Some(enrollment)) = store.totp_enrollment(user).await else {
        return "You are not enrolled.".into();
    };
    let step = vault
        .open(user, &enrollment.sealed_secret)
        .and_then(|secret| Authenticator::new(secret, user).ok())
        .and_then(|auth| auth.matching_step(code, now.timestamp()));
    let Some(step) = step else {
        return "That code does not match; nothing changed.".into();
    };
    if enrollment.active && !matches!(store.use_totp_step(user, step).await, Ok(true)) {
        return "That code was already used; wait for the next one.".into();
    }
    match store.delete_totp(user).await {
        Ok(true) => {
            audit_enrollment(state, kinds::TOTP_UNENROLLED, user).await;
            "Unenrolled. Approvals that need a code are closed to you until you enroll again."
                .into()
        }
        _ => "You are not enrolled.".into(),
    }
}

async fn audit_enrollment(state: &AppState, kind: &'static str, user: &str) {
    if let Err(error) = state.engine.audit(kind, None, actor(user), json!({})).await {
        tracing::error!(%error, "cannot audit an enrollment change");
    }
}
