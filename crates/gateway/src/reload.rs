//! Reload triggers besides the admin API: SIGHUP and changes to the configuration file.

use crate::gateway::Gateway;
use notify::RecursiveMode;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Reloads on every SIGHUP.
pub fn on_sighup(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGHUP: {e}"))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            gateway.reload("sighup", true).await;
        }
    });
    Ok(())
}

/// The watcher stays active while this is alive.
pub struct FileWatch {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
}

/// Reloads when the configuration file, or a policy or data file it names, changes.
/// Directories are watched, not files, so editors that write a new file and rename it, and
/// Kubernetes ConfigMap symlink swaps, are seen too; a reload of unchanged content does
/// nothing. Files first referenced by a later reload are watched after a restart.
pub fn on_file_change(gateway: Arc<Gateway>, config_path: &Path) -> anyhow::Result<FileWatch> {
    let parent = |p: &Path| {
        p.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let dir = parent(config_path);
    // The configuration file and the files it references (policies, data) at start.
    let mut files = vec![config_path.to_path_buf()];
    files.extend(gateway.current().config.watched_files.iter().cloned());
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut dirs: Vec<std::path::PathBuf> = files.iter().map(|f| parent(f)).collect();
    dirs.sort();
    dirs.dedup();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(200),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            // Only the configuration file itself, or a ConfigMap's `..data`-style swap;
            // other files in the directory (an event log, say) must not cause reloads.
            let relevant = |path: &Path| {
                path.file_name().is_some_and(|n| {
                    names.iter().any(|name| name == n) || n.to_string_lossy().starts_with("..")
                })
            };
            if result.is_ok_and(|events| events.iter().any(|e| e.paths.iter().any(|p| relevant(p))))
            {
                let _ = tx.send(());
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    for dir in &dirs {
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            while rx.try_recv().is_ok() {}
            gateway.reload("file_change", false).await;
        }
    });
    Ok(FileWatch {
        _debouncer: debouncer,
    })
}
