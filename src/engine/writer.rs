//! Group commit. Every state change goes through one writer task per process, which takes all
//! the commands waiting at that moment and applies them in a single transaction. Under load a
//! batch holds many proposals, so the fsync and the audit-chain lock are paid once per batch;
//! when idle a batch is one command and nothing waits for a timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::EngineError;
use crate::clock::Clock;
use crate::domain::{Actor, Decision, Proposal, Status};
use crate::store::{Command, CommandResult, Store, StoreError};

/// Most commands per transaction: enough to amortise a commit, small enough to keep one batch's
/// latency low and its transaction short.
const MAX_BATCH: usize = 256;
/// Commands waiting beyond this make callers wait (backpressure) instead of growing memory.
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<CommandResult, Arc<StoreError>>>;

/// A handle to the writer task; cheap to clone. The task ends when the last handle is dropped,
/// after finishing the commands already queued.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<(Command, Reply)>,
    batches: Arc<AtomicU64>,
}

impl Writer {
    pub fn spawn(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let batches = Arc::new(AtomicU64::new(0));
        let counter = batches.clone();
        tokio::spawn(async move {
            run(store, clock, receiver, counter).await;
            tracing::debug!("writer stopped: all handles dropped");
        });
        Self { queue, batches }
    }

    /// Applies one command and waits until it is committed.
    pub async fn apply(&self, command: Command) -> Result<CommandResult, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((command, reply))
            .await
            .map_err(|_| EngineError::WriterStopped)?;
        match answer.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(EngineError::Store(StoreError::clone(&error))),
            Err(_) => Err(EngineError::WriterStopped),
        }
    }

    /// Transactions attempted so far (a batch retried command by command counts once).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

async fn run(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut receiver: mpsc::Receiver<(Command, Reply)>,
    batches: Arc<AtomicU64>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (commands, replies): (Vec<_>, Vec<_>) = jobs.drain(..).unzip();
        batches.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("countersign_write_batch_size").record(commands.len() as f64);
        let retry = (commands.len() > 1).then(|| commands.clone());
        // Retries run at the batch's time: the same instant its commands would have written.
        let at = clock.now();
        match store.apply(commands, at).await {
            Ok(results) => answer(replies, results.into_iter().map(Ok)),
            // One bad command must not sink its neighbours: retry each on its own, so only the
            // culprit gets the error. Not when the database is unreachable: everyone would wait
            // out the timeout once more, in turn.
            Err(error) if retry.is_some() && !matches!(error, StoreError::Unavailable(_)) => {
                tracing::warn!(%error, "batch failed; retrying its commands one by one");
                for (command, reply) in retry.into_iter().flatten().zip(replies) {
                    let result = retry_alone(store.as_ref(), command, at).await;
                    let _ = reply.send(result.map_err(Arc::new));
                }
            }
            Err(error) => {
                tracing::error!(%error, "write failed");
                let error = Arc::new(error);
                answer(replies, std::iter::repeat_with(|| Err(error.clone())));
            }
        }
    }
}

/// Applies one command of a failed batch on its own. A batch can fail at COMMIT after the
/// database did commit (the connection broke on the way back): retried, the command then meets
/// its own write — a submission its row, a cancellation or an outcome a proposal no longer in
/// the state it needs. When what is stored is exactly what the command wrote (same proposal;
/// same decision, to the microsecond of `at`; same outcome), it was applied: say so, rather than
/// report an error or a conflict for a change that took effect.
async fn retry_alone(
    store: &dyn Store,
    command: Command,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<CommandResult, StoreError> {
    let attempted = command.clone();
    match store.apply(vec![command], at).await {
        Ok(mut results) => match results.remove(0) {
            CommandResult::WrongState(status) => match already_applied(store, &attempted, at).await
            {
                Some(proposal) => Ok(CommandResult::Updated(Box::new(proposal))),
                None => Ok(CommandResult::WrongState(status)),
            },
            result => Ok(result),
        },
        Err(error) => match already_applied(store, &attempted, at).await {
            Some(proposal) if matches!(attempted, Command::Submit { .. }) => {
                Ok(CommandResult::Submitted(Box::new(proposal)))
            }
            _ => Err(error),
        },
    }
}

/// The stored proposal, if it holds exactly what `command` (run at `at`) would have written.
async fn already_applied(
    store: &dyn Store,
    command: &Command,
    at: chrono::DateTime<chrono::Utc>,
) -> Option<Proposal> {
    let id = match command {
        Command::Submit { proposal, .. } => &proposal.id,
        Command::Cancel { id, .. } | Command::RecordOutcome { id, .. } => id,
        _ => return None,
    };
    let stored = store.proposal(id).await.ok().flatten()?;
    let applied = match command {
        Command::Submit { proposal, .. } => stored == **proposal,
        Command::Cancel { agent, reason, .. } => {
            stored.status == Status::Cancelled
                && stored.decision
                    == Some(Decision {
                        by: Actor::agent(agent),
                        at,
                        reason: reason.clone(),
                        execution_token: None,
                        digest: None,
                    })
        }
        Command::RecordOutcome { outcome, .. } => stored.outcome.as_ref() == Some(outcome),
        _ => false,
    };
    applied.then_some(stored)
}

fn answer(
    replies: Vec<Reply>,
    results: impl Iterator<Item = Result<CommandResult, Arc<StoreError>>>,
) {
    for (reply, result) in replies.into_iter().zip(results) {
        // The caller may have gone (client disconnected); the change is committed regardless.
        let _ = reply.send(result);
    }
}
