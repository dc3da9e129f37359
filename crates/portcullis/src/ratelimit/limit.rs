//! [`RateLimitLayer`]: GCRA limits per principal or address, after authentication, lowered
//! by the threat score, with `RateLimit` headers on every answer.

use super::gcra::{Quota, Verdict};
use super::rule::{LimitKey, LimitRule};
use super::{RateLimiting, client_ip, refusal, whole_seconds};
use crate::authn::Principal;
use crate::authn::pending::PendingChecks;
use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::reason::RateLimitReason;
use crate::route::RouteMatch;
use crate::threat::ThreatScore;
use http::{HeaderName, HeaderValue, Request, Response};
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

/// The store key: `{sub:<subject>}:<rule>:<route>`, `{ip:<address>}:...` or
/// `{anonymous}:...`, built in one allocation (it is built for every rule of every request).
/// The braces are a Redis Cluster hash tag: every limit of one client lives on one slot, so
/// one script call checks them all.
fn key_for<B>(rule: &LimitRule, route: &str, req: &Request<B>) -> String {
    use std::fmt::Write;
    let principal = req
        .extensions()
        .get::<Arc<Principal>>()
        .and_then(|p| p.subject.as_deref());
    let mut key = String::with_capacity(rule.name.len() + route.len() + 48);
    key.push('{');
    match (rule.key, principal) {
        (LimitKey::Ip, _) | (LimitKey::PrincipalOrIp, None) => {
            key.push_str("ip:");
            if let Some(ip) = client_ip(req) {
                // Writing into a String cannot fail.
                let _ = write!(key, "{ip}");
            }
        }
        (_, Some(sub)) => {
            key.push_str("sub:");
            key.push_str(sub);
        }
        (LimitKey::Principal, None) => key.push_str("anonymous"),
    }
    key.push_str("}:");
    key.push_str(&rule.name);
    key.push(':');
    key.push_str(route);
    key
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let matched = req
            .extensions()
            .get::<RouteMatch>()
            .map(|m| m.route.clone());
        let has_route_rule = matched.as_ref().is_some_and(|r| r.policy.limit.is_some());
        if self.limits.settings.default.is_none() && !has_route_rule {
            if PendingChecks::any(&req) {
                return ResponseFuture::boxed(PendingChecks::settled_then(self.take_inner(), req));
            }
            return ResponseFuture::inner(self.inner.call(req));
        }
        // Authentication's deferred lookups (revocation) wait together with the limits.
        let pending = PendingChecks::take(&mut req);
        let mut inner = self.take_inner();
        let limits = self.limits.clone();
        ResponseFuture::boxed(Box::pin(async move {
            // Borrowed from the settings and the route (both held by this future), never
            // cloned per request.
            let rules = [
                limits.settings.default.as_ref(),
                matched.as_ref().and_then(|r| r.policy.limit.as_ref()),
            ];
            let route = matched.as_ref().map_or("", |r| &*r.endpoint);
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
            // At most two limits (the default and the route's): kept on the stack, not in
            // a Vec per request.
            let rules = rules.map(|rule| {
                rule.map(|rule| {
                    let quota = if limits.settings.adaptive {
                        rule.quota.adapted(threat.score)
                    } else {
                        rule.quota
                    };
                    (rule, key_for(rule, route, &req), quota)
                })
            });
            let mut checks = [("", Quota::new(0, Duration::ZERO)); 2];
            let mut count = 0;
            for (slot, (_, key, quota)) in checks.iter_mut().zip(rules.iter().flatten()) {
                *slot = (key.as_str(), *quota);
                count += 1;
            }
            let checks = checks.get(..count).unwrap_or_default();
            let unavailable = || {
                let name = rules
                    .iter()
                    .flatten()
                    .next()
                    .map_or("", |(rule, _, _)| rule.name.as_str());
                refusal(
                    RateLimitReason::StoreUnavailable,
                    None,
                    name,
                    Duration::from_secs(1),
                    &threat,
                )
            };
            let (settled, verdicts) = tokio::join!(
                PendingChecks::settle(pending),
                limits.limiter.check_all(checks)
            );
            // A revoked token is refused as such, whatever its limits said.
            settled?;
            let verdicts = verdicts.map_err(|_| unavailable())?;
            // Fewer answers than limits without a refusal among them: the store answered
            // something else than asked. Fail closed.
            if verdicts.len() < count && verdicts.iter().all(|v| v.allowed) {
                return Err(unavailable());
            }
            let mut tightest: Option<(&str, Verdict)> = None;
            for ((rule, _, _), verdict) in rules.iter().flatten().zip(verdicts) {
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
                    tightest = Some((&rule.name, verdict));
                }
            }
            let mut response = inner.call(req).await?;
            if let Some((name, verdict)) = tightest {
                set_headers(response.headers_mut(), name, &verdict);
            }
            Ok(response)
        }))
    }
}

impl<S: Clone> RateLimit<S> {
    /// The inner service, ready, for a future of this layer (a clone is left in its place).
    fn take_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft, structured fields).
pub fn set_headers(headers: &mut http::HeaderMap, name: &str, verdict: &Verdict) {
    const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    const STATE: HeaderName = HeaderName::from_static("ratelimit");
    // On every limited answer: written straight into the value's buffer with static header
    // names, not format! of the whole value and a parsed name.
    use std::fmt::Write;
    let field = |first: (char, u64), second: (char, u64)| {
        let mut value = String::with_capacity(name.len() + 32);
        value.push('"');
        value.push_str(name);
        value.push('"');
        for (key, number) in [first, second] {
            value.push(';');
            value.push(key);
            value.push('=');
            // Writing into a String cannot fail.
            let _ = write!(value, "{number}");
        }
        HeaderValue::try_from(value)
    };
    let quota = &verdict.quota;
    let policy = field(('q', u64::from(quota.limit)), ('w', quota.window.as_secs()));
    let state = field(
        ('r', u64::from(verdict.remaining)),
        ('t', whole_seconds(verdict.reset)),
    );
    if let (Ok(policy), Ok(state)) = (policy, state) {
        headers.insert(POLICY, policy);
        headers.insert(STATE, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::gcra::Quota;

    #[test]
    fn headers_carry_the_policy_and_the_state() {
        for (limit, remaining, reset, remaining_text, reset_text) in [
            (100, 0, Duration::from_millis(1), "0", "1"),
            (
                u32::MAX,
                4_294_967_295,
                Duration::from_secs(86_400),
                "4294967295",
                "86400",
            ),
            (7, 10, Duration::ZERO, "10", "0"),
        ] {
            let verdict = Verdict {
                allowed: true,
                quota: Quota::new(limit, Duration::from_secs(60)),
                remaining,
                reset,
                retry_after: Duration::ZERO,
            };
            let mut headers = http::HeaderMap::new();
            set_headers(&mut headers, "per-user", &verdict);
            assert_eq!(
                headers["ratelimit-policy"],
                format!("\"per-user\";q={limit};w=60")
            );
            assert_eq!(
                headers["ratelimit"],
                format!("\"per-user\";r={remaining_text};t={reset_text}")
            );
        }
    }
}
