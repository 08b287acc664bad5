//! The statements a decision runs must not grow with the backlog. On PostgreSQL: with tens of
//! thousands of unfired timers, pending proposals and votes in the tables, every statement of
//! the click path is an index access under `plan_cache_mode = force_generic_plan` (what a
//! prepared statement becomes after five runs) — before and after `ANALYZE`. The plan that once
//! ANDed `timers_by_proposal` with `timers_due` and walked every unfired timer fails this test.

use sqlx::Connection;

use crate::common::TestDb;

const PROPOSALS: i64 = 20_000;
const TIMERS: i64 = 60_000;

/// A backlog written straight into the tables: `p1`…`pN` pending, three unfired timers each,
/// one vote each, an escalation grant each, an audit event each.
async fn seed(db: &TestDb) {
    let statements = [
        format!(
            "INSERT INTO proposals (id, agent_id, status, content, created_at, updated_at) \
             SELECT 'p' || g, 'revops-crm', 'pending', '{{}}', now(), now() \
             FROM generate_series(1, {PROPOSALS}) g"
        ),
        format!(
            "INSERT INTO timers (proposal_id, timer, due_at) \
             SELECT 'p' || (1 + g % {PROPOSALS}), '{{}}', now() + g * interval '1 second' \
             FROM generate_series(1, {TIMERS}) g"
        ),
        format!(
            "INSERT INTO votes (proposal_id, voter, eligible, ballot, dedupe, at) \
             SELECT 'p' || g, 'U0FIN001', '[]', 'approve', 'd' || g, now() \
             FROM generate_series(1, {PROPOSALS}) g"
        ),
        format!(
            "INSERT INTO approval_grants (proposal_id, user_id, granted_at) \
             SELECT 'p' || g, 'U0ONCALL', now() FROM generate_series(1, {PROPOSALS}) g"
        ),
        format!(
            "INSERT INTO audit_events (seq, at, kind, proposal_id, actor, data, prev_hash, hash) \
             SELECT g, now(), 'proposal.submitted', 'p' || g, 'agent:revops-crm', '{{}}', '', '' \
             FROM generate_series(1, {PROPOSALS}) g"
        ),
    ];
    for sql in statements {
        db.execute(&sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_statements_stay_index_only_under_generic_plans() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.store().await; // migrated
    seed(&db).await;
    let mut connection = sqlx::PgConnection::connect(&db.url_string()).await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut connection)
        .await
        .unwrap();
    for analyzed in [false, true] {
        if analyzed {
            sqlx::raw_sql("ANALYZE")
                .execute(&mut connection)
                .await
                .unwrap();
        }
        for (i, (name, types, sql, args)) in countersign::store::postgres_decision_statements()
            .into_iter()
            .enumerate()
        {
            let statement = format!("s{i}_{analyzed}");
            let types = if types.is_empty() {
                String::new()
            } else {
                format!("({types})")
            };
            let prepare = format!("PREPARE {statement} {types} AS {sql}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
                .execute(&mut connection)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let args = if args.is_empty() {
                String::new()
            } else {
                format!("({args})")
            };
            let explain = format!("EXPLAIN EXECUTE {statement} {args}");
            let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
                .fetch_all(&mut connection)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let plan: String = plan.into_iter().map(|(line,)| line + "\n").collect();
            for table in [
                "proposals",
                "timers",
                "votes",
                "audit_events",
                "approval_grants",
            ] {
                assert!(
                    !plan.contains(&format!("Seq Scan on {table}")),
                    "{name} (analyzed: {analyzed}) scans {table}:\n{plan}"
                );
            }
            assert!(
                !plan.contains("timers_due") && !plan.contains("BitmapAnd"),
                "{name} (analyzed: {analyzed}) walks the unfired timers:\n{plan}"
            );
            if name == "disarm timers" {
                assert!(
                    plan.contains("timers_unfired_by_proposal"),
                    "{name} (analyzed: {analyzed}):\n{plan}"
                );
            }
        }
    }
}

/// SQLite has no generic plans, but the same question: a decision's timer update finds the
/// proposal's unfired timers by index.
#[tokio::test]
async fn sqlite_disarms_timers_through_the_partial_index() {
    let db = TestDb::sqlite();
    db.store().await;
    let mut connection = sqlx::SqliteConnection::connect(&db.url_string())
        .await
        .unwrap();
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN UPDATE timers SET fired_at = ?1, outcome = 'disarmed', \
         leased_until = NULL WHERE proposal_id = ?2 AND fired_at IS NULL",
    )
    .bind("2026-12-02T00:00:00Z")
    .bind("p1")
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let details: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("USING INDEX timers_unfired_by_proposal")),
        "{details:?}"
    );
}

/// The Slack outbox's claim finds each channel's oldest card by a skip scan: 50,000 cards
/// queued in one channel behind a card in a worker's hands, and 50,000 done rows, must not be
/// walked on every claim (a worker claims every half second). Measured as rows touched, on the
/// plan a prepared statement gets after five runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_claim_does_not_walk_a_channels_queue() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.store().await;
    db.execute(
        "INSERT INTO slack_outbox (proposal_id, task, due_at, channel, done_at) \
         SELECT 'p' || g, '{}', now() - interval '1 hour', \
         CASE WHEN g % 5 = 0 THEN 'C0OTHER' ELSE 'C0FINANCE' END, \
         CASE WHEN g <= 50000 THEN now() END FROM generate_series(1, 100000) g",
    )
    .await;
    db.execute(
        "UPDATE slack_outbox SET leased_until = now() + interval '1 minute' \
         WHERE id = (SELECT MIN(id) FROM slack_outbox WHERE done_at IS NULL AND channel = 'C0FINANCE')",
    )
    .await;
    let mut connection = sqlx::PgConnection::connect(&db.url_string()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ANALYZE slack_outbox; SET plan_cache_mode = force_generic_plan; \
         PREPARE claim (timestamptz, timestamptz, bigint) AS {}",
        countersign::store::postgres_outbox_claim()
    )))
    .execute(&mut connection)
    .await
    .unwrap();
    let mut tx = connection.begin().await.unwrap();
    let plan: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN (ANALYZE, BUFFERS) EXECUTE claim (now() + interval '30 seconds', now(), 8)",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let plan: String = plan.into_iter().map(|(line,)| line + "\n").collect();
    assert!(!plan.contains("Seq Scan on slack_outbox"), "{plan}");
    // Rows read or thrown away by any node: a walk of the queue would show tens of thousands.
    let touched = plan
        .lines()
        .flat_map(|line| {
            let removed = line.split("Rows Removed by Filter: ").nth(1);
            let actual = line
                .split("(actual ")
                .nth(1)
                .and_then(|a| a.split(" rows=").nth(1));
            [removed, actual]
        })
        .flatten()
        .filter_map(|n| {
            n.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(touched < 100, "a node touched {touched} rows:\n{plan}");
    assert!(
        plan.contains("slack_outbox_channel_queue"),
        "the channels' heads by index:\n{plan}"
    );
}

/// SQLite: the same claim reaches the channels' heads and the unordered rows by index, never by
/// walking the table.
#[tokio::test]
async fn sqlite_claims_the_channels_heads_by_index() {
    let db = TestDb::sqlite();
    db.store().await;
    let mut connection = sqlx::SqliteConnection::connect(&db.url_string())
        .await
        .unwrap();
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {}",
        countersign::store::sqlite_outbox_claim()
    )))
    .bind("2026-12-02T00:00:30Z")
    .bind("2026-12-02T00:00:00Z")
    .bind(8)
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let details: Vec<&str> = plan.iter().map(|(_, _, _, d)| d.as_str()).collect();
    for detail in &details {
        assert!(
            !detail.starts_with("SCAN slack_outbox") || detail.contains("INDEX"),
            "walks the outbox: {details:#?}"
        );
    }
    assert!(
        details
            .iter()
            .any(|d| d.contains("slack_outbox_channel_queue")),
        "{details:#?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("slack_outbox_unordered_due")),
        "the unordered rows by their own index, not among the queued cards: {details:#?}"
    );
}
