//! [`PendingChecks`]: store lookups that authentication starts but does not wait for (a
//! revocation lookup in Redis), so that a later layer can wait for them together with its
//! own (the rate limit script): one Redis round trip per request instead of one per feature.
//!
//! A request carrying pending checks must not reach the upstream before they are settled:
//! [`AuthenticateLayer::deferring_store_checks`](super::AuthenticateLayer::deferring_store_checks)
//! is only for a stack where the rate limit or the authorize layer sits inside it, and both
//! settle whatever is pending before they pass a request on.

use crate::denial::Denial;
use crate::future::BoxedResponse;
use http::Request;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use tower::Service;

/// One deferred check: `Ok` to go on, or the refusal it ends in.
pub type Check = Pin<Box<dyn Future<Output = Result<(), Denial>> + Send>>;

/// The checks deferred on a request (a request extension; shared only so that extensions
/// can hold it: it is taken out, never copied, when settled).
#[derive(Clone, Default)]
pub struct PendingChecks(Arc<Mutex<Vec<Check>>>);

impl std::fmt::Debug for PendingChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingChecks")
    }
}

impl PendingChecks {
    /// Defers `check` on `req`.
    pub fn push<B>(req: &mut Request<B>, check: Check) {
        let pending = req
            .extensions_mut()
            .get_or_insert_default::<PendingChecks>();
        // A poisoned lock still holds the checks pushed so far: keep them all.
        pending
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(check);
    }

    /// Whether `req` has checks still to settle.
    pub fn any<B>(req: &Request<B>) -> bool {
        req.extensions().get::<PendingChecks>().is_some()
    }

    /// Takes `req`'s deferred checks, to be settled with [`settle`](Self::settle).
    pub fn take<B>(req: &mut Request<B>) -> Vec<Check> {
        match req.extensions_mut().remove::<PendingChecks>() {
            Some(pending) => {
                std::mem::take(&mut *pending.0.lock().unwrap_or_else(PoisonError::into_inner))
            }
            None => Vec::new(),
        }
    }

    /// Runs `checks` at once; the first refusal, in the order they were deferred, wins.
    pub async fn settle(checks: Vec<Check>) -> Result<(), Denial> {
        if checks.is_empty() {
            return Ok(());
        }
        crate::join::join_all(checks.into_iter())
            .await
            .into_iter()
            .collect()
    }

    /// Settles `req`'s pending checks, then calls `inner` with it (for a layer that has no
    /// store lookups of its own to wait for at the same time).
    pub fn settled_then<S, B, R>(mut inner: S, mut req: Request<B>) -> BoxedResponse<R>
    where
        S: Service<Request<B>, Response = R, Error = Denial> + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        Box::pin(async move {
            PendingChecks::settle(PendingChecks::take(&mut req)).await?;
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_are_taken_once_and_the_first_refusal_wins() {
        let mut req = Request::new(());
        assert!(!PendingChecks::any(&req));
        PendingChecks::push(&mut req, Box::pin(async { Ok(()) }));
        PendingChecks::push(&mut req, Box::pin(async { Err(Denial::NoRoute) }));
        PendingChecks::push(&mut req, Box::pin(async { Err(Denial::RequestTimeout) }));
        assert!(PendingChecks::any(&req));
        let checks = PendingChecks::take(&mut req);
        assert_eq!(checks.len(), 3);
        assert!(!PendingChecks::any(&req), "taken, not copied");
        assert!(PendingChecks::take(&mut req).is_empty());
        assert!(matches!(
            PendingChecks::settle(checks).await,
            Err(Denial::NoRoute)
        ));
        assert!(PendingChecks::settle(Vec::new()).await.is_ok());
    }
}
