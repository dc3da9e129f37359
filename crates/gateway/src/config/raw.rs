//! The configuration file as written (SPEC §2): plain serde types that refuse unknown keys.
//! Nothing here is checked beyond its shape; [`super::compile`] does the rest.

use super::duration::ConfigDuration;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A string with the place it was written.
pub type Text = Spanned<String>;
/// A section that is parsed for its position only, because its feature is not built yet.
pub type Unsupported = Option<Spanned<IgnoredAny>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: RawListen,
    #[serde(default)]
    pub limits: RawLimits,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub identity: Unsupported,
    pub policy: Unsupported,
    pub rate_limit: Unsupported,
    pub validation: Unsupported,
    pub headers: Option<BTreeMap<String, Spanned<HeaderSetting>>>,
    #[serde(default)]
    pub monitoring: RawMonitoring,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub address: Text,
    pub tls: Unsupported,
    #[serde(default)]
    pub trusted_proxies: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<Spanned<usize>>,
    pub max_header_count: Option<Spanned<usize>>,
    pub max_uri_bytes: Option<Spanned<usize>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    pub max_token_bytes: Unsupported,
    pub max_json_string_bytes: Unsupported,
    pub header_read_timeout: Option<ConfigDuration>,
    pub body_read_timeout: Option<ConfigDuration>,
    pub request_timeout: Option<ConfigDuration>,
    pub max_connections: Option<Spanned<usize>>,
    #[serde(default)]
    pub http2: RawHttp2,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp2 {
    pub max_concurrent_streams: Option<u32>,
    pub max_header_list_bytes: Option<u32>,
    pub max_pending_resets: Option<usize>,
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
    pub alerts: Unsupported,
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
    pub scopes: Unsupported,
    pub rate_limit: Unsupported,
    pub resource: Unsupported,
    pub require_mfa: Unsupported,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<Text>,
    pub prefix: Option<Text>,
    pub methods: Option<Vec<Text>>,
}
