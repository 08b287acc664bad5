//! Slack's request signing (v0): `X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:" + ts + ":" + body))`
//! with `X-Slack-Request-Timestamp` within five minutes of now. Checked on the raw bytes before
//! anything is parsed, in constant time, against countersign's clock (so tests that move time
//! see the same window production does).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// How far a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECONDS: i64 = 300;

pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

/// Why a request was refused. Deliberately coarse towards the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp")]
    Missing,
    #[error("request timestamp outside the five-minute window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &Secret, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// The `X-Slack-Signature` value for a body sent at `timestamp` (unix seconds). The sandbox uses
/// it to sign what it delivers, exactly as Slack does.
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v0={}", hex::encode(digest))
}

/// Checks a request's signature headers against its raw body.
pub fn verify(
    secret: &Secret,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(SignatureError::Missing);
    };
    let sent: i64 = timestamp.parse().map_err(|_| SignatureError::Stale)?;
    if now.timestamp().abs_diff(sent) > MAX_SKEW_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let digest = signature
        .strip_prefix("v0=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(SignatureError::Mismatch)?;
    // `verify_slice` compares in constant time.
    mac(secret, timestamp, body)
        .verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example in Slack's "Verifying requests from Slack".
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: i64 = 1_531_420_618;
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const EXPECTED: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn signs_slacks_published_example() {
        assert_eq!(
            sign(&Secret::new(SECRET), TIMESTAMP, BODY.as_bytes()),
            EXPECTED
        );
    }

    #[test]
    fn verifies_the_example_and_refuses_every_alteration() {
        let secret = Secret::new(SECRET);
        let ts = TIMESTAMP.to_string();
        let check = |signature: Option<&str>, timestamp: Option<&str>, body: &str, now: i64| {
            verify(&secret, signature, timestamp, body.as_bytes(), at(now))
        };
        assert_eq!(check(Some(EXPECTED), Some(&ts), BODY, TIMESTAMP), Ok(()));
        assert_eq!(
            check(Some(EXPECTED), Some(&ts), BODY, TIMESTAMP + 300),
            Ok(())
        );
        assert_eq!(
            check(Some(EXPECTED), Some(&ts), BODY, TIMESTAMP + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(Some(EXPECTED), Some(&ts), BODY, TIMESTAMP - 301),
            Err(SignatureError::Stale)
        );
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            check(Some(EXPECTED), Some(&ts), &tampered, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        let other_ts = (TIMESTAMP + 1).to_string();
        assert_eq!(
            check(Some(EXPECTED), Some(&other_ts), BODY, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("v1=abc"), Some(&ts), BODY, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("v0=zz"), Some(&ts), BODY, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(None, Some(&ts), BODY, TIMESTAMP),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            check(Some(EXPECTED), None, BODY, TIMESTAMP),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            check(Some(EXPECTED), Some("soon"), BODY, TIMESTAMP),
            Err(SignatureError::Stale)
        );
        let wrong_secret = Secret::new("another secret");
        assert_eq!(
            verify(
                &wrong_secret,
                Some(EXPECTED),
                Some(&ts),
                BODY.as_bytes(),
                at(TIMESTAMP)
            ),
            Err(SignatureError::Mismatch)
        );
    }
}
