//! The webhook bodies: generic JSON (SPEC §4), PagerDuty Events API v2, Slack incoming
//! webhook.

use super::{AlertFormat, Outgoing};
use crate::event::Severity;
use serde_json::{Value, json};

/// The JSON body of `alert` in `format`.
pub(crate) fn body(format: AlertFormat, routing_key: Option<&str>, alert: &Outgoing) -> Value {
    match format {
        AlertFormat::Generic => generic(alert),
        AlertFormat::PagerDuty => pagerduty(routing_key.unwrap_or_default(), alert),
        AlertFormat::Slack => json!({ "text": one_line(alert) }),
    }
}

fn generic(alert: &Outgoing) -> Value {
    match alert {
        Outgoing::Alert {
            event,
            count,
            first_seen,
            last_seen,
            dedup_key,
        } => json!({
            "alert": event,
            "count": count,
            "first_seen": first_seen,
            "last_seen": last_seen,
            "dedup_key": dedup_key,
        }),
        Outgoing::Suppressed { count } => json!({
            "summary": "alerts over max_per_minute were not sent",
            "suppressed": count,
        }),
    }
}

fn pagerduty(routing_key: &str, alert: &Outgoing) -> Value {
    match alert {
        Outgoing::Alert {
            event,
            count,
            first_seen,
            last_seen,
            dedup_key,
        } => json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": one_line(alert),
                "source": "portcullis",
                "severity": match event.severity {
                    Severity::Critical => "critical",
                    Severity::High => "error",
                    Severity::Medium => "warning",
                    Severity::Low => "info",
                },
                "timestamp": last_seen,
                "class": event.event_type.as_str(),
                "custom_details": {
                    "event": event,
                    "count": count,
                    "first_seen": first_seen,
                },
            },
        }),
        Outgoing::Suppressed { count } => json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": "portcullis-suppressed",
            "payload": {
                "summary": one_line(alert),
                "source": "portcullis",
                "severity": "warning",
                "custom_details": { "suppressed": count },
            },
        }),
    }
}

/// A line a person reads in a chat or a pager.
fn one_line(alert: &Outgoing) -> String {
    match alert {
        Outgoing::Alert { event, count, .. } => {
            let mut line = format!(
                "[{}] {} ({})",
                format!("{:?}", event.severity).to_uppercase(),
                event.event_type.as_str(),
                event.reason
            );
            if let Some(ip) = &event.ip {
                line.push_str(&format!(" from {ip}"));
            }
            if let Some(endpoint) = &event.endpoint {
                let method = event.method.as_deref().unwrap_or("");
                line.push_str(&format!(" on {method} {endpoint}"));
            }
            if *count > 1 {
                line.push_str(&format!(", {count} times"));
            }
            line
        }
        Outgoing::Suppressed { count } => {
            format!("portcullis: {count} alerts over max_per_minute were not sent")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, SecurityEvent};

    fn alert() -> Outgoing {
        let mut event = SecurityEvent::new(EventType::AuthzDenied, Severity::High, "policy_denied");
        event.ip = Some("203.0.113.9".into());
        event.method = Some("DELETE".into());
        event.endpoint = Some("/api/items/{id}".into());
        Outgoing::Alert {
            first_seen: event.timestamp.clone(),
            last_seen: event.timestamp.clone(),
            event: Box::new(event),
            count: 3,
            dedup_key: "k".into(),
        }
    }

    #[test]
    fn each_format_has_its_fields() {
        let generic = body(AlertFormat::Generic, None, &alert());
        assert_eq!(generic["count"], 3);
        assert_eq!(generic["alert"]["reason"], "policy_denied");
        assert_eq!(generic["dedup_key"], "k");
        let pd = body(AlertFormat::PagerDuty, Some("R0UT1NG"), &alert());
        assert_eq!(pd["routing_key"], "R0UT1NG");
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["payload"]["severity"], "error");
        assert_eq!(pd["payload"]["source"], "portcullis");
        let slack = body(AlertFormat::Slack, None, &alert());
        assert_eq!(
            slack["text"],
            "[HIGH] authz_denied (policy_denied) from 203.0.113.9 on DELETE /api/items/{id}, 3 times"
        );
    }
}
