//! [`ResponseFuture`]: the one future of every layer that can refuse.
//!
//! A layer either answers at once (a refusal, or an answer it makes itself such as a CORS
//! preflight), hands the request straight to its inner service, or has to await something
//! of its own first (a key refresh, a policy decision, a shared limit store) before it can
//! decide. The first two cost nothing; only the third is boxed, and only on the requests
//! that need it.

use crate::denial::Denial;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed future resolving to a response or a refusal.
pub type BoxedResponse<R> = Pin<Box<dyn Future<Output = Result<R, Denial>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of a refusing layer: ready at once, the inner service's own future, or
    /// the layer's boxed work (which ends by calling the inner service, or refusing).
    #[project = ResponseFutureProj]
    #[allow(missing_docs)] // the variants' fields are built only through the constructors
    pub enum ResponseFuture<F, R> {
        /// Resolved when the layer was called.
        Ready { result: Option<Result<R, Denial>> },
        /// The inner service's future, untouched.
        Inner { #[pin] future: F },
        /// The layer's own asynchronous work.
        Boxed { future: BoxedResponse<R> },
    }
}

impl<F, R> ResponseFuture<F, R> {
    /// A future that resolves to the given refusal.
    pub fn denied(denial: Denial) -> Self {
        ResponseFuture::Ready {
            result: Some(Err(denial)),
        }
    }

    /// A future that resolves to an answer the layer made itself.
    pub fn ready(response: R) -> Self {
        ResponseFuture::Ready {
            result: Some(Ok(response)),
        }
    }

    /// A future that waits on the inner service.
    pub fn inner(future: F) -> Self {
        ResponseFuture::Inner { future }
    }

    /// A future that runs the layer's own work.
    pub fn boxed(future: BoxedResponse<R>) -> Self {
        ResponseFuture::Boxed { future }
    }
}

impl<F, R> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<R, Denial>>,
{
    type Output = Result<R, Denial>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Ready { result } => match result.take() {
                Some(result) => Poll::Ready(result),
                // Polled again after it resolved: a caller bug, answered as "not yet".
                None => Poll::Pending,
            },
            ResponseFutureProj::Inner { future } => future.poll(cx),
            ResponseFutureProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
