use super::*;

fn compile(yaml: &str) -> Result<GatewayConfig, Vec<String>> {
    compile_text(
        yaml,
        Path::new("/tmp/portcullis-test.yaml"),
        &Shared::default(),
    )
    .map_err(|e| {
        e.problems
            .iter()
            .map(|p| format!("{}@{}: {}", p.path, p.line.unwrap_or(0), p.message))
            .collect()
    })
}

const MINIMAL: &str = "
listen: { address: 127.0.0.1:0 }
upstreams:
  items: { url: http://127.0.0.1:9 }
routes:
  - match: { prefix: / }
    upstream: items
    auth: none
";

#[test]
fn minimal_config_compiles_with_defaults() {
    let config = compile(MINIMAL).map_err(|e| e.join("\n"));
    let config = match config {
        Ok(c) => c,
        Err(e) => unreachable!("{e}"),
    };
    assert_eq!(config.server.max_connections, 10000);
    assert_eq!(config.normalize.max_body_bytes, 1_048_576);
    assert_eq!(config.request_timeout, Duration::from_secs(30));
    assert_eq!(config.route_count, 1);
}

#[test]
fn unknown_key_is_an_error_with_its_name() {
    let yaml = MINIMAL.replace(
        "listen: { address: 127.0.0.1:0 }",
        "listen: { address: 127.0.0.1:0, adress: x }",
    );
    let errors = compile(&yaml).err().unwrap_or_default().join("\n");
    assert!(errors.contains("adress"), "{errors}");
}

#[test]
fn every_problem_is_reported_with_path_and_line() {
    let yaml = "
listen: { address: nowhere }
admin:
  address: 127.0.0.1:0
  token: hunter2-literal-secret
upstreams:
  items: { url: ftp://x }
routes:
  - match: { path: /a/../b }
    upstream: items
    auth: none
  - match: { path: /x, methods: [get] }
    upstream: missing
";
    let errors = compile(yaml).err().unwrap_or_default();
    let all = errors.join("\n");
    assert!(all.contains("listen.address@2"), "{all}");
    assert!(
        all.contains("admin.token@5") && all.contains("literal secret"),
        "{all}"
    );
    assert!(all.contains("upstreams.items.url@7"), "{all}");
    assert!(all.contains("routes[0].match.path@9"), "{all}");
    assert!(all.contains("routes[1].match.methods[0]"), "{all}");
    assert!(all.contains("routes[1].upstream@13"), "{all}");
    assert!(all.contains("routes[1].auth"), "{all}");
    assert!(!all.contains("hunter2"), "secret echoed: {all}");
}

#[test]
fn discovery_settings_compile() {
    let with = |body: &str| format!("{MINIMAL}monitoring:\n  discovery:\n{body}");
    let config = compile(&with(
        "    reserved_segments: [me]\n    max_templates_per_prefix: 7\n",
    ));
    let rules = config.ok().and_then(|c| c.templates);
    assert_eq!(
        rules,
        Some(portcullis::discovery::TemplateRules {
            reserved: vec!["me".into()],
            max_per_prefix: 7,
        })
    );
    let off = compile(&with("    infer_templates: false\n"));
    assert!(off.is_ok_and(|c| c.templates.is_none()));
    let zero = compile(&with("    max_templates_per_prefix: 0\n"));
    let errors = zero.err().unwrap_or_default().join("\n");
    assert!(errors.contains("max_templates_per_prefix"), "{errors}");
}

#[test]
fn alert_settings_are_checked() {
    let alerts = |body: &str| format!("{MINIMAL}monitoring:\n  alerts:\n{body}");
    let errors = |yaml: String| compile(&yaml).err().unwrap_or_default().join("\n");
    let plain = errors(alerts("    webhook: https://hooks.example.test/abc\n"));
    assert!(
        plain.contains("monitoring.alerts.webhook") && plain.contains("literal secret"),
        "{plain}"
    );
    let bad = errors(alerts(
        "    webhook: ${env:PORTCULLIS_TEST_HOOK}\n    format: teams\n    min_severity: urgent\n    max_per_minute: 0\n",
    ));
    for path in [
        "alerts.format",
        "alerts.min_severity",
        "alerts.max_per_minute",
    ] {
        assert!(bad.contains(path), "{path} not reported: {bad}");
    }
    let pagerduty = errors(alerts(
        "    webhook: ${env:PORTCULLIS_TEST_HOOK}\n    format: pagerduty\n",
    ));
    assert!(pagerduty.contains("alerts.routing_key"), "{pagerduty}");
}

#[test]
fn secret_references_resolve_from_files() {
    let dir = tempfile::tempdir().ok();
    let dir = dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_default();
    let _ = std::fs::write(dir.join("token"), "0123456789abcdef0123\n");
    let yaml = format!("{MINIMAL}admin:\n  address: 127.0.0.1:0\n  token: ${{file:token}}\n");
    let config = compile_text(&yaml, &dir.join("c.yaml"), &Shared::default()).ok();
    let token = config.and_then(|c| c.admin).and_then(|a| a.token);
    assert_eq!(
        token.as_ref().map(|t| t.expose()),
        Some("0123456789abcdef0123")
    );
    assert!(
        !format!("{token:?}").contains("0123"),
        "a secret printed: {token:?}"
    );
}

#[test]
fn missing_env_reference_is_reported() {
    let yaml = format!(
        "{MINIMAL}admin:\n  address: 127.0.0.1:0\n  token: ${{env:PORTCULLIS_SURELY_UNSET_VAR}}\n"
    );
    let errors = compile(&yaml).err().unwrap_or_default().join("\n");
    assert!(errors.contains("PORTCULLIS_SURELY_UNSET_VAR"), "{errors}");
}

#[test]
fn routes_require_authentication_unless_public() {
    let yaml = MINIMAL.replace("    auth: none\n", "");
    let errors = compile(&yaml).err().unwrap_or_default().join("\n");
    assert!(
        errors.contains("routes[0].auth") && errors.contains("identity.jwt"),
        "{errors}"
    );
}

#[test]
fn issuer_settings_are_checked() {
    let yaml = format!(
        "{MINIMAL}identity:\n  jwt:\n    - name: a\n      issuer: https://idp\n      jwks_uri: http://idp.example.com/jwks\n      algorithms: [HS256, none]\n"
    );
    let errors = compile(&yaml).err().unwrap_or_default().join("\n");
    assert!(errors.contains("identity.jwt[0].audiences"), "{errors}");
    assert!(
        errors.contains("identity.jwt[0].algorithms[0]")
            && errors.contains("identity.jwt[0].algorithms[1]"),
        "{errors}"
    );
    assert!(
        errors.contains("identity.jwt[0].jwks_uri") && errors.contains("loopback"),
        "{errors}"
    );
}

#[test]
fn browser_session_settings_are_checked() {
    let dir = std::env::temp_dir().join(format!("portcullis-session-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One reference, comma-separated keys (the first seals, all open).
    std::fs::write(
        dir.join("short"),
        "0123456789abcdef0123456789abcdef-ok, too-short",
    )
    .unwrap();
    std::fs::write(dir.join("long"), "0123456789abcdef0123456789abcdef-ok").unwrap();
    let (short, long) = (dir.join("short"), dir.join("long"));
    let (short, long) = (short.display(), long.display());
    let yaml = r#"
listen: { address: 127.0.0.1:0 }
upstreams:
  app: { url: http://127.0.0.1:9 }
identity:
  oidc_login:
    issuer: http://idp.example.com
    client_id: portal
    client_secret: literal-secret
    scopes: [profile]
    external_url: https://app.example.test/some/path
    post_logout_redirect: //evil.test/
    paths: { login: /auth/x, callback: /auth/x }
    session: { store: redis, keys: "${file:SHORT}", ttl: 1h, idle_timeout: 2h }
routes:
  - match: { prefix: /app/ }
    upstream: app
    auth: session
"#
    .replace("SHORT", &short.to_string());
    let errors = compile(&yaml).err().unwrap_or_default().join("\n");
    for expected in [
        "identity.oidc_login.issuer@7: http is only allowed for loopback hosts",
        "identity.oidc_login.client_secret@9: holds a literal secret",
        "identity.oidc_login.scopes@0: must include `openid`",
        "identity.oidc_login.external_url@11: must be an origin",
        "identity.oidc_login.post_logout_redirect@12: must be a path on this site",
        "identity.oidc_login.paths@13: login, callback and logout must be three different paths",
        "identity.oidc_login.session@0: ttl and idle_timeout must be positive, and idle_timeout no longer than ttl",
        "identity.oidc_login.session.keys@14: session key 1 has 9 bytes",
        "identity.oidc_login.session.store@14: `redis` keeps sessions in the shared rate-limit store",
    ] {
        assert!(
            errors.contains(expected),
            "missing `{expected}` in:\n{errors}"
        );
    }
    // A session route needs the login settings, and the access tokens an issuer to check them.
    let without_login = "
listen: { address: 127.0.0.1:0 }
upstreams:
  app: { url: http://127.0.0.1:9 }
routes:
  - match: { prefix: /app/ }
    upstream: app
    auth: session
";
    let errors = compile(without_login).err().unwrap_or_default().join("\n");
    assert!(
        errors.contains("`auth: session` needs `identity.oidc_login`"),
        "{errors}"
    );
    let unverified = r#"
listen: { address: 127.0.0.1:0 }
upstreams:
  app: { url: http://127.0.0.1:9 }
identity:
  oidc_login:
    issuer: http://127.0.0.1:9
    client_id: portal
    session: { keys: "${file:LONG}" }
routes:
  - match: { prefix: /app/ }
    upstream: app
    auth: none
"#
    .replace("LONG", &long.to_string());
    let errors = compile(&unverified).err().unwrap_or_default().join("\n");
    assert!(
        errors.contains("identity.oidc_login.issuer@7: the sessions' access tokens are verified like bearer tokens"),
        "{errors}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_forwarded_certificate_header_needs_trusted_proxies_and_a_valid_name() {
    let with = |listen: &str| {
        MINIMAL.replace(
            "listen: { address: 127.0.0.1:0 }",
            &format!("listen: {{ address: 127.0.0.1:0, {listen} }}"),
        )
    };
    let errors = compile(&with("client_cert_header: x-forwarded-client-cert"))
        .err()
        .unwrap_or_default()
        .join("\n");
    assert!(
        errors.contains("listen.client_cert_header") && errors.contains("trusted_proxies"),
        "{errors}"
    );
    let errors = compile(&with(
        "trusted_proxies: [10.0.0.0/8], client_cert_header: \"bad header\"",
    ))
    .err()
    .unwrap_or_default()
    .join("\n");
    assert!(errors.contains("not a header name"), "{errors}");
    let config = compile(&with(
        "trusted_proxies: [10.0.0.0/8], client_cert_header: X-Client-Cert",
    ))
    .map_err(|e| e.join("\n"))
    .unwrap();
    assert_eq!(
        config
            .normalize
            .client_cert_header
            .as_ref()
            .map(|h| h.as_str()),
        Some("x-client-cert")
    );
}
