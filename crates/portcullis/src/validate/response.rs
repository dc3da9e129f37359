//! Response checks: a declared status, a declared content type and, for JSON with a
//! schema, a body that satisfies it; the body read is replayed to the client intact.

use super::contract::{Operation, best_match};
use super::media::parse_content_type;
use crate::body::{self, Body};
use crate::denial::Denial;
use crate::json::{JsonLimits, parse_strict};
use crate::reason::ResponseReason;
use bytes::Bytes;
use http::{HeaderMap, Response, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Checks a response against the operation: a declared status, a declared content type
/// and, for JSON with a schema, the body. Returns the response (intact) and the violation,
/// if any.
pub(super) async fn check_response(
    op: &Operation,
    response: Response<Body>,
    max: usize,
) -> Result<(Response<Body>, Option<Denial>), Denial> {
    // A switch to WebSocket has no body; what follows is not HTTP.
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok((response, None));
    }
    let status = response.status().as_u16();
    let violation = |reason, detail: String| Some(Denial::ResponseRejected { reason, detail });
    let Some(spec) = op.response(status) else {
        let detail = format!("status {status} is not documented for operation {}", op.id);
        return Ok((
            response,
            violation(ResponseReason::UndeclaredStatus, detail),
        ));
    };
    if spec.media.is_empty() || response.body().is_end_stream() {
        return Ok((response, None));
    }
    let media = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| parse_content_type(t).ok());
    let declared = media
        .as_ref()
        .and_then(|m| best_match(&spec.media, m))
        .and_then(|i| spec.media.get(i));
    let Some(declared) = declared else {
        let detail = format!(
            "the content type is not documented for operation {} status {status}",
            op.id
        );
        return Ok((
            response,
            violation(ResponseReason::UndeclaredContentType, detail),
        ));
    };
    let Some(schema) = &declared.schema else {
        return Ok((response, None));
    };
    let (parts, mut body) = response.into_parts();
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Denial::UpstreamUnreachable {
            upstream: op.id.to_string(),
            detail: format!("response body: {e}"),
        })?;
        match frame.into_data() {
            Ok(data) => {
                total = total.saturating_add(data.len());
                chunks.push_back(data);
                if total > max {
                    let replay = body::boxed(Replay {
                        chunks,
                        trailers: None,
                        rest: Some(body),
                    });
                    let detail = format!("response over {max} bytes could not be checked");
                    return Ok((
                        Response::from_parts(parts, replay),
                        violation(ResponseReason::TooLarge, detail),
                    ));
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let mut bytes = Vec::with_capacity(total);
    for chunk in &chunks {
        bytes.extend_from_slice(chunk);
    }
    let limits = JsonLimits {
        max_depth: 256,
        max_string_bytes: max,
    };
    let found = match parse_strict(&bytes, limits) {
        Err(e) => violation(ResponseReason::InvalidJson, format!("response body: {e}")),
        Ok(value) if !schema.is_valid(&value) => {
            let errors = schema.errors(&value, "");
            violation(ResponseReason::Schema, crate::problem::describe(&errors))
        }
        Ok(_) => None,
    };
    let replay = body::boxed(Replay {
        chunks: VecDeque::from([Bytes::from(bytes)]),
        trailers,
        rest: None,
    });
    Ok((Response::from_parts(parts, replay), found))
}

/// A body already partly (or wholly) read: the read chunks, then the rest.
struct Replay {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Body>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }
}
