//! Slow clients (slowloris): a thousand connections that send nothing, or a header byte at a
//! time, must not keep agents or Slack from being served; the server closes them once they have
//! had `header_read_timeout` to send a request, and never holds more than `max_connections`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, test_config};
use crate::slack_client::{card_for, status_of};

const SLOW_CLIENTS: usize = 1000;

/// How the server treats a slow client: when it closed the connection, measured from just before
/// the client connected (so never later than the server's accept, where its timer starts).
type Closed = Duration;

/// Opens `count` connections to `address`, half silent and half trickling a request header one
/// byte at a time (a header that never ends); each task ends when the server closes its socket.
async fn slow_clients(address: SocketAddr, count: usize) -> JoinSet<Closed> {
    let mut clients = JoinSet::new();
    for i in 0..count {
        let connecting = Instant::now();
        let stream = TcpStream::connect(address).await.expect("connect");
        clients.spawn(slow_client(stream, connecting, i % 2 == 1));
    }
    clients
}

async fn slow_client(mut stream: TcpStream, connecting: Instant, trickle: bool) -> Closed {
    let header = b"POST /v1/proposals HTTP/1.1\r\nHost: countersign\r\nX-Slow: ";
    let mut sent = 0;
    let mut buffer = [0u8; 256];
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return connecting.elapsed(),
                // An answer (a 408 or 400) before the close is fine: wait for the close.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(200)), if trickle => {
                let byte = header.get(sent).copied().unwrap_or(b'a');
                if stream.write_all(&[byte]).await.is_err() {
                    return connecting.elapsed();
                }
                sent += 1;
            }
        }
    }
}

fn address(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A client without a pool: each request on a connection of its own, so none is reused just as
/// the server closes it for idling.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_do_not_keep_agents_or_slack_waiting() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    // Longer than the test: the slow clients are all still connected when it checks.
    config.header_read_timeout = Duration::from_secs(300);
    let app = TestApp::start_with(config).await;
    let mut clients = slow_clients(address(&app), SLOW_CLIENTS).await;

    // The listener accepts in order, so these come after every slow client was accepted.
    let prompt = Duration::from_secs(10);
    let health = tokio::time::timeout(prompt, app.http.get(app.url("/healthz")).send())
        .await
        .expect("/healthz answered promptly")
        .unwrap();
    assert_eq!(health.status(), 200);
    // An agent's proposal, its card posted to Slack (the sandbox, over HTTP), and a click on it.
    let (id, card) = tokio::time::timeout(
        prompt,
        card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE"),
    )
    .await
    .expect("proposal accepted and its card posted promptly");
    let acted = tokio::time::timeout(prompt, app.slack().click("U0FIN001", &card, "approve"))
        .await
        .expect("the click answered promptly");
    assert_eq!(acted.status, 200);
    assert_eq!(status_of(&app, REVOPS, &id).await["status"], "approved");

    // Served beside them, not after them: the server still holds every slow connection.
    assert!(
        clients.try_join_next().is_none(),
        "the server closed a slow client before its header_read_timeout"
    );
    assert_eq!(clients.len(), SLOW_CLIENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_filling_every_slot_are_closed_after_the_header_timeout() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    let timeout = Duration::from_secs(1);
    config.header_read_timeout = timeout;
    config.max_connections = SLOW_CLIENTS;
    let app = TestApp::start_with(config).await;
    let mut clients = slow_clients(address(&app), SLOW_CLIENTS).await;

    // Every slot is taken (some slow clients wait in the listen queue): an agent is served
    // once the timeout frees them.
    let http = fresh_client();
    let created = tokio::time::timeout(
        Duration::from_secs(30),
        http.post(app.url("/v1/proposals"))
            .bearer_auth(REVOPS)
            .json(&discount_proposal())
            .send(),
    )
    .await
    .expect("the proposal answered once slow clients were closed")
    .unwrap();
    assert_eq!(created.status(), 201);

    // Silent and trickling alike were closed, none before the timeout.
    let all_closed = tokio::time::timeout(Duration::from_secs(60), async {
        let mut closed = Vec::new();
        while let Some(after) = clients.join_next().await {
            closed.push(after.unwrap());
        }
        closed
    })
    .await
    .expect("the server closed every slow client");
    assert_eq!(all_closed.len(), SLOW_CLIENTS);
    let earliest = all_closed.iter().min().unwrap();
    assert!(*earliest >= timeout, "closed after only {earliest:?}");
    let health = http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_client_waits_for_a_free_slot() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.header_read_timeout = Duration::from_secs(300);
    config.max_connections = 8;
    let app = TestApp::start_with(config).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(address(&app)).await.unwrap());
    }
    let mut waiting = TcpStream::connect(address(&app)).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: countersign\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // Every slot is held (by the idle eight, and the harness's own pooled connection): the
    // request is not even read. A server without the limit answers within microseconds.
    let early =
        tokio::time::timeout(Duration::from_millis(500), waiting.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "answered past the limit: {answer:?}");
    drop(idle);
    tokio::time::timeout(Duration::from_secs(10), waiting.read_to_end(&mut answer))
        .await
        .expect("answered once slots freed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
