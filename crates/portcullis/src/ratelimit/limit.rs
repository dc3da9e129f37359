//! [`RateLimitLayer`]: GCRA limits per principal or address, after authentication, lowered
//! by the threat score, with `RateLimit` headers on every answer.

use super::gcra::Verdict;
use super::rule::{LimitKey, LimitRule};
use super::{RateLimiting, client_ip, refusal, whole_seconds};
use crate::authn::Principal;
use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::reason::RateLimitReason;
use crate::route::RouteMatch;
use crate::threat::ThreatScore;
use http::{HeaderValue, Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

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
            let mut threat = req
                .extensions()
                .get::<ThreatScore>()
                .cloned()
                .unwrap_or_default();
            // The screen scored the client before authentication; a detector's flag on the
            // principal (from any address, on any instance) counts from here on.
            let subject = req
                .extensions()
                .get::<Arc<Principal>>()
                .and_then(|p| p.subject.as_deref());
            if subject.is_some_and(|s| limits.tracker.principal_flagged(s)) {
                threat.add_detector_flag();
            }
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
