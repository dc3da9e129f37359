//! Detectors that watch answers and feed the threat score.
//!
//! - [Exfiltration](exfiltration): a response far larger than its endpoint's usual, or a
//!   page far deeper than usual (`exfiltration`, `bulk_pagination`).
//! - [Error spikes](error_spike): error answers per endpoint and per client far above their
//!   usual rate (`error_spike`).
//! - [Enumeration](enumeration): one principal touching many object ids of one template,
//!   many of them refused or missing (`enumeration`, broken object-level authorization).
//! - [Privilege escalation](escalation): one principal refused many different endpoints or
//!   actions (`privilege_escalation`).
//!
//! Each finding is one `anomaly` event with that reason. The client is flagged in the
//! threat tracker, and so is the principal when the request had one: their next requests
//! score higher and the adaptive limiter slows them down (on every instance, when flags are
//! shared through Redis).
//!
//! Every detector's state is fixed memory per key (hashed keys, sketches instead of sets)
//! in a [`Generations`](crate::generations::Generations) map, so its size is bounded however
//! many principals, clients or paths there are.
//!
//! [`DetectLayer`] sits just inside the respond layer. It never delays an answer: the body
//! is counted as it streams and judged when it ends.

mod enumeration;
mod error_spike;
mod escalation;
mod exfiltration;
mod layer;
mod sketch;

pub use enumeration::EnumerationSettings;
pub use error_spike::ErrorSpikeSettings;
pub use escalation::EscalationSettings;
pub use exfiltration::ExfiltrationSettings;
pub use layer::{Detect, DetectLayer, ResponseFuture};
pub use sketch::DistinctSketch;

use crate::Denial;
use crate::discovery::TemplateRules;
use crate::event::{EventBus, EventType, Severity, request_event};
use crate::reason::ForbiddenReason;
use crate::scope::RequestScope;
use crate::threat::ClientTracker;
use enumeration::Enumeration;
use error_spike::{ErrorKey, ErrorSpikes};
use escalation::Escalation;
use exfiltration::Exfiltration;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a flag raises the client's (and principal's) threat score.
pub const FLAG_FOR: Duration = Duration::from_secs(600);

/// Which detectors run, with their settings (`None`: off).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DetectionSettings {
    /// Large responses and deep pages.
    pub exfiltration: Option<ExfiltrationSettings>,
    /// Error-rate spikes.
    pub error_spike: Option<ErrorSpikeSettings>,
    /// Object-id enumeration.
    pub enumeration: Option<EnumerationSettings>,
    /// Refusals across many endpoints or actions.
    pub privilege_escalation: Option<EscalationSettings>,
}

impl DetectionSettings {
    /// Whether any detector runs.
    pub fn any(&self) -> bool {
        self.exfiltration.is_some()
            || self.error_spike.is_some()
            || self.enumeration.is_some()
            || self.privilege_escalation.is_some()
    }
}

/// Findings per detector since start (shared across reloads by whoever owns it).
#[derive(Debug, Default)]
pub struct DetectorCounts {
    counts: [AtomicU64; FINDINGS.len()],
}

/// The findings' reasons, in [`DetectorCounts`] order.
pub const FINDINGS: [&str; 5] = [
    "exfiltration",
    "bulk_pagination",
    "error_spike",
    "enumeration",
    "privilege_escalation",
];

impl DetectorCounts {
    /// Each finding reason with its count.
    pub fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FINDINGS
            .iter()
            .zip(self.counts.iter())
            .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
    }

    fn found(&self, reason: &'static str) {
        let slot = FINDINGS.iter().position(|r| *r == reason);
        if let Some(count) = slot.and_then(|i| self.counts.get(i)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The detectors' shared state.
#[derive(Debug)]
pub struct Detectors {
    exfiltration: Option<Exfiltration>,
    error_spikes: Option<ErrorSpikes>,
    enumeration: Option<Enumeration>,
    escalation: Option<Escalation>,
    /// How undocumented paths fold into templates, for the ids of shadow endpoints.
    templates: TemplateRules,
    tracker: Arc<ClientTracker>,
    events: Arc<EventBus>,
    counts: Arc<DetectorCounts>,
}

/// What a watched request said about itself when it came in.
#[derive(Debug)]
struct Watch {
    detectors: Arc<Detectors>,
    scope: Arc<RequestScope>,
    /// The path, when the enumeration detector needs its ids.
    path: Option<Box<str>>,
    /// The page depth asked for, when the exfiltration detector watches pages.
    page: Option<(&'static str, u64)>,
}

impl Detectors {
    /// The detectors `settings` enables, flagging in `tracker`, reporting to `events`, and
    /// counting findings in `counts`.
    pub fn new(
        settings: DetectionSettings,
        templates: TemplateRules,
        tracker: Arc<ClientTracker>,
        events: Arc<EventBus>,
        counts: Arc<DetectorCounts>,
    ) -> Arc<Detectors> {
        Arc::new(Detectors {
            exfiltration: settings.exfiltration.map(Exfiltration::new),
            error_spikes: settings.error_spike.map(ErrorSpikes::new),
            enumeration: settings.enumeration.map(Enumeration::new),
            escalation: settings.privilege_escalation.map(Escalation::new),
            templates,
            tracker,
            events,
            counts,
        })
    }

    /// Keys each detector holds now (its memory is fixed per key).
    pub fn keys_held(&self) -> usize {
        self.exfiltration.as_ref().map_or(0, |d| d.keys_held())
            + self.error_spikes.as_ref().map_or(0, |d| d.keys_held())
            + self.enumeration.as_ref().map_or(0, |d| d.keys_held())
            + self.escalation.as_ref().map_or(0, |d| d.keys_held())
    }

    /// The principal a finding is about: the token's subject, else the client address.
    fn principal(scope: &RequestScope) -> Option<std::borrow::Cow<'_, str>> {
        match (scope.user_id(), scope.client_ip()) {
            (Some(user), _) => Some(user.into()),
            (None, Some(ip)) => Some(format!("client {ip}").into()),
            (None, None) => None,
        }
    }

    /// Raises one finding: the event, the flags, the count.
    fn found(
        &self,
        scope: &RequestScope,
        reason: &'static str,
        flag_client: bool,
        details: serde_json::Value,
    ) {
        if flag_client && let Some(ip) = scope.client_ip() {
            self.tracker.flag(ip, FLAG_FOR, reason);
        }
        // An endpoint-wide finding (an endpoint's error spike) is nobody's in particular:
        // neither the client nor the principal of the request that crossed the line is flagged.
        if flag_client && let Some(user) = scope.user_id() {
            self.tracker.flag_principal(user, FLAG_FOR, reason);
        }
        self.counts.found(reason);
        let mut event = request_event(EventType::Anomaly, Severity::High, reason, scope);
        event.details = details;
        self.events.emit(event);
    }

    /// Judges one answer's status (and the refusal, when the gateway refused).
    fn answer(&self, watch: &Watch, status: u16, denial: Option<&Denial>) {
        let scope = &*watch.scope;
        let now = Instant::now();
        if status >= 400 {
            self.error_spike(scope, now);
        }
        if let Some(enumeration) = &self.enumeration {
            self.enumeration(enumeration, watch, status, now);
        }
        if let (Some(escalation), Some(denial)) = (&self.escalation, denial) {
            self.escalation(escalation, scope, denial, now);
        }
        if let (Some(exfiltration), Some((param, depth)), Some(endpoint)) =
            (&self.exfiltration, watch.page, scope.endpoint())
            && (200..300).contains(&status)
            && let Some(usual) = exfiltration.page(endpoint, param, depth)
        {
            self.found(
                scope,
                "bulk_pagination",
                true,
                serde_json::json!({
                    "detail": "a page far deeper than the endpoint's usual",
                    "parameter": param,
                    "depth": depth,
                    "usual_depth": usual.round(),
                }),
            );
        }
    }

    fn error_spike(&self, scope: &RequestScope, now: Instant) {
        let Some(spikes) = &self.error_spikes else {
            return;
        };
        let endpoint = scope.endpoint().cloned().map(ErrorKey::Endpoint);
        let client = scope.client_ip().map(ErrorKey::Client);
        for key in [endpoint, client].into_iter().flatten() {
            let is_client = matches!(key, ErrorKey::Client(_));
            let Some(spike) = spikes.error(key, now) else {
                continue;
            };
            self.found(
                scope,
                "error_spike",
                is_client,
                serde_json::json!({
                    "detail": "error answers far above the usual rate",
                    "scope": if is_client { "client" } else { "endpoint" },
                    "count": spike.count,
                    "usual": spike.usual.round(),
                    "window_secs": spikes.settings.window.as_secs(),
                }),
            );
        }
    }

    fn enumeration(&self, enumeration: &Enumeration, watch: &Watch, status: u16, now: Instant) {
        let scope = &*watch.scope;
        let (Some(path), Some(endpoint), Some(principal)) = (
            watch.path.as_deref(),
            scope.endpoint(),
            Self::principal(scope),
        ) else {
            return;
        };
        // A documented (or routed) template names its parameters; an undocumented path is
        // folded the way the inventory folds it.
        let inferred;
        let template: &str = if endpoint.contains('{') {
            endpoint
        } else {
            inferred = crate::discovery::infer_template(path, &self.templates).0;
            &inferred
        };
        let Some(ids) = enumeration::object_ids(template, path) else {
            return;
        };
        let mut finding = None;
        for (param, id) in ids.take(8) {
            if let Some(f) = enumeration.observe(&principal, template, param, id, status, now) {
                finding.get_or_insert((param, f));
            }
        }
        let Some((param, f)) = finding else {
            return;
        };
        self.found(
            scope,
            "enumeration",
            true,
            serde_json::json!({
                "detail": "many different object ids of one endpoint, many refused or missing",
                "template": template,
                "parameter": param,
                "distinct_ids": f.distinct,
                "answers": f.answers,
                "refused": f.refused,
            }),
        );
    }

    fn escalation(
        &self,
        escalation: &Escalation,
        scope: &RequestScope,
        denial: &Denial,
        now: Instant,
    ) {
        let action = match denial {
            Denial::Forbidden {
                reason: ForbiddenReason::PolicyDenied,
                required_action,
                ..
            } => required_action.as_str(),
            Denial::InsufficientScope { .. } => "scope",
            _ => return,
        };
        let (Some(endpoint), Some(principal)) = (scope.endpoint(), Self::principal(scope)) else {
            return;
        };
        let method = scope.method().as_str();
        let Some(distinct) = escalation.observe(&principal, endpoint, method, action, now) else {
            return;
        };
        self.found(
            scope,
            "privilege_escalation",
            true,
            serde_json::json!({
                "detail": "one principal refused across many different endpoints or actions",
                "distinct_denials": distinct,
            }),
        );
    }

    /// Judges one complete response of `bytes` on the scope's endpoint.
    fn response(&self, scope: &RequestScope, bytes: u64) {
        let (Some(exfiltration), Some(endpoint)) = (&self.exfiltration, scope.endpoint()) else {
            return;
        };
        let Some(usual) = exfiltration.response(scope.method().as_str(), endpoint, bytes) else {
            return;
        };
        self.found(
            scope,
            "exfiltration",
            true,
            serde_json::json!({
                "detail": "a response far larger than the endpoint's usual",
                "bytes": bytes,
                "baseline_bytes": usual.round(),
                "factor": exfiltration.settings.factor,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threat::FailurePolicy;

    /// A million distinct keys (principals, clients, endpoints) through every detector:
    /// each holds at most twice its per-generation bound, whatever arrives.
    #[test]
    fn a_million_distinct_keys_stay_within_every_bound() {
        let now = Instant::now();
        let enumeration = Enumeration::new(EnumerationSettings::default());
        let escalation = Escalation::new(EscalationSettings::default());
        let spikes = ErrorSpikes::new(ErrorSpikeSettings::default());
        let exfiltration = Exfiltration::new(ExfiltrationSettings::default());
        let tracker = ClientTracker::new(
            1_000,
            FailurePolicy {
                limit: 10,
                window_secs: 60,
                lockout_secs: 60,
            },
        );
        let mut principal = String::new();
        for i in 0..1_000_000u32 {
            use std::fmt::Write;
            principal.clear();
            let _ = write!(principal, "user-{i}");
            enumeration.observe(&principal, "/items/{id}", "id", "7", 404, now);
            escalation.observe(&principal, "/items/{id}", "GET", "read", now);
            let ip = std::net::IpAddr::from(i.to_be_bytes());
            spikes.error(ErrorKey::Client(ip), now);
            exfiltration.page(&principal, "page", 1);
            if i % 10 == 0 {
                tracker.flag_principal(&principal, FLAG_FOR, "enumeration");
            }
        }
        assert!(enumeration.keys_held() <= 2 * enumeration::MAX_KEYS);
        assert!(escalation.keys_held() <= 2 * escalation::MAX_KEYS);
        assert!(spikes.keys_held() <= 2 * error_spike::MAX_KEYS);
        assert!(exfiltration.keys_held() <= 2 * exfiltration::MAX_KEYS);
        assert!(tracker.flagged_principals(usize::MAX).len() <= 20_000);
        // The latest keys are still judged: the bound forgets idle keys, not active ones.
        assert!(tracker.principal_flagged("user-999990"));
        // Each key's state is fixed-size: no per-key allocation grows with traffic.
        assert!(std::mem::size_of::<DistinctSketch>() <= 136);
    }
}
