//! `GET /admin/events/stream`: the security events live, as Server-Sent Events, resumable
//! with `Last-Event-ID` (or `?since=`) against the in-memory ring of recent events.

use crate::gateway::Gateway;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Streams open at once at most (each holds a task); more are answered 503.
const MAX_STREAMS: usize = 32;
/// A comment line this often keeps proxies and browsers from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// The stream's answer: events after `Last-Event-ID` (or `since`), else only new ones.
pub fn stream(gateway: Arc<Gateway>, headers: &HeaderMap, since: Option<u64>) -> Response {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(since);
    if OPEN_STREAMS.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many event streams\n").into_response();
    }
    let (tx, rx) = mpsc::channel(64);
    // An id from the future (a client of an earlier process: numbering restarts) resumes
    // from now, or it would wait for the numbers to catch up.
    let last = gateway.events.last_seq();
    let after = resume.filter(|id| *id <= last).unwrap_or(last);
    tokio::spawn(async move {
        feed(&gateway, after, tx).await;
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
    });
    let mut response = Response::new(axum::body::Body::new(ChannelBody(rx)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Sends every event after `after`, then each new one, until the client goes away.
async fn feed(gateway: &Gateway, mut after: u64, tx: mpsc::Sender<Bytes>) {
    loop {
        let next = gateway.events.next_event();
        tokio::pin!(next);
        next.as_mut().enable();
        // What the client missed and the ring no longer holds is said, not skipped silently.
        if let Some(oldest) = gateway.events.oldest_seq()
            && oldest > after.saturating_add(1)
        {
            let missed = oldest.saturating_sub(after).saturating_sub(1);
            let gap = format!("event: gap\ndata: {{\"missed\":{missed}}}\n\n");
            if tx.send(Bytes::from(gap)).await.is_err() {
                return;
            }
            after = oldest.saturating_sub(1);
        }
        for recent in gateway.events.recent_since(after) {
            let Ok(json) = serde_json::to_string(&recent) else {
                continue;
            };
            after = recent.seq;
            let chunk = format!("id: {}\ndata: {json}\n\n", recent.seq);
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = &mut next => {}
            _ = tokio::time::sleep(KEEP_ALIVE) => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// A response body fed by a channel; it ends when the feeding task ends.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
