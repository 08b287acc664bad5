//! Test harness: databases, the app, and helpers.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use countersign::clock::{Clock, ManualClock};
use countersign::config::{Config, DatabaseUrl, Secret};
use countersign::store::{self, PoolSettings, Store};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Tokens of the example agents in `manifests/agents/`.
pub const REVOPS: &str = "cs_demo_revops_crm_d3m0t0k3n";
pub const BILLING: &str = "cs_demo_billing_d3m0t0k3n";
/// outbound-email's manifest: 30 a minute, 5 at once; 20 refusals within a minute trip its
/// breaker.
pub const OUTBOUND: &str = "cs_demo_outbound_email_d3m0t0k3n";

/// Generates one test per backend from an `async fn(TestDb)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::TestDb::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::common::TestDb::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    };
}

/// A fresh, empty database that disappears with the value.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("countersign.db");
        TestDb::Sqlite { _dir: dir, path }
    }

    /// A new database on the server at `COUNTERSIGN_TEST_POSTGRES_URL`, or `None` (skip) when it
    /// is unset outside CI.
    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("COUNTERSIGN_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but COUNTERSIGN_TEST_POSTGRES_URL is unset: PostgreSQL tests must run in CI"
            );
            eprintln!("skipping: COUNTERSIGN_TEST_POSTGRES_URL is unset");
            return None;
        };
        let name = format!("cs_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at COUNTERSIGN_TEST_POSTGRES_URL unreachable: {e}")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let mut url = url::Url::parse(&admin_url).expect("COUNTERSIGN_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Some(TestDb::Postgres {
            admin_url,
            name,
            url: url.to_string(),
        })
    }

    pub fn database_url(&self) -> DatabaseUrl {
        match self {
            TestDb::Sqlite { path, .. } => DatabaseUrl::Sqlite(path.clone()),
            TestDb::Postgres { url, .. } => DatabaseUrl::Postgres(Secret::new(url.clone())),
        }
    }

    /// The URL as `COUNTERSIGN_DATABASE_URL` takes it (for the CLI).
    pub fn url_string(&self) -> String {
        match self {
            TestDb::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    /// A separate connection pool to the same database, migrated: another "replica".
    pub async fn store(&self) -> Arc<dyn Store> {
        let store = store::open(&self.database_url(), &PoolSettings { max_connections: 4 })
            .await
            .expect("open store");
        store.migrate().await.expect("migrate");
        store
    }

    /// Runs raw SQL as an operator with direct database access would (to tamper, in tests).
    pub async fn execute(&self, sql: &str) {
        self.try_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of each row `sql` returns, as text (`CAST(… AS TEXT)` it): a look at
    /// stored state no store method exposes, written the same for both backends.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let rows: Result<Vec<(Option<String>,)>, sqlx::Error> = match self {
            TestDb::Sqlite { path, .. } => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&pool).await;
                pool.close().await;
                rows
            }
            TestDb::Postgres { url, .. } => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&pool).await;
                pool.close().await;
                rows
            }
        };
        rows.unwrap()
            .into_iter()
            .map(|(text,)| text.unwrap_or_default())
            .collect()
    }

    pub async fn try_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            TestDb::Sqlite { path, .. } => {
                let pool =
                    sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;
                let result = sqlx::raw_sql(sql).execute(&pool).await;
                pool.close().await;
                result.map(drop)
            }
            TestDb::Postgres { url, .. } => {
                let pool = sqlx::PgPool::connect(url).await?;
                let result = sqlx::raw_sql(sql).execute(&pool).await;
                pool.close().await;
                result.map(drop)
            }
        }
    }

    /// The audit events about one proposal, in order.
    pub async fn audit_of(&self, proposal_id: &str) -> Vec<countersign::audit::AuditEvent> {
        let filter = countersign::audit::AuditFilter {
            since: None,
            proposal_id: Some(proposal_id.to_owned()),
        };
        self.store()
            .await
            .audit_page(&filter, 0, 1000)
            .await
            .unwrap()
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
                        admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// The repository's example manifests.
pub fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// The repository's policies.
pub fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::defaults();
    config.database_url = db.database_url();
    config.database_max_connections = 4;
    config.manifests = manifests_dir();
    config.policies = policies_dir();
    config
}

pub fn start_time() -> DateTime<Utc> {
    countersign::clock::parse_timestamp("2026-11-21T09:00:00Z").unwrap()
}

/// A running countersign.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(test_config(db)).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_at(config, start_time()).await
    }

    /// Starts with the app's clock at `now` (a restart later in time).
    pub async fn start_at(config: Config, now: DateTime<Utc>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(config, listener, now).await
    }

    /// Starts on a listener the test bound (and set the configuration up for, as `serve --demo`
    /// does), with the app's clock at `now`.
    pub async fn start_on(
        mut config: Config,
        listener: tokio::net::TcpListener,
        now: DateTime<Utc>,
    ) -> Self {
        let address = listener.local_addr().unwrap();
        config.listen = address;
        config.public_url = url::Url::parse(&format!("http://{address}")).unwrap();
        let clock = ManualClock::new(now);
        let (shutdown, signal) = oneshot::channel::<()>();
        let server = tokio::spawn(countersign::app::run_with_clock(
            config,
            listener,
            async move {
                let _ = signal.await;
            },
            Arc::new(clock.clone()) as Arc<dyn Clock>,
        ));
        let mut app = TestApp {
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            clock,
            shutdown: Some(shutdown),
            server: Some(server),
        };
        app.wait_ready().await;
        app
    }

    /// The listener is bound before `run` starts, so a first request simply waits in the
    /// accept queue until the server is up: no polling needed.
    async fn wait_ready(&mut self) {
        match readyz(&self.http, &self.base).await {
            Ok((status, _)) => assert_eq!(status, 200),
            // The listener was dropped: `run` failed; say why.
            Err(error) => {
                let ended = self.server.take().unwrap().await.unwrap();
                panic!("app did not start ({error}): {ended:?}");
            }
        }
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `/readyz`: its status and body.
    pub async fn readyz(&self) -> (u16, String) {
        readyz(&self.http, &self.base).await.expect("GET /readyz")
    }

    /// `/metrics`, the Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// One sample of `/metrics` (see [`metric_value`]).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics().await, name)
    }

    pub async fn submit(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/proposals"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Submits `body` and returns the created proposal, asserting 201.
    pub async fn create(&self, token: &str, body: &Value) -> Value {
        let response = self.submit(token, body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn get(&self, token: &str, id: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/v1/proposals/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, token: &str, path: &str, body: Option<&Value>) -> reqwest::Response {
        let request = self.http.post(self.url(path)).bearer_auth(token);
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        request.send().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A realistic proposal: a discount on a CRM opportunity.
pub fn discount_proposal() -> Value {
    json!({
        "action": "crm.opportunity.update",
        "summary": "Apply 15% discount to Acme renewal",
        "rationale": "Customer asked on the renewal call; within the Q4 playbook.",
        "target": {"system": "salesforce", "type": "Opportunity", "id": "006Acme0001", "url": "https://acme.my.salesforce.com/006Acme0001"},
        "changes": [
            {"path": "discount_percent", "before": 5, "after": 15},
            {"path": "amount", "before": 45000, "after": 40500}
        ],
        "params": {"discount_percent": 15, "amount": 40500, "currency": "USD"},
        "evidence": [{"label": "Call transcript", "url": "https://gong.example/call/42", "excerpt": "If you can do 15% we sign today."}],
        "data_classes": ["financial"],
        "requested_by": "jane@acme-sales.example",
        "callback_url": "https://agents.internal.example/revops-crm/countersign",
        "expires_in": "8h",
        "metadata": {"trace_id": "abc123"}
    })
}

/// An outbound-email proposal (auto-approved), to spend its rate on.
pub fn email_draft() -> Value {
    json!({"action": "email.draft", "summary": "Draft a renewal note to Acme"})
}

/// A problem+json response's body, after checking its content type and status.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:countersign:problem:"),
        "{body}"
    );
    assert!(body["title"].is_string(), "{body}");
    body
}

/// Polls `check` (cheap reads of state) until it holds, failing with `what` after `within`.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `/readyz` of the server at `base`: its status and body, or the error while nothing answers.
pub async fn readyz(http: &reqwest::Client, base: &str) -> reqwest::Result<(u16, String)> {
    let response = http.get(format!("{base}/readyz")).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// `countersign serve` in a process of its own, on 127.0.0.1:`port` and `db`, with what every
/// such test wants: callbacks to local receivers allowed, no digest, quiet logs. The caller adds
/// its settings and hands it to [`spawn_ready`].
pub fn serve_command(db: &TestDb, port: u16) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    command
        .arg("serve")
        .env("COUNTERSIGN_DATABASE_URL", db.url_string())
        .env("COUNTERSIGN_LISTEN", format!("127.0.0.1:{port}"))
        .env("COUNTERSIGN_CALLBACK_ALLOWLIST", "127.0.0.1")
        .env("COUNTERSIGN_REPORT_DIGEST", "off")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    command
}

/// Starts a [`serve_command`] and waits up to `within` for its `/readyz` on `port`.
pub async fn spawn_ready(
    mut command: std::process::Command,
    port: u16,
    within: std::time::Duration,
) -> std::process::Child {
    let child = command.spawn().expect("start countersign");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_ready(&reqwest::Client::new(), &base, within).await;
    child
}

/// Polls `/readyz` at `base` until it answers 200: a server in another process, where nothing
/// else says when it is up.
pub async fn wait_until_ready(http: &reqwest::Client, base: &str, within: std::time::Duration) {
    eventually(within, &format!("{base} to be ready"), || async {
        matches!(readyz(http, base).await, Ok((200, _)))
    })
    .await;
}

/// The value of the sample `name` in a Prometheus text, `name` written with its labels as they
/// are exposed (`countersign_redis_degraded{prefix="…"}`).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
