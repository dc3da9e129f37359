//! `identity.oidc_login`: the gateway as a browser application's OAuth 2.1 client
//! (backend-for-frontend), compiled into [`Sessions`].

use super::identity::{Shared, remote_uri};
use super::raw::RawOidcLogin;
use super::secret::Resolver;
use super::{Problems, line_of};
use portcullis::authn::Issuer;
use portcullis::authn::jwks::KeySource;
use portcullis::authn::keys::Algorithm;
use portcullis::authn::sign::SigningKey;
use portcullis::outbound::HttpClient;
use portcullis::ratelimit::store::Limiter;
use portcullis::session::seal::Sealer;
use portcullis::session::{
    ClientAuth, LoginPaths, LoginSettings, Provider, SessionStore, Sessions,
};
use std::sync::Arc;
use std::time::Duration;

/// What the login settings need from the rest of the configuration.
pub(super) struct LoginContext<'a> {
    pub resolver: &'a Resolver,
    pub shared: &'a Shared,
    pub client: &'a HttpClient,
    pub limiter: &'a Arc<Limiter>,
    pub mfa_acr_values: Vec<String>,
}

/// Compiles `identity.oidc_login`; the running [`Sessions`] are kept while nothing in them
/// changes, so reloads keep refreshes in flight and ended sessions.
pub(super) fn compile(
    raw: &RawOidcLogin,
    context: &LoginContext<'_>,
    problems: &mut Problems,
) -> Option<Arc<Sessions>> {
    let path = "identity.oidc_login";
    let resolver = context.resolver;
    let issuer = resolver.text(&format!("{path}.issuer"), &raw.issuer, problems);
    if let Some(issuer) = &issuer
        && let Err(message) = remote_uri(issuer)
    {
        problems.at(format!("{path}.issuer"), &raw.issuer, message);
    }
    let client_id = resolver
        .text(&format!("{path}.client_id"), &raw.client_id, problems)
        .filter(|id| !id.is_empty());
    if client_id.is_none() {
        problems.at(format!("{path}.client_id"), &raw.client_id, "is empty");
    }
    // The resolved secrets, digested into the fingerprint: a changed value is new settings.
    let mut material = String::new();
    let auth = match (&raw.client_secret, &raw.client_key) {
        (Some(_), Some(key)) => {
            problems.at(
                format!("{path}.client_key"),
                key,
                "give either client_secret (client_secret_basic) or client_key (private_key_jwt), not both",
            );
            None
        }
        (Some(secret), None) => resolver
            .secret(&format!("{path}.client_secret"), secret, problems)
            .inspect(|s| material.push_str(s.expose()))
            .map(ClientAuth::Secret),
        (None, Some(key)) => resolver
            .secret(&format!("{path}.client_key"), key, problems)
            .inspect(|s| material.push_str(s.expose()))
            .and_then(|text| {
                SigningKey::from_text(text.expose(), None, Algorithm::Rs256)
                    .map_err(|e| problems.at(format!("{path}.client_key"), key, e.to_string()))
                    .ok()
            })
            .map(ClientAuth::PrivateKeyJwt),
        (None, None) => Some(ClientAuth::Public),
    };
    let scopes = raw.scopes.clone().unwrap_or_else(|| {
        ["openid", "profile", "offline_access"]
            .map(String::from)
            .to_vec()
    });
    if !scopes.iter().any(|s| s == "openid") {
        problems.add(
            format!("{path}.scopes"),
            None,
            "must include `openid` (the login is checked through the ID token)",
        );
    }
    let paths = compile_paths(raw, resolver, problems);
    let external_origin = raw.external_url.as_ref().and_then(|text| {
        let value = resolver.text(&format!("{path}.external_url"), text, problems)?;
        origin_of(&value)
            .map_err(|m| problems.at(format!("{path}.external_url"), text, m))
            .ok()
    });
    let post_logout_redirect = match &raw.post_logout_redirect {
        None => "/".to_string(),
        Some(text) => {
            let value = resolver.text(&format!("{path}.post_logout_redirect"), text, problems)?;
            if portcullis::session::safe_return(Some(&value)) != value {
                problems.at(
                    format!("{path}.post_logout_redirect"),
                    text,
                    "must be a path on this site, starting with one `/`",
                );
            }
            value
        }
    };
    let session = &raw.session;
    let ttl = session.ttl.map_or(Duration::from_secs(8 * 3600), |d| d.0);
    let idle_timeout = session
        .idle_timeout
        .map_or(Duration::from_secs(3600), |d| d.0);
    if idle_timeout > ttl || ttl.is_zero() || idle_timeout.is_zero() {
        problems.add(
            format!("{path}.session"),
            None,
            "ttl and idle_timeout must be positive, and idle_timeout no longer than ttl",
        );
    }
    let refresh_before = raw.refresh_before.map_or(Duration::from_secs(60), |d| d.0);
    let keys = resolver
        .secret(&format!("{path}.session.keys"), &session.keys, problems)
        .inspect(|s| {
            material.push('\0');
            material.push_str(s.expose());
        })
        .and_then(|keys| {
            let list: Vec<&str> = keys.expose().split(',').map(str::trim).collect();
            Sealer::new(&list)
                .map_err(|e| {
                    problems.at(format!("{path}.session.keys"), &session.keys, e.to_string())
                })
                .ok()
        });
    let store_kind = session
        .store
        .as_ref()
        .map_or("cookie", |t| t.value.as_str());
    let shared_redis = context.limiter.shared_store().is_some();
    match store_kind {
        "cookie" => {}
        "redis" if shared_redis => {}
        "redis" => problems.at(
            format!("{path}.session.store"),
            session.store.as_ref()?,
            "`redis` keeps sessions in the shared rate-limit store: configure rate_limit.store: redis",
        ),
        other => problems.at(
            format!("{path}.session.store"),
            session.store.as_ref()?,
            format!("unknown store `{other}` (use cookie or redis)"),
        ),
    }
    let resource = raw
        .resource
        .as_ref()
        .and_then(|t| resolver.text(&format!("{path}.resource"), t, problems));
    let (issuer, client_id, auth, paths, sealer) = (issuer?, client_id?, auth?, paths?, keys?);
    let settings = LoginSettings {
        paths,
        scopes,
        resource,
        external_origin,
        post_logout_redirect,
        ttl,
        idle_timeout,
        refresh_before,
        mfa_acr_values: context.mfa_acr_values.clone(),
        max_pending: 4,
        pending_ttl: Duration::from_secs(600),
    };
    let fingerprint = fingerprint(raw, &settings, &material, context);
    let make = || {
        let algorithms = vec![
            Algorithm::Es256,
            Algorithm::Es384,
            Algorithm::Rs256,
            Algorithm::Ps256,
            Algorithm::EdDsa,
        ];
        let keys = context.shared.remote_store(
            KeySource::Discovery {
                issuer: issuer.clone(),
            },
            &algorithms,
            context.client,
        );
        let id_tokens = Issuer {
            name: Arc::from("oidc_login"),
            issuer: issuer.clone(),
            audiences: vec![client_id.clone()],
            algorithms,
            clock_skew: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(24 * 3600),
            required_claims: vec!["sub".into(), "iat".into()],
            token_types: None,
            binding_required: false,
            keys,
        };
        let provider = Arc::new(Provider::new(
            client_id.clone(),
            auth,
            context.client.clone(),
            id_tokens,
        ));
        let sealer = Arc::new(sealer);
        let store = if store_kind == "redis" {
            SessionStore::redis(sealer, context.limiter.clone())
        } else {
            SessionStore::cookie(sealer, Some(context.limiter.clone()))
        };
        Sessions::new(settings, provider, store, context.shared.events())
    };
    Some(
        context
            .shared
            .keep(&context.shared.sessions, fingerprint, make),
    )
}

fn compile_paths(
    raw: &RawOidcLogin,
    resolver: &Resolver,
    problems: &mut Problems,
) -> Option<LoginPaths> {
    let given = raw.paths.as_ref();
    let one =
        |name: &str, text: Option<&super::raw::Text>, default: &str, problems: &mut Problems| {
            let Some(text) = text else {
                return Some(default.to_string());
            };
            let value =
                resolver.text(&format!("identity.oidc_login.paths.{name}"), text, problems)?;
            if !value.starts_with('/') || value.contains(['?', '#']) {
                problems.at(
                    format!("identity.oidc_login.paths.{name}"),
                    text,
                    "must be a path starting with `/`, without query or fragment",
                );
            }
            Some(value)
        };
    let login = one(
        "login",
        given.and_then(|p| p.login.as_ref()),
        "/auth/login",
        problems,
    );
    let callback = one(
        "callback",
        given.and_then(|p| p.callback.as_ref()),
        "/auth/callback",
        problems,
    );
    let logout = one(
        "logout",
        given.and_then(|p| p.logout.as_ref()),
        "/auth/logout",
        problems,
    );
    let paths = LoginPaths {
        login: login?,
        callback: callback?,
        logout: logout?,
    };
    if paths.login == paths.callback
        || paths.login == paths.logout
        || paths.callback == paths.logout
    {
        problems.add(
            "identity.oidc_login.paths",
            given
                .and_then(|p| p.login.as_ref())
                .and_then(|t| line_of(&t.referenced)),
            "login, callback and logout must be three different paths",
        );
    }
    Some(paths)
}

/// `scheme://host[:port]` of an external URL (https, or http for loopback only), which
/// must name no path beyond `/`.
fn origin_of(text: &str) -> Result<String, String> {
    let uri = remote_uri(text)?;
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err("must be an origin (scheme and host, no path)".into());
    }
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!("`{text}` has no host"));
    };
    Ok(format!("{scheme}://{authority}"))
}

/// What identifies the running sessions' settings (secrets only as a digest).
fn fingerprint(
    raw: &RawOidcLogin,
    settings: &LoginSettings,
    secrets: &str,
    context: &LoginContext<'_>,
) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secrets.as_bytes());
    format!(
        "{} {} {:?} {:?} {:?} {:?} {:?}",
        raw.issuer.value,
        raw.client_id.value,
        raw.session.store.as_ref().map(|t| &t.value),
        settings,
        digest.as_ref(),
        context.client.fingerprint(),
        Arc::as_ptr(context.limiter),
    )
}
