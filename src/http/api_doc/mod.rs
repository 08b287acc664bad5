//! The OpenAPI document served at `/openapi.json`, which SDKs are generated from.
//!
//! Most of it comes from the handlers' `#[utoipa::path]` annotations: every status each operation
//! can answer, its parameters with their constraints. This module adds what annotations cannot
//! say well: the error body (`Problem`) and one reusable response per kind of problem, naming the
//! problem `type`s it carries; the two bearer schemes (agent, admin); and the constraints the
//! domain enforces on request bodies, stated from the same constants the validation uses.
//! `scripts/fuzz-api` holds the document to the code: a request the schema allows must not be
//! refused for a reason the schema does not give, and every answer must be documented.

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::schema::{AdditionalProperties, AllOfBuilder, ArrayBuilder, ObjectBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Header, Ref, RefOr, Response, ResponseBuilder, Type, content::ContentBuilder, schema::Schema,
};
use utoipa::{OpenApi, PartialSchema, ToResponse, ToSchema};

use super::problem::TYPE_PREFIX;
use crate::domain::ActionId;
use crate::domain::request::{FieldError, limits};

#[derive(OpenApi)]
#[openapi(
    info(title = "countersign", description = "Approval gateway for AI agents: agents propose, people decide.\n\nEvery error is `application/problem+json` (RFC 9457) with a stable `type` to match on."),
    modifiers(&SecuritySchemes),
    tags((name = "proposals", description = "The agent API (an agent's bearer token)"), (name = "operations", description = "Health and metrics"), (name = "admin", description = "Operators' API (the admin token)")),
    components(
        schemas(Problem),
        responses(
            InvalidJson, Unauthorized, AdminDisabled, ActionNotPermitted, WrongExecutionToken,
            NotFound, InvalidState, OutcomeConflict, DeliveryInFlight, IdempotencyKeyReused, PayloadTooLarge, InvalidField,
            AgentPaused, RateLimited, Internal, Unavailable
        )
    )
)]
pub(super) struct ApiDoc;

/// `bearer`: an agent's token (`token_sha256` in its manifest); `admin`: the `admin_token`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "bearer",
            bearer(
                "An agent's token, whose SHA-256 is declared in its manifest (manifests/agents/).",
            ),
        );
        components.add_security_scheme(
            "admin",
            bearer("The admin_token of countersign's configuration (COUNTERSIGN_ADMIN_TOKEN)."),
        );
    }
}

/// The body of every error: RFC 9457 problem details, as `ApiError` writes them.
pub struct Problem;

impl PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        let string = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An error (RFC 9457 problem details, `application/problem+json`). Match on `type`; \
                 the other members are for people, except the extension members named here.",
            ))
            .property(
                "type",
                string(
                    "Stable identifier of the kind of problem: `urn:countersign:problem:<kind>`.",
                )
                .pattern(Some(format!("^{TYPE_PREFIX}[a-z-]+$"))),
            )
            .required("type")
            .property("title", string("A short summary of the kind of problem."))
            .required("title")
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("The HTTP status code.")),
            )
            .required("status")
            .property("detail", string("What went wrong with this request."))
            .property(
                "field",
                string(
                    "The (first) field in error: a path into the body (`summary`, \
                     `changes[3].path`), a parameter or a header (`Idempotency-Key`).",
                ),
            )
            .property(
                "errors",
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(FieldError::name()))
                    .description(Some("422: every field in error.")),
            )
            .property(
                "limit",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("413: the largest body accepted, in bytes.")),
            )
            .property(
                "proposal_status",
                AllOfBuilder::new()
                    .item(Ref::from_schema_name(crate::domain::Status::name()))
                    .description(Some("409 invalid-state: the proposal's status.")),
            )
            .property(
                "retry_after_seconds",
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .description(Some("429: when to retry, as `Retry-After` says.")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

impl ToSchema for Problem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Problem")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((FieldError::name().into(), FieldError::schema()));
        schemas.push((
            crate::domain::Status::name().into(),
            crate::domain::Status::schema(),
        ));
    }
}

/// A problem+json response whose `type` is one of `kinds`, with `members` always present.
fn problem_response(description: &str, kinds: &[&str], members: &[&str]) -> ResponseBuilder {
    let mut specific = ObjectBuilder::new().property(
        "type",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                kinds.iter().map(|kind| format!("{TYPE_PREFIX}{kind}")),
            )),
    );
    for member in members {
        specific = specific.required(*member);
    }
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(Problem::name()))
        .item(specific);
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new().schema(Some(schema)).build(),
    )
}

/// Reusable error responses, referenced by name from the handlers' annotations
/// (`(status = 401, response = Unauthorized)`).
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident: $description:literal, [$($kind:literal),+], [$($member:literal),*] $(, $extra:expr)?;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    let response = problem_response($description, &[$($kind),+], &[$($member),*]);
                    $(let response = ($extra)(response);)?
                    (stringify!($name), response.build().into())
                }
            }
        )+
    };
}

problem_responses! {
    /// 400.
    InvalidJson: "The body is not JSON (`invalid-json`).", ["invalid-json"], [];
    /// 401, with `WWW-Authenticate: Bearer`.
    Unauthorized: "No bearer token, or not one this endpoint takes (`unauthorized`).",
        ["unauthorized"], [],
        |r: ResponseBuilder| r.header("WWW-Authenticate", string_header("`Bearer`"));
    /// 403 on every admin endpoint while no admin token is configured.
    AdminDisabled: "No `admin_token` is configured: the admin API is off (`admin-api-disabled`).",
        ["admin-api-disabled"], [];
    /// 403 on submit.
    ActionNotPermitted: "The action is not in the agent's catalog, or is `read_only` for it \
        (`action-not-permitted`, audited).", ["action-not-permitted"], ["field"];
    /// 403 on an outcome.
    WrongExecutionToken: "The execution token is not this proposal's approval's \
        (`wrong-execution-token`, audited).", ["wrong-execution-token"], ["field"];
    /// 404.
    NotFound: "No such resource (`not-found`). A malformed proposal id, and another agent's \
        proposal, are answered alike.", ["not-found"], [];
    /// 409 on cancel and outcome.
    InvalidState: "The proposal is not in a state that allows this (`invalid-state`): cancel \
        when not pending; outcome when not approved, or already recorded.",
        ["invalid-state"], ["proposal_status"];
    /// 409 on an outcome.
    OutcomeConflict: "The proposal is not approved, or its outcome is recorded already \
        (`invalid-state`, with `proposal_status`); or the outcome names another digest than the \
        approved one (`digest-mismatch`, audited: the execution token is not spent; with \
        `field` and `approved_digest`, the approval's).", ["invalid-state", "digest-mismatch"],
        [];
    /// 409 on a redelivery.
    DeliveryInFlight: "A worker is delivering this callback right now (`delivery-in-flight`): \
        ask again once its attempt is recorded.", ["delivery-in-flight"], [];
    /// 409 on submit.
    IdempotencyKeyReused: "The `Idempotency-Key` was already used with a different body \
        (`idempotency-key-reused`).", ["idempotency-key-reused"], ["field"];
    /// 413.
    PayloadTooLarge: "The body is over 256 KiB (`payload-too-large`).",
        ["payload-too-large"], ["limit"];
    /// 422.
    InvalidField: "A field, parameter or header is missing, mistyped, unknown or out of bounds \
        (`invalid-field`): `field` names the first, `errors` lists them all.",
        ["invalid-field"], ["field", "errors"];
    /// 423 on submit.
    AgentPaused: "The agent, or this action, is paused by its manifest or an operator \
        (`agent-paused`, audited); `detail` gives the operator's reason.", ["agent-paused"], [];
    /// 429 on submit, with `Retry-After`.
    RateLimited: "The agent's `rate_limit` is used up (`rate-limited`): retry after \
        `Retry-After` seconds.", ["rate-limited"], ["retry_after_seconds"],
        |r: ResponseBuilder| r.header(
            "Retry-After",
            Header::builder()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    /// 500.
    Internal: "A bug or an unexpected database error (`internal`), logged with the request id.",
        ["internal"], [];
    /// 503.
    Unavailable: "The database is unreachable, busy or restarting (`unavailable`), or the \
        request was not answered in time (`request-timeout`): retry (with the same \
        `Idempotency-Key`).", ["unavailable", "request-timeout"], [];
}

fn string_header(description: &str) -> Header {
    Header::builder()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build()
}

/// Text the domain accepts: no control characters (Unicode's Cc) but newline and tab.
const TEXT: &str = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$";
/// The same, with something other than white space in it.
const NON_BLANK_TEXT: &str =
    r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x08\x0B-\x1F\x7F-\x9F]*$";
/// Anything with something other than white space in it.
const NON_BLANK: &str = r"^[\s\S]*\S[\s\S]*$";
/// An action id (`ActionId`): lowercase letters, digits, `.`, `-`, `_`, from a letter.
const ACTION: &str = r"^[a-z][a-z0-9._-]*$";
/// `expires_in`: one number and a unit, from 1m to 30d (`limits::EXPIRES_IN_MIN`..`MAX`). The
/// server also reads other humantime forms (`1h 30m`, `90min`) within those bounds.
pub const EXPIRES_IN: &str = "^(([1-9][0-9]{0,3}|[1-3][0-9]{4}|4[0-2][0-9]{3}|43[01][0-9]{2}|43200)m|([1-9][0-9]?|[1-6][0-9]{2}|7[01][0-9]|720)h|([1-9]|[12][0-9]|30)d)$";

/// An http(s) URL with a host, as the domain's `http_url` check (WHATWG parsing) accepts it: a
/// host name whose last label starts with a letter, or an IPv4 address; a port up to 65535.
/// (IPv6 literals, Unicode host names and valid punycode `xn--` labels are accepted too, but left
/// out of the pattern: whether punycode decodes is not something a regular expression can say.)
fn http_url_pattern() -> String {
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let port = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})";
    let label = ascii_label("A-WYZa-wyz0-9_-");
    let last_label = ascii_label("A-WYZa-wyz_-");
    format!(
        r"^[Hh][Tt][Tt][Pp][Ss]?://(({label}\.)*{last_label}\.?|({octet}\.){{3}}{octet})(:{port})?([/?#][\x21-\x7E]*)?$"
    )
}

/// A host label of letters, digits, `_` and `-` that does not start with `xn--` (any case), as a
/// pattern without look-ahead: `first` is the class of first characters other than `x`, which
/// is spelled out so that `x`, `xn` and `xn-` are followed by anything but the rest of `xn--`.
fn ascii_label(first: &str) -> String {
    let rest = "[A-Za-z0-9_-]*";
    format!(
        "([{first}]{rest}|[Xx]([A-MO-Za-mo-z0-9_-]{rest}|[Nn]([A-Za-z0-9_]{rest}|-([A-Za-z0-9_]{rest})?)?)?)"
    )
}

fn text(min: usize, max: usize) -> Value {
    let pattern = if min > 0 { NON_BLANK_TEXT } else { TEXT };
    json!({"minLength": min, "maxLength": max, "pattern": pattern})
}

fn http_url() -> Value {
    json!({"maxLength": limits::URL, "pattern": http_url_pattern()})
}

/// Any JSON value (replacing the `object` the annotations say), at most
/// `limits::JSON_VALUE_BYTES` serialized.
fn any_json(description: &str) -> Value {
    let kib = limits::JSON_VALUE_BYTES / 1024;
    json!({"type": null, "description": format!("{description} Any JSON value, at most {kib} KiB serialized.")})
}

/// The finished document: the annotations' document, with the body constraints added.
pub(super) fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    let schemas = body_constraints()
        .into_iter()
        .map(|(schema, patch)| (format!("/components/schemas/{schema}"), patch));
    // utoipa makes an optional body nullable, and `null` is not a body cancel takes: none, or an
    // object.
    let cancel = (
        "/paths/~1v1~1proposals~1{id}~1cancel/post/requestBody".to_owned(),
        json!({"required": false}),
    );
    for (pointer, patch) in schemas.chain([cancel]) {
        let target = doc
            .pointer_mut(&pointer)
            .unwrap_or_else(|| panic!("OpenAPI document: no {pointer}"));
        merge(target, patch);
    }
    doc
}

/// JSON Merge Patch (RFC 7396): objects merge, `null` removes a member, anything else replaces.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

/// What `ProposalRequest::validate` and the handlers check, by the schema (and property) it
/// constrains.
// Long on purpose: a declarative table, one entry per constrained property, read top to bottom
// against the validation it mirrors; split into pieces, it would be harder to check against it.
fn body_constraints() -> Vec<(&'static str, Value)> {
    use super::admin::CONTROL_REASON_MAX;
    use super::proposals::{DETAILS_MAX_BYTES, REASON_MAX};
    let kib = limits::JSON_VALUE_BYTES / 1024;
    vec![
        (
            "ProposalRequest/properties/action",
            json!({"minLength": 1, "maxLength": ActionId::MAX_LEN, "pattern": ACTION}),
        ),
        (
            "ProposalRequest/properties/summary",
            text(1, limits::SUMMARY),
        ),
        (
            "ProposalRequest/properties/rationale",
            text(0, limits::RATIONALE),
        ),
        (
            "ProposalRequest/properties/requested_by",
            text(1, limits::REQUESTED_BY),
        ),
        ("ProposalRequest/properties/callback_url", http_url()),
        (
            "ProposalRequest/properties/expires_in",
            json!({"pattern": EXPIRES_IN}),
        ),
        (
            "ProposalRequest/properties/changes",
            json!({"maxItems": limits::CHANGES}),
        ),
        (
            "ProposalRequest/properties/evidence",
            json!({"maxItems": limits::EVIDENCE}),
        ),
        (
            "ProposalRequest/properties/params",
            json!({
                "maxProperties": limits::PARAMS,
                "propertyNames": text(1, limits::PARAM_KEY),
                "description": format!(
                    "Numbers and strings policies read (amount, currency, discount_percent, \
                     recipients…): at most {} keys, each value at most {kib} KiB of JSON.",
                    limits::PARAMS),
            }),
        ),
        (
            "ProposalRequest/properties/metadata",
            json!({"description": format!("Free-form, returned as sent: at most {kib} KiB of JSON.")}),
        ),
        ("Target/properties/system", text(1, limits::TARGET_PART)),
        ("Target/properties/type", text(1, limits::TARGET_PART)),
        ("Target/properties/id", text(1, limits::TARGET_PART)),
        ("Target/properties/url", http_url()),
        // Beside `path`, at least one of `before` and `after`.
        ("Change", json!({"minProperties": 2})),
        ("Change/properties/path", text(1, limits::CHANGE_PATH)),
        (
            "Change/properties/before",
            any_json("The value before; absent: the value is added."),
        ),
        (
            "Change/properties/after",
            any_json("The value after; absent: the value is removed."),
        ),
        ("Evidence/properties/label", text(1, limits::EVIDENCE_LABEL)),
        (
            "Evidence/properties/excerpt",
            text(0, limits::EVIDENCE_EXCERPT),
        ),
        ("Evidence/properties/url", http_url()),
        (
            "CancelRequest/properties/reason",
            json!({"maxLength": REASON_MAX}),
        ),
        (
            "OutcomeRequest/properties/details",
            json!({"type": null, "description": format!(
                "Anything useful to a later reader (error message, external ids): any JSON \
                 value, at most {} KiB serialized.", DETAILS_MAX_BYTES / 1024)}),
        ),
        (
            "ExecutionOutcome/properties/details",
            any_json("What the agent reported."),
        ),
        (
            "ControlRequest/properties/reason",
            json!({"minLength": 1, "maxLength": CONTROL_REASON_MAX, "pattern": NON_BLANK}),
        ),
        (
            "ControlRequest/properties/action",
            json!({"maxLength": ActionId::MAX_LEN, "pattern": ACTION}),
        ),
    ]
}

#[cfg(test)]
mod tests;
