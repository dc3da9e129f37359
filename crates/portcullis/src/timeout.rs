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

impl<S, R> Service<R> for RequestTimeout<S>
where
    S: Service<R, Error = Denial>,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(self.limit),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RequestTimeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: tokio::time::Sleep,
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
            Poll::Ready(()) => Poll::Ready(Err(Denial::RequestTimeout)),
            Poll::Pending => Poll::Pending,
        }
    }
}
