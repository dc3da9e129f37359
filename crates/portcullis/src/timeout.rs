//! Bounds the whole exchange (`request_timeout`), upstream included.

use crate::denial::Denial;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Builds [`RequestTimeout`] services.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeoutLayer {
    limit: Duration,
}

impl RequestTimeoutLayer {
    /// The bound on a whole exchange unless configured otherwise.
    pub const DEFAULT: Duration = Duration::from_secs(30);

    /// Refuses with [`Denial::RequestTimeout`] once `limit` has passed.
    pub fn new(limit: Duration) -> Self {
        RequestTimeoutLayer { limit }
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            limit: self.limit,
        }
    }
}

/// The service produced by [`RequestTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> Service<http::Request<B>> for RequestTimeout<S>
where
    S: Service<http::Request<B>, Error = Denial>,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The server may have made one already (it watches for early answers).
        let progress = req
            .extensions()
            .get::<BodyProgress>()
            .cloned()
            .unwrap_or_default();
        req.extensions_mut().insert(progress.clone());
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(self.limit),
            progress,
        }
    }
}

/// Whether the gateway is waiting on the client for more of a request's body: shared by the
/// body guard, which marks it, and the timeout, which blames a slow client (408) rather than
/// the upstream (504) when time runs out while the body is awaited from the client. The
/// server reads it too: an answer given before the body was complete needs a lingering close.
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(std::sync::Arc<std::sync::atomic::AtomicU8>);

const BODY_IDLE: u8 = 0;
const BODY_WAITING: u8 = 1;
const BODY_COMPLETE: u8 = 2;

impl BodyProgress {
    fn set(&self, state: u8) {
        use std::sync::atomic::Ordering;
        // Once complete, always complete.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != BODY_COMPLETE).then_some(state)
            });
    }

    /// Whoever reads the body is waiting for the client's next bytes.
    pub fn waiting(&self) {
        self.set(BODY_WAITING);
    }

    /// Bytes arrived: not waiting on the client for now.
    pub fn received(&self) {
        self.set(BODY_IDLE);
    }

    /// The body was received completely (or there was none).
    pub fn complete(&self) {
        self.set(BODY_COMPLETE);
    }

    /// Whether the body is being awaited from the client right now.
    pub fn is_waiting(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire) == BODY_WAITING
    }

    /// Whether the whole body arrived.
    pub fn is_complete(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire) == BODY_COMPLETE
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RequestTimeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: tokio::time::Sleep,
        progress: BodyProgress,
    }
}

impl<F, T> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, Denial>>,
{
    type Output = Result<T, Denial>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) if this.progress.is_waiting() => Poll::Ready(Err(Denial::BodyTimeout)),
            Poll::Ready(()) => Poll::Ready(Err(Denial::RequestTimeout)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::request;
    use tower::{ServiceBuilder, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn a_stalled_exchange_is_504_unless_the_client_is_the_slow_one() {
        let stalled = tower::service_fn(|_req: http::Request<_>| {
            std::future::pending::<Result<http::Response<crate::body::Body>, Denial>>()
        });
        let service = ServiceBuilder::new()
            .layer(RequestTimeoutLayer::new(Duration::from_secs(1)))
            .service(stalled);
        let refused = service.clone().oneshot(request("GET", "/")).await.err();
        assert_eq!(refused, Some(Denial::RequestTimeout));
        // The body guard says it is waiting for the client's bytes: the client is slow.
        let mut slow_client = request("POST", "/");
        let progress = BodyProgress::default();
        progress.waiting();
        slow_client.extensions_mut().insert(progress);
        let refused = service.oneshot(slow_client).await.err();
        assert_eq!(refused, Some(Denial::BodyTimeout));
    }

    #[test]
    fn a_complete_body_stays_complete() {
        let progress = BodyProgress::default();
        progress.complete();
        progress.waiting();
        assert!(progress.is_complete() && !progress.is_waiting());
    }
}
