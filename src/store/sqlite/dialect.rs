//! Where SQLite's SQL differs from PostgreSQL's: the one place the shared family code
//! (`store/sql/`) asks per backend. Every item here has its twin of the same name and type in
//! `store/postgres/dialect.rs`; the shared code is compiled against each.
//!
//! SQLite has one writer at a time, so it needs no row locks (a claim sees the rows as they
//! are), and takes the write lock up front where a transaction reads before it writes.

/// The schema's migrations.
pub(in crate::store) static MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite");

/// Appended to a lease claim's inner `SELECT`: nothing, as one writer at a time means no other
/// claim can take the same rows meanwhile.
pub(in crate::store) const ROW_LOCK: &str = "";

/// Opens a transaction that reads, then writes. IMMEDIATE takes the write lock up front: a
/// deferred transaction that reads and then writes could fail to upgrade its lock
/// (SQLITE_BUSY) despite busy_timeout.
pub(in crate::store) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Opens a command batch's transaction: the write lock up front too (see [`BEGIN_WRITE`]), as
/// the batch starts by reading the audit chain's tip.
pub(in crate::store) const BEGIN_BATCH: &str = "BEGIN IMMEDIATE";

/// Opens a read-only transaction whose statements all see one snapshot: any SQLite
/// transaction does, from its first read on.
pub(in crate::store) const BEGIN_SNAPSHOT: &str = "BEGIN";

/// Claims the due rows: the unordered ones by due time, and of the card posts only each
/// channel's oldest undone row (migration 0010), so a post put off holds back its channel's
/// later cards. The channels' heads are found by a skip scan over `slack_outbox_channel_queue`
/// (one index probe per channel), so a long queue in one channel costs nothing per claim. The
/// unordered rows are read through their own index, named: without statistics SQLite would
/// pick the older index of every undone row and walk the cards waiting in the channels.
pub(in crate::store) const CLAIM_SLACK_JOBS: &str = "\
    WITH RECURSIVE channels (channel) AS ( \
      SELECT MIN(channel) FROM slack_outbox WHERE done_at IS NULL AND channel IS NOT NULL \
      UNION ALL \
      SELECT (SELECT MIN(channel) FROM slack_outbox WHERE done_at IS NULL \
              AND channel IS NOT NULL AND channel > channels.channel) \
      FROM channels WHERE channels.channel IS NOT NULL \
    ), candidates (id) AS ( \
      SELECT * FROM (SELECT id FROM slack_outbox INDEXED BY slack_outbox_unordered_due \
       WHERE done_at IS NULL AND channel IS NULL \
       AND due_at <= $2 AND (leased_until IS NULL OR leased_until <= $2) \
       ORDER BY due_at, id LIMIT $3) \
      UNION ALL \
      SELECT (SELECT MIN(id) FROM slack_outbox WHERE done_at IS NULL AND channel IS NOT NULL \
              AND channel = channels.channel) \
      FROM channels WHERE channels.channel IS NOT NULL \
    ) \
    UPDATE slack_outbox SET leased_until = $1 WHERE id IN ( \
      SELECT id FROM slack_outbox WHERE id IN (SELECT id FROM candidates) \
      AND done_at IS NULL AND due_at <= $2 AND (leased_until IS NULL OR leased_until <= $2) \
      ORDER BY due_at, id LIMIT $3) \
    RETURNING id, proposal_id, task, attempts";

/// Extends the leases of the listed outbox rows (parameters: lease end, [`id_list`]).
pub(in crate::store) const RENEW_SLACK_LEASES: &str = "UPDATE slack_outbox SET leased_until = $1 \
     WHERE id IN (SELECT value FROM json_each($2)) AND done_at IS NULL AND leased_until IS NOT NULL";

/// A list of row ids as one parameter: a JSON array, which `json_each` unpacks.
pub(in crate::store) fn id_list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("[{}]", ids.join(","))
}

/// What policy auto-approved for an agent (parameters: agent, day start, month start). Amounts
/// are summed as REAL: SQLite's SUM of integers is an INTEGER, which would not decode as the
/// f64 the budget compares.
pub(in crate::store) const AUTO_APPROVED_USAGE: &str = "WITH approved AS (\
       SELECT created_at, CASE WHEN json_type(content, '$.params.amount') IN ('integer', 'real') \
         THEN CAST(json_extract(content, '$.params.amount') AS REAL) ELSE 0.0 END AS amount \
       FROM proposals WHERE agent_id = $1 AND status = 'approved' AND created_at >= $3 \
       AND json_extract(decision, '$.by.kind') = 'policy') \
     SELECT COALESCE(SUM(CASE WHEN created_at >= $2 THEN amount END), 0.0) AS day_amount, \
            COUNT(CASE WHEN created_at >= $2 THEN 1 END) AS day_count, \
            COALESCE(SUM(amount), 0.0) AS month_amount, COUNT(*) AS month_count FROM approved";
