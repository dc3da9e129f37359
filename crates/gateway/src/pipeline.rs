//! The request pipeline, built in request order from a compiled configuration.

use crate::config::GatewayConfig;
use crate::proxy::Proxy;
use crate::upgrade::WebSocketSettings;
use portcullis::authn::{Authenticate, AuthenticateLayer};
use portcullis::authz::{Authorize, AuthorizeLayer};
use portcullis::cors::{Cors, CorsLayer};
use portcullis::detect::{Detect, DetectLayer};
use portcullis::event::EventBus;
use portcullis::normalize::{Normalize, NormalizeLayer};
use portcullis::ratelimit::{RateLimit, RateLimitLayer, Screen, ScreenLayer};
use portcullis::respond::{Respond, RespondLayer};
use portcullis::route::{RouteLayer, Router};
use portcullis::session::{SessionEndpoints, SessionEndpointsLayer, SessionGuard, SessionLayer};
use portcullis::timeout::{RequestTimeout, RequestTimeoutLayer};
use portcullis::trace::{Stage, StageLayer, Staged};
use portcullis::validate::{OperationLayer, OperationMatcher, Operations, Validate, ValidateLayer};
use std::sync::Arc;
use tower::ServiceBuilder;
use tower::layer::util::Identity;
use tower::util::Either;

/// A stage without its timer (the pipeline of a configuration without traces).
type Untimed<S> = S;

/// The whole stack, outermost layer first, with `$stage` around each security stage.
macro_rules! stack {
    // Outermost first: Respond, Detect, RequestTimeout, (Edge) Normalize, Cors,
    // SessionEndpoints, Router, OperationMatcher, (Screen) Screen, (Authenticate)
    // SessionGuard, Authenticate, (RateLimit) RateLimit, (Authorize) Authorize, (Validate)
    // Validate, (Upstream) Proxy.
    ($stage:ident) => {
        Respond<Detect<RequestTimeout<$stage<Normalize<Cors<SessionEndpoints<Router<OperationMatcher<$stage<Screen<$stage<SessionGuard<Authenticate<$stage<RateLimit<$stage<Authorize<$stage<Validate<$stage<Proxy>>>>>>>>>>>>>>>>>>>>>
    };
}

/// The pipeline: without stage timers when traces are off (so tracing costs nothing then),
/// with a [`Staged`] timer around each security stage when they are on.
pub type Pipeline = Either<stack!(Untimed), stack!(Staged)>;

/// The stack of `config`, with the layer `stage(...)` gives around each security stage.
macro_rules! stack_of {
    ($config:expr, $events:expr, $stage:expr) => {{
        let (config, events, stage): (&GatewayConfig, Arc<EventBus>, _) =
            ($config, $events, $stage);
        let trusted = Arc::new(config.normalize.trusted_proxies.clone());
        let operations = Operations::new(
            config.contract.clone(),
            config.inventory.clone(),
            events.clone(),
        )
        .with_templates(config.templates.clone());
        ServiceBuilder::new()
            // Ids every request; turns each refusal into one problem answer and one event;
            // puts the security headers on every response.
            .layer(RespondLayer::new(config.headers.clone(), events.clone()))
            // Watches every answer on its way out (never delaying it) and flags clients whose
            // responses look like exfiltration or an error spike, which raises their threat score.
            .layer(DetectLayer::new(config.detectors.clone()))
            // Bounds the whole exchange, upstream included.
            .layer(RequestTimeoutLayer::new(config.request_timeout))
            // Cheap checks first: head size, framing, canonical path, client address, body guard.
            .layer(stage(Stage::Edge))
            .layer(NormalizeLayer::new(config.normalize.clone()))
            // Browsers' preflights are answered here, before any check treats them as API
            // calls; allowed origins get their CORS headers on every answer.
            .layer(CorsLayer::new(config.cors.clone()))
            // The browser login flow's own paths (login, callback, logout), which no route
            // names: answered here, never forwarded.
            .layer(SessionEndpointsLayer::new(config.sessions.clone()))
            // No route, no forwarding: 404 / 405 before anything reaches an upstream.
            .layer(RouteLayer::new(config.routes.clone()))
            // Which documented operation this is: an undocumented one is refused (404) or
            // recorded as a shadow endpoint.
            .layer(OperationLayer::new(operations.clone()))
            // Before any token is verified: lockouts after repeated auth failures, the threat
            // score, and outright refusal of hostile-looking requests.
            .layer(stage(Stage::Screen))
            .layer(ScreenLayer::new(config.rate_limiting.clone()))
            // Who is calling: one bearer token, verified (cached), scoped; identity headers
            // set from the proven claims only.
            .layer(stage(Stage::Authenticate))
            // Browser sessions (`auth: session`): cross-site unsafe requests refused, the
            // access token refreshed when due and put on the request as a bearer token.
            .layer(SessionLayer::new(config.sessions.clone()))
            // A revocation lookup in Redis is left pending here and waited for with the
            // rate limit script just inside: one round trip for both.
            .layer(
                AuthenticateLayer::new(config.authenticator.clone(), config.forward.clone())
                    .deferring_store_checks(),
            )
            // How often: GCRA per principal (or client address), lowered by the threat score.
            .layer(stage(Stage::RateLimit))
            .layer(RateLimitLayer::new(config.rate_limiting.clone()))
            // What they may do: step-up for MFA-protected methods, then a policy decision on
            // every request (never cached), recorded before anything leaves.
            .layer(stage(Stage::Authorize))
            .layer(AuthorizeLayer::new(config.authorizer.clone()))
            // Only now, for a caller allowed to call it, the API's contract: parameters,
            // content type, strict JSON and its schema (and the response, when asked).
            .layer(stage(Stage::Validate))
            .layer(ValidateLayer::new(operations))
            .layer(stage(Stage::Upstream))
            .service(Proxy::new(
                trusted,
                config.upstreams.clone(),
                config.mask_upstream_errors,
                Arc::new(WebSocketSettings {
                    limits: config.server.websocket,
                    counts: config.websockets.clone(),
                    events: events.clone(),
                }),
                config.request_timeout,
            ))
    }};
}

/// Builds the pipeline for one configuration generation.
pub fn build(config: &GatewayConfig, events: Arc<EventBus>) -> Pipeline {
    if config.traces.is_some() {
        Either::Right(stack_of!(config, events, StageLayer::new))
    } else {
        Either::Left(stack_of!(config, events, |_: Stage| Identity::new()))
    }
}
