//! Request bodies: JSON in, problem+json out when it is not what it should be.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::ApiError;
use crate::domain::request::FieldError;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 256 * 1024;

/// The raw body, or 413 when it exceeded [`BODY_LIMIT`] (declared or while streaming).
pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit: BODY_LIMIT }
        } else {
            ApiError::InvalidJson(rejection.body_text())
        }
    })
}

/// Decodes JSON straight into `T`: 400 when it is not JSON, 422 naming the field when it is
/// JSON of the wrong shape.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        if error.inner().is_syntax() || error.inner().is_eof() {
            ApiError::InvalidJson(error.inner().to_string())
        } else {
            ApiError::InvalidFields(vec![FieldError::from_serde(error)])
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    Ok(value)
}

/// Parses JSON into a [`Value`] (when the document itself is needed, e.g. to hash it).
pub fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::request::ProposalRequest;

    #[test]
    fn syntax_errors_are_400_and_shape_errors_name_the_field() {
        assert!(matches!(
            decode::<ProposalRequest>(b"{not json"),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            decode::<ProposalRequest>(b"{\"action\": "),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            decode::<ProposalRequest>(b"{\"action\":\"a\",\"summary\":\"s\"} trailing"),
            Err(ApiError::InvalidJson(_))
        ));
        let Err(ApiError::InvalidFields(errors)) =
            decode::<ProposalRequest>(br#"{"action":"a","summary":"s","target":{"system":1}}"#)
        else {
            panic!()
        };
        assert_eq!(errors[0].field, "target.system");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let Err(ApiError::InvalidFields(errors)) =
            decode::<ProposalRequest>(br#"{"action":"a.b","summary":"x","summary":"y"}"#)
        else {
            panic!("a duplicate key must not pick a winner silently")
        };
        assert!(errors[0].message.contains("duplicate field"), "{errors:?}");
    }
}
