//! Where PostgreSQL's SQL differs from SQLite's: the one place the shared family code
//! (`store/sql/`) asks per backend. Every item here has its twin of the same name and type in
//! `store/sqlite/dialect.rs`; the shared code is compiled against each.
//!
//! Several replicas share one database: claims lock the rows they take and skip those another
//! replica holds, and transactions say the isolation they rely on.

/// The schema's migrations.
pub(in crate::store) static MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");

/// Appended to a lease claim's inner `SELECT`: replicas claiming at the same moment take
/// different rows and never wait for each other.
pub(in crate::store) const ROW_LOCK: &str = " FOR UPDATE SKIP LOCKED";

/// Opens a transaction that reads, then writes: row locks are enough, the default will do.
pub(in crate::store) const BEGIN_WRITE: &str = "BEGIN";

/// Opens a command batch's transaction. The chain tip must be read after the advisory lock is
/// granted, which needs a fresh snapshot per statement: READ COMMITTED, whatever the
/// database's default.
pub(in crate::store) const BEGIN_BATCH: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Opens a read-only transaction whose statements all see one snapshot.
pub(in crate::store) const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";

/// Claims the due rows: the unordered ones by due time, and of the card posts only each
/// channel's oldest undone row (migration 0010), so a post put off holds back its channel's
/// later cards on every replica. The channels' heads are found by a skip scan over
/// `slack_outbox_channel_queue` (one index probe per channel), so a long queue in one channel
/// costs nothing per claim. Rows are re-checked under the row lock: a head finished by another
/// replica since this statement's snapshot is skipped, and the next head waits for the next
/// claim. The unordered rows are locked as they are picked (`SKIP LOCKED` before the `LIMIT`),
/// so replicas claiming at once take different ones instead of competing for the same first
/// few. The candidates are looked up by key (`= ANY (ARRAY …)`): joined instead, the
/// planner may walk every due row to meet them.
pub(in crate::store) const CLAIM_SLACK_JOBS: &str = "\
    WITH RECURSIVE heads (channel, id) AS ( \
      (SELECT channel, id FROM slack_outbox WHERE done_at IS NULL AND channel IS NOT NULL \
       ORDER BY channel, id LIMIT 1) \
      UNION ALL \
      SELECT next.channel, next.id FROM heads CROSS JOIN LATERAL ( \
        SELECT channel, id FROM slack_outbox WHERE done_at IS NULL AND channel IS NOT NULL \
        AND channel > heads.channel ORDER BY channel, id LIMIT 1) AS next \
    ), unordered (id) AS ( \
      SELECT id FROM slack_outbox WHERE done_at IS NULL AND channel IS NULL AND due_at <= $2 \
      AND (leased_until IS NULL OR leased_until <= $2) ORDER BY due_at, id LIMIT $3 \
      FOR UPDATE SKIP LOCKED \
    ), candidates (id) AS ( \
      SELECT id FROM unordered UNION ALL SELECT id FROM heads \
    ) \
    UPDATE slack_outbox SET leased_until = $1 WHERE id IN ( \
      SELECT id FROM slack_outbox WHERE id = ANY (ARRAY (SELECT id FROM candidates)) \
      AND done_at IS NULL AND due_at <= $2 AND (leased_until IS NULL OR leased_until <= $2) \
      ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
    RETURNING id, proposal_id, task, attempts";

/// Extends the leases of the listed outbox rows (parameters: lease end, [`id_list`]).
pub(in crate::store) const RENEW_SLACK_LEASES: &str = "UPDATE slack_outbox SET leased_until = $1 \
     WHERE id = ANY($2) AND done_at IS NULL AND leased_until IS NOT NULL";

/// A list of row ids as one parameter: an array.
pub(in crate::store) fn id_list(ids: &[i64]) -> Vec<i64> {
    ids.to_vec()
}

/// What policy auto-approved for an agent (parameters: agent, day start, month start).
pub(in crate::store) const AUTO_APPROVED_USAGE: &str = "WITH approved AS (\
       SELECT created_at, CASE WHEN jsonb_typeof(content::jsonb #> '{params,amount}') = 'number' \
         THEN (content::jsonb #>> '{params,amount}')::float8 ELSE 0 END AS amount \
       FROM proposals WHERE agent_id = $1 AND status = 'approved' AND created_at >= $3 \
       AND decision::jsonb #>> '{by,kind}' = 'policy') \
     SELECT COALESCE(SUM(amount) FILTER (WHERE created_at >= $2), 0)::float8 AS day_amount, \
            COUNT(*) FILTER (WHERE created_at >= $2) AS day_count, \
            COALESCE(SUM(amount), 0)::float8 AS month_amount, COUNT(*) AS month_count FROM approved";
