//! Adaptive rate limiting: a pre-authentication screen per client (threat score, lockout
//! after repeated authentication failures) and a GCRA limit per principal or client,
//! lowered for hostile-looking callers, in memory or shared through Redis.

pub mod gcra;
pub mod rule;
pub mod store;

pub use rule::{LimitKey, LimitRule};

use crate::authn::Principal;
use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::reason::RateLimitReason;
use crate::route::RouteMatch;
use crate::scope::{ClientIp, PeerAddr};
use crate::threat::{self, ClientTracker, ThreatScore, ThreatSettings};
use gcra::Verdict;
use http::{HeaderValue, Request, Response};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use store::Limiter;
use tower::{Layer, Service};

/// Settings of the limiting layers.
#[derive(Debug)]
pub struct RateLimitSettings {
    /// Whether requests are screened at all (scored, tracked, locked out).
    pub screen: bool,
    /// The limit every route has.
    pub default: Option<LimitRule>,
    /// Whether threat scores lower limits.
    pub adaptive: bool,
    /// At or above this score a request is refused outright.
    pub block_score: u8,
    /// Scoring settings.
    pub threat: ThreatSettings,
}

/// Shared state of the limiting layers (kept across configuration reloads).
#[derive(Debug)]
pub struct RateLimiting {
    /// The settings.
    pub settings: RateLimitSettings,
    /// The GCRA store.
    pub limiter: Arc<Limiter>,
    /// Per-client behaviour.
    pub tracker: Arc<ClientTracker>,
}

fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<ClientIp>()
        .map(|c| c.0)
        .or_else(|| req.extensions().get::<PeerAddr>().map(|p| p.0.ip()))
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The refusal for a limit or a threat score.
fn refusal(
    reason: RateLimitReason,
    verdict: Option<&Verdict>,
    name: &str,
    retry: Duration,
    threat: &ThreatScore,
) -> Denial {
    Denial::RateLimited {
        reason,
        policy: name.to_string(),
        limit: verdict.map_or(0, |v| v.quota.limit),
        window_secs: verdict.map_or(0, |v| v.quota.window.as_secs()),
        retry_after_secs: whole_seconds(retry).max(1),
        score: threat.score,
        factors: threat.factors.clone(),
    }
}

/// Builds [`Screen`] services: runs before authentication.
#[derive(Debug, Clone)]
pub struct ScreenLayer {
    limits: Arc<RateLimiting>,
}

impl ScreenLayer {
    /// A screen using `limits`.
    pub fn new(limits: Arc<RateLimiting>) -> Self {
        ScreenLayer { limits }
    }
}

impl<S> Layer<S> for ScreenLayer {
    type Service = Screen<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Screen {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// Scores every request, refuses locked-out and blocked clients before any token is
/// verified, and learns from the refusals that come back (authentication failures).
#[derive(Debug, Clone)]
pub struct Screen<S> {
    inner: S,
    limits: Arc<RateLimiting>,
}

impl<S, B> Service<Request<B>> for Screen<S>
where
    S: Service<Request<B>, Error = Denial> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ip = client_ip(&req).filter(|_| self.limits.settings.screen);
        let Some(ip) = ip else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let view = limits.tracker.observe(ip);
            let settings = &limits.settings.threat;
            let listed = match &settings.redis_set {
                Some(set) => limits.limiter.listed_in(set, &ip.to_string()).await,
                None => false,
            };
            let threat = threat::score(&req, ip, view, settings, listed);
            if view.locked_for > 0 {
                let retry = Duration::from_secs(view.locked_for);
                return Err(refusal(
                    RateLimitReason::AuthLockout,
                    None,
                    "auth_failures",
                    retry,
                    &threat,
                ));
            }
            if threat.score >= limits.settings.block_score {
                return Err(refusal(
                    RateLimitReason::ThreatBlock,
                    None,
                    "threat",
                    Duration::from_secs(60),
                    &threat,
                ));
            }
            req.extensions_mut().insert(threat);
            let result = inner.call(req).await;
            match &result {
                Err(Denial::Unauthenticated { reason, .. }) if !reason.is_missing() => {
                    limits.tracker.auth_failure(ip)
                }
                Err(
                    Denial::Malformed { .. }
                    | Denial::Invalid { .. }
                    | Denial::UnsupportedMediaType { .. },
                ) => limits.tracker.validation_failure(ip),
                _ => {}
            }
            result
        }))
    }
}

/// Builds [`RateLimit`] services: runs after authentication.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: Arc<RateLimiting>,
}

impl RateLimitLayer {
    /// A limit layer using `limits`.
    pub fn new(limits: Arc<RateLimiting>) -> Self {
        RateLimitLayer { limits }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// Counts every request against the default and the route's limit.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: Arc<RateLimiting>,
}

fn key_for<B>(rule: &LimitRule, route: &str, req: &Request<B>) -> String {
    let principal = req
        .extensions()
        .get::<Arc<Principal>>()
        .and_then(|p| p.subject.clone());
    let ip = client_ip(req).map(|ip| ip.to_string()).unwrap_or_default();
    let who = match (rule.key, principal) {
        (LimitKey::Ip, _) => format!("ip:{ip}"),
        (_, Some(sub)) => format!("sub:{sub}"),
        (LimitKey::PrincipalOrIp, None) => format!("ip:{ip}"),
        (LimitKey::Principal, None) => "anonymous".to_string(),
    };
    format!("{}:{route}:{who}", rule.name)
}

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Denial> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = Denial;
    type Future = ResponseFuture<S::Future, Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let matched = req.extensions().get::<RouteMatch>().cloned();
        let route_rule = matched.as_ref().and_then(|m| m.route.policy.limit.clone());
        let rules: Vec<LimitRule> = self
            .limits
            .settings
            .default
            .iter()
            .cloned()
            .chain(route_rule)
            .collect();
        if rules.is_empty() {
            return ResponseFuture::inner(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        let route = matched
            .map(|m| m.route.endpoint.to_string())
            .unwrap_or_default();
        ResponseFuture::boxed(Box::pin(async move {
            let threat = req
                .extensions()
                .get::<ThreatScore>()
                .cloned()
                .unwrap_or_default();
            let mut tightest: Option<(String, Verdict)> = None;
            for rule in &rules {
                let quota = if limits.settings.adaptive {
                    rule.quota.adapted(threat.score)
                } else {
                    rule.quota
                };
                let verdict = limits
                    .limiter
                    .check(&key_for(rule, &route, &req), quota)
                    .await
                    .map_err(|_| {
                        refusal(
                            RateLimitReason::StoreUnavailable,
                            None,
                            &rule.name,
                            Duration::from_secs(1),
                            &threat,
                        )
                    })?;
                if !verdict.allowed {
                    let reason = if threat.score > 50 {
                        RateLimitReason::RateLimitSuspicious
                    } else {
                        RateLimitReason::RateLimit
                    };
                    return Err(refusal(
                        reason,
                        Some(&verdict),
                        &rule.name,
                        verdict.retry_after,
                        &threat,
                    ));
                }
                if tightest
                    .as_ref()
                    .is_none_or(|(_, t)| verdict.remaining < t.remaining)
                {
                    tightest = Some((rule.name.clone(), verdict));
                }
            }
            let mut response = inner.call(req).await?;
            if let Some((name, verdict)) = tightest {
                set_headers(response.headers_mut(), &name, &verdict);
            }
            Ok(response)
        }))
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft, structured fields).
pub fn set_headers(headers: &mut http::HeaderMap, name: &str, verdict: &Verdict) {
    let policy = format!(
        "\"{name}\";q={};w={}",
        verdict.quota.limit,
        verdict.quota.window.as_secs()
    );
    let state = format!(
        "\"{name}\";r={};t={}",
        verdict.remaining,
        whole_seconds(verdict.reset)
    );
    for (header, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header, value);
        }
    }
}

#[cfg(test)]
mod layer_tests {
    use super::*;
    use crate::event::EventBus;
    use crate::ratelimit::gcra::Quota;
    use crate::test_support::{Counting, public_policy, request};
    use tower::{ServiceBuilder, ServiceExt};

    fn routed() -> http::Request<http_body_util::Empty<bytes::Bytes>> {
        let mut req =
            crate::test_support::routed(request("GET", "/api/x"), "/api/*", public_policy(), &[]);
        req.extensions_mut()
            .insert(ClientIp("203.0.113.9".parse().unwrap()));
        req
    }

    fn limits(screen: bool, default: Option<LimitRule>) -> Arc<RateLimiting> {
        Arc::new(RateLimiting {
            settings: RateLimitSettings {
                screen,
                default,
                adaptive: false,
                block_score: 101,
                threat: ThreatSettings::default(),
            },
            limiter: Arc::new(Limiter::memory(1000, Arc::new(EventBus::discard()))),
            tracker: Arc::new(ClientTracker::new(
                1000,
                crate::threat::FailurePolicy {
                    limit: 2,
                    window_secs: 60,
                    lockout_secs: 60,
                },
            )),
        })
    }

    #[tokio::test]
    async fn a_locked_out_client_never_reaches_the_inner_service() {
        let stub = Counting::default();
        let limits = limits(true, None);
        let service = ServiceBuilder::new()
            .layer(ScreenLayer::new(limits.clone()))
            .service(stub.clone());
        assert!(service.clone().oneshot(routed()).await.is_ok());
        for _ in 0..3 {
            limits.tracker.auth_failure("203.0.113.9".parse().unwrap());
        }
        let refused = service.clone().oneshot(routed()).await.err();
        assert!(
            matches!(
                refused,
                Some(Denial::RateLimited {
                    reason: RateLimitReason::AuthLockout,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            stub.calls(),
            1,
            "the locked-out client reached the inner service"
        );
        let mut other = routed();
        other
            .extensions_mut()
            .insert(ClientIp("198.51.100.1".parse().unwrap()));
        assert!(
            service.oneshot(other).await.is_ok(),
            "another client is not locked out"
        );
        assert_eq!(stub.calls(), 2);
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_inner_service() {
        let stub = Counting::default();
        let limits = limits(
            false,
            Some(LimitRule {
                name: "default".into(),
                quota: Quota::new(2, Duration::from_secs(60)),
                key: LimitKey::Ip,
            }),
        );
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limits))
            .service(stub.clone());
        for _ in 0..2 {
            assert!(service.clone().oneshot(routed()).await.is_ok());
        }
        let refused = service.oneshot(routed()).await.err();
        assert!(
            matches!(
                refused,
                Some(Denial::RateLimited {
                    reason: RateLimitReason::RateLimit,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            stub.calls(),
            2,
            "the refused request reached the inner service"
        );
    }
}
