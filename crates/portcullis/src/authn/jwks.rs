//! Key sets that change: a fixed set, or one fetched from a JWKS URL and refreshed in the
//! background, with single-flight, rate-limited refreshes for unknown key ids.

use super::keys::{Algorithm, KeySet};
use crate::outbound::HttpClient;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a remote key set is fetched and refreshed.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// Longest wait for one fetch.
    pub fetch_timeout: Duration,
    /// Largest JWKS document read.
    pub max_bytes: usize,
    /// Shortest and longest background refresh interval (`Cache-Control: max-age` is clamped).
    pub min_refresh: Duration,
    /// See `min_refresh`.
    pub max_refresh: Duration,
    /// Least time between two refreshes caused by unknown key ids.
    pub unknown_kid_interval: Duration,
    /// How long a key id that a refresh did not produce is not looked for again.
    pub negative_ttl: Duration,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings {
            fetch_timeout: Duration::from_secs(5),
            max_bytes: 1024 * 1024,
            min_refresh: Duration::from_secs(60),
            max_refresh: Duration::from_secs(24 * 3600),
            unknown_kid_interval: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(60),
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct KeyStoreStats {
    /// Successful fetches.
    pub refreshes: AtomicU64,
    /// Failed fetches.
    pub failures: AtomicU64,
    /// Unix time of the last successful fetch (0: never).
    pub fetched_at: AtomicU64,
}

/// Why a key set (or the discovery document naming it) could not be fetched. The last good
/// keys stay in use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer within the fetch timeout.
    #[error("timed out")]
    Timeout,
    /// The request, its status or its body.
    #[error("{0}")]
    Call(#[from] crate::outbound::CallError),
    /// The document is not a key set.
    #[error("not a key set: {0}")]
    NotAKeySet(String),
    /// A key set without a key this issuer may use.
    #[error("the key set has no usable key")]
    NoUsableKey,
    /// The discovery document is unusable (another issuer, no or a bad `jwks_uri`).
    #[error("discovery: {0}")]
    Discovery(String),
}

/// Where a remote key set is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS URL.
    Jwks(Uri),
    /// The issuer's OpenID discovery document (`{issuer}/.well-known/openid-configuration`)
    /// names the JWKS URL; it is looked up again whenever a fetch fails.
    Discovery {
        /// The issuer, exactly as tokens (and the discovery document) must name it.
        issuer: String,
    },
}

struct Remote {
    source: KeySource,
    /// The JWKS URL in use (for discovery: once found).
    uri: Mutex<Option<Uri>>,
    client: HttpClient,
    settings: RemoteSettings,
    /// Held while fetching, so concurrent refreshes wait for the one in progress; holds
    /// when an unknown `kid` last caused a fetch (scheduled fetches do not count).
    in_flight: tokio::sync::Mutex<Option<Instant>>,
    negative: Mutex<HashMap<String, Instant>>,
}

/// One issuer's current keys.
pub struct KeyStore {
    keys: ArcSwap<KeySet>,
    generation: AtomicU64,
    loaded: AtomicBool,
    allowed: Vec<Algorithm>,
    remote: Option<Remote>,
    refresher: AtomicBool,
    /// Fetch statistics.
    pub stats: KeyStoreStats,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.keys.load().len())
            .field("remote", &self.remote.as_ref().map(|r| r.source.clone()))
            .finish()
    }
}

/// Most unknown key ids remembered.
const MAX_NEGATIVE: usize = 4096;

impl KeyStore {
    /// A key set that never changes (a `jwks_file`).
    pub fn fixed(keys: KeySet) -> Arc<KeyStore> {
        Arc::new(KeyStore {
            keys: ArcSwap::from_pointee(keys),
            generation: AtomicU64::new(1),
            loaded: AtomicBool::new(true),
            allowed: Vec::new(),
            remote: None,
            refresher: AtomicBool::new(false),
            stats: KeyStoreStats::default(),
        })
    }

    /// A key set fetched from `source` with `client`; empty until the first fetch succeeds.
    pub fn remote(
        source: KeySource,
        client: HttpClient,
        allowed: Vec<Algorithm>,
        settings: RemoteSettings,
    ) -> Arc<KeyStore> {
        let uri = match &source {
            KeySource::Jwks(uri) => Some(uri.clone()),
            KeySource::Discovery { .. } => None,
        };
        Arc::new(KeyStore {
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            allowed,
            remote: Some(Remote {
                source,
                uri: Mutex::new(uri),
                client,
                settings,
                in_flight: tokio::sync::Mutex::new(None),
                negative: Mutex::new(HashMap::new()),
            }),
            refresher: AtomicBool::new(false),
            stats: KeyStoreStats::default(),
        })
    }

    /// The current keys.
    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Changes whenever the key set is replaced (cached verifications of older generations
    /// are not trusted).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Where the keys come from (`None` for a fixed set).
    pub fn source(&self) -> Option<&KeySource> {
        self.remote.as_ref().map(|r| &r.source)
    }

    /// Whether keys were loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Fetches the key set now. On failure the last good keys stay in use.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let Some(remote) = &self.remote else {
            return Ok(Duration::MAX);
        };
        let _in_flight = remote.in_flight.lock().await;
        self.fetch(remote).await
    }

    async fn fetch(&self, remote: &Remote) -> Result<Duration, FetchError> {
        let result =
            tokio::time::timeout(remote.settings.fetch_timeout, fetch_document(remote)).await;
        let outcome = match result {
            Err(_) => Err(FetchError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok((document, max_age))) => match KeySet::from_jwks(&document, &self.allowed) {
                Ok(parsed) if !parsed.keys.is_empty() => {
                    self.keys.store(Arc::new(parsed.keys));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    self.loaded.store(true, Ordering::Release);
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    self.stats
                        .fetched_at
                        .store(now.as_secs(), Ordering::Relaxed);
                    let settings = &remote.settings;
                    Ok(max_age
                        .unwrap_or(settings.min_refresh * 15)
                        .clamp(settings.min_refresh, settings.max_refresh))
                }
                Ok(_) => Err(FetchError::NoUsableKey),
                Err(e) => Err(FetchError::NotAKeySet(e.to_string())),
            },
        };
        match &outcome {
            Ok(_) => self.stats.refreshes.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.failures.fetch_add(1, Ordering::Relaxed),
        };
        outcome
    }

    /// Called for a token whose `kid` is not in the set: refreshes at most once per
    /// `unknown_kid_interval`, never twice at the same time, and not at all for a kid that a
    /// recent refresh did not produce. Returns whether the kid is known afterwards.
    pub async fn refresh_for_kid(&self, kid: &str) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        if self.is_negative(remote, kid) {
            return false;
        }
        let mut in_flight = remote.in_flight.lock().await;
        // Whoever held the lock may have fetched the key meanwhile.
        if self.keys().has_kid(kid) {
            return true;
        }
        let recent =
            in_flight.is_some_and(|at| at.elapsed() < remote.settings.unknown_kid_interval);
        if !recent {
            *in_flight = Some(Instant::now());
            let _ = self.fetch(remote).await;
        }
        let known = self.keys().has_kid(kid);
        if !known && let Ok(mut negative) = remote.negative.lock() {
            if negative.len() >= MAX_NEGATIVE {
                negative.clear();
            }
            negative.insert(kid.to_string(), Instant::now());
        }
        known
    }

    fn is_negative(&self, remote: &Remote, kid: &str) -> bool {
        match remote.negative.lock() {
            Ok(mut negative) => match negative.get(kid) {
                Some(at) if at.elapsed() < remote.settings.negative_ttl => true,
                Some(_) => {
                    negative.remove(kid);
                    false
                }
                None => false,
            },
            Err(_) => false,
        }
    }

    /// Keeps a remote key set fresh until the store is dropped: fetches now, then again
    /// as `Cache-Control` says (clamped), retrying failures with backoff. Calling it again
    /// for the same store does nothing.
    pub fn spawn_refresher(self: &Arc<Self>) {
        if self.remote.is_none() || self.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<KeyStore> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                let Some(store) = weak.upgrade() else { return };
                let wait = match store.refresh().await {
                    Ok(next) => {
                        backoff = Duration::from_millis(250);
                        next
                    }
                    Err(_) => {
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        backoff
                    }
                };
                drop(store);
                tokio::time::sleep(wait).await;
            }
        });
    }
}

async fn fetch_document(
    remote: &Remote,
) -> Result<(serde_json::Value, Option<Duration>), FetchError> {
    let known = remote.uri.lock().ok().and_then(|u| u.clone());
    let uri = match (known, &remote.source) {
        (Some(uri), _) => uri,
        (None, KeySource::Discovery { issuer }) => {
            let uri = discover(remote, issuer).await?;
            if let Ok(mut slot) = remote.uri.lock() {
                *slot = Some(uri.clone());
            }
            uri
        }
        (None, KeySource::Jwks(uri)) => uri.clone(),
    };
    let fetched = get_json(remote, uri, "application/jwk-set+json, application/json").await;
    if fetched.is_err()
        && matches!(remote.source, KeySource::Discovery { .. })
        && let Ok(mut slot) = remote.uri.lock()
    {
        // The IdP may have moved its keys: look them up again next time.
        *slot = None;
    }
    fetched
}

/// Reads the issuer's discovery document (OpenID Connect Discovery 1.0 §4) and returns its
/// `jwks_uri`. The document must name exactly this issuer (§4.3), and the key set URL must
/// be https (or http on loopback).
async fn discover(remote: &Remote, issuer: &str) -> Result<Uri, FetchError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let uri: Uri = url
        .parse()
        .map_err(|_| FetchError::Discovery(format!("`{url}` is not a URL")))?;
    let (document, _) = get_json(remote, uri, "application/json").await?;
    if document.get("issuer").and_then(serde_json::Value::as_str) != Some(issuer) {
        return Err(FetchError::Discovery(
            "the document names another issuer".into(),
        ));
    }
    let jwks = document
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| FetchError::Discovery("the document has no jwks_uri".into()))?;
    let jwks: Uri = jwks
        .parse()
        .map_err(|_| FetchError::Discovery("its jwks_uri is not a URL".into()))?;
    crate::outbound::check_url(&jwks)
        .map_err(|e| FetchError::Discovery(format!("its jwks_uri: {e}")))?;
    Ok(jwks)
}

async fn get_json(
    remote: &Remote,
    uri: Uri,
    accept: &'static str,
) -> Result<(serde_json::Value, Option<Duration>), FetchError> {
    let request = Request::get(uri)
        .header(header::ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .map_err(|e| crate::outbound::CallError::Transport(e.to_string()))?;
    let (document, headers) = remote
        .client
        .json(request, remote.settings.max_bytes)
        .await?;
    let max_age = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age="))
                .and_then(|s| s.trim().parse::<u64>().ok())
        })
        .map(Duration::from_secs);
    Ok((document, max_age))
}
