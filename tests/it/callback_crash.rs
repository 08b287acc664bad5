//! A crash between a decision and its callback's delivery loses nothing.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::callbacks::{ADMIN, SECRET, proposal_calling, set_secret};
use crate::common::{REVOPS, TestDb, serve_command, spawn_ready};
use crate::receiver::{Receiver, Reply};

/// The real binary, killed with SIGKILL while a callback is in flight, delivers it after a
/// restart. Its lease is twice the callback timeout (1 s here), so the restarted process takes
/// the delivery over about two seconds later: the one wall-clock wait in these tests.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Server {
    async fn start(db: &TestDb, port: u16) -> Self {
        set_secret();
        let mut command = serve_command(db, port);
        command
            .env("COUNTERSIGN_MANIFESTS", crate::common::manifests_dir())
            .env("COUNTERSIGN_POLICIES", crate::common::policies_dir())
            .env("COUNTERSIGN_CALLBACK_TIMEOUT", "1s")
            .env("COUNTERSIGN_ADMIN_TOKEN", ADMIN)
            .env("REVOPS_CRM_WHSEC", SECRET);
        let child = spawn_ready(command, port, Duration::from_secs(30)).await;
        let base = format!("http://127.0.0.1:{port}");
        Server { child, base }
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL: no shutdown, no flushing
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn a_crash_between_decision_and_delivery_loses_no_callback(db: TestDb) {
    let mut receiver = Receiver::start().await;
    // The first attempt hangs until the server is gone.
    receiver.script([Reply::status(204).after(Duration::from_secs(30))]);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let server = Server::start(&db, port).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/v1/proposals", server.base))
        .bearer_auth(REVOPS)
        .json(&proposal_calling(&receiver.url("/hook")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let cancelled = http
        .post(format!("{}/v1/proposals/{id}/cancel", server.base))
        .bearer_auth(REVOPS)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let in_flight = receiver.next().await;
    server.kill();

    let server = Server::start(&db, port).await;
    let redelivered = receiver.next().await;
    assert_eq!(
        redelivered.header("webhook-id"),
        in_flight.header("webhook-id")
    );
    assert_eq!(redelivered.body, in_flight.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body: Value = http
            .get(format!(
                "{}/v1/admin/proposals/{id}/deliveries",
                server.base
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["deliveries"][0]["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {body:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server);
}
both_backends!(a_crash_between_decision_and_delivery_loses_no_callback);
