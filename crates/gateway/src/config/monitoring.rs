//! `monitoring:` compiled: where events go, what the detectors flag, how shadow paths fold.
//! (Alerts have their own module.)

use super::raw::RawMonitoring;
use super::secret::Resolver;
use super::{Problems, line_of};
use portcullis::detect::{ErrorSpikeSettings, ExfiltrationSettings};
use portcullis::discovery::TemplateRules;
use portcullis::event::EventSink;
use std::path::Path;

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

/// The exfiltration detector's settings (`monitoring.detection.exfiltration`), if enabled.
pub(super) fn exfiltration(
    monitoring: &RawMonitoring,
    problems: &mut Problems,
) -> Option<ExfiltrationSettings> {
    monitoring
        .detection
        .as_ref()
        .and_then(|d| d.exfiltration.as_ref())
        .and_then(|e| {
            let defaults = ExfiltrationSettings::default();
            let factor = e.factor.as_ref().map_or(defaults.factor, |f| f.value);
            if !(factor > 1.0 && factor.is_finite()) {
                if let Some(f) = &e.factor {
                    problems.add(
                        "monitoring.detection.exfiltration.factor",
                        line_of(&f.referenced),
                        "must be a number greater than 1",
                    );
                }
                return None;
            }
            Some(ExfiltrationSettings {
                factor,
                min_bytes: e.min_bytes.unwrap_or(defaults.min_bytes),
            })
        })
}

/// The error-spike detector's settings (`monitoring.detection.error_spike`), if enabled.
pub(super) fn error_spike(
    monitoring: &RawMonitoring,
    problems: &mut Problems,
) -> Option<ErrorSpikeSettings> {
    let raw = monitoring.detection.as_ref()?.error_spike.as_ref()?;
    let path = "monitoring.detection.error_spike";
    let defaults = ErrorSpikeSettings::default();
    let factor = raw.factor.as_ref().map_or(defaults.factor, |f| f.value);
    let mut valid = true;
    if !(factor > 1.0 && factor.is_finite())
        && let Some(f) = &raw.factor
    {
        problems.add(
            format!("{path}.factor"),
            line_of(&f.referenced),
            "must be a number greater than 1",
        );
        valid = false;
    }
    let min_count = raw
        .min_count
        .as_ref()
        .map_or(defaults.min_count, |n| n.value);
    if min_count == 0
        && let Some(n) = &raw.min_count
    {
        problems.add(
            format!("{path}.min_count"),
            line_of(&n.referenced),
            "must be greater than 0",
        );
        valid = false;
    }
    let window = raw.window.map_or(defaults.window, |w| w.0);
    if window.is_zero() {
        problems.add(format!("{path}.window"), None, "must be longer than 0s");
        valid = false;
    }
    valid.then_some(ErrorSpikeSettings {
        factor,
        min_count,
        window,
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
