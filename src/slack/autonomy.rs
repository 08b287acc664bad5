//! `/countersign autonomy AGENT [30d|90d]`: each action's record and what it has earned, for
//! whoever asks (ephemeral). Nothing is promoted by it: a person changes the catalog.

use super::SlackState;
use super::escape::{mrkdwn, truncate};
use crate::report::Period;

pub async fn handle(state: &SlackState, words: &[&str]) -> String {
    let usage = "Usage: `/countersign autonomy AGENT [30d|90d]`";
    let Some(name) = words.first() else {
        return usage.to_owned();
    };
    let period = match words.get(1).map(|w| w.parse::<Period>()) {
        None => Period::Month,
        Some(Ok(period)) => period,
        Some(Err(error)) => return format!("{error}. {usage}"),
    };
    let registry = state.registry.current();
    let Some(agent) = registry.agents.get(name) else {
        return format!(
            "There is no agent `{}`. {usage}",
            mrkdwn(&truncate(name, 60))
        );
    };
    let report = match state
        .engine
        .autonomy_report(agent, period, registry.policies.autonomy())
        .await
    {
        Ok(report) => report,
        Err(error) => {
            tracing::error!(%error, "cannot build the autonomy report");
            return "Sorry, the record cannot be read just now; try again.".into();
        }
    };
    let mut text = format!("*{}* — autonomy record, last {period}", agent.id);
    for a in &report.actions {
        let tier = serde_json::to_value(a.autonomy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let rate = a
            .approval_rate
            .map_or("—".to_owned(), |r| format!("{:.0}% approved", r * 100.0));
        text.push_str(&format!(
            "\n• `{}` ({tier}): {} proposals, {} approved / {} rejected ({rate}), {} override(s), {} executed / {} failed → *{}*: {}",
            a.action,
            a.proposals,
            a.approved,
            a.rejected,
            a.overrides,
            a.executed,
            a.failed_executions,
            a.recommendation,
            mrkdwn(&a.reason)
        ));
        for (reason, n) in a.rejection_reasons.iter().take(3) {
            text.push_str(&format!(
                "\n    rejected ×{n}: {}",
                mrkdwn(&truncate(reason, 150))
            ));
        }
    }
    text
}
