//! SQLite backend: the embedded default. One file, WAL journal, `synchronous = FULL` so a
//! committed proposal survives power loss as well as a crash; the engine's group commit pays
//! that fsync once per batch, not once per proposal.
//!
//! The family traits' SQL is shared with PostgreSQL (`store/sql/`); what is SQLite's own is
//! here: opening the file, [`dialect`] (where its SQL differs) and `tx` (the command batch's
//! transaction, whose multi-row writes are `VALUES` lists).

pub(in crate::store) mod dialect;
mod tx;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{PoolSettings, StoreError};

pub struct SqliteStore {
    pub(in crate::store) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed, with its directory) the database file at `path`.
    pub async fn open(path: &Path, settings: &PoolSettings) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

/// The Slack outbox's claim (parameters: lease end, now, limit), for the test suite's check that
/// it reaches its rows by index.
pub fn outbox_claim_statement() -> &'static str {
    dialect::CLAIM_SLACK_JOBS
}
