//! Browser sessions: the gateway as an OAuth 2.1 backend-for-frontend. It logs browsers in
//! with the authorization code flow (PKCE S256, `state`, `nonce`), keeps their tokens in one
//! sealed cookie (or in Redis behind it), refreshes access tokens before they expire (once
//! per session, across instances with Redis), and forwards `Authorization: Bearer` upstream,
//! so a browser application needs no OAuth code of its own.
//!
//! [`SessionEndpointsLayer`] answers the login, callback and logout paths;
//! [`SessionLayer`] turns a session into a bearer token on `auth: session` routes.

pub mod cookie;
mod flow;
pub mod form;
mod layer;
pub mod provider;
mod refresh;
pub mod seal;
pub mod store;

pub use flow::safe_return;
pub use layer::{SessionEndpoints, SessionEndpointsLayer, SessionGuard, SessionLayer};
pub use provider::{ClientAuth, Provider};
pub use store::{SessionRecord, SessionStore};

use crate::event::EventBus;
use std::sync::Arc;
use std::time::Duration;

/// The login flow's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPaths {
    /// Starts a login.
    pub login: String,
    /// Where the provider sends the browser back.
    pub callback: String,
    /// Ends the session.
    pub logout: String,
}

/// The compiled `identity.oidc_login` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    /// The flow's paths.
    pub paths: LoginPaths,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// The resource indicator (RFC 8707) asked for, if any.
    pub resource: Option<String>,
    /// The gateway's public origin (`https://app.example.test`); `None`: the request's.
    pub external_origin: Option<String>,
    /// Where the browser lands after logout (a relative path).
    pub post_logout_redirect: String,
    /// Absolute session lifetime.
    pub ttl: Duration,
    /// Longest time a session may go unused.
    pub idle_timeout: Duration,
    /// Access tokens this close to expiry are refreshed.
    pub refresh_before: Duration,
    /// `acr_values` asked for in a step-up (and that count as MFA).
    pub mfa_acr_values: Vec<String>,
    /// Most logins pending in one browser at once (more tabs drop the oldest).
    pub max_pending: usize,
    /// How long a pending login may take.
    pub pending_ttl: Duration,
}

/// Everything the session layers share (kept across reloads while the settings stay).
#[derive(Debug)]
pub struct Sessions {
    /// The settings.
    pub settings: LoginSettings,
    /// The OpenID provider.
    pub provider: Arc<Provider>,
    /// Where sessions live.
    pub store: SessionStore,
    refreshes: refresh::Refreshes,
    events: Arc<EventBus>,
}

impl Sessions {
    /// Sessions at `provider`, kept in `store`, with events to `events`.
    pub fn new(
        settings: LoginSettings,
        provider: Arc<Provider>,
        store: SessionStore,
        events: Arc<EventBus>,
    ) -> Sessions {
        Sessions {
            settings,
            provider,
            store,
            refreshes: refresh::Refreshes::default(),
            events,
        }
    }

    /// Whether logins can start (the provider's discovery document and keys are loaded).
    pub fn is_ready(&self) -> bool {
        self.provider.is_ready()
    }

    /// Starts keeping the provider's metadata and keys fresh.
    pub fn start(&self) {
        self.provider.spawn_refresher();
    }

    /// How often a session's last use is written back (the idle timeout's resolution).
    fn touch_interval(&self) -> u64 {
        (self.settings.idle_timeout.as_secs() / 10).clamp(1, 60)
    }
}

/// Unix seconds now.
fn now() -> u64 {
    crate::authn::now_secs() as u64
}
