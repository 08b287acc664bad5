//! The SLA worker: claims due timers (under a lease; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! replicas share the work), resolves whom a reminder or escalation reaches from the manifests
//! as they are now (the on-call person at firing time), and fires each timer through the engine,
//! where a conditional update makes it fire exactly once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::audit::kinds;
use crate::clock::Clock;
use crate::domain::{DueTimer, EscalationTarget, Proposal, ProposalId, SlackTask, Timer};
use crate::engine::{Engine, EngineError};
use crate::registry::{Registry, SharedRegistry};
use crate::store::TimerEffect;

const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// Timers claimed per pass, all fired concurrently: several of the writer's transactions' worth,
/// so the next transaction's commands are ready while one commits.
const BATCH: i64 = 1024;
/// How often an idle worker looks for due timers (it only reads an index when nothing is due).
const POLL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct SlaWorker {
    pub engine: Engine,
    pub registry: SharedRegistry,
    pub clock: Arc<dyn Clock>,
}

impl SlaWorker {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let this = &self;
        super::driver::drive("sla", POLL, None, shutdown, || async move {
            this.run_once().await.map(super::driver::Progress::of)
        })
        .await;
    }

    /// Fires every due timer it can claim; answers how many it handled. Timers of different
    /// proposals are fired concurrently, so the writer commits them together (group commit)
    /// instead of one transaction per timer; one proposal's timers fire one after another, in
    /// due order (an overdue ladder must not have its expiry overtake its escalations). Each
    /// still fires once, through the conditional update. A timer that fails stays leased, with
    /// the proposal's later ones, and comes back when the lease ends; the first error is
    /// returned after the other proposals' timers have been handled.
    pub async fn run_once(&self) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let due = self
            .engine
            .store()
            .claim_timers(now, now + LEASE, BATCH)
            .await?;
        let registry = self.registry.current();
        let count = due.len();
        let fired = by_proposal(due).into_iter().map(|timers| async {
            for timer in timers {
                self.fire(&registry, timer).await?;
            }
            Ok::<_, EngineError>(())
        });
        let fired = futures_util::future::join_all(fired).await;
        fired.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
    }

    /// Resolves what one claimed timer does, from the proposal as it is now, and fires it.
    async fn fire(&self, registry: &Registry, timer: DueTimer) -> Result<(), EngineError> {
        let Some(proposal) = self.engine.store().proposal(&timer.proposal_id).await? else {
            self.engine.fire_timer(timer, TimerEffect::Expire).await?;
            return Ok(());
        };
        let effect = self.effect(registry, &proposal, &timer).await?;
        let outcome = self.engine.fire_timer(timer.clone(), effect).await?;
        tracing::info!(proposal_id = %timer.proposal_id, timer = ?timer.timer, outcome = outcome.as_str(), "sla timer");
        Ok(())
    }

    async fn effect(
        &self,
        registry: &Registry,
        proposal: &Proposal,
        timer: &DueTimer,
    ) -> Result<TimerEffect, EngineError> {
        let route = &proposal.content.verdict.route;
        Ok(match &timer.timer {
            Timer::Expire => TimerEffect::Expire,
            Timer::Remind { level } => {
                // Everyone who may approve and has not voted; a user group is mentioned whole.
                let voted: Vec<String> = self
                    .engine
                    .store()
                    .votes(&proposal.id)
                    .await?
                    .into_iter()
                    .map(|v| v.voter)
                    .collect();
                let mut mentions = Vec::new();
                for role in route.iter().filter_map(|r| registry.roles.get(r)) {
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
            Timer::Escalate {
                level,
                target,
                grants_approval,
            } => {
                let now = self.clock.now();
                let (label, users, channel) = match target {
                    EscalationTarget::Oncall => {
                        let mut users = Vec::new();
                        let mut schedules = Vec::new();
                        for role in route.iter().filter_map(|r| registry.roles.get(r)) {
                            if let Some(schedule) = &role.oncall {
                                schedules.push(schedule.clone());
                                if let Some(user) = registry.oncall.who(schedule, now)
                                    && !users.iter().any(|u| u == user)
                                {
                                    users.push(user.to_owned());
                                }
                            }
                        }
                        (format!("on call: {}", schedules.join(", ")), users, None)
                    }
                    EscalationTarget::User(user) => {
                        (format!("<@{user}>"), vec![user.clone()], None)
                    }
                    EscalationTarget::Usergroup(group) => {
                        (format!("<!subteam^{group}>"), Vec::new(), None)
                    }
                    EscalationTarget::Role(role) => (
                        format!("role {role}"),
                        Vec::new(),
                        registry.roles.get(role).map(|r| r.channel.clone()),
                    ),
                };
                let mut mentions: Vec<String> = users.iter().map(|u| format!("<@{u}>")).collect();
                if let EscalationTarget::Usergroup(group) = target {
                    mentions.push(format!("<!subteam^{group}>"));
                }
                TimerEffect::Notify {
                    kind: kinds::ESCALATED,
                    data: json!({"level": level, "target": target, "notified": users, "channel": channel, "grants_approval": grants_approval}),
                    grants: if *grants_approval {
                        users.clone()
                    } else {
                        Vec::new()
                    },
                    task: SlackTask::Escalate {
                        level: *level,
                        label,
                        users,
                        mentions,
                        channel,
                    },
                }
            }
        })
    }
}

/// The claimed timers grouped by proposal, each group in the order claimed (due order).
fn by_proposal(due: Vec<DueTimer>) -> Vec<Vec<DueTimer>> {
    let mut groups: Vec<Vec<DueTimer>> = Vec::new();
    let mut index: HashMap<ProposalId, usize> = HashMap::new();
    for timer in due {
        match index.entry(timer.proposal_id.clone()) {
            Entry::Occupied(group) => groups[*group.get()].push(timer),
            Entry::Vacant(slot) => {
                slot.insert(groups.len());
                groups.push(vec![timer]);
            }
        }
    }
    groups
}
