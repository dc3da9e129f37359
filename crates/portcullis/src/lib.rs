//! Portcullis: zero-trust API security layers for [`tower`].
//!
//! Each capability of the Portcullis gateway is a `tower::Layer` that any hyper or axum
//! service can use on its own. A layer that refuses a request returns a [`Denial`] and never
//! calls the service behind it; the outermost [`respond::RespondLayer`] turns every `Denial`
//! into one RFC 9457 problem response and exactly one [`event::SecurityEvent`], and adds the
//! configured security headers to every response.
//!
//! ```
//! use portcullis::{normalize::{NormalizeLayer, NormalizeSettings}, respond::RespondLayer};
//! use portcullis::event::EventBus;
//! use portcullis::headers::SecurityHeaders;
//! use std::sync::Arc;
//!
//! let events = Arc::new(EventBus::discard());
//! let stack = tower::ServiceBuilder::new()
//!     .layer(RespondLayer::new(Arc::new(SecurityHeaders::default()), events))
//!     .layer(NormalizeLayer::new(Arc::new(NormalizeSettings::default())))
//!     .service_fn(|_req: http::Request<portcullis::body::Body>| async {
//!         Ok::<_, portcullis::Denial>(http::Response::new(portcullis::body::empty()))
//!     });
//! # let _ = stack;
//! ```

pub mod alert;
pub mod authn;
pub mod authz;
pub mod body;
pub mod cors;
pub mod denial;
pub mod detect;
pub mod discovery;
pub mod event;
pub mod framing;
pub mod future;
pub mod generations;
pub mod headers;
pub mod join;
pub mod json;
pub mod net;
pub mod normalize;
pub mod outbound;
pub mod problem;
pub mod ratelimit;
pub mod reason;
pub mod redis_backend;
pub mod request_id;
pub mod respond;
pub mod route;
pub mod scope;
pub mod secret;
pub mod session;
#[cfg(test)]
mod test_support;
pub mod threat;
pub mod time;
pub mod timeout;
pub mod trace;
pub mod validate;
pub mod websocket;

pub use denial::Denial;

/// The error type carried by bodies and services that can fail in several ways.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
