//! Detectors through the real binary: a response far above its endpoint's usual size is
//! flagged as exfiltration, and the client's next requests carry the detector's factor.

use crate::util::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

#[tokio::test]
async fn an_oversized_response_is_flagged_and_raises_the_clients_score() {
    let (upstream, _guard) = tiny_server(|req: Request<hyper::body::Incoming>| {
        let size = if req.uri().path() == "/export" {
            200_000
        } else {
            100
        };
        Response::new(Full::new(Bytes::from(vec![b'x'; size])))
    })
    .await;
    let extra = format!("rate_limit:\n  default: {{ limit: 10000, window: 60s }}\n{CATCH_ALL}");
    let config = config_with(&format!("http://{upstream}"), &extra).replace(
        "monitoring:\n  events: { sink: file, path: events.log }\n",
        "monitoring:\n  events: { sink: file, path: events.log }\n  detection:\n    exfiltration: { factor: 10, min_bytes: 65536 }\n",
    );
    let gateway = Gateway::start(&config).await;
    let agent = |path: &str| {
        Request::get(gateway.url(path))
            .header("user-agent", "integration-test/1.0")
            .body(Full::default())
            .unwrap()
    };
    // Twenty usual answers make the baseline; until then nothing is judged.
    for _ in 0..20 {
        let (status, _, body) = send(agent("/items")).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::OK, 100));
    }
    assert!(
        gateway
            .events()
            .iter()
            .all(|e| e["reason"] != "exfiltration")
    );
    let (status, _, body) = send(agent("/export")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "the answer itself is not held back");
    assert_eq!(body.len(), 200_000);
    let event = gateway
        .event_where("the exfiltration event", |e| e["reason"] == "exfiltration")
        .await;
    assert_eq!(event["event_type"], "anomaly");
    assert_eq!(event["severity"], "high");
    assert_eq!(event["details"]["bytes"], 200_000);
    assert_eq!(event["ip"], "127.0.0.1");
    // The flag is a threat factor on the client's next request.
    let (status, _, _) = send(agent("/items")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let req = Request::get(gateway.admin_url("/admin/offenders"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::default())
        .unwrap();
    let (_, _, offenders) = send(req).await.unwrap();
    let listed = json(&offenders);
    assert_eq!(listed["clients"][0]["ip"], "127.0.0.1", "{listed}");
    assert_eq!(listed["clients"][0]["score"], 20, "{listed}");
    assert_eq!(
        listed["clients"][0]["factors"],
        serde_json::json!(["detector_flag"])
    );
    assert!(
        listed["clients"][0]["flagged_for"].as_u64() > Some(500),
        "{listed}"
    );
    // Another large answer right after is flagged again, not learned as the new usual.
    let _ = send(agent("/export")).await.unwrap();
    eventually("a second exfiltration event", || {
        (gateway
            .events()
            .iter()
            .filter(|e| e["reason"] == "exfiltration")
            .count()
            == 2)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_error_spike_is_flagged_once_per_window() {
    let upstream = Upstream::start().await;
    let extra = format!("rate_limit:\n  default: {{ limit: 10000, window: 60s }}\n{CATCH_ALL}");
    let config = config_with(&upstream.url(), &extra).replace(
        "monitoring:\n  events: { sink: file, path: events.log }\n",
        "monitoring:\n  events: { sink: file, path: events.log }\n  detection:\n    error_spike: { factor: 3, min_count: 5, window: 1m }\n",
    );
    let gateway = Gateway::start(&config).await;
    let refused = || async {
        let (status, _, _) = get(&gateway.url("/files/a%2Fb")).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    };
    let spikes = || {
        gateway
            .events()
            .into_iter()
            .filter(|e| e["reason"] == "error_spike")
            .collect::<Vec<_>>()
    };
    for _ in 0..4 {
        refused().await;
    }
    assert!(spikes().is_empty(), "flagged below min_count");
    refused().await;
    let client = gateway
        .event_where("the client's error spike", |e| {
            e["reason"] == "error_spike" && e["details"]["scope"] == "client"
        })
        .await;
    assert_eq!(client["ip"], "127.0.0.1");
    assert_eq!(client["details"]["count"], 5);
    for _ in 0..5 {
        refused().await;
    }
    // A last, different refusal fences the log: events are written in order, so once it is
    // there, every spike event the repeats could have raised is there too.
    let (status, _, _) = get(&gateway.url("/files/c%5Cd")).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    gateway
        .event_where("the fence", |e| e["reason"] == "encoded_backslash")
        .await;
    let by_client = spikes()
        .iter()
        .filter(|e| e["details"]["scope"] == "client")
        .count();
    assert_eq!(by_client, 1, "one flag per key per window: {:?}", spikes());
    assert_eq!(
        upstream.heads(),
        0,
        "a refused request reached the upstream"
    );
}
