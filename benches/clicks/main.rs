//! The click benchmark's load tool (scripts/bench-clicks drives it; see BENCHMARKS.md):
//!
//!   cargo bench --bench clicks -- seed --url URL --count N --ids FILE
//!   cargo bench --bench clicks -- click --url URL --ids FILE --secret S --mode saturate|paced
//!
//! `seed` submits N pending proposals through the API and writes their ids; `click` approves
//! them, one click per proposal, as Slack would deliver a finance approver's clicks to a
//! countersign running with the built-in sandbox and a known signing secret, and prints one
//! `RESULT` line. Run without a command (as `cargo test --all-targets` does) it checks that its
//! signed payload is one the server accepts and reads as an Approve click.

mod drive;
mod payload;
mod seed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use countersign::config::Secret;
use serde_json::Value;

use drive::{Load, Mode, quantile};
use payload::Clicker;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Submit pending proposals and write their ids, one a line.
    Seed {
        #[arg(long)]
        url: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        ids: PathBuf,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// The demo RevOps agent's published token (manifests/agents/revops-crm.yaml).
        #[arg(long, default_value = "cs_demo_revops_crm_d3m0t0k3n")]
        token: String,
    },
    /// Approve the proposals in `ids`, one signed click each; print a RESULT line.
    Click {
        #[arg(long)]
        url: String,
        #[arg(long)]
        ids: PathBuf,
        /// The signing secret countersign was started with (COUNTERSIGN_SLACK_SIGNING_SECRET).
        #[arg(long)]
        secret: String,
        #[arg(long, value_enum)]
        mode: ModeArg,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Clicks a second in paced mode.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Where to write the ids whose click was answered 200 (to check the database after).
        #[arg(long)]
        answered: Option<PathBuf>,
        /// The role whose approver clicks, in the channel of its cards.
        #[arg(long, default_value = "finance")]
        role: String,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Saturate,
    Paced,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` adds `--bench` to a harness-less bench's arguments.
    let cli = Cli::parse_from(std::env::args().filter(|arg| arg != "--bench"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        None => self_check(),
        Some(Command::Seed {
            url,
            count,
            ids,
            connections,
            token,
        }) => runtime.block_on(async {
            let seeded = seed::seed(&client(connections), &url, &token, count, connections).await;
            std::fs::write(&ids, seeded.ids.join("\n") + "\n")
                .with_context(|| format!("writing {}", ids.display()))?;
            println!(
                "SEEDED created={} failed={} seconds={:.1} rate={:.0}",
                seeded.ids.len(),
                seeded.failed,
                seeded.seconds,
                seeded.ids.len() as f64 / seeded.seconds
            );
            Ok(())
        }),
        Some(Command::Click {
            url,
            ids,
            secret,
            mode,
            connections,
            rate,
            duration,
            answered,
            role,
            manifests,
        }) => runtime.block_on(async {
            let http = client(connections);
            let clicker = clicker(&http, &url, &manifests, &role).await?;
            let ids: Vec<String> = std::fs::read_to_string(&ids)
                .with_context(|| format!("reading {}", ids.display()))?
                .lines()
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            let mode = match mode {
                ModeArg::Saturate => Mode::Saturate,
                ModeArg::Paced => Mode::Paced { per_second: rate },
            };
            let load = Arc::new(Load {
                http,
                url: format!("{}/slack/interactions", url.trim_end_matches('/')),
                clicker,
                secret: Secret::new(secret),
                ids,
                mode,
                connections,
                duration,
            });
            let mut outcome = drive::drive(load).await;
            if let Some(path) = answered {
                std::fs::write(&path, outcome.answered.join("\n") + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            outcome.latencies.sort_unstable();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "RESULT mode={} clicks={} non_200={} errors={} unsent={} seconds={:.2} rate={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
                match mode {
                    Mode::Saturate => "saturate",
                    Mode::Paced { .. } => "paced",
                },
                outcome.answered.len(),
                outcome.non_200,
                outcome.errors,
                outcome.unsent,
                outcome.seconds,
                outcome.answered.len() as f64 / outcome.seconds.max(1e-9),
                ms(quantile(&outcome.latencies, 0.50)),
                ms(quantile(&outcome.latencies, 0.99)),
                ms(outcome.latencies.last().copied().unwrap_or_default()),
            );
            Ok(())
        }),
    }
}

/// A client keeping up to `connections` connections alive, like the load tool it stands for.
fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// The clicking approver: the role's first approver in the manifests, in its channel, on a
/// real card the sandbox holds (the first one the outbox posted), named as the sandbox's
/// workspace names them.
async fn clicker(
    http: &reqwest::Client,
    base: &str,
    manifests: &std::path::Path,
    role: &str,
) -> anyhow::Result<Clicker> {
    let roles = countersign::manifest::load_roles(&manifests.join("roles.yaml"))?;
    let Some(role) = roles.get(role) else {
        bail!("no role {role} in {}", manifests.display());
    };
    let Some(user_id) = role.approvers.users.first().cloned() else {
        bail!("role has no approver named in roles.yaml");
    };
    let base = format!("{}/", base.trim_end_matches('/'));
    let workspace: Value = http
        .get(format!("{base}sandbox/control/workspace"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let name_of = |list: &str, id: &str| {
        workspace[list]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["id"] == id))
            .and_then(|item| item["name"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("{id} is not in the sandbox's workspace"))
    };
    // Cards go out at Slack's pace; the first is posted within a second or two of seeding.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (listed, block_id, button) = loop {
        let messages: Vec<Value> = http
            .get(format!("{base}sandbox/control/messages"))
            .query(&[("channel", role.channel.as_str())])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Some((message, (block_id, button))) = messages
            .into_iter()
            .find_map(|m| payload::approve_button(&m).map(|found| (m, found)))
        {
            break (message, block_id, button);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "no card with an Approve button in {} after 60 s",
                role.channel
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Ok(Clicker {
        team_id: workspace["team"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        user_name: name_of("users", &user_id)?,
        user_id,
        channel_name: name_of("channels", &role.channel)?,
        channel_id: role.channel.clone(),
        message: payload::message_of(&listed),
        block_id,
        button,
        base_url: base,
    })
}

/// What `cargo test --all-targets` runs: the signed body verifies and reads as an Approve click
/// on the proposal, so the benchmark cannot quietly measure refusals.
fn self_check() -> anyhow::Result<()> {
    use countersign::slack::payload::Interaction;
    let listed = serde_json::json!({"ts": "1700000000.000100", "user": "U0COUNTERSIGN", "text": "card",
        "blocks": [{"type": "actions", "block_id": "decide", "elements": [
            {"type": "button", "action_id": countersign::slack::card::APPROVE, "value": "x",
             "text": {"type": "plain_text", "text": "Approve"}, "style": "primary"}]}]});
    let (block_id, button) = payload::approve_button(&listed).context("approve button")?;
    let clicker = Clicker {
        team_id: "T0SANDBOX".into(),
        user_id: "U0FIN001".into(),
        user_name: "priya".into(),
        channel_id: "C0FINANCE".into(),
        channel_name: "finance-approvals".into(),
        message: payload::message_of(&listed),
        block_id,
        button,
        base_url: "http://127.0.0.1:8080/".into(),
    };
    let secret = Secret::new("bench-signing-secret");
    let now = chrono::Utc::now();
    let id = "prop_01KBENCH00000000000000000";
    let signed = clicker.signed(&secret, id, 7, now.timestamp());
    countersign::slack::signature::verify(
        &secret,
        Some(&signed.signature),
        Some(&signed.timestamp),
        signed.body.as_bytes(),
        now,
    )?;
    let payload = url::form_urlencoded::parse(signed.body.as_bytes())
        .find(|(key, _)| key == "payload")
        .context("payload field")?
        .1;
    let Interaction::BlockActions(click) = serde_json::from_str(&payload)? else {
        bail!("not a block_actions payload");
    };
    let action = click.actions.first().context("an action")?;
    anyhow::ensure!(action.action_id == countersign::slack::card::APPROVE);
    anyhow::ensure!(action.value.as_deref() == Some(id));
    anyhow::ensure!(click.channel_id() == Some("C0FINANCE") && click.user.id == "U0FIN001");
    let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    anyhow::ensure!(quantile(&sorted, 0.5) == Duration::from_millis(50));
    anyhow::ensure!(quantile(&sorted, 0.99) == Duration::from_millis(99));
    println!("clicks: self-check ok (run scripts/bench-clicks for the benchmark)");
    Ok(())
}
