//! Proactive refresh: one refresh in flight per session and access token, concurrent
//! requests waiting for its result, a successor reused (never redeemed twice) by requests
//! still carrying the old cookie, and a Redis lock so that instances sharing a store refresh
//! a session once between them.

use super::Sessions;
use super::provider::TokenAnswer;
use super::store::{Loaded, SessionRecord};
use crate::event::{EventType, SecurityEvent, Severity};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a finished refresh is reused by requests carrying the token it replaced.
const SUCCESSOR_WINDOW: Duration = Duration::from_secs(60);
/// How long a failed refresh is not retried (while its access token still works).
const FAILURE_WINDOW: Duration = Duration::from_secs(5);
/// Most refreshes remembered.
const MAX_FLIGHTS: usize = 10_000;
/// How long an instance holds the Redis refresh lock at most.
const LOCK_MILLIS: u64 = 15_000;
/// How long a request waits for another instance's refresh.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Lifetime assumed for an access token whose answer named none and that is not a JWT.
const DEFAULT_TOKEN_SECS: u64 = 300;

type Outcome = Result<SessionRecord, RefreshFailure>;

/// Why a refresh gave no new token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFailure {
    /// The provider refused the refresh token (the session cannot go on).
    pub rejected: bool,
    /// For the operator.
    pub detail: String,
}

impl RefreshFailure {
    fn unavailable(detail: impl Into<String>) -> Self {
        RefreshFailure {
            rejected: false,
            detail: detail.into(),
        }
    }

    fn rejected(detail: impl Into<String>) -> Self {
        RefreshFailure {
            rejected: true,
            detail: detail.into(),
        }
    }
}

struct Flight {
    outcome: Arc<tokio::sync::OnceCell<Outcome>>,
    started: Instant,
}

/// Refreshes in flight and just finished, by session and access token.
#[derive(Default)]
pub(super) struct Refreshes {
    flights: Mutex<HashMap<String, Flight>>,
}

impl std::fmt::Debug for Refreshes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshes").finish_non_exhaustive()
    }
}

impl Refreshes {
    fn flight(&self, key: String) -> Arc<tokio::sync::OnceCell<Outcome>> {
        let Ok(mut flights) = self.flights.lock() else {
            return Arc::default();
        };
        if let Some(flight) = flights.get(&key) {
            // A failure is retried after a few seconds; a successor is handed out for a
            // minute, after which a cookie still carrying the old token redeems its own
            // (rotated, so refused) refresh token and the session ends.
            let stale = match flight.outcome.get() {
                None => false,
                Some(Err(_)) => flight.started.elapsed() > FAILURE_WINDOW,
                Some(Ok(_)) => flight.started.elapsed() > SUCCESSOR_WINDOW,
            };
            if !stale {
                return flight.outcome.clone();
            }
        }
        if flights.len() >= MAX_FLIGHTS {
            flights.retain(|_, f| f.started.elapsed() < SUCCESSOR_WINDOW);
        }
        if flights.len() >= MAX_FLIGHTS {
            // Still full of live refreshes: forget the finished ones.
            flights.retain(|_, f| f.outcome.get().is_none());
        }
        let outcome: Arc<tokio::sync::OnceCell<Outcome>> = Arc::default();
        flights.insert(
            key,
            Flight {
                outcome: outcome.clone(),
                started: Instant::now(),
            },
        );
        outcome
    }
}

impl Sessions {
    /// `record` with a fresh access token: the one refresh of this token, whoever started it.
    pub(super) async fn refreshed(self: &Arc<Self>, record: &SessionRecord) -> Outcome {
        let token_id = super::seal::s256(&record.at);
        let key = format!("{}:{}", record.sid, token_id.get(..16).unwrap_or_default());
        let outcome = self.refreshes.flight(key);
        let sessions = self.clone();
        let record = record.clone();
        outcome
            .get_or_init(|| async move {
                // Detached from the request: a client going away mid-refresh must not
                // leave the provider's rotated token unrecorded.
                tokio::spawn(async move { sessions.refresh_now(record).await })
                    .await
                    .unwrap_or_else(|e| Err(RefreshFailure::unavailable(e.to_string())))
            })
            .await
            .clone()
    }

    async fn refresh_now(&self, record: SessionRecord) -> Outcome {
        let outcome = if self.store.is_shared() {
            self.refresh_shared(&record).await
        } else {
            self.redeem(&record).await
        };
        if let Err(failure) = &outcome {
            let reason = if failure.rejected {
                "session_refresh_rejected"
            } else {
                "session_refresh_failed"
            };
            self.session_event(reason, &record.sub, Severity::Medium, &failure.detail);
        }
        outcome
    }

    fn session_event(&self, reason: &str, sub: &str, severity: Severity, detail: &str) {
        let mut event = SecurityEvent::new(EventType::Session, severity, reason);
        event.user_id = Some(sub.to_string());
        event.details = serde_json::json!({ "detail": detail });
        self.events.emit(event);
    }

    /// With Redis: under the session's lock, or by waiting for the instance holding it.
    async fn refresh_shared(&self, record: &SessionRecord) -> Outcome {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let locked = self
                .store
                .lock(&record.sid, LOCK_MILLIS)
                .await
                .map_err(RefreshFailure::unavailable)?;
            if locked {
                let outcome = match self.store.read(&record.sid).await {
                    // Another instance refreshed just before the lock was ours.
                    Loaded::Found(current) if current.at != record.at => Ok(current),
                    Loaded::Found(current) => match self.redeem(&current).await {
                        Ok(next) => self
                            .store
                            .save(
                                &next,
                                false,
                                self.settings.idle_timeout.as_secs(),
                                super::now(),
                            )
                            .await
                            .map(|_| next)
                            .map_err(|e| RefreshFailure::unavailable(e.to_string())),
                        Err(failure) => Err(failure),
                    },
                    Loaded::Ended => Err(RefreshFailure::rejected("the session ended")),
                    Loaded::Invalid => {
                        Err(RefreshFailure::rejected("the stored session is unreadable"))
                    }
                    Loaded::Unavailable(e) => Err(RefreshFailure::unavailable(e)),
                };
                self.store.unlock(&record.sid).await;
                return outcome;
            }
            if Instant::now() >= deadline {
                return Err(RefreshFailure::unavailable(
                    "another instance held the refresh lock too long",
                ));
            }
            // Waiting on another process's progress, which only Redis can show.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.store.read(&record.sid).await {
                Loaded::Found(current) if current.at != record.at => return Ok(current),
                Loaded::Ended => return Err(RefreshFailure::rejected("the session ended")),
                _ => {}
            }
        }
    }

    /// Redeems the record's refresh token at the provider.
    async fn redeem(&self, record: &SessionRecord) -> Outcome {
        let refresh_token = record
            .rt
            .as_deref()
            .ok_or_else(|| RefreshFailure::rejected("the session has no refresh token"))?;
        let answer = self
            .provider
            .refresh(refresh_token)
            .await
            .map_err(|e| match e {
                super::provider::TokenCallError::Rejected(detail) => {
                    RefreshFailure::rejected(detail)
                }
                other => RefreshFailure::unavailable(other.to_string()),
            })?;
        let at_exp = token_expiry(&answer, super::now());
        // Only a redemption at the provider is a refresh (an instance that adopts another's
        // result reports nothing).
        self.session_event("session_refreshed", &record.sub, Severity::Low, "");
        Ok(SessionRecord {
            at: answer.access_token,
            at_exp,
            // A provider that rotates gives a successor; one that does not keeps the old.
            rt: answer.refresh_token.or_else(|| record.rt.clone()),
            ..record.clone()
        })
    }
}

/// When the access token of `answer` expires: `expires_in`, else the JWT's own `exp`
/// (read only to schedule the refresh: the token is verified before every use), else a
/// default.
pub(super) fn token_expiry(answer: &TokenAnswer, now: u64) -> u64 {
    let lifetime = answer.expires_in.or_else(|| {
        crate::authn::token::parse(&answer.access_token, 16 * 1024)
            .ok()
            .and_then(|t| t.claims.exp)
            .map(|exp| (exp as u64).saturating_sub(now))
    });
    now.saturating_add(lifetime.unwrap_or(DEFAULT_TOKEN_SECS))
}
