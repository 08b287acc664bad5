//! The audit log as a whole, read through the store: verifying its hash chain (optionally
//! against an anchor an operator recorded) and exporting it. The chain's rules are
//! `crate::audit`'s; reading the store for them is the core's.

use crate::audit::{AuditFilter, ChainBreak, ChainVerifier, export_line};

/// Events per page when reading the whole log.
const PAGE: i64 = 5_000;

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: i64,
    pub head_seq: i64,
    pub head_hash: String,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    #[error("anchor seq {seq} expected hash {expected} but the log has {found}")]
    AnchorMismatch {
        seq: i64,
        expected: String,
        found: String,
    },
    #[error("anchor seq {0} is beyond the end of the log (rows deleted from the tail?)")]
    AnchorMissing(i64),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Recomputes the whole chain from the store. With an `anchor` (a seq and the hash an operator
/// recorded earlier), also checks that the log still reaches that point with that hash, which
/// catches a truncated tail.
pub async fn verify(
    store: &dyn crate::store::Store,
    anchor: Option<(i64, &str)>,
) -> Result<Verified, VerifyError> {
    let mut verifier = ChainVerifier::default();
    let mut anchor_found = false;
    let filter = AuditFilter::default();
    loop {
        let page = store.audit_page(&filter, verifier.verified(), PAGE).await?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            verifier.feed(event)?;
            if let Some((seq, expected)) = anchor
                && event.seq == seq
            {
                if event.hash != expected {
                    return Err(VerifyError::AnchorMismatch {
                        seq,
                        expected: expected.to_owned(),
                        found: event.hash.clone(),
                    });
                }
                anchor_found = true;
            }
        }
    }
    if let Some((seq, _)) = anchor
        && !anchor_found
    {
        return Err(VerifyError::AnchorMissing(seq));
    }
    Ok(Verified {
        events: verifier.verified(),
        head_seq: verifier.verified(),
        head_hash: verifier.head_hash().to_owned(),
    })
}

/// Writes the matching events as JSON Lines; returns how many.
pub async fn export(
    store: &dyn crate::store::Store,
    filter: &AuditFilter,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64, VerifyError> {
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = store.audit_page(filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in &page {
            writeln!(out, "{}", export_line(event))
                .map_err(|e| crate::store::StoreError::Other(format!("cannot write: {e}")))?;
            count += 1;
        }
    }
    Ok(count)
}
