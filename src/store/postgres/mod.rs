//! PostgreSQL backend, for several replicas sharing one database. Writers of the audit chain
//! serialise on a transaction-scoped advisory lock, so every batch from every replica extends the
//! chain in turn; the engine's group commit keeps that lock's cost per proposal small.
//!
//! The family traits' SQL is shared with SQLite (`store/sql/`); what is PostgreSQL's own is
//! here: connecting, [`dialect`] (where its SQL differs) and `tx` (the command batch's
//! transaction, with the advisory lock and `UNNEST` multi-row writes).

pub(in crate::store) mod dialect;
mod tx;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{PoolSettings, StoreError, sql};

pub struct PostgresStore {
    pub(in crate::store) pool: PgPool,
}

impl PostgresStore {
    pub async fn open(url: &str, settings: &PoolSettings) -> Result<Self, StoreError> {
        // A replica that stalls holding the audit-chain lock must not stall every other replica:
        // bound lock waits and idle transactions.
        let options = PgConnectOptions::from_str(url)?.options([
            ("lock_timeout", "10s"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

/// What a reviewer's click runs on PostgreSQL, besides the inserts: (name, parameter types,
/// SQL, sample arguments). Each must stay an index access when PostgreSQL plans it generically
/// (prepared statements go generic after five runs), whatever the backlog; the test suite
/// checks their plans on a database holding tens of thousands of timers and proposals.
pub fn decision_statements() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        (
            "read the proposal",
            "text",
            sql::proposals::SELECT_PROPOSAL,
            "'p1'",
        ),
        (
            "escalation grant",
            "text, text",
            sql::proposals::SELECT_GRANT,
            "'p1', 'U1'",
        ),
        ("chain tip", "", sql::batch::CHAIN_TIP, ""),
        (
            "batch's proposals",
            "text[]",
            tx::SELECT_PROPOSALS,
            "ARRAY['p1']",
        ),
        (
            "batch's votes",
            "text[]",
            tx::SELECT_VOTES_OF,
            "ARRAY['p1']",
        ),
        (
            "decisions",
            "text[], text[], text[], text[], timestamptz[], text[]",
            tx::UPDATE_LIFECYCLES,
            "ARRAY['p1'], ARRAY['approved'], ARRAY['{}'], ARRAY[NULL], ARRAY[now()], ARRAY['pending']",
        ),
        (
            "disarm timers",
            "text[], timestamptz[]",
            tx::DISARM_TIMERS,
            "ARRAY['p1'], ARRAY[now()]",
        ),
    ]
}

/// The Slack outbox's claim (parameters: lease end, now, limit). Its cost must not grow with the
/// cards waiting in one channel; the test suite checks the rows it touches on a long queue.
pub fn outbox_claim_statement() -> &'static str {
    dialect::CLAIM_SLACK_JOBS
}
