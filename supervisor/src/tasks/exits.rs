//! Exit monitoring: following each shim's events (exits, OOM kills) and
//! publishing them, each exit once (see `markers`); a shim that
//! dies has its init's exit reported from its record.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use berth_shim::protocol::{ExitInfo, ShimEvent};

use super::markers::{report_marker, MarkerPending};
use super::shim::ShimConn;
use super::{shim_alive, Exit, Task, Tasks};

impl Tasks {
    /// Follows the shim's events until the shim exits; a stream that
    /// breaks while the shim lives is opened again (the shim replays the
    /// exits it recorded, which are reported once).
    pub(super) async fn monitor(self: Arc<Self>, task: Arc<Task>) {
        loop {
            self.follow_events(&task).await;
            if task.deleting.load(Ordering::SeqCst) || !shim_alive(&task.dir) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // The shim is gone: after a delete, or because it died. An init
        // exit it never reported is reported now.
        if !task.deleting.load(Ordering::SeqCst) && task.exited().is_none() {
            tracing::warn!(namespace = %task.ns, container = %task.id, "the shim is gone");
            let exit = self.cleanup_dead_shim(&task).await;
            self.report_exit(&task, None, task.pid, exit).await;
        }
    }

    /// Reads one events stream of the shim until it ends or breaks.
    pub(super) async fn follow_events(&self, task: &Task) {
        let stream = match ShimConn::connect(&task.socket).await {
            Ok(conn) => conn.events().await,
            Err(e) => Err(e),
        };
        match stream {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(Some(ShimEvent::Exit {
                        exec_id,
                        pid,
                        exit_status,
                        exited_at,
                    })) => {
                        let exit = Exit::from_info(&ExitInfo {
                            exit_status,
                            exited_at,
                        });
                        let pid = pid.max(0) as u32;
                        self.report_exit(task, exec_id.as_deref(), pid, exit).await;
                    }
                    Ok(Some(ShimEvent::Oom)) => {
                        tracing::info!(namespace = %task.ns, container = %task.id, "oom kill");
                        task.oom.store(true, Ordering::SeqCst);
                        let attributes =
                            BTreeMap::from([("container_id".to_string(), task.id.clone())]);
                        self.publish(&task.ns, "/tasks/oom", attributes);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(container = %task.id, error = %e, "shim events");
                        break;
                    }
                }
            },
            Err(e) => tracing::debug!(container = %task.id, error = %e, "follow the shim"),
        }
    }

    /// Publishes `/tasks/exit` for a process, once across restarts (a
    /// marker file in the bundle records it), and makes the init's exit
    /// known to waiters.
    pub(super) async fn report_exit(
        &self,
        task: &Task,
        exec_id: Option<&str>,
        pid: u32,
        exit: Exit,
    ) {
        let _held = task.report.lock().await;
        if exec_id.is_none() && task.exited().is_some() {
            return;
        }
        let marker = report_marker(&task.dir, exec_id);
        let _gate = task.starting.lock().await;
        if !marker.exists() {
            let mut attributes = Self::attributes(task, exec_id, pid);
            exit.attributes(&mut attributes);
            // Counted before `deleting` is read: a delete that starts now
            // waits for this marker, or this sees the delete and writes none
            // (the bundle goes, and its markers with it).
            let pending = MarkerPending::new(&task.markers);
            if task.deleting.load(Ordering::SeqCst) {
                drop(pending);
                self.events
                    .enqueue(&task.ns, "/tasks/exit", attributes, None);
            } else {
                // Marked once recorded: a crash before then, or an event
                // that failed to be recorded, is reported again.
                let then = move |recorded: bool| {
                    if recorded {
                        if let Err(e) = std::fs::write(&marker, b"") {
                            tracing::warn!(path = %marker.display(), error = %e, "write the exit marker");
                        }
                    }
                    drop(pending);
                };
                self.events
                    .enqueue(&task.ns, "/tasks/exit", attributes, Some(Box::new(then)));
            }
        }
        if exec_id.is_none() {
            task.exit.send_replace(Some(exit));
        }
    }
}
