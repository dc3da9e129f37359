//! [`Completer`]: how the decision log's writer thread tells a batch's callers that their
//! records are on disk.

use super::{Done, RecordError};

/// A batch's callers, each with the outcome of its record.
type Told = Vec<(Done, Result<(), RecordError>)>;

/// Tells a batch's callers their outcome. Waking each caller's task from the writer thread
/// costs a cross-thread wake-up (and often a context switch) per record; handing the whole
/// batch to one task on the runtime costs one per batch, and that task wakes the callers as
/// local tasks.
pub(super) struct Completer {
    batches: Option<tokio::sync::mpsc::UnboundedSender<Told>>,
}

impl Completer {
    /// A completer on the current runtime, or none (callers are then told from the writer).
    pub(super) fn start() -> Completer {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Completer { batches: None };
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Told>();
        runtime.spawn(async move {
            while let Some(batch) = rx.recv().await {
                for (done, result) in batch {
                    let _ = done.send(result);
                }
            }
        });
        Completer { batches: Some(tx) }
    }

    pub(super) fn complete(&self, batch: Told) {
        if batch.is_empty() {
            return;
        }
        let batch = match &self.batches {
            Some(tx) => match tx.send(batch) {
                Ok(()) => return,
                // The runtime is gone (shutting down): tell them from here.
                Err(returned) => returned.0,
            },
            None => batch,
        };
        for (done, result) in batch {
            let _ = done.send(result);
        }
    }
}
