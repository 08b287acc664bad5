//! Wiring: configuration in, a running server out. `main` and the integration tests both start
//! countersign through [`run`], so the tests exercise exactly what ships.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::callbacks::secrets::SecretSource;
use crate::clock::{Clock, SystemClock};
use crate::cluster::{RedisLink, SeenKeys, Wakeups};
use crate::config::{Config, Secret};
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::limits::{RateLimiter, SharedLimiter};
use crate::links::LinkSigner;
use crate::registry::{Registry, SharedRegistry};
use crate::sandbox::{Sandbox, Workspace};
use crate::slack::{SlackApi, SlackContext};
use crate::store::{self, PoolSettings, Store};
use crate::workers::SlackOutbox;

/// How long idempotency keys are kept (the API promises at least 24 hours).
pub const IDEMPOTENCY_RETENTION: chrono::Duration = chrono::Duration::hours(25);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Serves until `shutdown` resolves, then stops accepting connections, lets in-flight requests
/// finish, and closes the database.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`run`] with an injected clock (tests drive time by hand). A little over 80 lines for a
/// reason: start-up in its order, each step a named function, then the state every transport
/// shares (one literal) and shutdown in the reverse order; split further, the order would be
/// harder to see.
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    // slack-morphism's TLS stack needs a process-wide provider; another one may already be set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The recorder first: metrics set while wiring up (Redis's degraded gauge) must not be lost.
    let metrics = http::ops_metrics_handle();
    let registry = Registry::load(&config.manifests, &config.policies)
        .context("invalid manifest or policy")?;
    let secrets = secret_source(&config);
    warn_about(&registry, &secrets);
    let address = listener.local_addr()?;
    let (mut slack, sandbox) = connect_slack(&config, &registry, own_url(address), clock.clone())?;
    slack.admins = config.slack_admins.clone();
    let registry = SharedRegistry::new(registry);
    let redis = connect_redis(&config)?;
    let slack = share_slack_limits(slack, &config, clock.clone(), redis.as_ref());

    let store = open_store(&config).await?;
    let wakeups = redis.clone().map(Wakeups::shared).unwrap_or_default();
    let engine = Engine::start(store.clone(), clock.clone()).with_wakeups(wakeups.clone());
    engine
        .refresh_controls()
        .await
        .context("cannot read agent controls")?;
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    if config.secret_key.is_none() {
        warn_without_secret_key(&registry);
    }
    let links = LinkSigner::new(config.secret_key.as_ref());
    let report_work = Arc::new(tokio::sync::Notify::new());
    let workers = Workers::new(&config, &store, &engine, &slack, &registry, &links, secrets);
    // The durable loops run where the role says (`serve --role`): an API-only replica leaves
    // them to the worker replicas, which pick up every row the API wrote.
    let workers = if config.serve_role.runs_workers() {
        workers.spawn(&engine, &store, clock, &report_work, &workers_stopped)
    } else {
        RunningWorkers::default()
    };
    // Every role listens: API replicas end long-polls, worker replicas start on queued work.
    let wakeups =
        tokio::spawn(wakeups.run(Arc::new(engine.clone()), stopped(workers_stopped.clone())));
    let controls = tokio::spawn(refresh_controls(engine.clone()));
    let reload = tokio::spawn(reload_on_sighup(registry.clone(), config.clone()));
    let state = AppState {
        engine,
        registry,
        public_url: config.public_url.clone(),
        metrics,
        slack,
        links,
        admin_token: config.admin_token.clone(),
        limiter: Arc::new(match &redis {
            Some(redis) => RateLimiter::shared(SharedLimiter::new(redis.clone())),
            None => RateLimiter::local(),
        }),
        reports: report_work,
        seen: Arc::new(SeenKeys::new(redis.clone())),
        redis,
    };

    let (stop_socket, socket_stopped) = tokio::sync::watch::channel(false);
    let socket = start_socket_mode(&config, &state, socket_stopped);
    tracing::info!(%address, config = %config.describe(), "countersign listening");
    if let Some(sandbox) = &sandbox {
        announce_sandbox(sandbox, address);
    }
    let router = if config.serve_role.serves_api() {
        http::router(state, sandbox.as_ref())
    } else {
        http::ops_router(state, sandbox.as_ref())
    };
    tracing::info!(role = ?config.serve_role, "serving");
    let shutdown = async move {
        shutdown.await;
        if let Some(sandbox) = sandbox {
            sandbox.close();
        }
        // Like the listener, the socket takes nothing new; what it carries is acknowledged.
        let _ = stop_socket.send(true);
    };
    http::serve(listener, router, http::ServeLimits::from(&config), shutdown).await;
    let _ = stop_workers.send(true);
    if let Some(socket) = socket
        && tokio::time::timeout(Duration::from_secs(10), socket)
            .await
            .is_err()
    {
        tracing::warn!("Socket Mode did not stop within 10 s");
    }
    workers.stop().await;
    controls.abort();
    reload.abort();
    wakeups.abort();
    store.close().await;
    tracing::info!("countersign stopped");
    Ok(())
}

/// The Redis the replicas share, checked against the private CA when one is configured.
fn connect_redis(config: &Config) -> anyhow::Result<Option<RedisLink>> {
    let redis = match (&config.redis_url, &config.redis_ca) {
        (Some(url), None) => {
            Some(RedisLink::new(url.expose(), &config.redis_key_prefix).context("redis_url")?)
        }
        (Some(url), Some(ca)) => Some(
            RedisLink::with_ca(url.expose(), &config.redis_key_prefix, &ca.pem)
                .context("redis_url with redis_ca_file")?,
        ),
        (None, _) => None,
    };
    Ok(redis)
}

/// Slack's rate budget and its user directory cache, shared through Redis when there is one so
/// that replicas together stay within Slack's limits.
fn share_slack_limits(
    mut slack: SlackContext,
    config: &Config,
    clock: Arc<dyn Clock>,
    redis: Option<&RedisLink>,
) -> SlackContext {
    slack = slack.with_budget(
        crate::slack::SlackBudget::new(clock, redis.cloned())
            .with_tier_scale(config.slack_tier_scale),
    );
    if let Some(redis) = redis {
        slack.directory = slack.directory.clone().with_shared_cache(redis.clone());
    }
    slack
}

/// Without a secret key, links are signed with a key made for this run and TOTP secrets cannot
/// be kept: say so at start, naming the rules that cannot be approved.
fn warn_without_secret_key(registry: &SharedRegistry) {
    tracing::warn!(
        "secret_key is not set: links on cards (the full diff) stop working when countersign restarts"
    );
    let totp_rules: Vec<String> = registry
        .current()
        .policies
        .rules()
        .iter()
        .filter(|rule| rule.requirement.step_up == crate::domain::StepUp::Totp)
        .map(|rule| rule.name.clone())
        .collect();
    if !totp_rules.is_empty() {
        tracing::warn!(rules = %totp_rules.join(", "), "secret_key is not set, so TOTP step-up is off: proposals these rules route cannot be approved until it is set");
    }
}

/// The durable loops: built on every replica, spawned only where the role runs workers.
struct Workers {
    outbox: SlackOutbox,
    sla: crate::workers::SlaWorker,
    reports: crate::workers::ReportWorker,
    callbacks: crate::workers::CallbackWorker,
}

/// The spawned loops, each named for its log line, and the idempotency-key purge.
#[derive(Default)]
struct RunningWorkers {
    loops: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    purge: Option<tokio::task::JoinHandle<()>>,
}

impl Workers {
    fn new(
        config: &Config,
        store: &Arc<dyn Store>,
        engine: &Engine,
        slack: &SlackContext,
        registry: &SharedRegistry,
        links: &LinkSigner,
        secrets: SecretSource,
    ) -> Self {
        // The engine runs on the same clock as everything else.
        let clock = engine.clock();
        let outbox = SlackOutbox {
            store: store.clone(),
            api: slack.api.clone(),
            directory: slack.directory.clone(),
            registry: registry.clone(),
            clock: clock.clone(),
            links: links.clone(),
            public_url: config.public_url.clone(),
            bookings: Default::default(),
            lease: crate::workers::Lease::default(),
        };
        let sla = crate::workers::SlaWorker {
            engine: engine.clone(),
            registry: registry.clone(),
            clock: clock.clone(),
        };
        let reports = crate::workers::ReportWorker {
            engine: engine.clone(),
            api: slack.api.clone(),
            registry: registry.clone(),
            clock: clock.clone(),
            digest: config.report_digest,
            scheduled: Default::default(),
        };
        let callbacks = crate::workers::CallbackWorker::new(
            engine.clone(),
            registry.clone(),
            clock.clone(),
            crate::callbacks::ssrf::Guard::new(config.callback_allowlist.clone()),
            config.callback_timeout,
        )
        .with_secret_source(secrets);
        Self {
            outbox,
            sla,
            reports,
            callbacks,
        }
    }

    /// Each loop runs until `stop` turns true; the purge until it is aborted.
    fn spawn(
        self,
        engine: &Engine,
        store: &Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        report_work: &Arc<tokio::sync::Notify>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> RunningWorkers {
        let stop = || stopped(stop.clone());
        let loops = vec![
            (
                "slack outbox",
                tokio::spawn(self.outbox.run(engine.slack_work(), stop())),
            ),
            ("sla", tokio::spawn(self.sla.run(stop()))),
            (
                "report",
                tokio::spawn(self.reports.run(report_work.clone(), stop())),
            ),
            (
                "callback",
                tokio::spawn(self.callbacks.run(engine.callback_work(), stop())),
            ),
        ];
        let purge = Some(tokio::spawn(purge_idempotency_keys(store.clone(), clock)));
        RunningWorkers { loops, purge }
    }
}

impl RunningWorkers {
    /// Waits up to 10 s for each loop to finish what it holds (its stop flag already sent),
    /// then ends the purge, which holds nothing.
    async fn stop(self) {
        for (name, worker) in self.loops {
            if tokio::time::timeout(Duration::from_secs(10), worker)
                .await
                .is_err()
            {
                tracing::warn!("{name} worker did not stop within 10 s");
            }
        }
        if let Some(purge) = self.purge {
            purge.abort();
        }
    }
}

/// Socket Mode: clicks and commands come over a connection this process opens. Where the
/// Slack endpoints are served, that is (a worker replica serves none).
fn start_socket_mode(
    config: &Config,
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    match &config.slack_app_token {
        Some(app_token) if config.serve_role.serves_api() => {
            Some(tokio::spawn(crate::slack::socket::run(
                axum::extract::FromRef::from_ref(state),
                app_token.clone(),
                stopped(stop),
            )))
        }
        Some(_) => {
            tracing::info!("worker replica: Socket Mode connections are the API replicas' to open");
            None
        }
        None => None,
    }
}

fn announce_sandbox(sandbox: &Sandbox, address: std::net::SocketAddr) {
    tracing::info!(
        url = %sandbox.page_url(),
        "no Slack token configured: the built-in Slack sandbox is on; open it in a browser"
    );
    // In the sandbox anyone who reaches the port can click as anyone: fine on a laptop,
    // not on a network.
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "the Slack sandbox is reachable beyond this machine: anyone who can reach it can approve as any sandbox user; configure a Slack token, or listen on 127.0.0.1");
    }
}

/// Other replicas' pauses and resumes reach this one within this long.
const CONTROLS_REFRESH: Duration = Duration::from_secs(2);

async fn refresh_controls(engine: Engine) {
    loop {
        tokio::time::sleep(CONTROLS_REFRESH).await;
        if let Err(error) = engine.refresh_controls().await {
            tracing::warn!(%error, "cannot refresh agent controls; keeping the last known");
        }
    }
}

/// Resolves when the watched flag turns true (or its sender is gone).
async fn stopped(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// The URL this process answers on, for itself (the sandbox delivers clicks here, and
/// `countersign healthcheck` asks here).
pub fn own_url(address: std::net::SocketAddr) -> url::Url {
    let host = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    url::Url::parse(&format!("http://{host}:{}/", address.port()))
        .expect("host and port make a URL")
}

/// Slack itself when a bot token is configured; otherwise the built-in sandbox, served by this
/// process, with a token and signing secret made up for this run (or the configured secret).
fn connect_slack(
    config: &Config,
    registry: &Registry,
    own_url: url::Url,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(SlackContext, Option<Sandbox>)> {
    // A bot token comes with a signing secret, an app token (Socket Mode), or both: the
    // configuration has checked.
    if let Some(token) = &config.slack_bot_token {
        let api = SlackApi::new(&config.slack_api_url, token);
        let signing_secret = config.slack_signing_secret.clone();
        return Ok((
            SlackContext::new(
                api,
                &config.slack_api_url,
                signing_secret,
                config.secret_key.as_ref(),
            ),
            None,
        ));
    }
    let workspace =
        Workspace::seed(registry, &config.manifests).context("invalid sandbox workspace")?;
    let token = Secret::new(format!(
        "xoxb-sandbox-{}",
        hex::encode(rand::random::<[u8; 16]>())
    ));
    let signing_secret = config
        .slack_signing_secret
        .clone()
        .unwrap_or_else(|| Secret::new(hex::encode(rand::random::<[u8; 32]>())));
    let mut sandbox = Sandbox::new(
        workspace,
        token.clone(),
        signing_secret.clone(),
        own_url,
        clock,
    );
    if let Some(demo) = &config.demo {
        sandbox = sandbox.with_inboxes(inboxes(demo, registry, &secret_source(config)));
    }
    // Beside a SQLite database, the sandbox keeps its messages too: after a restart the cards
    // are where they were (the database remembers them as posted).
    if let crate::config::DatabaseUrl::Sqlite(database) = &config.database_url {
        sandbox.persist_to(database.with_file_name("sandbox-history.json"));
    }
    let api = SlackApi::new(&sandbox.api_url(), &token);
    Ok((
        SlackContext::new(
            api,
            &sandbox.api_url(),
            Some(signing_secret),
            config.secret_key.as_ref(),
        ),
        Some(sandbox),
    ))
}

/// The demo agents' inboxes, each with the secrets its agent's callbacks are signed with.
fn inboxes(
    demo: &crate::demo::DemoSettings,
    registry: &Registry,
    secrets: &SecretSource,
) -> Vec<crate::sandbox::Inbox> {
    demo.inboxes
        .iter()
        .map(|agent| {
            let var = registry
                .agents
                .get(agent)
                .and_then(|a| a.callback_secret_env.as_deref());
            crate::sandbox::Inbox {
                agent: agent.clone(),
                secrets: var
                    .and_then(|var| secrets.secrets(var).ok())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Where the callback worker (and the demo's inboxes) read agents' signing secrets: what
/// `serve --demo` made for the variables the environment left unset, else the environment.
fn secret_source(config: &Config) -> SecretSource {
    SecretSource::new(
        config
            .demo
            .as_ref()
            .map(|demo| demo.callback_secrets.clone())
            .unwrap_or_default(),
    )
}

fn warn_about(registry: &Registry, secrets: &SecretSource) {
    let agents = &registry.agents;
    if agents.agents().is_empty() {
        tracing::warn!(
            "no agents declared: every API request will be refused (mint one with `countersign agent new NAME`)"
        );
    }
    // Callbacks are always signed: say now, not at the first decision, when they cannot be.
    for agent in agents.agents() {
        let secret = agent
            .callback_secret_env
            .as_deref()
            .map(|var| (var, secrets.value(var)));
        match secret {
            None if agent.callback_url.is_some() => {
                tracing::warn!(agent = %agent.id, "callback_url without callback_secret_env in the agent's manifest: its callbacks cannot be signed and will not be delivered")
            }
            None => {}
            Some((var, None)) => {
                tracing::warn!(agent = %agent.id, var, "the agent's callback secret variable is not set: its callbacks wait (and are retried) until it is")
            }
            Some((var, Some(value))) => {
                if let Err(error) = crate::callbacks::signature::parse_all(&value) {
                    tracing::warn!(agent = %agent.id, var, %error, "the agent's callback secret is not a whsec_ secret");
                }
            }
        }
    }
    for agent in agents.demo_token_agents() {
        tracing::warn!(agent = %agent.id, "agent uses a published demo token: mint a real one with `countersign agent new` before production");
    }
    tracing::info!(
        agents = agents.agents().len(),
        roles = registry.roles.names().count(),
        rules = registry.policies.rules().len(),
        "manifests and policies loaded"
    );
}

/// Reloads manifests and policies from disk: validated first; on error the old set stays.
pub fn reload(
    registry: &SharedRegistry,
    config: &Config,
) -> Result<(), crate::manifest::ManifestError> {
    registry.reload(&config.manifests, &config.policies)?;
    warn_about(&registry.current(), &secret_source(config));
    Ok(())
}

/// SIGHUP reloads manifests and policies.
async fn reload_on_sighup(registry: SharedRegistry, config: Config) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload by restarting");
            return;
        };
        while hangups.recv().await.is_some() {
            match reload(&registry, &config) {
                Ok(()) => tracing::info!("SIGHUP: manifests and policies reloaded"),
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: reload refused; the previous manifests and policies stay in force")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (registry, config);
}

/// Connects to the configured database and brings its schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let pool = PoolSettings {
        max_connections: config.database_max_connections,
    };
    let store = store::open(&config.database_url, &pool)
        .await
        .with_context(|| format!("cannot open database {}", config.database_url))?;
    store.migrate().await.context("cannot migrate database")?;
    Ok(store)
}

/// Forgets idempotency keys older than the retention, hourly.
async fn purge_idempotency_keys(store: Arc<dyn Store>, clock: Arc<dyn Clock>) {
    loop {
        match purge_idempotency_keys_once(store.as_ref(), clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
            Err(error) => tracing::warn!(%error, "cannot purge idempotency keys"),
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}

/// One pass of the purge: forgets the keys that are past [`IDEMPOTENCY_RETENTION`] at `now`.
pub async fn purge_idempotency_keys_once(
    store: &dyn Store,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, crate::store::StoreError> {
    store
        .purge_idempotency_keys(now - IDEMPOTENCY_RETENTION)
        .await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight requests");
}
