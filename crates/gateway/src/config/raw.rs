//! The configuration file as written (SPEC §2): plain serde types that refuse unknown keys.
//! Nothing here is checked beyond its shape; [`super::compile`] does the rest.

use super::duration::ConfigDuration;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A string with the place it was written.
pub type Text = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: RawListen,
    pub outbound: Option<RawOutbound>,
    #[serde(default)]
    pub limits: RawLimits,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub identity: Option<RawIdentity>,
    pub policy: Option<RawPolicy>,
    pub rate_limit: Option<RawRateLimit>,
    pub validation: Option<RawValidation>,
    pub headers: Option<BTreeMap<String, Spanned<HeaderSetting>>>,
    #[serde(default)]
    pub monitoring: RawMonitoring,
    pub errors: Option<RawErrors>,
    #[serde(default)]
    pub cors: Vec<RawCors>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    #[serde(rename = "match")]
    pub matcher: Spanned<RawMatch>,
    #[serde(default)]
    pub allow_origins: Vec<Text>,
    #[serde(default)]
    pub allow_methods: Vec<Text>,
    #[serde(default)]
    pub allow_headers: Vec<Text>,
    #[serde(default)]
    pub expose_headers: Vec<Text>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrors {
    pub upstream_5xx: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub address: Text,
    pub tls: Option<Spanned<RawListenTls>>,
    pub hosts: Option<Vec<Text>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Text>,
    pub client_cert_header: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    pub cert: Text,
    pub key: Text,
    pub min_version: Option<Text>,
    pub client_ca: Option<Text>,
    pub client_auth: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    #[serde(default)]
    pub ca_files: Vec<Text>,
    pub system_roots: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<Spanned<usize>>,
    pub max_header_count: Option<Spanned<usize>>,
    pub max_uri_bytes: Option<Spanned<usize>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    pub max_token_bytes: Option<Spanned<usize>>,
    pub max_json_string_bytes: Option<Spanned<usize>>,
    pub header_read_timeout: Option<ConfigDuration>,
    pub body_read_timeout: Option<ConfigDuration>,
    pub request_timeout: Option<ConfigDuration>,
    pub max_connections: Option<Spanned<usize>>,
    pub lingering_close: Option<ConfigDuration>,
    #[serde(default)]
    pub http2: RawHttp2,
    #[serde(default)]
    pub websocket: RawWebSocketLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocketLimits {
    pub max_message_bytes: Option<Spanned<u64>>,
    pub idle_timeout: Option<ConfigDuration>,
    pub max_lifetime: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp2 {
    pub max_concurrent_streams: Option<u32>,
    pub max_header_list_bytes: Option<u32>,
    pub max_pending_resets: Option<usize>,
    pub max_control_frames_per_second: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidation {
    pub openapi: Text,
    pub unknown_operations: Option<Text>,
    pub max_json_depth: Option<Spanned<usize>>,
    pub responses: Option<Text>,
    pub max_response_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    pub relaxed_operations: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Text,
    pub token: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Text,
    pub timeout: Option<ConfigDuration>,
    pub host: Option<Text>,
    pub protocol: Option<Text>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub server_name: Option<Text>,
    pub cert: Option<Text>,
    pub key: Option<Text>,
}

/// A `headers:` entry: a value to set, or the `remove` list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HeaderSetting {
    Value(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitoring {
    #[serde(default)]
    pub events: RawEvents,
    pub alerts: Option<RawAlerts>,
    pub discovery: Option<RawDiscovery>,
    pub detection: Option<RawDetection>,
    pub traces: Option<RawTraces>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraces {
    pub endpoint: Text,
    pub sample_ratio: Option<Spanned<f64>>,
    pub trust_incoming: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetection {
    pub exfiltration: Option<RawExfiltration>,
    pub error_spike: Option<RawErrorSpike>,
    pub enumeration: Option<RawEnumeration>,
    pub privilege_escalation: Option<RawEscalation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnumeration {
    pub distinct_ids: Option<Spanned<u32>>,
    pub window: Option<ConfigDuration>,
    pub min_refused_ratio: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    pub distinct_denials: Option<Spanned<u32>>,
    pub window: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorSpike {
    pub factor: Option<Spanned<f64>>,
    pub min_count: Option<Spanned<u32>>,
    pub window: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExfiltration {
    pub factor: Option<Spanned<f64>>,
    pub min_bytes: Option<u64>,
    pub min_page: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub infer_templates: Option<bool>,
    #[serde(default)]
    pub reserved_segments: Vec<String>,
    pub max_templates_per_prefix: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub webhook: Text,
    pub format: Option<Text>,
    pub routing_key: Option<Text>,
    pub min_severity: Option<Text>,
    pub dedup_window: Option<ConfigDuration>,
    pub max_per_minute: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    pub sink: Option<Text>,
    pub path: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub matcher: Spanned<RawMatch>,
    pub upstream: Text,
    pub auth: Option<Text>,
    pub scopes: Option<Spanned<RawScopes>>,
    pub rate_limit: Option<Spanned<RawLimit>>,
    pub resource: Option<RawResource>,
    pub require_mfa: Option<Vec<Text>>,
    pub client_identities: Option<Vec<Text>>,
    pub websocket: Option<bool>,
    pub websocket_origins: Option<Vec<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<Text>,
    pub prefix: Option<Text>,
    pub methods: Option<Vec<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    #[serde(default)]
    pub jwt: Vec<RawJwt>,
    pub revocation: Option<RawRevocation>,
    pub forward: Option<RawForward>,
    pub introspection: Option<RawIntrospection>,
    pub token_cache_size: Option<usize>,
    pub oidc_login: Option<RawOidcLogin>,
    pub dpop: Option<RawDpop>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidcLogin {
    pub issuer: Text,
    pub client_id: Text,
    pub client_secret: Option<Text>,
    /// A private key (JWK or PKCS#8 PEM, by reference) for `private_key_jwt`.
    pub client_key: Option<Text>,
    pub scopes: Option<Vec<String>>,
    pub resource: Option<Text>,
    pub paths: Option<RawLoginPaths>,
    pub external_url: Option<Text>,
    pub post_logout_redirect: Option<Text>,
    pub session: RawSession,
    pub refresh_before: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoginPaths {
    pub login: Option<Text>,
    pub callback: Option<Text>,
    pub logout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub store: Option<Text>,
    pub keys: Text,
    pub ttl: Option<ConfigDuration>,
    pub idle_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub name: Text,
    pub issuer: Text,
    #[serde(default)]
    pub audiences: Vec<Text>,
    pub jwks_uri: Option<Text>,
    pub jwks_file: Option<Text>,
    #[serde(default)]
    pub algorithms: Vec<Text>,
    pub clock_skew: Option<ConfigDuration>,
    pub max_lifetime: Option<ConfigDuration>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    pub token_types: Option<Vec<String>>,
    pub binding: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    pub max_age: Option<ConfigDuration>,
    pub replay_store: Option<Text>,
    pub nonce_key: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    pub store: Text,
    pub redis: Option<RawRedis>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Text,
    pub timeout: Option<ConfigDuration>,
    pub cluster: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub token: Option<bool>,
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
}

/// `scopes:` on a route: one list for every method, or a list per method.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawScopes {
    All(Vec<String>),
    PerMethod(BTreeMap<String, Vec<String>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    pub endpoint: Text,
    pub client_id: Text,
    pub client_secret: Text,
    #[serde(default)]
    pub audiences: Vec<Text>,
    pub cache_ttl: Option<ConfigDuration>,
    pub timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub engine: Text,
    pub rego: Option<RawRego>,
    pub opa: Option<RawOpa>,
    pub cedar: Option<RawCedar>,
    pub on_error: Option<Text>,
    pub decision_log: Option<RawDecisionLog>,
    #[serde(default)]
    pub mfa_acr_values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRego {
    pub files: Vec<Text>,
    #[serde(default)]
    pub data: Vec<Text>,
    pub query: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpa {
    pub url: Text,
    pub path: Text,
    pub timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecisionLog {
    pub path: Text,
    pub durability: Option<Text>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCedar {
    pub files: Vec<Text>,
    pub entities: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub store: Option<Text>,
    pub redis: Option<RawRedis>,
    pub on_store_error: Option<Text>,
    pub local_share: Option<f64>,
    pub default: Option<Spanned<RawLimit>>,
    pub auth_failures: Option<RawAuthFailures>,
    pub adaptive: Option<RawAdaptive>,
    pub ip_reputation: Option<RawIpReputation>,
    pub max_keys: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub limit: u32,
    pub window: ConfigDuration,
    pub burst: Option<u32>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthFailures {
    pub limit: u32,
    pub window: ConfigDuration,
    pub lockout: ConfigDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdaptive {
    pub enabled: Option<bool>,
    pub block_score: Option<u8>,
    pub frequency_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpReputation {
    pub deny_file: Option<Text>,
    pub redis_set: Option<String>,
}
