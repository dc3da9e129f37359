//! The admin listener (SPEC §5): health, readiness, metrics, events, offenders, inventory,
//! revocations, reload, and the dashboard (its own module).

use crate::dashboard;
use crate::gateway::{Gateway, ReloadOutcome};
use crate::metrics::Readings;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the admin API until `shutdown` changes.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let protected = Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/events", get(events))
        .route("/admin/events/stream", get(events_stream))
        .route("/admin/offenders", get(offenders))
        .route("/admin/inventory", get(inventory))
        .route("/admin/health", get(health))
        .route("/admin/revocations", post(revoke))
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            require_admin_token,
        ));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard::home))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/login",
            post(dashboard::login).layer(axum::extract::DefaultBodyLimit::max(
                dashboard::MAX_FORM_BYTES,
            )),
        )
        .route("/logout", post(dashboard::logout))
        .merge(protected)
        .with_state(gateway);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let generation = gateway.current();
    let issuers = generation.config.authenticator.issuers();
    let logs = gateway.shared.decision_logs();
    let alerter = gateway.alerter();
    let tracer = gateway.tracer();
    let text = gateway.metrics.encode(&Readings {
        events_dropped: gateway.events.dropped(),
        alerts: alerter.as_deref().map(|a| a.counts()),
        findings: &gateway.shared.detector_counts,
        issuers,
        logs: &logs,
        limiters: &gateway.shared.limiters(),
        certificates: &generation.config.certificates,
        tracer: tracer.as_deref(),
        websockets: &gateway.shared.websockets,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn reload(State(gateway): State<Arc<Gateway>>) -> Response {
    match gateway.reload("admin", true).await {
        ReloadOutcome::Applied { restart_needed } => axum::Json(serde_json::json!({
            "status": "reloaded",
            "restart_needed": restart_needed,
        }))
        .into_response(),
        ReloadOutcome::Unchanged => {
            axum::Json(serde_json::json!({ "status": "unchanged" })).into_response()
        }
        ReloadOutcome::Refused(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({
                "status": "refused",
                "problems": problems.lines().collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct SinceQuery {
    since: Option<u64>,
}

async fn events(State(gateway): State<Arc<Gateway>>, Query(query): Query<SinceQuery>) -> Response {
    axum::Json(gateway.events.recent_since(query.since.unwrap_or(0))).into_response()
}

/// Clients listed by `/admin/offenders` at most.
const MAX_OFFENDERS: usize = 50;

/// The clients with the highest threat scores now, with their factors and failures, and the
/// principals detectors flagged.
async fn offenders(State(gateway): State<Arc<Gateway>>) -> Response {
    let current = gateway.current();
    let tracker = &current.config.rate_limiting.tracker;
    let clients = tracker.top(MAX_OFFENDERS);
    let principals = tracker.flagged_principals(MAX_OFFENDERS);
    axum::Json(serde_json::json!({ "clients": clients, "principals": principals })).into_response()
}

async fn events_stream(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(query): Query<SinceQuery>,
) -> Response {
    crate::event_stream::stream(gateway, &headers, query.since)
}

/// What the dashboard shows as health: the shared rate-limit store, each issuer's key set,
/// the policy engine and the decision logs.
async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    let current = gateway.current();
    let config = &current.config;
    let limiter = &config.rate_limiting.limiter;
    let redis = match (limiter.is_shared(), limiter.is_degraded()) {
        (false, _) => "not used",
        (true, false) => "ok",
        (true, true) => "degraded",
    };
    let now = portcullis::authn::now_secs() as i64;
    let key_sets: Vec<_> = config
        .authenticator
        .issuers()
        .iter()
        .map(|issuer| {
            let fetched = issuer
                .keys
                .stats
                .fetched_at
                .load(std::sync::atomic::Ordering::Relaxed) as i64;
            let remote = issuer.keys.source().is_some();
            serde_json::json!({
                "issuer": issuer.name,
                "loaded": issuer.keys.is_loaded(),
                "age_secs": if remote && fetched > 0 { now - fetched } else { -1 },
            })
        })
        .collect();
    let logs = gateway.shared.decision_logs();
    let decision_log = (!logs.is_empty()).then(|| {
        serde_json::json!({
            "written": logs.iter().map(|l| l.written()).sum::<u64>(),
            "dropped": logs.iter().map(|l| l.dropped()).sum::<u64>(),
        })
    });
    axum::Json(serde_json::json!({
        "redis": redis,
        "key_sets": key_sets,
        "policy_engine": config.authorizer.as_ref().map_or("none", |a| a.engine.name()),
        "decision_log": decision_log,
    }))
    .into_response()
}

/// `{"jti": "..."}` (optionally with the token's `exp`) or `{"sub": "..."}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    jti: Option<String>,
    exp: Option<f64>,
    sub: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryQuery {
    format: Option<String>,
}

/// Observed endpoints: documented operations with their counts, then shadow endpoints;
/// with `?format=openapi`, the shadow endpoints as an OpenAPI 3.1 document.
async fn inventory(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<InventoryQuery>,
) -> Response {
    let current = gateway.current();
    let inventory = &current.config.inventory;
    match query.format.as_deref() {
        None | Some("json") => {}
        Some("openapi") => return axum::Json(inventory.openapi()).into_response(),
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "format is json or openapi\n").into_response();
        }
    }
    axum::Json(serde_json::json!({
        "endpoints": inventory.entries(),
        "shadow_overflow": inventory.shadow_overflow(),
    }))
    .into_response()
}

async fn revoke(State(gateway): State<Arc<Gateway>>, body: axum::body::Bytes) -> Response {
    let bad = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    };
    let Ok(revocation) = serde_json::from_slice::<Revocation>(&body) else {
        return bad("expected {\"jti\": \"...\"} or {\"sub\": \"...\"}");
    };
    let now = portcullis::authn::now_secs();
    let generation = gateway.current();
    let revocations = &generation.config.revocations;
    match (revocation.jti, revocation.sub) {
        (Some(jti), None) if !jti.is_empty() => {
            // Without the token's `exp`, remember the jti as long as any token can live.
            let lifetime = generation.config.max_token_lifetime.as_secs_f64();
            let until = revocation.exp.unwrap_or(now + lifetime);
            if let Err(e) = revocations.revoke_jti(&jti, until).await {
                return unavailable(&e.to_string());
            }
            axum::Json(serde_json::json!({ "revoked": { "jti": jti, "until": until } }))
                .into_response()
        }
        (None, Some(sub)) if !sub.is_empty() && revocation.exp.is_none() => {
            if let Err(e) = revocations.revoke_subject(&sub, now).await {
                return unavailable(&e.to_string());
            }
            axum::Json(serde_json::json!({ "revoked": { "sub": sub, "issued_before": now } }))
                .into_response()
        }
        _ => bad("give exactly one of jti or sub"),
    }
}

fn unavailable(detail: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(
            serde_json::json!({ "error": "the revocation store is unavailable", "detail": detail }),
        ),
    )
        .into_response()
}

/// Everything under `/admin/` needs `Authorization: Bearer <admin token>`.
async fn require_admin_token(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let expected = gateway
        .current()
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.clone());
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented.is_none() && dashboard::session_allows(&gateway, request.method(), &headers) {
        return next.run(request).await;
    }
    match (expected, presented) {
        (Some(expected), Some(presented))
            if crate::admin_session::constant_time_eq(
                expected.expose().as_bytes(),
                presented.as_bytes(),
            ) =>
        {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"portcullis-admin\"",
            )],
            "admin token required\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use crate::admin_session::constant_time_eq;

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
