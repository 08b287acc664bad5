//! Group commit. Every state change goes through one writer task per process, which takes all
//! the commands waiting at that moment and applies them in a single transaction. Under load a
//! batch holds many proposals, so the fsync and the audit-chain lock are paid once per batch;
//! when idle a batch is one command and nothing waits for a timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::EngineError;
use crate::clock::Clock;
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
        match store.apply(commands, clock.now()).await {
            Ok(results) => answer(replies, results.into_iter().map(Ok)),
            // One bad command must not sink its neighbours: retry each on its own, so only the
            // culprit gets the error. Not when the database is unreachable: everyone would wait
            // out the timeout once more, in turn.
            Err(error) if retry.is_some() && !matches!(error, StoreError::Unavailable(_)) => {
                tracing::warn!(%error, "batch failed; retrying its commands one by one");
                for (command, reply) in retry.into_iter().flatten().zip(replies) {
                    let result = retry_alone(store.as_ref(), command, clock.now()).await;
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
/// database did commit (the connection broke on the way back): a submission retried then meets
/// its own row. If the stored proposal is exactly the one being submitted, it was stored — say
/// so, rather than report an error for an accepted proposal.
async fn retry_alone(
    store: &dyn Store,
    command: Command,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<CommandResult, StoreError> {
    let submitted = match &command {
        Command::Submit { proposal, .. } => Some(proposal.clone()),
        _ => None,
    };
    match store.apply(vec![command], at).await {
        Ok(mut results) => Ok(results.remove(0)),
        Err(error) => match submitted {
            Some(proposal)
                if store.proposal(&proposal.id).await.ok().flatten().as_ref()
                    == Some(&*proposal) =>
            {
                Ok(CommandResult::Submitted(proposal))
            }
            _ => Err(error),
        },
    }
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
