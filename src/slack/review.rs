//! What a reviewer's click does. Approve: check the clicker may approve (an approver of a
//! routed role, not the agent's owner nor the person it acts for), record the vote, and let the
//! quorum decide. Reject: open a modal asking why (first, while the trigger id is fresh), then
//! on submission check and record the rejection with its reason.
//!
//! A vote is written before Slack gets its acknowledgement, so an acknowledged click is never
//! lost; the reply to the clicker is a best-effort ephemeral message, and the cards are brought
//! up to date through the outbox.

use serde_json::json;
use slack_morphism::prelude::*;

use super::Ack;
use super::SlackState;
use super::card::{self, slack_date};
use super::escape::{inert, mrkdwn, truncate};
use super::payload::{Action, BlockActions, ViewSubmission};
use crate::domain::{Ballot, Proposal, ProposalId, Status, StepUp, Vote};
use crate::engine::{Cast, ClickRefusal};

/// callback_id of the rejection modal.
pub const REJECT_VIEW: &str = "reject";
const REASON_BLOCK: &str = "reason";
const REASON_INPUT: &str = "text";
const PRESET_BLOCK: &str = "preset";
const PRESET_INPUT: &str = "choice";

/// How long the rejection form may wait for the proposal's preset reasons.
const PRESET_LOOKUP: std::time::Duration = std::time::Duration::from_millis(500);

/// Reasons a reviewer can pick instead of typing one (they may add detail), when the policy
/// gave none (`reject_reasons` on a rule).
const PRESET_REASONS: &[&str] = &[
    "Amount or scope is too large",
    "Wrong target",
    "Needs more evidence",
    "Not now: ask again later",
    "Against policy",
];

/// Approve or Reject on a card.
pub async fn clicked(state: &SlackState, click: &BlockActions, action: &Action) {
    let user = click.user.id.clone();
    let channel = click.channel_id().map(str::to_owned);
    let clicker = Clicker::of(click);
    let reply = |text: String| {
        tokio::spawn(clicker.clone().answer(state.clone(), text));
    };
    let Some(id) = action
        .value
        .as_deref()
        .and_then(|v| ProposalId::parse(v).ok())
    else {
        reply("That button does not name a countersign proposal.".into());
        return;
    };

    if action.action_id == card::REJECT {
        open_rejection(state, click, &id, channel.as_deref(), reply).await;
        return;
    }

    // The proposal is read once for the whole click: the step-up check, who may vote, and
    // separation of duties all work from this copy; the writer re-checks its state.
    let proposal = match state.engine.proposal(&id).await {
        Ok(Some(proposal)) => proposal,
        Ok(None) => {
            reply("That proposal does not exist.".into());
            return;
        }
        Err(error) => {
            reply(unavailable(&id, &error));
            return;
        }
    };
    // A policy that asks for step-up gets its modal instead of a vote, once the clicker is
    // known to be someone who may approve at all.
    if proposal.content.verdict.step_up != StepUp::None && proposal.status == Status::Pending {
        let refusal = match admit(state, &proposal, &user, Ballot::Approve).await {
            Err(refusal) => Some(refusal),
            Ok(()) => {
                super::step_up::open(state, click, &proposal, channel.as_deref().unwrap_or(""))
                    .await
            }
        };
        if let Some(text) = refusal {
            reply(text);
        }
        return;
    }

    let dedupe = format!(
        "click:{user}:{}:{}",
        action.action_id,
        action.action_ts.as_deref().unwrap_or("")
    );
    let text = match vote(state, &proposal, &user, Ballot::Approve, None, dedupe).await {
        Answer::Recorded { text, .. } | Answer::Refused(text) => text,
        Answer::Replay => return,
    };
    reply(text);
}

/// Reject on a card: open the modal asking why. The trigger id lives three seconds, so the
/// modal opens before anything slow. The proposal (for who may reject, and the policy's preset
/// reasons) is one indexed read, bounded; who may vote is answered from caches. Someone who
/// may not reject is told so now, not after writing a reason.
async fn open_rejection(
    state: &SlackState,
    click: &BlockActions,
    id: &ProposalId,
    channel: Option<&str>,
    reply: impl Fn(String),
) {
    let user = click.user.id.as_str();
    let proposal = tokio::time::timeout(PRESET_LOOKUP, state.engine.proposal(id))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    if let Some(proposal) = &proposal
        && let Err(refusal) = admit(state, proposal, user, Ballot::Reject).await
    {
        reply(refusal);
        return;
    }
    let presets = proposal
        .map(|p| p.content.verdict.reject_reasons)
        .unwrap_or_default();
    let metadata = format!("{id} {}", channel.unwrap_or(""));
    if let Err(error) = state
        .slack
        .api
        .open_view(&click.trigger_id, reject_modal(&metadata, &presets))
        .await
    {
        tracing::warn!(%error, proposal_id = %id, "cannot open the rejection modal");
        reply(
            "Slack did not let me open the rejection form in time; please click Reject again."
                .into(),
        );
    }
}

/// Where to tell the clicker what became of their click.
#[derive(Clone)]
struct Clicker {
    user: String,
    channel: Option<String>,
    response_url: Option<String>,
}

impl Clicker {
    fn of(click: &BlockActions) -> Self {
        Self {
            user: click.user.id.clone(),
            channel: click.channel_id().map(str::to_owned),
            response_url: click.response_url.clone(),
        }
    }

    /// On the click's `response_url` (Slack's reply channel for a click, outside the Web API's
    /// budgets), or with `chat.postEphemeral` where Slack sent none.
    async fn answer(self, state: SlackState, text: String) {
        let result = match (&self.response_url, &self.channel) {
            (Some(url), _) => state.slack.responder.ephemeral(url, &text).await,
            (None, Some(channel)) => {
                state
                    .slack
                    .api
                    .post_ephemeral(channel, &self.user, &text)
                    .await
            }
            (None, None) => return,
        };
        if let Err(error) = result {
            tracing::warn!(%error, "cannot answer a click");
        }
    }
}

pub(super) fn unavailable(id: &ProposalId, error: &dyn std::fmt::Display) -> String {
    tracing::error!(%error, proposal_id = %id, "cannot record a vote");
    "countersign could not record that just now; nothing was recorded. Please try again.".to_owned()
}

/// A modal was submitted. Only the rejection modal is ours; its answer goes back in the
/// acknowledgement (`response_action: errors` keeps it open with the message).
pub async fn submitted(state: &SlackState, submission: &ViewSubmission) -> Ack {
    if submission.view.callback_id == super::step_up::VIEW {
        return super::step_up::submitted(state, submission).await;
    }
    if submission.view.callback_id != REJECT_VIEW {
        return Ack::default();
    }
    let mut metadata = submission.view.private_metadata.split(' ');
    let Some(id) = metadata.next().and_then(|v| ProposalId::parse(v).ok()) else {
        return errors("This form no longer names a proposal.");
    };
    let channel = metadata.next().filter(|c| !c.is_empty()).map(str::to_owned);
    let state_values = &submission.view.state;
    let preset = state_values
        .value(PRESET_BLOCK, PRESET_INPUT)
        .filter(|p| !p.is_empty());
    let text = state_values
        .value(REASON_BLOCK, REASON_INPUT)
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let reason = match (preset, text) {
        (None, None) => return errors("Say why, so the agent does not try the same thing again."),
        (Some(p), None) => p.to_owned(),
        (None, Some(t)) => t.to_owned(),
        (Some(p), Some(t)) => format!("{p}: {t}"),
    };
    let reason = truncate(&reason, 2000);
    let user = submission.user.id.clone();
    let dedupe = format!("view:{}", submission.view.id);
    let proposal = match state.engine.proposal(&id).await {
        Ok(Some(proposal)) => proposal,
        Ok(None) => return errors("That proposal does not exist."),
        Err(error) => return errors(&unavailable(&id, &error)),
    };
    match vote(
        state,
        &proposal,
        &user,
        Ballot::Reject,
        Some(reason),
        dedupe,
    )
    .await
    {
        Answer::Recorded { text, status } => {
            if status == Status::Rejected {
                let (engine, registry) = (state.engine.clone(), state.registry.clone());
                let agent = proposal.agent.to_string();
                tokio::spawn(async move {
                    engine.after_rejection(&registry.current(), &agent).await;
                });
            }
            if let Some(channel) = channel {
                let api = state.slack.api.clone();
                tokio::spawn(async move {
                    if let Err(error) = api.post_ephemeral(&channel, &user, &text).await {
                        tracing::warn!(%error, "cannot confirm a rejection");
                    }
                });
            }
            Ack::default()
        }
        Answer::Replay => Ack::default(),
        Answer::Refused(refusal) => errors(&refusal),
    }
}

fn errors(message: &str) -> Ack {
    // Slack shows a field error as plain text: no date tokens or mentions in it.
    let message = super::escape::plain(message);
    Ack::with(json!({"response_action": "errors", "errors": {REASON_BLOCK: message}}))
}

/// What became of a ballot, for the person who cast it.
pub(super) enum Answer {
    /// Recorded: what to tell them, and the proposal's status now.
    Recorded { text: String, status: Status },
    /// The same click (or form) again: already recorded, nothing to say.
    Replay,
    /// Not recorded: why, in words.
    Refused(String),
}

/// Checks the voter and records the ballot through the core, and words the answer.
/// `proposal` is as read for this click; the writer checks its state again.
async fn vote(
    state: &SlackState,
    proposal: &Proposal,
    user: &str,
    ballot: Ballot,
    reason: Option<String>,
    dedupe: String,
) -> Answer {
    let registry = state.registry.current();
    let people = &state.slack.directory;
    let cast = state
        .engine
        .review(people, &registry, proposal, user, ballot, reason, dedupe)
        .await;
    match cast {
        Ok(Ok(cast)) => Answer::of(cast, ballot),
        Ok(Err(refusal)) => Answer::Refused(refused(&refusal)),
        Err(error) => Answer::Refused(unavailable(&proposal.id, &error)),
    }
}

impl Answer {
    /// A ballot that counted, in words.
    pub(super) fn of(cast: Cast, ballot: Ballot) -> Self {
        match cast {
            Cast::Replay => Answer::Replay,
            Cast::Recorded { proposal, votes } => Answer::Recorded {
                text: recorded(&proposal, &votes, ballot),
                status: proposal.status,
            },
        }
    }
}

/// Whether `user` may cast `ballot` on `proposal` at all (the core decides and audits a
/// refusal); `Err`: what to tell them.
async fn admit(
    state: &SlackState,
    proposal: &Proposal,
    user: &str,
    ballot: Ballot,
) -> Result<(), String> {
    let registry = state.registry.current();
    let people = &state.slack.directory;
    match state
        .engine
        .admit(people, &registry, proposal, user, ballot)
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(refusal)) => Err(refused(&refusal)),
        Err(error) => Err(unavailable(&proposal.id, &error)),
    }
}

/// A refused ballot in words, for the clicker.
pub(super) fn refused(refusal: &ClickRefusal) -> String {
    let acting_for_you = "The agent is acting for you, so someone else must approve this (separation of duties); nothing was recorded.";
    match refusal {
        ClickRefusal::NotAnApprover { route } => format!(
            "Only approvers for {} can decide this; nothing was recorded.",
            route.join(" or ")
        ),
        ClickRefusal::OwnsTheAgent { agent } => format!(
            "You own the agent `{agent}`, so someone else must approve its proposals (separation of duties); nothing was recorded."
        ),
        ClickRefusal::ActsForYou => acting_for_you.into(),
        ClickRefusal::RequesterUnknown => "Slack could not tell whether the agent is acting for you, so the approval was not recorded; please try again.".into(),
        ClickRefusal::StepUpRequired => "This approval needs step-up confirmation: click Approve on the card to get the form. Nothing was recorded.".into(),
        ClickRefusal::Decided(proposal) => already_decided(proposal),
        ClickRefusal::Expired(proposal) => format!(
            "This proposal expired {}; it can no longer be decided. Nothing was recorded.",
            proposal
                .content
                .expires_at
                .map(slack_date)
                .unwrap_or_default()
        ),
        ClickRefusal::AlreadyVoted(earlier) => format!(
            "You already {} this {}; one vote per person.",
            if earlier.ballot == Ballot::Approve {
                "approved"
            } else {
                "rejected"
            },
            slack_date(earlier.at)
        ),
        ClickRefusal::NotFound => "That proposal does not exist.".into(),
    }
}

fn recorded(proposal: &Proposal, votes: &[Vote], ballot: Ballot) -> String {
    match (ballot, proposal.status) {
        (Ballot::Reject, _) => format!(
            ":x: You rejected *{}*. The agent is told why.",
            inert(&truncate(&proposal.content.summary, 150))
        ),
        (Ballot::Approve, Status::Approved) => format!(
            ":white_check_mark: Approved: *{}*. Your approval completed the quorum.",
            inert(&truncate(&proposal.content.summary, 150))
        ),
        _ => {
            let verdict = &proposal.content.verdict;
            let missing = crate::domain::vote::shortfall(&verdict.quorum, &verdict.route, votes);
            format!(
                "Your approval is recorded. Still needed: {}.",
                missing.describe()
            )
        }
    }
}

fn already_decided(proposal: &Proposal) -> String {
    let status = match proposal.status {
        Status::Approved => "approved",
        Status::Rejected => "rejected",
        Status::Expired => "expired",
        Status::Cancelled => "cancelled",
        Status::Pending => "pending",
    };
    match &proposal.decision {
        Some(decision) => {
            let who = match decision.by.kind {
                crate::domain::ActorKind::Reviewer => format!("<@{}>", decision.by.id),
                _ => mrkdwn(&decision.by.audit_name()),
            };
            format!(
                "Already {status} by {who} {}; nothing was recorded.",
                slack_date(decision.at)
            )
        }
        None => format!("This proposal is {status}; nothing was recorded."),
    }
}

fn reject_modal(metadata: &str, presets: &[String]) -> SlackModalView {
    let presets: Vec<String> = if presets.is_empty() {
        PRESET_REASONS.iter().map(|r| (*r).to_owned()).collect()
    } else {
        presets.to_vec()
    };
    let options: Vec<SlackBlockChoiceItem<SlackBlockPlainTextOnly>> = presets
        .iter()
        .map(|reason| SlackBlockChoiceItem::new(pt!(reason.clone()), reason.clone()))
        .collect();
    let preset = SlackInputBlock::new(
        pt!("Reason"),
        SlackInputBlockElement::StaticSelect(
            SlackBlockStaticSelectElement::new()
                .with_action_id(PRESET_INPUT.into())
                .with_options(options),
        ),
    )
    .with_block_id(PRESET_BLOCK.into())
    .with_optional(true);
    let text = SlackInputBlock::new(
        pt!("What should the agent know?"),
        SlackInputBlockElement::PlainTextInput(
            SlackBlockPlainTextInputElement::new()
                .with_action_id(REASON_INPUT.into())
                .with_multiline(true)
                .with_max_length(2000),
        ),
    )
    .with_block_id(REASON_BLOCK.into())
    .with_optional(true)
    .with_hint(pt!(
        "Pick a reason, write one, or both. The agent receives it."
    ));
    SlackModalView::new(pt!("Reject proposal"), vec![preset.into(), text.into()])
        .with_submit(pt!("Reject"))
        .with_close(pt!("Cancel"))
        .with_callback_id(REJECT_VIEW.into())
        .with_private_metadata(metadata.to_owned())
}
