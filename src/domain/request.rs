//! The body of `POST /v1/proposals`, and the rules that turn it into a proposal or into a list of
//! field errors. Nothing here trusts the agent: every string is bounded, every URL is http(s).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

use super::{ActionId, Change, DataClass, Evidence, ProposalContent, Target, Verdict};

/// Limits on what an agent may send. The whole body is capped separately (256 KiB).
pub mod limits {
    pub const SUMMARY: usize = 300;
    pub const RATIONALE: usize = 4_000;
    pub const TARGET_PART: usize = 200;
    pub const URL: usize = 2_048;
    pub const CHANGES: usize = 10_000;
    pub const CHANGE_PATH: usize = 512;
    /// Serialized size of one `before`/`after`/`params` value or of all `metadata`.
    pub const JSON_VALUE_BYTES: usize = 16 * 1024;
    pub const PARAMS: usize = 100;
    pub const PARAM_KEY: usize = 64;
    pub const EVIDENCE: usize = 50;
    pub const EVIDENCE_LABEL: usize = 200;
    pub const EVIDENCE_EXCERPT: usize = 2_000;
    pub const REQUESTED_BY: usize = 200;
    pub const EXPIRES_IN_MIN: std::time::Duration = std::time::Duration::from_secs(60);
    pub const EXPIRES_IN_MAX: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
}

/// What an agent proposes. Unknown fields are refused, so a typo is an error rather than a
/// silently ignored intention.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalRequest {
    /// An action id from the agent's catalog.
    #[schema(example = "crm.opportunity.update")]
    pub action: String,
    /// One line, in words, of what will happen.
    #[schema(example = "Apply 15% discount to Acme renewal")]
    pub summary: String,
    pub rationale: Option<String>,
    pub target: Option<Target>,
    /// The diff: at most 10,000 entries.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Numbers and strings policies read (amount, currency, discount_percent, recipients…).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    #[serde(default)]
    pub data_classes: Vec<DataClass>,
    /// The human on whose behalf the agent acts.
    pub requested_by: Option<String>,
    /// Where the decision is delivered; http or https.
    pub callback_url: Option<String>,
    /// A duration such as `30m` or `8h` (1 minute to 30 days) after which the proposal expires.
    #[schema(example = "8h")]
    pub expires_in: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// One thing wrong with a request, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, ToSchema)]
pub struct FieldError {
    /// A path into the body: `summary`, `target.url`, `changes[3].path`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A request that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub action: ActionId,
    pub summary: String,
    pub rationale: Option<String>,
    pub target: Option<Target>,
    pub changes: Vec<Change>,
    pub params: Map<String, Value>,
    pub evidence: Vec<Evidence>,
    pub data_classes: Vec<DataClass>,
    pub requested_by: Option<String>,
    pub callback_url: Option<String>,
    pub expires_in: Option<Duration>,
    pub metadata: Map<String, Value>,
}

impl ValidRequest {
    /// The stored content of a proposal made from this request, with its verdict and expiry.
    pub fn into_content(
        self,
        verdict: Verdict,
        expires_at: Option<DateTime<Utc>>,
    ) -> ProposalContent {
        ProposalContent {
            action: self.action,
            summary: self.summary,
            rationale: self.rationale,
            target: self.target,
            changes: self.changes,
            params: self.params,
            evidence: self.evidence,
            data_classes: self.data_classes,
            requested_by: self.requested_by,
            callback_url: self.callback_url,
            expires_at,
            metadata: self.metadata,
            verdict,
        }
    }
}

impl ProposalRequest {
    /// Deserializes a parsed JSON body; type errors name the field path.
    pub fn from_json(value: Value) -> Result<Self, FieldError> {
        from_json_value(value)
    }

    /// Applies every rule, collecting all the errors so an agent can fix them in one go.
    pub fn validate(self) -> Result<ValidRequest, Vec<FieldError>> {
        let mut v = Checker::default();

        let action = ActionId::parse(&self.action)
            .map_err(|e| v.fail("action", e.0))
            .ok();
        v.text("summary", &self.summary, 1, limits::SUMMARY);
        if let Some(rationale) = &self.rationale {
            v.text("rationale", rationale, 0, limits::RATIONALE);
        }
        if let Some(target) = &self.target {
            v.target(target);
        }
        v.changes(&self.changes);
        v.params(&self.params);
        v.evidence(&self.evidence);
        if let Some(requested_by) = &self.requested_by {
            v.text("requested_by", requested_by, 1, limits::REQUESTED_BY);
        }
        if let Some(url) = &self.callback_url {
            v.http_url("callback_url", url);
        }
        let expires_in = self
            .expires_in
            .as_deref()
            .and_then(|text| v.duration("expires_in", text));
        v.json_size("metadata", &Value::Object(self.metadata.clone()));

        let mut data_classes = self.data_classes;
        data_classes.sort_by_key(|c| *c as u8);
        data_classes.dedup();

        match action {
            Some(action) if v.errors.is_empty() => Ok(ValidRequest {
                action,
                summary: self.summary,
                rationale: self.rationale,
                target: self.target,
                changes: self.changes,
                params: self.params,
                evidence: self.evidence,
                data_classes,
                requested_by: self.requested_by,
                callback_url: self.callback_url,
                expires_in,
                metadata: self.metadata,
            }),
            _ => Err(v.errors),
        }
    }
}

/// Deserializes `value` into `T`; an error names the field by its path in the body.
pub fn from_json_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(FieldError::from_serde)
}

impl FieldError {
    /// Names the field of a serde error by its path in the body (`target.url`,
    /// `changes[3].path`), including a missing field, which serde reports at its parent.
    pub fn from_serde<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> Self {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let field = match missing_field_name(&message) {
            Some(name) if path == "." => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None if path == "." => "(body)".to_owned(),
            None => path,
        };
        FieldError::new(field, message)
    }
}

/// The field a "missing field" or "duplicate field" error is about (serde reports both at the
/// parent's path).
fn missing_field_name(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("duplicate field `"))?
        .split('`')
        .next()
}

#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn target(&mut self, target: &Target) {
        self.text("target.system", &target.system, 1, limits::TARGET_PART);
        self.text("target.type", &target.kind, 1, limits::TARGET_PART);
        self.text("target.id", &target.id, 1, limits::TARGET_PART);
        if let Some(url) = &target.url {
            self.http_url("target.url", url);
        }
    }

    /// Too many changes is one error, not one per change.
    fn changes(&mut self, changes: &[Change]) {
        if changes.len() > limits::CHANGES {
            self.fail(
                "changes",
                format!(
                    "at most {} changes per proposal (got {})",
                    limits::CHANGES,
                    changes.len()
                ),
            );
            return;
        }
        for (i, change) in changes.iter().enumerate() {
            self.text(
                &format!("changes[{i}].path"),
                &change.path,
                1,
                limits::CHANGE_PATH,
            );
            if change.before.is_none() && change.after.is_none() {
                self.fail(
                    format!("changes[{i}]"),
                    "a change needs `before`, `after` or both",
                );
            }
            for (side, value) in [("before", &change.before), ("after", &change.after)] {
                if let Some(value) = value {
                    self.json_size(&format!("changes[{i}].{side}"), value);
                }
            }
        }
    }

    fn params(&mut self, params: &Map<String, Value>) {
        if params.len() > limits::PARAMS {
            self.fail("params", format!("at most {} parameters", limits::PARAMS));
        }
        for (key, value) in params {
            self.text(&format!("params.{key}"), key, 1, limits::PARAM_KEY);
            self.json_size(&format!("params.{key}"), value);
        }
    }

    fn evidence(&mut self, evidence: &[Evidence]) {
        if evidence.len() > limits::EVIDENCE {
            self.fail(
                "evidence",
                format!("at most {} evidence items", limits::EVIDENCE),
            );
        }
        for (i, item) in evidence.iter().enumerate() {
            self.text(
                &format!("evidence[{i}].label"),
                &item.label,
                1,
                limits::EVIDENCE_LABEL,
            );
            if let Some(excerpt) = &item.excerpt {
                self.text(
                    &format!("evidence[{i}].excerpt"),
                    excerpt,
                    0,
                    limits::EVIDENCE_EXCERPT,
                );
            }
            if let Some(url) = &item.url {
                self.http_url(&format!("evidence[{i}].url"), url);
            }
        }
    }

    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Bounded length in characters, and no control characters other than newline and tab:
    /// they have no business in text a reviewer reads.
    fn text(&mut self, field: &str, text: &str, min: usize, max: usize) {
        let len = text.chars().count();
        if len < min || text.trim().len() < min {
            self.fail(field, "must not be empty");
        } else if len > max {
            self.fail(field, format!("at most {max} characters (got {len})"));
        } else if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.fail(field, "must not contain control characters");
        }
    }

    fn http_url(&mut self, field: &str, text: &str) {
        if text.len() > limits::URL {
            return self.fail(field, format!("at most {} characters", limits::URL));
        }
        match url::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(_) => self.fail(field, "must be an http or https URL with a host"),
            Err(e) => self.fail(
                field,
                format!("not a URL: {}", crate::addresses::url_error(text, e)),
            ),
        }
    }

    fn json_size(&mut self, field: &str, value: &Value) {
        let size = serde_json::to_string(value).map_or(usize::MAX, |s| s.len());
        if size > limits::JSON_VALUE_BYTES {
            self.fail(
                field,
                format!(
                    "at most {} bytes of JSON (got {size})",
                    limits::JSON_VALUE_BYTES
                ),
            );
        }
    }

    fn duration(&mut self, field: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text) {
            Ok(d) if (limits::EXPIRES_IN_MIN..=limits::EXPIRES_IN_MAX).contains(&d) => Some(d),
            Ok(_) => {
                self.fail(field, "must be between 1m and 30d");
                None
            }
            Err(e) => {
                self.fail(field, format!("not a duration such as 30m or 8h: {e}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"action": "crm.opportunity.update", "summary": "Apply 15% discount"})
    }

    fn errors_of(body: Value) -> Vec<FieldError> {
        ProposalRequest::from_json(body)
            .map_err(|e| vec![e])
            .and_then(ProposalRequest::validate)
            .unwrap_err()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn minimal_request_is_valid() {
        let valid = ProposalRequest::from_json(minimal())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(valid.action.as_str(), "crm.opportunity.update");
        assert!(valid.changes.is_empty());
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        assert_eq!(errors_of(json!({"action": "a.b"}))[0].field, "summary");
        let mut body = minimal();
        body["target"] = json!({"system": "crm", "type": "Opp"});
        assert_eq!(errors_of(body)[0].field, "target.id");
        let mut body = minimal();
        body["changes"] = json!([{"path": "x", "after": 1}, {"path": 5}]);
        assert_eq!(errors_of(body)[0].field, "changes[1].path");
        let mut body = minimal();
        body["surprise"] = json!(true);
        assert!(errors_of(body)[0].message.contains("surprise"));
    }

    #[test]
    fn every_rule_names_its_field() {
        let mut body = minimal();
        body["summary"] = json!("x".repeat(limits::SUMMARY + 1));
        body["callback_url"] = json!("ftp://example.com/hook");
        body["target"] =
            json!({"system": "crm", "type": "Opp", "id": "1", "url": "javascript:alert(1)"});
        body["evidence"] = json!([{"label": "", "url": "https://ok.example"}]);
        body["expires_in"] = json!("10s");
        body["changes"] = json!([{"path": "amount"}]);
        body["requested_by"] = json!("a\u{0007}b");
        let errors = errors_of(body);
        assert_eq!(
            fields(&errors),
            [
                "summary",
                "target.url",
                "changes[0]",
                "evidence[0].label",
                "requested_by",
                "callback_url",
                "expires_in"
            ]
        );
    }

    #[test]
    fn too_many_changes_is_one_error() {
        let mut body = minimal();
        body["changes"] = Value::Array(vec![json!({"path": "a", "after": 1}); limits::CHANGES + 1]);
        assert_eq!(fields(&errors_of(body)), ["changes"]);
    }

    #[test]
    fn data_classes_are_deduplicated_and_checked() {
        let mut body = minimal();
        body["data_classes"] = json!(["pii", "financial", "pii"]);
        let valid = ProposalRequest::from_json(body)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(valid.data_classes, [DataClass::Pii, DataClass::Financial]);
        let mut body = minimal();
        body["data_classes"] = json!(["secret"]);
        assert_eq!(errors_of(body)[0].field, "data_classes[0]");
    }

    #[test]
    fn expires_in_is_parsed() {
        let mut body = minimal();
        body["expires_in"] = json!("8h");
        let valid = ProposalRequest::from_json(body)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(valid.expires_in, Some(Duration::from_secs(8 * 3600)));
    }
}
