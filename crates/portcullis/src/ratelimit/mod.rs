//! Adaptive rate limiting: a pre-authentication screen per client (threat score, lockout
//! after repeated authentication failures) and a GCRA limit per principal or client,
//! lowered for hostile-looking callers, in memory or shared through Redis.

pub mod gcra;
mod limit;
pub mod rule;
mod screen;
pub mod store;

pub use limit::{RateLimit, RateLimitLayer, set_headers};
pub use rule::{LimitKey, LimitRule};
pub use screen::{Screen, ScreenLayer};

use crate::denial::Denial;
use crate::reason::RateLimitReason;
use crate::scope::{ClientIp, PeerAddr};
use crate::threat::{ClientTracker, ThreatScore, ThreatSettings};
use gcra::Verdict;
use http::Request;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use store::Limiter;

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

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            screen: true,
            default: None,
            adaptive: true,
            block_score: 90,
            threat: ThreatSettings::default(),
        }
    }
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
