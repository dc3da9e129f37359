//! Browser sessions (`identity.oidc_login`, `auth: session`) with the real OpenID provider
//! (`oidc-provider`) and headless Chromium: login, cookie, refresh, CSRF, step-up, logout,
//! and the IdP going down.

use crate::oidc::Idp;
use crate::pki::Ca;
use crate::util::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

const SESSION_KEYS: &str = "first-session-key-0123456789abcdef,old-session-key-0123456789abcdefgh";

/// The gateway's configuration: TLS (so the `__Host-` cookie is a real one), the IdP's
/// access tokens checked as bearer tokens, and session routes, one of them needing MFA.
fn config(upstream: &str, issuer: &str, store: &str, extra: &str) -> String {
    with_listen(
        &config_with(
            upstream,
            &format!(
                "identity:
  jwt:
    - name: idp
      issuer: {issuer}
      audiences: [https://api.test]
      jwks_uri: {issuer}/jwks
      algorithms: [ES256]
      token_types: [at+jwt]
  oidc_login:
    issuer: {issuer}
    client_id: portal
    client_secret: ${{file:portal-secret}}
    scopes: [openid, profile, offline_access, items:read, items:write]
    session: {{ store: {store}, keys: \"${{file:session-keys}}\", ttl: 1h, idle_timeout: 10m }}
    refresh_before: 5s
  forward:
    identity_headers: {{ x-user: sub }}
headers:
  content-security-policy: \"default-src 'self'; frame-ancestors 'none'\"
  x-content-type-options: nosniff
{extra}{ALLOW_ALL}routes:
  - match: {{ prefix: /app/ }}
    upstream: main
    auth: session
  - match: {{ prefix: /secure/ }}
    upstream: main
    auth: session
    require_mfa: [GET]
  - match: {{ path: / }}
    upstream: main
    auth: none
"
            ),
        ),
        "  tls: { cert: server.pem, key: server.key }\n",
    )
}

fn session_dir(ca: &Ca, config: &str) -> tempfile::TempDir {
    let dir = test_dir(&[
        ("portcullis.yaml", config),
        ("portal-secret", "portal-secret"),
        ("session-keys", SESSION_KEYS),
    ]);
    ca.server().write(dir.path(), "server");
    dir
}

/// Tells the IdP where the portal client may be sent back to (the gateways' addresses).
async fn register(idp: &Idp, gateways: &[&Gateway]) {
    let uris: Vec<String> = gateways
        .iter()
        .map(|g| format!("https://{}/auth/callback", g.addr))
        .collect();
    let logout: Vec<String> = gateways
        .iter()
        .map(|g| format!("https://{}/", g.addr))
        .collect();
    let body = serde_json::json!({ "redirect_uris": uris, "post_logout_redirect_uris": logout });
    let request = Request::post(format!("{}/__portal", idp.issuer))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    assert_eq!(send(request).await.unwrap().0, 200);
}

/// Runs the browser through `steps` (see tests/peers/login_browser.mjs).
async fn browser(state: &Path, gw: &Gateway, idp: &Idp, steps: &str) -> Value {
    run_browser(state, &format!("https://{}", gw.addr), &idp.issuer, steps).await
}

/// Runs the browser script (asynchronously: the upstream and the gateway's peers share this
/// test's runtime); any failed step fails the test.
async fn run_browser(state: &Path, base: &str, issuer: &str, steps: &str) -> Value {
    run_browser_with(state, base, issuer, steps, &[]).await
}

/// [`run_browser`] with extra environment for the script.
async fn run_browser_with(
    state: &Path,
    base: &str,
    issuer: &str,
    steps: &str,
    env: &[(&str, String)],
) -> Value {
    let peers = browser_peers();
    let mut command = std::process::Command::new("node");
    command
        .arg("login_browser.mjs")
        .arg(state)
        .arg(base)
        .arg(issuer)
        .arg(steps)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(peers);
    let output = tokio::task::spawn_blocking(move || command.output().expect("node"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed: {text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = json(text.trim());
    for (key, value) in seen.as_object().unwrap().iter() {
        assert!(
            !key.ends_with("Error"),
            "step failed: {key}: {value}\n{seen:#}"
        );
    }
    seen
}

/// The claims of a JWT (already verified by the gateway; read here to see whose it is).
fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The bearer tokens the upstream received, in order.
fn bearers(upstream: &Upstream) -> Vec<String> {
    upstream
        .all()
        .iter()
        .filter_map(|s| s.headers.get("authorization"))
        .filter_map(|v| v.to_str().ok()?.strip_prefix("Bearer ").map(String::from))
        .collect()
}

#[tokio::test]
async fn browser_login_refresh_csrf_step_up_and_logout() {
    let idp = Idp::start_with(&[("AT_TTL", std::ffi::OsStr::new("8"))], None);
    let upstream = Upstream::start().await;
    let ca = Ca::new("Session CA");
    let dir = session_dir(&ca, &config(&upstream.url(), &idp.issuer, "cookie", ""));
    let state = dir.path().join("browser-state.json");
    let gw = Gateway::start_in(dir).await;
    register(&idp, &[&gw]).await;

    let seen = browser(
        &state,
        &gw,
        &idp,
        "login,tamper,csrf,keepWorking,parallel,stepUp,twoTabs,replay,logout",
    )
    .await;
    let origin = format!("https://{}", gw.addr);

    // Without a session: a fetch gets 401 (with the login path), a navigation 302.
    assert_eq!(seen["xhrWithoutSession"]["status"], 401, "{seen:#}");
    assert!(
        seen["xhrWithoutSession"]["body"]["login"]
            .as_str()
            .unwrap()
            .starts_with("/auth/login"),
        "{seen:#}"
    );
    assert_eq!(seen["firstHop"]["status"], 302);
    let authorize = seen["authorizeUrl"].as_str().unwrap();
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=portal",
    ] {
        assert!(authorize.contains(part), "{part} missing from {authorize}");
    }
    assert_eq!(seen["landed"], format!("{origin}/app/page?x=1"));
    assert_eq!(seen["xhrWithSession"], 200, "{:#?}", gw.events());
    // The cookie: exactly the contract's flags, a browser-session cookie, not readable by script.
    assert_eq!(
        seen["cookie"],
        serde_json::json!({
            "httpOnly": true, "secure": true, "sameSite": "Lax", "path": "/", "expires": -1,
            "size": seen["cookie"]["size"],
        })
    );
    assert!(seen["cookie"]["size"].as_u64().unwrap() < 4000);
    assert_eq!(seen["cookieVisibleToScript"], false);

    // The upstream saw alice's access token and identity, never a gateway cookie.
    let tokens = bearers(&upstream);
    assert!(!tokens.is_empty());
    assert_eq!(claims(&tokens[0])["sub"], "alice");
    assert_eq!(claims(&tokens[0])["aud"], "https://api.test");
    for seen in upstream.all() {
        let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
        assert!(
            cookies
                .iter()
                .all(|c| !c.to_str().unwrap().contains("__Host-portcullis")),
            "a gateway cookie reached the upstream: {cookies:?}"
        );
    }
    assert!(
        upstream
            .all()
            .iter()
            .any(|s| s.headers.get("x-user").is_some_and(|v| v == "alice"))
    );

    // A tampered cookie is no session: 401 for a fetch, the login redirect for a page.
    assert_eq!(seen["tamperedXhr"], 401);
    assert_eq!(seen["tamperedNavigation"], 302);
    gw.event_where("tampered", |e| e["reason"] == "session_invalid")
        .await;

    // CSRF: the page's own POST passes; from another origin it is refused before the upstream.
    assert_eq!(seen["sameOriginPost"], 200);
    assert_eq!(seen["forgedPost"], 403);
    let posts = upstream.all().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 1, "a cross-site POST reached the upstream");
    gw.event_where("csrf", |e| e["reason"] == "cross_site_request")
        .await;

    // Past the access token's expiry the page keeps working, with a new token upstream.
    let statuses = seen["keepWorking"].as_array().unwrap();
    assert!(
        statuses.len() >= 10 && statuses.iter().all(|s| s == 200),
        "{statuses:?}"
    );
    let distinct: BTreeSet<String> = bearers(&upstream)
        .into_iter()
        .filter(|t| claims(t)["sub"] == "alice")
        .collect();
    assert!(distinct.len() >= 2, "the access token was never refreshed");

    // 20 requests at once with an expired token: one refresh at the IdP, all served.
    let parallel = seen["parallelStatuses"].as_array().unwrap();
    assert!(
        parallel.len() == 20 && parallel.iter().all(|s| s == 200),
        "{parallel:?}"
    );
    assert_eq!(seen["parallelRefreshes"], 1, "{seen:#}");
    assert_eq!(seen["parallelRefreshErrors"], 0);

    // Step-up: a fetch gets the RFC 9470 challenge; a page goes through the IdP again with
    // max_age=0 and acr_values, signs in with a second factor, and lands where it asked.
    assert_eq!(seen["stepUpXhr"]["status"], 401);
    assert!(
        seen["stepUpXhr"]["auth"]
            .as_str()
            .unwrap()
            .contains("insufficient_user_authentication")
    );
    let step_up = seen["stepUpAuthorize"].as_str().unwrap();
    assert!(
        step_up.contains("max_age=0") && step_up.contains("acr_values=mfa"),
        "{step_up}"
    );
    assert_eq!(
        seen["stepUpAsked"], 1,
        "the IdP did not ask for a new sign-in"
    );
    assert_eq!(seen["stepUpLanded"]["url"], format!("{origin}/secure/page"));
    assert_eq!(seen["stepUpXhrAfter"], 200);

    // Two tabs logging in at once both finish where they started.
    assert_eq!(seen["pendingCookies"], 2);
    assert_eq!(
        seen["tabs"],
        serde_json::json!([format!("{origin}/app/tab-a"), format!("{origin}/app/tab-b")])
    );
    assert_eq!(seen["tabsStatus"], 200);

    // A used callback is refused, in the same browser and in another, and makes no session.
    assert_eq!(seen["replaySameBrowser"], 400);
    assert_eq!(seen["replayOtherBrowser"], 400);
    assert_eq!(seen["replayOtherCookie"], false);
    gw.event_where("replay", |e| e["reason"] == "login_state_unknown")
        .await;

    // Logout: confirmed, then RP-initiated logout at the IdP; the old cookie is dead and the
    // IdP asks for credentials again.
    assert_eq!(seen["logoutConfirm"], 1);
    let end = seen["endSessionUrl"].as_str().unwrap();
    assert!(end.starts_with(&idp.issuer), "{end}");
    assert_eq!(seen["afterLogout"], format!("{origin}/"));
    assert_eq!(seen["cookieAfterLogout"], false);
    assert_eq!(seen["xhrAfterLogout"], 401);
    assert_eq!(seen["oldCookieAfterLogout"], 401);
    assert_eq!(seen["idpAsksAgain"], true);
    gw.event_where("revoked", |e| e["reason"] == "session_revoked")
        .await;
    // None of the refusals above reached the upstream: all it saw on session routes came
    // with a session's access token.
    for seen in upstream.all() {
        assert!(
            seen.headers.contains_key("authorization") || !seen.uri.starts_with("/app/"),
            "{} {} reached the upstream without a session",
            seen.method,
            seen.uri
        );
    }
    gw.event_where("logout", |e| {
        e["event_type"] == "session" && e["reason"] == "logout"
    })
    .await;
}

#[tokio::test]
async fn the_idp_down_at_refresh_time_ends_the_session_cleanly() {
    let mut idp = Idp::start_with(&[("AT_TTL", std::ffi::OsStr::new("8"))], None);
    let upstream = Upstream::start().await;
    let ca = Ca::new("Session CA");
    let dir = session_dir(&ca, &config(&upstream.url(), &idp.issuer, "cookie", ""));
    let state = dir.path().join("browser-state.json");
    let gw = Gateway::start_in(dir).await;
    register(&idp, &[&gw]).await;
    let seen = browser(&state, &gw, &idp, "login").await;
    assert_eq!(seen["xhrWithSession"], 200);
    let hits = upstream.hits();
    idp.stop();
    let seen = browser(&state, &gw, &idp, "afterExpiry").await;
    assert_eq!(seen["expiredXhr"], 401, "{seen:#}");
    assert_eq!(seen["expiredNavigation"]["status"], 302);
    assert!(
        seen["expiredNavigation"]["location"]
            .as_str()
            .unwrap()
            .starts_with("/auth/login?return_to=%2Fapp%2Fpage")
    );
    assert_eq!(
        upstream.hits(),
        hits,
        "a refused request reached the upstream"
    );
    // Why, twice: the refresh's own event (with the provider's error) and the refusal's.
    let refresh = gw
        .event_where("refresh failed", |e| {
            e["event_type"] == "session" && e["reason"] == "session_refresh_failed"
        })
        .await;
    assert!(!refresh["details"]["detail"].as_str().unwrap().is_empty());
    gw.event_where("refused", |e| {
        e["event_type"] == "auth_failure" && e["reason"] == "session_refresh_failed"
    })
    .await;
    assert!(
        !gw.events()
            .iter()
            .any(|e| e["details"]["status"].as_u64().unwrap_or(0) >= 500),
        "a 5xx was answered"
    );
}

#[tokio::test]
async fn two_instances_share_redis_sessions_and_refresh_once() {
    let idp = Idp::start_with(&[("AT_TTL", std::ffi::OsStr::new("8"))], None);
    let upstream = Upstream::start().await;
    let redis = Redis::start().await;
    let ca = Ca::new("Session CA");
    // A generous store timeout: the suite runs many tests at once on two cores.
    let limits =
        "rate_limit:\n  store: redis\n  redis: { url: \"${file:redis-url}\", timeout: 2s }\n";
    let start = |ca: &Ca| {
        let dir = session_dir(ca, &config(&upstream.url(), &idp.issuer, "redis", limits));
        std::fs::write(dir.path().join("redis-url"), redis.url()).unwrap();
        dir
    };
    let (a_dir, b_dir) = (start(&ca), start(&ca));
    let state = a_dir.path().join("browser-state.json");
    let a = Gateway::start_in(a_dir).await;
    let b = Gateway::start_in(b_dir).await;
    register(&idp, &[&a, &b]).await;
    let seen = browser(&state, &a, &idp, "login").await;
    assert_eq!(seen["xhrWithSession"], 200, "{:#?}", a.events());
    // The cookie holds only a sealed id: the tokens stay in Redis.
    assert!(seen["cookie"]["size"].as_u64().unwrap() < 200, "{seen:#}");
    // The same browser on the other instance is logged in too.
    assert_eq!(browser(&state, &b, &idp, "fetch").await["fetch"], 200);
    // After expiry, 20 at once on each instance: one refresh between them.
    let stats = || async { json(&get(&format!("{}/__stats", idp.issuer)).await.unwrap().2) };
    let before = stats().await["refresh_token"].as_u64().unwrap_or(0);
    let seen = run_browser_with(
        &state,
        &format!("https://{}", a.addr),
        &idp.issuer,
        "parallelBoth",
        &[("GW2", format!("https://{}", b.addr))],
    )
    .await;
    let statuses = seen["parallelStatuses"].as_array().unwrap();
    assert!(
        statuses.len() == 40 && statuses.iter().all(|s| s == 200),
        "{seen:#}"
    );
    let after = stats().await;
    let refreshes = |gw: &Gateway| {
        gw.events()
            .into_iter()
            .filter(|e| e["event_type"] == "session")
            .map(|e| format!("{} {}", e["timestamp"], e["reason"]))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        after["refresh_token"].as_u64().unwrap_or(0) - before,
        1,
        "{after} a: {:?} b: {:?}",
        refreshes(&a),
        refreshes(&b)
    );
    assert!(after.get("refresh_token_error").is_none(), "{after}");
}

#[tokio::test]
async fn the_demo_logs_a_browser_in_through_its_development_idp() {
    let demo = Demo::start_with(&["--login"]).await;
    let gw = demo.field("gateway");
    let idp = format!("{}/idp", demo.field("upstream"));
    let dir = tempfile::tempdir().unwrap();
    let seen = run_browser(&dir.path().join("state.json"), &gw, &idp, "demo").await;
    assert_eq!(seen["demoAtIdp"], true, "{seen:#}");
    assert_eq!(seen["demoUser"], "alice");
    let items = seen["demoItems"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("from-the-browser (alice)")),
        "{items:?}"
    );
    assert_eq!(seen["demoCookie"], true);
    assert_eq!(seen["demoAfterLogout"], 401);
}

/// A session cookie sealed here, as the gateway would (the test holds the keys): how
/// rotation, the absolute lifetime and the idle timeout are enforced, request by request.
fn sealed_cookie(secret: &str, at: &str, age: (u64, u64)) -> String {
    let sealer = portcullis::session::seal::Sealer::new(&[secret]).unwrap();
    let now = crate::identity::now() as u64;
    let (created_ago, seen_ago) = age;
    let record = portcullis::session::SessionRecord {
        sid: portcullis::session::seal::random_token(32).unwrap(),
        sub: "alice".into(),
        at: at.into(),
        at_exp: now + 300,
        rt: None,
        idt: None,
        mfa: false,
        created: now - created_ago,
        seen: now - seen_ago,
        exp: now - created_ago + 3600,
    };
    let value = sealer
        .seal("__Host-portcullis", &serde_json::to_vec(&record).unwrap())
        .unwrap();
    format!("__Host-portcullis={value}")
}

#[tokio::test]
async fn sealed_sessions_rotate_keys_and_expire() {
    use crate::identity::{baseline_claims, jwks, token};
    let idp = Idp::start_with(&[], None);
    let upstream = Upstream::start().await;
    let ca = Ca::new("Session CA");
    let key = portcullis::authn::sign::SigningKey::generate_es256("k")
        .unwrap()
        .0;
    let config = config(&upstream.url(), &idp.issuer, "cookie", "").replace(
        &format!("jwks_uri: {}/jwks", idp.issuer),
        "jwks_file: jwks.json",
    );
    let dir = session_dir(&ca, &config);
    std::fs::write(dir.path().join("jwks.json"), jwks(&key)).unwrap();
    let gw = Gateway::start_in(dir).await;
    let client = crate::pki::https_client(&ca.pem, None, false);
    let mut claims = baseline_claims();
    claims.insert("iss".into(), idp.issuer.clone().into());
    claims.insert("aud".into(), "https://api.test".into());
    let at = token(&key, &claims);
    let call = |cookie: String| {
        let request = Request::get(format!("https://{}/app/data", gw.addr))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .body(Full::default())
            .unwrap();
        let client = client.clone();
        async move { crate::pki::https_send(&client, request).await.unwrap().0 }
    };
    let (first, old) = SESSION_KEYS.split_once(',').unwrap();
    // Sealed by the key listed first, or by an older one still listed: both open.
    assert_eq!(
        call(sealed_cookie(first, &at, (10, 10))).await.status(),
        200
    );
    assert_eq!(call(sealed_cookie(old, &at, (10, 10))).await.status(), 200);
    assert_eq!(upstream.hits(), 2);
    let cases = [
        // A key no longer listed: no session at all.
        (
            sealed_cookie("retired-session-key-0123456789abcdef", &at, (10, 10)),
            "session_invalid",
        ),
        // Past ttl (1h), though used a moment ago.
        (sealed_cookie(first, &at, (3601, 5)), "session_expired"),
        // Unused past idle_timeout (10m).
        (sealed_cookie(first, &at, (700, 601)), "session_idle"),
    ];
    for (cookie, reason) in cases {
        let answer = call(cookie).await;
        assert_eq!(answer.status(), 401, "{reason}");
        // The dead cookie is cleared.
        let set_cookie = answer.headers()["set-cookie"].to_str().unwrap();
        assert!(set_cookie.starts_with("__Host-portcullis=;") && set_cookie.contains("Max-Age=0"));
        gw.event_where(reason, |e| e["reason"] == reason).await;
    }
    assert_eq!(upstream.hits(), 2, "a refused request reached the upstream");
}
