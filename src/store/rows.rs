//! Conversions between domain values and the rows both backends store.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::StoreError;
use super::sql::{Timestamp, timestamp};
use crate::audit::AuditEvent;
use crate::domain::{AgentId, Proposal, ProposalId, Status, Vote};

/// A proposal's text columns.
pub(super) struct EncodedProposal {
    pub content: String,
    pub decision: Option<String>,
    pub outcome: Option<String>,
}

pub(super) fn encode(proposal: &Proposal) -> Result<EncodedProposal, StoreError> {
    Ok(EncodedProposal {
        content: serde_json::to_string(&proposal.content)?,
        decision: proposal
            .decision
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
        outcome: proposal
            .outcome
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
    })
}

/// A proposal row: read back with timestamps already decoded by the backend, or about to be
/// inserted.
pub(super) struct ProposalRow {
    pub id: String,
    pub agent_id: String,
    pub status: String,
    pub content: String,
    pub decision: Option<String>,
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProposalRow {
    pub fn encode(proposal: &Proposal) -> Result<Self, StoreError> {
        let encoded = encode(proposal)?;
        Ok(Self {
            id: proposal.id.to_string(),
            agent_id: proposal.agent.to_string(),
            status: proposal.status.as_str().to_owned(),
            content: encoded.content,
            decision: encoded.decision,
            outcome: encoded.outcome,
            created_at: proposal.created_at,
            updated_at: proposal.updated_at,
        })
    }

    pub fn decode(self) -> Result<Proposal, StoreError> {
        let corrupt = |what: &str, detail: String| {
            StoreError::Corrupt(format!("proposal {}: {what}: {detail}", self.id))
        };
        Ok(Proposal {
            id: ProposalId::parse(&self.id).map_err(|e| corrupt("id", e.0))?,
            agent: AgentId::parse(&self.agent_id).map_err(|e| corrupt("agent_id", e.0))?,
            status: Status::parse(&self.status)
                .ok_or_else(|| corrupt("status", self.status.clone()))?,
            content: serde_json::from_str(&self.content)
                .map_err(|e| corrupt("content", e.to_string()))?,
            decision: self
                .decision
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("decision", e.to_string()))?,
            outcome: self
                .outcome
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("outcome", e.to_string()))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// One row of `SELECT status, COUNT(*) … GROUP BY status`.
pub(super) fn status_count(status: String, n: i64) -> Result<(Status, i64), StoreError> {
    let parsed =
        Status::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?;
    Ok((parsed, n))
}

/// An idempotency key about to be remembered.
pub(super) struct IdempotencyRow {
    pub agent_id: String,
    pub key: String,
    pub request_hash: String,
    pub proposal_id: String,
    /// The proposal as created (JSON): what a replay answers.
    pub response: String,
    pub created_at: DateTime<Utc>,
}

/// An idempotency key already remembered.
pub(super) struct StoredKey {
    pub request_hash: String,
    pub proposal_id: String,
    pub response: String,
}

/// Rows per multi-row INSERT: well under both databases' bind-parameter limits.
pub(super) const INSERT_CHUNK: usize = 500;

/// A Slack outbox row about to be written.
pub(super) struct SlackJobRow {
    pub proposal_id: String,
    /// The [`SlackTask`](crate::domain::SlackTask), as JSON.
    pub task: String,
    pub due_at: DateTime<Utc>,
    /// For a card's post: the channel whose cards go out in submission order (see migration
    /// 0010). `None` for every other row.
    pub channel: Option<String>,
}

impl SlackJobRow {
    pub fn new(
        proposal: &ProposalId,
        task: &crate::domain::SlackTask,
        due_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            proposal_id: proposal.to_string(),
            task: serde_json::to_string(task)?,
            due_at,
            channel: None,
        })
    }

    /// The post of `proposal`'s card for `role` in `channel`: queued behind the channel's
    /// earlier cards.
    pub fn card_post(
        proposal: &ProposalId,
        role: &str,
        channel: Option<&str>,
        due_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let task = crate::domain::SlackTask::PostCard { role: role.into() };
        Ok(Self {
            channel: channel.map(str::to_owned),
            ..Self::new(proposal, &task, due_at)?
        })
    }
}

impl SlackJobRow {
    /// An announcement of an agent's change of mode: a row about no proposal.
    pub fn announcement(
        notice: &crate::domain::ControlNotice,
        due_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let task = crate::domain::SlackTask::AnnounceControl {
            notice: notice.clone(),
        };
        Ok(Self {
            proposal_id: String::new(),
            task: serde_json::to_string(&task)?,
            due_at,
            channel: None,
        })
    }
}

/// Claimed outbox rows (`id, proposal_id, task, attempts`), oldest first; the same columns
/// decode alike from either backend's rows.
pub(super) fn slack_jobs<R: sqlx::Row>(
    rows: &[R],
) -> Result<Vec<crate::domain::SlackJob>, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let mut jobs = rows
        .iter()
        .map(|row| {
            let id: i64 = row.try_get("id")?;
            let proposal_id: String = row.try_get("proposal_id")?;
            let task: String = row.try_get("task")?;
            let corrupt = |what: &str, detail: String| {
                StoreError::Corrupt(format!("slack_outbox {id}: {what}: {detail}"))
            };
            // An announcement names no proposal: its row's proposal_id is empty.
            let proposal_id = match proposal_id.as_str() {
                "" => None,
                id => Some(ProposalId::parse(id).map_err(|e| corrupt("proposal_id", e.0))?),
            };
            Ok(crate::domain::SlackJob {
                id,
                proposal_id,
                task: serde_json::from_str(&task).map_err(|e| corrupt("task", e.to_string()))?,
                attempts: row.try_get("attempts")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // UPDATE … RETURNING promises no order.
    jobs.sort_by_key(|job| job.id);
    Ok(jobs)
}

/// `slack_messages` rows (`role, channel, ts`).
pub(super) fn posted_cards<R: sqlx::Row>(
    rows: &[R],
) -> Result<Vec<crate::domain::PostedCard>, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|row| {
            Ok(crate::domain::PostedCard {
                role: row.try_get("role")?,
                channel: row.try_get("channel")?,
                ts: row.try_get("ts")?,
            })
        })
        .collect()
}

/// A stored ballot.
pub(super) fn ballot(text: &str) -> Result<crate::domain::Ballot, StoreError> {
    match text {
        "approve" => Ok(crate::domain::Ballot::Approve),
        "reject" => Ok(crate::domain::Ballot::Reject),
        other => Err(StoreError::Corrupt(format!("ballot {other:?}"))),
    }
}

/// A timer row about to be armed.
pub(super) struct TimerRow {
    pub proposal_id: String,
    /// The [`Timer`](crate::domain::Timer), as JSON.
    pub timer: String,
    pub due_at: DateTime<Utc>,
}

/// Claimed timer rows (`id, proposal_id, timer`, with `due_at` already decoded by the backend).
pub(super) fn due_timer(
    id: i64,
    proposal_id: &str,
    timer: &str,
    due_at: DateTime<Utc>,
) -> Result<crate::domain::DueTimer, StoreError> {
    let corrupt =
        |what: &str, detail: String| StoreError::Corrupt(format!("timers {id}: {what}: {detail}"));
    Ok(crate::domain::DueTimer {
        id,
        proposal_id: ProposalId::parse(proposal_id).map_err(|e| corrupt("proposal_id", e.0))?,
        timer: serde_json::from_str(timer).map_err(|e| corrupt("timer", e.to_string()))?,
        due_at,
    })
}

/// A fired timer's `timer` column, if it was a reminder or an escalation (not the expiry):
/// what the card's SLA line shows.
pub(super) fn fired_nudge(
    id: i64,
    timer: &str,
) -> Result<Option<crate::domain::Timer>, StoreError> {
    let timer: crate::domain::Timer = serde_json::from_str(timer)
        .map_err(|e| StoreError::Corrupt(format!("timers {id}: timer: {e}")))?;
    Ok((timer != crate::domain::Timer::Expire).then_some(timer))
}

/// A `report_posts` row as read.
pub(super) struct ReportPostRow {
    pub id: i64,
    pub dedupe: String,
    pub role: String,
    pub channel: String,
    pub period: String,
    pub as_of: DateTime<Utc>,
    pub requested_by: Option<String>,
    pub attempts: i32,
}

pub(super) fn report_post(
    row: ReportPostRow,
) -> Result<crate::domain::report::ReportPost, StoreError> {
    let period = row
        .period
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("report_posts {}: period: {e}", row.id)))?;
    Ok(crate::domain::report::ReportPost {
        id: row.id,
        dedupe: row.dedupe,
        role: row.role,
        channel: row.channel,
        period,
        as_of: row.as_of,
        requested_by: row.requested_by,
        attempts: row.attempts,
    })
}

/// A `proposal.decided` event to deliver, as inserted.
pub(super) struct WebhookRow {
    pub id: String,
    pub proposal_id: String,
    pub agent_id: String,
    pub url: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

impl WebhookRow {
    /// The callback owed for a decided proposal, if it names a callback URL.
    pub fn decided(
        proposal: &crate::domain::Proposal,
        votes: &[crate::domain::Vote],
        at: DateTime<Utc>,
    ) -> Option<Self> {
        let url = proposal.content.callback_url.clone()?;
        let body = crate::domain::callback::decided_body(proposal, votes, at);
        Some(Self {
            id: crate::domain::callback::new_event_id(),
            proposal_id: proposal.id.to_string(),
            agent_id: proposal.agent.to_string(),
            url,
            body: body.to_string(),
            created_at: at,
        })
    }
}

/// A claimed `webhook_events` row (`id, proposal_id, agent_id, url, body, attempts`).
pub(super) fn webhook_delivery<R: sqlx::Row>(
    row: &R,
) -> Result<crate::domain::WebhookDelivery, StoreError>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> i32: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let proposal_id: String = row.try_get("proposal_id")?;
    Ok(crate::domain::WebhookDelivery {
        proposal_id: ProposalId::parse(&proposal_id).map_err(|e| {
            StoreError::Corrupt(format!("webhook_events {id}: proposal_id: {}", e.0))
        })?,
        agent: row.try_get("agent_id")?,
        url: row.try_get("url")?,
        body: row.try_get("body")?,
        attempts: row.try_get("attempts")?,
        id,
    })
}

/// The Slack task that tells an agent's owner its callback failed.
pub(super) fn callback_failed(
    delivery: &crate::domain::WebhookDelivery,
    error: &str,
) -> crate::domain::SlackTask {
    crate::domain::SlackTask::CallbackFailed {
        event: delivery.id.clone(),
        url: delivery.url.clone(),
        error: error.to_owned(),
    }
}

/// An `agent_controls` row as read.
pub(super) struct ControlRow {
    pub agent: String,
    pub action: String,
    pub mode: String,
    pub reason: Option<String>,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

pub(super) fn control(row: ControlRow) -> Result<crate::domain::Control, StoreError> {
    let mode = crate::domain::ControlMode::parse(&row.mode).ok_or_else(|| {
        StoreError::Corrupt(format!("agent_controls {}: mode {:?}", row.agent, row.mode))
    })?;
    Ok(crate::domain::Control {
        agent: row.agent,
        action: (!row.action.is_empty()).then_some(row.action),
        mode,
        reason: row.reason,
        set_by: row.set_by,
        set_at: row.set_at,
    })
}

/// A vote about to be written.
pub(super) struct VoteRow {
    pub proposal_id: String,
    pub voter: String,
    /// The routed roles the voter approves for, as JSON.
    pub eligible: String,
    pub ballot: &'static str,
    pub reason: Option<String>,
    pub dedupe: String,
    pub at: DateTime<Utc>,
}

impl VoteRow {
    pub fn new(
        proposal: &ProposalId,
        vote: &crate::domain::Vote,
        dedupe: &str,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            proposal_id: proposal.to_string(),
            voter: vote.voter.clone(),
            eligible: serde_json::to_string(&vote.eligible)?,
            ballot: vote.ballot.as_str(),
            reason: vote.reason.clone(),
            dedupe: dedupe.to_owned(),
            at: vote.at,
        })
    }
}

/// A proposal's new lifecycle columns, written only if its stored status is still `from`.
pub(super) struct LifecycleRow {
    pub id: String,
    pub status: &'static str,
    pub decision: Option<String>,
    pub outcome: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub from: &'static str,
}

impl LifecycleRow {
    pub fn new(proposal: &Proposal, from: Status) -> Result<Self, StoreError> {
        let encoded = encode(proposal)?;
        Ok(Self {
            id: proposal.id.to_string(),
            status: proposal.status.as_str(),
            decision: encoded.decision,
            outcome: encoded.outcome,
            updated_at: proposal.updated_at,
            from: from.as_str(),
        })
    }
}

/// The unfired timers of a decided proposal, disarmed as of `at`.
pub(super) struct DisarmRow {
    pub proposal_id: String,
    pub at: DateTime<Utc>,
}

/// Approval granted to a person by an escalation rung (`grants_approval`), kept by key so a
/// click can ask "may this person approve?" without reading the audit trail.
pub(super) struct GrantRow {
    pub proposal_id: String,
    pub user_id: String,
    pub granted_at: DateTime<Utc>,
}

/// A `proposals` row (every column) of either backend.
pub(super) fn proposal_row<R: Row>(row: &R) -> Result<Proposal, StoreError>
where
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Timestamp: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    ProposalRow {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        status: row.try_get("status")?,
        content: row.try_get("content")?,
        decision: row.try_get("decision")?,
        outcome: row.try_get("outcome")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    }
    .decode()
}

/// An `audit_events` row of either backend.
pub(super) fn audit_row<R: Row>(row: &R) -> Result<AuditEvent, StoreError>
where
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Timestamp: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    Ok(AuditEvent {
        seq: row.try_get("seq")?,
        at: timestamp(row, "at")?,
        kind: row.try_get("kind")?,
        proposal_id: row.try_get("proposal_id")?,
        actor: row.try_get("actor")?,
        data: row.try_get("data")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// A `votes` row of either backend, with its click's dedupe key.
pub(super) fn vote_row<R: Row>(row: &R) -> Result<(Vote, String), StoreError>
where
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Timestamp: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    let vote = Vote {
        voter: row.try_get("voter")?,
        eligible: serde_json::from_str(&row.try_get::<String, _>("eligible")?)?,
        ballot: ballot(&row.try_get::<String, _>("ballot")?)?,
        reason: row.try_get("reason")?,
        at: timestamp(row, "at")?,
    };
    Ok((vote, row.try_get("dedupe")?))
}
