//! The dashboard in headless Chromium: sign in with the admin token (a wrong one first), see
//! a refused request's event arrive live, see the inventory with its shadow endpoints, and
//! download the OpenAPI export. The cookie, the page's policy and the absence of any request
//! to another host are checked from the browser's side; screenshots go to
//! `target/dashboard-shots/` for a person to look at.

use crate::util::*;
use crate::validation::with_contract;
use http::Request;
use http_body_util::Full;

#[tokio::test]
async fn a_browser_signs_in_and_sees_events_live_and_the_inventory() {
    let peers = browser_peers();
    let upstream = Upstream::start().await;
    let gw = with_contract(
        &upstream,
        &format!("validation:\n  openapi: api.yaml\n  unknown_operations: log\n{CATCH_ALL}"),
    )
    .await;
    // Traffic to show: a shadow endpoint (twice, ids folded) and a documented one.
    for path in [
        "/v1/internal/export/17",
        "/v1/internal/export/18",
        "/v1/health",
    ] {
        let (status, _, _) = get(&gw.url(path)).await.unwrap();
        assert_eq!(status, 200, "{path}");
    }
    let before = upstream.heads();
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let admin = gw.admin_url("");
    let refused = gw.url("/files/a%2Fb");
    let shots_arg = shots.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("dashboard_browser.mjs")
            .arg(admin.trim_end_matches('/'))
            .arg(ADMIN_TOKEN)
            .arg(&refused)
            .arg(&shots_arg)
            .current_dir(peers)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = json(stdout.lines().last().unwrap_or(""));
    assert_eq!(seen["loginForm"], 1, "{seen}");
    assert!(
        seen["wrongTokenMessage"]
            .as_str()
            .is_some_and(|m| m.contains("not valid")),
        "{seen}"
    );
    assert_eq!(seen["dashboardStatus"], 200, "{seen}");
    let csp = seen["dashboardCsp"].as_str().unwrap_or("");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(
        seen["cookie"],
        serde_json::json!({"httpOnly": true, "sameSite": "Strict", "secure": false}),
        "{seen}"
    );
    assert_eq!(seen["cookieVisibleToScript"], false);
    // The refused request's event arrived live, and the request never reached the upstream.
    assert_eq!(seen["refusedStatus"], 400);
    let row = seen["liveRow"].as_str().unwrap_or("");
    assert!(
        row.contains("encoded_slash") && row.contains("high") || row.contains("medium"),
        "{seen}"
    );
    assert_eq!(
        upstream.heads(),
        before,
        "a refused request reached the upstream"
    );
    let shadow = seen["shadowRows"].to_string();
    assert!(shadow.contains("/v1/internal/export/{id}"), "{seen}");
    assert!(seen["documentedRows"].as_u64() > Some(0), "{seen}");
    assert!(seen["routeBars"].to_string().contains("(none)"), "{seen}");
    assert!(
        seen["health"]
            .as_str()
            .unwrap_or("")
            .contains("redis: not used"),
        "{seen}"
    );
    assert_eq!(seen["exported"]["openapi"], "3.1.0", "{seen}");
    assert_eq!(
        seen["exported"]["paths"],
        serde_json::json!(["/v1/internal/export/{id}"]),
        "{seen}"
    );
    assert_eq!(
        seen["offsite"],
        serde_json::json!([]),
        "a request left the admin host: {seen}"
    );
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "script errors: {seen}"
    );
    assert_eq!(seen["afterLogout"], 401, "{seen}");
    for shot in ["login.png", "dashboard.png"] {
        assert!(
            shots.join(shot).metadata().unwrap().len() > 10_000,
            "{shot}"
        );
    }
}

#[tokio::test]
async fn a_session_cookie_only_reads_and_a_forged_one_gets_nothing() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let login = Request::post(gw.admin_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(format!("token={ADMIN_TOKEN}").into()))
        .unwrap();
    let (status, headers, _) = send(login).await.unwrap();
    assert_eq!(status, 303);
    let cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    assert!(
        !session.contains(ADMIN_TOKEN),
        "the cookie carries the token itself"
    );
    let with = |method: &str, path: &str, cookie: &str| {
        Request::builder()
            .method(method)
            .uri(gw.admin_url(path))
            .header("cookie", cookie)
            .body(Full::default())
            .unwrap()
    };
    let (status, _, _) = send(with("GET", "/admin/offenders", &session))
        .await
        .unwrap();
    assert_eq!(status, 200);
    // A write is never authorised by the cookie (cross-site request forgery).
    let (status, _, _) = send(with("POST", "/admin/reload", &session)).await.unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = send(with("GET", "/admin/offenders", "portcullis_admin=forged"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _, body) = send(with("GET", "/", "portcullis_admin=forged"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("name=\"token\""),
        "a forged cookie got past the login form"
    );
    // Browsers send the cookie to every port of the host: it never goes upstream.
    let through = Request::get(gw.url("/anything"))
        .header("cookie", format!("{session}; theme=dark"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(through).await.unwrap().0, 200);
    assert_eq!(upstream.last().headers["cookie"], "theme=dark");
    let forwarded = upstream.heads();
    // Wrong tokens: refused, then throttled.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let login = Request::post(gw.admin_url("/login"))
            .body(Full::new("token=guess".into()))
            .unwrap();
        statuses.push(send(login).await.unwrap().0.as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(statuses[11], 429, "{statuses:?}");
    assert_eq!(
        upstream.heads(),
        forwarded,
        "an admin request reached the upstream"
    );
}
