//! The body guard: a request body cut short at its size limit or when it stalls, with a
//! [`BodyTrip`] telling later layers which refusal the cut deserves.

use crate::denial::Denial;
use crate::timeout::BodyProgress;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// resulting transport error can answer with the right refusal.
#[derive(Debug, Clone)]
pub struct BodyTrip {
    state: Arc<AtomicU8>,
    limit: u64,
}

const TRIP_NONE: u8 = 0;
const TRIP_TOO_LARGE: u8 = 1;
const TRIP_TIMEOUT: u8 = 2;

impl BodyTrip {
    /// A trip for a body limited to `limit` bytes, not tripped.
    pub(super) fn new(limit: u64) -> Self {
        BodyTrip {
            state: Arc::default(),
            limit,
        }
    }

    /// The byte limit the guard enforces.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The refusal the body guard made, if it made one.
    pub fn tripped(&self) -> Option<Denial> {
        match self.state.load(Ordering::Acquire) {
            TRIP_TOO_LARGE => Some(Denial::BodyTooLarge { limit: self.limit }),
            TRIP_TIMEOUT => Some(Denial::BodyTimeout),
            _ => None,
        }
    }

    fn set(&self, kind: u8) {
        let _ = self
            .state
            .compare_exchange(TRIP_NONE, kind, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Why [`GuardedBody`] stopped a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyGuardError {
    /// More bytes than allowed.
    #[error("request body over the size limit")]
    TooLarge,
    /// Slower than allowed.
    #[error("request body too slow")]
    Timeout,
}

pin_project_lite::pin_project! {
    /// A request body that stops with an error once it exceeds a byte limit or a deadline,
    /// while streaming: nothing is buffered.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        timeout: Duration,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        trip: BodyTrip,
        progress: Option<BodyProgress>,
    }
}

impl<B> GuardedBody<B> {
    /// Guards `inner` with the trip's byte limit and a total read time.
    pub fn new(inner: B, timeout: Duration, trip: BodyTrip) -> Self {
        GuardedBody {
            inner,
            remaining: trip.limit,
            timeout,
            deadline: None,
            trip,
            progress: None,
        }
    }
}

impl<B: HttpBody> GuardedBody<B> {
    /// Reports to `progress` whether the body is awaited from the client, and when it is
    /// complete.
    pub fn with_progress(mut self, progress: Option<BodyProgress>) -> Self {
        if let Some(progress) = &progress
            && self.inner.is_end_stream()
        {
            progress.complete();
        }
        self.progress = progress;
        self
    }
}

impl<B> HttpBody for GuardedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<crate::BoxError>,
{
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        // The clock starts when the body is first read, not when the head arrived.
        let timeout = *this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        this.trip.set(TRIP_TOO_LARGE);
                        return Poll::Ready(Some(Err(Box::new(BodyGuardError::TooLarge))));
                    }
                    *this.remaining -= len;
                }
                if let Some(progress) = this.progress.as_ref() {
                    if this.inner.is_end_stream() {
                        progress.complete();
                    } else {
                        progress.received();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                if let Some(progress) = this.progress.as_ref() {
                    progress.complete();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(progress) = this.progress.as_ref() {
                    progress.waiting();
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    this.trip.set(TRIP_TIMEOUT);
                    return Poll::Ready(Some(Err(Box::new(BodyGuardError::Timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
