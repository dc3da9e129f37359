//! [`ScreenLayer`]: before any token is verified, lockouts after repeated authentication
//! failures, the threat score, and refusal of hostile-looking requests.

use super::{RateLimiting, client_ip, refusal};
use crate::denial::Denial;
use crate::future::ResponseFuture;
use crate::reason::RateLimitReason;
use crate::threat;
use http::Request;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

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
                Some(set) => limits.limiter.listed_in(set, ip).await,
                None => false,
            };
            let threat = threat::score(&req, ip, view, settings, listed);
            // Remembered for /admin/offenders; clean traffic (0 now and before) skips the
            // second lock.
            if threat.score > 0 || view.last_score > 0 {
                limits.tracker.record_score(ip, &threat);
            }
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
