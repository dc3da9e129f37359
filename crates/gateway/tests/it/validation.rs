//! Contract enforcement from OpenAPI (issue #6): the case matrix, streaming size limits,
//! order against authorization, shadow endpoints, response checks, `check` and reload.

use crate::identity::{ISSUER, baseline_claims, jwks, token};
use crate::util::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis::authn::sign::SigningKey;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/cases/validation");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: Option<String>,
    body_hex: Option<String>,
    status: u16,
    reason: Option<String>,
    #[serde(default)]
    errors: Vec<ExpectedError>,
    never_echo: Option<String>,
    endpoint: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    field: String,
    code: String,
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A directory with the case matrix's API document (and its second file).
fn contract_dir(extra_files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = test_dir(extra_files);
    for file in ["api.yaml", "schemas.yaml"] {
        std::fs::copy(format!("{CASES}/{file}"), dir.path().join(file)).unwrap();
    }
    dir
}

/// A gateway over `upstream` with the case matrix's document and the given YAML.
pub async fn with_contract(upstream: &Upstream, yaml: &str) -> Gateway {
    let dir = contract_dir(&[]);
    let config = config_with(&upstream.url(), yaml);
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    Gateway::start_in(dir).await
}

const VALIDATION: &str = "validation:
  openapi: api.yaml
  max_json_depth: 8
  relaxed_operations: [replaceOrder]
limits:
  max_json_string_bytes: 64
  max_body_bytes: 4096
";

#[tokio::test]
async fn request_cases() {
    let upstream = Upstream::start().await;
    let gw = with_contract(&upstream, &format!("{VALIDATION}{CATCH_ALL}")).await;
    let text = std::fs::read_to_string(format!("{CASES}/requests.yaml")).unwrap();
    let cases: Vec<Case> = serde_saphyr::from_str(&text).unwrap();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for case in cases {
        let body = match (&case.body, &case.body_hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(h)) => hex(h),
            _ => Vec::new(),
        };
        let mut head = format!(
            "{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n",
            case.request
        );
        for (name, value) in &case.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if case.body.is_some() || case.body_hex.is_some() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        let hits_before = upstream.hits();
        let answer = raw(gw.addr, &bytes).await;
        let name = &case.name;
        assert_eq!(raw_status(&answer), case.status, "{name}: {answer}");
        if case.status == 200 {
            assert_eq!(upstream.hits(), hits_before + 1, "{name}");
            assert_eq!(upstream.last().body.as_ref(), body.as_slice(), "{name}");
            continue;
        }
        assert_eq!(upstream.hits(), hits_before, "{name}: reached the upstream");
        let (head, problem) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("application/problem+json"),
            "{name}: {answer}"
        );
        let problem = json(problem);
        let errors: Vec<ExpectedError> = problem["errors"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| ExpectedError {
                        field: e["field"].as_str().unwrap().to_string(),
                        code: e["code"].as_str().unwrap().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(errors, case.errors, "{name}: {problem}");
        if let Some(secret) = &case.never_echo {
            assert!(!answer.contains(secret.as_str()), "{name} echoed: {answer}");
        }
        let id = problem["request_id"].as_str().unwrap().to_string();
        let event = gw
            .event_where("the refusal event", |e| e["request_id"] == id.as_str())
            .await;
        assert_eq!(
            event["reason"].as_str(),
            case.reason.as_deref(),
            "{name}: {event}"
        );
        if case.status == 400 {
            assert_eq!(event["event_type"], "validation_failure", "{name}");
        }
        if let Some(endpoint) = &case.endpoint {
            assert_eq!(event["endpoint"], endpoint.as_str(), "{name}");
        }
    }
    assert_eq!(
        upstream.heads(),
        upstream.hits(),
        "a refused request started upstream"
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_reading_the_rest() {
    let upstream = Upstream::start().await;
    let gw = with_contract(&upstream, &format!("{VALIDATION}{CATCH_ALL}")).await;
    // Chunked, so no Content-Length gives the size away: 8 KiB arrive, the rest never
    // does, and the answer must come anyway.
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let chunk = format!("{{\"sku\":\"{}", "A".repeat(8192));
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
        chunk.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(DEADLINE, stream.read(&mut answer))
        .await
        .expect("answered before the body ended")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert_eq!(
        upstream.heads(),
        0,
        "an oversized body reached the upstream"
    );
}

#[tokio::test]
async fn validation_runs_after_authentication_and_authorization() {
    let upstream = Upstream::start().await;
    let key = SigningKey::generate_es256("k1").unwrap().0;
    let deny_writes = "package test\nimport rego.v1\nallow if startswith(input.action, \"get_\")\n";
    let dir = contract_dir(&[("jwks.json", &jwks(&key)), ("readonly.rego", deny_writes)]);
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:
  jwt:
    - name: test
      issuer: {ISSUER}
      audiences: [api]
      jwks_file: jwks.json
      algorithms: [ES256]
policy:
  engine: rego
  rego: {{ files: [readonly.rego], query: data.test.allow }}
{VALIDATION}routes:
  - match: {{ prefix: /v1/ }}
    upstream: main
"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let invalid_post = |auth: Option<String>| {
        let mut request =
            Request::post(gw.url("/v1/orders")).header("content-type", "application/json");
        if let Some(token) = auth {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
            .body(Full::new(Bytes::from_static(b"{\"evil\":true}")))
            .unwrap()
    };
    // No token: 401, and nothing about the body's shape.
    let (status, _, body) = send(invalid_post(None)).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("errors"), "{body}");
    // A token the policy refuses writes: 403, still nothing about the body.
    let alice = token(&key, &baseline_claims());
    let (status, _, body) = send(invalid_post(Some(alice.clone()))).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("errors"), "{body}");
    // Allowed to read: now the contract applies (an undocumented parameter).
    let request = Request::get(gw.url("/v1/search?q=abc&debug=1"))
        .header("authorization", format!("Bearer {alice}"))
        .body(Full::default())
        .unwrap();
    let (status, _, body) = send(request).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["errors"][0]["field"], "query.debug");
    assert_eq!(
        upstream.heads(),
        0,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn shadow_endpoints_are_forwarded_recorded_and_listed() {
    let upstream = Upstream::start().await;
    let gw = with_contract(
        &upstream,
        &format!("validation:\n  openapi: api.yaml\n  unknown_operations: log\n{CATCH_ALL}"),
    )
    .await;
    for _ in 0..2 {
        let (status, _, _) = get(&gw.url("/v1/internal/export")).await.unwrap();
        assert_eq!(status, 200);
    }
    let (status, _, _) = get(&gw.url("/v1/health")).await.unwrap();
    assert_eq!(status, 200);
    // An undocumented endpoint does not excuse a documented one from its contract.
    let (status, _, _) = get(&gw.url("/v1/search")).await.unwrap();
    assert_eq!(status, 400);
    // Heads, not only complete requests: the refused one never started upstream.
    assert_eq!(upstream.heads(), 3);
    let event = gw
        .event_where("the shadow endpoint event", |e| {
            e["reason"] == "shadow_endpoint"
        })
        .await;
    assert_eq!(event["event_type"], "anomaly");
    assert_eq!(event["details"]["path"], "/v1/internal/export");
    let shadow_events = gw
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "shadow_endpoint")
        .count();
    assert_eq!(shadow_events, 1, "one event per new shadow endpoint");
    let request = Request::get(gw.admin_url("/admin/inventory"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::default())
        .unwrap();
    let (status, _, body) = send(request).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let endpoints = json(&body)["endpoints"].as_array().unwrap().clone();
    let find = |path: &str, method: &str| {
        endpoints
            .iter()
            .find(|e| e["path"] == path && e["method"] == method)
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path} not in {body}"))
    };
    let shadow = find("/v1/internal/export", "GET");
    assert_eq!(
        (shadow["documented"].clone(), shadow["count"].clone()),
        (json!(false), json!(2))
    );
    let health = find("/v1/health", "GET");
    assert_eq!(
        (health["documented"].clone(), health["count"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(find("/v1/orders", "POST")["count"], 0);
}

#[tokio::test]
async fn shadow_ids_fold_into_templates_and_export_as_openapi() {
    let upstream = Upstream::start().await;
    let gw = with_contract(
        &upstream,
        &format!("validation:\n  openapi: api.yaml\n  unknown_operations: log\n{CATCH_ALL}"),
    )
    .await;
    for path in [
        "/v1/legacy/users/17?verbose=1",
        "/v1/legacy/users/18",
        "/v1/legacy/users/550e8400-e29b-41d4-a716-446655440000/avatar",
    ] {
        let (status, _, _) = get(&gw.url(path)).await.unwrap();
        assert_eq!(status, 200);
    }
    let admin = |path: &str| {
        Request::get(gw.admin_url(path))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::default())
            .unwrap()
    };
    let (_, _, body) = send(admin("/admin/inventory")).await.unwrap();
    let endpoints = json(&body)["endpoints"].as_array().unwrap().clone();
    let shadow: Vec<(String, u64)> = endpoints
        .iter()
        .filter(|e| e["documented"] == false)
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shadow,
        vec![
            ("/v1/legacy/users/{id}".to_string(), 2),
            ("/v1/legacy/users/{uuid}/avatar".to_string(), 1),
        ],
        "{body}"
    );
    let (status, _, body) = send(admin("/admin/inventory?format=openapi"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let doc = json(&body);
    assert_eq!(doc["openapi"], "3.1.0");
    let op = &doc["paths"]["/v1/legacy/users/{id}"]["get"];
    assert_eq!(
        op["parameters"][0],
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
    );
    assert_eq!(op["parameters"][1]["name"], "verbose");
    assert_eq!(op["x-portcullis-observed"]["count"], 2);
    assert_eq!(op["responses"]["200"]["description"], "observed", "{body}");
    // Documented operations are never re-inferred into the export.
    assert!(doc["paths"].get("/v1/health").is_none(), "{body}");
}

const RESPONSES_DOC: &str = r#"{
  "openapi": "3.1.0",
  "info": {"title": "echo", "version": "1"},
  "paths": {
    "/echo": {"get": {"responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
      "type": "object", "required": ["path"],
      "properties": {"path": {"type": "string"}, "body_bytes": {"type": ["integer", "null"], "minimum": 0}}}}}}}}},
    "/leaky": {"get": {"responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
      "type": "object", "properties": {"path": {"type": "string"}}}}}}}}},
    "/created-only": {"get": {"responses": {"201": {"description": "created"}}}},
    "/big": {"get": {"parameters": [{"name": "bytes", "in": "query", "schema": {"type": "integer"}}],
      "responses": {"2XX": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
  }
}"#;

async fn responses_gateway(upstream: &Upstream, mode: &str) -> Gateway {
    let dir = test_dir(&[("api.json", RESPONSES_DOC)]);
    let config = config_with(
        &upstream.url(),
        &format!(
            "validation:\n  openapi: api.json\n  responses: {mode}\n  max_response_bytes: 1024\n{CATCH_ALL}"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    Gateway::start_in(dir).await
}

#[tokio::test]
async fn responses_that_break_the_contract_are_logged_or_blocked() {
    let upstream = Upstream::start().await;
    let logging = responses_gateway(&upstream, "log").await;
    let blocking = responses_gateway(&upstream, "block").await;
    for gw in [&logging, &blocking] {
        let (status, _, body) = get(&gw.url("/echo")).await.unwrap();
        assert_eq!(status, 200, "a conforming response passes: {body}");
        assert_eq!(json(&body)["path"], "/echo");
    }
    // Excessive data exposure: `body_bytes` is not in /leaky's response schema.
    let cases = [
        ("/leaky", "response_schema"),
        ("/created-only", "response_undeclared_status"),
        ("/big?bytes=10", "response_invalid_json"),
        ("/big?bytes=5000", "response_too_large"),
    ];
    for (path, reason) in cases {
        let (status, _, body) = get(&logging.url(path)).await.unwrap();
        assert_eq!(status, 200, "{path}: logged, delivered");
        if path.starts_with("/big") {
            let expected: usize = path.rsplit('=').next().unwrap().parse().unwrap();
            assert_eq!(body.len(), expected, "{path}: delivered intact");
        }
        let event = logging.event_where(reason, |e| e["reason"] == reason).await;
        assert_eq!(event["details"]["action"], "logged");
        assert_eq!(event["event_type"], "validation_failure");

        let (status, headers, body) = get(&blocking.url(path)).await.unwrap();
        assert_eq!(status, 502, "{path}: blocked: {body}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(
            !body.contains("body_bytes") && !body.contains("xxxx"),
            "{body}"
        );
        blocking
            .event_where(reason, |e| e["reason"] == reason)
            .await;
    }
}

/// `portcullis check` on the configuration in `dir`.
fn check(dir: &tempfile::TempDir) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.path().join("portcullis.yaml"))
        .output()
        .unwrap()
}

#[test]
fn check_names_the_file_and_place_of_document_problems() {
    let dir = test_dir(&[
        (
            "api.yaml",
            "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: {$ref: 'models.yaml#/Missing'}\n      responses: {'200': {description: ok}}\n  /b/{id}:\n    get:\n      parameters: [{name: id, in: path, style: matrix, schema: {type: string}}]\n      responses: {'200': {description: ok}}\n  /c:\n    get:\n      responses: {'200': {description: ok}}\n      parameters: [{name: q, in: query, schema: {type: string, pattern: '(unclosed'}}]\n",
        ),
        ("models.yaml", "Present: {type: object}\n"),
    ]);
    let config = config_with(
        "http://127.0.0.1:9",
        &format!(
            "validation:\n  openapi: api.yaml\n  relaxed_operations: [noSuchOperation]\n{CATCH_ALL}"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), &config).unwrap();
    let output = check(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for expected in [
        "api.yaml#/paths/~1a/post/requestBody/content/application~1json/schema: `models.yaml#/Missing` points at nothing",
        "api.yaml#/paths/~1b~1{id}/get/parameters/0: style `matrix` is not supported",
        "api.yaml#/paths/~1c/get/parameters/0/schema: invalid schema",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A valid document passes, and counts its operations.
    let dir = contract_dir(&[]);
    let valid = config.replace("  relaxed_operations: [noSuchOperation]\n", "");
    std::fs::write(dir.path().join("portcullis.yaml"), &valid).unwrap();
    let output = check(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("11 documented operations"), "{stdout}");

    // An unknown relaxed operation is reported.
    let dir = contract_dir(&[]);
    std::fs::write(dir.path().join("portcullis.yaml"), &config).unwrap();
    let output = check(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`noSuchOperation` names no operation"),
        "{stderr}"
    );
}

#[tokio::test]
async fn editing_the_document_reloads_the_contract() {
    let upstream = Upstream::start().await;
    let gw = with_contract(
        &upstream,
        &format!("validation:\n  openapi: api.yaml\n{CATCH_ALL}"),
    )
    .await;
    let (status, _, _) = get(&gw.url("/v1/reports")).await.unwrap();
    assert_eq!(status, 404);
    // A shared schema file changes too: the contract follows every file it was read from.
    let api = gw.config_path().with_file_name("api.yaml");
    let text = std::fs::read_to_string(&api).unwrap().replace(
        "  /health:\n",
        "  /reports:\n    get:\n      responses:\n        \"200\": { description: ok }\n  /health:\n",
    );
    std::fs::write(&api, text).unwrap();
    eventually_async("the new operation to be served", || async {
        matches!(get(&gw.url("/v1/reports")).await, Ok((s, _, _)) if s == 200)
    })
    .await;
    assert_eq!(
        upstream.heads(),
        1,
        "a 404 before the reload reached the upstream"
    );
}

/// schemathesis (pinned in tests/peers/requirements.txt) fuzzes the demo API through a
/// gateway enforcing the demo's document: conforming and deliberately non-conforming
/// requests. No answer may be a 5xx, every non-conforming request must be refused, and
/// refused by the gateway (tests/peers/fuzz_checks.py), never by the upstream.
#[tokio::test]
async fn a_property_based_fuzzer_gets_no_non_conforming_request_past_the_gateway() {
    let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/peers");
    assert!(
        std::path::Path::new(peers)
            .join("python/schemathesis")
            .exists(),
        "the schemathesis test peer is not installed: run scripts/install-deps.sh (scripts/test.sh does)"
    );
    let demo = Demo::start().await;
    let items_api = demo.field("upstream");
    let document = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/openapi/items.yaml"
    );
    let dir = test_dir(&[]);
    std::fs::copy(document, dir.path().join("openapi.yaml")).unwrap();
    let config = config_with(
        &items_api,
        "validation:\n  openapi: openapi.yaml\nroutes:\n  - match: { prefix: /api/ }\n    upstream: main\n    auth: none\n",
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let output = tokio::task::spawn_blocking({
        let base = gw.url("/api");
        let document = gw.config_path().with_file_name("openapi.yaml");
        let workdir = gw.config_path().with_file_name("");
        move || {
            std::process::Command::new("timeout")
                .arg("300")
                .args(["python3", "-m", "schemathesis.cli", "run"])
                .arg(document)
                .args(["--url", &base])
                .args([
                    "--checks",
                    "not_a_server_error,negative_data_rejection,refused_by_the_gateway",
                ])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args([
                    "--max-examples",
                    "40",
                    "--seed",
                    "20261130",
                    "--workers",
                    "1",
                ])
                // schemathesis keeps a cache in its working directory: not in the repository.
                .current_dir(&workdir)
                .env("PYTHONPATH", format!("{peers}/python:{peers}"))
                .env("SCHEMATHESIS_HOOKS", "fuzz_checks")
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    let generated: usize = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" generated, ")
                .map(|(n, _)| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no case count in:\n{stdout}"));
    assert!(generated >= 200, "only {generated} cases:\n{stdout}");
    // The gateway did refuse requests (the fuzzer's negative cases), with events.
    let refusals = gw
        .events()
        .into_iter()
        .filter(|e| e["event_type"] == "validation_failure")
        .count();
    assert!(refusals >= 50, "only {refusals} validation refusals");
    eprintln!("schemathesis: {generated} cases, {refusals} refused by the gateway");
}
