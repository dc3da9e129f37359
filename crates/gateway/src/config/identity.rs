//! The `identity` section: issuers and their keys, revocation, and what goes upstream.

use super::raw::{RawIdentity, RawJwt};
use super::secret::Resolver;
use super::{Problems, line_of};
use http::{HeaderName, Uri};
use portcullis::authn::introspection::{IntrospectionSettings, Introspector};
use portcullis::authn::jwks::{KeySource, KeyStore, RemoteSettings};
use portcullis::authn::keys::{Algorithm, KeySet};
use portcullis::authn::revocation::{RedisRevocations, Revocations};
use portcullis::authn::{Authenticator, ForwardSettings, Issuer};
use portcullis::authz::decision_log::{DecisionLog, DecisionLogSettings};
use portcullis::detect::{DetectionSettings, DetectorCounts, Detectors};
use portcullis::discovery::TemplateRules;
use portcullis::event::EventBus;
use portcullis::outbound::{HttpClient, Trust};
use portcullis::ratelimit::store::Limiter;
use portcullis::threat::ClientTracker;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// State that outlives configuration generations: revocations, remote key sets (so a
/// reload neither refetches every JWKS nor forgets keys while an IdP is down), and decision
/// logs (one writer per file, one unbroken chain).
#[derive(Debug)]
pub struct Shared {
    /// Revoked tokens and subjects, when kept in this process.
    memory_revocations: Arc<Revocations>,
    redis_revocations: Mutex<HashMap<String, Arc<Revocations>>>,
    key_stores: Mutex<HashMap<String, Arc<KeyStore>>>,
    events: Arc<EventBus>,
    open_logs: bool,
    logs: Mutex<HashMap<PathBuf, Arc<DecisionLog>>>,
    pub(super) limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    pub(super) trackers: Mutex<HashMap<String, Arc<ClientTracker>>>,
    /// Observed endpoints; outlives reloads so counts are kept.
    pub inventory: Arc<portcullis::discovery::Inventory>,
    /// Relayed WebSocket connections (they outlive the generation that let them in).
    pub websockets: Arc<portcullis::websocket::WebSocketCounts>,
    /// Session tickets and the session cache of the listener.
    pub(super) tls: super::tls::TlsState,
    /// The outbound client per trust, so reloads keep its pooled connections.
    http_clients: Mutex<HashMap<[u8; 32], HttpClient>>,
    /// Upstream clients per trust and TLS settings, likewise.
    pub(super) upstream_clients: Mutex<HashMap<String, crate::upstream_pool::PooledUpstream>>,
    /// The detectors of the latest settings (one set: changed settings start afresh).
    detectors: Mutex<Option<(String, Arc<Detectors>)>>,
    /// Detector findings since start, for metrics.
    pub detector_counts: Arc<DetectorCounts>,
    /// Browser sessions per login settings (refreshes in flight and ended sessions survive
    /// reloads that leave the settings alone).
    pub(super) sessions: Mutex<HashMap<String, Arc<portcullis::session::Sessions>>>,
    /// DPoP proof ids seen (memory store), kept across reloads.
    pub(super) dpop_replay: Mutex<HashMap<String, Arc<portcullis::authn::dpop::ReplayCache>>>,
}

impl Default for Shared {
    /// For checking a configuration: nothing is opened, events go nowhere.
    fn default() -> Self {
        Shared {
            memory_revocations: Arc::default(),
            redis_revocations: Mutex::default(),
            key_stores: Mutex::default(),
            events: Arc::new(EventBus::discard()),
            open_logs: false,
            logs: Mutex::default(),
            limiters: Mutex::default(),
            trackers: Mutex::default(),
            inventory: Arc::default(),
            websockets: Arc::default(),
            tls: super::tls::TlsState::default(),
            http_clients: Mutex::default(),
            upstream_clients: Mutex::default(),
            detectors: Mutex::default(),
            detector_counts: Arc::default(),
            sessions: Mutex::default(),
            dpop_replay: Mutex::default(),
        }
    }
}

impl Shared {
    /// For a running gateway: decision logs are opened, events go to `events`.
    pub fn new(events: Arc<EventBus>) -> Shared {
        Shared {
            events,
            open_logs: true,
            ..Shared::default()
        }
    }

    /// The Redis revocation store at `url` (with `cluster`, comma-separated node URLs),
    /// created once (connections are made on use).
    fn redis_revocations(
        &self,
        url: &str,
        cluster: bool,
        timeout: Duration,
        subject_ttl: Duration,
    ) -> Result<Arc<Revocations>, String> {
        let mut stores = self
            .redis_revocations
            .lock()
            .map_err(|_| "revocation registry poisoned".to_string())?;
        let key = format!("{cluster} {url}");
        if let Some(store) = stores.get(&key) {
            return Ok(store.clone());
        }
        let store = if cluster {
            let nodes: Vec<String> = url
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            RedisRevocations::cluster(&nodes, timeout, subject_ttl)
        } else {
            RedisRevocations::new(url, timeout, subject_ttl)
        };
        let store = Arc::new(Revocations::Redis(store.map_err(|e| e.to_string())?));
        stores.insert(key, store.clone());
        Ok(store)
    }

    /// The value kept under `key`, made by `make` the first time.
    pub(super) fn keep<T>(
        &self,
        map: &Mutex<HashMap<String, Arc<T>>>,
        key: String,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        match map.lock() {
            Ok(mut map) => map.entry(key).or_insert_with(|| Arc::new(make())).clone(),
            Err(_) => Arc::new(make()),
        }
    }

    /// The detectors for `settings`: the running ones when nothing they depend on changed.
    pub(super) fn detectors(
        &self,
        settings: DetectionSettings,
        templates: TemplateRules,
        tracker: Arc<ClientTracker>,
    ) -> Arc<Detectors> {
        let key = format!("{settings:?} {templates:?} {:p}", Arc::as_ptr(&tracker));
        let make = || {
            Detectors::new(
                settings,
                templates,
                tracker,
                self.events.clone(),
                self.detector_counts.clone(),
            )
        };
        let Ok(mut current) = self.detectors.lock() else {
            return make();
        };
        match &*current {
            Some((k, detectors)) if *k == key => detectors.clone(),
            _ => {
                let detectors = make();
                *current = Some((key, detectors.clone()));
                detectors
            }
        }
    }

    /// Every limiter made so far (for metrics).
    pub fn limiters(&self) -> Vec<Arc<Limiter>> {
        self.limiters
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn events(&self) -> Arc<EventBus> {
        self.events.clone()
    }

    /// The decision log for these settings, opened once per file.
    pub(super) fn decision_log(
        &self,
        settings: &DecisionLogSettings,
    ) -> std::io::Result<Option<Arc<DecisionLog>>> {
        if !self.open_logs {
            let dir = settings
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
            }
            return Ok(None);
        }
        let mut logs = self
            .logs
            .lock()
            .map_err(|_| std::io::Error::other("decision log registry poisoned"))?;
        if let Some(log) = logs.get(&settings.path) {
            return Ok(Some(log.clone()));
        }
        let log = Arc::new(DecisionLog::open(settings, self.events.clone())?);
        logs.insert(settings.path.clone(), log.clone());
        Ok(Some(log))
    }

    /// Every decision log opened so far (for metrics).
    pub fn decision_logs(&self) -> Vec<Arc<DecisionLog>> {
        self.logs
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The outbound client for `trust`: one per trusted set, kept across reloads.
    pub(super) fn http_client(&self, trust: &Trust) -> Result<HttpClient, String> {
        let mut clients = self
            .http_clients
            .lock()
            .map_err(|_| "client registry poisoned".to_string())?;
        if let Some(client) = clients.get(&trust.fingerprint()) {
            return Ok(client.clone());
        }
        let client = HttpClient::new(trust).map_err(|e| e.to_string())?;
        clients.insert(trust.fingerprint(), client.clone());
        Ok(client)
    }

    /// The key set fetched from `source`, created once per source, algorithms and trust
    /// (so a reload neither refetches nor forgets keys, unless what is trusted changed).
    pub(super) fn remote_store(
        &self,
        source: KeySource,
        algorithms: &[Algorithm],
        client: &HttpClient,
    ) -> Arc<KeyStore> {
        let names: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
        let key = format!("{source:?} {} {:?}", names.join(","), client.fingerprint());
        let create = || {
            KeyStore::remote(
                source.clone(),
                client.clone(),
                algorithms.to_vec(),
                RemoteSettings::default(),
            )
        };
        let Ok(mut stores) = self.key_stores.lock() else {
            return create();
        };
        stores.entry(key).or_insert_with(create).clone()
    }
}

/// The compiled identity settings.
pub struct Identity {
    /// Verifies tokens.
    pub authenticator: Arc<Authenticator>,
    /// What the upstream receives.
    pub forward: Arc<ForwardSettings>,
    /// Whether any issuer is configured (routes may require authentication).
    pub configured: bool,
    /// The longest token lifetime any issuer accepts (bounds a `jti` revocation).
    pub max_lifetime: Duration,
    /// Where revocations are kept.
    pub revocations: Arc<Revocations>,
}

pub(super) fn compile(
    raw: Option<&RawIdentity>,
    limiter: &Arc<Limiter>,
    max_token_bytes: Option<usize>,
    base_dir: &Path,
    resolver: &Resolver,
    (shared, client): (&Shared, &HttpClient),
    problems: &mut Problems,
) -> Identity {
    let max_token_bytes = max_token_bytes.unwrap_or(Authenticator::DEFAULT_MAX_TOKEN_BYTES);
    let mut issuers = Vec::new();
    let mut forward = ForwardSettings {
        token: true,
        identity_headers: Vec::new(),
    };
    let mut cache = Authenticator::DEFAULT_CACHE_ENTRIES;
    let mut revocation_store = None;
    if let Some(raw) = raw {
        for (i, jwt) in raw.jwt.iter().enumerate() {
            if let Some(issuer) = compile_issuer(
                jwt,
                &format!("identity.jwt[{i}]"),
                base_dir,
                resolver,
                (shared, client),
                problems,
            ) {
                if issuers.iter().any(|o: &Issuer| o.issuer == issuer.issuer) {
                    problems.at(
                        format!("identity.jwt[{i}].issuer"),
                        &jwt.issuer,
                        "another entry has the same issuer",
                    );
                }
                issuers.push(issuer);
            }
        }
        if let Some(revocation) = &raw.revocation {
            revocation_store = compile_revocation(revocation, &issuers, resolver, shared, problems);
        }
        if let Some(raw_forward) = &raw.forward {
            forward.token = raw_forward.token.unwrap_or(true);
            for (name, claim) in &raw_forward.identity_headers {
                match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(header) => forward.identity_headers.push((header, claim.clone())),
                    Err(_) => problems.add(
                        format!("identity.forward.identity_headers.{name}"),
                        None,
                        "is not a header name",
                    ),
                }
            }
        }
        cache = raw
            .token_cache_size
            .unwrap_or(Authenticator::DEFAULT_CACHE_ENTRIES);
    }
    let max_lifetime = issuers
        .iter()
        .map(|i| i.max_lifetime + i.clock_skew)
        .max()
        .unwrap_or_default();
    let revocations = revocation_store.unwrap_or_else(|| shared.memory_revocations.clone());
    let mut authenticator =
        Authenticator::new(issuers, revocations.clone(), max_token_bytes, cache);
    if let Some(raw) = raw.and_then(|r| r.introspection.as_ref())
        && let Some(introspector) = compile_introspection(raw, resolver, client, problems)
    {
        authenticator = authenticator.with_introspection(introspector);
    }
    if let Some(dpop) = raw
        .and_then(|r| r.dpop.as_ref())
        .and_then(|raw| compile_dpop(raw, limiter, (shared, resolver), problems))
    {
        authenticator = authenticator.with_dpop(dpop);
    }
    Identity {
        revocations,
        // Declared, even if an entry has problems of its own (reported there): routes are
        // not to be blamed for them too.
        configured: authenticator.is_configured()
            || raw.is_some_and(|r| !r.jwt.is_empty() || r.introspection.is_some()),
        authenticator: Arc::new(authenticator),
        forward: Arc::new(forward),
        max_lifetime,
    }
}

fn compile_issuer(
    raw: &RawJwt,
    path: &str,
    base_dir: &Path,
    resolver: &Resolver,
    (shared, client): (&Shared, &HttpClient),
    problems: &mut Problems,
) -> Option<Issuer> {
    let line = line_of(&raw.name.referenced);
    let issuer = resolver.text(&format!("{path}.issuer"), &raw.issuer, problems)?;
    if raw.audiences.is_empty() {
        problems.add(
            format!("{path}.audiences"),
            line,
            "at least one audience is required (tokens for other APIs must not be accepted)",
        );
    }
    let audiences: Vec<String> = raw
        .audiences
        .iter()
        .enumerate()
        .filter_map(|(j, a)| resolver.text(&format!("{path}.audiences[{j}]"), a, problems))
        .collect();
    let mut algorithms = Vec::new();
    for (j, alg) in raw.algorithms.iter().enumerate() {
        match Algorithm::from_name(&alg.value) {
            Some(a) => algorithms.push(a),
            None => problems.at(
                format!("{path}.algorithms[{j}]"),
                alg,
                format!("`{}` is not allowed (use ES256, ES384, RS256, PS256 or EdDSA; none and HS* never are)", alg.value),
            ),
        }
    }
    if raw.algorithms.is_empty() {
        problems.add(
            format!("{path}.algorithms"),
            line,
            "list the algorithms the issuer signs with, e.g. [ES256]",
        );
    }
    let keys = match (&raw.jwks_uri, &raw.jwks_file) {
        (Some(uri), None) => {
            let text = resolver.text(&format!("{path}.jwks_uri"), uri, problems)?;
            let parsed = remote_uri(&text)
                .map_err(|m| problems.at(format!("{path}.jwks_uri"), uri, m))
                .ok()?;
            shared.remote_store(KeySource::Jwks(parsed), &algorithms, client)
        }
        (None, Some(file)) => {
            let text = resolver.text(&format!("{path}.jwks_file"), file, problems)?;
            let full = base_dir.join(&text);
            let document = std::fs::read(&full)
                .map_err(|e| format!("cannot read `{}`: {e}", full.display()))
                .and_then(|bytes| {
                    portcullis::json::parse_strict(&bytes, portcullis::json::JsonLimits::default())
                        .map_err(|e| format!("`{}` is not valid JSON: {e}", full.display()))
                });
            let document = document
                .map_err(|m| problems.at(format!("{path}.jwks_file"), file, m))
                .ok()?;
            match KeySet::from_jwks(&document, &algorithms) {
                Ok(parsed) => {
                    for (kid, why) in &parsed.skipped {
                        problems.at(
                            format!("{path}.jwks_file"),
                            file,
                            format!("key `{kid}`: {why}"),
                        );
                    }
                    if parsed.keys.is_empty() {
                        problems.at(
                            format!("{path}.jwks_file"),
                            file,
                            "the key set has no usable key",
                        );
                    }
                    KeyStore::fixed(parsed.keys)
                }
                Err(e) => {
                    problems.at(
                        format!("{path}.jwks_file"),
                        file,
                        format!("not a key set: {e}"),
                    );
                    return None;
                }
            }
        }
        (None, None) => {
            // OpenID discovery: the issuer's own document names its key set.
            remote_uri(&issuer)
                .map_err(|m| {
                    problems.at(
                        format!("{path}.issuer"),
                        &raw.issuer,
                        format!("without `jwks_uri` or `jwks_file` the keys are found by OpenID discovery at the issuer: {m}"),
                    )
                })
                .ok()?;
            shared.remote_store(
                KeySource::Discovery {
                    issuer: issuer.clone(),
                },
                &algorithms,
                client,
            )
        }
        (Some(_), Some(_)) => {
            problems.add(
                path.to_string(),
                line,
                "give only one of `jwks_uri` or `jwks_file`",
            );
            return None;
        }
    };
    let binding_required = match raw.binding.as_ref().map(|b| b.value.as_str()) {
        None | Some("optional") => false,
        Some("required") => true,
        Some(other) => {
            if let Some(text) = &raw.binding {
                problems.at(
                    format!("{path}.binding"),
                    text,
                    format!("unknown value `{other}` (use optional or required)"),
                );
            }
            false
        }
    };
    Some(Issuer {
        binding_required,
        name: Arc::from(raw.name.value.as_str()),
        issuer,
        audiences,
        algorithms,
        clock_skew: raw.clock_skew.map_or(Duration::from_secs(30), |d| d.0),
        max_lifetime: raw.max_lifetime.map_or(Duration::from_secs(900), |d| d.0),
        required_claims: raw.required_claims.clone(),
        token_types: raw.token_types.clone(),
        keys,
    })
}

/// Proof ids remembered in memory at most (a full cache refuses new proofs: fail closed).
const DPOP_REPLAY_ENTRIES: usize = 1_000_000;

fn compile_dpop(
    raw: &super::raw::RawDpop,
    limiter: &Arc<Limiter>,
    (shared, resolver): (&Shared, &Resolver),
    problems: &mut Problems,
) -> Option<Arc<portcullis::authn::dpop::Dpop>> {
    use portcullis::authn::dpop::{Dpop, DpopSettings, NonceKey, ReplayCache, ReplayStore};
    let max_age = raw.max_age.map_or(Duration::from_secs(60), |d| d.0);
    let nonces = match &raw.nonce_key {
        None => None,
        Some(text) => {
            let secret = resolver.secret("identity.dpop.nonce_key", text, problems)?;
            let Some(key) = NonceKey::new(secret.expose().as_bytes(), max_age) else {
                problems.at(
                    "identity.dpop.nonce_key",
                    text,
                    "the nonce key needs at least 32 bytes",
                );
                return None;
            };
            Some(key)
        }
    };
    let replay = match raw.replay_store.as_ref().map(|t| t.value.as_str()) {
        None | Some("memory") => {
            // One cache per process: a reload must not forget which proofs were used.
            let cache = shared.keep(&shared.dpop_replay, String::new(), || {
                ReplayCache::new(DPOP_REPLAY_ENTRIES)
            });
            ReplayStore::Memory(cache)
        }
        Some("redis") if limiter.shared_store().is_some() => ReplayStore::Redis(limiter.clone()),
        Some(other) => {
            let text = raw.replay_store.as_ref()?;
            let message = if other == "redis" {
                "`redis` keeps proof ids in the shared rate-limit store: configure rate_limit.store: redis".to_string()
            } else {
                format!("unknown store `{other}` (use memory or redis)")
            };
            problems.at("identity.dpop.replay_store", text, message);
            return None;
        }
    };
    Some(Arc::new(Dpop {
        settings: DpopSettings {
            max_age,
            clock_skew: Duration::from_secs(5),
        },
        replay,
        nonces,
    }))
}

fn compile_revocation(
    raw: &super::raw::RawRevocation,
    issuers: &[Issuer],
    resolver: &Resolver,
    shared: &Shared,
    problems: &mut Problems,
) -> Option<Arc<Revocations>> {
    match raw.store.value.as_str() {
        "memory" => None,
        "redis" => {
            let Some(redis) = &raw.redis else {
                problems.at(
                    "identity.revocation.redis",
                    &raw.store,
                    "store `redis` needs `redis: { url: ${env:REDIS_URL} }`",
                );
                return None;
            };
            // The URL may carry a password, so it must be a reference.
            let url = resolver.secret("identity.revocation.redis.url", &redis.url, problems)?;
            let timeout = redis.timeout.map_or(Duration::from_millis(50), |d| d.0);
            let subject_ttl = issuers
                .iter()
                .map(|i| i.max_lifetime + i.clock_skew)
                .max()
                .unwrap_or(Duration::from_secs(3600));
            shared
                .redis_revocations(
                    url.expose(),
                    redis.cluster == Some(true),
                    timeout,
                    subject_ttl,
                )
                .map_err(|e| {
                    problems.at(
                        "identity.revocation.redis.url",
                        &redis.url,
                        format!("not a Redis URL: {e}"),
                    )
                })
                .ok()
        }
        other => {
            problems.at(
                "identity.revocation.store",
                &raw.store,
                format!("unknown store `{other}` (use memory or redis)"),
            );
            None
        }
    }
}

fn compile_introspection(
    raw: &super::raw::RawIntrospection,
    resolver: &Resolver,
    client: &HttpClient,
    problems: &mut Problems,
) -> Option<Introspector> {
    let path = "identity.introspection";
    let endpoint = resolver.text(&format!("{path}.endpoint"), &raw.endpoint, problems);
    let endpoint = endpoint.and_then(|text| {
        remote_uri(&text)
            .map_err(|m| problems.at(format!("{path}.endpoint"), &raw.endpoint, m))
            .ok()
    });
    let client_id = resolver.text(&format!("{path}.client_id"), &raw.client_id, problems);
    let client_secret = resolver.secret(
        &format!("{path}.client_secret"),
        &raw.client_secret,
        problems,
    );
    let audiences = raw
        .audiences
        .iter()
        .enumerate()
        .filter_map(|(i, a)| resolver.text(&format!("{path}.audiences[{i}]"), a, problems))
        .collect();
    Some(Introspector::new(
        IntrospectionSettings {
            name: Arc::from("introspection"),
            endpoint: endpoint?,
            client_id: client_id?,
            client_secret: client_secret?,
            audiences,
            cache_ttl: raw.cache_ttl.map_or(Duration::from_secs(30), |d| d.0),
            timeout: raw.timeout.map_or(Duration::from_secs(2), |d| d.0),
        },
        client.clone(),
    ))
}

/// A key or token service URL: `https`, or `http` only for loopback hosts (what is fetched
/// in clear text could be swapped on the way).
pub(super) fn remote_uri(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    portcullis::outbound::check_url(&uri).map_err(|e| e.to_string())?;
    Ok(uri)
}
