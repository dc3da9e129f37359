//! The running gateway: the current configuration generation behind an `ArcSwap`, shared
//! state that outlives reloads (events, metrics, upstream pool), and the reload procedure.

use crate::config::{self, GatewayConfig};
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline};
use arc_swap::ArcSwap;
use portcullis::alert::Alerter;
use portcullis::event::{EventBus, EventType, SecurityEvent, Severity};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One configuration generation and the pipeline built from it. Requests hold the
/// generation they started with, so a reload never disturbs a request in flight.
pub struct Generation {
    /// The compiled configuration.
    pub config: GatewayConfig,
    /// Its pipeline.
    pub pipeline: Pipeline,
}

/// State shared by the listeners, the admin API and the reload triggers.
pub struct Gateway {
    config_path: PathBuf,
    current: ArcSwap<Generation>,
    /// Security events.
    pub events: Arc<EventBus>,
    /// Metrics.
    pub metrics: Metrics,
    /// State that outlives configuration generations (revocations, key sets).
    pub shared: config::Shared,
    last_text: tokio::sync::Mutex<String>,
    ready: AtomicBool,
    /// The alert sender of the current settings; kept across reloads that leave them alone.
    alerter: std::sync::Mutex<Option<Arc<Alerter>>>,
    /// Open dashboard sessions.
    pub sessions: crate::admin_session::Sessions,
    /// The span exporter of the current `monitoring.traces`, if any (read on every request,
    /// so without a lock).
    tracer: arc_swap::ArcSwapOption<crate::traces::Tracer>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration serves now.
    Applied {
        /// Settings that changed but only take effect after a restart.
        restart_needed: Vec<&'static str>,
    },
    /// The file had not changed.
    Unchanged,
    /// The new configuration was refused; the old one keeps serving.
    Refused(String),
}

impl Gateway {
    /// Loads `config_path` and prepares the first generation.
    pub fn start(config_path: PathBuf) -> anyhow::Result<Arc<Gateway>> {
        let text = config::read(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        // First pass only to learn where events go; the second opens logs and key sets.
        let probe = config::compile_text(&text, &config_path, &config::Shared::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let events = Arc::new(
            EventBus::start(probe.events.clone())
                .map_err(|e| anyhow::anyhow!("cannot open the security event sink: {e}"))?,
        );
        drop(probe);
        let shared = config::Shared::new(events.clone());
        let config = config::compile_text(&text, &config_path, &shared)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for warning in &config.warnings {
            eprintln!("portcullis: warning: {}: {}", warning.path, warning.message);
        }
        start_key_refreshers(&config);
        let text = fingerprint(&text, &config);
        config.activate();
        let pipeline = pipeline::build(&config, events.clone());
        let gateway = Arc::new(Gateway {
            config_path,
            current: ArcSwap::from_pointee(Generation { config, pipeline }),
            events,
            metrics: Metrics::new(),
            shared,
            last_text: tokio::sync::Mutex::new(text),
            ready: AtomicBool::new(false),
            alerter: std::sync::Mutex::new(None),
            sessions: crate::admin_session::Sessions::default(),
            tracer: arc_swap::ArcSwapOption::empty(),
        });
        gateway.install_alerts(&gateway.current().config);
        gateway.install_tracer(&gateway.current().config);
        Ok(gateway)
    }

    /// The generation new requests should use.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Whether configuration is loaded, the listeners accept, and every issuer's keys
    /// have been fetched at least once.
    pub fn is_ready(&self) -> bool {
        let generation = self.current();
        let config = &generation.config;
        self.ready.load(Ordering::Acquire)
            && config
                .authenticator
                .issuers()
                .iter()
                .all(|i| i.keys.is_loaded())
            && config.sessions.as_ref().is_none_or(|s| s.is_ready())
    }

    /// Marks the gateway ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Re-reads the configuration file and swaps it in if it is valid. `force` reloads
    /// even when the file is unchanged (an operator asked explicitly).
    pub async fn reload(&self, trigger: &'static str, force: bool) -> ReloadOutcome {
        let mut last_text = self.last_text.lock().await;
        let outcome = match config::read(&self.config_path).and_then(|text| {
            config::compile_text(&text, &self.config_path, &self.shared).map(|c| (text, c))
        }) {
            Err(error) => ReloadOutcome::Refused(error.to_string()),
            Ok((text, config)) if !force && fingerprint(&text, &config) == *last_text => {
                drop(config);
                ReloadOutcome::Unchanged
            }
            Ok((text, config)) => {
                let text = fingerprint(&text, &config);
                let old = self.current();
                let restart_needed = restart_needed(&old.config, &config);
                let pipeline = pipeline::build(&config, self.events.clone());
                config.activate();
                self.install_alerts(&config);
                self.install_tracer(&config);
                self.current
                    .store(Arc::new(Generation { config, pipeline }));
                *last_text = text;
                ReloadOutcome::Applied { restart_needed }
            }
        };
        self.report_reload(trigger, &outcome);
        outcome
    }

    /// Starts, replaces or stops the alert sender to match `config`. A replaced sender
    /// flushes its pending counts in the background.
    fn install_alerts(&self, config: &config::GatewayConfig) {
        let Ok(mut current) = self.alerter.lock() else {
            return;
        };
        let wanted = config.alerts.as_ref().map(|(settings, _)| settings);
        if current.as_ref().map(|a| a.settings()) == wanted {
            return;
        }
        let next = config
            .alerts
            .as_ref()
            .map(|(settings, client)| Alerter::start(settings.clone(), client.clone()));
        self.events.set_observer(
            next.clone()
                .map(|a| a as Arc<dyn portcullis::event::EventObserver>),
        );
        if let Some(old) = std::mem::replace(&mut *current, next) {
            tokio::spawn(async move { old.shutdown().await });
        }
    }

    /// Every second until `shutdown`: publishes the detector flags raised here to the shared
    /// rate-limit store, applies those other instances raised, and copies the shared
    /// reputation set (with `store: redis`).
    pub async fn exchange_flags(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let generation = self.current();
            let limiting = &generation.config.rate_limiting;
            limiting
                .limiter
                .exchange_flags(
                    &limiting.tracker,
                    limiting.settings.threat.redis_set.as_deref(),
                )
                .await;
        }
    }

    /// Starts, replaces or stops the span exporter to match `config`. A replaced exporter
    /// sends what it has queued, then stops.
    fn install_tracer(&self, config: &config::GatewayConfig) {
        // Reloads are serialised by the caller's lock on the configuration text.
        let current = self.tracer.load();
        let keep = match (current.as_deref(), &config.traces) {
            (Some(tracer), Some(settings)) => tracer.serves(settings),
            (None, None) => true,
            _ => false,
        };
        if keep {
            return;
        }
        self.tracer
            .store(config.traces.clone().and_then(|settings| {
                crate::traces::Tracer::start(settings)
                    .map_err(|e| eprintln!("portcullis: traces are off: {e}"))
                    .ok()
            }));
    }

    /// The span exporter, if traces are configured.
    pub fn tracer(&self) -> Option<Arc<crate::traces::Tracer>> {
        self.tracer.load_full()
    }

    /// The alert sender, if alerts are configured.
    pub fn alerter(&self) -> Option<Arc<Alerter>> {
        self.alerter.lock().ok().and_then(|a| a.clone())
    }

    /// Sends what alerts are pending (at shutdown).
    pub async fn stop_alerts(&self) {
        let alerter = self.alerter.lock().ok().and_then(|mut a| a.take());
        if let Some(alerter) = alerter {
            self.events.set_observer(None);
            alerter.shutdown().await;
        }
    }

    fn report_reload(&self, trigger: &'static str, outcome: &ReloadOutcome) {
        let (severity, reason, details) = match outcome {
            ReloadOutcome::Unchanged => return,
            ReloadOutcome::Applied { restart_needed } => (
                Severity::Low,
                "applied",
                serde_json::json!({ "trigger": trigger, "restart_needed": restart_needed }),
            ),
            ReloadOutcome::Refused(problems) => (
                Severity::High,
                "refused",
                serde_json::json!({ "trigger": trigger, "problems": problems.lines().collect::<Vec<_>>() }),
            ),
        };
        self.metrics
            .reload(matches!(outcome, ReloadOutcome::Applied { .. }));
        let mut event = SecurityEvent::new(EventType::ConfigReload, severity, reason);
        event.details = details;
        self.events.emit(event);
        match outcome {
            ReloadOutcome::Refused(problems) => {
                eprintln!(
                    "portcullis: configuration reload ({trigger}) refused; the previous configuration keeps serving:\n{problems}"
                );
            }
            _ => eprintln!("portcullis: configuration reloaded ({trigger})"),
        }
    }
}

/// The configuration text plus the content of every file it references: what "unchanged"
/// means for a reload triggered by a file change.
fn fingerprint(text: &str, config: &GatewayConfig) -> String {
    let mut all = text.to_string();
    for file in &config.watched_files {
        all.push('\0');
        all.push_str(&std::fs::read_to_string(file).unwrap_or_default());
    }
    all
}

/// Starts background fetching for remote key sets (once per key set, across reloads).
fn start_key_refreshers(config: &GatewayConfig) {
    for issuer in config.authenticator.issuers() {
        issuer.keys.spawn_refresher();
    }
}

/// Settings bound when the process started, which a reload cannot change.
fn restart_needed(old: &GatewayConfig, new: &GatewayConfig) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if old.listen != new.listen {
        fields.push("listen.address");
    }
    if old.tls.is_some() != new.tls.is_some() {
        // The listener keeps speaking what it started with; certificates, client CAs and
        // versions do change on reload.
        fields.push("listen.tls");
    }
    if old.admin.as_ref().map(|a| a.address) != new.admin.as_ref().map(|a| a.address) {
        fields.push("admin.address");
    }
    if old.events != new.events {
        fields.push("monitoring.events");
    }
    if old.server.max_connections != new.server.max_connections {
        fields.push("limits.max_connections");
    }
    fields
}
