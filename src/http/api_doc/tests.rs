//! The document against the code: its patterns against the parsers, its problem types against
//! the errors, its constraints where they should land.

use std::collections::BTreeSet;

use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;
use crate::domain::request::ProposalRequest;
use crate::domain::{ProposalId, Status};
use crate::http::problem::ApiError;
use crate::http::proposals::{IDEMPOTENCY_KEY_MAX, idempotency_key};

fn doc() -> Value {
    crate::http::openapi()
}

/// Strings a fully anchored pattern matches (proptest's generator takes no anchors).
fn matching(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    let inner = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .expect("patterns are anchored");
    proptest::string::string_regex(inner).expect("proptest reads the pattern")
}

fn matches(pattern: &str, text: &str) -> bool {
    regex::Regex::new(pattern).unwrap().is_match(text)
}

/// Runs `check` on strings `pattern` matches: the same strings on every run, so that a run's
/// verdict does not depend on its luck. (`COUNTERSIGN_PROPTEST_RANDOM=1` draws fresh ones, for
/// hunting.)
fn for_each_match(pattern: &str, check: impl Fn(String) -> Result<(), TestCaseError>) {
    let config = Config::with_cases(2_000);
    let mut runner = if std::env::var_os("COUNTERSIGN_PROPTEST_RANDOM").is_some() {
        TestRunner::new(config)
    } else {
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    };
    runner.run(&matching(pattern), check).unwrap();
}

fn errors_with(field: &str, value: Value) -> Vec<String> {
    let mut body = json!({"action": "crm.lead.tag", "summary": "Tag the lead"});
    body[field] = value;
    match ProposalRequest::from_json(body).map(ProposalRequest::validate) {
        Ok(Ok(_)) => vec![],
        Ok(Err(errors)) => errors.into_iter().map(|e| format!("{e:?}")).collect(),
        Err(error) => vec![format!("{error:?}")],
    }
}

#[test]
fn what_the_text_patterns_allow_is_accepted() {
    for (pattern, min, max) in [
        (NON_BLANK_TEXT, 1, limits::SUMMARY),
        (TEXT, 0, limits::RATIONALE),
    ] {
        for_each_match(pattern, |text| {
            let field = if min > 0 { "summary" } else { "rationale" };
            if text.chars().count() <= max {
                prop_assert_eq!(errors_with(field, json!(text)), Vec::<String>::new());
            }
            Ok(())
        });
    }
    // …and what the domain refuses, the pattern does not allow.
    for refused in ["", " ", "\n\t", "a\u{7}b", "\u{85}x", "x\u{9f}"] {
        assert!(!matches(NON_BLANK_TEXT, refused), "{refused:?}");
        assert!(
            !errors_with("summary", json!(refused)).is_empty(),
            "{refused:?}"
        );
    }
    assert!(matches(TEXT, "") && matches(TEXT, "two\nlines\tand a tab"));
}

#[test]
fn what_the_url_pattern_allows_is_accepted() {
    let pattern = http_url_pattern();
    for_each_match(&pattern, |url| {
        if url.len() <= limits::URL {
            prop_assert_eq!(
                errors_with("callback_url", json!(url)),
                Vec::<String>::new()
            );
        }
        Ok(())
    });
    for url in [
        "https://agents.internal.example/revops-crm/countersign",
        "http://10.20.0.7:8080/hook?x=1#y",
        "HTTPS://Example.COM",
        "http://localhost./",
        "http://x.xn-a.xn.x-n.example/",
    ] {
        assert!(matches(&pattern, url), "{url}");
    }
    for url in [
        "ftp://example.com/",
        "http://a.1/",
        "http://a:65536/",
        "http://0x10/",
        "https://",
        "HTTP://XN--.A",
        "http://xn--a.example/",
    ] {
        assert!(!matches(&pattern, url), "{url}");
    }
}

#[test]
fn expires_in_pattern_is_exactly_the_bounds_in_minutes_hours_and_days() {
    for (unit, top) in [("m", 50_000), ("h", 1_000), ("d", 40)] {
        for n in 0..=top {
            let text = format!("{n}{unit}");
            assert_eq!(
                matches(EXPIRES_IN, &text),
                errors_with("expires_in", json!(text)).is_empty(),
                "{text}"
            );
        }
    }
}

#[test]
fn action_and_proposal_id_patterns_are_the_parsers() {
    for_each_match(ACTION, |action| {
        if action.len() <= ActionId::MAX_LEN {
            prop_assert!(ActionId::parse(&action).is_ok(), "{}", action);
        }
        Ok(())
    });
    let id = r"^prop_[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$";
    let documented = &doc()["paths"]["/v1/proposals/{id}"]["get"]["parameters"][0];
    assert_eq!(documented["name"], "id");
    assert_eq!(documented["schema"]["pattern"], id);
    for_each_match(id, |text| {
        prop_assert!(ProposalId::parse(&text).is_ok(), "{}", text);
        Ok(())
    });
    let generated = ProposalId::generate();
    assert!(matches(id, generated.as_str()));
    assert!(
        !matches(id, "prop_01jd2m3k4n5p6q7r8s9t0v1w2u"),
        "u is not Crockford"
    );
}

#[test]
fn the_idempotency_key_header_is_documented_as_the_handler_reads_it() {
    let doc = doc();
    let parameters = doc["paths"]["/v1/proposals"]["post"]["parameters"]
        .as_array()
        .unwrap();
    let key = parameters
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    let schema = &key["schema"];
    assert_eq!(schema["type"], "string");
    assert_eq!(schema["minLength"], 1);
    assert_eq!(schema["maxLength"], IDEMPOTENCY_KEY_MAX);
    let pattern = schema["pattern"].as_str().unwrap();
    let accepted = |text: &str| {
        let mut headers = HeaderMap::new();
        let Ok(value) = HeaderValue::from_str(text) else {
            return false;
        };
        headers.insert("idempotency-key", value);
        matches!(idempotency_key(&headers), Ok(Some(_)))
    };
    // Every key of up to three characters over an alphabet with the edge cases; HTTP takes
    // white space around a value off, so a key is documented without it.
    let alphabet = [' ', '\t', '!', 'a', '~', '\u{7f}', 'é'];
    let mut keys = vec![String::new()];
    for _ in 0..3 {
        let longer: Vec<String> = keys
            .iter()
            .flat_map(|k| alphabet.iter().map(move |c| format!("{k}{c}")))
            .collect();
        keys.extend(longer);
    }
    for text in keys
        .iter()
        .map(String::as_str)
        .chain(["x".repeat(255).as_str()])
    {
        let on_the_wire = text == text.trim_matches([' ', '\t']);
        if on_the_wire {
            assert_eq!(matches(pattern, text), accepted(text), "{text:?}");
        }
    }
    assert!(!accepted(&"x".repeat(256)));
}

#[test]
fn each_problem_response_carries_only_types_its_status_answers() {
    let errors = [
        ApiError::Unauthorized,
        ApiError::AdminUnauthorized,
        ApiError::AdminDisabled,
        ApiError::PayloadTooLarge { limit: 1 },
        ApiError::InvalidJson(String::new()),
        ApiError::field("summary", "must not be empty"),
        ApiError::NotPermitted(String::new()),
        ApiError::AgentPaused(None),
        ApiError::NotFound,
        ApiError::NoSuchDelivery,
        ApiError::DeliveryInFlight,
        ApiError::NoSuchAgent,
        ApiError::RateLimited {
            retry_after: std::time::Duration::from_secs(1),
        },
        ApiError::WrongState {
            status: Status::Approved,
            detail: "",
        },
        ApiError::WrongExecutionToken,
        ApiError::IdempotencyKeyReused,
        ApiError::DigestMismatch {
            approved: serde_json::from_value(json!("sha256:00")).unwrap(),
        },
        ApiError::RequestTimeout,
        ApiError::Unavailable(String::new()),
        ApiError::Internal(String::new()),
    ];
    let answered: BTreeSet<(String, String)> = errors
        .iter()
        .map(|e| {
            let problem = e.problem();
            let status = problem.status.unwrap().as_u16().to_string();
            (status, problem.type_url.unwrap())
        })
        .collect();

    let doc = doc();
    let mut documented = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(reference) = response["$ref"].as_str() else {
                    continue;
                };
                let name = reference.trim_start_matches("#/components/responses/");
                let component = &doc["components"]["responses"][name];
                let content = &component["content"]["application/problem+json"];
                let kinds = content["schema"]["allOf"][1]["properties"]["type"]["enum"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name}: no problem types"));
                for kind in kinds {
                    let pair = (status.clone(), kind.as_str().unwrap().to_owned());
                    assert!(
                        answered.contains(&pair),
                        "{method} {path}: {status} documents {kind}, which no error answers with it"
                    );
                    documented.insert(pair);
                }
            }
        }
    }
    assert_eq!(documented, answered, "every error is documented somewhere");
}

#[test]
fn every_body_constraint_lands() {
    // `finish` panics on a pointer that names nothing; this builds the document once more.
    let doc = doc();
    let request = &doc["components"]["schemas"]["ProposalRequest"]["properties"];
    assert_eq!(request["summary"]["maxLength"], limits::SUMMARY);
    assert_eq!(request["changes"]["maxItems"], limits::CHANGES);
    let change = &doc["components"]["schemas"]["Change"];
    assert!(
        change["properties"]["before"].get("type").is_none(),
        "any JSON"
    );
    let cancel = &doc["paths"]["/v1/proposals/{id}/cancel"]["post"]["requestBody"];
    assert_eq!(cancel["required"], false);
    assert_eq!(
        cancel["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CancelRequest"
    );
}
