//! The loop every queue's worker runs, written once: a pass (claim what is due under a lease, do
//! it, settle it); straight into the next pass after one that finished work, since more may be
//! due; otherwise wait for new work to be announced, the poll (for rows that fall due while
//! nobody rings: retries, other replicas' work) or shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// What one pass of a worker did, as far as its loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// It finished work: go again at once.
    Done,
    /// Nothing was due.
    Idle,
    /// Everything it took had to wait (rate limited, unreachable): wait out the poll without
    /// waking for new work, which would be more of the same — coming straight back would only
    /// claim and postpone rows at full speed.
    Stalled,
}

impl Progress {
    /// `Done` when the pass handled anything, else `Idle`.
    pub fn of(handled: usize) -> Self {
        if handled > 0 { Self::Done } else { Self::Idle }
    }
}

/// Runs `pass` until `shutdown`, as described above; `work` rings when a change left work for
/// this worker (`None`: only the poll wakes it). A failed pass is logged and waited out like an
/// idle one.
pub async fn drive<F, Fut, E>(
    name: &'static str,
    poll: Duration,
    work: Option<Arc<Notify>>,
    shutdown: impl Future<Output = ()>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Progress, E>>,
    E: std::fmt::Display,
{
    tokio::pin!(shutdown);
    loop {
        let progress = match pass().await {
            Ok(progress) => progress,
            Err(error) => {
                tracing::warn!(%error, worker = name, "worker pass failed");
                Progress::Idle
            }
        };
        if progress == Progress::Done {
            continue;
        }
        let rung = async {
            match &work {
                Some(work) if progress != Progress::Stalled => work.notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = rung => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
    tracing::info!(worker = name, "worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn done_goes_again_idle_waits_for_work_and_stalled_for_the_poll() {
        let work = Arc::new(Notify::new());
        let passes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let script = [
            Progress::Done,
            Progress::Idle,
            Progress::Stalled,
            Progress::Idle,
        ];
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver = {
            let (work, passes) = (work.clone(), passes.clone());
            tokio::spawn(drive(
                "test",
                Duration::from_secs(60),
                Some(work),
                async {
                    let _ = stopped.await;
                },
                move || {
                    let passes = passes.clone();
                    async move {
                        let mut passes = passes.lock().unwrap();
                        passes.push(tokio::time::Instant::now());
                        Ok::<_, String>(
                            script
                                .get(passes.len() - 1)
                                .copied()
                                .unwrap_or(Progress::Idle),
                        )
                    }
                },
            ))
        };
        let start = tokio::time::Instant::now();
        // Done, then Idle at once: two passes, now waiting.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(passes.lock().unwrap().len(), 2);
        // Idle wakes for work: the third pass comes before the poll.
        work.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(passes.lock().unwrap().len(), 3);
        // Stalled does not wake for work, only for the poll.
        work.notify_one();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(passes.lock().unwrap().len(), 3);
        tokio::time::sleep(Duration::from_secs(31)).await;
        let passes = passes.lock().unwrap().clone();
        assert!(passes[3] - start >= Duration::from_secs(60), "{passes:?}");
        // The ring that came during the stall is kept: the idle pass after it goes again once.
        assert_eq!(passes.len(), 5);
        assert_eq!(passes[4], passes[3]);
        stop.send(()).unwrap();
        driver.await.unwrap();
    }
}
