//! The backlog: N proposals that each need a person, submitted through the API as an agent
//! would (the README's discount example routes to finance), concurrently, each with its own
//! Idempotency-Key. Their ids come from the answers, so nothing reads the database behind the
//! server's back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;

/// The proposal (benches/ingest.lua's): a 15% discount, which the shipped policies route to
/// finance with one approval needed.
const BODY: &str = r#"{"action":"crm.opportunity.update","summary":"Apply 15% discount to Acme renewal","rationale":"Customer asked on the renewal call; within the Q4 playbook.","target":{"system":"salesforce","type":"Opportunity","id":"006Acme0001","url":"https://acme.my.salesforce.com/006Acme0001"},"changes":[{"path":"discount_percent","before":5,"after":15},{"path":"amount","before":45000,"after":40500}],"params":{"discount_percent":15,"amount":40500,"currency":"USD"},"evidence":[{"label":"Call transcript","url":"https://gong.example/call/42","excerpt":"If you can do 15% we sign today."}],"data_classes":["financial"],"requested_by":"jane@acme-sales.example","expires_in":"8h","metadata":{"trace_id":"abc123"}}"#;

pub struct Seeded {
    /// The pending proposals' ids, in submission order.
    pub ids: Vec<String>,
    /// Answers other than `201` with a pending proposal, and requests that failed.
    pub failed: usize,
    pub seconds: f64,
}

/// Submits `count` proposals over `connections` concurrent connections.
pub async fn seed(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    count: usize,
    connections: usize,
) -> Seeded {
    let next = Arc::new(AtomicUsize::new(0));
    // Keys unique to this run, so a rerun against the same database creates new proposals.
    let run = format!("{:08x}", rand::random::<u32>());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (http, next, run) = (http.clone(), next.clone(), run.clone());
        let (url, token) = (format!("{base}/v1/proposals"), token.to_owned());
        workers.spawn(async move {
            let mut created = Vec::new();
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return (created, failed);
                }
                match submit(&http, &url, &token, &format!("bench-clicks-{run}-{i}")).await {
                    Ok(id) => created.push((i, id)),
                    Err(error) => {
                        // A few say what is wrong; thousands would bury it.
                        if failed < 3 {
                            eprintln!("clicks seed: {error}");
                        }
                        failed += 1;
                    }
                }
            }
        });
    }
    let mut ids = Vec::with_capacity(count);
    let mut failed = 0;
    while let Some(done) = workers.join_next().await {
        let (created, failures) = done.expect("seeding task");
        ids.extend(created);
        failed += failures;
    }
    ids.sort_unstable();
    Seeded {
        ids: ids.into_iter().map(|(_, id)| id).collect(),
        failed,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// One proposal; its id if it was created and waits for a person.
async fn submit(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
) -> Result<String, String> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(BODY)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    match body["id"].as_str() {
        Some(id) if status == 201 && body["status"] == "pending" => Ok(id.to_owned()),
        _ => Err(format!("{status} {body}")),
    }
}
