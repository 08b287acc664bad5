//! A reviewer's step-up state changes, each with its audit event in the batch's transaction: an
//! enrollment is never active without its `totp.enrolled`, and a lockout never set without its
//! `step_up.locked` and the alert to the proposal's channels.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::buffer::Batch;
use crate::audit::{AuditDraft, kinds};
use crate::domain::{ProposalId, SlackTask};
use crate::store::rows::SlackJobRow;
use crate::store::{CommandResult, StepUpChange, StoreError};

pub(super) async fn run(
    tx: &mut Batch<'_>,
    user: &str,
    change: StepUpChange,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let reviewer = format!("reviewer:{user}");
    let audited = |changed: bool, kind: &'static str, actor: String| {
        let events = if changed {
            vec![AuditDraft::new(kind, None, actor, json!({"user": user}))]
        } else {
            Vec::new()
        };
        (unlocked(changed), events)
    };
    Ok(match change {
        StepUpChange::BeginTotp { sealed_secret } => {
            let changed = tx.tx.begin_totp(user, &sealed_secret, at).await?;
            audited(changed, kinds::TOTP_ENROLLMENT_STARTED, reviewer)
        }
        StepUpChange::ActivateTotp {
            step,
            sealed_secret,
        } => {
            let changed = tx.tx.activate_totp(user, step, &sealed_secret, at).await?;
            audited(changed, kinds::TOTP_ENROLLED, reviewer)
        }
        StepUpChange::Unenroll { step } => {
            if let Some(step) = step
                && !tx.tx.use_totp_step(user, step, at).await?
            {
                // The code was spent already: nothing changes.
                return Ok((unlocked(false), Vec::new()));
            }
            let changed = tx.tx.delete_totp(user).await?;
            audited(changed, kinds::TOTP_UNENROLLED, reviewer)
        }
        StepUpChange::Reset { by } => {
            let changed = tx.tx.delete_totp(user).await?;
            audited(changed, kinds::TOTP_RESET, by)
        }
        StepUpChange::WrongAnswer { proposal } => {
            wrong_answer(tx, user, proposal.as_ref(), at).await?
        }
    })
}

/// A wrong TOTP code: counted; while approving, audited as `step_up.failed`; and the one too
/// many locks the reviewer out.
async fn wrong_answer(
    tx: &mut Batch<'_>,
    user: &str,
    proposal: Option<&ProposalId>,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let locked = tx.tx.step_up_failure(user, at).await?;
    let reviewer = format!("reviewer:{user}");
    let failed = proposal.map(|proposal| {
        let reason = match locked {
            Some(_) => crate::stepup::WRONG_CODE_LOCKED_OUT,
            None => crate::stepup::WRONG_CODE,
        };
        let data = json!({"step_up": crate::domain::StepUp::Totp, "reason": reason});
        AuditDraft::new(
            kinds::STEP_UP_FAILED,
            Some(proposal),
            reviewer.clone(),
            data,
        )
    });
    let Some(until) = locked else {
        return Ok((unlocked(true), failed.into_iter().collect()));
    };
    let event = AuditDraft::new(
        kinds::STEP_UP_LOCKED,
        proposal,
        reviewer,
        json!({"until": until, "after_failures": crate::stepup::MAX_FAILURES}),
    );
    // Approving: the proposal's channels are told. (Unenrolling names no proposal, so no
    // channel; the audit event stands.)
    if let Some(proposal) = proposal {
        let alert = SlackTask::LockoutAlert {
            user: user.to_owned(),
            until,
        };
        tx.slack_jobs.push(SlackJobRow::new(proposal, &alert, at)?);
    }
    let result = CommandResult::StepUp {
        changed: true,
        locked_until: Some(until),
    };
    Ok((result, failed.into_iter().chain([event]).collect()))
}

fn unlocked(changed: bool) -> CommandResult {
    CommandResult::StepUp {
        changed,
        locked_until: None,
    }
}
