//! `monitoring:` compiled: where events go, what the detectors flag, how shadow paths fold.
//! (Alerts have their own module.)

use super::duration::ConfigDuration;
use super::raw::{
    RawEnumeration, RawErrorSpike, RawEscalation, RawExfiltration, RawMonitoring, RawTraces,
};
use super::secret::Resolver;
use super::{Problems, line_of};
use portcullis::detect::{
    DetectionSettings, EnumerationSettings, ErrorSpikeSettings, EscalationSettings,
    ExfiltrationSettings,
};
use portcullis::discovery::TemplateRules;
use portcullis::event::EventSink;
use serde_saphyr::Spanned;
use std::path::Path;
use std::time::Duration;

/// The event sink (`monitoring.events`).
pub(super) fn events(
    monitoring: &RawMonitoring,
    base_dir: &Path,
    resolver: &Resolver,
    problems: &mut Problems,
) -> EventSink {
    match (&monitoring.events.sink, &monitoring.events.path) {
        (None, None) => EventSink::Stdout,
        (Some(sink), path) => match (sink.value.as_str(), path) {
            ("stdout", None) => EventSink::Stdout,
            ("file", Some(path)) => match resolver.text("monitoring.events.path", path, problems) {
                Some(p) => EventSink::File(base_dir.join(p)),
                None => EventSink::Stdout,
            },
            ("file", None) => {
                problems.at("monitoring.events.path", sink, "sink `file` needs a `path`");
                EventSink::Stdout
            }
            ("stdout", Some(path)) => {
                problems.at(
                    "monitoring.events.path",
                    path,
                    "`path` is only used with sink `file`",
                );
                EventSink::Stdout
            }
            (other, _) => {
                problems.at(
                    "monitoring.events.sink",
                    sink,
                    format!("unknown sink `{other}` (use stdout or file)"),
                );
                EventSink::Stdout
            }
        },
        (None, Some(path)) => {
            problems.at("monitoring.events.path", path, "`path` needs `sink: file`");
            EventSink::Stdout
        }
    }
}

/// The detectors' settings (`monitoring.detection`); each one absent is off.
pub(super) fn detection(monitoring: &RawMonitoring, problems: &mut Problems) -> DetectionSettings {
    let Some(detection) = monitoring.detection.as_ref() else {
        return DetectionSettings::default();
    };
    DetectionSettings {
        exfiltration: detection
            .exfiltration
            .as_ref()
            .and_then(|raw| exfiltration(raw, problems)),
        error_spike: detection
            .error_spike
            .as_ref()
            .and_then(|raw| error_spike(raw, problems)),
        enumeration: detection
            .enumeration
            .as_ref()
            .and_then(|raw| enumeration(raw, problems)),
        privilege_escalation: detection
            .privilege_escalation
            .as_ref()
            .and_then(|raw| escalation(raw, problems)),
    }
}

/// A `factor` that must be finite and above 1.
fn factor(
    path: &str,
    raw: Option<&Spanned<f64>>,
    default: f64,
    problems: &mut Problems,
) -> Option<f64> {
    let value = raw.map_or(default, |f| f.value);
    if value > 1.0 && value.is_finite() {
        return Some(value);
    }
    if let Some(f) = raw {
        problems.add(
            format!("{path}.factor"),
            line_of(&f.referenced),
            "must be a number greater than 1",
        );
    }
    None
}

/// A count that must be above 0.
fn positive<T: Copy + Default + PartialEq>(
    path: &str,
    name: &str,
    raw: Option<&Spanned<T>>,
    default: T,
    problems: &mut Problems,
) -> Option<T> {
    match raw {
        None => Some(default),
        Some(n) if n.value == T::default() => {
            problems.add(
                format!("{path}.{name}"),
                line_of(&n.referenced),
                "must be greater than 0",
            );
            None
        }
        Some(n) => Some(n.value),
    }
}

/// A window that must be longer than zero.
fn window(
    path: &str,
    raw: Option<ConfigDuration>,
    default: Duration,
    problems: &mut Problems,
) -> Option<Duration> {
    let window = raw.map_or(default, |w| w.0);
    if window.is_zero() {
        problems.add(format!("{path}.window"), None, "must be longer than 0s");
        return None;
    }
    Some(window)
}

fn exfiltration(raw: &RawExfiltration, problems: &mut Problems) -> Option<ExfiltrationSettings> {
    let path = "monitoring.detection.exfiltration";
    let defaults = ExfiltrationSettings::default();
    let factor = factor(path, raw.factor.as_ref(), defaults.factor, problems);
    let min_page = positive(
        path,
        "min_page",
        raw.min_page.as_ref(),
        defaults.min_page,
        problems,
    );
    Some(ExfiltrationSettings {
        factor: factor?,
        min_bytes: raw.min_bytes.unwrap_or(defaults.min_bytes),
        min_page: min_page?,
    })
}

fn enumeration(raw: &RawEnumeration, problems: &mut Problems) -> Option<EnumerationSettings> {
    let path = "monitoring.detection.enumeration";
    let defaults = EnumerationSettings::default();
    let distinct_ids = positive(
        path,
        "distinct_ids",
        raw.distinct_ids.as_ref(),
        defaults.distinct_ids,
        problems,
    );
    let window = window(path, raw.window, defaults.window, problems);
    let ratio = raw
        .min_refused_ratio
        .as_ref()
        .map_or(defaults.min_refused_ratio, |r| r.value);
    if !(0.0..=1.0).contains(&ratio) {
        let line = raw
            .min_refused_ratio
            .as_ref()
            .and_then(|r| line_of(&r.referenced));
        problems.add(
            format!("{path}.min_refused_ratio"),
            line,
            "must be between 0 and 1",
        );
        return None;
    }
    Some(EnumerationSettings {
        distinct_ids: distinct_ids?,
        window: window?,
        min_refused_ratio: ratio,
    })
}

fn escalation(raw: &RawEscalation, problems: &mut Problems) -> Option<EscalationSettings> {
    let path = "monitoring.detection.privilege_escalation";
    let defaults = EscalationSettings::default();
    let distinct = positive(
        path,
        "distinct_denials",
        raw.distinct_denials.as_ref(),
        defaults.distinct_denials,
        problems,
    );
    let window = window(path, raw.window, defaults.window, problems);
    Some(EscalationSettings {
        distinct_denials: distinct?,
        window: window?,
    })
}

fn error_spike(raw: &RawErrorSpike, problems: &mut Problems) -> Option<ErrorSpikeSettings> {
    let path = "monitoring.detection.error_spike";
    let defaults = ErrorSpikeSettings::default();
    let factor = factor(path, raw.factor.as_ref(), defaults.factor, problems);
    let min_count = positive(
        path,
        "min_count",
        raw.min_count.as_ref(),
        defaults.min_count,
        problems,
    );
    let window = window(path, raw.window, defaults.window, problems);
    Some(ErrorSpikeSettings {
        factor: factor?,
        min_count: min_count?,
        window: window?,
    })
}

/// How shadow paths fold into templates (`monitoring.discovery`); `None` keeps them as called.
pub(super) fn templates(
    monitoring: &RawMonitoring,
    problems: &mut Problems,
) -> Option<TemplateRules> {
    let template_defaults = TemplateRules::default();
    match &monitoring.discovery {
        None => Some(template_defaults),
        Some(d) if d.infer_templates == Some(false) => None,
        Some(d) => {
            if d.max_templates_per_prefix == Some(0) {
                problems.add(
                    "monitoring.discovery.max_templates_per_prefix",
                    None,
                    "must be greater than 0",
                );
            }
            Some(TemplateRules {
                reserved: d.reserved_segments.clone(),
                max_per_prefix: d
                    .max_templates_per_prefix
                    .unwrap_or(template_defaults.max_per_prefix),
            })
        }
    }
}

/// Where and how spans are exported (`monitoring.traces`).
pub(super) fn traces(
    raw: &RawTraces,
    resolver: &Resolver,
    client: &portcullis::outbound::HttpClient,
    problems: &mut Problems,
) -> Option<super::runtime::TraceSettings> {
    let path = "monitoring.traces";
    let endpoint = resolver.text(&format!("{path}.endpoint"), &raw.endpoint, problems)?;
    let endpoint = match super::identity::remote_uri(&endpoint) {
        Ok(uri) => uri,
        Err(message) => {
            problems.at(format!("{path}.endpoint"), &raw.endpoint, message);
            return None;
        }
    };
    let sample_ratio = raw.sample_ratio.as_ref().map_or(1.0, |r| r.value);
    if !(0.0..=1.0).contains(&sample_ratio) {
        let line = raw
            .sample_ratio
            .as_ref()
            .and_then(|r| line_of(&r.referenced));
        problems.add(
            format!("{path}.sample_ratio"),
            line,
            "must be between 0 and 1",
        );
        return None;
    }
    Some(super::runtime::TraceSettings {
        endpoint,
        sample_ratio,
        trust_incoming: raw.trust_incoming.unwrap_or(false),
        client: client.clone(),
    })
}
