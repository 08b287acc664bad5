//! SLA reports end to end: a known history built through the sandbox with the app's clock moved
//! by hand, then `/countersign report` in the role channel (every figure checked, the chart
//! uploaded), the same figures from `GET /v1/reports/sla`, the weekly digest once per channel
//! across restarts, and the refusals.

use chrono::Duration;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{
    REVOPS, TestApp, TestDb, discount_proposal, eventually, problem, start_time, test_config,
};
use crate::slack_client::{Message, Slack, card_for};

const ADMIN_TOKEN: &str = "admin-token-for-the-report-tests";

fn discount(name: &str) -> Value {
    let mut proposal = discount_proposal();
    proposal["summary"] = json!(format!("Discount {name}"));
    proposal
}

/// Waits until `channel` holds at least `n` thread replies containing `needle`.
async fn replies(slack: &Slack<'_>, channel: &str, needle: &str, n: usize) {
    let what = format!("{n} replies containing {needle:?}");
    slack
        .wait_for(channel, "U0NOBODY", &what, |messages| {
            let found = messages
                .iter()
                .filter(|m| m.thread_ts.is_some() && m.text.contains(needle))
                .count();
            (found >= n).then_some(())
        })
        .await;
}

fn report_message(title: &str) -> impl Fn(&[Message]) -> Option<Message> {
    let title = title.to_owned();
    move |messages| {
        messages
            .iter()
            .find(|m| m.visible_text().contains(&title))
            .cloned()
    }
}

/// Builds this history for finance (the discount rule: SLA 30m; remind at 15m, on-call at 30m,
/// revops at 60m, expire at 120m), minutes after 09:00:
/// A approved at 10 by U0FIN001; B rejected at 12 by U0FIN002; C approved at 40 by U0FIN001
/// (10m late); D cancelled by the agent at 45 (15m late); E expires at 120 (90m late);
/// F submitted at 100, still waiting at 125 when the report is asked for.
async fn known_history(app: &TestApp) -> Vec<String> {
    let slack = app.slack();
    // All five at 09:00; the Slack outbox posts three cards at once, then one a second (of the
    // app's clock), so once three are up the clock moves two seconds for the last two.
    let mut ids = Vec::new();
    for name in ["A", "B", "C", "D", "E"] {
        let created = app.create(REVOPS, &discount(name)).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut cards = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i == 3 {
            app.clock.advance(Duration::seconds(2));
        }
        cards.push(
            slack
                .wait_for_card("C0FINANCE", id, "the card", |_| true)
                .await,
        );
    }
    move_to(app, 10);
    assert_eq!(
        slack.click("U0FIN001", &cards[0], "approve").await.status,
        200
    );
    // Each step's thread replies are awaited before the clock moves on: the outbox's budget per
    // channel (three at once, then one a second of the app's clock) is then always full again.
    replies(&slack, "C0FINANCE", "approved for finance", 1).await;
    move_to(app, 12);
    let view = slack
        .click("U0FIN002", &cards[1], "reject")
        .await
        .view
        .unwrap();
    let values = json!({"preset": {"choice": "Above the discount playbook"}});
    let done = slack
        .submit("U0FIN002", view["id"].as_str().unwrap(), values)
        .await;
    assert_eq!((done.status, done.errors), (200, None));
    replies(&slack, "C0FINANCE", "rejected", 1).await;
    move_to(app, 15); // C, D, E reminded
    replies(&slack, "C0FINANCE", "Reminder", 3).await;
    move_to(app, 30); // C, D, E escalated to the on-call person
    replies(&slack, "C0FINANCE", "Escalation 2", 3).await;
    move_to(app, 40);
    assert_eq!(
        slack.click("U0FIN001", &cards[2], "approve").await.status,
        200
    );
    replies(&slack, "C0FINANCE", "approved for finance", 2).await;
    move_to(app, 45);
    let cancel = format!("/v1/proposals/{}/cancel", ids[3]);
    assert_eq!(app.post(REVOPS, &cancel, None).await.status(), 200);
    move_to(app, 60); // E escalated to revops
    replies(&slack, "C0FINANCE", "Escalation 3", 1).await;
    move_to(app, 100);
    let (f, _) = card_for(app, REVOPS, &discount("F"), "C0FINANCE").await;
    ids.push(f);
    move_to(app, 115); // F reminded
    replies(&slack, "C0FINANCE", "Reminder", 4).await;
    move_to(app, 120); // E expires
    slack
        .wait_for_card("C0FINANCE", &ids[4], "E expired", |m| {
            m.visible_text().contains("*Expired*")
        })
        .await;
    move_to(app, 125);
    ids
}

/// Sets the app's clock to `minutes` past 09:00.
fn move_to(app: &TestApp, minutes: i64) {
    use countersign::clock::Clock;
    let target = start_time() + Duration::minutes(minutes);
    app.clock.advance(target - app.clock.now());
}

async fn the_report_in_the_channel_has_every_figure_and_the_chart(db: TestDb) {
    let mut config = test_config(&db);
    config.admin_token = Some(countersign::config::Secret::new(ADMIN_TOKEN.to_owned()));
    let app = TestApp::start_with(config).await;
    let ids = known_history(&app).await;
    let slack = app.slack();

    let acted = slack.command("U0FIN001", "C0FINANCE", "report 7d").await;
    assert!(
        acted.body["text"]
            .as_str()
            .unwrap()
            .contains("Preparing the 7d SLA report for *finance*"),
        "{acted:?}"
    );
    // Asked again within the minute: one report, not two.
    let again = slack.command("U0FIN002", "C0FINANCE", "report 7d").await;
    assert!(
        again.body["text"]
            .as_str()
            .unwrap()
            .contains("was asked for a moment ago"),
        "{again:?}"
    );
    let report = slack
        .wait_for(
            "C0FINANCE",
            "U0FIN001",
            "the report",
            report_message("SLA report · finance · last 7d"),
        )
        .await;
    let text = report.visible_text();
    for expected in [
        "*6* proposals for review",
        ":white_check_mark: 2 approved · :x: 1 rejected · :hourglass: 1 expired · :no_entry_sign: 1 cancelled · :hourglass_flowing_sand: 1 pending",
        "*Time to decision*: median 12m · p90 40m (3 decisions)",
        "*Decided within SLA*: 40% (2 of 5)",
        "*Reminders*: 4 · *Escalations*: level 2: 3 · level 3: 1",
        "*SLA breaches*: 3",
        "|Discount C> — approved 10m late",
        "|Discount D> — cancelled 15m late",
        "|Discount E> — expired",
        "*Backlog now*: 1 pending",
        "|Discount F> — waiting 25m",
        "<@U0FIN001> — 2 votes (2 approve, 0 reject), median response 10m",
        "<@U0FIN002> — 1 vote (0 approve, 1 reject), median response 12m",
        "Asked for by <@U0FIN001>",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    // Breaches and the backlog link to their cards (the sandbox's permalinks).
    let links = text.matches("/sandbox#C0FINANCE/").count();
    assert_eq!(links, 4, "C, D, E and F linked:\n{text}");
    assert!(!text.contains("overdue"), "F is within its SLA");

    // The chart follows, uploaded with the three-step flow and shared in the channel.
    let chart = slack
        .wait_for("C0FINANCE", "U0FIN001", "the chart", |messages| {
            messages.iter().find(|m| !m.files.is_empty()).cloned()
        })
        .await;
    let png = app
        .http
        .get(app.url(&format!("/sandbox/files/{}", chart.files[0])))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let calls = slack.calls().await;
    let methods: Vec<&str> = calls.iter().filter_map(|c| c["method"].as_str()).collect();
    for method in [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
        "chat.getPermalink",
    ] {
        assert!(methods.contains(&method), "{method} called");
    }
    let artifacts =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("sla-report.png"), &png).unwrap();

    // The same figures as JSON for operators.
    let json: Value = app
        .http
        .get(app.url("/v1/reports/sla?role=finance&period=7d"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let finance = &json["reports"][0];
    assert_eq!(json["reports"].as_array().unwrap().len(), 1);
    assert_eq!(finance["role"], "finance");
    assert_eq!(finance["period"], "7d");
    assert_eq!(finance["to"], "2026-11-21T11:05:00Z");
    assert_eq!(finance["proposals"], 6);
    assert_eq!(
        finance["outcomes"],
        json!({"approved": 2, "rejected": 1, "expired": 1, "cancelled": 1, "pending": 1})
    );
    assert_eq!(
        finance["time_to_decision"],
        json!({"decisions": 3, "median_seconds": 720, "p90_seconds": 2400})
    );
    assert_eq!(
        finance["sla"],
        json!({"with_sla": 6, "within": 2, "breached": 3, "within_share": 0.4})
    );
    let breaches: Vec<(Value, Value, Value)> = finance["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["proposal_id"].clone(),
                b["status"].clone(),
                b["late_seconds"].clone(),
            )
        })
        .collect();
    assert_eq!(
        breaches,
        [
            (json!(ids[2]), json!("approved"), json!(600)),
            (json!(ids[3]), json!("cancelled"), json!(900)),
            (json!(ids[4]), json!("expired"), json!(5400)),
        ]
    );
    assert_eq!(finance["breaches"][0]["card"]["channel"], "C0FINANCE");
    assert_eq!(finance["reminders"], 4);
    assert_eq!(
        finance["escalations"],
        json!([{"level": 2, "count": 3}, {"level": 3, "count": 1}])
    );
    assert_eq!(finance["backlog"]["pending"], 1);
    assert_eq!(
        finance["backlog"]["oldest"][0]["proposal_id"],
        json!(ids[5])
    );
    assert_eq!(finance["backlog"]["oldest"][0]["age_seconds"], 1500);
    assert_eq!(finance["backlog"]["oldest"][0]["overdue"], false);
    assert_eq!(
        finance["reviewers"],
        json!([
            {"user": "U0FIN001", "votes": 2, "approvals": 2, "rejections": 0, "median_response_seconds": 600},
            {"user": "U0FIN002", "votes": 1, "approvals": 0, "rejections": 1, "median_response_seconds": 720},
        ])
    );
    let days = finance["daily"].as_array().unwrap();
    assert_eq!(days.len(), 8, "2026-11-14 … 2026-11-21");
    assert_eq!(
        days[7],
        json!({"date": "2026-11-21", "approved": 2, "rejected": 1, "expired": 1, "median_seconds": 720, "p90_seconds": 2400})
    );
    assert!(
        days[..7]
            .iter()
            .all(|d| d["approved"] == 0 && d["median_seconds"].is_null())
    );

    // Every role at once; nothing else was routed to legal.
    let all: Value = app
        .http
        .get(app.url("/v1/reports/sla"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = all["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["finance", "legal", "revops", "security"]);
    assert_eq!(all["reports"][1]["proposals"], 0);

    // The post is in the audit trail, with who asked.
    let posted = db
        .store()
        .await
        .audit_page(&Default::default(), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "report.posted")
        .map(|e| e.actor)
        .collect::<Vec<_>>();
    assert_eq!(posted, ["reviewer:U0FIN001"]);
    app.stop().await.unwrap();
}
both_backends!(the_report_in_the_channel_has_every_figure_and_the_chart);

async fn report_requests_are_checked_before_anything_is_queued(db: TestDb) {
    let mut config = test_config(&db);
    config.admin_token = Some(countersign::config::Secret::new(ADMIN_TOKEN.to_owned()));
    let app = TestApp::start_with(config).await;
    let slack = app.slack();
    let answer =
        |acted: crate::slack_client::Acted| acted.body["text"].as_str().unwrap().to_owned();

    let elsewhere = answer(slack.command("U0FIN001", "C0FINANCE", "report legal").await);
    assert!(
        elsewhere.contains("The *legal* report is posted in <#C0LEGAL>"),
        "{elsewhere}"
    );
    let nonsense = answer(slack.command("U0FIN001", "C0FINANCE", "report 1y").await);
    assert!(nonsense.contains("`1y` is neither a period"), "{nonsense}");
    let hostile = answer(
        slack
            .command("U0FIN001", "C0FINANCE", "report <!channel>")
            .await,
    );
    assert!(hostile.contains("`&lt;!channel&gt;`"), "escaped: {hostile}");
    let dm = answer(slack.command("U0FIN001", "@U0FIN001", "report").await);
    assert!(dm.contains("run `/countersign report` there"), "{dm}");

    let get = |query: &'static str, token: Option<&'static str>| {
        let mut request = app.http.get(app.url(&format!("/v1/reports/sla{query}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let unauthorized = problem(get("", None).await.unwrap(), 401).await;
    assert_eq!(unauthorized["type"], "urn:countersign:problem:unauthorized");
    problem(
        get("", Some("admin-token-for-the-report-testX"))
            .await
            .unwrap(),
        401,
    )
    .await;
    let period = problem(get("?period=1y", Some(ADMIN_TOKEN)).await.unwrap(), 422).await;
    assert_eq!(period["field"], "period");
    let role = problem(get("?role=payroll", Some(ADMIN_TOKEN)).await.unwrap(), 422).await;
    assert_eq!(role["field"], "role");
    let extra = problem(get("?periood=7d", Some(ADMIN_TOKEN)).await.unwrap(), 422).await;
    assert_eq!(extra["field"], "periood");

    // Nothing was queued or posted by any of that.
    let calls = slack.calls().await;
    assert!(
        !calls
            .iter()
            .any(|c| c["method"] == "files.getUploadURLExternal"),
        "no report was posted"
    );
    app.stop().await.unwrap();

    // Without an admin token the admin API is off.
    let app = TestApp::start(&db).await;
    let response = app
        .http
        .get(app.url("/v1/reports/sla"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let off = problem(response, 403).await;
    assert_eq!(off["type"], "urn:countersign:problem:admin-api-disabled");
    app.stop().await.unwrap();
}
both_backends!(report_requests_are_checked_before_anything_is_queued);

async fn digests(db: &TestDb) -> usize {
    db.store()
        .await
        .audit_page(&Default::default(), 0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "report.posted" && e.actor == "system:digest")
        .count()
}

async fn the_weekly_digest_reaches_every_role_channel_once_across_restarts(db: TestDb) {
    let mut config = test_config(&db);
    // 2026-11-21 is a Saturday; the apps start at 09:00.
    config.report_digest = Some("sat 09:30 UTC".parse().unwrap());
    let app = TestApp::start_with(config.clone()).await;
    card_for(&app, REVOPS, &discount("waiting"), "C0FINANCE").await;
    app.stop().await.unwrap();
    assert_eq!(digests(&db).await, 0, "not due before 09:30");

    // Down at 09:30: the digest goes out when countersign is back (within a day).
    let app = TestApp::start_at(config.clone(), start_time() + Duration::minutes(45)).await;
    let slack = app.slack();
    for channel in ["C0FINANCE", "C0LEGAL", "C0REVOPS", "C0SECURITY"] {
        let digest = slack
            .wait_for(
                channel,
                "U0NOBODY",
                "the digest",
                report_message("Weekly SLA digest"),
            )
            .await;
        assert!(!digest.visible_text().contains("Asked for by"));
    }
    let finance = slack
        .wait_for(
            "C0FINANCE",
            "U0NOBODY",
            "the digest",
            report_message("Weekly SLA digest · finance"),
        )
        .await;
    assert!(finance.visible_text().contains("*Backlog now*: 1 pending"));
    // The waiting card's reminder and escalation were due too, and reply in its thread in the
    // finance channel: with the digest, the channel's whole burst at this frozen instant. Once
    // they are done, a second passes, so the channel's budget has room for the report.
    eventually(
        std::time::Duration::from_secs(20),
        "the reminder and escalation sent",
        || async {
            let undone = "SELECT CAST(COUNT(*) AS TEXT) FROM slack_outbox WHERE done_at IS NULL";
            db.strings(undone).await == ["0"]
        },
    )
    .await;
    app.clock.advance(Duration::seconds(1));
    // A command wakes the worker, which schedules digests before it posts: once its report is
    // there, this instance has had its chance to post the digest twice, and did not.
    slack.command("U0FIN001", "C0FINANCE", "report").await;
    slack
        .wait_for(
            "C0FINANCE",
            "U0NOBODY",
            "the report",
            report_message("SLA report · finance"),
        )
        .await;
    assert_eq!(digests(&db).await, 4);
    app.stop().await.unwrap();

    // Another restart in the same week: the slot is already posted.
    let app = TestApp::start_at(config, start_time() + Duration::hours(3)).await;
    let slack = app.slack();
    slack.command("U0FIN001", "C0FINANCE", "report").await;
    let done = slack
        .wait_for("C0FINANCE", "U0NOBODY", "the second report", |messages| {
            let reports = messages
                .iter()
                .filter(|m| m.visible_text().contains("SLA report · finance"))
                .count();
            // SQLite keeps the sandbox's history across restarts; PostgreSQL runs start empty.
            let expected = if db.is_postgres() { 1 } else { 2 };
            (reports == expected).then(|| messages.to_vec())
        })
        .await;
    let digests_seen = done
        .iter()
        .filter(|m| m.visible_text().contains("Weekly SLA digest"))
        .count();
    assert_eq!(digests_seen, if db.is_postgres() { 0 } else { 1 });
    assert_eq!(digests(&db).await, 4);
    app.stop().await.unwrap();
}
both_backends!(the_weekly_digest_reaches_every_role_channel_once_across_restarts);
