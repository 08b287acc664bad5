//! The statements of a command batch's transaction that both backends run alike, one row at a
//! time; each backend's `tx.rs` implements [`BatchTx`](crate::store::batch::BatchTx) with
//! them, plus its own multi-row writes (SQLite: `VALUES` lists; PostgreSQL: `UNNEST` arrays) and
//! its own way of holding the audit chain (see `BEGIN_BATCH` and the advisory lock).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::Timestamp;
use crate::audit::ChainTip;
use crate::domain::{AgentId, ProposalId};
use crate::store::StoreError;
use crate::store::rows::StoredKey;

/// The audit chain's tip; on PostgreSQL read under the chain's lock.
pub(in crate::store) const CHAIN_TIP: &str =
    "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

backends! {
    /// The last audit event's sequence number and hash (the genesis tip on an empty chain).
    pub(in crate::store) async fn chain_tip(conn: &mut Conn) -> Result<ChainTip, StoreError> {
        let row = sqlx::query(CHAIN_TIP).fetch_optional(&mut *conn).await?;
        Ok(match row {
            Some(row) => ChainTip {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            },
            None => ChainTip::genesis(),
        })
    }

    /// Fires (or disarms: `outcome`) a timer not fired yet; false if it was.
    pub(in crate::store) async fn fire_timer(
        conn: &mut Conn,
        timer: i64,
        at: DateTime<Utc>,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE timers SET fired_at = $1, outcome = $2, leased_until = NULL \
             WHERE id = $3 AND fired_at IS NULL",
        )
        .bind(Timestamp(at))
        .bind(outcome)
        .bind(timer)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fires a timer not fired yet if its proposal is pending, or disarms it; answers which,
    /// or `None` if it had fired already.
    pub(in crate::store) async fn fire_timer_if_pending(
        conn: &mut Conn,
        timer: i64,
        proposal: &ProposalId,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let outcome = sqlx::query_scalar(
            "UPDATE timers SET fired_at = $1, leased_until = NULL, outcome = CASE WHEN EXISTS \
             (SELECT 1 FROM proposals WHERE id = $2 AND status = 'pending') \
             THEN 'fired' ELSE 'disarmed' END \
             WHERE id = $3 AND fired_at IS NULL RETURNING outcome",
        )
        .bind(Timestamp(at))
        .bind(proposal.as_str())
        .bind(timer)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(outcome)
    }

    /// Puts an override in force, replacing one for the same agent and action.
    pub(in crate::store) async fn upsert_control(
        conn: &mut Conn,
        control: &crate::domain::Control,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_controls (agent_id, action, mode, reason, set_by, set_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (agent_id, action) DO UPDATE SET \
             mode = excluded.mode, reason = excluded.reason, set_by = excluded.set_by, \
             set_at = excluded.set_at",
        )
        .bind(&control.agent)
        .bind(control.action.as_deref().unwrap_or(""))
        .bind(control.mode.as_str())
        .bind(control.reason.as_deref())
        .bind(&control.set_by)
        .bind(Timestamp(control.set_at))
        .execute(&mut *conn)
        .await?;
        // Kept when replaced or cleared: the autonomy report counts overrides over a window.
        sqlx::query(
            "INSERT INTO control_history (agent_id, action, mode, set_by, set_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&control.agent)
        .bind(control.action.as_deref().unwrap_or(""))
        .bind(control.mode.as_str())
        .bind(&control.set_by)
        .bind(Timestamp(control.set_at))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Removes an override; false if there was none.
    pub(in crate::store) async fn delete_control(
        conn: &mut Conn,
        agent: &str,
        action: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM agent_controls WHERE agent_id = $1 AND action = $2")
            .bind(agent)
            .bind(action)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The ids of an agent's pending proposals, oldest first.
    pub(in crate::store) async fn pending_of(
        conn: &mut Conn,
        agent: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM proposals WHERE agent_id = $1 AND status = 'pending' \
             ORDER BY created_at",
        )
        .bind(agent)
        .fetch_all(&mut *conn)
        .await?)
    }

    /// An idempotency key the agent used before, if it did.
    pub(in crate::store) async fn find_idempotency(
        conn: &mut Conn,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, proposal_id, response FROM idempotency_keys \
             WHERE agent_id = $1 AND key = $2",
        )
        .bind(agent.as_str())
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|row| {
            Ok(StoredKey {
                request_hash: row.try_get("request_hash")?,
                proposal_id: row.try_get("proposal_id")?,
                response: row.try_get("response")?,
            })
        })
        .transpose()
    }
}
