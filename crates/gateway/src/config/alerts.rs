//! `monitoring.alerts` compiled into the library's [`AlertSettings`].

use super::identity::remote_uri;
use super::raw::RawAlerts;
use super::secret::Resolver;
use super::{Problems, line_of};
use portcullis::alert::{AlertFormat, AlertSettings};
use portcullis::event::Severity;

/// The alert settings, or `None` (with every problem recorded).
pub(super) fn compile(
    raw: &RawAlerts,
    resolver: &Resolver,
    problems: &mut Problems,
) -> Option<AlertSettings> {
    let path = "monitoring.alerts";
    // The URL often carries the webhook's key, so it must be a secret reference.
    let webhook = resolver.secret(&format!("{path}.webhook"), &raw.webhook, problems);
    let webhook = webhook.filter(|url| match remote_uri(url.expose()) {
        Ok(_) => true,
        Err(message) => {
            problems.at(format!("{path}.webhook"), &raw.webhook, message);
            false
        }
    });
    let format = match raw.format.as_ref().map(|t| t.value.as_str()) {
        None | Some("generic") => Some(AlertFormat::Generic),
        Some("pagerduty") => Some(AlertFormat::PagerDuty),
        Some("slack") => Some(AlertFormat::Slack),
        Some(other) => {
            if let Some(text) = &raw.format {
                problems.at(
                    format!("{path}.format"),
                    text,
                    format!("unknown format `{other}` (use generic, pagerduty or slack)"),
                );
            }
            None
        }
    };
    let routing_key = match &raw.routing_key {
        Some(text) => Some(resolver.secret(&format!("{path}.routing_key"), text, problems)?),
        None => None,
    };
    if format == Some(AlertFormat::PagerDuty) && routing_key.is_none() {
        problems.add(
            format!("{path}.routing_key"),
            line_of(&raw.webhook.referenced),
            "the pagerduty format needs the integration's routing key (a secret reference)",
        );
    }
    // `None` below: not set (the library's default stays); a problem was recorded instead.
    let min_severity = match raw.min_severity.as_ref().map(|t| t.value.as_str()) {
        None => Some(None),
        Some("low") => Some(Some(Severity::Low)),
        Some("medium") => Some(Some(Severity::Medium)),
        Some("high") => Some(Some(Severity::High)),
        Some("critical") => Some(Some(Severity::Critical)),
        Some(other) => {
            if let Some(text) = &raw.min_severity {
                problems.at(
                    format!("{path}.min_severity"),
                    text,
                    format!("unknown severity `{other}` (use low, medium, high or critical)"),
                );
            }
            None
        }
    };
    let max_per_minute = match &raw.max_per_minute {
        None => Some(None),
        Some(n) if n.value == 0 => {
            problems.add(
                format!("{path}.max_per_minute"),
                line_of(&n.referenced),
                "must be greater than 0",
            );
            None
        }
        Some(n) => Some(Some(n.value)),
    };
    let (min_severity, max_per_minute) = (min_severity?, max_per_minute?);
    let mut settings = AlertSettings::new(webhook?, format?);
    settings.routing_key = routing_key;
    if let Some(severity) = min_severity {
        settings.min_severity = severity;
    }
    if let Some(window) = raw.dedup_window {
        settings.dedup_window = window.0;
    }
    if let Some(max) = max_per_minute {
        settings.max_per_minute = max;
    }
    Some(settings)
}
