//! The demo's development OpenID provider (`portcullis demo --login`), served beside the
//! items API under `/idp`. DEVELOPMENT ONLY: it signs in anyone who picks a name, keeps its
//! codes and refresh tokens in memory, and exists so the browser login can be tried with no
//! setup. Real deployments point `identity.oidc_login.issuer` at a real provider.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use portcullis::authn::sign::SigningKey;
use portcullis::session::form::param;
use portcullis::session::seal::{random_token, s256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The demo's browser client (public: PKCE only).
pub(super) const CLIENT_ID: &str = "demo-portal";
/// Access token lifetime: short, so the demo shows refreshes.
const ACCESS_TOKEN_SECS: u64 = 120;

struct Code {
    sub: String,
    mfa: bool,
    nonce: String,
    challenge: String,
    redirect_uri: String,
    auth_time: u64,
}

#[derive(Clone)]
struct Grant {
    sub: String,
    mfa: bool,
}

struct Idp {
    issuer: String,
    audience: String,
    /// Only redirect targets on the gateway are honoured: its scheme and address (any port
    /// when it was asked for an ephemeral one).
    gateway: (String, std::net::SocketAddr),
    key: SigningKey,
    codes: Mutex<HashMap<String, Code>>,
    refresh_tokens: Mutex<HashMap<String, Grant>>,
}

type Shared = Arc<Idp>;

/// The `/idp` routes for a provider whose issuer is `issuer`, signing with `key`.
pub(super) fn router(
    issuer: String,
    audience: &str,
    gateway: (String, std::net::SocketAddr),
    key: SigningKey,
) -> axum::Router {
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
    let idp = Arc::new(Idp {
        issuer: issuer.clone(),
        audience: audience.to_string(),
        gateway,
        key,
        codes: Mutex::default(),
        refresh_tokens: Mutex::default(),
    });
    let discovery = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    axum::Router::new()
        .route(
            "/idp/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route("/idp/jwks", get(move || async move { axum::Json(jwks) }))
        .route("/idp/authorize", get(sign_in_page).post(sign_in))
        .route("/idp/token", axum::routing::post(token))
        .route("/idp/logout", get(logout))
        .with_state(idp)
}

impl Idp {
    /// Whether `uri` is on the gateway (no open redirect, even in development).
    fn on_gateway(&self, uri: &str) -> bool {
        let Ok(uri) = uri.parse::<axum::http::Uri>() else {
            return false;
        };
        let (scheme, addr) = &self.gateway;
        uri.scheme_str() == Some(scheme.as_str())
            && uri.host() == Some(addr.ip().to_string().as_str())
            && (addr.port() == 0 || uri.port_u16() == Some(addr.port()))
    }
}

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_string()).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The sign-in page: pick a user, optionally "use a second factor".
async fn sign_in_page(
    State(idp): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| query.get(k).cloned().unwrap_or_default();
    if get("client_id") != CLIENT_ID || !idp.on_gateway(&get("redirect_uri")) {
        return bad("unknown client or redirect_uri");
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return bad("PKCE S256 is required");
    }
    let hidden: String = ["redirect_uri", "state", "nonce", "code_challenge"]
        .iter()
        .map(|k| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(&get(k))
            )
        })
        .collect();
    let step_up = if get("max_age") == "0" {
        "<p><strong>This page asks for a second factor (step-up).</strong></p>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo IdP</title></head><body>\
<h1>Portcullis demo IdP</h1><p>DEVELOPMENT ONLY: anyone can sign in here.</p>{step_up}\
<form method=\"post\" action=\"/idp/authorize\">{hidden}\
<label>User <select name=\"user\" id=\"user\"><option>alice</option><option>bob</option></select></label> \
<label><input type=\"checkbox\" name=\"mfa\" id=\"mfa\" value=\"1\"> use a second factor</label> \
<button type=\"submit\" id=\"signin\">Sign in</button></form></body></html>"
    ))
    .into_response()
}

async fn sign_in(State(idp): State<Shared>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let form = Some(text.as_ref());
    let field = |k: &str| param(form, k).unwrap_or_default();
    let redirect_uri = field("redirect_uri");
    if !idp.on_gateway(&redirect_uri) {
        return bad("unknown redirect_uri");
    }
    let user = field("user");
    if !matches!(user.as_str(), "alice" | "bob") {
        return bad("unknown user");
    }
    let Some(code) = random_token(24) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(mut codes) = idp.codes.lock() {
        if codes.len() > 10_000 {
            codes.clear();
        }
        codes.insert(
            code.clone(),
            Code {
                sub: user,
                mfa: field("mfa") == "1",
                nonce: field("nonce"),
                challenge: field("code_challenge"),
                redirect_uri: redirect_uri.clone(),
                auth_time: portcullis::authn::now_secs() as u64,
            },
        );
    }
    let query = portcullis::session::form::encode_pairs([
        ("code", code.as_str()),
        ("state", field("state").as_str()),
    ]);
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{redirect_uri}?{query}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn error(code: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": code })),
    )
        .into_response()
}

async fn token(State(idp): State<Shared>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let form = Some(text.as_ref());
    let field = |k: &str| param(form, k).unwrap_or_default();
    if field("client_id") != CLIENT_ID {
        return error("invalid_client");
    }
    let now = portcullis::authn::now_secs() as u64;
    let (grant, id_token_claims) = match field("grant_type").as_str() {
        "authorization_code" => {
            let Some(code) = idp
                .codes
                .lock()
                .ok()
                .and_then(|mut c| c.remove(&field("code")))
            else {
                return error("invalid_grant");
            };
            if code.redirect_uri != field("redirect_uri")
                || s256(&field("code_verifier")) != code.challenge
            {
                return error("invalid_grant");
            }
            let claims = serde_json::json!({
                "iss": idp.issuer, "aud": CLIENT_ID, "sub": code.sub, "nonce": code.nonce,
                "iat": now, "exp": now + 300, "auth_time": code.auth_time,
                "amr": if code.mfa { vec!["pwd", "otp"] } else { vec!["pwd"] },
            });
            (
                Grant {
                    sub: code.sub,
                    mfa: code.mfa,
                },
                Some(claims),
            )
        }
        "refresh_token" => {
            // Rotated: the old refresh token is spent.
            let Some(grant) = idp
                .refresh_tokens
                .lock()
                .ok()
                .and_then(|mut r| r.remove(&field("refresh_token")))
            else {
                return error("invalid_grant");
            };
            (grant, None)
        }
        _ => return error("unsupported_grant_type"),
    };
    let access = serde_json::json!({
        "iss": idp.issuer, "aud": idp.audience, "sub": grant.sub, "client_id": CLIENT_ID,
        "scope": "items:read items:write", "iat": now, "exp": now + ACCESS_TOKEN_SECS,
        "jti": random_token(12).unwrap_or_default(),
        "amr": if grant.mfa { vec!["pwd", "otp"] } else { vec!["pwd"] },
    });
    let sign = |claims: serde_json::Value, typ: &str| {
        claims
            .as_object()
            .and_then(|c| idp.key.sign(c, typ, &serde_json::Map::new()).ok())
    };
    let (Some(access_token), Some(refresh_token)) = (sign(access, "at+jwt"), random_token(24))
    else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(mut tokens) = idp.refresh_tokens.lock() {
        if tokens.len() > 10_000 {
            tokens.clear();
        }
        tokens.insert(refresh_token.clone(), grant);
    }
    let mut answer = serde_json::json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_SECS,
        "refresh_token": refresh_token,
    });
    if let Some(claims) = id_token_claims
        && let Some(id_token) = sign(claims, "JWT")
        && let Some(fields) = answer.as_object_mut()
    {
        fields.insert("id_token".into(), serde_json::json!(id_token));
    }
    let mut response = axum::Json(answer).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn logout(
    State(idp): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    _headers: HeaderMap,
) -> Response {
    let back = query
        .get("post_logout_redirect_uri")
        .filter(|u| idp.on_gateway(u))
        .cloned()
        .unwrap_or_else(|| "/".to_string());
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(&back) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
