//! The SLA worker: claims due timers (under a lease; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! replicas share the work), resolves whom a reminder or escalation reaches from the manifests
//! as they are now (the on-call person at firing time), and fires each timer through the engine,
//! where a conditional update makes it fire exactly once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::domain::{DueTimer, ProposalId};
use crate::engine::{Engine, EngineError};
use crate::registry::SharedRegistry;

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
        let due = self.engine.claim_due_timers(LEASE, BATCH).await?;
        let registry = self.registry.current();
        let count = due.len();
        let fired = by_proposal(due).into_iter().map(|timers| async {
            for timer in timers {
                let (id, which) = (timer.proposal_id.clone(), timer.timer.clone());
                let outcome = self.engine.fire_due_timer(&registry, timer).await?;
                tracing::info!(proposal_id = %id, timer = ?which, outcome = outcome.as_str(), "sla timer");
            }
            Ok::<_, EngineError>(())
        });
        let fired = futures_util::future::join_all(fired).await;
        fired.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
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
