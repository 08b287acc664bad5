//! `countersign doctor` against the built-in sandbox, hosted here with a known bot token and
//! shaped per test (bot removed from a channel, fewer scopes, a deactivated person…), over real
//! HTTP in Slack's envelope. The operator's files are an editable fixture; edits made after the
//! workspace is seeded are the operator's mistakes (a typo'd channel, a user who is not there).

use std::sync::Arc;

use countersign::clock::{Clock, ManualClock};
use countersign::config::{Config, Secret};
use countersign::registry::Registry;
use countersign::sandbox::{Sandbox, Workspace};
use countersign::slack::doctor::{self, Report, Status};
use countersign::slack::{OutgoingMessage, SlackApi, SlackError};

use crate::common::{TestDb, start_time};
use crate::fixture::Fixture;

const TOKEN: &str = "xoxb-doctor-test-7Hq2mZ";
const PUBLIC_URL: &str = "https://cs.acme.example/";

/// A sandbox seeded from the fixture's files, shaped by `shape`, serving on port 0.
async fn sandbox(fixture: &Fixture, shape: impl FnOnce(&mut Workspace)) -> Sandbox {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let registry = Registry::load(&fixture.manifests(), &fixture.policies()).unwrap();
    let mut workspace = Workspace::seed(&registry, &fixture.manifests()).unwrap();
    shape(&mut workspace);
    let sandbox = Sandbox::new(
        workspace,
        Secret::new(TOKEN),
        Secret::new("doctor-signing"),
        url,
        Arc::new(ManualClock::new(start_time())) as Arc<dyn Clock>,
    );
    let router: axum::Router = sandbox.routes();
    tokio::spawn(async move { axum::serve(listener, router).await });
    sandbox
}

fn config(fixture: &Fixture, db: &TestDb, sandbox: &Sandbox) -> Config {
    let mut config = fixture.config(db);
    config.slack_api_url = sandbox.api_url();
    config.slack_bot_token = Some(Secret::new(TOKEN));
    config.slack_signing_secret = Some(Secret::new("doctor-signing"));
    config.public_url = url::Url::parse(PUBLIC_URL).unwrap();
    config
}

/// The real binary, configured only by environment, from a directory with no countersign.toml.
async fn run_binary(
    fixture: &Fixture,
    db: &TestDb,
    api_url: Option<&url::Url>,
    token: Option<&str>,
) -> (Option<i32>, String, String) {
    let cwd = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    command
        .arg("doctor")
        .current_dir(cwd.path())
        .env("COUNTERSIGN_MANIFESTS", fixture.manifests())
        .env("COUNTERSIGN_POLICIES", fixture.policies())
        .env("COUNTERSIGN_DATABASE_URL", db.url_string())
        .env("COUNTERSIGN_PUBLIC_URL", PUBLIC_URL)
        .env("RUST_LOG", "debug");
    if let Some(url) = api_url {
        command.env("COUNTERSIGN_SLACK_API_URL", url.as_str());
    }
    if let Some(token) = token {
        command
            .env("COUNTERSIGN_SLACK_BOT_TOKEN", token)
            .env("COUNTERSIGN_SLACK_SIGNING_SECRET", "doctor-signing");
    }
    // Waited on asynchronously: the sandbox it talks to is served by this test's runtime.
    let output = command.output().await.expect("run countersign doctor");
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn lines_with(report: &Report, status: Status) -> Vec<String> {
    report
        .checks()
        .filter(|c| c.status == status)
        .map(|c| format!("{} | fix: {}", c.text, c.fix.as_deref().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn a_healthy_workspace_passes_every_check_and_exits_0() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |_| {}).await;
    let (code, stdout, stderr) =
        run_binary(&fixture, &db, Some(&sandbox.api_url()), Some(TOKEN)).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for expected in [
        "Configuration\n  ✓ slack_bot_token is set (a bot token, xoxb-…)\n  ✓ slack_signing_secret is set\n  ✓ public_url is https://cs.acme.example/\n",
        "  ✓ auth.test: bot @countersign (U0COUNTERSIGN) in workspace",
        "slack-app.yaml are granted",
        "  ✓ roles.finance: #finance-approvals (C0FINANCE), @countersign is a member\n",
        "User groups\n  ✓ user group S0FINAPPR: 3 members\n",
        "  ✓ U0MGR001 @morgan\n",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains('✗') && !stdout.contains("\n  ! "),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("checks passed"), "{stdout}");
    // Every method doctor called, each once per id, none refused.
    let calls = sandbox.calls();
    let count = |method: &str| calls.iter().filter(|c| c.method == method).count();
    assert_eq!(count("auth.test"), 2, "identity, then the scopes header");
    assert_eq!(count("conversations.info"), 4);
    assert_eq!(count("usergroups.users.list"), 1);
    let people_checked = stdout.matches("\n  ✓ U").count();
    assert!(people_checked >= 8, "{stdout}");
    assert_eq!(count("users.info"), people_checked, "one call per person");
    assert!(calls.iter().all(|c| c.response["ok"] == true), "{calls:?}");
    // The token never reaches the output, whatever the log level.
    assert!(!stdout.contains("7Hq2mZ") && !stderr.contains("7Hq2mZ"));
}

#[tokio::test]
async fn a_misconfigured_channel_is_named_with_its_role_and_fix_and_exits_1() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |w| {
        assert!(w.remove_bot("C0FINANCE"));
    })
    .await;
    // The operator's typo: a channel id Slack has never heard of.
    fixture.edit(
        "manifests/roles.yaml",
        "channel: C0LEGAL,",
        "channel: C0NOSUCH,",
    );
    let (code, stdout, _) = run_binary(&fixture, &db, Some(&sandbox.api_url()), Some(TOKEN)).await;
    assert_eq!(code, Some(1), "{stdout}");
    for expected in [
        "  ✗ roles.finance: @countersign is not a member of #finance-approvals (C0FINANCE): Slack refuses its cards there (not_in_channel)\n    fix: invite @countersign to #finance-approvals (`/invite @countersign` in the channel)\n",
        "  ✗ roles.legal: channel C0NOSUCH not found\n    fix: create the channel and invite @countersign, or fix roles.yaml key roles.legal.channel",
        "  ✓ roles.revops: #revops-approvals (C0REVOPS), @countersign is a member\n",
        "2 checks failed, 0 warnings: fix the ✗ lines, then run countersign doctor again",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }

    // What doctor warns about is what would happen: Slack (here, the sandbox) refuses the card.
    let api = SlackApi::new(&sandbox.api_url(), &Secret::new(TOKEN));
    let card = OutgoingMessage {
        text: "a card".into(),
        blocks: Vec::new(),
    };
    assert_eq!(
        api.post_message("C0FINANCE", &card, None).await,
        Err(SlackError::Api("not_in_channel".into()))
    );
    assert!(api.post_message("C0REVOPS", &card, None).await.is_ok());
}

#[tokio::test]
async fn an_archived_channel_fails_and_a_post_there_is_refused() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |w| {
        assert!(w.archive("C0SECURITY"));
        assert!(!w.archive("C0NOSUCH"));
    })
    .await;
    let report = doctor::run(&config(&fixture, &db, &sandbox)).await;
    assert!(report.failed());
    assert_eq!(
        lines_with(&report, Status::Fail),
        [
            "roles.security: #security-approvals (C0SECURITY) is archived: Slack refuses posts there | fix: unarchive #security-approvals, or point roles.yaml key roles.security.channel at a live channel"
        ]
    );
    let api = SlackApi::new(&sandbox.api_url(), &Secret::new(TOKEN));
    let card = OutgoingMessage {
        text: "a card".into(),
        blocks: Vec::new(),
    };
    assert_eq!(
        api.post_message("C0SECURITY", &card, None).await,
        Err(SlackError::Api("is_archived".into()))
    );
}

#[tokio::test]
async fn a_missing_scope_is_named_with_what_breaks_and_reinstall() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |w| w.bot_scopes.retain(|s| s != "files:write")).await;
    let report = doctor::run(&config(&fixture, &db, &sandbox)).await;
    let failures = lines_with(&report, Status::Fail);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with("missing scope files:write: report charts and enrollment QR codes"),
        "{failures:?}"
    );
    assert!(
        failures[0].ends_with("then reinstall the app to grant them"),
        "{failures:?}"
    );
    // And the sandbox applies scopes as Slack does: the upload is refused.
    let api = SlackApi::new(&sandbox.api_url(), &Secret::new(TOKEN));
    let refused = api
        .upload_png("C0FINANCE", "chart.png", "t", "c", vec![1, 2, 3])
        .await;
    assert_eq!(refused, Err(SlackError::Api("missing_scope".into())));
}

#[tokio::test]
async fn without_the_doctor_only_scopes_channels_are_a_warning_not_a_failure() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |w| {
        w.bot_scopes
            .retain(|s| s != "channels:read" && s != "groups:read")
    })
    .await;
    let report = doctor::run(&config(&fixture, &db, &sandbox)).await;
    assert!(!report.failed(), "{report}");
    let warnings = lines_with(&report, Status::Warn);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].starts_with("missing scope channels:read: read only by `countersign doctor`")
    );
    assert!(
        warnings[2]
            .starts_with("role channels could not be checked: the token lacks channels:read")
    );
    assert!(
        !sandbox
            .calls()
            .iter()
            .any(|c| c.method == "conversations.info"),
        "no call that is bound to fail"
    );
}

#[tokio::test]
async fn user_groups_that_do_not_resolve_or_are_empty_are_named_where_they_are_named() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |w| {
        w.usergroups.insert(
            "S0EMPTY".into(),
            countersign::sandbox::workspace::Usergroup {
                id: "S0EMPTY".into(),
                handle: "nobody".into(),
                users: Vec::new(),
            },
        );
    })
    .await;
    fixture.edit(
        "manifests/roles.yaml",
        "usergroup: S0FINAPPR",
        "usergroup: S0TYPO",
    );
    let mut config = config(&fixture, &db, &sandbox);
    config.slack_admins = vec!["S0EMPTY".into()];
    let report = doctor::run(&config).await;
    let roles = fixture.manifests().join("roles.yaml");
    assert_eq!(
        lines_with(&report, Status::Fail),
        [
            "user group S0EMPTY has no members, so nobody approves through it (named in configuration: slack_admins) | fix: add people to the group in Slack, or name another group in configuration: slack_admins".to_owned(),
            format!("user group S0TYPO does not exist in this workspace (named in {}: roles.finance.approvers.usergroup) | fix: fix the id in {}: roles.finance.approvers.usergroup (a user group id starts with S; Slack shows it in the group's link), or create the group", roles.display(), roles.display()),
        ]
    );
}

#[tokio::test]
async fn people_who_are_missing_deactivated_or_bots_are_named_with_file_and_key() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |w| {
        w.users.get_mut("U0LEG001").unwrap().deleted = true;
        w.users.get_mut("U0SEC002").unwrap().is_bot = true;
    })
    .await;
    // An on-call override for someone who is not in the workspace.
    fixture.edit(
        "manifests/oncall.yaml",
        "{user: U0MGR001,",
        "{user: U0GHOST01,",
    );
    let report = doctor::run(&config(&fixture, &db, &sandbox)).await;
    let (roles, oncall) = (
        fixture.manifests().join("roles.yaml").display().to_string(),
        fixture
            .manifests()
            .join("oncall.yaml")
            .display()
            .to_string(),
    );
    let failures = lines_with(&report, Status::Fail);
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert_eq!(
        failures[0],
        format!(
            "U0GHOST01 is not a user of this workspace (named in {oncall}: schedules.finance-primary.overrides[0].user) | fix: fix the id in {oncall}: schedules.finance-primary.overrides[0].user (in Slack: the person's profile → ⋯ → Copy member ID)"
        )
    );
    assert_eq!(
        failures[1],
        format!(
            "U0LEG001 (@amara) is deactivated (named in {roles}: roles.legal.approvers.users; {oncall}: schedules.legal.layers[0].users) | fix: replace U0LEG001 in {roles}: roles.legal.approvers.users; {oncall}: schedules.legal.layers[0].users with an active person's member id"
        )
    );
    assert!(failures[2].starts_with("U0SEC002 (@"), "{failures:?}");
    assert!(
        failures[2].contains(") is a bot, not a person (named in"),
        "{failures:?}"
    );
}

#[tokio::test]
async fn a_bad_token_is_explained_without_printing_it_and_exits_1() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let sandbox = sandbox(&fixture, |_| {}).await;
    let wrong = "xoxb-not-the-one-Zk93Qv";
    let (code, stdout, stderr) =
        run_binary(&fixture, &db, Some(&sandbox.api_url()), Some(wrong)).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("  ✗ auth.test: invalid_auth: Slack does not accept the token (mistyped, cut short, or another app's or workspace's)\n    fix: copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page into COUNTERSIGN_SLACK_BOT_TOKEN (slack_bot_token)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(the other checks need a token Slack accepts)"),
        "{stdout}"
    );
    assert!(!stdout.contains("Channels"), "nothing else asked: {stdout}");
    assert!(
        !stdout.contains("Zk93Qv") && !stderr.contains("Zk93Qv"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(sandbox.calls().len(), 1);
}

#[tokio::test]
async fn without_a_token_there_is_nothing_to_check_and_it_says_so() {
    let (fixture, db) = (Fixture::new(), TestDb::sqlite());
    let (code, stdout, _) = run_binary(&fixture, &db, None, None).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("! no slack_bot_token: `countersign serve` would run the built-in Slack sandbox, so there is no Slack workspace to check"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "COUNTERSIGN_SLACK_APP_TOKEN (Socket Mode) or COUNTERSIGN_SLACK_SIGNING_SECRET (HTTP)"
        ),
        "both ways in are named: {stdout}"
    );
}
