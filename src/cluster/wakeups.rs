//! Wake-ups across replicas: a decision made on one replica ends the long-polls waiting for it
//! on every replica, and work queued by one replica (a card to post, a callback owed) starts the
//! workers on every replica at once instead of at their next poll.
//!
//! Over Redis pub/sub, one channel (`<prefix>wake`) carries short messages, each tagged with the
//! sending replica so it ignores its own. Wake-ups are hints, never the record: the rows are in
//! the database, workers still poll, and a long-poll re-reads the proposal before answering.
//! While the subscription is down the link reports degraded and long-polls re-read the database
//! every [`POLL_WHILE_DEGRADED`]; when it comes back every local waiter and worker is woken once,
//! since wake-ups sent in the gap were missed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::RedisLink;
use crate::domain::ProposalId;

/// How often a long-poll re-reads its proposal while other replicas' wake-ups cannot reach it.
pub const POLL_WHILE_DEGRADED: Duration = Duration::from_secs(1);

/// Wake-ups queued for publishing before new ones are dropped (they are hints).
const QUEUE: usize = 4096;

/// What a wake-up says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// This proposal was decided (long-polls end; a callback is owed).
    Decided(ProposalId),
    /// Slack work was queued (the Slack outbox worker).
    SlackWork,
}

impl Wake {
    fn encode(&self, replica: &str) -> String {
        match self {
            Wake::Decided(id) => format!("{replica} d {id}"),
            Wake::SlackWork => format!("{replica} s"),
        }
    }

    /// The wake-up in `message`, unless it came from `replica` itself or is not one of ours.
    fn decode(message: &str, replica: &str) -> Option<Wake> {
        let mut parts = message.splitn(3, ' ');
        let from = parts.next()?;
        if from == replica {
            return None;
        }
        match (parts.next()?, parts.next()) {
            ("d", Some(id)) => ProposalId::parse(id).ok().map(Wake::Decided),
            ("s", None) => Some(Wake::SlackWork),
            _ => None,
        }
    }
}

/// Who acts on other replicas' wake-ups (the engine).
pub trait WakeTarget: Send + Sync + 'static {
    fn woken(&self, wake: Wake);
    /// The subscription was (re)established: anything may have happened meanwhile.
    fn resync(&self);
}

/// Publishes this replica's wake-ups; a no-op without Redis (one process sees its own).
#[derive(Clone, Default)]
pub struct Wakeups {
    shared: Option<Shared>,
}

#[derive(Clone)]
struct Shared {
    link: RedisLink,
    replica: Arc<str>,
    outgoing: mpsc::Sender<Wake>,
    incoming: Arc<std::sync::Mutex<Option<mpsc::Receiver<Wake>>>>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Wakeups {
    /// Wake-ups shared through `link`. Nothing is sent or received until [`Wakeups::run`].
    pub fn shared(link: RedisLink) -> Self {
        link.expect_subscription();
        let (outgoing, incoming) = mpsc::channel(QUEUE);
        Self {
            shared: Some(Shared {
                link,
                replica: ulid::Ulid::new().to_string().into(),
                outgoing,
                incoming: Arc::new(std::sync::Mutex::new(Some(incoming))),
            }),
        }
    }

    /// Tells the other replicas (never blocks; dropped when the queue is full or there is no
    /// Redis: the database and the workers' polls are the record).
    pub fn publish(&self, wake: Wake) {
        if let Some(shared) = &self.shared {
            let _ = shared.outgoing.try_send(wake);
        }
    }

    /// Whether wake-ups from other replicas may be missing now, so waiters should poll.
    pub fn missing_peers(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.link.is_degraded() || shared.link.is_unsubscribed())
    }

    /// Publishes and subscribes until `stop` resolves (returns at once without Redis).
    pub async fn run(
        self,
        target: Arc<dyn WakeTarget>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        let Some(shared) = self.shared else { return };
        let Some(incoming) = shared.incoming.lock().expect("wakeups lock").take() else {
            tracing::error!("wake-ups started twice");
            return;
        };
        let publish = publish(shared.link.clone(), shared.replica.clone(), incoming);
        let subscribe = subscribe(shared.link, shared.replica, target);
        tokio::select! {
            () = stop => {}
            () = publish => {}
            () = subscribe => {}
        }
    }
}

/// Sends queued wake-ups, folding repeated "Slack work" hints into one per batch.
async fn publish(link: RedisLink, replica: Arc<str>, mut queue: mpsc::Receiver<Wake>) {
    let channel = link.key("wake");
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 256).await > 0 {
        let mut messages: Vec<String> = Vec::with_capacity(batch.len());
        let mut slack = false;
        for wake in batch.drain(..) {
            if wake == Wake::SlackWork && std::mem::replace(&mut slack, true) {
                continue;
            }
            messages.push(wake.encode(&replica));
        }
        let channel = channel.clone();
        let sent = link
            .call(|mut connection| async move {
                let mut pipe = redis::pipe();
                for message in &messages {
                    pipe.publish(&channel, message).ignore();
                }
                pipe.query_async::<()>(&mut connection).await
            })
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "wake-ups not published; other replicas will poll");
        }
    }
}

/// How long to wait before subscribing again after the subscription failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Listens to other replicas' wake-ups, resubscribing whenever the connection is lost.
async fn subscribe(link: RedisLink, replica: Arc<str>, target: Arc<dyn WakeTarget>) {
    let channel = link.key("wake");
    loop {
        let connected = tokio::time::timeout(super::redis_link::CALL_TIMEOUT * 4, async {
            let mut pubsub = link.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match connected {
            Ok(Ok(pubsub)) => {
                link.set_subscribed(true);
                // Wake-ups sent while we were not listening are lost: look again.
                target.resync();
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(text) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(wake) = Wake::decode(&text, &replica) {
                        target.woken(wake);
                    }
                }
                tracing::warn!("wake-up subscription lost; resubscribing");
            }
            Ok(Err(error)) => tracing::debug!(%error, "cannot subscribe to wake-ups"),
            Err(_) => tracing::debug!("subscribing to wake-ups timed out"),
        }
        link.set_subscribed(false);
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_round_trip_and_a_replica_ignores_its_own() {
        let id = ProposalId::generate();
        let decided = Wake::Decided(id.clone()).encode("A");
        assert_eq!(Wake::decode(&decided, "B"), Some(Wake::Decided(id)));
        assert_eq!(Wake::decode(&decided, "A"), None);
        assert_eq!(
            Wake::decode(&Wake::SlackWork.encode("A"), "B"),
            Some(Wake::SlackWork)
        );
        for noise in ["", "A", "A x", "A d", "A d not-an-id", "A s extra"] {
            assert_eq!(Wake::decode(noise, "B"), None, "{noise:?}");
        }
    }
}
