//! gRPC through the real binary: a real tonic server and client (a small hand-written
//! service, no code generation), unary and server-streaming calls, trailers, deadlines,
//! and every refusal as the gRPC status a client understands, in a trailers-only answer.

use crate::identity::{ISSUER, baseline_claims, jwks, token};
use crate::util::*;
use http::uri::PathAndQuery;
use portcullis::authn::sign::SigningKey;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::{Code, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The server waits this long before answering.
    #[prost(uint32, tag = "2")]
    pub delay_ms: u32,
    /// Server streaming: this many replies, then an ABORTED status in the trailers.
    #[prost(uint32, tag = "3")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The calls the service received: path and `grpc-timeout`.
type Calls = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The service `test.Echo`: `Unary`, `Stream`, and any other method name answered as Unary.
#[derive(Clone, Default)]
struct Echo {
    calls: Calls,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct Unary;

impl tonic::server::UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = BoxFuture<Result<tonic::Response<EchoReply>, Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let request = request.into_inner();
            tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
            Ok(tonic::Response::new(EchoReply {
                message: format!("echo: {}", request.message),
            }))
        })
    }
}

struct Streaming;

type ReplyStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoReply, Status>> + Send>>;

impl tonic::server::ServerStreamingService<EchoRequest> for Streaming {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let request = request.into_inner();
            let replies = (0..request.count).map(move |i| {
                Ok(EchoReply {
                    message: format!("{} #{i}", request.message),
                })
            });
            // The final status goes in the trailers, after the messages.
            let end = std::iter::once(Err(Status::aborted("stream over")));
            let stream: ReplyStream = Box::pin(tokio_stream::iter(replies.chain(end)));
            Ok(tonic::Response::new(stream))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .map(|v| v.to_str().unwrap().to_string());
        self.calls.lock().unwrap().push((path.clone(), timeout));
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(if path == "/test.Echo/Stream" {
                grpc.server_streaming(Streaming, req).await
            } else {
                grpc.unary(Unary, req).await
            })
        })
    }
}

struct EchoServer {
    addr: SocketAddr,
    calls: Calls,
    _task: TaskGuard,
}

impl EchoServer {
    async fn start() -> EchoServer {
        EchoServer::start_with(None).await
    }

    /// With `tls`, over TLS (h2 by ALPN) with this server certificate.
    async fn start_with(tls: Option<&crate::pki::Leaf>) -> EchoServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = Echo::default();
        let calls = echo.calls.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut builder = tonic::transport::Server::builder();
        if let Some(leaf) = tls {
            let identity = tonic::transport::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap();
        }
        let task = tokio::spawn(async move {
            let _ = builder
                .add_service(echo)
                .serve_with_incoming(incoming)
                .await;
        });
        EchoServer {
            addr,
            calls,
            _task: TaskGuard(task),
        }
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

const POLICY: &str = "package test\n\ndefault allow := false\n\
allow if input.action in {\"/test.Echo/Unary\", \"/test.Echo/Stream\", \"/test.Echo/Admin\", \"/test.Echo/Limited\", \"/test.Down/Call\"}\n";

async fn gateway(echo: &EchoServer, key: &SigningKey) -> Gateway {
    let dir = test_dir(&[("jwks.json", &jwks(key)), ("grpc.rego", POLICY)]);
    let config = config_with(
        "http://127.0.0.1:9",
        &format!(
            "  echo: {{ url: \"http://{}\", protocol: grpc, timeout: 1s }}\n\
identity:\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      audiences: [api]\n      jwks_file: jwks.json\n      algorithms: [ES256]\n\
policy:\n  engine: rego\n  rego:\n    files: [grpc.rego]\n    query: data.test.allow\n\
routes:\n  - match: {{ path: /test.Echo/Admin }}\n    upstream: echo\n    scopes: [\"echo:admin\"]\n  - match: {{ path: /test.Echo/Limited }}\n    upstream: echo\n    rate_limit: {{ limit: 1, window: 60s }}\n  - match: {{ path: /test.Down/Call }}\n    upstream: down\n  - match: {{ prefix: /test.Echo/ }}\n    upstream: echo\n",
            echo.addr
        ),
    )
    .replace(
        "  main: { url: \"http://127.0.0.1:9\", timeout: 5s }\n",
        "  down: { url: \"http://127.0.0.1:9\", protocol: grpc }\n",
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    Gateway::start_in(dir).await
}

/// A tonic client on the gateway.
async fn client(gw: &Gateway) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

fn request(token: Option<&str>, message: EchoRequest) -> tonic::Request<EchoRequest> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn unary(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    request: tonic::Request<EchoRequest>,
) -> Result<EchoReply, Status> {
    grpc.ready().await.unwrap();
    grpc.unary(
        request,
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn hello(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    }
}

#[tokio::test]
async fn unary_and_streaming_calls_go_through_with_their_trailers() {
    let echo = EchoServer::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = gateway(&echo, &key).await;
    let token = token(&key, &baseline_claims());
    let mut grpc = client(&gw).await;
    let reply = unary(
        &mut grpc,
        "/test.Echo/Unary",
        request(Some(&token), hello("hi")),
    )
    .await
    .unwrap();
    assert_eq!(reply.message, "echo: hi");

    grpc.ready().await.unwrap();
    let streamed = grpc
        .server_streaming(
            request(
                Some(&token),
                EchoRequest {
                    message: "m".into(),
                    count: 3,
                    ..EchoRequest::default()
                },
            ),
            PathAndQuery::from_static("/test.Echo/Stream"),
            tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default(),
        )
        .await
        .unwrap();
    let mut stream = streamed.into_inner();
    let mut got = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(reply)) => got.push(reply.message),
            Ok(None) => panic!("the stream ended without its status"),
            Err(status) => break status,
        }
    };
    assert_eq!(got, ["m #0", "m #1", "m #2"]);
    // The upstream's final status arrived in the trailers, after the messages.
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "stream over");
    assert_eq!(echo.calls(), 2);
}

#[tokio::test]
async fn refusals_arrive_as_grpc_statuses_and_never_reach_the_upstream() {
    let echo = EchoServer::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = gateway(&echo, &key).await;
    let token = token(&key, &baseline_claims());
    let mut grpc = client(&gw).await;
    let cases: [(&'static str, Option<&str>, Code); 5] = [
        ("/test.Echo/Unary", None, Code::Unauthenticated),
        ("/test.Echo/Forbidden", Some(&token), Code::PermissionDenied),
        ("/test.Echo/Admin", Some(&token), Code::PermissionDenied),
        ("/other.Service/Call", Some(&token), Code::Unimplemented),
        ("/test.Echo/a%2Fb", Some(&token), Code::InvalidArgument),
    ];
    for (path, token, code) in cases {
        let status = unary(&mut grpc, path, request(token, hello("x")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{path}: {status:?}");
        // Generic, as for problem documents.
        assert!(!status.message().contains("policy"), "{status:?}");
    }
    assert_eq!(echo.calls(), 0, "a refused call reached the upstream");
    // A rate limit: the first call passes, the second is RESOURCE_EXHAUSTED.
    let limited = |t: &str| unary_owned(grpc.clone(), "/test.Echo/Limited", t.to_string());
    assert!(limited(&token).await.is_ok());
    assert_eq!(
        limited(&token).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    assert_eq!(echo.calls(), 1);
    // An unreachable upstream: UNAVAILABLE.
    let status = unary(
        &mut grpc,
        "/test.Down/Call",
        request(Some(&token), hello("x")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    // The policy saw the full method as the action.
    gw.event_where("the policy refusal", |e| e["reason"] == "policy_denied")
        .await;
    let metrics = get(&gw.admin_url("/metrics")).await.unwrap().2;
    assert!(
        metrics.contains("action=\"/test.Echo/Forbidden\""),
        "{metrics}"
    );
}

async fn unary_owned(
    mut grpc: tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    token: String,
) -> Result<EchoReply, Status> {
    unary(&mut grpc, path, request(Some(&token), hello("x"))).await
}

#[tokio::test]
async fn a_refusal_is_a_trailers_only_answer() {
    let echo = EchoServer::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = gateway(&echo, &key).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::post(gw.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(response.headers()["grpc-message"], "Unauthorized");
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert!(response.headers().get("x-request-id").is_some());
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap();
    assert!(
        body.trailers().is_none(),
        "trailers-only: no second header block"
    );
    assert!(body.to_bytes().is_empty());
    assert_eq!(echo.calls(), 0);
}

#[tokio::test]
async fn deadlines_are_honoured_and_bounded_by_the_gateway() {
    let echo = EchoServer::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let gw = gateway(&echo, &key).await;
    let token = token(&key, &baseline_claims());
    let mut grpc = client(&gw).await;
    // The client allows 250 ms: the upstream is told so.
    let mut call = request(Some(&token), hello("quick"));
    call.set_timeout(Duration::from_millis(250));
    unary(&mut grpc, "/test.Echo/Unary", call).await.unwrap();
    let told = echo.calls.lock().unwrap()[0].1.clone().unwrap();
    let millis: u64 = told.trim_end_matches('m').parse().unwrap();
    assert!(millis <= 250, "{told}");
    // The client allows a minute, the upstream's bound is 1 s: the call ends after about a
    // second, long before the client would have given up. The upstream is told the same
    // bound, so either the gateway's timer answers (DEADLINE_EXCEEDED) or, when the two
    // fire together, the upstream's own tonic timer does (CANCELLED, "Timeout expired").
    let mut slow = request(
        Some(&token),
        EchoRequest {
            message: "slow".into(),
            delay_ms: 5_000,
            ..EchoRequest::default()
        },
    );
    slow.set_timeout(Duration::from_secs(60));
    let started = std::time::Instant::now();
    let status = unary(&mut grpc, "/test.Echo/Unary", slow)
        .await
        .unwrap_err();
    assert!(
        status.code() == Code::DeadlineExceeded
            || (status.code() == Code::Cancelled && status.message() == "Timeout expired"),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let told = echo.calls.lock().unwrap()[1].1.clone().unwrap();
    assert_eq!(told, "1000m");
}

#[tokio::test]
async fn a_grpc_upstream_over_tls_is_reached_with_h2() {
    let ca = crate::pki::Ca::new("grpc-upstream-ca");
    let echo = EchoServer::start_with(Some(&ca.server())).await;
    let dir = test_dir(&[("ca.pem", &ca.pem)]);
    let config = config_with(
        &format!("https://127.0.0.1:{}", echo.addr.port()),
        "outbound:\n  ca_files: [ca.pem]\n  system_roots: false\nroutes:\n  - match: { prefix: /test.Echo/ }\n    upstream: main\n    auth: none\n",
    )
    .replace("timeout: 5s }", "timeout: 5s, protocol: grpc }");
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let mut grpc = client(&gw).await;
    let reply = unary(&mut grpc, "/test.Echo/Unary", request(None, hello("tls")))
        .await
        .unwrap();
    assert_eq!(reply.message, "echo: tls");
    assert_eq!(echo.calls(), 1);
}
