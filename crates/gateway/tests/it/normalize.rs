//! Path canonicalisation and framing refusals, from the case file, on the real binary.

use crate::util::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    path: String,
    status: u16,
    forwarded: Option<String>,
    reason: Option<String>,
}

fn cases() -> Vec<Case> {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/cases/normalize/paths.yaml"
    );
    serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

#[tokio::test]
async fn path_cases() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let cases = cases();
    assert!(cases.len() > 20);
    for case in cases {
        let hits_before = upstream.hits();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            case.path
        );
        let answer = raw(gw.addr, request.as_bytes()).await;
        assert_eq!(raw_status(&answer), case.status, "{case:?}: {answer}");
        if case.status == 200 {
            assert_eq!(upstream.hits(), hits_before + 1, "{case:?}");
            assert_eq!(Some(upstream.last().uri), case.forwarded, "{case:?}");
        } else {
            assert_eq!(
                upstream.hits(),
                hits_before,
                "{case:?} reached the upstream"
            );
            assert!(
                answer.contains("application/problem+json"),
                "{case:?}: {answer}"
            );
            let id = answer
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .unwrap_or_else(|| panic!("no request id: {answer}"))
                .to_string();
            let event = gw
                .event_where("the refusal event", |e| e["request_id"] == id.as_str())
                .await;
            assert_eq!(event["reason"].as_str(), case.reason.as_deref(), "{case:?}");
        }
    }
    assert_eq!(
        upstream.heads(),
        upstream.hits(),
        "a refused request started upstream"
    );
}

async fn framing_refused(request: &str, reason: &str) {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let answer = raw(gw.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    // Exactly one answer and the connection closed: the smuggled request never runs.
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert_eq!(
        upstream.heads(),
        0,
        "smuggling attempt reached the upstream"
    );
    let event = gw
        .event_where("framing event", |e| e["reason"] == reason)
        .await;
    assert_eq!(event["event_type"], "suspicious_activity");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_closed() {
    framing_refused(
        "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        "content_length_and_transfer_encoding",
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_before_content_length_is_refused() {
    framing_refused(
        "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        "content_length_and_transfer_encoding",
    )
    .await;
}

#[tokio::test]
async fn repeated_content_length_is_refused_and_closed() {
    framing_refused(
        "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        "duplicate_content_length",
    )
    .await;
}

#[tokio::test]
async fn pipelined_clean_requests_after_a_chunked_one_are_served() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_with(&upstream.url(), CATCH_ALL)).await;
    let request = "POST /one HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
GET /two HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let answer = raw(gw.addr, request.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert_eq!(upstream.hits(), 2);
    assert_eq!(upstream.last().uri, "/two");
}
