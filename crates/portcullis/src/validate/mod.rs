//! Contract enforcement from an OpenAPI 3.0 or 3.1 document: the request must be an
//! operation the document describes, with declared parameters of the declared types, a
//! declared content type and a body that satisfies its schema, before the upstream sees a
//! byte. Optionally, responses are held to the document too.
//!
//! Two layers: [`OperationLayer`] matches the operation right after routing (an unknown
//! operation is refused or recorded as a shadow endpoint), and [`ValidateLayer`] checks the
//! request after authorization, so that a caller who may not call the API learns nothing
//! of its shape.
//!
//! ```no_run
//! use portcullis::discovery::Inventory;
//! use portcullis::event::EventBus;
//! use portcullis::body::Body;
//! use portcullis::validate::{
//!     ApiContract, ContractSettings, OperationLayer, Operations, ValidateLayer, Validated,
//! };
//! use std::sync::Arc;
//!
//! let inventory = Arc::new(Inventory::default());
//! let contract = ApiContract::load(
//!     "api/openapi.yaml".as_ref(),
//!     ContractSettings::default(),
//!     &inventory,
//! )
//! .map_err(|problems| problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))?;
//! let operations = Operations::new(
//!     Some(Arc::new(contract)),
//!     inventory,
//!     Arc::new(EventBus::discard()),
//! );
//! let service = tower::ServiceBuilder::new()
//!     .layer(OperationLayer::new(operations.clone()))
//!     // ... authentication and authorization here ...
//!     .layer(ValidateLayer::new(operations))
//!     .service_fn(|_req: http::Request<Validated<Body>>| async {
//!         Ok::<_, portcullis::Denial>(http::Response::new(portcullis::body::empty()))
//!     });
//! # let _ = service;
//! # Ok::<(), String>(())
//! ```
//!
//! The service behind [`ValidateLayer`] receives a [`Validated`] body: the original stream,
//! or the bytes that were read and checked. Wrap the whole stack in
//! [`crate::respond::RespondLayer`] to turn refusals into problem answers and events.

mod builder;
mod contract;
mod convert;
mod document;
mod layer;
mod media;
mod operation;
mod params;
mod request_body;
mod response;
mod schema;
mod validated;

pub use contract::{ApiContract, Operation, OperationMatch};
pub use document::LoadProblem;
pub use layer::{Validate, ValidateLayer};
pub use operation::{OperationLayer, OperationMatcher, Operations};
pub use validated::Validated;
// Where they were before `problem` became their own leaf module.
pub(crate) use crate::problem::MAX_ERRORS;
pub use crate::problem::{FieldError, describe};

use crate::json::JsonLimits;

/// What happens to a request no documented operation matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownOperations {
    /// Refused with 404, never forwarded.
    Reject,
    /// Forwarded, and recorded as a shadow endpoint.
    Log,
}

/// Whether responses are checked against the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// Not checked.
    Off,
    /// Checked; a violation raises an event and the response is delivered.
    Log,
    /// Checked; a violation is replaced by a 502 problem.
    Block,
}

/// How strictly the document is enforced.
#[derive(Debug, Clone)]
pub struct ContractSettings {
    /// What happens to undocumented operations.
    pub unknown_operations: UnknownOperations,
    /// Whether responses are checked.
    pub responses: ResponseMode,
    /// Operations (by `operationId`, or `METHOD /template`) where undocumented body
    /// properties and query parameters are let through; everywhere else they are refused.
    pub relaxed: Vec<String>,
    /// Bounds on JSON bodies, checked before any value is built.
    pub json: JsonLimits,
    /// Largest response body held in memory to check it; a larger one is a violation.
    pub max_response_bytes: usize,
}

impl Default for ContractSettings {
    fn default() -> Self {
        ContractSettings {
            unknown_operations: UnknownOperations::Reject,
            responses: ResponseMode::Off,
            relaxed: Vec::new(),
            json: JsonLimits::default(),
            max_response_bytes: 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_chosen_field_names_are_cut_short() {
        let long = format!("/{}", "é".repeat(200));
        let error = FieldError::new(
            long,
            "unknown_property",
            "is not a documented property".into(),
        );
        assert!(error.field.len() <= crate::problem::MAX_FIELD_BYTES);
        assert!(error.field.starts_with("/é"));
    }
}
