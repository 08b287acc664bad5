//! The SLA report in Slack: `/countersign report [7d|30d|90d] [role]`, and the message the report
//! worker posts (figures as Block Kit; the chart follows as an uploaded image).
//!
//! A report names reviewers and how fast they answer, so it is only ever posted in the role's
//! own channel, to the people it is about: asked for elsewhere, the command says where to ask.

use std::collections::HashMap;

use slack_morphism::prelude::*;

use super::SlackState;
use super::card::{context, section, slack_date};
use super::client::OutgoingMessage;
use super::escape::{mrkdwn, truncate};
use super::payload::SlashCommand;
use crate::report::{Period, ReportPost, SlaReport};

/// Summaries are cut to this in lists.
const SUMMARY_CHARS: usize = 80;

/// Handles `/countersign report …`: checks the words, queues the report for the report worker
/// and answers (ephemerally) what will happen.
pub async fn request(state: &SlackState, command: &SlashCommand, words: &[&str]) -> String {
    let registry = state.registry.current();
    let mut period = Period::Week;
    let mut named = None;
    for word in words {
        if let Ok(p) = word.parse::<Period>() {
            period = p;
        } else if registry.roles.get(word).is_some() {
            named = Some((*word).to_owned());
        } else {
            let roles: Vec<&str> = registry.roles.iter().map(|(id, _)| id).collect();
            return format!(
                "`{}` is neither a period (7d, 30d, 90d) nor a role ({}).\nUsage: `/countersign report [7d|30d|90d] [role]`",
                mrkdwn(&truncate(word, 40)),
                roles.join(", ")
            );
        }
    }
    let here: Vec<&str> = registry
        .roles
        .iter()
        .filter(|(_, role)| role.channel == command.channel_id)
        .map(|(id, _)| id)
        .collect();
    let role = match (named, here.as_slice()) {
        (Some(role), _) if here.contains(&role.as_str()) => role,
        (Some(role), _) => {
            let channel = registry.roles.get(&role).map_or("", |r| r.channel.as_str());
            return format!(
                "The *{role}* report is posted in <#{channel}>, to the people it is about: run the command there."
            );
        }
        (None, [only]) => (*only).to_owned(),
        (None, []) => {
            return "Reports are posted in a role's own channel: run `/countersign report` there."
                .to_owned();
        }
        (None, several) => {
            return format!(
                "This channel serves {}: name one, e.g. `/countersign report {} {}`.",
                several.join(" and "),
                period,
                several[0]
            );
        }
    };
    let now = state.engine.clock().now();
    // One report per role, period and channel a minute, however often it is asked for: a
    // channel cannot be flooded with reports (and Slack's retries collapse too).
    let post = ReportPost {
        id: 0,
        dedupe: format!(
            "command:{}:{role}:{period}:{}",
            command.channel_id,
            now.format("%Y-%m-%dT%H:%M")
        ),
        role: role.clone(),
        channel: command.channel_id.clone(),
        period,
        as_of: now,
        requested_by: Some(command.user_id.clone()),
        attempts: 0,
    };
    match state.engine.enqueue_report(&post).await {
        Ok(true) => {
            state.reports.notify_one();
            format!(
                "Preparing the {period} SLA report for *{role}*: it will appear in this channel."
            )
        }
        Ok(false) => format!(
            "The {period} SLA report for *{role}* was asked for a moment ago: it will appear in this channel."
        ),
        Err(error) => {
            tracing::error!(%error, "cannot queue a report");
            "Sorry, I could not queue the report (the database is not answering); try again shortly."
                .to_owned()
        }
    }
}

/// The report as a message. `links` maps proposal ids to their cards' permalinks;
/// `requested_by` is who asked for it, `None` for the weekly digest.
pub fn message(
    report: &SlaReport,
    links: &HashMap<String, String>,
    requested_by: Option<&str>,
) -> OutgoingMessage {
    let title = match requested_by {
        Some(_) => format!("SLA report · {} · last {}", report.role, report.period),
        None => format!("Weekly SLA digest · {}", report.role),
    };
    let mut blocks: Vec<SlackBlock> = vec![SlackHeaderBlock::new(pt!(title.clone())).into()];
    let o = &report.outcomes;
    blocks.push(section(format!(
        "*{}* proposal{} for review\n:white_check_mark: {} approved · :x: {} rejected · :hourglass: {} expired · :no_entry_sign: {} cancelled · :hourglass_flowing_sand: {} pending",
        report.proposals,
        plural(report.proposals),
        o.approved,
        o.rejected,
        o.expired,
        o.cancelled,
        o.pending
    )));
    blocks.push(section(figures(report)));
    blocks.push(section(breaches(report, links)));
    blocks.push(section(backlog(report, links)));
    blocks.push(section(reviewers(report)));
    let mut footer = format!(
        "Proposals routed to {} and submitted {} – {}, counted from the audit trail. Chart below.",
        report.role,
        slack_date(report.from),
        slack_date(report.to)
    );
    if let Some(user) = requested_by {
        footer.push_str(&format!(" Asked for by <@{user}>."));
    }
    blocks.push(context(footer));
    let share = report
        .sla
        .within_share
        .map_or("no SLA outcomes yet".to_owned(), |s| {
            format!("{} within SLA", percent(s))
        });
    OutgoingMessage {
        text: format!("{title}: {} proposals, {share}", report.proposals),
        blocks,
    }
}

fn figures(report: &SlaReport) -> String {
    let t = &report.time_to_decision;
    let time = match (t.median_seconds, t.p90_seconds) {
        (Some(median), Some(p90)) => format!(
            "median {} · p90 {} ({} decision{})",
            duration(median),
            duration(p90),
            t.decisions,
            plural(t.decisions)
        ),
        _ => "no decisions yet".to_owned(),
    };
    let s = &report.sla;
    let within = match s.within_share {
        Some(share) => format!(
            "{} ({} of {})",
            percent(share),
            s.within,
            s.within + s.breached
        ),
        None => "nothing due yet".to_owned(),
    };
    let escalations = if report.escalations.is_empty() {
        "none".to_owned()
    } else {
        report
            .escalations
            .iter()
            .map(|l| format!("level {}: {}", l.level, l.count))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    format!(
        "*Time to decision*: {time}\n*Decided within SLA*: {within}\n*Reminders*: {} · *Escalations*: {escalations}",
        report.reminders
    )
}

fn breaches(report: &SlaReport, links: &HashMap<String, String>) -> String {
    let mut text = format!("*SLA breaches*: {}", report.sla.breached);
    for breach in &report.breaches {
        let how = match breach.status {
            crate::domain::Status::Pending => {
                format!("still waiting, {} past due", duration(breach.late_seconds))
            }
            crate::domain::Status::Expired => "expired".to_owned(),
            status => format!("{} {} late", status.as_str(), duration(breach.late_seconds)),
        };
        text.push_str(&format!(
            "\n• {} — {how}",
            linked(&breach.summary, links.get(&breach.proposal_id))
        ));
    }
    if report.sla.breached as usize > report.breaches.len() {
        text.push_str(&format!(
            "\n…and {} more",
            report.sla.breached as usize - report.breaches.len()
        ));
    }
    text
}

fn backlog(report: &SlaReport, links: &HashMap<String, String>) -> String {
    let b = &report.backlog;
    let mut text = format!("*Backlog now*: {} pending", b.pending);
    for waiting in &b.oldest {
        text.push_str(&format!(
            "\n• {} — waiting {}{}",
            linked(&waiting.summary, links.get(&waiting.proposal_id)),
            duration(waiting.age_seconds),
            if waiting.overdue {
                " :warning: overdue"
            } else {
                ""
            }
        ));
    }
    if b.pending as usize > b.oldest.len() {
        text.push_str(&format!(
            "\n…and {} more",
            b.pending as usize - b.oldest.len()
        ));
    }
    text
}

fn reviewers(report: &SlaReport) -> String {
    if report.reviewers.is_empty() {
        return "*Reviewers*: no votes in this window".to_owned();
    }
    let mut text = "*Reviewers*".to_owned();
    for r in report.reviewers.iter().take(15) {
        text.push_str(&format!(
            "\n• <@{}> — {} vote{} ({} approve, {} reject), median response {}",
            r.user,
            r.votes,
            plural(r.votes),
            r.approvals,
            r.rejections,
            r.median_response_seconds.map_or("—".to_owned(), duration)
        ));
    }
    text
}

/// An agent's summary (untrusted: made inert and cut), linked to its card when there is a link.
fn linked(summary: &str, link: Option<&String>) -> String {
    let text = super::escape::inert(&truncate(summary, SUMMARY_CHARS));
    match link {
        Some(url) => format!("<{url}|{text}>"),
        None => text,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// A span for people: `45s`, `12m`, `1h 05m`, `2d 3h`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Breach, Waiting, compute};
    use crate::sandbox::blockkit;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(-5), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(12 * 60 + 59), "12m");
        assert_eq!(duration(3600 + 5 * 60), "1h 05m");
        assert_eq!(duration(2 * 86400 + 3 * 3600 + 59), "2d 3h");
    }

    #[test]
    fn agent_text_is_escaped_and_the_message_fits_slack() {
        let to = "2026-11-21T12:00:00Z".parse().unwrap();
        let mut report = compute("finance", Period::Week, to, &[]);
        let hostile = "<!channel> pay <https://evil.example|invoice> & more ".repeat(20);
        report.sla.breached = 25;
        report.breaches = (0..10)
            .map(|i| Breach {
                proposal_id: format!("p{i}"),
                summary: hostile.clone(),
                submitted_at: to,
                deadline: to,
                status: crate::domain::Status::Approved,
                late_seconds: 90,
                card: None,
            })
            .collect();
        report.backlog.pending = 1;
        report.backlog.oldest = vec![Waiting {
            proposal_id: "w".into(),
            summary: hostile.clone(),
            age_seconds: 7200,
            overdue: true,
            card: None,
        }];
        let links = HashMap::from([(
            "w".to_owned(),
            "https://slack.example/archives/C/p1".to_owned(),
        )]);
        let message = message(&report, &links, Some("U0FIN001"));
        let json = serde_json::to_value(&message.blocks).unwrap();
        let text = json.to_string();
        assert!(!text.contains("<!channel>"), "mentions disarmed");
        assert!(!text.contains("<https://evil"), "agent links disarmed");
        assert!(text.contains("<https://slack.example/archives/C/p1|&lt;!channel&gt;"));
        assert!(text.contains("approved 1m late"));
        assert!(text.contains("…and 15 more"));
        assert!(text.contains("<@U0FIN001>"));
        assert!(
            blockkit::message_blocks(&json).is_ok(),
            "within Block Kit's limits"
        );
    }
}
