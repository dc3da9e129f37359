//! The body type [`super::ValidateLayer`] hands on: the bytes it read and checked, or the
//! client's body as it streams.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// The request body after validation: the original stream, or the bytes that were read
    /// and checked.
    #[project = ValidatedProj]
    #[allow(missing_docs)] // the variants' fields are private in all but name
    pub enum Validated<B> {
        /// Not read by the gateway.
        Streaming {
            #[pin]
            body: B,
        },
        /// Read whole and checked.
        Buffered {
            bytes: Option<Bytes>,
        },
    }
}

impl<B> Validated<B> {
    /// A body passed on as it streams.
    pub fn streaming(body: B) -> Self {
        Validated::Streaming { body }
    }

    /// A body that was read whole.
    pub fn buffered(bytes: Bytes) -> Self {
        Validated::Buffered {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl<B> HttpBody for Validated<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<crate::BoxError>,
{
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ValidatedProj::Streaming { body } => body.poll_frame(cx).map_err(Into::into),
            ValidatedProj::Buffered { bytes } => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Validated::Streaming { body } => body.is_end_stream(),
            Validated::Buffered { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Validated::Streaming { body } => body.size_hint(),
            Validated::Buffered { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
