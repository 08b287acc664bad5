//! What the delivery workers report back: a callback attempt, a posted report. Each is
//! written with its audit event in the batch's transaction, so the trail never says a callback
//! failed (or a report went out) that the queue does not, nor the other way round.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::buffer::Batch;
use crate::audit::{AuditDraft, kinds};
use crate::domain::WebhookDelivery;
use crate::domain::report::ReportPost;
use crate::store::rows::{SlackJobRow, callback_failed};
use crate::store::{CommandResult, StoreError, WebhookAttempt, WebhookNext};

pub(super) async fn callback_attempt(
    tx: &mut Batch<'_>,
    delivery: WebhookDelivery,
    attempt: WebhookAttempt,
    next: WebhookNext,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    tx.tx
        .record_webhook_attempt(&delivery, &attempt, &next)
        .await?;
    let (kind, error) = match &next {
        WebhookNext::Retry { .. } => return Ok((CommandResult::Audited, Vec::new())),
        WebhookNext::Delivered => (kinds::CALLBACK_DELIVERED, None),
        WebhookNext::Failed { error, .. } => {
            // The agent's owner hears of it in Slack.
            let task = callback_failed(&delivery, error);
            let job = SlackJobRow::new(&delivery.proposal_id, &task, attempt.at)?;
            tx.slack_jobs.push(job);
            (kinds::CALLBACK_FAILED, Some(error))
        }
    };
    let data = json!({"event": delivery.id, "url": delivery.url, "attempts": attempt.attempt, "error": error});
    let event = AuditDraft::new(
        kind,
        Some(&delivery.proposal_id),
        "system:callbacks".into(),
        data,
    );
    Ok((CommandResult::Audited, vec![event]))
}

pub(super) async fn report_posted(
    tx: &mut Batch<'_>,
    post: ReportPost,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    tx.tx.finish_report_post(post.id, at).await?;
    let actor = (post.requested_by.as_ref()).map_or("system:digest".to_owned(), |user| {
        format!("reviewer:{user}")
    });
    let data = json!({
        "role": post.role, "channel": post.channel,
        "period": post.period, "as_of": post.as_of,
    });
    let event = AuditDraft::new(kinds::REPORT_POSTED, None, actor, data);
    Ok((CommandResult::Audited, vec![event]))
}
