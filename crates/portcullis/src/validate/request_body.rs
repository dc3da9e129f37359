//! The request body against its operation: a declared content type, then the whole body
//! read (bounded) and checked as strict JSON or form fields and against its schema.

use super::FieldError;
use super::contract::{Operation, best_match};
use super::media::parse_content_type;
use super::validated::Validated;
use crate::denial::Denial;
use crate::json::JsonLimits;
use crate::normalize::BodyTrip;
use crate::reason::{MalformedReason, MediaTypeReason};
use bytes::Bytes;
use http::{HeaderMap, Request, header};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Limited};

/// What must happen to the body before forwarding.
pub(super) enum BodyPlan {
    /// Forward as it streams (no body, or a declared non-JSON type).
    Stream,
    /// Read it whole and check it as JSON, or as a form with a schema (against the schema
    /// of the n-th media type, when it has one).
    Buffered(usize),
}
/// Hands the body on as it streams, or reads and checks it first.
pub(super) async fn read_body<B>(
    req: Request<B>,
    op: &Operation,
    plan: BodyPlan,
    limits: JsonLimits,
) -> Result<Request<Validated<B>>, Denial>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    match plan {
        BodyPlan::Stream => Ok(req.map(Validated::streaming)),
        BodyPlan::Buffered(media) => buffer_and_check(req, op, media, limits).await,
    }
}

/// Decides how the body is handled: refuses a body the operation does not declare, an
/// undeclared or ambiguous content type, and a missing required body.
pub(super) fn plan_body(
    op: &Operation,
    headers: &HeaderMap,
    empty: bool,
) -> Result<BodyPlan, Denial> {
    let Some(spec) = &op.body else {
        if empty {
            return Ok(BodyPlan::Stream);
        }
        return Err(Denial::UnsupportedMediaType {
            reason: MediaTypeReason::UnexpectedBody,
            detail: format!("operation {} declares no request body", op.id),
        });
    };
    if empty {
        if spec.required {
            return Err(Denial::invalid(vec![FieldError::new(
                String::new(),
                "required",
                "a request body is required".into(),
            )]));
        }
        return Ok(BodyPlan::Stream);
    }
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Denial::UnsupportedMediaType {
            reason: MediaTypeReason::MissingOrRepeated,
            detail: "a body needs exactly one Content-Type".into(),
        });
    };
    let media = value
        .to_str()
        .map_err(|_| MediaTypeReason::Syntax)
        .and_then(|text| parse_content_type(text).map_err(|e| e.reason()))
        .map_err(|reason| Denial::UnsupportedMediaType {
            reason,
            detail: "the Content-Type is malformed or names a charset other than UTF-8".into(),
        })?;
    let Some(index) = best_match(&spec.media, &media) else {
        return Err(Denial::UnsupportedMediaType {
            reason: MediaTypeReason::Undeclared,
            detail: format!(
                "{}/{} is not declared for operation {}",
                media.kind, media.subtype, op.id
            ),
        });
    };
    let has_form_schema = spec.media.get(index).is_some_and(|m| m.form.is_some());
    if media.is_json() || (media.is_form() && has_form_schema) {
        return Ok(BodyPlan::Buffered(index));
    }
    Ok(BodyPlan::Stream)
}

/// Reads the whole body (bounded), checks it (strict JSON or form fields, then the schema),
/// and hands it on as bytes.
async fn buffer_and_check<B>(
    req: Request<B>,
    op: &Operation,
    media: usize,
    limits: JsonLimits,
) -> Result<Request<Validated<B>>, Denial>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    let (parts, body) = req.into_parts();
    let max = limits_body_bytes(&parts.extensions);
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let tripped = parts
                .extensions
                .get::<BodyTrip>()
                .and_then(BodyTrip::tripped);
            return Err(tripped.unwrap_or_else(|| {
                if error.is::<http_body_util::LengthLimitError>() {
                    Denial::BodyTooLarge { limit: max as u64 }
                } else {
                    Denial::Malformed {
                        reason: MalformedReason::BodyReadError,
                        detail: error.to_string(),
                        close: true,
                    }
                }
            }));
        }
    };
    op.check_buffered_body(media, &bytes, limits)?;
    Ok(Request::from_parts(parts, Validated::buffered(bytes)))
}

/// The body bound: the guard's limit when the gateway set one, otherwise 1 MiB.
fn limits_body_bytes(extensions: &http::Extensions) -> usize {
    extensions.get::<BodyTrip>().map_or(1024 * 1024, |t| {
        usize::try_from(t.limit()).unwrap_or(usize::MAX)
    })
}
