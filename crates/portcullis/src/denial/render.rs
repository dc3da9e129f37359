//! The one place a refusal becomes bytes for the client: an RFC 9457
//! `application/problem+json` answer with the generic title, and the headers its status
//! calls for (`Allow`, `Retry-After`, `WWW-Authenticate`, `RateLimit`).

use super::{AuthFailure, CredentialProblem, Denial};
use crate::body::{self, Body};
use crate::reason::BindingProblem;
use crate::request_id::RequestId;
use http::{HeaderValue, Method, Response, header};

impl Denial {
    /// Renders the refusal as an RFC 9457 `application/problem+json` response.
    ///
    /// This is the only place a refusal becomes bytes for the client.
    pub fn to_response(&self, request_id: &RequestId) -> Response<Body> {
        let mut problem = serde_json::json!({
            "type": self.problem_type(),
            "title": self.title(),
            "status": self.status().as_u16(),
            "request_id": request_id.as_str(),
        });
        if let (
            Denial::Forbidden {
                required_action,
                resource_type,
                ..
            }
            | Denial::PolicyEngineError {
                required_action,
                resource_type,
                ..
            },
            Some(fields),
        ) = (self, problem.as_object_mut())
        {
            fields.insert("required_action".into(), required_action.clone().into());
            fields.insert("resource_type".into(), resource_type.clone().into());
        }
        if let (Denial::SessionRequired { login, .. }, Some(fields)) =
            (self, problem.as_object_mut())
        {
            fields.insert("login".into(), login.clone().into());
        }
        if let (Denial::Invalid { errors, .. }, Some(fields)) = (self, problem.as_object_mut()) {
            fields.insert("errors".into(), serde_json::json!(errors));
        }
        let mut response = Response::new(body::full(problem.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Denial::UpstreamError {
            retry_after: Some(value),
            ..
        } = self
        {
            headers.insert(header::RETRY_AFTER, value.clone());
        }
        if let Denial::MethodNotAllowed { allow } = self {
            let list = allow
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&list) {
                headers.insert(header::ALLOW, value);
            }
        }
        match self {
            // RFC 6750 §3: no error code when no credential was sent at all.
            Denial::Unauthenticated {
                reason: AuthFailure::Credential(CredentialProblem::MissingToken),
                ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"portcullis\""),
                );
            }
            // RFC 9449 §7.1: a DPoP challenge, with the algorithms proofs may use (a
            // certificate-bound token's problem is the token's: a Bearer challenge).
            Denial::Unauthenticated {
                reason: reason @ (AuthFailure::Dpop(_, algs) | AuthFailure::Binding(_, algs)),
                ..
            } if !matches!(
                reason,
                AuthFailure::Binding(
                    BindingProblem::NoCertificate | BindingProblem::CertificateMismatch,
                    _
                )
            ) =>
            {
                let error = match reason {
                    AuthFailure::Dpop(crate::authn::dpop::DpopError::UseNonce(nonce), _) => {
                        if let Ok(value) = HeaderValue::from_str(nonce) {
                            headers.insert("dpop-nonce", value);
                        }
                        "use_dpop_nonce"
                    }
                    AuthFailure::Dpop(..) => "invalid_dpop_proof",
                    _ => "invalid_token",
                };
                let value = format!(
                    "DPoP realm=\"portcullis\", error=\"{error}\", algs=\"{}\"",
                    algs.as_str()
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Denial::Unauthenticated { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"portcullis\", error=\"invalid_token\"",
                    ),
                );
            }
            Denial::SessionRequired {
                login, navigate, ..
            } => {
                if *navigate {
                    if let Ok(value) = HeaderValue::from_str(login) {
                        headers.insert(header::LOCATION, value);
                    }
                } else {
                    // A 401 must name a scheme (RFC 9110 §11.6.1); a browser session has
                    // none registered, so the challenge names the login path instead.
                    headers.insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Session realm=\"portcullis\""),
                    );
                }
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Denial::LoginRefused { .. } => {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Denial::RateLimited {
                policy,
                limit,
                window_secs,
                retry_after_secs,
                ..
            } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
                if *limit > 0 {
                    let policy_header = format!("\"{policy}\";q={limit};w={window_secs}");
                    let state = format!("\"{policy}\";r=0;t={retry_after_secs}");
                    for (name, value) in [("ratelimit-policy", policy_header), ("ratelimit", state)]
                    {
                        if let Ok(value) = HeaderValue::from_str(&value) {
                            headers.insert(name, value);
                        }
                    }
                }
            }
            Denial::StepUpRequired { acr_values } => {
                let value = format!(
                    "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", error_description=\"a stronger authentication is required\", acr_values=\"{acr_values}\""
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Denial::InsufficientScope { required } => {
                let value = format!(
                    "Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"{}\"",
                    required.join(" ")
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problem_body_is_generic_and_carries_request_id() {
        let denial = Denial::UpstreamUnreachable {
            upstream: "items".into(),
            detail: "connect to 10.1.2.3:80 refused".into(),
        };
        let response = denial.to_response(&RequestId::from_trusted("abc"));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes());
        let text =
            String::from_utf8(bytes.map(|b| b.to_vec()).unwrap_or_default()).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(value["status"], 502);
        assert_eq!(value["request_id"], "abc");
        assert!(
            !text.contains("10.1.2.3"),
            "upstream address leaked: {text}"
        );
        assert!(!text.contains("items"), "upstream name leaked: {text}");
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let denial = Denial::MethodNotAllowed {
            allow: vec![Method::GET, Method::POST],
        };
        let response = denial.to_response(&RequestId::from_trusted("x"));
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
    }
}
