//! The command line: check, run errors, help, demo.

use crate::util::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::process::Command;

fn portcullis(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_panic(text: &str) {
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
        "{text}"
    );
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(&path, config_with("http://127.0.0.1:9", CATCH_ALL)).unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let (code, stdout, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn check_lists_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen:\n  address: not-an-address\nadmin:\n  address: 127.0.0.1:0\n  token: literal-secret-value-123\n\
upstreams:\n  a: { url: \"http://127.0.0.1:1\" }\nroutes:\n  - match: { path: /x }\n    upstream: b\n    auth: none\n",
    )
    .unwrap();
    let (code, _, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:2: listen.address")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:5: admin.token")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:10: routes[0].upstream")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("literal-secret-value-123"),
        "a secret was echoed: {stderr}"
    );
    no_panic(&stderr);
}

#[test]
fn unknown_keys_and_yaml_errors_are_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, "listen:\n  address: 127.0.0.1:0\nroutez: []\n").unwrap();
    let (code, _, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("routez"), "{stderr}");
    std::fs::write(&path, "listen:\n  address: 127.0.0.1:0\n  adress: typo\n").unwrap();
    let (code, _, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("typo.yaml:3: listen.adress: unknown field"),
        "{stderr}"
    );
    std::fs::write(&path, "listen: [unclosed\n").unwrap();
    let (code, _, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    no_panic(&stderr);
}

#[test]
fn run_with_a_missing_file_fails_in_one_sentence() {
    let (code, _, stderr) = portcullis(&["run", "--config", "/nonexistent/portcullis.yaml"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/portcullis.yaml"), "{stderr}");
    no_panic(&stderr);
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["demo", "--help"],
    ] {
        let (code, stdout, _) = portcullis(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(stdout.contains("Usage"), "{args:?}: {stdout}");
    }
    let (code, _, stderr) = portcullis(&["frobnicate"]);
    assert_ne!(code, 0);
    no_panic(&stderr);
}

#[tokio::test]
async fn demo_over_tls_prints_commands_that_work() {
    let demo = Demo::start_with(&["--tls"]).await;
    let gw = demo.field("gateway");
    assert!(gw.starts_with("https://127.0.0.1:"), "{gw}");
    // Run the banner's TLS commands as printed (they are curl lines with a comment).
    let commands: Vec<(Vec<String>, String)> = demo
        .banner
        .iter()
        .filter(|l| l.contains("/api/partner/status") && l.trim().starts_with("curl "))
        .map(|l| {
            let (command, comment) = l.split_once('#').unwrap();
            let args = command
                .split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect();
            (args, comment.trim().to_string())
        })
        .collect();
    assert_eq!(commands.len(), 3, "{:?}", demo.banner);
    for (args, comment) in commands {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["-o", "/dev/null", "-w", "%{http_code}"]);
        let (ok, out) = crate::pki::curl(&args).await;
        assert!(ok, "{out}");
        let expected = comment.split(':').next().unwrap();
        assert_eq!(out.trim(), expected, "{args:?} # {comment}");
    }
    let token = demo.token("ALICE");
    let ca = format!(
        "{}/ca.pem",
        demo.banner
            .iter()
            .find_map(|l| l.split("a fresh local CA in ").nth(1))
            .unwrap()
            .split("/ca.pem")
            .next()
            .unwrap()
    );
    let (ok, out) = crate::pki::curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &format!("{gw}/api/items"),
        "-H",
        &format!("authorization: Bearer {token}"),
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "200 2");
}

#[tokio::test]
async fn demo_serves_the_items_api_and_prints_working_commands() {
    let demo = Demo::start().await;
    let (gw, admin) = (demo.field("gateway"), demo.field("admin"));
    let found = &demo.banner;
    let token = |name: &str| demo.token(name);
    let (alice, alice_mfa, bob) = (token("ALICE"), token("ALICE_MFA"), token("BOB"));
    let with_body = |url: String, method: &str, token: &str, body: &'static str| {
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {token}"));
        let request = if body.is_empty() {
            request
        } else {
            request.header("content-type", "application/json")
        };
        request
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let authed = |url: String, method: &str, token: &str| {
        let body = if matches!(method, "POST" | "PUT") {
            "{\"name\":\"widget\"}"
        } else {
            ""
        };
        with_body(url, method, token, body)
    };
    let (status, headers, body) = send(authed(format!("{gw}/api/items"), "GET", &alice))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(json(&body).as_array().unwrap().len() >= 2);
    assert!(headers.get("server").is_none());
    let (status, _, body) = send(authed(format!("{gw}/api/items"), "POST", &alice))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        json(&body)["owner"],
        "alice",
        "identity header from the verified token"
    );
    // The demo API's document is enforced: the owner is read-only (mass assignment), and
    // the refused item never reaches the items API.
    let count = || async {
        let (_, _, body) = send(authed(format!("{gw}/api/items"), "GET", &alice))
            .await
            .unwrap();
        json(&body).as_array().unwrap().len()
    };
    let before = count().await;
    let mass_assignment = r#"{"name":"widget","owner":"bob"}"#;
    let (status, _, body) = send(with_body(
        format!("{gw}/api/items"),
        "POST",
        &alice,
        mass_assignment,
    ))
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["errors"][0]["code"], "read_only");
    assert_eq!(count().await, before, "the refused item was created");
    let (status, _, _) = send(authed(format!("{gw}/api/items"), "POST", &bob))
        .await
        .unwrap();
    assert_eq!(status, 403, "bob lacks items:write");
    assert_eq!(get(&format!("{gw}/api/items")).await.unwrap().0, 401);
    // Ownership (policy), then step-up for DELETE.
    let (status, _, body) = send(authed(format!("{gw}/api/items/3"), "PUT", &alice))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(json(&body)["required_action"], "put_items");
    assert_eq!(json(&body)["resource_type"], "items");
    let (status, headers, _) = send(authed(format!("{gw}/api/items/1"), "DELETE", &alice))
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_user_authentication")
    );
    let (status, _, body) = send(authed(format!("{gw}/api/items/1"), "DELETE", &alice_mfa))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        get(&format!("{gw}/api/public/status")).await.unwrap().0,
        200
    );
    assert_eq!(get(&format!("{gw}/internal/debug")).await.unwrap().0, 404);
    assert_eq!(get(&format!("{admin}/readyz")).await.unwrap().0, 200);
    assert!(
        found
            .iter()
            .any(|l| l.contains("curl -i") && l.contains(&gw)),
        "{found:?}"
    );
    // The dashboard is where the banner says, and the enumeration walk it suggests flags bob.
    assert_eq!(demo.field("dashboard"), format!("{admin}/"));
    let (status, _, page) = get(&format!("{admin}/")).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("action=\"/login\""), "{page}");
    for id in 1..=30 {
        let _ = send(authed(format!("{gw}/api/items/{id}"), "GET", &bob)).await;
    }
    let offenders = Request::get(format!("{admin}/admin/offenders"))
        .header("authorization", format!("Bearer {}", demo.admin_token()))
        .body(Full::default())
        .unwrap();
    let listed = json(&send(offenders).await.unwrap().2);
    assert_eq!(listed["principals"][0]["principal"], "bob", "{listed}");
    let events = Request::get(format!("{admin}/admin/events"))
        .header("authorization", format!("Bearer {}", demo.admin_token()))
        .body(Full::default())
        .unwrap();
    let events = json(&send(events).await.unwrap().2);
    let walked = events.as_array().unwrap().iter().any(|e| {
        e["reason"] == "enumeration"
            && e["user_id"] == "bob"
            && e["details"]["template"] == "/api/items/{id}"
    });
    assert!(walked, "{events}");
}

#[test]
fn policy_eval_prints_the_decision_and_check_warns_about_risky_settings() {
    let dir = tempfile::tempdir().unwrap();
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    for file in ["authz.rego", "data.json"] {
        std::fs::copy(format!("{policies}/{file}"), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"k","x":"KSexBRK64-3c_kZ4KBKLrSkDJpkZ9whgacjE32xzKDg","y":"x3h5ZOqsAOWSH7FJimD0YGdms9loUAFVjRqXTnNBUT4"}]}"#).unwrap();
    let config = "listen: { address: 127.0.0.1:0 }
upstreams:
  main: { url: \"http://127.0.0.1:9\" }
identity:
  jwt:
    - { name: t, issuer: https://idp, audiences: [api], jwks_file: jwks.json, algorithms: [ES256] }
policy:
  engine: rego
  rego: { files: [authz.rego], data: [data.json], query: data.api.authz.allow }
  on_error: allow
routes:
  - match: { prefix: /api/ }
    upstream: main
  - match: { prefix: /open/ }
    upstream: main
    auth: none
";
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let input = dir.path().join("input.json");
    let run = |body: &str| {
        std::fs::write(&input, body).unwrap();
        portcullis(&[
            "policy",
            "eval",
            "--config",
            path.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
    };
    let (code, stdout, stderr) = run(
        r#"{"user":{"id":"alice","roles":[],"scopes":["items:write"]},"action":"put_items","resource":{"type":"items","id":"1"},"request":{"method":"PUT"}}"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json(&stdout)["decision"], "allow");
    let (_, stdout, _) = run(
        r#"{"user":{"id":"bob","roles":[],"scopes":["items:write"]},"action":"put_items","resource":{"type":"items","id":"1"},"request":{"method":"PUT"}}"#,
    );
    assert_eq!(json(&stdout)["decision"], "deny");
    let (code, _, stderr) = run("{not json");
    assert_ne!(code, 0);
    no_panic(&stderr);
    let (code, stdout, _) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("warning: policy.on_error"), "{stdout}");
    assert!(
        stdout.contains("warning: routes[1]") && stdout.contains("public"),
        "{stdout}"
    );
}

#[test]
fn check_names_each_bad_detection_and_trace_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = "listen: { address: 127.0.0.1:0 }
upstreams:
  main: { url: \"http://127.0.0.1:9\" }
monitoring:
  detection:
    enumeration: { distinct_ids: 0, min_refused_ratio: 2 }
    privilege_escalation: { window: 0s }
    exfiltration: { factor: 1 }
  traces: { endpoint: \"ftp://127.0.0.1/x\", sample_ratio: 1.5 }
routes:
  - match: { prefix: / }
    upstream: main
    auth: none
";
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    let text = format!("{stdout}{stderr}");
    for named in [
        "monitoring.detection.enumeration.distinct_ids",
        "monitoring.detection.enumeration.min_refused_ratio",
        "monitoring.detection.privilege_escalation.window",
        "monitoring.detection.exfiltration.factor",
        "monitoring.traces.endpoint",
    ] {
        assert!(text.contains(named), "{named} not named in: {text}");
    }
    no_panic(&stderr);
}

#[test]
fn check_names_bad_websocket_and_grpc_settings_and_warns_about_grpc_validation() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "listen: { address: 127.0.0.1:0 }
upstreams:
  main: { url: \"http://127.0.0.1:9\" }
  rpc: { url: \"http://127.0.0.1:9\", protocol: grpc }
  odd: { url: \"http://127.0.0.1:9\", protocol: spdy }
limits:
  websocket: { max_message_bytes: 0, idle_timeout: 0s }
routes:
  - match: { path: /ws, methods: [POST] }
    upstream: main
    auth: none
    websocket: true
    websocket_origins: [\"https://app.test/path\", \"*\"]
  - match: { path: /plain }
    upstream: main
    auth: none
    websocket_origins: [\"https://app.test\"]
  - match: { prefix: /pkg.Svc/ }
    upstream: rpc
    auth: none
    websocket: true
";
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let (code, stdout, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    for named in [
        "upstreams.odd.protocol",
        "limits.websocket.max_message_bytes",
        "limits.websocket.idle_timeout",
        "routes[0].websocket:",
        "routes[0].websocket_origins[0]",
        "routes[1].websocket_origins",
        "routes[2].websocket",
    ] {
        assert!(stderr.contains(named), "{named} not named in: {stderr}");
    }
    assert!(
        !stderr.contains("websocket_origins[1]"),
        "`*` is allowed: {stderr}"
    );
    no_panic(&stderr);

    // A valid file with an OpenAPI document and a gRPC upstream: check says what is not
    // validated.
    let api = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/openapi/items.yaml"
    );
    std::fs::copy(api, dir.path().join("openapi.yaml")).unwrap();
    let good = "listen: { address: 127.0.0.1:0 }
upstreams:
  rpc: { url: \"http://127.0.0.1:9\", protocol: grpc }
validation: { openapi: openapi.yaml }
routes:
  - match: { prefix: /pkg.Svc/ }
    upstream: rpc
    auth: none
";
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, good).unwrap();
    let (code, stdout, stderr) = portcullis(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: routes[0]") && stdout.contains("gRPC"),
        "{stdout}"
    );
}
