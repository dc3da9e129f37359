//! The endpoint inventory: how often each documented operation is called, and which
//! undocumented ("shadow") endpoints receive traffic. It outlives configuration reloads, so
//! counts are not lost when the API document changes. Undocumented paths are folded into
//! templates (`template`), and the shadow templates can be exported as an OpenAPI document
//! to review and merge into the enforced one.

mod template;

pub use template::{TemplateRules, infer as infer_template};

use http::Method;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Most distinct shadow endpoints remembered; further ones are only counted in total, so a
/// scan of random paths cannot grow memory without bound.
const MAX_SHADOW: usize = 1000;
/// Longest path kept for a shadow endpoint.
const MAX_SHADOW_PATH: usize = 256;
/// Query parameter names and body content types remembered per shadow endpoint at most,
/// and the longest of each.
const MAX_NAMES: usize = 16;
const MAX_NAME: usize = 64;

/// Call counts of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    count: AtomicU64,
    last_seen: AtomicU64,
}

impl EndpointStats {
    /// Counts one call, now.
    pub fn hit(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_seen
            .store(crate::time::unix_now(), Ordering::Relaxed);
    }
}

/// One row of the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryEntry {
    /// The request method.
    pub method: String,
    /// The documented path template, or the observed path of a shadow endpoint.
    pub path: String,
    /// Whether the API document describes it.
    pub documented: bool,
    /// Calls seen.
    pub count: u64,
    /// Unix time of the last call (0 when never called).
    pub last_seen: u64,
    /// What was seen of a shadow endpoint (absent for documented ones).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
}

/// What the calls to a shadow endpoint showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    /// Unix time of the first call.
    pub first_seen: u64,
    /// Whether calls with credentials (`Authorization`) were seen.
    pub authenticated: bool,
    /// Whether calls without credentials were seen.
    pub anonymous: bool,
    /// Path parameters the template introduced (`{id}`, `{uuid}`, ...).
    pub path_parameters: Vec<String>,
    /// Query parameter names seen (at most 16).
    pub query_parameters: Vec<String>,
    /// Body content types seen (at most 16).
    pub content_types: Vec<String>,
    /// Answer statuses seen (at most 16), the gateway's refusals included.
    pub statuses: Vec<u16>,
}

/// One call to an undocumented endpoint, as the operation layer saw it.
#[derive(Debug, Clone, Copy)]
pub struct ShadowCall<'a> {
    /// The method.
    pub method: &'a Method,
    /// The canonical path.
    pub path: &'a str,
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// Whether it carried credentials.
    pub authenticated: bool,
    /// Its body's content type, if any.
    pub content_type: Option<&'a str>,
    /// How to fold the path into a template (none: kept as called).
    pub templates: Option<&'a TemplateRules>,
}

/// The counters and observations of one shadow endpoint.
#[derive(Debug, Default)]
struct Shadow {
    stats: EndpointStats,
    first_seen: u64,
    authenticated: AtomicBool,
    anonymous: AtomicBool,
    path_parameters: Vec<String>,
    names: Mutex<(BTreeSet<String>, BTreeSet<String>)>,
    statuses: Mutex<BTreeSet<u16>>,
}

/// Records the answer of one call to a shadow endpoint.
#[derive(Debug, Clone)]
pub struct StatusRecorder(Arc<Shadow>);

impl StatusRecorder {
    /// The call was answered with `status`.
    pub fn record(&self, status: u16) {
        let mut statuses = self
            .0
            .statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if statuses.len() < MAX_NAMES {
            statuses.insert(status);
        }
    }
}

/// What [`Inventory::shadow`] saw.
#[derive(Debug)]
pub struct ShadowSeen {
    /// Whether this is the endpoint's first call.
    pub first: bool,
    /// Where to record the answer's status (none past the inventory's bound).
    pub recorder: Option<StatusRecorder>,
}

impl Shadow {
    fn observe(&self, call: &ShadowCall<'_>) {
        self.stats.hit();
        let flag = if call.authenticated {
            &self.authenticated
        } else {
            &self.anonymous
        };
        flag.store(true, Ordering::Relaxed);
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let (query, types) = &mut *names;
        for pair in call.query.unwrap_or_default().split('&') {
            let name = pair.split('=').next().unwrap_or_default();
            if !name.is_empty() && query.len() < MAX_NAMES {
                query.insert(crate::problem::truncated(name, MAX_NAME).to_string());
            }
        }
        if let Some(kind) = call.content_type
            && types.len() < MAX_NAMES
        {
            let essence = kind.split(';').next().unwrap_or_default().trim();
            types.insert(crate::problem::truncated(essence, MAX_NAME).to_ascii_lowercase());
        }
    }

    fn observed(&self) -> Observed {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        Observed {
            first_seen: self.first_seen,
            authenticated: self.authenticated.load(Ordering::Relaxed),
            anonymous: self.anonymous.load(Ordering::Relaxed),
            path_parameters: self.path_parameters.clone(),
            query_parameters: names.0.iter().cloned().collect(),
            content_types: names.1.iter().cloned().collect(),
            statuses: self
                .statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .copied()
                .collect(),
        }
    }
}

type Key = (Method, Arc<str>);

/// Observed endpoints, documented and shadow.
#[derive(Debug, Default)]
pub struct Inventory {
    documented: Mutex<HashMap<Key, Arc<EndpointStats>>>,
    shadow: Mutex<HashMap<Key, Arc<Shadow>>>,
    shadow_overflow: AtomicU64,
}

impl Inventory {
    /// The counters of a documented operation (created on first use, then shared).
    pub fn documented(&self, method: &Method, template: &Arc<str>) -> Arc<EndpointStats> {
        let mut map = self
            .documented
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry((method.clone(), template.clone()))
            .or_default()
            .clone()
    }

    /// Records a call to an undocumented endpoint (folded into its template unless told
    /// otherwise), saying whether it is the first time the endpoint is seen.
    pub fn shadow(&self, call: ShadowCall<'_>) -> ShadowSeen {
        let (path, path_parameters) = match call.templates {
            Some(rules) => template::infer(call.path, rules),
            None => (call.path.to_string(), Vec::new()),
        };
        let key = (
            call.method.clone(),
            Arc::from(crate::problem::truncated(&path, MAX_SHADOW_PATH)),
        );
        let mut map = self.shadow.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shadow) = map.get(&key) {
            shadow.observe(&call);
            return ShadowSeen {
                first: false,
                recorder: Some(StatusRecorder(shadow.clone())),
            };
        }
        let crowded = call.templates.is_some_and(|rules| {
            let prefix = prefix_of(&key.1);
            map.keys().filter(|(_, p)| prefix_of(p) == prefix).count() >= rules.max_per_prefix
        });
        if map.len() >= MAX_SHADOW || crowded {
            self.shadow_overflow.fetch_add(1, Ordering::Relaxed);
            return ShadowSeen {
                first: false,
                recorder: None,
            };
        }
        let shadow = Arc::new(Shadow {
            first_seen: crate::time::unix_now(),
            path_parameters,
            ..Shadow::default()
        });
        shadow.observe(&call);
        map.insert(key, shadow.clone());
        ShadowSeen {
            first: true,
            recorder: Some(StatusRecorder(shadow)),
        }
    }

    /// Calls to shadow endpoints beyond the remembered ones.
    pub fn shadow_overflow(&self) -> u64 {
        self.shadow_overflow.load(Ordering::Relaxed)
    }

    /// Every endpoint, documented first, each group sorted by path then method.
    pub fn entries(&self) -> Vec<InventoryEntry> {
        let row = |(method, path): &Key, stats: &EndpointStats, observed: Option<Observed>| {
            InventoryEntry {
                method: method.to_string(),
                path: path.to_string(),
                documented: observed.is_none(),
                count: stats.count.load(Ordering::Relaxed),
                last_seen: stats.last_seen.load(Ordering::Relaxed),
                observed,
            }
        };
        let sorted = |mut rows: Vec<InventoryEntry>| {
            rows.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
            rows
        };
        let documented = self
            .documented
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, stats)| row(key, stats, None))
            .collect();
        let shadow = self
            .shadow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, shadow)| row(key, &shadow.stats, Some(shadow.observed())))
            .collect();
        let mut out = sorted(documented);
        out.extend(sorted(shadow));
        out
    }

    /// The shadow endpoints as an OpenAPI 3.1 document: each template with its methods,
    /// path and query parameters (strings: only their names were seen) and what was
    /// observed, to review and merge into the enforced document.
    pub fn openapi(&self) -> serde_json::Value {
        let mut paths = serde_json::Map::new();
        for entry in self.entries().into_iter().filter(|e| !e.documented) {
            let Some(observed) = entry.observed else {
                continue;
            };
            let string = serde_json::json!({ "type": "string" });
            let mut parameters: Vec<serde_json::Value> = observed
                .path_parameters
                .iter()
                .map(|name| {
                    serde_json::json!({ "name": name, "in": "path", "required": true,
                                        "schema": string })
                })
                .collect();
            parameters.extend(
                observed.query_parameters.iter().map(
                    |name| serde_json::json!({ "name": name, "in": "query", "schema": string }),
                ),
            );
            let mut responses: serde_json::Map<String, serde_json::Value> = observed
                .statuses
                .iter()
                .map(|s| {
                    (
                        s.to_string(),
                        serde_json::json!({ "description": "observed" }),
                    )
                })
                .collect();
            if responses.is_empty() {
                responses.insert(
                    "default".into(),
                    serde_json::json!({ "description": "not observed yet" }),
                );
            }
            let mut operation = serde_json::json!({
                "summary": "observed, not documented",
                "parameters": parameters,
                "responses": responses,
                "x-portcullis-observed": {
                    "count": entry.count,
                    "first_seen": observed.first_seen,
                    "last_seen": entry.last_seen,
                    "authenticated": observed.authenticated,
                    "anonymous": observed.anonymous,
                },
            });
            if !observed.content_types.is_empty()
                && let Some(fields) = operation.as_object_mut()
            {
                let content: serde_json::Map<String, serde_json::Value> = observed
                    .content_types
                    .iter()
                    .map(|t| (t.clone(), serde_json::json!({})))
                    .collect();
                fields.insert(
                    "requestBody".into(),
                    serde_json::json!({ "content": content }),
                );
            }
            let item = paths
                .entry(entry.path.clone())
                .or_insert_with(|| serde_json::json!({}));
            if let Some(item) = item.as_object_mut() {
                item.insert(entry.method.to_ascii_lowercase(), operation);
            }
        }
        serde_json::json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Shadow endpoints observed by Portcullis",
                "version": crate::time::now_rfc3339(),
            },
            "paths": paths,
        })
    }
}

/// The first two segments of a path (`/v1/legacy` of `/v1/legacy/users/{id}`).
fn prefix_of(path: &str) -> &str {
    let end = path
        .match_indices('/')
        .nth(2)
        .map_or(path.len(), |(index, _)| index);
    path.get(..end).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_endpoints_are_bounded() {
        let inventory = Inventory::default();
        let call = |path: &'static str| ShadowCall {
            method: &Method::GET,
            path,
            query: None,
            authenticated: false,
            content_type: None,
            templates: None,
        };
        assert!(inventory.shadow(call("/a")).first);
        assert!(!inventory.shadow(call("/a")).first);
        for i in 0..MAX_SHADOW + 10 {
            let path = format!("/scan/{i}");
            inventory.shadow(ShadowCall {
                path: &path,
                ..call("")
            });
        }
        assert_eq!(inventory.entries().len(), MAX_SHADOW);
        assert_eq!(inventory.shadow_overflow(), 11);
        let first = inventory.entries().into_iter().find(|e| e.path == "/a");
        assert_eq!(first.map(|e| e.count), Some(2));
    }

    #[test]
    fn ids_fold_into_one_template_exported_as_openapi() {
        let inventory = Inventory::default();
        for (i, auth) in [(17, false), (18, true), (19, false)] {
            let path = format!("/legacy/users/{i}");
            let seen = inventory.shadow(ShadowCall {
                method: &Method::POST,
                path: &path,
                query: Some("verbose=1&fields=a"),
                authenticated: auth,
                content_type: Some("application/json; charset=utf-8"),
                templates: Some(&TemplateRules::default()),
            });
            if let Some(recorder) = seen.recorder {
                recorder.record(if auth { 201 } else { 401 });
            }
        }
        let entries = inventory.entries();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].path, "/legacy/users/{id}");
        assert_eq!(entries[0].count, 3);
        let doc = inventory.openapi();
        assert_eq!(doc["openapi"], "3.1.0");
        let op = &doc["paths"]["/legacy/users/{id}"]["post"];
        assert_eq!(op["parameters"][0]["name"], "id");
        assert_eq!(op["parameters"][0]["in"], "path");
        let names: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, vec!["fields", "verbose"]);
        assert!(op["requestBody"]["content"]["application/json"].is_object());
        assert_eq!(op["x-portcullis-observed"]["authenticated"], true);
        assert_eq!(op["x-portcullis-observed"]["anonymous"], true);
        assert!(op["responses"]["201"].is_object() && op["responses"]["401"].is_object());
    }

    #[test]
    fn one_prefix_cannot_fill_the_inventory() {
        let inventory = Inventory::default();
        let rules = TemplateRules {
            reserved: Vec::new(),
            max_per_prefix: 3,
        };
        for word in ["a", "b", "c", "d", "e"] {
            let path = format!("/noisy/x/{word}");
            inventory.shadow(ShadowCall {
                method: &Method::GET,
                path: &path,
                query: None,
                authenticated: false,
                content_type: None,
                templates: Some(&rules),
            });
        }
        inventory.shadow(ShadowCall {
            method: &Method::GET,
            path: "/quiet/y",
            query: None,
            authenticated: false,
            content_type: None,
            templates: Some(&rules),
        });
        assert_eq!(inventory.entries().len(), 4);
        assert_eq!(inventory.shadow_overflow(), 2);
        assert_eq!(prefix_of("/v1/legacy/users/{id}"), "/v1/legacy");
        assert_eq!(prefix_of("/v1"), "/v1");
    }
}
