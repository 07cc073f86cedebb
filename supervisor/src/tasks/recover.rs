//! Restart recovery: after the supervisor restarts, each shim's directory
//! is found; a live shim is reattached, a dead one cleaned up after (its
//! init's exit reported from its record), and the shim of a deleted
//! container shut down.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use berth_shim::client::StateDir;
use berth_shim::protocol::{ProcessState, Request};

use super::shim::ShimConn;
use super::{
    blocking, bundle, shim_alive, timed_out, Slot, Task, TaskError, Tasks, SHIM_CALL_TIMEOUT,
};
use crate::metadata::{Reader, Table};

impl Tasks {
    /// Reattaches to the shims that outlived the previous supervisor and
    /// cleans up after the ones that did not.
    pub async fn recover(self: &Arc<Self>) -> Result<(), TaskError> {
        let root = self.config.state.join("shims");
        let found = blocking(move || Ok(list_bundles(&root))).await?;
        // All at once: a shim that does not answer holds up only itself.
        let recovering = found.into_iter().map(|(ns, id, dir)| async move {
            if let Err(e) = self.recover_one(&ns, &id, dir).await {
                tracing::warn!(namespace = %ns, container = %id, error = %e, "task not recovered");
            }
        });
        futures_util::future::join_all(recovering).await;
        Ok(())
    }

    pub(super) async fn recover_one(
        self: &Arc<Self>,
        ns: &str,
        id: &str,
        dir: PathBuf,
    ) -> Result<(), TaskError> {
        let has_container = {
            let rx = self
                .images
                .meta
                .read()
                .map_err(|e| TaskError::Container(e.into()))?;
            rx.exists(Table::Containers, ns, id)
                .map_err(|e| TaskError::Container(e.into()))?
        };
        let socket = dir.join("shim.sock");
        let state = async {
            let mut conn = ShimConn::connect(&socket).await?;
            conn.call_as::<ProcessState>(&Request::State { exec_id: None })
                .await
        };
        let live = match tokio::time::timeout(SHIM_CALL_TIMEOUT, state).await {
            Ok(Ok(state)) => Some(state),
            // Dead: cleaned up below.
            _ if !shim_alive(&dir) => None,
            // Alive but not answering as it should: left alone.
            Ok(Err(e)) => return Err(TaskError::shim(id, e)),
            Err(_) => return Err(timed_out(id, &socket)),
        };
        let pid = match &live {
            Some(state) => state.pid.unwrap_or(0).max(0) as u32,
            None => StateDir::new(&dir).init_pid().unwrap_or(0).max(0) as u32,
        };
        let terminal = live.as_ref().is_some_and(|s| s.terminal);
        let task = Task::new(ns, id, dir.clone(), socket, pid, terminal, true);
        match (live, has_container) {
            (Some(_), true) => {
                tracing::info!(
                    namespace = ns,
                    container = id,
                    pid,
                    "reattached to the shim"
                );
                self.lock().insert(
                    (ns.to_string(), id.to_string()),
                    Slot::Ready(Arc::clone(&task)),
                );
                let tasks = Arc::clone(self);
                tokio::spawn(async move { tasks.monitor(task).await });
            }
            (Some(_), false) => {
                tracing::warn!(
                    namespace = ns,
                    container = id,
                    "shim of a deleted container: shutting it down"
                );
                task.deleting.store(true, Ordering::SeqCst);
                if let Err(e) = task.call(&Request::Shutdown { force: true }).await {
                    tracing::warn!(container = id, error = %e, "shut the shim down");
                }
                self.runtime_force_delete(ns, id).await;
                blocking(move || Ok(bundle::remove(&dir)?)).await?;
            }
            (None, _) => {
                tracing::warn!(
                    namespace = ns,
                    container = id,
                    "the shim is gone: cleaning up"
                );
                task.deleting.store(true, Ordering::SeqCst);
                let exit = self.cleanup_dead_shim(&task).await;
                if has_container {
                    self.report_exit(&task, None, pid, exit.clone()).await;
                }
                task.markers.idle().await;
                blocking(move || Ok(bundle::remove(&dir)?)).await?;
                if has_container {
                    let mut attributes = Self::attributes(&task, None, pid);
                    exit.attributes(&mut attributes);
                    self.publish(ns, "/tasks/delete", attributes);
                }
            }
        }
        Ok(())
    }
}

/// `(namespace, id, dir)` of every bundle under `root`.
fn list_bundles(root: &Path) -> Vec<(String, String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(root) else {
        return found;
    };
    for ns in namespaces.flatten() {
        let Ok(ids) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        let Some(ns_name) = ns.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        for id in ids.flatten() {
            if let Some(name) = id.file_name().to_str() {
                found.push((ns_name.clone(), name.to_string(), id.path()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn bundles_are_listed_by_namespace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/c1")).unwrap();
        std::fs::create_dir_all(dir.path().join("b/c2")).unwrap();
        let mut found: Vec<(String, String)> = list_bundles(dir.path())
            .into_iter()
            .map(|(n, i, _)| (n, i))
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![("a".into(), "c1".into()), ("b".into(), "c2".into())]
        );
        assert!(list_bundles(&dir.path().join("missing")).is_empty());
    }
}
