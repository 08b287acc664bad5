//! Reads of the audit chain, page by page.

use async_trait::async_trait;

use super::Timestamp;
use crate::audit::{AuditEvent, AuditFilter};
use crate::store::rows::audit_row;
use crate::store::{AuditReads, StoreError};

backends! {
    #[async_trait]
    impl AuditReads for Backend {
        async fn audit_page(
            &self,
            filter: &AuditFilter,
            after_seq: i64,
            limit: i64,
        ) -> Result<Vec<AuditEvent>, StoreError> {
            // One proposal's events come from its index; the optional filter written as
            // `(x IS NULL OR proposal_id = x)` would walk the whole chain instead. Parameters need
            // no casts on PostgreSQL: sqlx declares each one's type (`$2` timestamptz, `$3` text).
            let sql = if filter.proposal_id.is_some() {
                "SELECT seq, at, kind, proposal_id, actor, data, prev_hash, hash FROM audit_events \
                 WHERE proposal_id = $3 AND seq > $1 AND ($2 IS NULL OR at >= $2) \
                 ORDER BY seq LIMIT $4"
            } else {
                "SELECT seq, at, kind, proposal_id, actor, data, prev_hash, hash FROM audit_events \
                 WHERE seq > $1 AND ($2 IS NULL OR at >= $2) AND ($3 IS NULL OR proposal_id = $3) \
                 ORDER BY seq LIMIT $4"
            };
            let rows = sqlx::query(sql)
                .bind(after_seq)
                .bind(filter.since.map(Timestamp))
                .bind(filter.proposal_id.as_deref())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(audit_row).collect()
        }
    }
}
