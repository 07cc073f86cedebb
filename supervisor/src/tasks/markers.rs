//! Exit markers: an empty file in the bundle per process whose exit was
//! published (`exit.reported`, `exec-<id>.exit.reported`), so an exit is
//! published once across restarts; and the count of markers still to be
//! written, which a delete waits for before it removes the bundle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts the exit markers still to be written, so that the bundle is
/// removed only after them (a marker written into a directory being
/// removed would make its removal fail).
#[derive(Default)]
pub(super) struct MarkerWrites {
    pending: AtomicUsize,
    done: tokio::sync::Notify,
}

/// One pending marker write; done when dropped, so a follow-up that never
/// runs (its queue gone) cannot hold a delete up.
pub(super) struct MarkerPending(Arc<MarkerWrites>);

impl MarkerPending {
    pub(super) fn new(markers: &Arc<MarkerWrites>) -> MarkerPending {
        markers.pending.fetch_add(1, Ordering::SeqCst);
        MarkerPending(Arc::clone(markers))
    }
}

impl Drop for MarkerPending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

impl MarkerWrites {
    /// Returns once no marker is pending.
    pub(super) async fn idle(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The marker of a process's published exit.
pub(super) fn report_marker(dir: &Path, exec_id: Option<&str>) -> PathBuf {
    match exec_id {
        None => dir.join("exit.reported"),
        Some(e) => dir.join(format!("exec-{e}.exit.reported")),
    }
}
