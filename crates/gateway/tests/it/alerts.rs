//! Alerts through the real binary: a webhook on loopback receives what `monitoring.alerts`
//! sends (deduplicated, summarised, retried, in each format), and never a redirect's target.

use crate::util::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A webhook receiver that records every body and answers the first `failures` calls 503.
struct Webhook {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    calls: Arc<AtomicUsize>,
    _task: TaskGuard,
}

impl Webhook {
    async fn start(failures: usize, status: StatusCode, location: Option<String>) -> Webhook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (b, c) = (bodies.clone(), calls.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (b, c, location) = (b.clone(), c.clone(), location.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (b, c, location) = (b.clone(), c.clone(), location.clone());
                        async move {
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let n = c.fetch_add(1, Ordering::SeqCst);
                            let mut answer = Response::new(Full::new(Bytes::new()));
                            if n < failures {
                                *answer.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                            } else {
                                *answer.status_mut() = status;
                                if let Some(location) = location {
                                    answer
                                        .headers_mut()
                                        .insert("location", location.parse().expect("location"));
                                }
                                if status.is_success() {
                                    b.lock()
                                        .expect("bodies")
                                        .push(serde_json::from_slice(&bytes).unwrap_or_default());
                                }
                            }
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Webhook {
            addr,
            bodies,
            calls,
            _task: TaskGuard(task),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("bodies").clone()
    }

    /// Waits (with the suite's deadline) until at least `n` alerts arrived.
    async fn received(&self, n: usize) -> Vec<serde_json::Value> {
        eventually(&format!("{n} alerts"), || {
            let bodies = self.bodies();
            (bodies.len() >= n).then_some(bodies)
        })
        .await
    }
}

/// A gateway whose alerts (`alerts`, YAML under `monitoring.alerts:`) go to `webhook`.
async fn gateway_alerting_to(webhook: &str, alerts: &str, upstream: &Upstream) -> Gateway {
    let config = config_with(&upstream.url(), CATCH_ALL).replace(
        "monitoring:\n  events: { sink: file, path: events.log }\n",
        &format!(
            "monitoring:\n  events: {{ sink: file, path: events.log }}\n  alerts:\n    webhook: ${{file:webhook-url}}\n{alerts}"
        ),
    );
    let dir = test_dir(&[("webhook-url", webhook), ("routing-key", "R0UT1NG-KEY")]);
    std::fs::write(dir.path().join("portcullis.yaml"), config).expect("config");
    Gateway::start_in(dir).await
}

/// A request the gateway refuses with a `medium` event: an encoded slash in the path.
/// Every call also proves the refusal never reached `upstream`.
async fn suspicious(gateway: &Gateway, upstream: &Upstream) {
    let (status, _, _) = get(&gateway.url("/files/a%2Fb")).await.expect("answer");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        upstream.heads(),
        0,
        "a refused request reached the upstream"
    );
}

async fn metric(gateway: &Gateway, name: &str) -> f64 {
    let req = Request::get(gateway.admin_url("/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::default())
        .expect("request");
    let (_, _, text) = send(req).await.expect("metrics");
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn repeats_are_counted_and_summarised_when_the_window_closes() {
    let upstream = Upstream::start().await;
    let webhook = Webhook::start(0, StatusCode::OK, None).await;
    let gateway = gateway_alerting_to(
        &webhook.url(),
        "    min_severity: medium\n    dedup_window: 1s\n",
        &upstream,
    )
    .await;
    for _ in 0..5 {
        suspicious(&gateway, &upstream).await;
    }
    let bodies = webhook.received(2).await;
    assert_eq!(bodies[0]["count"], 1, "{bodies:?}");
    assert_eq!(bodies[0]["alert"]["reason"], "encoded_slash");
    assert_eq!(bodies[0]["alert"]["severity"], "medium");
    assert_eq!(
        bodies[1]["count"], 4,
        "the summary counts the repeats: {bodies:?}"
    );
    assert_eq!(bodies[0]["dedup_key"], bodies[1]["dedup_key"]);
    assert!(bodies[0]["first_seen"].is_string() && bodies[1]["last_seen"].is_string());
    assert_eq!(
        upstream.heads(),
        0,
        "a refused request reached the upstream"
    );
    assert_eq!(metric(&gateway, "portcullis_alerts_sent").await, 2.0);
    assert_eq!(metric(&gateway, "portcullis_alerts_dropped").await, 0.0);
}

#[tokio::test]
async fn events_below_the_threshold_are_not_alerted_and_pending_counts_go_out_at_shutdown() {
    let upstream = Upstream::start().await;
    let webhook = Webhook::start(0, StatusCode::OK, None).await;
    // This one alerts only from `high`: its medium events must never reach the webhook.
    let mut strict = gateway_alerting_to(
        &webhook.url(),
        "    min_severity: high\n    dedup_window: 10m\n",
        &upstream,
    )
    .await;
    // This one alerts from `medium`, with a window longer than the test.
    let mut lenient = gateway_alerting_to(
        &webhook.url(),
        "    min_severity: medium\n    dedup_window: 10m\n",
        &upstream,
    )
    .await;
    for _ in 0..3 {
        suspicious(&strict, &upstream).await;
        suspicious(&lenient, &upstream).await;
    }
    webhook.received(1).await;
    // Both stop; each sends what it still owes before it exits.
    strict.signal("TERM");
    lenient.signal("TERM");
    assert!(strict.wait_exit().await && lenient.wait_exit().await);
    let bodies = webhook.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["count"], 1);
    assert_eq!(
        bodies[1]["count"], 2,
        "the repeats were not sent at shutdown: {bodies:?}"
    );
}

#[tokio::test]
async fn a_failing_webhook_is_retried_and_pagerduty_gets_its_fields() {
    let upstream = Upstream::start().await;
    let webhook = Webhook::start(2, StatusCode::ACCEPTED, None).await;
    let gateway = gateway_alerting_to(
        &webhook.url(),
        "    format: pagerduty\n    routing_key: ${file:routing-key}\n    min_severity: medium\n",
        &upstream,
    )
    .await;
    suspicious(&gateway, &upstream).await;
    let bodies = webhook.received(1).await;
    assert_eq!(webhook.calls.load(Ordering::SeqCst), 3);
    assert_eq!(bodies[0]["routing_key"], "R0UT1NG-KEY");
    assert_eq!(bodies[0]["event_action"], "trigger");
    assert_eq!(bodies[0]["payload"]["severity"], "warning");
    assert_eq!(bodies[0]["payload"]["source"], "portcullis");
    assert_eq!(metric(&gateway, "portcullis_alerts_sent").await, 1.0);
    assert_eq!(metric(&gateway, "portcullis_alerts_failed").await, 0.0);
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let upstream = Upstream::start().await;
    let target = Webhook::start(0, StatusCode::OK, None).await;
    let redirecting = Webhook::start(0, StatusCode::FOUND, Some(target.url())).await;
    let gateway = gateway_alerting_to(
        &redirecting.url(),
        "    format: slack\n    min_severity: medium\n",
        &upstream,
    )
    .await;
    suspicious(&gateway, &upstream).await;
    eventually_async("the alert to be given up", || async {
        metric(&gateway, "portcullis_alerts_failed").await == 1.0
    })
    .await;
    assert_eq!(
        redirecting.calls.load(Ordering::SeqCst),
        1,
        "a redirect was retried"
    );
    assert_eq!(
        target.calls.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn slack_gets_a_line_a_person_reads() {
    let upstream = Upstream::start().await;
    let webhook = Webhook::start(0, StatusCode::OK, None).await;
    let gateway = gateway_alerting_to(
        &webhook.url(),
        "    format: slack\n    min_severity: medium\n",
        &upstream,
    )
    .await;
    suspicious(&gateway, &upstream).await;
    let bodies = webhook.received(1).await;
    let text = bodies[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("[MEDIUM] suspicious_activity (encoded_slash) from 127.0.0.1"),
        "{text}"
    );
}
