//! Three `countersign serve` processes on one PostgreSQL and one Redis, the way a scaled-out
//! deployment runs: agents submit 1,000 proposals to replicas picked at random, Slack (the
//! sandbox, hosted here) delivers every click through a round-robin in front of the replicas,
//! 200 escalation timers fall due together, one replica is killed with SIGKILL mid-run and Redis
//! is cut and restored. Everything must still happen exactly once where it matters: one decision
//! per proposal, one card per proposal (updated), one escalation per timer, every callback
//! delivered with one webhook-id, no more 429s from Slack than the budget explains, and an audit
//! chain that verifies.
//!
//! The replicas are separate processes on the system clock, so the escalations are awaited in
//! real time (their rung is a few seconds after submission); everything else is awaited as
//! events, never slept for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use countersign::clock::{Clock, SystemClock};
use countersign::config::Secret;
use countersign::registry::Registry;
use countersign::sandbox::{Message, Sandbox, Workspace};
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use crate::common::{REVOPS, TestDb, eventually, readyz, serve_command, spawn_ready};
use crate::fixture::Fixture;
use crate::redis_support::{Proxy, redis_available};

const PROPOSALS: usize = 1_000;
const ESCALATING: usize = 200;
const TEAMS: usize = 50;
const BOT_TOKEN: &str = "xoxb-scale-out-test";
const SIGNING_SECRET: &str = "scale-out-signing-secret";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN: &str = "scale-out-admin-token-long-enough";
/// A thousand decisions are a thousand card updates, and `chat.update` is Tier 3: at Slack's
/// documented 50 a minute they would take twenty minutes (as they would in a real workspace,
/// where the cards lag behind the decisions). This Slack, and countersign's budget with it,
/// allows twenty times the documented tiers; the per-channel posting pace stays Slack's.
const TIER_SCALE: u32 = 20;

fn team(i: usize) -> String {
    format!("t{i:02}")
}

fn channel(i: usize) -> String {
    format!("C0T{i:02}")
}

fn approver(i: usize) -> String {
    format!("U0T{i:02}A")
}

/// Fifty teams, each with its own channel and approver; a rule per team, and for proposals
/// marked `escalate` one with a rung eight seconds after the card.
fn fixture() -> Fixture {
    let fixture = Fixture::new();
    let mut roles = String::from("roles:\n");
    let mut rules = String::from("rules:\n");
    for i in 0..TEAMS {
        roles.push_str(&format!(
            "  {}: {{channel: {}, approvers: {{users: [{}]}}}}\n",
            team(i),
            channel(i),
            approver(i)
        ));
        rules.push_str(&format!(
            "  - name: {t}-escalating\n    when: action.id == \"crm.opportunity.update\" && proposal.params.team == \"{t}\" && proposal.params.escalate == true\n    route: [{t}]\n    sla: 1h\n    escalation:\n      - {{after: 8s, notify: {{usergroup: S0T{i:02}}}}}\n    reason: escalating\n  - name: {t}\n    when: action.id == \"crm.opportunity.update\" && proposal.params.team == \"{t}\"\n    route: [{t}]\n    sla: 1h\n    reason: team review\n",
            t = team(i)
        ));
    }
    fixture.write("manifests/roles.yaml", &roles);
    fixture.write("manifests/oncall.yaml", "schedules: {}\n");
    for entry in std::fs::read_dir(fixture.policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && path
                .file_name()
                .is_some_and(|n| n != "autonomy.yaml" && n != "defaults.yaml")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    fixture.write("policies/scale.yaml", &rules);
    fixture.edit("policies/defaults.yaml", "route: [revops]", "route: [t00]");
    fixture.edit(
        "policies/defaults.yaml",
        "route: [security]",
        "route: [t01]",
    );
    fixture
}

/// Replicas still alive, by port; the round-robin sends each request to one of them at random.
#[derive(Clone, Default)]
struct Upstreams(Arc<Mutex<Vec<u16>>>);

impl Upstreams {
    fn pick(&self) -> Option<u16> {
        self.0.lock().unwrap().choose(&mut rand::rng()).copied()
    }
    fn remove(&self, port: u16) {
        self.0.lock().unwrap().retain(|p| *p != port);
    }
}

/// "Slack" as the replicas see it: the sandbox's Web API, and in front of the replicas a
/// trivial round-robin for Slack's requests to them (`/slack/*`: body and headers go through
/// untouched, signature included), which is where the sandbox delivers clicks.
async fn slack(fixture: &Fixture, upstreams: Upstreams) -> Sandbox {
    async fn forward(
        State((upstreams, http)): State<(Upstreams, reqwest::Client)>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        let Some(port) = upstreams.pick() else {
            return (StatusCode::BAD_GATEWAY, Bytes::new());
        };
        let mut request = http.post(format!("http://127.0.0.1:{port}{}", uri.path()));
        for (name, value) in &headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        match request.body(body).send().await {
            Ok(response) => (
                StatusCode::from_u16(response.status().as_u16()).unwrap(),
                response.bytes().await.unwrap_or_default(),
            ),
            Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let registry = Registry::load(&fixture.manifests(), &fixture.policies()).unwrap();
    let workspace = Workspace::seed(&registry, &fixture.manifests()).unwrap();
    let sandbox = Sandbox::new(
        workspace,
        Secret::new(BOT_TOKEN),
        Secret::new(SIGNING_SECRET),
        url,
        Arc::new(SystemClock) as Arc<dyn Clock>,
    )
    .with_tier_scale(TIER_SCALE);
    let balancer = axum::Router::new()
        .route("/slack/interactions", axum::routing::post(forward))
        .route("/slack/commands", axum::routing::post(forward))
        .with_state((upstreams, reqwest::Client::new()));
    let router: axum::Router = sandbox.routes().merge(balancer);
    tokio::spawn(async move { axum::serve(listener, router).await });
    sandbox
}

/// The agent's callback endpoint: answers 204 and remembers each webhook-id per proposal.
#[derive(Clone, Default)]
struct Callbacks(Arc<Mutex<HashMap<String, HashSet<String>>>>);

async fn callback_receiver(callbacks: Callbacks) -> String {
    async fn receive(
        State(callbacks): State<Callbacks>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let event: Value = serde_json::from_slice(&body).unwrap();
        let id = event["data"]["proposal_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let webhook_id = headers["webhook-id"].to_str().unwrap().to_owned();
        callbacks
            .0
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .insert(webhook_id);
        StatusCode::NO_CONTENT
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(callbacks);
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

struct Replica {
    child: std::process::Child,
    port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

async fn start_replica(
    db: &TestDb,
    fixture: &Fixture,
    sandbox: &Sandbox,
    redis: &str,
    prefix: &str,
) -> Replica {
    let port = free_port();
    let mut command = serve_command(db, port);
    command
        .env("COUNTERSIGN_MANIFESTS", fixture.manifests())
        .env("COUNTERSIGN_POLICIES", fixture.policies())
        .env("COUNTERSIGN_SLACK_API_URL", sandbox.api_url().as_str())
        .env("COUNTERSIGN_SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("COUNTERSIGN_SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("COUNTERSIGN_PUBLIC_URL", "https://countersign.example.com/")
        .env("COUNTERSIGN_REDIS_URL", redis)
        .env("COUNTERSIGN_REDIS_KEY_PREFIX", prefix)
        .env("COUNTERSIGN_ADMIN_TOKEN", ADMIN)
        .env("COUNTERSIGN_DATABASE_MAX_CONNECTIONS", "8")
        .env("COUNTERSIGN_SLACK_TIER_SCALE", TIER_SCALE.to_string())
        .env("REVOPS_CRM_WHSEC", WHSEC);
    let child = spawn_ready(command, port, Duration::from_secs(60)).await;
    Replica { child, port }
}

/// Whether `/readyz` of the replica on `port` answers with `line` in its detail.
async fn readyz_says(http: &reqwest::Client, port: u16, line: &str) -> bool {
    readyz(http, &format!("http://127.0.0.1:{port}"))
        .await
        .is_ok_and(|(_, body)| body.contains(line))
}

fn proposal(i: usize, escalate: bool, callback: &str) -> Value {
    json!({
        "action": "crm.opportunity.update",
        "summary": format!("Scale-out proposal {i}"),
        "target": {"system": "salesforce", "type": "Opportunity", "id": format!("006S{i:05}")},
        "changes": [{"path": "amount", "before": i, "after": i + 1}],
        "params": {"team": team(i % TEAMS), "escalate": escalate},
        "callback_url": callback,
    })
}

/// The proposal a card in the sandbox is for (its buttons carry the id).
fn card_proposal(message: &Message) -> Option<String> {
    let text = message.blocks.to_string();
    let at = text.find("prop_")?;
    Some(text[at..at + 31].to_owned())
}

/// Top-level cards per proposal, across the team channels.
fn cards(sandbox: &Sandbox) -> HashMap<String, Vec<Message>> {
    let mut cards: HashMap<String, Vec<Message>> = HashMap::new();
    for i in 0..TEAMS {
        for message in sandbox.messages(&channel(i), None) {
            if message.thread_ts.is_none()
                && let Some(id) = card_proposal(&message)
            {
                cards.entry(id).or_default().push(message);
            }
        }
    }
    cards
}

async fn audit_counts(db: &TestDb, kind: &str) -> HashMap<String, i64> {
    let pool = sqlx::PgPool::connect(&db.url_string()).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT proposal_id, count(*) FROM audit_events WHERE kind = $1 GROUP BY proposal_id",
    )
    .bind(kind)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter().collect()
}

/// A person clicks Approve on a card; answers what the sandbox saw countersign answer.
async fn click_approve(http: &reqwest::Client, sandbox: &Sandbox, team: usize, ts: &str) -> Value {
    let control = sandbox.api_url().join("control/click").unwrap();
    let answer: Value = match http
        .post(control)
        .json(&json!({"user": approver(team), "channel": channel(team), "ts": ts, "action_id": "approve"}))
        .send()
        .await
    {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_decide_everything_exactly_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    if !redis_available().await {
        return;
    }
    let fixture = fixture();
    let upstreams = Upstreams::default();
    let sandbox = slack(&fixture, upstreams.clone()).await;
    let callbacks = Callbacks::default();
    let callback_url = callback_receiver(callbacks.clone()).await;
    let mut redis = Proxy::start().await;
    let prefix = format!("cs_test_scale_{}:", ulid::Ulid::new());
    // SAFETY: set once, before the replicas that read it start; no other test reads it.
    unsafe { std::env::set_var("REVOPS_CRM_WHSEC", WHSEC) };

    let started = Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(start_replica(&db, &fixture, &sandbox, &redis.url(), &prefix).await);
    }
    *upstreams.0.lock().unwrap() = replicas.iter().map(|r| r.port).collect();
    let http = reqwest::Client::new();
    for replica in &replicas {
        let port = replica.port;
        eventually(Duration::from_secs(20), "redis: ok", || {
            let http = http.clone();
            async move { readyz_says(&http, port, "redis: ok").await }
        })
        .await;
    }

    // 1,000 proposals to random replicas, the escalating ones first so their timers fall due
    // together.
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let mut submitted: Vec<(String, usize)> = Vec::new();
    let work: Vec<usize> = (0..PROPOSALS).collect();
    for batch in work.chunks(50) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in batch {
            let http = http.clone();
            let port = *ports.choose(&mut rand::rng()).unwrap();
            let body = proposal(i, i < ESCALATING, &callback_url);
            tasks.spawn(async move {
                let response = http
                    .post(format!("http://127.0.0.1:{port}/v1/proposals"))
                    .bearer_auth(REVOPS)
                    .header("idempotency-key", format!("scale-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let created: Value = response.json().await.unwrap();
                (created["id"].as_str().unwrap().to_owned(), i)
            });
        }
        while let Some(done) = tasks.join_next().await {
            submitted.push(done.unwrap());
        }
    }
    let team_of: HashMap<String, usize> = submitted
        .iter()
        .map(|(id, i)| (id.clone(), i % TEAMS))
        .collect();
    let escalating: HashSet<String> = submitted
        .iter()
        .filter(|(_, i)| *i < ESCALATING)
        .map(|(id, _)| id.clone())
        .collect();

    // Every card posted, by whichever replica claimed it.
    eventually(Duration::from_secs(240), "every card posted", || {
        let n = cards(&sandbox).len();
        async move { n == PROPOSALS }
    })
    .await;
    eprintln!("scale-out: cards posted at {:?}", started.elapsed());
    // The escalations fall due eight seconds after their cards, all in the same few seconds.
    eventually(Duration::from_secs(120), "every escalation fired", || {
        let db = &db;
        async move { audit_counts(db, "proposal.escalated").await.len() == ESCALATING }
    })
    .await;

    // People click Approve; the round-robin spreads the clicks over the replicas. A third of the
    // way in one replica is killed; two thirds in, Redis goes away.
    let posted: Vec<(String, usize, String)> = cards(&sandbox)
        .into_iter()
        .map(|(id, messages)| {
            let team = team_of[&id];
            (id, team, messages[0].ts.clone())
        })
        .collect();
    let mut killed = None;
    let chunks = posted.len().div_ceil(20);
    let mut failed_clicks = 0;
    for (n, chunk) in posted.chunks(20).enumerate() {
        if n == 2 * chunks / 3 {
            redis.cut();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (_, team, ts) in chunk.iter().cloned() {
            let (http, sandbox) = (http.clone(), sandbox.clone());
            tasks.spawn(async move { click_approve(&http, &sandbox, team, &ts).await });
        }
        if n == chunks / 3 {
            // SIGKILL while this chunk's clicks are in flight: no shutdown, leases left held.
            let mut victim = replicas.remove(1);
            victim.child.kill().unwrap();
            upstreams.remove(victim.port);
            victim.child.wait().unwrap();
            killed = Some(victim.port);
        }
        while let Some(answer) = tasks.join_next().await {
            if answer.unwrap()["status"] != 200 {
                failed_clicks += 1;
            }
        }
    }
    eprintln!("scale-out: clicks done at {:?}", started.elapsed());
    for replica in &replicas {
        let port = replica.port;
        eventually(Duration::from_secs(20), "redis: degraded", || {
            let http = http.clone();
            async move { readyz_says(&http, port, "redis: degraded").await }
        })
        .await;
    }
    redis.restore().await;
    for replica in &replicas {
        let port = replica.port;
        eventually(Duration::from_secs(30), "redis: ok again", || {
            let http = http.clone();
            async move { readyz_says(&http, port, "redis: ok").await }
        })
        .await;
    }

    // A click that reached the killed replica got an error in Slack; the person clicks again.
    let status_of = |id: String| {
        let http = http.clone();
        let port = replicas[0].port;
        async move {
            // A server error is reported and asked again (a person's browser would retry);
            // anything else must be the proposal.
            for _ in 0..5 {
                let response = http
                    .get(format!("http://127.0.0.1:{port}/v1/proposals/{id}"))
                    .bearer_auth(REVOPS)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let view: Value = response.json().await.unwrap();
                if status.is_server_error() {
                    eprintln!("scale-out: GET {id} answered {status}: {view}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                return view["status"]
                    .as_str()
                    .unwrap_or_else(|| panic!("GET {id}: {view}"))
                    .to_owned();
            }
            panic!("GET {id} kept failing");
        }
    };
    let mut reclicked = 0;
    for (id, team, ts) in &posted {
        if status_of(id.clone()).await == "pending" {
            reclicked += 1;
            let answer = click_approve(&http, &sandbox, *team, ts).await;
            assert_eq!(answer["status"], 200, "{id}: {answer}");
        }
    }
    for (id, _, _) in &posted {
        assert_eq!(status_of(id.clone()).await, "approved", "{id}");
    }

    // Exactly once: one decision, one card, one escalation per escalating proposal.
    let decided = audit_counts(&db, "proposal.decided").await;
    assert_eq!(decided.len(), PROPOSALS);
    assert!(
        decided.values().all(|n| *n == 1),
        "a proposal decided twice"
    );
    let escalated = audit_counts(&db, "proposal.escalated").await;
    assert_eq!(
        escalated.keys().cloned().collect::<HashSet<_>>(),
        escalating,
        "escalations fired for exactly the escalating proposals"
    );
    assert!(
        escalated.values().all(|n| *n == 1),
        "an escalation fired twice"
    );
    let all_cards = cards(&sandbox);
    assert_eq!(all_cards.len(), PROPOSALS);
    assert!(
        all_cards.values().all(|copies| copies.len() == 1),
        "a card posted twice"
    );
    // Every card updated to its decision, and one escalation reply in each escalating thread
    // (the jobs the killed replica held come back when their 30 s lease ends).
    let escalation_replies = |id: &String| {
        let card = &all_cards[id][0];
        sandbox
            .messages(&channel(team_of[id]), None)
            .into_iter()
            .filter(|m| m.thread_ts.as_deref() == Some(&card.ts) && m.text.contains("Escalation 1"))
            .count()
    };
    let unfinished = || {
        let cards = cards(&sandbox);
        let mut left: Vec<String> = escalating
            .iter()
            .filter(|id| escalation_replies(id) == 0)
            .map(|id| format!("{id}: no escalation reply"))
            .collect();
        left.extend(cards.iter().filter_map(|(id, copies)| {
            let live = copies[0]
                .blocks
                .to_string()
                .contains("\"action_id\":\"approve\"");
            (copies[0].edited.is_none() || live).then(|| format!("{id}: card not updated"))
        }));
        left
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = unfinished();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let id = left[0].split(':').next().unwrap_or_default();
            let ts = all_cards
                .get(id)
                .map(|c| c[0].ts.clone())
                .unwrap_or_default();
            let calls: Vec<String> = sandbox
                .calls()
                .iter()
                .filter(|c| {
                    let args = c.args.to_string();
                    args.contains(id) || (!ts.is_empty() && args.contains(&ts))
                })
                .map(|c| format!("{} {} {}", c.method, c.status, c.response))
                .collect();
            panic!(
                "{} left, e.g. {:?}; Slack calls naming the first: {calls:#?}",
                left.len(),
                &left[..left.len().min(10)]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &escalating {
        assert_eq!(escalation_replies(id), 1, "escalation replies for {id}");
    }

    eprintln!("scale-out: cards updated at {:?}", started.elapsed());
    // Every callback delivered, retried (if at all) under one webhook-id.
    eventually(Duration::from_secs(120), "every callback delivered", || {
        let n = callbacks.0.lock().unwrap().len();
        async move { n == PROPOSALS }
    })
    .await;
    assert!(
        callbacks
            .0
            .lock()
            .unwrap()
            .values()
            .all(|ids| ids.len() == 1),
        "one webhook-id per proposal's decision"
    );

    // Slack's 429s: the shared budget keeps replicas under the channel limit; only while Redis
    // was away could the replicas' own buckets add up past it (burst and one a second each).
    let calls = sandbox.calls();
    let limited = calls.iter().filter(|c| c.status == 429).count();
    let posts = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .count();
    assert!(
        limited <= TEAMS * 2,
        "{limited} of {posts} posts answered 429: more than the budget explains"
    );

    // The audit chain verifies.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "verify"])
        .env("COUNTERSIGN_DATABASE_URL", db.url_string())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    eprintln!(
        "scale-out: {PROPOSALS} proposals in {:?}; killed replica on port {killed:?}; {failed_clicks} clicks failed, {reclicked} repeated; {limited} 429s of {posts} posts",
        started.elapsed()
    );
}
