//! Traces through the real binary, into a real OTLP/HTTP receiver that decodes the protobuf
//! with the `opentelemetry-proto` types: one server span per request with a child per
//! security stage, the outcome in attributes, the trace id as the correlation id, incoming
//! context believed only from trusted proxies (else linked), and sampling honoured in the
//! `traceparent` the upstream gets.

use crate::identity::{ISSUER, baseline_claims, jwks, token};
use crate::util::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use portcullis::authn::sign::SigningKey;
use prost::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
    kind: i32,
    attributes: BTreeMap<String, String>,
    links: Vec<(String, String)>,
    service: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP traces receiver on loopback.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    _task: TaskGuard,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req.headers()["content-type"] == "application/x-protobuf";
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            let decoded = ExportTraceServiceRequest::decode(bytes.as_ref());
                            let status = match (ok, decoded) {
                                (true, Ok(request)) => {
                                    store.lock().unwrap().extend(flatten(request));
                                    StatusCode::OK
                                }
                                _ => StatusCode::BAD_REQUEST,
                            };
                            let mut answer = Response::new(Full::new(Bytes::new()));
                            *answer.status_mut() = status;
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            spans,
            _task: TaskGuard(task),
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of the trace whose server span `is` picks, once it has arrived.
    async fn trace_where(&self, what: &str, is: impl Fn(&Span) -> bool) -> Vec<Span> {
        let root = eventually(what, || {
            self.spans().into_iter().find(|s| s.kind == 2 && is(s))
        })
        .await;
        self.spans()
            .into_iter()
            .filter(|s| s.trace == root.trace)
            .collect()
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref().map(text))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                out.push(Span {
                    name: span.name,
                    trace: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| {
                            let value = a.value.as_ref().and_then(|v| v.value.as_ref()).map(text);
                            (a.key.clone(), value.unwrap_or_default())
                        })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(n) => n.to_string(),
        Value::DoubleValue(x) => x.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn traced_gateway(
    upstream: &Upstream,
    receiver: &Receiver,
    key: &SigningKey,
    traces: &str,
    listen: &str,
) -> Gateway {
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
rate_limit:
  default: {{ limit: 1000, window: 60s }}
{ALLOW_ALL}routes:
  - match: {{ path: /api/items, methods: [GET] }}
    upstream: main
"
        ),
    )
    .replace(
        "monitoring:\n  events: { sink: file, path: events.log }\n",
        &format!(
            "monitoring:\n  events: {{ sink: file, path: events.log }}\n  traces: {{ endpoint: \"http://{}/v1/traces\", {traces} }}\n",
            receiver.addr
        ),
    );
    let config = with_listen(&config, listen);
    let dir = test_dir(&[("jwks.json", &jwks(key)), ("portcullis.yaml", &config)]);
    Gateway::start_in(dir).await
}

fn call(gw: &Gateway, token: Option<&str>, traceparent: Option<&str>) -> Request<Full<Bytes>> {
    let mut request =
        Request::get(gw.url("/api/items")).header("user-agent", "integration-test/1.0");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.body(Full::default()).unwrap()
}

#[tokio::test]
async fn each_request_is_a_trace_of_its_stages_with_a_fresh_id_for_untrusted_context() {
    let upstream = Upstream::start().await;
    let receiver = Receiver::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = traced_gateway(
        &upstream,
        &receiver,
        &key,
        "sample_ratio: 1.0, trust_incoming: false",
        "",
    )
    .await;
    let alice = token(&key, &baseline_claims());
    let (status, headers, _) = send(call(&gw, Some(&alice), Some(INCOMING))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let request_id = headers["x-request-id"].to_str().unwrap().to_string();
    let spans = receiver
        .trace_where("the allowed request's trace", |s| {
            s.attributes["http.response.status_code"] == "200"
        })
        .await;
    let root = spans.iter().find(|s| s.kind == 2).unwrap();
    // An untrusted client's context does not continue: a new trace, linked to the old one.
    assert_ne!(root.trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(root.parent, "", "{root:?}");
    assert_eq!(
        root.links,
        [(
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            "00f067aa0ba902b7".into()
        )]
    );
    // The trace id is the request's correlation id.
    assert_eq!(root.trace, request_id);
    assert_eq!(root.attributes["portcullis.request_id"], request_id);
    assert_eq!(root.name, "GET /api/items");
    assert_eq!(root.service, "portcullis");
    assert_eq!(root.attributes["portcullis.authn"], "passed");
    assert_eq!(root.attributes["portcullis.policy"], "allow");
    assert_eq!(root.attributes["portcullis.rate_limit"], "passed");
    assert!(
        root.attributes["portcullis.rate_limit.bucket"].contains("default"),
        "{root:?}"
    );
    assert!(
        root.attributes
            .contains_key("portcullis.gateway_latency_ms")
    );
    assert!(
        root.attributes
            .contains_key("portcullis.upstream_latency_ms")
    );
    let names: Vec<&str> = spans
        .iter()
        .filter(|s| s.kind != 2)
        .map(|s| s.name.as_str())
        .collect();
    for stage in [
        "edge",
        "screen",
        "authenticate",
        "rate_limit",
        "authorize",
        "validate",
        "upstream",
    ] {
        assert!(names.contains(&stage), "no {stage} span in {names:?}");
    }
    assert!(
        spans
            .iter()
            .filter(|s| s.kind != 2)
            .all(|s| s.parent == root.id)
    );
    // The upstream continues the gateway's trace, from the upstream span, sampled.
    let upstream_span = spans.iter().find(|s| s.name == "upstream").unwrap();
    assert_eq!(upstream_span.kind, 3, "a client span");
    let seen = upstream.last();
    assert_eq!(
        seen.headers["traceparent"].to_str().unwrap(),
        format!("00-{}-{}-01", root.trace, upstream_span.id)
    );
    assert_eq!(seen.headers["x-request-id"].to_str().unwrap(), request_id);

    // A refusal: its trace says where and why, and its event carries the same id.
    let before = upstream.heads();
    let (status, headers, _) = send(call(&gw, None, None)).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refused_id = headers["x-request-id"].to_str().unwrap().to_string();
    let spans = receiver
        .trace_where("the refused request's trace", |s| s.trace == refused_id)
        .await;
    let root = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(
        root.attributes["portcullis.authn"], "missing_token",
        "{root:?}"
    );
    assert_eq!(root.attributes["portcullis.policy"], "not_reached");
    assert!(!spans.iter().any(|s| s.name == "upstream"));
    let event = gw
        .event_where("the refusal's event", |e| {
            e["request_id"] == refused_id.as_str()
        })
        .await;
    assert_eq!(event["reason"], "missing_token");
    assert_eq!(
        upstream.heads(),
        before,
        "a refused request reached the upstream"
    );
    // Counted once the collector's answer is back, just after it stored the spans.
    let url = gw.admin_url("/metrics");
    eventually_async("the exported spans counted", || async {
        let metrics = get(&url).await.unwrap().2;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_trace_spans_exported "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            >= Some(9)
    })
    .await;
}

#[tokio::test]
async fn trusted_proxies_continue_their_trace_and_sampling_follows_the_flag_and_ratio() {
    let upstream = Upstream::start().await;
    let receiver = Receiver::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = traced_gateway(
        &upstream,
        &receiver,
        &key,
        "sample_ratio: 0.0",
        "  trusted_proxies: [127.0.0.1/32]\n",
    )
    .await;
    let alice = token(&key, &baseline_claims());
    // No incoming context and a ratio of 0: not recorded, and the upstream is told so.
    let (status, headers, _) = send(call(&gw, Some(&alice), None)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let unsampled = headers["x-request-id"].to_str().unwrap().to_string();
    let seen = upstream.last();
    let traceparent = seen.headers["traceparent"].to_str().unwrap().to_string();
    assert!(
        traceparent.starts_with(&format!("00-{unsampled}-")) && traceparent.ends_with("-00"),
        "{traceparent}"
    );
    // A trusted proxy's unsampled context: continued, still unsampled.
    let unsampled_parent = "00-11111111111111111111111111111111-2222222222222222-00";
    let _ = send(call(&gw, Some(&alice), Some(unsampled_parent)))
        .await
        .unwrap();
    let forwarded = upstream.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        forwarded.starts_with("00-11111111111111111111111111111111-") && forwarded.ends_with("-00")
    );
    // A trusted proxy's sampled context: continued and recorded, whatever the ratio.
    let (_, headers, _) = send(call(&gw, Some(&alice), Some(INCOMING))).await.unwrap();
    assert_eq!(headers["x-request-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let spans = receiver
        .trace_where("the continued trace", |s| {
            s.trace == "4bf92f3577b34da6a3ce929d0e0e4736"
        })
        .await;
    let root = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(root.parent, "00f067aa0ba902b7");
    assert!(root.links.is_empty());
    // Spans leave in order: the two unsampled requests came first and sent nothing.
    let traces: Vec<String> = receiver.spans().into_iter().map(|s| s.trace).collect();
    assert!(
        !traces.contains(&unsampled),
        "an unsampled request was recorded"
    );
    assert!(
        !traces
            .iter()
            .any(|t| t == "11111111111111111111111111111111")
    );
}
