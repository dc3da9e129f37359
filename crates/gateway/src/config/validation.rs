//! The `validation` section: the OpenAPI document and how strictly it is enforced.

use super::raw::RawValidation;
use super::secret::Resolver;
use super::{Problems, Shared, line_of};
use portcullis::json::JsonLimits;
use portcullis::validate::{ApiContract, ContractSettings, ResponseMode, UnknownOperations};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Deepest `max_json_depth` accepted: deeper documents are a denial-of-service lever.
const MAX_DEPTH: usize = 512;

/// Compiles the section; returns the contract and the files to watch for changes.
pub(super) fn compile(
    raw: &RawValidation,
    max_json_string_bytes: usize,
    base_dir: &Path,
    resolver: &Resolver,
    shared: &Shared,
    problems: &mut Problems,
) -> (Option<Arc<ApiContract>>, Vec<PathBuf>) {
    let unknown_operations = match raw
        .unknown_operations
        .as_ref()
        .map(|t| (t, t.value.as_str()))
    {
        None | Some((_, "reject")) => UnknownOperations::Reject,
        Some((_, "log")) => UnknownOperations::Log,
        Some((text, other)) => {
            problems.at(
                "validation.unknown_operations",
                text,
                format!("unknown value `{other}` (use reject or log)"),
            );
            UnknownOperations::Reject
        }
    };
    let responses = match raw.responses.as_ref().map(|t| (t, t.value.as_str())) {
        None | Some((_, "off")) => ResponseMode::Off,
        Some((_, "log")) => ResponseMode::Log,
        Some((_, "block")) => ResponseMode::Block,
        Some((text, other)) => {
            problems.at(
                "validation.responses",
                text,
                format!("unknown value `{other}` (use off, log or block)"),
            );
            ResponseMode::Off
        }
    };
    let max_depth = match &raw.max_json_depth {
        None => 32,
        Some(d) if d.value == 0 || d.value > MAX_DEPTH => {
            problems.add(
                "validation.max_json_depth",
                line_of(&d.referenced),
                format!("must be between 1 and {MAX_DEPTH}"),
            );
            32
        }
        Some(d) => d.value,
    };
    let max_response_bytes = match &raw.max_response_bytes {
        None => 1024 * 1024,
        Some(n) if n.value == 0 => {
            problems.add(
                "validation.max_response_bytes",
                line_of(&n.referenced),
                "must be greater than 0",
            );
            1024 * 1024
        }
        Some(n) => n.value,
    };
    let settings = ContractSettings {
        unknown_operations,
        responses,
        relaxed: raw
            .relaxed_operations
            .iter()
            .map(|t| t.value.clone())
            .collect(),
        json: JsonLimits {
            max_depth,
            max_string_bytes: max_json_string_bytes,
        },
        max_response_bytes,
    };
    let Some(file) = resolver.text("validation.openapi", &raw.openapi, problems) else {
        return (None, Vec::new());
    };
    let path = base_dir.join(file);
    match ApiContract::load(&path, settings, &shared.inventory) {
        Ok(contract) => {
            for relaxed in &raw.relaxed_operations {
                let known = contract.operations().any(|op| {
                    *op.id == relaxed.value
                        || format!("{} {}", op.method, op.template) == relaxed.value
                });
                if !known {
                    problems.at(
                        "validation.relaxed_operations",
                        relaxed,
                        format!("`{}` names no operation of the document", relaxed.value),
                    );
                }
            }
            let files = contract.files().to_vec();
            (Some(Arc::new(contract)), files)
        }
        Err(load_problems) => {
            for p in load_problems {
                problems.at("validation.openapi", &raw.openapi, p.to_string());
            }
            (None, vec![path])
        }
    }
}
