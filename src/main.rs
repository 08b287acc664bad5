//! The `countersign` command: parse the command line, load configuration, hand over to the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use countersign::audit::AuditFilter;
use countersign::config::{Config, LogFormat};
use countersign::domain::AgentId;
use countersign::registry::Registry;

/// mimalloc: the service allocates many small, short-lived values per request (JSON, CEL
/// facts); it measured about 10-20% faster than the system allocator on verdicts (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "Approval gateway for AI agents: agents propose, people decide"
)]
struct Cli {
    /// Configuration file (default: ./countersign.toml when it exists).
    #[arg(long, global = true, env = "COUNTERSIGN_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first). Without a Slack token it serves the
    /// built-in Slack sandbox at /sandbox.
    Serve {
        /// Once up, post the example proposals (policies/examples) as the example agents.
        #[arg(long)]
        demo: bool,
        /// all (default), api (HTTP only) or worker (background loops and /healthz, /readyz,
        /// /metrics only); overrides the serve_role setting.
        #[arg(long)]
        role: Option<String>,
    },
    /// Post the example proposals to a running countersign (see `serve --demo`).
    Demo {
        /// The countersign to post to (default: public_url from the configuration).
        #[arg(long)]
        url: Option<url::Url>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Inspect the tamper-evident audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Validate, explain and test the policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage reviewers' TOTP enrollments.
    #[command(subcommand)]
    Totp(TotpCommand),
    /// On-call schedules (manifests/oncall.yaml).
    #[command(subcommand)]
    Oncall(OncallCommand),
    /// The Slack app.
    #[command(subcommand)]
    Slack(SlackCommand),
    /// Check the connected Slack workspace: token, scopes, role channels, user groups and
    /// people named in the files. Exit 1 when something needs fixing.
    Doctor,
    /// Exit 0 if the local server answers 2xx on /healthz (or URL), else 1: for container health
    /// checks, as the image has no curl.
    Healthcheck {
        /// What to ask (default: /healthz on the configured listen address).
        #[arg(long)]
        url: Option<url::Url>,
    },
}

#[derive(Subcommand)]
enum SlackCommand {
    /// Prints manifests/slack-app.yaml with your public URL in it (or set up for Socket Mode),
    /// to paste into Slack's "create app from manifest".
    Manifest {
        /// Where Slack reaches countersign (https://…); default: the public_url setting.
        #[arg(long, conflicts_with = "socket_mode")]
        public_url: Option<url::Url>,
        /// Socket Mode: no request URLs, countersign connects to Slack (slack_app_token).
        #[arg(long)]
        socket_mode: bool,
    },
}

#[derive(Subcommand)]
enum OncallCommand {
    /// Print who is on call on SCHEDULE (now, or at --at).
    Who {
        schedule: String,
        /// An RFC 3339 time, e.g. 2026-12-24T10:00:00Z.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
enum TotpCommand {
    /// Remove a reviewer's enrollment (a lost phone); they enroll again with /countersign enroll.
    Reset {
        /// The reviewer's Slack user id (U…).
        user: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate every manifest and policy file; exit 1 with file:line: key messages on error.
    Check,
    /// Show the verdict for a proposal and, for every rule, whether it matched and why.
    Explain {
        /// A proposal as an agent would POST it (JSON).
        file: PathBuf,
        /// The agent proposing it.
        #[arg(long)]
        agent: String,
        /// Print the verdict as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Run the table tests in policies/tests/*.yaml.
    Test {
        /// Directory of test files (default: <policies>/tests).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Mint a token for a new agent; print it once, with the manifest lines to paste.
    New {
        /// The agent's id: lowercase letters, digits, '-' and '_'.
        name: String,
        /// Slack user id of the human accountable for the agent.
        #[arg(long, default_value = "U0OWNER01")]
        owner: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exit 1 naming the first bad seq. Prints the head hash.
    Verify {
        /// A `SEQ:HASH` recorded earlier (e.g. a previous head): fail unless the log still has it.
        #[arg(long, value_name = "SEQ:HASH")]
        anchor: Option<String>,
    },
    /// Write events as JSON Lines to stdout.
    Export {
        /// Only events at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only events about this proposal.
        #[arg(long)]
        proposal: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("countersign: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let format = if cli.log_json {
        LogFormat::Json
    } else {
        config.log_format
    };
    countersign::telemetry::init(format);

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(execute(cli.command, config)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("countersign: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One function per subcommand: each does its whole job and says how the process should exit.
async fn execute(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { demo, role } => serve(config, demo, role).await,
        Command::Demo { url } => post_demo(&config, url).await,
        Command::Slack(SlackCommand::Manifest {
            public_url,
            socket_mode,
        }) => slack_manifest(&config, public_url, socket_mode),
        Command::Doctor => doctor(&config).await,
        Command::Healthcheck { url } => healthcheck(&config, url).await,
        Command::Migrate => migrate(&config).await,
        Command::Agent(AgentCommand::New { name, owner }) => agent_new(&config, &name, &owner),
        Command::Policy(command) => policy(command, &config),
        Command::Oncall(OncallCommand::Who { schedule, at }) => {
            oncall_who(&config, &schedule, at.as_deref())
        }
        Command::Totp(TotpCommand::Reset { user }) => totp_reset(&config, &user).await,
        Command::Audit(AuditCommand::Verify { anchor }) => {
            audit_verify(&config, anchor.as_deref()).await
        }
        Command::Audit(AuditCommand::Export { since, proposal }) => {
            audit_export(&config, since.as_deref(), proposal).await
        }
    }
}

async fn serve(mut config: Config, demo: bool, role: Option<String>) -> anyhow::Result<ExitCode> {
    if let Some(role) = role {
        config.serve_role = countersign::config::ServeRole::parse(&role)
            .ok_or_else(|| anyhow::anyhow!("--role must be all, api or worker (got {role:?})"))?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (COUNTERSIGN_LISTEN)", config.listen))?;
    if demo {
        start_demo(&mut config, listener.local_addr()?)?;
    }
    countersign::app::run(config, listener, countersign::app::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `serve --demo`: readies the demo's configuration, then posts the examples in the background.
/// The listener is bound already, so these requests wait in its queue until the server is up.
fn start_demo(config: &mut Config, address: std::net::SocketAddr) -> anyhow::Result<()> {
    let data = countersign::demo::data_dir(&config.database_url);
    let inboxes = countersign::demo::prepare(config, address, &data)?;
    let url = countersign::app::own_url(address);
    let examples = config.policies.join("examples");
    let sandbox = config.slack_bot_token.is_none();
    tokio::spawn(async move {
        match countersign::demo::post_examples(&url, &examples, inboxes.as_ref()).await {
            Ok(posted) => {
                let page = if sandbox {
                    format!(
                        "; open {url}sandbox to see the cards (and, under Agent inbox, the callbacks the agents receive)"
                    )
                } else {
                    String::new()
                };
                println!(
                    "demo proposals posted{page}:\n{}",
                    countersign::demo::describe(&posted)
                );
            }
            Err(error) => eprintln!("countersign: demo: {error:#}"),
        }
    });
    Ok(())
}

async fn post_demo(config: &Config, url: Option<url::Url>) -> anyhow::Result<ExitCode> {
    let url = url.unwrap_or_else(|| config.public_url.clone());
    let posted =
        countersign::demo::post_examples(&url, &config.policies.join("examples"), None).await?;
    println!("{}", countersign::demo::describe(&posted));
    if posted.iter().any(|p| p.outcome.is_err()) {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn slack_manifest(
    config: &Config,
    public_url: Option<url::Url>,
    socket_mode: bool,
) -> anyhow::Result<ExitCode> {
    let reach = if socket_mode {
        countersign::slack::Reach::SocketMode
    } else {
        countersign::slack::Reach::Http(public_url.unwrap_or_else(|| config.public_url.clone()))
    };
    print!(
        "{}",
        countersign::slack::app_manifest(&config.manifests, &reach)?
    );
    Ok(ExitCode::SUCCESS)
}

async fn doctor(config: &Config) -> anyhow::Result<ExitCode> {
    let report = countersign::slack::doctor::run(config).await;
    print!("{report}");
    if report.failed() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn healthcheck(config: &Config, url: Option<url::Url>) -> anyhow::Result<ExitCode> {
    let url = match url {
        Some(url) => url,
        None => countersign::app::own_url(config.listen).join("healthz")?,
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    match client.get(url.clone()).send().await {
        Ok(answer) if answer.status().is_success() => {
            println!("{url}: {}", answer.status());
            Ok(ExitCode::SUCCESS)
        }
        Ok(answer) => {
            eprintln!("{url}: {}", answer.status());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("{url}: {:#}", anyhow::Error::from(error));
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let store = countersign::app::open_store(config).await?;
    store.close().await;
    println!("database {} is up to date", config.database_url);
    Ok(ExitCode::SUCCESS)
}

fn agent_new(config: &Config, name: &str, owner: &str) -> anyhow::Result<ExitCode> {
    let id = AgentId::parse(name).map_err(|e| anyhow::anyhow!("NAME: {e}"))?;
    let minted = countersign::auth::mint_token();
    println!("Token for agent {id} (shown once; store it in the agent's secret store):\n");
    println!("  {}\n", minted.token);
    println!(
        "Paste into {}/agents/{id}.yaml:\n",
        config.manifests.display()
    );
    println!("id: {id}");
    println!("owner: {owner}");
    println!("description: What {id} does");
    println!("token_sha256: {}", minted.sha256_hex);
    println!("mode: active");
    println!("# The actions this agent may propose; anything else is refused (403). E.g.:");
    println!("#   crm.lead.tag: {{impact: low, data: [], reversible: true, autonomy: autonomous}}");
    println!("actions: {{}}");
    Ok(ExitCode::SUCCESS)
}

fn oncall_who(config: &Config, schedule: &str, at: Option<&str>) -> anyhow::Result<ExitCode> {
    let registry = Registry::load(&config.manifests, &config.policies)?;
    let at = match at {
        Some(text) => countersign::clock::parse_timestamp(text)
            .map_err(|e| anyhow::anyhow!("--at {text:?}: {e} (want e.g. 2026-12-24T10:00:00Z)"))?,
        None => chrono::Utc::now(),
    };
    let Some(found) = registry.oncall.get(schedule) else {
        let known: Vec<&str> = registry.oncall.names().collect();
        anyhow::bail!(
            "no schedule named {schedule:?} (known: {})",
            known.join(", ")
        );
    };
    match found.who(at) {
        Some(user) => {
            println!("{user}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("nobody is on call on {schedule} at {at} (before its first shift)");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn totp_reset(config: &Config, user: &str) -> anyhow::Result<ExitCode> {
    let store = countersign::app::open_store(config).await?;
    // Through the core, so the removal and its audit event are one transaction.
    let clock = std::sync::Arc::new(countersign::clock::SystemClock);
    let engine = countersign::engine::Engine::start(store.clone(), clock);
    if engine.reset_totp(user, "operator:cli").await? {
        println!("{user}: enrollment removed; they can run /countersign enroll again");
    } else {
        println!("{user} was not enrolled");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(config: &Config, anchor: Option<&str>) -> anyhow::Result<ExitCode> {
    let anchor = anchor.map(parse_anchor).transpose()?;
    let store = countersign::app::open_store(config).await?;
    let result = countersign::engine::audit_log::verify(
        store.as_ref(),
        anchor.as_ref().map(|(s, h)| (*s, h.as_str())),
    )
    .await;
    store.close().await;
    match result {
        Ok(verified) => {
            println!("ok: {} events verified", verified.events);
            println!(
                "head: seq {} hash {}",
                verified.head_seq, verified.head_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("FAILED: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn audit_export(
    config: &Config,
    since: Option<&str>,
    proposal: Option<String>,
) -> anyhow::Result<ExitCode> {
    let since = since
        .map(countersign::clock::parse_timestamp)
        .transpose()
        .context("--since must be an RFC 3339 time such as 2026-11-01T00:00:00Z")?;
    let store = countersign::app::open_store(config).await?;
    let filter = AuditFilter {
        since,
        proposal_id: proposal,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let result = countersign::engine::audit_log::export(store.as_ref(), &filter, &mut out).await;
    std::io::Write::flush(&mut out).context("cannot write to stdout")?;
    store.close().await;
    let count = result?;
    eprintln!("exported {count} events");
    Ok(ExitCode::SUCCESS)
}

fn policy(command: PolicyCommand, config: &Config) -> anyhow::Result<ExitCode> {
    use countersign::policy::cases;
    let registry = match Registry::load(&config.manifests, &config.policies) {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match command {
        PolicyCommand::Check => {
            println!(
                "ok: {} agents, {} roles, {} rules",
                registry.agents.agents().len(),
                registry.roles.names().count(),
                registry.policies.rules().len()
            );
        }
        PolicyCommand::Explain { file, agent, json } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            match cases::evaluate(&registry, &agent, body, chrono::Utc::now()) {
                Ok((agent, request, evaluation)) if json => {
                    println!("{}", serde_json::to_string_pretty(&evaluation.verdict)?);
                    let _ = (agent, request);
                }
                Ok((agent, request, evaluation)) => print!(
                    "{}",
                    cases::explain(&registry, &agent, &request, &evaluation)
                ),
                Err(why) => {
                    eprintln!("{}: {why}", file.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        PolicyCommand::Test { dir } => {
            let dir = dir.unwrap_or_else(|| config.policies.join("tests"));
            let report = cases::run_tests(&registry, &dir).map_err(anyhow::Error::msg)?;
            for failure in &report.failed {
                println!("FAIL {failure}");
            }
            println!(
                "{} passed, {} failed",
                report.passed.len(),
                report.failed.len()
            );
            if !report.failed.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_anchor(text: &str) -> anyhow::Result<(i64, String)> {
    let (seq, hash) = text.split_once(':').context("--anchor must be SEQ:HASH")?;
    let seq = seq.parse().context("--anchor: SEQ must be a number")?;
    Ok((seq, hash.to_owned()))
}
