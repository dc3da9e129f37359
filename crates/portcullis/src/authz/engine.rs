//! Policy engines: embedded Rego (regorus) and a remote OPA over its Data API. Both answer
//! the same question about the same input document.

use crate::outbound::HttpClient;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;
use serde_json::Value;
use std::num::NonZeroU32;
use std::time::Duration;

/// What a policy said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allow: bool,
    /// Reasons the policy gave (`reasons` of an object result), for the log and event.
    pub reasons: Vec<String>,
}

/// Why a policy could not decide (the request is then refused: fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine failed or answered something that is not a decision.
    #[error("{0}")]
    Failed(String),
    /// The engine did not answer in time.
    #[error("policy engine timed out")]
    Timeout,
}

/// Reads a decision from a policy result: `true`/`false`, or an object with a boolean
/// `allow` (and optional `reasons`). Anything else is an error, never an allow.
pub fn decision_of(result: &Value) -> Result<Decision, EngineError> {
    match result {
        Value::Bool(allow) => Ok(Decision {
            allow: *allow,
            reasons: Vec::new(),
        }),
        Value::Object(map) => match map.get("allow") {
            Some(Value::Bool(allow)) => Ok(Decision {
                allow: *allow,
                reasons: map
                    .get("reasons")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            _ => Err(EngineError::Failed(
                "policy result has no boolean `allow`".into(),
            )),
        },
        other => Err(EngineError::Failed(format!(
            "policy result is not a decision: {}",
            short(other)
        ))),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    text.chars().take(80).collect()
}

/// An embedded Rego policy: modules and data compiled once, the engine cloned per decision.
#[derive(Clone)]
pub struct RegoPolicy {
    compiled: regorus::CompiledPolicy,
    query: String,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// Longest a single Rego evaluation may run.
const REGO_TIME_LIMIT: Duration = Duration::from_millis(100);
/// Evaluation steps between two looks at the clock. Reading it on every step (interval 1)
/// was about 3% of a whole request's instructions for a two-rule policy; a step is far
/// shorter than the limit, so 32 steps late is still on time.
const REGO_CHECK_INTERVAL: NonZeroU32 = match NonZeroU32::new(32) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// Why a policy (Rego or Cedar) does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyLoadError {
    /// A policy file does not compile.
    #[error("{file}: {detail}")]
    Source {
        /// The file's name.
        file: String,
        /// What the engine said.
        detail: String,
    },
    /// The policy files do not compile together.
    #[error("{0}")]
    Combined(String),
    /// A Rego data document is refused.
    #[error("data: {0}")]
    Data(String),
    /// The Cedar entities document is refused.
    #[error("entities: {0}")]
    Entities(String),
    /// The Rego query names nothing under `data.`.
    #[error("query `{0}` must name a rule under data.")]
    QueryOutsideData(String),
    /// The Rego query does not compile, or cannot decide.
    #[error("query `{query}`: {detail}")]
    Query {
        /// The query.
        query: String,
        /// What went wrong.
        detail: String,
    },
}

impl RegoPolicy {
    /// Compiles `modules` (`(name, source)`) with `data` documents; `query` names the rule
    /// that decides, e.g. `data.api.authz.allow`.
    pub fn new(
        modules: &[(String, String)],
        data: &[Value],
        query: &str,
    ) -> Result<RegoPolicy, PolicyLoadError> {
        let limit = regorus::utils::limits::ExecutionTimerConfig {
            limit: REGO_TIME_LIMIT,
            check_interval: REGO_CHECK_INTERVAL,
        };
        // Compiled policies evaluate on fresh engines that take the process-wide limit.
        regorus::utils::limits::set_fallback_execution_timer_config(Some(limit));
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(limit);
        for (name, source) in modules {
            engine
                .add_policy(name.clone(), source.clone())
                .map_err(|e| PolicyLoadError::Source {
                    file: name.clone(),
                    detail: e.to_string(),
                })?;
        }
        for document in data {
            engine
                .add_data(regorus::Value::from(document.clone()))
                .map_err(|e| PolicyLoadError::Data(e.to_string()))?;
        }
        if !query.starts_with("data.") {
            return Err(PolicyLoadError::QueryOutsideData(query.to_string()));
        }
        let compiled = engine
            .compile_with_entrypoint(&regorus::Rc::from(query))
            .map_err(|e| PolicyLoadError::Query {
                query: query.to_string(),
                detail: e.to_string(),
            })?;
        let policy = RegoPolicy {
            compiled,
            query: query.to_string(),
        };
        // A query that names no rule would deny everything forever: refuse it at load.
        policy
            .decide(&Value::Object(Default::default()))
            .map_err(|e| PolicyLoadError::Query {
                query: query.to_string(),
                detail: e.to_string(),
            })?;
        Ok(policy)
    }

    /// Evaluates the policy on one JSON input.
    pub fn decide(&self, input: &Value) -> Result<Decision, EngineError> {
        self.decide_value(super::rego_value(input))
    }

    /// Evaluates the policy on one input already in the engine's values.
    pub fn decide_value(&self, input: regorus::Value) -> Result<Decision, EngineError> {
        let result = self
            .compiled
            .eval_with_input(input)
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        match result {
            regorus::Value::Undefined => Ok(Decision {
                allow: false,
                reasons: vec!["undefined".into()],
            }),
            // The common case, read without a JSON round trip.
            regorus::Value::Bool(allow) => Ok(Decision {
                allow,
                reasons: Vec::new(),
            }),
            other => {
                let json = other
                    .to_json_str()
                    .map_err(|e| EngineError::Failed(e.to_string()))?;
                let value: Value =
                    serde_json::from_str(&json).map_err(|e| EngineError::Failed(e.to_string()))?;
                decision_of(&value)
            }
        }
    }
}

/// A remote Open Policy Agent, asked over its Data API.
pub struct OpaClient {
    url: Uri,
    timeout: Duration,
    client: HttpClient,
}

impl std::fmt::Debug for OpaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Largest OPA answer read.
const MAX_OPA_RESPONSE: usize = 256 * 1024;

impl OpaClient {
    /// A client for `POST url` (the full Data API URL, e.g. `.../v1/data/api/authz/allow`),
    /// calling it with `client`.
    pub fn new(url: Uri, timeout: Duration, client: HttpClient) -> OpaClient {
        OpaClient {
            url,
            timeout,
            client,
        }
    }

    /// Asks OPA; any failure, timeout, or non-decision answer is an error.
    pub async fn decide(&self, input: &Value) -> Result<Decision, EngineError> {
        match tokio::time::timeout(self.timeout, self.ask(input)).await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Timeout),
        }
    }

    async fn ask(&self, input: &Value) -> Result<Decision, EngineError> {
        let body = serde_json::json!({ "input": input }).to_string();
        let request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        let (answer, _) = self
            .client
            .json(request, MAX_OPA_RESPONSE)
            .await
            .map_err(|e| EngineError::Failed(format!("OPA: {e}")))?;
        match answer.get("result") {
            // OPA leaves `result` out when the document is undefined: a deny.
            None if answer.is_object() => Ok(Decision {
                allow: false,
                reasons: vec!["undefined".into()],
            }),
            None => Err(EngineError::Failed("OPA's answer is not an object".into())),
            Some(result) => decision_of(result),
        }
    }
}
