//! Hashing and verification of the chain: pure functions over rows, no storage.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::AuditEvent;

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over `prev_hash`, a newline, and the event's canonical encoding: a JSON object with
/// keys in sorted order whose `data` member is the stored canonical text itself.
pub fn event_hash(
    prev_hash: &str,
    seq: i64,
    at: DateTime<Utc>,
    kind: &str,
    proposal_id: Option<&str>,
    actor: &str,
    data: &str,
) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let encoded = format!(
        r#"{{"actor":{},"at":{},"data":{},"kind":{},"proposal_id":{},"seq":{}}}"#,
        quote(actor),
        quote(&crate::clock::format_timestamp(at)),
        data,
        quote(kind),
        proposal_id.map_or_else(|| "null".to_owned(), quote),
        seq,
    );
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(encoded.as_bytes());
    hex::encode(hasher.finalize())
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Checks events fed in `seq` order, one at a time, so a long log is verified in pages.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainVerifier {
    pub fn feed(&mut self, event: &AuditEvent) -> Result<(), ChainBreak> {
        let fail = |seq, reason: String| Err(ChainBreak { seq, reason });
        if event.seq != self.expected_seq {
            return fail(
                self.expected_seq,
                format!("row missing (next row found is seq {})", event.seq),
            );
        }
        if event.prev_hash != self.prev_hash {
            return fail(
                event.seq,
                "prev_hash does not match the previous row's hash (rows deleted or reordered)"
                    .into(),
            );
        }
        let recomputed = event_hash(
            &event.prev_hash,
            event.seq,
            event.at,
            &event.kind,
            event.proposal_id.as_deref(),
            &event.actor,
            &event.data,
        );
        if recomputed != event.hash {
            return fail(
                event.seq,
                "hash does not match the row's contents (row edited)".into(),
            );
        }
        self.expected_seq += 1;
        self.prev_hash = event.hash.clone();
        Ok(())
    }

    /// Number of events verified so far.
    pub fn verified(&self) -> i64 {
        self.expected_seq - 1
    }

    /// The hash of the last verified event (the genesis hash for an empty log).
    pub fn head_hash(&self) -> &str {
        &self.prev_hash
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{AuditDraft, ChainTip};
    use super::*;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let at = crate::clock::parse_timestamp("2026-11-21T10:00:00.000001Z").unwrap();
        let mut tip = ChainTip::genesis();
        (0..n)
            .map(|i| {
                AuditDraft::new(
                    "test.event",
                    None,
                    "system:test".into(),
                    json!({"i": i, "b": [1, 2]}),
                )
                .seal(&mut tip, at)
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> Result<ChainVerifier, ChainBreak> {
        let mut verifier = ChainVerifier::default();
        for event in events {
            verifier.feed(event)?;
        }
        Ok(verifier)
    }

    #[test]
    fn an_untouched_chain_verifies_and_reports_its_head() {
        let events = chain(5);
        let verifier = verify(&events).unwrap();
        assert_eq!(verifier.verified(), 5);
        assert_eq!(verifier.head_hash(), events[4].hash);
        assert_eq!(events[0].prev_hash, GENESIS_HASH);
    }

    #[test]
    fn an_edited_row_is_named() {
        let mut events = chain(5);
        events[2].data = r#"{"b":[1,2],"i":99}"#.into();
        assert_eq!(verify(&events).unwrap_err().seq, 3);
        let mut events = chain(5);
        events[3].actor = "agent:mallory".into();
        assert_eq!(verify(&events).unwrap_err().seq, 4);
    }

    #[test]
    fn a_deleted_row_is_named() {
        let mut events = chain(5);
        events.remove(1);
        let err = verify(&events).unwrap_err();
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("missing"));
    }

    #[test]
    fn reordered_rows_are_caught_even_with_renumbering() {
        let mut events = chain(5);
        events.swap(1, 2);
        events[1].seq = 2;
        events[2].seq = 3;
        assert_eq!(verify(&events).unwrap_err().seq, 2);
    }

    #[test]
    fn a_rehashed_edit_still_breaks_the_link_to_the_next_row() {
        let mut events = chain(5);
        let e = &mut events[1];
        e.data = r#"{"forged":true}"#.into();
        e.hash = event_hash(&e.prev_hash, e.seq, e.at, &e.kind, None, &e.actor, &e.data);
        assert_eq!(verify(&events).unwrap_err().seq, 3);
    }
}
