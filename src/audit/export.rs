//! JSON Lines export of audit events.

use serde_json::{Value, json};

use super::AuditEvent;

/// One event as a JSON Lines row. `data` is embedded as JSON, not as a string, so the export is
/// directly queryable (jq); the stored text remains the one that is hashed.
pub fn export_line(event: &AuditEvent) -> String {
    let data: Value =
        serde_json::from_str(&event.data).unwrap_or(Value::String(event.data.clone()));
    json!({
        "seq": event.seq,
        "at": crate::clock::format_timestamp(event.at),
        "kind": event.kind,
        "proposal_id": event.proposal_id,
        "actor": event.actor,
        "data": data,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    })
    .to_string()
}
