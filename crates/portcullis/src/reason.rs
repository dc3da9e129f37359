//! The typed reasons a [`crate::Denial`] carries, one enum per family of refusal.
//!
//! Each reason has one machine-readable name (`as_str`), recorded in the security event and
//! in metrics; the names are part of the product contract and never change. Every mapping
//! from a reason is an exhaustive `match`, so a new reason cannot be left without a name, a
//! status or a severity.

use crate::authn::token::TokenError;

/// Declares a reason enum whose variants map one-to-one onto event names.
macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The reason's name in events and metrics.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

reasons! {
    /// Why a request is malformed or ambiguous (400): its bytes on the wire, its framing
    /// headers, its host, or its path.
    MalformedReason {
        /// A bare LF ends a line of the head (RFC 9112 §2.2).
        BareLf => "bare_lf",
        /// A field line is folded (obs-fold, RFC 9112 §5.2).
        ObsoleteLineFolding => "obsolete_line_folding",
        /// A field name is not a token.
        InvalidHeaderName => "invalid_header_name",
        /// The request-target has a byte outside printable ASCII.
        InvalidTargetByte => "invalid_target_byte",
        /// The request-target carries a `#` fragment.
        FragmentInTarget => "fragment_in_target",
        /// `*` as the target of a method other than `OPTIONS`.
        AsteriskTarget => "asterisk_target",
        /// A WebSocket upgrade on a route without `websocket: true`.
        WebSocketNotAllowed => "websocket_not_allowed",
        /// A WebSocket handshake that breaks RFC 6455 §4.2.1 (or RFC 8441 §4).
        WebSocketHandshake => "websocket_handshake",
        /// An HTTP/2 extended CONNECT for a protocol the gateway does not offer.
        UnsupportedProtocol => "unsupported_protocol",
        /// Several `Content-Length` fields.
        DuplicateContentLength => "duplicate_content_length",
        /// Both `Content-Length` and `Transfer-Encoding`.
        ContentLengthAndTransferEncoding => "content_length_and_transfer_encoding",
        /// A `Content-Length` that is not a number.
        InvalidContentLength => "invalid_content_length",
        /// Several `Host` fields.
        DuplicateHost => "duplicate_host",
        /// A `Host` that is not visible ASCII.
        InvalidHost => "invalid_host",
        /// A trusted proxy's forwarded client certificate header that cannot be read.
        ForwardedClientCert => "forwarded_client_cert",
        /// Userinfo in the host.
        UserinfoInHost => "userinfo_in_host",
        /// `Host` differs from the target's authority.
        HostMismatch => "host_mismatch",
        /// The path does not start with `/`.
        NotOriginForm => "not_origin_form",
        /// A backslash in the path.
        Backslash => "backslash",
        /// A `;` path parameter.
        PathParameter => "path_parameter",
        /// A truncated or non-hex `%` escape.
        BadPercentEncoding => "bad_percent_encoding",
        /// `%2F` in the path.
        EncodedSlash => "encoded_slash",
        /// `%5C` in the path.
        EncodedBackslash => "encoded_backslash",
        /// `%00` in the path.
        NulByte => "nul_byte",
        /// A control character in the path.
        ControlCharacter => "control_character",
        /// Escapes that decode to invalid UTF-8.
        InvalidUtf8 => "invalid_utf8",
        /// Dot segments climb above the root.
        EscapesRoot => "escapes_root",
        /// The normalized path cannot be represented as a URI.
        InvalidPath => "invalid_path",
        /// The body could not be read (the connection broke mid-body).
        BodyReadError => "body_read_error",
    }
}

reasons! {
    /// Which header-section limit a request broke (431).
    HeaderLimit {
        /// The header section has more bytes than allowed.
        Bytes => "header_bytes",
        /// The header section has more fields than allowed.
        Count => "header_count",
    }
}

reasons! {
    /// What is wrong with how a credential was presented, before any token is read.
    CredentialProblem {
        /// No bearer token at all.
        MissingToken => "missing_token",
        /// `access_token` in the query string (RFC 9700 forbids it).
        TokenInQuery => "token_in_query",
        /// Several `Authorization` fields.
        MultipleCredentials => "multiple_credentials",
        /// An `Authorization` value that is not ASCII, or an empty bearer token.
        MalformedHeader => "malformed_token",
        /// An `Authorization` scheme other than `Bearer`.
        UnsupportedScheme => "unsupported_scheme",
    }
}

reasons! {
    /// Why a valid token's sender constraint (`cnf`) does not hold for this request.
    BindingProblem {
        /// A DPoP-bound token (`cnf.jkt`) sent as a plain bearer token.
        Downgrade => "dpop_downgrade",
        /// `Authorization: DPoP` with a token that is not bound to a key.
        UnboundDpop => "dpop_unbound_token",
        /// A certificate-bound token (`cnf.x5t#S256`) over a connection without a client certificate.
        NoCertificate => "certificate_binding_required",
        /// A certificate-bound token over a connection with another certificate.
        CertificateMismatch => "certificate_binding_mismatch",
        /// The issuer says `binding: required` and the token has no `cnf`.
        Unbound => "unbound_token",
    }
}

/// Why a request is unauthenticated (401): how the credential was presented, or the exact
/// check its token failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The credential's presentation is wrong.
    Credential(CredentialProblem),
    /// The token itself was refused.
    Token(TokenError),
    /// The DPoP proof was refused; the algorithms a proof may use (the challenge's `algs`).
    Dpop(
        crate::authn::dpop::DpopError,
        crate::authn::dpop::ProofAlgorithms,
    ),
    /// The token's binding does not hold; the algorithms a DPoP proof may use.
    Binding(BindingProblem, crate::authn::dpop::ProofAlgorithms),
}

impl AuthFailure {
    /// The reason's name in events and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::Credential(problem) => problem.as_str(),
            AuthFailure::Token(error) => error.reason(),
            AuthFailure::Dpop(error, _) => error.reason(),
            AuthFailure::Binding(problem, _) => problem.as_str(),
        }
    }

    /// Whether the client sent no credential at all (which is neither an attack nor a
    /// failed attempt).
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            AuthFailure::Credential(CredentialProblem::MissingToken)
        )
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

reasons! {
    /// Why an authenticated (or anonymous) request is forbidden (403) by something other
    /// than a missing scope.
    ForbiddenReason {
        /// The policy denied it.
        PolicyDenied => "policy_denied",
        /// A protected route has no policy to ask (fail closed).
        NoPolicy => "no_policy",
        /// The route names client identities and the connection showed no certificate.
        ClientCertificateRequired => "client_certificate_required",
        /// The connection's certificate is none of the route's identities.
        ClientIdentityMismatch => "client_identity_mismatch",
        /// A CORS preflight from an origin, method or header the route does not allow.
        CorsPreflightRefused => "cors_preflight_refused",
        /// An unsafe method on a browser session from another site (CSRF).
        CrossSiteRequest => "cross_site_request",
        /// A WebSocket handshake from an `Origin` the route does not allow (cross-site
        /// WebSocket hijacking).
        WebSocketOrigin => "websocket_origin",
    }
}

reasons! {
    /// Why the rate limit layers refused a request (429).
    RateLimitReason {
        /// A limit's quota is spent.
        RateLimit => "rate_limit",
        /// A limit's quota, tightened by a threat score over 50, is spent.
        RateLimitSuspicious => "rate_limit_suspicious",
        /// The client's threat score is at or over the blocking threshold.
        ThreatBlock => "threat_block",
        /// Too many failed authentications from this client.
        AuthLockout => "auth_lockout",
        /// The shared limit store could not be asked (fail closed).
        StoreUnavailable => "store_unavailable",
    }
}

reasons! {
    /// Why a request breaks the API's contract (400), from the first error found.
    InvalidReason {
        /// A parameter is given twice (parameter pollution).
        DuplicateParameter => "duplicate_parameter",
        /// A parameter the operation does not declare.
        UnknownParameter => "unknown_parameter",
        /// A JSON object has a key twice.
        DuplicateKey => "duplicate_key",
        /// JSON nested deeper than allowed.
        TooDeep => "too_deep",
        /// A JSON string longer than allowed.
        StringTooLong => "string_too_long",
        /// The body is not JSON.
        InvalidJson => "invalid_json",
        /// A property the schema does not declare.
        UnknownProperty => "unknown_property",
        /// A read-only property in a request.
        ReadOnly => "read_only",
        /// A required request body is missing.
        MissingBody => "missing_body",
        /// A parameter breaks its schema.
        InvalidParameter => "invalid_parameter",
        /// The body breaks its schema.
        SchemaViolation => "schema_violation",
    }
}

impl InvalidReason {
    /// Classifies the first of a list of contract errors: pollution, undeclared parameters
    /// and the JSON guard's findings keep their own names; other findings are about a
    /// parameter or about the body.
    pub fn of(first: Option<&crate::problem::FieldError>) -> InvalidReason {
        let Some(error) = first else {
            return InvalidReason::SchemaViolation;
        };
        match error.code {
            "duplicate_parameter" => InvalidReason::DuplicateParameter,
            "unknown_parameter" => InvalidReason::UnknownParameter,
            "duplicate_key" => InvalidReason::DuplicateKey,
            "too_deep" => InvalidReason::TooDeep,
            "string_too_long" => InvalidReason::StringTooLong,
            "invalid_json" => InvalidReason::InvalidJson,
            "unknown_property" => InvalidReason::UnknownProperty,
            "read_only" => InvalidReason::ReadOnly,
            "required" if error.field.is_empty() => InvalidReason::MissingBody,
            _ if error.field.is_empty() || error.field.starts_with('/') => {
                InvalidReason::SchemaViolation
            }
            _ => InvalidReason::InvalidParameter,
        }
    }
}

reasons! {
    /// Why a request body's media type is refused (415).
    MediaTypeReason {
        /// A body on an operation that declares none.
        UnexpectedBody => "unexpected_body",
        /// No `Content-Type`, or several.
        MissingOrRepeated => "content_type_missing_or_repeated",
        /// A `Content-Type` that does not parse.
        Syntax => "content_type_syntax",
        /// A media-type parameter given twice.
        DuplicateParameter => "content_type_duplicate_parameter",
        /// A charset other than UTF-8.
        Charset => "content_type_charset",
        /// A media type the operation does not declare.
        Undeclared => "content_type_undeclared",
    }
}

reasons! {
    /// Why an upstream's response breaks the API's contract (502 when blocking).
    ResponseReason {
        /// A status the operation does not document.
        UndeclaredStatus => "response_undeclared_status",
        /// A content type the operation does not document for the status.
        UndeclaredContentType => "response_undeclared_content_type",
        /// A body larger than the response check reads.
        TooLarge => "response_too_large",
        /// A JSON body that is not JSON.
        InvalidJson => "response_invalid_json",
        /// A body that breaks its schema.
        Schema => "response_schema",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_contract() {
        assert_eq!(MalformedReason::EncodedSlash.as_str(), "encoded_slash");
        assert_eq!(HeaderLimit::Count.to_string(), "header_count");
        assert_eq!(
            AuthFailure::Token(TokenError::Expired).as_str(),
            "token_expired"
        );
        assert!(AuthFailure::Credential(CredentialProblem::MissingToken).is_missing());
        assert!(!AuthFailure::Token(TokenError::BadSignature).is_missing());
        assert_eq!(RateLimitReason::ThreatBlock.as_str(), "threat_block");
    }
}

reasons! {
    /// Why a request on a browser-session route (`auth: session`) has no usable session.
    SessionProblem {
        /// No session cookie.
        NoSession => "no_session",
        /// A session cookie that does not open (tampered, foreign, or sealed by a retired key).
        Invalid => "session_invalid",
        /// Past the session's absolute lifetime.
        Expired => "session_expired",
        /// Unused for longer than the idle timeout.
        Idle => "session_idle",
        /// Ended by a logout.
        Revoked => "session_revoked",
        /// The access token could not be refreshed, and it has expired.
        RefreshFailed => "session_refresh_failed",
        /// The route needs MFA the session does not show: a navigation goes through the IdP again.
        StepUp => "session_step_up",
    }
}

reasons! {
    /// Why a login callback (or a login start) was refused.
    LoginProblem {
        /// No pending login for this `state` (replayed, stale, or never started here).
        UnknownState => "login_state_unknown",
        /// The pending login is older than it may be.
        StateExpired => "login_state_expired",
        /// The IdP answered the authorization request with an error.
        IdpError => "login_idp_error",
        /// The code exchange failed or gave an unusable answer.
        CodeExchange => "login_code_exchange_failed",
        /// The ID token failed a check (signature, `iss`, `aud`, `azp`, `exp`, ...).
        IdToken => "login_id_token_invalid",
        /// The ID token's `nonce` is not the pending login's.
        Nonce => "login_nonce_mismatch",
        /// The ID token's `at_hash` does not match the access token.
        AtHash => "login_at_hash_mismatch",
        /// A step-up login came back without MFA, or without a fresh authentication.
        StepUpNotMet => "login_step_up_not_met",
        /// The session does not fit in one cookie (use `session.store: redis`).
        TooLarge => "session_too_large",
        /// The IdP's discovery document is not loaded, or the session store is down (503,
        /// on the login paths and on session routes alike: fail closed).
        Unavailable => "login_unavailable",
        /// The request to a login path is malformed (a missing parameter, a bad method).
        BadRequest => "login_bad_request",
    }
}
