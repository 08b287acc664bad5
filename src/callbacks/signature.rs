//! Standard Webhooks signatures (<https://www.standardwebhooks.com>) on the callbacks we send to
//! agents, so an agent can tell a real verdict from anyone who learned its callback URL.
//!
//! A delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`;
//! the signature is `v1,` + base64 of HMAC-SHA256 over `"{id}.{timestamp}.{body}"`. The id and
//! timestamp are inside the MAC so a captured delivery cannot be replayed under a fresh id or
//! time. Several signatures, space-separated, let a secret be rotated without a flag day: we sign
//! with the new and the old secret until every receiver has the new one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the delivery's unique id (the receiver's idempotency key).
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying when the delivery was signed, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// How far a delivery's timestamp may be from the receiver's clock, either way. The spec's
/// suggestion: long enough for clock skew and a slow hop, short enough to bound replays.
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 5 * 60;

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1,";

/// Why a secret was not accepted. The messages never contain the secret: they end up in startup
/// errors and logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("webhook secret does not start with \"whsec_\"")]
    MissingPrefix,
    #[error("webhook secret is not valid standard base64 after \"whsec_\"")]
    InvalidBase64,
    #[error("webhook secret has no key bytes after \"whsec_\"")]
    EmptyKey,
    #[error("no webhook secret given")]
    NoSecrets,
    /// In a list of secrets, which one (counting from 1) is wrong — by position, not by value.
    #[error("webhook secret #{position}: {error}")]
    InList {
        position: usize,
        error: Box<SecretError>,
    },
}

/// The HMAC key of a Standard Webhooks secret (`whsec_` + base64 of the key bytes).
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`. The key is the decoded bytes, not the text: that is what every
    /// Standard Webhooks library does, so receivers using one verify our signatures.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        if key.is_empty() {
            return Err(SecretError::EmptyKey);
        }
        Ok(Self { key })
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// Parses whitespace-separated secrets, newest first (`"whsec_new whsec_old"` while rotating).
pub fn parse_all(text: &str) -> Result<Vec<WebhookSecret>, SecretError> {
    let secrets = text
        .split_whitespace()
        .enumerate()
        .map(|(index, entry)| {
            WebhookSecret::parse(entry).map_err(|error| SecretError::InList {
                position: index + 1,
                error: Box::new(error),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if secrets.is_empty() {
        return Err(SecretError::NoSecrets);
    }
    Ok(secrets)
}

/// The `webhook-signature` value: one `v1,<base64>` per secret, in the order given.
pub fn sign(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let mac = secret.mac(id, timestamp, body);
            format!("{SIGNATURE_VERSION}{}", BASE64.encode(mac))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a receiver does with a delivery: true when `timestamp` is within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now` (unix seconds) and any `v1` signature in `header` was
/// made with any of `secrets`. Signatures of other versions are ignored, as the spec asks.
///
/// Each comparison is constant-time, so response timing does not reveal how much of a forged
/// signature was right.
pub fn verify(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
) -> bool {
    if now.abs_diff(timestamp) > TIMESTAMP_TOLERANCE_SECS {
        return false;
    }
    let candidates = v1_signatures(header);
    let expected: Vec<[u8; 32]> = secrets
        .iter()
        .map(|secret| secret.mac(id, timestamp, body))
        .collect();
    // Every pair is compared (no early exit) so timing does not depend on which one matched.
    let mut matched = subtle::Choice::from(0);
    for candidate in &candidates {
        for mac in &expected {
            matched |= candidate.as_slice().ct_eq(mac.as_slice());
        }
    }
    matched.into()
}

/// The decoded `v1` signatures of a header; entries that are not `v1` or not base64 are skipped.
fn v1_signatures(header: &str) -> Vec<Vec<u8>> {
    header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix(SIGNATURE_VERSION))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example published on https://www.standardwebhooks.com and in its reference libraries.
    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TIMESTAMP: i64 = 1649367553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SPEC_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    const OTHER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn spec_secrets() -> Vec<WebhookSecret> {
        vec![WebhookSecret::parse(SPEC_SECRET).unwrap()]
    }

    #[test]
    fn signing_the_spec_example_gives_the_published_signature() {
        let header = sign(&spec_secrets(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(header, SPEC_SIGNATURE);
    }

    #[test]
    fn the_published_signature_verifies_within_the_tolerance() {
        let secrets = spec_secrets();
        let verifies = |now| {
            verify(
                &secrets,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                SPEC_SIGNATURE,
                now,
            )
        };
        assert!(verifies(SPEC_TIMESTAMP));
        assert!(verifies(SPEC_TIMESTAMP + 300));
        assert!(verifies(SPEC_TIMESTAMP - 300));
        assert!(!verifies(SPEC_TIMESTAMP + 301));
        assert!(!verifies(SPEC_TIMESTAMP - 301));
    }

    #[test]
    fn two_secrets_give_two_signatures_each_of_which_verifies() {
        let both = parse_all(&format!("{SPEC_SECRET} {OTHER_SECRET}")).unwrap();
        let header = sign(&both, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let signatures: Vec<&str> = header.split(' ').collect();
        assert_eq!(signatures.len(), 2);
        assert_eq!(signatures[0], SPEC_SIGNATURE);
        assert_ne!(signatures[1], SPEC_SIGNATURE);

        // A receiver that knows only one of the secrets still accepts the delivery.
        for secret in [SPEC_SECRET, OTHER_SECRET] {
            let one = [WebhookSecret::parse(secret).unwrap()];
            let now = SPEC_TIMESTAMP;
            assert!(verify(
                &one,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &header,
                now
            ));
        }
        // And each signature alone verifies against both secrets.
        for signature in signatures {
            let now = SPEC_TIMESTAMP;
            assert!(verify(
                &both,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                signature,
                now
            ));
        }
    }

    #[test]
    fn a_tampered_body_id_or_timestamp_fails() {
        let secrets = spec_secrets();
        let now = SPEC_TIMESTAMP;
        let body = br#"{"email":"evil@example.com","username":"test_user"}"#;
        assert!(!verify(
            &secrets,
            SPEC_ID,
            SPEC_TIMESTAMP,
            body,
            SPEC_SIGNATURE,
            now
        ));
        let id = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpl";
        assert!(!verify(
            &secrets,
            id,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            SPEC_SIGNATURE,
            now
        ));
        let timestamp = SPEC_TIMESTAMP + 1;
        assert!(!verify(
            &secrets,
            SPEC_ID,
            timestamp,
            SPEC_BODY,
            SPEC_SIGNATURE,
            now
        ));
    }

    #[test]
    fn a_wrong_secret_or_malformed_header_fails() {
        let other = [WebhookSecret::parse(OTHER_SECRET).unwrap()];
        let now = SPEC_TIMESTAMP;
        assert!(!verify(
            &other,
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            SPEC_SIGNATURE,
            now
        ));

        let secrets = spec_secrets();
        let unversioned = SPEC_SIGNATURE.trim_start_matches("v1,");
        let other_version = SPEC_SIGNATURE.replace("v1,", "v1a,");
        for header in ["", "v1,", "v1,***", unversioned, &other_version] {
            assert!(
                !verify(&secrets, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, header, now),
                "{header:?} verified"
            );
        }
    }

    #[test]
    fn unknown_versions_next_to_a_good_signature_are_ignored() {
        let header = format!("v2,abc= {SPEC_SIGNATURE} v1,AAAA");
        let now = SPEC_TIMESTAMP;
        assert!(verify(
            &spec_secrets(),
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            &header,
            now
        ));
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let cases = [
            (
                "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                SecretError::MissingPrefix,
            ),
            (
                "whsk_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                SecretError::MissingPrefix,
            ),
            ("whsec_C2FVsBQI!!rscChlQIMV", SecretError::InvalidBase64),
            (
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7o",
                SecretError::InvalidBase64,
            ),
            ("whsec_", SecretError::EmptyKey),
        ];
        for (text, expected) in cases {
            let error = WebhookSecret::parse(text).unwrap_err();
            assert_eq!(error, expected, "{text:?}");
            let message = error.to_string();
            let key_part = text.trim_start_matches("whsec_");
            assert!(
                key_part.is_empty() || !message.contains(key_part),
                "{message:?} echoes the secret"
            );
        }
    }

    #[test]
    fn a_bad_secret_in_a_list_is_named_by_position() {
        let error = parse_all(&format!("{SPEC_SECRET} whsec_not*base64")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("#2"), "{message}");
        assert!(!message.contains("not*base64"), "{message}");
        assert!(!message.contains(SPEC_SECRET), "{message}");
    }

    #[test]
    fn an_empty_list_of_secrets_is_an_error() {
        assert_eq!(parse_all("").unwrap_err(), SecretError::NoSecrets);
        assert_eq!(parse_all(" \n\t ").unwrap_err(), SecretError::NoSecrets);
    }

    #[test]
    fn rotation_lists_keep_their_order_and_tolerate_any_whitespace() {
        let secrets = parse_all(&format!("\n {SPEC_SECRET}\t\t{OTHER_SECRET} \n")).unwrap();
        assert_eq!(secrets.len(), 2);
        let first_only = sign(&secrets[..1], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(first_only, SPEC_SIGNATURE);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let debug = format!("{secret:?}");
        assert_eq!(debug, "WebhookSecret(***)");
    }
}
