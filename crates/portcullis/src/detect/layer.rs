//! [`DetectLayer`]: hands every answer to the [`Detectors`] on its way out, never delaying
//! it (a body is counted as it streams and judged when it ends).

use super::{Detectors, Watch, exfiltration};
use crate::BoxError;
use crate::body::Body;
use crate::scope::RequestScope;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Counts every response body on its way out (see the module docs).
#[derive(Debug, Clone)]
pub struct DetectLayer {
    detectors: Option<Arc<Detectors>>,
}

impl DetectLayer {
    /// A layer feeding `detectors` (none: it passes everything through untouched).
    pub fn new(detectors: Option<Arc<Detectors>>) -> Self {
        DetectLayer { detectors }
    }
}

impl<S> Layer<S> for DetectLayer {
    type Service = Detect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Detect {
            inner,
            detectors: self.detectors.clone(),
        }
    }
}

/// The service produced by [`DetectLayer`].
#[derive(Debug, Clone)]
pub struct Detect<S> {
    inner: S,
    detectors: Option<Arc<Detectors>>,
}

impl<S, B> Service<Request<B>> for Detect<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = crate::Denial>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Disabled detectors cost nothing per request, not even the extension lookup.
        let watch = self.detectors.as_ref().and_then(|detectors| {
            let scope = req.extensions().get::<Arc<RequestScope>>()?;
            Some(Watch {
                detectors: detectors.clone(),
                scope: scope.clone(),
                path: detectors
                    .enumeration
                    .is_some()
                    .then(|| req.uri().path().into()),
                page: detectors
                    .exfiltration
                    .as_ref()
                    .and(req.uri().query())
                    .and_then(exfiltration::page_depth),
            })
        });
        ResponseFuture {
            inner: self.inner.call(req),
            watch,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Detect`]: the inner answer, its body counted when watched. It never
    /// refuses, so it is not the refusing layers' ready-or-inner future.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        watch: Option<Watch>,
    }
}

impl<F> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<Response<Body>, crate::Denial>>,
{
    type Output = Result<Response<Body>, crate::Denial>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some(watch) = this.watch.take() else {
            return Poll::Ready(result);
        };
        let detectors = watch.detectors.clone();
        let response = match result {
            Ok(response) => response,
            Err(denial) => {
                detectors.answer(&watch, denial.status().as_u16(), Some(&denial));
                return Poll::Ready(Err(denial));
            }
        };
        detectors.answer(&watch, response.status().as_u16(), None);
        // Sizes are learned and judged on successful answers with a body only: empty HEAD,
        // 204, 304 and error answers would drag an endpoint's baseline towards zero.
        let sized = response.status().is_success()
            && watch.scope.method() != http::Method::HEAD
            && response.status() != http::StatusCode::NO_CONTENT;
        if detectors.exfiltration.is_none() || !sized {
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|body| {
            crate::body::boxed(Counted {
                inner: body,
                bytes: 0,
                judge: Some((detectors, watch.scope)),
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// A body that counts its bytes and has them judged once it ends, or when it is dropped
    /// before (a client that aborts a download is judged on what it got).
    struct Counted {
        #[pin]
        inner: Body,
        bytes: u64,
        judge: Option<(Arc<Detectors>, Arc<RequestScope>)>,
    }

    impl PinnedDrop for Counted {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((detectors, scope)) = this.judge.take() {
                detectors.response(&scope, *this.bytes);
            }
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        let ended = match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes = this.bytes.saturating_add(data.len() as u64);
                }
                // hyper stops polling once a body says it has ended, so this is the last
                // look for a body of known length.
                this.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            _ => false,
        };
        if ended && let Some((detectors, scope)) = this.judge.take() {
            detectors.response(&scope, *this.bytes);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
