//! Integration tests: the real `portcullis` binary against real peers on loopback.

// Test code states its expectations by panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod pki;
mod util;

mod admin;
mod alerts;
mod authz;
mod binding;
mod cli;
mod dashboard;
mod detect;
mod dpop;
mod edge;
mod grpc;
mod identity;
mod limits;
mod normalize;
mod oidc;
mod proxy;
mod ratelimit;
mod reload;
mod round_trips;
mod routing;
mod sessions;
mod tls;
mod traces;
mod validation;
mod websocket;
