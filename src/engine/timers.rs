//! SLA timers in the core: what a due timer does, resolved against the manifests as they are
//! at firing time (who has not voted yet, who is on call now, who an escalation grants approval
//! to), and firing it — once, through a conditional update in the writer's transaction. The
//! SLA worker only claims due timers and hands them here.

use serde_json::json;

use super::{Engine, EngineError};
use crate::audit::kinds;
use crate::domain::{DueTimer, EscalationTarget, Proposal, SlackTask, Timer, TimerOutcome};
use crate::manifest::Role;
use crate::registry::Registry;
use crate::store::{Command, CommandResult, StoreError, TimerEffect};

impl Engine {
    /// Claims up to `limit` due timers for `lease` (other replicas skip them meanwhile).
    pub async fn claim_due_timers(
        &self,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<DueTimer>, EngineError> {
        let now = self.clock.now();
        Ok(self.store.claim_timers(now, now + lease, limit).await?)
    }

    /// Resolves what a claimed timer does, from its proposal as it is now, and fires it. A
    /// timer whose proposal is gone only expires (nothing to tell anyone).
    #[tracing::instrument(skip_all, fields(proposal_id = %timer.proposal_id, timer = timer.id))]
    pub async fn fire_due_timer(
        &self,
        registry: &Registry,
        timer: DueTimer,
    ) -> Result<TimerOutcome, EngineError> {
        let effect = match self.store.proposal(&timer.proposal_id).await? {
            Some(proposal) => self.timer_effect(registry, &proposal, &timer).await?,
            None => TimerEffect::Expire,
        };
        let expiry = matches!(effect, TimerEffect::Expire);
        let id = timer.proposal_id.clone();
        match self.apply(Command::FireTimer { timer, effect }).await? {
            CommandResult::TimerHandled(outcome) => {
                if expiry && outcome == TimerOutcome::Fired {
                    self.announce_decision(&id);
                }
                Ok(outcome)
            }
            other => Err(EngineError::Store(StoreError::Other(format!(
                "a timer answered {other:?}"
            )))),
        }
    }

    async fn timer_effect(
        &self,
        registry: &Registry,
        proposal: &Proposal,
        timer: &DueTimer,
    ) -> Result<TimerEffect, EngineError> {
        let roles: Vec<&Role> = (proposal.content.verdict.route.iter())
            .filter_map(|r| registry.roles.get(r))
            .collect();
        Ok(match &timer.timer {
            Timer::Expire => TimerEffect::Expire,
            Timer::Remind { level } => {
                let voted: Vec<String> = (self.store.votes(&proposal.id).await?)
                    .into_iter()
                    .map(|v| v.voter)
                    .collect();
                reminder(*level, &roles, &voted)
            }
            Timer::Escalate {
                level,
                target,
                grants_approval,
            } => {
                let audience = Audience::of(target, &roles, registry, self.clock.now());
                escalation(*level, target, *grants_approval, audience)
            }
        })
    }
}

/// A reminder reaches everyone who may approve and has not voted; a user group is mentioned
/// whole.
fn reminder(level: Option<usize>, roles: &[&Role], voted: &[String]) -> TimerEffect {
    let mut mentions = Vec::new();
    for role in roles {
        for user in role.approvers.users.iter().filter(|u| !voted.contains(u)) {
            let mention = format!("<@{user}>");
            if !mentions.contains(&mention) {
                mentions.push(mention);
            }
        }
        if let Some(group) = &role.approvers.usergroup {
            mentions.push(format!("<!subteam^{group}>"));
        }
    }
    TimerEffect::Notify {
        kind: kinds::REMINDED,
        data: json!({"level": level, "mentions": mentions}),
        task: SlackTask::Remind { mentions },
        grants: Vec::new(),
    }
}

/// Whom an escalation rung reaches, as it fires.
struct Audience {
    /// How the rung names its target in messages.
    label: String,
    /// The people notified directly (and granted approval, if the rung grants it).
    users: Vec<String>,
    /// A channel the escalation is posted in.
    channel: Option<String>,
}

impl Audience {
    fn of(
        target: &EscalationTarget,
        roles: &[&Role],
        registry: &Registry,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let (label, users, channel) = match target {
            EscalationTarget::Oncall => {
                // Whoever is on call now for each routed role's schedule.
                let mut users: Vec<String> = Vec::new();
                let mut schedules = Vec::new();
                for schedule in roles.iter().filter_map(|role| role.oncall.as_ref()) {
                    schedules.push(schedule.clone());
                    if let Some(user) = registry.oncall.who(schedule, now)
                        && !users.iter().any(|u| u == user)
                    {
                        users.push(user.to_owned());
                    }
                }
                (format!("on call: {}", schedules.join(", ")), users, None)
            }
            EscalationTarget::User(user) => (format!("<@{user}>"), vec![user.clone()], None),
            EscalationTarget::Usergroup(group) => (format!("<!subteam^{group}>"), Vec::new(), None),
            EscalationTarget::Role(role) => (
                format!("role {role}"),
                Vec::new(),
                registry.roles.get(role).map(|r| r.channel.clone()),
            ),
        };
        Self {
            label,
            users,
            channel,
        }
    }
}

/// An escalation: audited with whom it reached, sent through the outbox, and (for a rung that
/// grants approval) its people recorded as approvers of this proposal.
fn escalation(
    level: usize,
    target: &EscalationTarget,
    grants_approval: bool,
    audience: Audience,
) -> TimerEffect {
    let Audience {
        label,
        users,
        channel,
    } = audience;
    let mut mentions: Vec<String> = users.iter().map(|u| format!("<@{u}>")).collect();
    if let EscalationTarget::Usergroup(group) = target {
        mentions.push(format!("<!subteam^{group}>"));
    }
    TimerEffect::Notify {
        kind: kinds::ESCALATED,
        data: json!({"level": level, "target": target, "notified": users, "channel": channel, "grants_approval": grants_approval}),
        grants: if grants_approval {
            users.clone()
        } else {
            Vec::new()
        },
        task: SlackTask::Escalate {
            level,
            label,
            users,
            mentions,
            channel,
        },
    }
}
