//! The OpenAPI document says what the server does: the statuses and constraints a schema-driven
//! fuzzer once found missing are documented, and the live answers to those very requests are
//! what the document says (`scripts/fuzz-api` runs the fuzzer itself; this fails fast without
//! Python).

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, problem, test_config};

const ADMIN: &str = "admin-token-for-the-openapi-tests";
const PREFIX: &str = "urn:countersign:problem:";

async fn app_with_admin(db: &TestDb) -> TestApp {
    let mut config = test_config(db);
    config.admin_token = Some(countersign::config::Secret::new(ADMIN.to_owned()));
    TestApp::start_with(config).await
}

async fn document(app: &TestApp) -> Value {
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// An operation's documented response for `status`, its `$ref` resolved.
fn documented<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> Option<&'a Value> {
    let response = doc["paths"][path][method]["responses"].get(status.to_string())?;
    Some(match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/responses/");
            &doc["components"]["responses"][name]
        }
        None => response,
    })
}

/// The problem `type`s a documented problem+json response may carry.
fn problem_types(response: &Value) -> Vec<String> {
    let schema = &response["content"]["application/problem+json"]["schema"];
    assert_eq!(
        schema["allOf"][0]["$ref"], "#/components/schemas/Problem",
        "{response}"
    );
    schema["allOf"][1]["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that `method path` documents `status` as a problem of `kind`.
fn documents(doc: &Value, method: &str, path: &str, status: u16, kind: &str) {
    let response = documented(doc, method, path, status)
        .unwrap_or_else(|| panic!("{method} {path}: {status} is not documented"));
    let types = problem_types(response);
    assert!(
        types.contains(&format!("{PREFIX}{kind}")),
        "{method} {path} {status}: {types:?} lacks {kind}"
    );
}

/// Every operation of the document: (method, path template, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = vec![];
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

fn tagged(operation: &Value, tag: &str) -> bool {
    operation["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == tag)
}

#[tokio::test]
async fn the_items_the_fuzzer_found_are_documented() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let doc = document(&app).await;

    // 401 (and 403 while the admin API is off) on every admin operation, under the admin
    // scheme; 401 on every agent operation, cancel included, under the agent's.
    let mut admin_operations = 0;
    for (method, path, operation) in operations(&doc) {
        if tagged(&operation, "admin") {
            admin_operations += 1;
            documents(&doc, &method, &path, 401, "unauthorized");
            documents(&doc, &method, &path, 403, "admin-api-disabled");
            assert_eq!(operation["security"], json!([{"admin": []}]), "{path}");
        } else if tagged(&operation, "proposals") {
            documents(&doc, &method, &path, 401, "unauthorized");
            assert_eq!(operation["security"], json!([{"bearer": []}]), "{path}");
        }
    }
    assert_eq!(admin_operations, 7);
    let unauthorized = documented(&doc, "post", "/v1/proposals/{id}/cancel", 401).unwrap();
    assert!(unauthorized["headers"]["WWW-Authenticate"].is_object());

    // 400 invalid-json on outcome and cancel (and submit).
    for path in [
        "/v1/proposals/{id}/outcome",
        "/v1/proposals/{id}/cancel",
        "/v1/proposals",
    ] {
        documents(&doc, "post", path, 400, "invalid-json");
    }
    // 422 on `?wait=` and on cancel (whose body, when there is one, is an object, not `null`).
    documents(&doc, "get", "/v1/proposals/{id}", 422, "invalid-field");
    documents(
        &doc,
        "post",
        "/v1/proposals/{id}/cancel",
        422,
        "invalid-field",
    );
    let wait = doc["paths"]["/v1/proposals/{id}"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wait")
        .unwrap();
    assert_eq!(wait["schema"]["type"], "string");
    assert!(wait["schema"]["pattern"].is_string());
    let cancel_body = &doc["paths"]["/v1/proposals/{id}/cancel"]["post"]["requestBody"];
    assert_eq!(cancel_body["required"], false);
    assert_eq!(
        cancel_body["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/CancelRequest"})
    );

    // The Idempotency-Key constraint: 1–255 printable ASCII (white space only inside, as HTTP
    // takes it off the ends).
    let key = doc["paths"]["/v1/proposals"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    assert_eq!(key["schema"]["type"], "string");
    assert_eq!(key["schema"]["minLength"], 1);
    assert_eq!(key["schema"]["maxLength"], 255);
    let pattern = regex::Regex::new(key["schema"]["pattern"].as_str().unwrap()).unwrap();
    for good in ["acme-renewal-discount-1", "a b", "~!{}"] {
        assert!(pattern.is_match(good), "{good:?}");
    }
    for bad in ["", " a", "a ", "caf\u{e9}", "tab\there"] {
        assert!(!pattern.is_match(bad), "{bad:?}");
    }

    // The submit's other refusals, and the 429's Retry-After.
    for (status, kind) in [
        (403, "action-not-permitted"),
        (409, "idempotency-key-reused"),
        (413, "payload-too-large"),
        (422, "invalid-field"),
        (423, "agent-paused"),
        (429, "rate-limited"),
        (503, "unavailable"),
    ] {
        documents(&doc, "post", "/v1/proposals", status, kind);
    }
    let limited = documented(&doc, "post", "/v1/proposals", 429).unwrap();
    assert_eq!(
        limited["headers"]["Retry-After"]["schema"]["type"],
        "integer"
    );
}

/// A path template with its parameters filled in: a well-formed proposal id that does not
/// exist, an agent of the example manifests.
fn concrete(path: &str) -> String {
    path.replace("{id}", "prop_01jd2m3k4n5p6q7r8s9t0v1w2x")
        .replace("{agent}", "billing")
        .replace("{event}", "msg_nothing")
}

/// Sends a request and asserts its answer is a problem the document lists for the operation.
async fn answers_as_documented(
    doc: &Value,
    response: reqwest::Response,
    method: &str,
    path: &str,
    status: u16,
) -> Value {
    let body = problem(response, status).await;
    let kind = body["type"].as_str().unwrap().trim_start_matches(PREFIX);
    documents(doc, method, path, status, kind);
    body
}

#[tokio::test]
async fn those_requests_are_answered_as_documented() {
    let db = TestDb::sqlite();
    let app = app_with_admin(&db).await;
    let doc = document(&app).await;

    // Every admin operation without a token, and with an agent's: 401.
    for (method, path, operation) in operations(&doc) {
        if !tagged(&operation, "admin") {
            continue;
        }
        let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        for token in [None, Some(REVOPS)] {
            let mut request = app.http.request(verb.clone(), app.url(&concrete(&path)));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            answers_as_documented(&doc, response, &method, &path, 401).await;
        }
    }

    let id = app.create(REVOPS, &discount_proposal()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = |path: String, body: &'static str| {
        app.http
            .post(app.url(&path))
            .bearer_auth(REVOPS)
            .header("content-type", "application/json")
            .body(body)
    };
    let cancel = "/v1/proposals/{id}/cancel";
    let outcome = "/v1/proposals/{id}/outcome";

    // Cancel without a token: 401.
    let response = app
        .http
        .post(app.url(&format!("/v1/proposals/{id}/cancel")))
        .json(&json!({"reason": null}))
        .send()
        .await
        .unwrap();
    answers_as_documented(&doc, response, "post", cancel, 401).await;
    // Not JSON: 400 on outcome and cancel.
    for (template, path) in [(outcome, "outcome"), (cancel, "cancel")] {
        for body in ["", "{", "\u{0}"] {
            if body.is_empty() && path == "cancel" {
                continue; // no body is a cancellation without a reason
            }
            let response = post(format!("/v1/proposals/{id}/{path}"), body)
                .send()
                .await
                .unwrap();
            answers_as_documented(&doc, response, "post", template, 400).await;
        }
    }
    // A `null` cancel body, and an empty or malformed wait: 422.
    let response = post(format!("/v1/proposals/{id}/cancel"), "null")
        .send()
        .await
        .unwrap();
    let body = answers_as_documented(&doc, response, "post", cancel, 422).await;
    assert_eq!(body["field"], "(body)");
    for wait in ["", "soon", "1 fortnight"] {
        let response = app
            .http
            .get(app.url(&format!("/v1/proposals/{id}")))
            .query(&[("wait", wait)])
            .bearer_auth(REVOPS)
            .send()
            .await
            .unwrap();
        let body = answers_as_documented(&doc, response, "get", "/v1/proposals/{id}", 422).await;
        assert_eq!(body["field"], "wait");
    }
    // The proposal is still pending: nothing above changed it.
    let read: Value = app.get(REVOPS, &id).await.json().await.unwrap();
    assert_eq!(read["status"], "pending");

    // Idempotency keys outside the documented constraint are refused, naming the header; one
    // inside it (spaces inside) is taken.
    let submit = |key: String| {
        app.http
            .post(app.url("/v1/proposals"))
            .bearer_auth(REVOPS)
            .header("idempotency-key", key)
            .json(&discount_proposal())
            .send()
    };
    for key in ["x".repeat(256), " ".to_owned(), "caf\u{e9}".to_owned()] {
        let response = submit(key).await.unwrap();
        let body = answers_as_documented(&doc, response, "post", "/v1/proposals", 422).await;
        assert_eq!(body["field"], "Idempotency-Key");
    }
    let taken = submit("renewal discount 1".to_owned()).await.unwrap();
    assert_eq!(taken.status(), 201);
    assert!(documented(&doc, "post", "/v1/proposals", 201).is_some());
}
