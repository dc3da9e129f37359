//! A refusal as gRPC clients expect it (the gRPC over HTTP/2 protocol): HTTP 200 with a
//! trailers-only answer, `grpc-status` and a generic `grpc-message`, no body.

use super::Denial;
use crate::body::{self, Body};
use crate::request_id::RequestId;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

/// Whether a request is a gRPC call (`content-type: application/grpc`, `+proto`, ...), so
/// that its refusal must be a gRPC status.
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.trim_start();
            t.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
                && matches!(t.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// gRPC status codes (grpc/doc/statuscodes.md) a refusal can carry.
mod code {
    pub const UNKNOWN: u8 = 2;
    pub const INVALID_ARGUMENT: u8 = 3;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
    pub const UNAUTHENTICATED: u8 = 16;
}

impl Denial {
    /// The gRPC status of the refusal, from its HTTP status.
    pub fn grpc_status(&self) -> u8 {
        match self.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FOUND => code::UNAUTHENTICATED,
            StatusCode::FORBIDDEN => code::PERMISSION_DENIED,
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => code::RESOURCE_EXHAUSTED,
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => code::INVALID_ARGUMENT,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => code::UNIMPLEMENTED,
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => code::DEADLINE_EXCEEDED,
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::MISDIRECTED_REQUEST => code::UNAVAILABLE,
            status if status.is_server_error() => code::INTERNAL,
            _ => code::UNKNOWN,
        }
    }

    /// Renders the refusal as a trailers-only gRPC answer. The headers a problem answer
    /// carries for its status (`WWW-Authenticate`, `Retry-After`, `RateLimit`) are kept; the
    /// message is the same generic title.
    pub fn to_grpc_response(&self, request_id: &RequestId) -> Response<Body> {
        let (mut parts, _) = self.to_response(request_id).into_parts();
        parts.status = StatusCode::OK;
        let headers = &mut parts.headers;
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::LOCATION);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        // Titles are plain ASCII letters and spaces: nothing to percent-encode.
        headers.insert("grpc-message", HeaderValue::from_static(self.title()));
        Response::from_parts(parts, body::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::{AuthFailure, CredentialProblem};

    #[test]
    fn grpc_requests_are_recognised() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_grpc_request(&headers)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC; charset=x"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!is_grpc_request(&HeaderMap::new()));
    }

    #[test]
    fn refusals_map_to_the_statuses_grpc_clients_know() {
        let unauthenticated = Denial::Unauthenticated {
            reason: AuthFailure::Credential(CredentialProblem::MissingToken),
            detail: String::new(),
        };
        let cases = [
            (unauthenticated, 16),
            (Denial::InsufficientScope { required: vec![] }, 7),
            (Denial::NoRoute, 12),
            (Denial::RequestTimeout, 4),
            (
                Denial::UpstreamUnreachable {
                    upstream: "u".into(),
                    detail: "refused".into(),
                },
                14,
            ),
            (Denial::BodyTooLarge { limit: 1 }, 8),
            (Denial::invalid(vec![]), 3),
        ];
        for (denial, expected) in cases {
            let response = denial.to_grpc_response(&RequestId::from_trusted("r"));
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()["grpc-status"],
                expected.to_string().as_str()
            );
            assert_eq!(response.headers()["content-type"], "application/grpc");
            assert_eq!(response.headers()["grpc-message"], denial.title());
            assert!(
                http_body::Body::is_end_stream(response.body()),
                "trailers-only"
            );
        }
    }
}
