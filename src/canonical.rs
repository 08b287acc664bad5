//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace.
//!
//! Two things hash JSON and must not depend on key order or formatting: the audit chain (an
//! event's `data`) and idempotency (is a retried body "the same body"?).

use serde_json::Value;

/// Writes `value` canonically. Numbers and strings use serde_json's own encoding, which is
/// deterministic for a given parsed value.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Hex SHA-256 of the canonical form.
pub fn sha256_hex(value: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(to_string(value).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(to_string(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
    }

    #[test]
    fn different_values_differ() {
        assert_ne!(sha256_hex(&json!({"a": 1})), sha256_hex(&json!({"a": 2})));
        assert_ne!(sha256_hex(&json!([1, 2])), sha256_hex(&json!([2, 1])));
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(to_string(&json!({"k\"": "a\nb"})), r#"{"k\"":"a\nb"}"#);
    }
}
