//! Links countersign signs itself: a card's "see all changes" link opens the full diff without a
//! login, so the link carries its own proof — an HMAC over the proposal id and an expiry — and
//! stops working when it expires.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::domain::ProposalId;

/// How long a full-diff link works.
pub const LINK_LIFETIME: chrono::Duration = chrono::Duration::days(7);

#[derive(Clone)]
pub struct LinkSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(***)")
    }
}

impl LinkSigner {
    /// A signer keyed by `secret_key` (its own derivation, so the key serves other purposes
    /// without their signatures being interchangeable); without one, a random key for this run.
    pub fn new(secret_key: Option<&Secret>) -> Self {
        let key = match secret_key {
            Some(secret) => Sha256::new()
                .chain_update(b"countersign full-diff link v1\0")
                .chain_update(secret.expose().as_bytes())
                .finalize()
                .into(),
            None => rand::random(),
        };
        Self { key }
    }

    fn mac(&self, id: &ProposalId, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }

    /// The query string (`exp=…&sig=…`) of a link to `id` valid until `now + LINK_LIFETIME`.
    pub fn query(&self, id: &ProposalId, now: DateTime<Utc>) -> String {
        let expires = (now + LINK_LIFETIME).timestamp();
        let signature = hex::encode(self.mac(id, expires).finalize().into_bytes());
        format!("exp={expires}&sig={signature}")
    }

    /// Does this `exp` and `sig` prove a link to `id` that is still valid at `now`?
    pub fn verify(
        &self,
        id: &ProposalId,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> bool {
        if now.timestamp() > expires {
            return false;
        }
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        self.mac(id, expires).verify_slice(&signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_for_its_proposal_until_it_expires() {
        let signer = LinkSigner::new(Some(&Secret::new("k".repeat(32))));
        let id = ProposalId::generate();
        let now = Utc::now();
        let query = signer.query(&id, now);
        let (exp, sig) = query.split_once('&').unwrap();
        let exp: i64 = exp.trim_start_matches("exp=").parse().unwrap();
        let sig = sig.trim_start_matches("sig=");
        assert!(signer.verify(&id, exp, sig, now));
        assert!(!signer.verify(
            &id,
            exp,
            sig,
            now + LINK_LIFETIME + chrono::Duration::seconds(1)
        ));
        assert!(
            !signer.verify(&ProposalId::generate(), exp, sig, now),
            "another proposal"
        );
        assert!(!signer.verify(&id, exp + 1, sig, now), "a longer life");
        let other = LinkSigner::new(Some(&Secret::new("j".repeat(32))));
        assert!(!other.verify(&id, exp, sig, now), "another key");
        let same = LinkSigner::new(Some(&Secret::new("k".repeat(32))));
        assert!(
            same.verify(&id, exp, sig, now),
            "the same key after a restart"
        );
    }
}
