//! The token a step-up modal carries in `private_metadata`: it binds the form to one proposal,
//! one reviewer and one version of the card, for five minutes. A submission by someone else,
//! for something else, later, or after the proposal moved is refused.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::domain::ProposalId;

pub const LIFETIME: chrono::Duration = chrono::Duration::minutes(5);

/// What a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub proposal: ProposalId,
    pub user: String,
    /// The card's version: the proposal's status and last change (`pending@1795…`); any state
    /// change makes the form stale.
    pub version: String,
    /// Where the card was clicked, for the answer.
    pub channel: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this form is damaged or not countersign's")]
    Invalid,
    #[error("this form has expired; click Approve again")]
    Expired,
}

#[derive(Clone)]
pub struct TokenSigner {
    key: [u8; 32],
}

impl TokenSigner {
    /// Keyed by `secret_key` when there is one, else by a random key for this run (a form open
    /// across a restart then has to be reopened).
    pub fn new(secret_key: Option<&Secret>) -> Self {
        let key = match secret_key {
            Some(secret) => Sha256::new()
                .chain_update(b"countersign step-up form v1\0")
                .chain_update(secret.expose().as_bytes())
                .finalize()
                .into(),
            None => rand::random(),
        };
        Self { key }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn issue(&self, binding: &Binding, now: DateTime<Utc>) -> String {
        let payload = format!(
            "{} {} {} {} {}",
            binding.proposal,
            binding.user,
            binding.version,
            binding.channel,
            (now + LIFETIME).timestamp()
        );
        let signature = hex::encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload} {signature}")
    }

    pub fn check(&self, token: &str, now: DateTime<Utc>) -> Result<Binding, TokenError> {
        let (payload, signature) = token.rsplit_once(' ').ok_or(TokenError::Invalid)?;
        let signature = hex::decode(signature).map_err(|_| TokenError::Invalid)?;
        self.mac(payload)
            .verify_slice(&signature)
            .map_err(|_| TokenError::Invalid)?;
        let parts: Vec<&str> = payload.split(' ').collect();
        let [proposal, user, version, channel, expires] = parts.as_slice() else {
            return Err(TokenError::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| TokenError::Invalid)?;
        if now.timestamp() > expires {
            return Err(TokenError::Expired);
        }
        Ok(Binding {
            proposal: ProposalId::parse(proposal).map_err(|_| TokenError::Invalid)?,
            user: (*user).to_owned(),
            version: (*version).to_owned(),
            channel: (*channel).to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_bound_and_expires() {
        let signer = TokenSigner::new(Some(&Secret::new("k".repeat(32))));
        let binding = Binding {
            proposal: ProposalId::generate(),
            user: "U1".into(),
            version: "pending@42".into(),
            channel: "C1".into(),
        };
        let now = Utc::now();
        let token = signer.issue(&binding, now);
        assert!(token.len() < 3000, "fits private_metadata");
        assert_eq!(signer.check(&token, now), Ok(binding.clone()));
        assert_eq!(
            signer.check(&token, now + LIFETIME + chrono::Duration::seconds(1)),
            Err(TokenError::Expired)
        );
        let forged = token.replacen("U1", "U2", 1);
        assert_eq!(signer.check(&forged, now), Err(TokenError::Invalid));
        let other = TokenSigner::new(Some(&Secret::new("j".repeat(32))));
        assert_eq!(other.check(&token, now), Err(TokenError::Invalid));
        assert_eq!(signer.check("garbage", now), Err(TokenError::Invalid));
    }
}
