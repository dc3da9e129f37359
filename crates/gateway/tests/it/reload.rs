//! Reloads (admin, SIGHUP, file change), refusal of bad configs, and graceful shutdown.

use crate::util::*;
use http::Request;
use http_body_util::Full;
use std::time::Duration;

const EXTRA_ROUTE: &str = "  - match: { prefix: /new/ }\n    upstream: main\n    auth: none\n";
const ONLY_API: &str =
    "routes:\n  - match: { prefix: /api/ }\n    upstream: main\n    auth: none\n";

fn admin_reload(gw: &Gateway) -> Request<Full<bytes::Bytes>> {
    Request::post(gw.admin_url("/admin/reload"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::default())
        .unwrap()
}

fn write_config(gw: &Gateway, text: &str) {
    // Write-then-rename, as editors and config managers do.
    let tmp = gw.dir.path().join("portcullis.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, gw.config_path()).unwrap();
}

#[tokio::test]
async fn admin_reload_applies_a_valid_config_and_refuses_an_invalid_one() {
    let upstream = Upstream::start().await;
    let config = config_with(&upstream.url(), ONLY_API);
    let gw = Gateway::start(&config).await;
    assert_eq!(get(&gw.url("/new/x")).await.unwrap().0, 404);
    // Invalid: the old configuration must keep serving.
    std::fs::write(
        gw.config_path(),
        format!("{config}  - match: {{ path: /b }}\n    upstream: nowhere\n    auth: none\n"),
    )
    .unwrap();
    let (status, _, body) = send(admin_reload(&gw)).await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("nowhere"), "{body}");
    assert_eq!(get(&gw.url("/api/x")).await.unwrap().0, 200);
    let event = gw
        .event_where("refused reload event", |e| {
            e["event_type"] == "config_reload" && e["reason"] == "refused"
        })
        .await;
    assert_eq!(event["severity"], "high");
    // Valid: applied at once.
    std::fs::write(gw.config_path(), format!("{config}{EXTRA_ROUTE}")).unwrap();
    let (status, _, body) = send(admin_reload(&gw)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&gw.url("/new/x")).await.unwrap().0, 200);
}

#[tokio::test]
async fn sighup_reloads() {
    let upstream = Upstream::start().await;
    let config = config_with(&upstream.url(), ONLY_API);
    let gw = Gateway::start(&config).await;
    // Stop the file watcher from getting there first: compare against a second route list.
    std::fs::write(gw.config_path(), format!("{config}{EXTRA_ROUTE}")).unwrap();
    gw.signal("HUP");
    eventually("the new route", || {
        gw.events()
            .iter()
            .any(|e| e["event_type"] == "config_reload" && e["reason"] == "applied")
            .then_some(())
    })
    .await;
    assert_eq!(get(&gw.url("/new/x")).await.unwrap().0, 200);
}

#[tokio::test]
async fn file_change_reloads_by_itself() {
    let upstream = Upstream::start().await;
    let config = config_with(&upstream.url(), ONLY_API);
    let gw = Gateway::start(&config).await;
    write_config(&gw, &format!("{config}{EXTRA_ROUTE}"));
    let start = std::time::Instant::now();
    loop {
        if get(&gw.url("/new/x")).await.unwrap().0 == 200 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the file change was never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_config(&gw, "listen: [broken\n");
    gw.event_where("refused file reload", |e| {
        e["reason"] == "refused" && e["details"]["trigger"] == "file_change"
    })
    .await;
    assert_eq!(
        get(&gw.url("/new/x")).await.unwrap().0,
        200,
        "a broken file replaced a working config"
    );
}

#[tokio::test]
async fn reloads_under_load_lose_no_request() {
    let upstream = Upstream::start().await;
    let config = config_with(&upstream.url(), ONLY_API);
    let gw = Gateway::start(&config).await;
    let url = gw.url("/api/slow?ms=20");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                statuses.push(get(&url).await.map(|a| a.0.as_u16()).unwrap_or(0));
            }
            statuses
        }));
    }
    for i in 0..6 {
        let text = if i % 2 == 0 {
            format!("{config}{EXTRA_ROUTE}")
        } else {
            config.clone()
        };
        std::fs::write(gw.config_path(), text).unwrap();
        let (status, _, body) = send(admin_reload(&gw)).await.unwrap();
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut total = 0;
    for client in clients {
        let statuses = client.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "lost or failed requests: {statuses:?}"
        );
        total += statuses.len();
    }
    assert_eq!(total, 320);
    assert_eq!(upstream.hits(), 320);
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_then_exits() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let url = gw.url("/slow?ms=1000");
    let in_flight = tokio::spawn(async move { get(&url).await });
    eventually("the slow request to reach the upstream", || {
        (upstream.heads() == 1).then_some(())
    })
    .await;
    gw.signal("TERM");
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.0, 200, "the in-flight request was dropped");
    assert!(gw.wait_exit().await, "exit status was not success");
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "still accepting after shutdown"
    );
}
