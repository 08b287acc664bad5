//! SLA reports: the figures (from the audit trail), the weekly digest's schedule and the chart.
//! Slack rendering lives in `slack::report`; posting is the report worker's.

pub mod chart;
mod figures;

use chrono::{DateTime, Utc};

pub use crate::domain::report::{DigestSchedule, Period, ReportPost};
pub use figures::{
    Backlog, Breach, CardRef, DayFigures, LevelCount, Outcomes, ReviewerFigures, SlaFigures,
    SlaReport, TimeToDecision, Waiting, compute,
};

use crate::audit::{AuditFilter, kinds};
use crate::domain::ProposalId;
use crate::store::{Store, StoreError};

/// The events a report reads; everything else in the trail is skipped while paging.
const REPORTED: [&str; 6] = [
    kinds::SUBMITTED,
    kinds::DECIDED,
    kinds::CANCELLED,
    kinds::VOTED,
    kinds::REMINDED,
    kinds::ESCALATED,
];
const PAGE: i64 = 5_000;

/// The report for `role` over the `period` before `to`.
pub async fn build(
    store: &dyn Store,
    role: &str,
    period: Period,
    to: DateTime<Utc>,
) -> Result<SlaReport, StoreError> {
    let mut reports = build_all(store, &[role.to_owned()], period, to).await?;
    Ok(reports.remove(0))
}

/// A report for each of `roles` over the `period` before `to`, from one read of the audit trail
/// (back to the oldest proposal still pending, for the backlog), with the listed proposals'
/// cards located.
pub async fn build_all(
    store: &dyn Store,
    roles: &[String],
    period: Period,
    to: DateTime<Utc>,
) -> Result<Vec<SlaReport>, StoreError> {
    let from = to - period.duration();
    let since = match store.oldest_pending().await? {
        Some(oldest) if oldest < from => oldest,
        _ => from,
    };
    let filter = AuditFilter {
        since: Some(since),
        proposal_id: None,
    };
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_page(&filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() as i64 == PAGE;
        events.extend(
            page.into_iter()
                .filter(|e| REPORTED.contains(&e.kind.as_str())),
        );
        if !full {
            break;
        }
    }
    let mut reports = Vec::with_capacity(roles.len());
    for role in roles {
        let mut report = compute(role, period, to, &events);
        for breach in &mut report.breaches {
            breach.card = card(store, &breach.proposal_id, role).await?;
        }
        for waiting in &mut report.backlog.oldest {
            waiting.card = card(store, &waiting.proposal_id, role).await?;
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Where the proposal's card for `role` was posted.
async fn card(store: &dyn Store, id: &str, role: &str) -> Result<Option<CardRef>, StoreError> {
    let Ok(id) = ProposalId::parse(id) else {
        return Ok(None);
    };
    Ok(store
        .posted_cards(&id)
        .await?
        .into_iter()
        .find(|card| card.role == role)
        .map(|card| CardRef {
            channel: card.channel,
            ts: card.ts,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_print_alike() {
        for text in ["7d", "30d", "90d"] {
            assert_eq!(text.parse::<Period>().unwrap().to_string(), text);
        }
        assert!(
            "1y".parse::<Period>()
                .unwrap_err()
                .contains("7d, 30d or 90d")
        );
        assert_eq!(serde_json::to_string(&Period::Month).unwrap(), "\"30d\"");
    }
}
