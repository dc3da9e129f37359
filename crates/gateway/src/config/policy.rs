//! The `policy` section: the engine, what it does on error, and the decision log.

use super::raw::{RawPolicy, Text};
use super::secret::Resolver;
use super::{Problems, Shared};
use portcullis::authz::cedar::CedarPolicy;
use portcullis::authz::decision_log::{DecisionLogSettings, Durability};
use portcullis::authz::engine::{OpaClient, RegoPolicy};
use portcullis::authz::{Authorizer, OnError, PolicyEngine};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest policy or data file read.
const MAX_POLICY_FILE: u64 = 4 * 1024 * 1024;

pub(super) struct CompiledPolicy {
    pub authorizer: Arc<Authorizer>,
    pub files: Vec<PathBuf>,
    pub fail_open: bool,
}

pub(super) fn compile(
    raw: &RawPolicy,
    base_dir: &Path,
    resolver: &Resolver,
    (shared, client): (&Shared, &portcullis::outbound::HttpClient),
    problems: &mut Problems,
) -> Option<CompiledPolicy> {
    let mut files = Files {
        base_dir,
        resolver,
        read: Vec::new(),
    };
    let engine = match raw.engine.value.as_str() {
        "rego" => {
            let Some(rego) = &raw.rego else {
                problems.at(
                    "policy.rego",
                    &raw.engine,
                    "engine `rego` needs a `rego` section (files, query)",
                );
                return None;
            };
            if rego.files.is_empty() {
                problems.at(
                    "policy.rego.files",
                    &rego.query,
                    "list at least one policy file",
                );
            }
            let modules: Vec<(String, String)> = (rego.files.iter().enumerate())
                .filter_map(|(i, file)| {
                    files.text(&format!("policy.rego.files[{i}]"), file, problems)
                })
                .collect();
            let data: Vec<_> = (rego.data.iter().enumerate())
                .filter_map(|(i, file)| {
                    files.json(&format!("policy.rego.data[{i}]"), file, problems)
                })
                .collect();
            let query = resolver.text("policy.rego.query", &rego.query, problems)?;
            // A file that could not be read is already reported; compiling without it
            // would only add a misleading second problem.
            if modules.len() != rego.files.len() || data.len() != rego.data.len() {
                return None;
            }
            match RegoPolicy::new(&modules, &data, &query) {
                Ok(policy) => PolicyEngine::Rego(Box::new(policy)),
                Err(e) => {
                    problems.at(
                        "policy.rego",
                        &rego.query,
                        format!("the policy does not compile: {e}"),
                    );
                    return None;
                }
            }
        }
        "opa" => {
            let Some(opa) = &raw.opa else {
                problems.at(
                    "policy.opa",
                    &raw.engine,
                    "engine `opa` needs an `opa` section (url, path)",
                );
                return None;
            };
            let url = resolver.text("policy.opa.url", &opa.url, problems)?;
            let path = resolver.text("policy.opa.path", &opa.path, problems)?;
            if !path.starts_with("/v1/data/") {
                problems.at(
                    "policy.opa.path",
                    &opa.path,
                    "must be a Data API path such as /v1/data/api/authz/allow",
                );
                return None;
            }
            let full = format!("{}{path}", url.trim_end_matches('/'));
            let uri = match super::identity::remote_uri(&full) {
                Ok(uri) => uri,
                Err(message) => {
                    problems.at("policy.opa.url", &opa.url, message);
                    return None;
                }
            };
            PolicyEngine::Opa(Box::new(OpaClient::new(
                uri,
                opa.timeout.map_or(Duration::from_millis(500), |d| d.0),
                client.clone(),
            )))
        }
        "cedar" => {
            let Some(cedar) = &raw.cedar else {
                problems.at(
                    "policy.cedar",
                    &raw.engine,
                    "engine `cedar` needs a `cedar` section (files)",
                );
                return None;
            };
            let sources: Vec<(String, String)> = (cedar.files.iter().enumerate())
                .filter_map(|(i, file)| {
                    files.text(&format!("policy.cedar.files[{i}]"), file, problems)
                })
                .collect();
            let entities = match &cedar.entities {
                None => None,
                Some(file) => Some(files.json("policy.cedar.entities", file, problems)?),
            };
            if sources.len() != cedar.files.len() {
                return None;
            }
            match CedarPolicy::new(&sources, entities.as_ref()) {
                Ok(policy) => PolicyEngine::Cedar(Box::new(policy)),
                Err(e) => {
                    problems.at(
                        "policy.cedar",
                        &raw.engine,
                        format!("the policy does not compile: {e}"),
                    );
                    return None;
                }
            }
        }
        other => {
            problems.at(
                "policy.engine",
                &raw.engine,
                format!("unknown engine `{other}` (use rego, cedar or opa)"),
            );
            return None;
        }
    };
    let on_error = match raw.on_error.as_ref().map(|t| t.value.as_str()) {
        None | Some("deny") => OnError::Deny,
        Some("allow") => OnError::Allow,
        Some(other) => {
            if let Some(text) = &raw.on_error {
                problems.at(
                    "policy.on_error",
                    text,
                    format!("unknown value `{other}` (use deny or allow)"),
                );
            }
            OnError::Deny
        }
    };
    let log = match &raw.decision_log {
        None => None,
        Some(log) => {
            let path =
                base_dir.join(resolver.text("policy.decision_log.path", &log.path, problems)?);
            let durability = match log.durability.as_ref().map(|t| t.value.as_str()) {
                None | Some("sync") => Durability::Sync,
                Some("async") => Durability::Async,
                Some(other) => {
                    if let Some(text) = &log.durability {
                        problems.at(
                            "policy.decision_log.durability",
                            text,
                            format!("unknown value `{other}` (use sync or async)"),
                        );
                    }
                    Durability::Sync
                }
            };
            let settings = DecisionLogSettings {
                path,
                durability,
                max_bytes: log
                    .max_bytes
                    .unwrap_or(DecisionLogSettings::DEFAULT_MAX_BYTES),
                queue: DecisionLogSettings::DEFAULT_QUEUE,
            };
            match shared.decision_log(&settings) {
                Ok(log) => log,
                Err(e) => {
                    problems.at(
                        "policy.decision_log.path",
                        &log.path,
                        format!("cannot open the decision log: {e}"),
                    );
                    return None;
                }
            }
        }
    };
    Some(CompiledPolicy {
        authorizer: Arc::new(Authorizer {
            engine,
            on_error,
            log,
            mfa_acr_values: if raw.mfa_acr_values.is_empty() {
                vec!["mfa".into()]
            } else {
                raw.mfa_acr_values.clone()
            },
            events: shared.events(),
        }),
        files: files.read,
        fail_open: on_error == OnError::Allow,
    })
}

/// Reads the files a policy names, remembering them so that their changes trigger reloads.
struct Files<'a> {
    base_dir: &'a Path,
    resolver: &'a Resolver,
    read: Vec<PathBuf>,
}

impl Files<'_> {
    /// `(full path, text)` of the file `text` names.
    fn text(
        &mut self,
        path: &str,
        text: &Text,
        problems: &mut Problems,
    ) -> Option<(String, String)> {
        let full = self
            .base_dir
            .join(self.resolver.text(path, text, problems)?);
        self.read.push(full.clone());
        let meta = std::fs::metadata(&full);
        let content = match meta {
            Ok(meta) if meta.len() > MAX_POLICY_FILE => Err(format!(
                "`{}` is larger than {MAX_POLICY_FILE} bytes",
                full.display()
            )),
            Ok(_) => std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read `{}`: {e}", full.display())),
            Err(e) => Err(format!("cannot read `{}`: {e}", full.display())),
        };
        match content {
            Ok(content) => Some((full.display().to_string(), content)),
            Err(e) => {
                problems.at(path, text, e);
                None
            }
        }
    }

    /// The JSON document in the file `text` names (strictly parsed).
    fn json(
        &mut self,
        path: &str,
        text: &Text,
        problems: &mut Problems,
    ) -> Option<serde_json::Value> {
        let (name, content) = self.text(path, text, problems)?;
        let limits = portcullis::json::JsonLimits {
            max_depth: 64,
            max_string_bytes: 1 << 20,
        };
        portcullis::json::parse_strict(content.as_bytes(), limits)
            .map_err(|e| problems.at(path, text, format!("`{name}` is not valid JSON: {e}")))
            .ok()
    }
}
