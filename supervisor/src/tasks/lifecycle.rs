//! Create and delete: the bundle and its rootfs mount, starting the shim,
//! and cleaning up after it (a deleted task, a dead shim, a failed create).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use berth_client::trace::{self, Layer};
use berth_shim::client::StateDir;
use berth_shim::options::Options;
use berth_shim::protocol::{ExitInfo, ProcessState, Request, TraceLayer, TraceSpan, Traced};

use super::shim::{ShimConn, ShimError};
use super::{
    blocking, bundle, shim_alive, CreateOptions, Exit, Slot, Task, TaskError, TaskStatus, Tasks,
    MAX_SOCKET_PATH, SHIM_CALL_TIMEOUT,
};
use crate::containers;

impl Tasks {
    /// Creates the container's task; its init waits for [`Tasks::start`].
    pub async fn create(
        self: &Arc<Self>,
        ns: &str,
        id: &str,
        opts: CreateOptions,
    ) -> Result<u32, TaskError> {
        let key = (ns.to_string(), id.to_string());
        {
            let mut table = self.lock();
            if table.contains_key(&key) {
                return Err(TaskError::AlreadyExists(id.to_string()));
            }
            table.insert(key.clone(), Slot::Creating);
        }
        // Read once the id is reserved: a container delete holds it too.
        let created = match containers::get(&self.images, ns, id) {
            Ok(record) => self.create_task(ns, id, &record, &opts).await,
            Err(e) => Err(e.into()),
        };
        match created {
            Ok(task) => {
                let pid = task.pid;
                self.lock().insert(key, Slot::Ready(Arc::clone(&task)));
                tracing::info!(namespace = ns, container = id, pid, "task created");
                let tasks = Arc::clone(self);
                let task2 = Arc::clone(&task);
                tokio::spawn(async move { tasks.monitor(task2).await });
                self.publish(ns, "/tasks/create", Self::attributes(&task, None, pid));
                Ok(pid)
            }
            Err(e) => {
                self.lock().remove(&key);
                Err(e)
            }
        }
    }

    pub(super) async fn create_task(
        &self,
        ns: &str,
        id: &str,
        record: &containers::ContainerRecord,
        opts: &CreateOptions,
    ) -> Result<Arc<Task>, TaskError> {
        opts.check_log()?;
        let dir = self.dir(ns, id);
        let socket = dir.join("shim.sock");
        if StateDir::new(&dir).longest_socket().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(TaskError::Invalid {
                what: "container id",
                reason: format!(
                    "the shim socket {} would be longer than {MAX_SOCKET_PATH} bytes: use a shorter id or state directory",
                    socket.display()
                ),
            });
        }
        let (spec, terminal) = bundle::task_spec(&record.spec, &format!("/berth/{ns}/{id}"))?;
        let runtime = self.resolve_runtime(&record.runtime)?;
        let mounts = {
            let rx = self
                .images
                .meta
                .read()
                .map_err(|e| TaskError::Container(e.into()))?;
            self.images
                .snapshots
                .mounts(&rx, ns, &record.snapshot_key)
                .map_err(|e| TaskError::Container(e.into()))?
        };
        let mounts = if opts.volatile_rootfs {
            bundle::volatile(mounts)
        } else {
            mounts
        };
        let dir2 = dir.clone();
        let idmap = opts.rootfs_idmap.clone();
        let state = self.config.state.clone();
        let bundle_span = trace::span(Layer::Supervisor, "bundle written, rootfs mounted");
        blocking(move || {
            bundle::write(&dir2, &spec)?;
            if super::idmap::has_userns(&spec) {
                if let Err(e) = super::idmap::open_path_to(&state, &dir2) {
                    let _ = bundle::remove(&dir2);
                    return Err(e.into());
                }
            }
            if let Err(e) = bundle::mount_rootfs(&dir2, &mounts, idmap.as_ref()) {
                let _ = bundle::remove(&dir2);
                return Err(e.into());
            }
            Ok(())
        })
        .await?;
        drop(bundle_span);

        let mut shim_opts = Options::new(runtime, self.runtime_root(ns), &dir, id, &socket, &dir);
        shim_opts.no_stdin = !opts.stdin;
        shim_opts.log_max_size = (opts.log_max_size > 0).then_some(opts.log_max_size);
        shim_opts.log_file = opts.log_path.clone();
        shim_opts.log_max_files = opts.log_max_files.max(1);
        shim_opts.no_log = opts.no_log;
        shim_opts.log_format = opts.log_format;
        shim_opts.debug = tracing::enabled!(tracing::Level::DEBUG);
        shim_opts.trace = trace::active();
        let started = self.start_shim(ns, id, &shim_opts).await;
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                let dir2 = dir.clone();
                if let Err(re) = blocking(move || Ok(bundle::remove(&dir2)?)).await {
                    tracing::warn!(container = id, error = %re, "bundle of a failed create not removed");
                }
                return Err(e);
            }
        };
        Ok(Task::new(ns, id, dir, socket, pid, terminal, false))
    }

    /// Runs the shim, which returns once it serves and has created the
    /// container; the init's pid.
    pub(super) async fn start_shim(
        &self,
        ns: &str,
        id: &str,
        opts: &Options,
    ) -> Result<u32, TaskError> {
        let began = std::time::Instant::now();
        let spawn_span = trace::span(Layer::Supervisor, "berth-shim run (until it serves)");
        let out = tokio::process::Command::new(&self.config.shim)
            .args(opts.to_args())
            // systemd's notification socket is the supervisor's alone.
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .map_err(|e| TaskError::ShimStart {
                id: id.to_string(),
                reason: format!("run {}: {e}", self.config.shim.display()),
            })?;
        drop(spawn_span);
        let micros = began.elapsed().as_micros() as u64;
        tracing::debug!(container = id, micros, "shim started");
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let text = text.trim();
            let text = text.strip_prefix("berth-shim: ").unwrap_or(text);
            return Err(TaskError::ShimStart {
                id: id.to_string(),
                reason: if text.is_empty() {
                    format!("the shim exited with {}", out.status)
                } else {
                    text.to_string()
                },
            });
        }
        let state = async {
            let _span = trace::span(Layer::Supervisor, "shim state (the init's pid)");
            let mut conn = ShimConn::connect(&opts.socket).await?;
            let state = conn
                .call_as::<ProcessState>(&Request::State { exec_id: None })
                .await?;
            if opts.trace {
                // The shim was started with --trace, so it knows `trace`.
                let traced: Traced = conn.call_as(&Request::Trace).await?;
                trace::extend(shim_spans(traced.spans));
            }
            Ok::<_, ShimError>(state)
        };
        match tokio::time::timeout(SHIM_CALL_TIMEOUT, state).await {
            Ok(Ok(state)) => Ok(state.pid.unwrap_or(0).max(0) as u32),
            failed => {
                // The shim runs and the container exists: neither may
                // outlive the failed create.
                if let Ok(mut conn) = ShimConn::connect(&opts.socket).await {
                    let _ = conn.call(&Request::Shutdown { force: true }).await;
                }
                self.runtime_force_delete(ns, id).await;
                Err(match failed {
                    Ok(Err(e)) => TaskError::shim(id, e),
                    _ => TaskError::ShimStart {
                        id: id.to_string(),
                        reason: "the shim did not answer".to_string(),
                    },
                })
            }
        }
    }

    /// Deletes a stopped or never started task: its exit, once the shim,
    /// the runtime state, the rootfs mount and the bundle are gone.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<(u32, Exit), TaskError> {
        let task = self.task(ns, id)?;
        if task.deleting.swap(true, Ordering::SeqCst) {
            return Err(TaskError::WrongState {
                id: id.to_string(),
                status: "being deleted",
                why: "another delete is under way",
            });
        }
        let exit = match self.delete_shim(&task).await {
            Ok(exit) => exit,
            Err(e) => {
                task.deleting.store(false, Ordering::SeqCst);
                return Err(e);
            }
        };
        self.report_exit(&task, None, task.pid, exit.clone()).await;
        task.markers.idle().await;
        let dir = task.dir.clone();
        if tracing::enabled!(tracing::Level::DEBUG) {
            forward_shim_log(&dir, id);
        }
        let began = std::time::Instant::now();
        if let Err(e) = blocking(move || Ok(bundle::remove(&dir)?)).await {
            // A retry finds the shim gone and removes the bundle again.
            task.deleting.store(false, Ordering::SeqCst);
            return Err(e);
        }
        let micros = began.elapsed().as_micros() as u64;
        tracing::debug!(container = id, micros, "bundle removed");
        self.lock().remove(&(ns.to_string(), id.to_string()));
        let mut attributes = Self::attributes(&task, None, task.pid);
        exit.attributes(&mut attributes);
        self.publish(ns, "/tasks/delete", attributes);
        tracing::info!(
            namespace = ns,
            container = id,
            status = exit.status,
            "task deleted"
        );
        Ok((task.pid, exit))
    }

    pub(super) async fn delete_shim(&self, task: &Task) -> Result<Exit, TaskError> {
        let mut conn = match ShimConn::connect(&task.socket).await {
            Ok(conn) => conn,
            // The shim is gone: clean up after it.
            Err(_) if !shim_alive(&task.dir) => return Ok(self.cleanup_dead_shim(task).await),
            Err(e) => return Err(TaskError::shim(&task.id, e)),
        };
        let state: ProcessState = conn
            .call_as(&Request::State { exec_id: None })
            .await
            .map_err(|e| TaskError::shim(&task.id, e))?;
        let status = TaskStatus::from_shim(state.status);
        if matches!(status, TaskStatus::Running | TaskStatus::Paused) {
            return Err(TaskError::WrongState {
                id: task.id.clone(),
                status: status.name(),
                why: "kill it first",
            });
        }
        let info: ExitInfo = conn
            .call_as(&Request::Delete { exec_id: None })
            .await
            .map_err(|e| TaskError::shim(&task.id, e))?;
        Ok(Exit::from_info(&info))
    }

    /// Deletes what a dead shim left: the container (killed if it still
    /// runs) and its runtime state. Its exit, as recorded or unknown.
    pub(super) async fn cleanup_dead_shim(&self, task: &Task) -> Exit {
        self.runtime_force_delete(&task.ns, &task.id).await;
        if let Some(exit) = task.exited() {
            return exit;
        }
        let state = StateDir::new(&task.dir);
        let recorded = tokio::task::spawn_blocking(move || state.recorded_exit(None)).await;
        match recorded {
            Ok(Ok(Some(info))) => Exit::from_info(&info),
            _ => Exit::unknown(),
        }
    }

    /// `<runtime> delete --force <id>`, as the shim would; failures (the
    /// container is already gone) are logged.
    pub(super) async fn runtime_force_delete(&self, ns: &str, id: &str) {
        let runtime = match containers::get(&self.images, ns, id) {
            Ok(r) => self.resolve_runtime(&r.runtime).ok(),
            Err(_) => None,
        }
        .unwrap_or_else(|| self.config.runtime.clone());
        let out = tokio::process::Command::new(&runtime)
            .arg("--root")
            .arg(self.runtime_root(ns))
            .args(["delete", "--force", id])
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::debug!(
                container = id,
                stderr = %String::from_utf8_lossy(&o.stderr).trim(),
                "runtime delete --force"
            ),
            Err(e) => tracing::warn!(container = id, error = %e, "run the runtime"),
        }
    }
}

/// The shim's spans (its own and the runtime's) as the trace carries them.
pub(super) fn shim_spans(spans: Vec<TraceSpan>) -> Vec<trace::Span> {
    spans
        .into_iter()
        .map(|s| trace::Span {
            layer: match s.layer {
                TraceLayer::Shim => Layer::Shim,
                TraceLayer::Runtime => Layer::Runtime,
            },
            name: s.name,
            start_ns: s.start_ns,
            end_ns: s.end_ns,
        })
        .collect()
}

/// Copies a deleted task's shim log into the supervisor's (debug) log
/// before its directory goes: with `--debug` it holds the shim's steps and
/// its runtime commands with their durations.
fn forward_shim_log(dir: &std::path::Path, id: &str) {
    let Ok(text) = std::fs::read_to_string(dir.join("shim.log")) else {
        return;
    };
    for line in text.lines() {
        tracing::debug!(container = id, line, "shim log");
    }
}
