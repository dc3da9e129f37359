//! Load for `scripts/bench-protocols.sh`: a WebSocket echo server and a gRPC unary echo
//! server (tokio-tungstenite, tonic), and bounded load clients for both that print
//! `per_second p50_us p99_us count`.
//!
//! ```text
//! protocol_load ws-server | grpc-server          prints `listening ADDR`, serves until killed
//! protocol_load ws URL CONNS SECS BYTES [TOKEN]  CONNS WebSockets, each sends BYTES and awaits the echo
//! protocol_load grpc URL CONNS SECS [TOKEN]      CONNS concurrent unary calls on 4 channels
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use futures_util::{SinkExt, StreamExt};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `/bench.Echo/Unary`: answers with what it was sent.
#[derive(Clone)]
struct EchoService;

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "bench.Echo";
}

struct Unary;

impl tonic::server::UnaryService<Payload> for Unary {
    type Response = Payload;
    type Future = BoxFuture<Result<tonic::Response<Payload>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Payload>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(Unary, req).await)
        })
    }
}

async fn listen() -> tokio::net::TcpListener {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    listener
}

async fn ws_server() {
    let listener = listen().await;
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_binary() && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn grpc_server() {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listen().await);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoService)
        .serve_with_incoming(incoming)
        .await
        .unwrap();
}

/// Runs `conns` copies of `one` (one exchange, returning whether it succeeded) until `secs`
/// have passed; prints the rate and latency percentiles of the successful exchanges.
async fn drive<F, Fut>(conns: usize, secs: u64, one: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Vec<u32>> + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|i| tokio::task::spawn_local(one(i)))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64().max(secs as f64);
    all.sort_unstable();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)));
    println!(
        "{:.0} {} {} {}",
        all.len() as f64 / elapsed,
        at(0.5).copied().unwrap_or(0),
        at(0.99).copied().unwrap_or(0),
        all.len()
    );
}

fn micros(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

async fn ws_load(url: String, conns: usize, secs: u64, bytes: usize, token: Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    drive(conns, secs, |_| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let mut request = url.into_client_request().unwrap();
            if let Some(token) = token {
                let value = format!("Bearer {token}").parse().unwrap();
                request.headers_mut().insert("authorization", value);
            }
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
                .await
                .expect("handshake");
            let payload = vec![7u8; bytes];
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                ws.send(Message::binary(payload.clone())).await.unwrap();
                match ws.next().await {
                    Some(Ok(m)) if m.is_binary() => samples.push(micros(sent)),
                    other => panic!("echo lost: {other:?}"),
                }
            }
            let _ = ws.close(None).await;
            samples
        }
    })
    .await;
}

async fn grpc_load(url: String, conns: usize, secs: u64, token: Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut channels = Vec::new();
    for _ in 0..4 {
        let endpoint = tonic::transport::Channel::from_shared(url.clone()).unwrap();
        channels.push(endpoint.tcp_nodelay(true).connect().await.expect("connect"));
    }
    drive(conns, secs, |i| {
        let mut grpc = tonic::client::Grpc::new(channels[i % channels.len()].clone());
        let token = token.clone();
        async move {
            let mut samples = Vec::new();
            let path = http::uri::PathAndQuery::from_static("/bench.Echo/Unary");
            while Instant::now() < deadline {
                let mut request = tonic::Request::new(Payload {
                    data: vec![7u8; 64],
                });
                if let Some(token) = &token {
                    let value = format!("Bearer {token}").parse().unwrap();
                    request.metadata_mut().insert("authorization", value);
                }
                let sent = Instant::now();
                grpc.ready().await.unwrap();
                let codec = tonic_prost::ProstCodec::<Payload, Payload>::default();
                grpc.unary(request, path.clone(), codec)
                    .await
                    .expect("unary call");
                samples.push(micros(sent));
            }
            samples
        }
    })
    .await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let number = |i: usize| arg(i).parse::<usize>().expect("a number");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        match arg(0).as_str() {
            "ws-server" => ws_server().await,
            "grpc-server" => grpc_server().await,
            "ws" => {
                let token = args.get(5).cloned();
                ws_load(arg(1), number(2), number(3) as u64, number(4), token).await;
            }
            "grpc" => grpc_load(arg(1), number(2), number(3) as u64, args.get(4).cloned()).await,
            _ => eprintln!("usage: protocol_load ws-server|grpc-server|ws ...|grpc ..."),
        }
    });
}
