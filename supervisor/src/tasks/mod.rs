//! Tasks: a container's processes, each container's held by a berth-shim.
//!
//! Create writes the bundle under `<state>/shims/<ns>/<id>/` (the spec, and
//! the container's snapshot mounted on `rootfs/`) and starts `berth-shim`
//! there, which creates the container with the runtime (its state under
//! `<state>/runtime/<ns>/`). The shim is the container's parent and outlives
//! the supervisor; the supervisor talks to it over its control socket, one
//! connection per call, and follows its events (exits, OOM kills) on one
//! more connection per task, publishing them as `/tasks/*` events.
//!
//! After a restart [`Tasks::recover`] scans the shims' directories: a live
//! shim is reattached and replays the exits it recorded (an exit that
//! happened while the supervisor was down is published then, once: a marker
//! file records that it was); a dead shim's container is deleted with the
//! runtime, its exit reported from its record, and its bundle removed; a
//! shim whose container record is gone is shut down and removed.

pub mod bundle;
pub mod shim;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_shim::client::StateDir;
use berth_shim::options::{valid_id, Options};
use berth_shim::protocol::{
    ErrorKind, ExitInfo, Pids, ProcessState, Refusal, Request, ShimEvent, Started, Status,
};
use serde_json::Value;
use tokio::sync::watch;

use crate::containers::{self, ContainerError, DEFAULT_RUNTIME};
use crate::events::Exchange;
use crate::images::Images;
use crate::metadata::{Reader, Table};
use bundle::BundleError;
use shim::{AttachInput, AttachOutput, ShimConn, ShimError};

/// Longest unix socket path (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long the supervisor waits for a shim's state at a restart or in a
/// list (its runtime commands take milliseconds; a shim stuck longer is
/// reported, not waited for).
const SHIM_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a call to a shim may take: more than the shim gives a runtime
/// command (two minutes).
const SHIM_RUNTIME_DEADLINE: std::time::Duration = std::time::Duration::from_secs(150);
/// Exit status reported for a process whose shim died without recording
/// its exit (containerd reports the same).
const UNKNOWN_EXIT: i32 = 255;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0:?} not found")]
    NotFound(String),
    #[error("container {0:?} already has a task")]
    AlreadyExists(String),
    #[error("task {id:?} is {status}: {why}")]
    WrongState {
        id: String,
        status: &'static str,
        why: &'static str,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("runtime {name:?} not found: give an absolute path or a program on PATH")]
    RuntimeNotFound { name: String },
    #[error("start the shim of {id:?}: {reason}")]
    ShimStart { id: String, reason: String },
    /// The shim refused the request: `kind` says why.
    #[error("task {id:?}: {message}")]
    Refused {
        id: String,
        kind: ErrorKind,
        message: String,
    },
    #[error("task {id:?}: {source}")]
    Shim { id: String, source: ShimError },
}

impl TaskError {
    fn shim(id: &str, e: ShimError) -> TaskError {
        match e {
            ShimError::Refused(Refusal { kind, message }) => TaskError::Refused {
                id: id.to_string(),
                kind,
                message,
            },
            source => TaskError::Shim {
                id: id.to_string(),
                source,
            },
        }
    }
}

/// Where the supervisor keeps tasks and which programs run them.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Runtime state: `shims/<ns>/<id>/` and `runtime/<ns>/`.
    pub state: PathBuf,
    /// The `berth-shim` binary.
    pub shim: PathBuf,
    /// What the runtime name `berth-runtime` means.
    pub runtime: PathBuf,
}

impl TaskConfig {
    /// `berth-shim` and `berth-runtime` next to the running executable when
    /// they are there, else found on PATH.
    pub fn beside_executable(state: PathBuf) -> TaskConfig {
        let near = |name: &str| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join(name)))
                .filter(|p| p.is_file())
                .or_else(|| find_on_path(name))
                .unwrap_or_else(|| PathBuf::from(name))
        };
        TaskConfig {
            state,
            shim: near("berth-shim"),
            runtime: near(DEFAULT_RUNTIME),
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128+N when signal N killed it.
    pub status: i32,
    pub at: SystemTime,
}

impl Exit {
    fn from_info(info: &ExitInfo) -> Exit {
        Exit {
            status: info.exit_status,
            at: info.exited_at_time().unwrap_or_else(SystemTime::now),
        }
    }

    fn unknown() -> Exit {
        Exit {
            status: UNKNOWN_EXIT,
            at: SystemTime::now(),
        }
    }

    fn attributes(&self, attributes: &mut BTreeMap<String, String>) {
        attributes.insert("exit_status".into(), self.status.to_string());
        attributes.insert(
            "exited_at".into(),
            berth_shim::time::format_rfc3339(self.at),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// The shim cannot be reached and no exit is recorded.
    Unknown,
    Created,
    Running,
    Paused,
    Stopped,
}

impl TaskStatus {
    fn from_shim(status: Status) -> TaskStatus {
        match status {
            Status::Created => TaskStatus::Created,
            Status::Running => TaskStatus::Running,
            Status::Paused => TaskStatus::Paused,
            Status::Stopped => TaskStatus::Stopped,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TaskStatus::Unknown => "unknown",
            TaskStatus::Created => "created",
            TaskStatus::Running => "running",
            TaskStatus::Paused => "paused",
            TaskStatus::Stopped => "stopped",
        }
    }
}

/// A task's init or one of its exec'd processes.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub container_id: String,
    pub exec_id: Option<String>,
    pub pid: u32,
    pub status: TaskStatus,
    pub terminal: bool,
    pub exit: Option<Exit>,
}

/// A task's cgroup metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub memory_usage: u64,
    pub memory_max_usage: u64,
    pub memory_limit: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// The runtime's report, JSON.
    pub raw: Value,
}

impl Stats {
    /// Reads `berth-runtime events --stats` output (`{"data": {...}}` or
    /// the data itself), for cgroup v1 and v2 alike.
    pub fn from_runtime(raw: Value) -> Stats {
        let data = raw.get("data").unwrap_or(&raw);
        let n = |path: &str| data.pointer(path).and_then(Value::as_u64).unwrap_or(0);
        // cgroup v1 reports "no limit" as a huge number, v2 as u64::MAX.
        let limit = |v: u64| if v >= 1 << 62 { 0 } else { v };
        let io = |op: &str| {
            data.pointer("/blkio/ioServiceBytesRecursive")
                .and_then(Value::as_array)
                .map(|entries| {
                    entries
                        .iter()
                        .filter(|e| {
                            e.get("op")
                                .and_then(Value::as_str)
                                .is_some_and(|o| o.eq_ignore_ascii_case(op))
                        })
                        .filter_map(|e| e.get("value").and_then(Value::as_u64))
                        .sum()
                })
                .unwrap_or(0)
        };
        Stats {
            cpu_usage_ns: n("/cpu/usage/total"),
            cpu_user_ns: n("/cpu/usage/user"),
            cpu_system_ns: n("/cpu/usage/kernel"),
            memory_usage: n("/memory/usage/usage"),
            memory_max_usage: n("/memory/usage/max"),
            memory_limit: limit(n("/memory/usage/limit")),
            pids_current: n("/pids/current"),
            pids_limit: limit(n("/pids/limit")),
            io_read_bytes: io("read"),
            io_write_bytes: io("write"),
            raw,
        }
    }
}

/// What a task is created with.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Give the init a stdin pipe (a terminal always has one).
    pub stdin: bool,
    /// Rotate the container log past this size; 0: never.
    pub log_max_size: u64,
}

struct Task {
    ns: String,
    id: String,
    dir: PathBuf,
    socket: PathBuf,
    pid: u32,
    terminal: bool,
    /// The init's exit, once reported.
    exit: watch::Sender<Option<Exit>>,
    /// Held while an exit is checked and queued.
    report: tokio::sync::Mutex<()>,
    deleting: AtomicBool,
    /// Exit markers queued to be written into the bundle.
    markers: Arc<MarkerWrites>,
    /// Held while a process starts, so its exit is published after.
    starting: tokio::sync::Mutex<()>,
}

/// Counts the exit markers still to be written, so that the bundle is
/// removed only after them (a marker written into a directory being
/// removed would make its removal fail).
#[derive(Default)]
struct MarkerWrites {
    pending: AtomicUsize,
    done: tokio::sync::Notify,
}

/// One pending marker write; done when dropped, so a follow-up that never
/// runs (its queue gone) cannot hold a delete up.
struct MarkerPending(Arc<MarkerWrites>);

impl MarkerPending {
    fn new(markers: &Arc<MarkerWrites>) -> MarkerPending {
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
    async fn idle(&self) {
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

impl Task {
    fn new(
        ns: &str,
        id: &str,
        dir: PathBuf,
        socket: PathBuf,
        pid: u32,
        terminal: bool,
    ) -> Arc<Task> {
        let (exit, _) = watch::channel(None);
        Arc::new(Task {
            ns: ns.to_string(),
            id: id.to_string(),
            dir,
            socket,
            pid,
            terminal,
            exit,
            report: tokio::sync::Mutex::new(()),
            deleting: AtomicBool::new(false),
            markers: Arc::default(),
            starting: tokio::sync::Mutex::new(()),
        })
    }

    async fn conn(&self) -> Result<ShimConn, TaskError> {
        ShimConn::connect(&self.socket)
            .await
            .map_err(|e| TaskError::shim(&self.id, e))
    }

    async fn call(&self, request: &Request) -> Result<Value, TaskError> {
        self.call_as(request).await
    }

    /// One request to the shim. Only a wait may take as long as the
    /// process: anything else is answered within the shim's own deadline
    /// for runtime commands, and a shim that does not (stopped, stuck) is
    /// reported rather than waited for.
    async fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request,
    ) -> Result<T, TaskError> {
        let work = async {
            let mut conn = self.conn().await?;
            conn.call_as(request)
                .await
                .map_err(|e| TaskError::shim(&self.id, e))
        };
        if matches!(request, Request::Wait { .. }) {
            return work.await;
        }
        tokio::time::timeout(SHIM_RUNTIME_DEADLINE, work)
            .await
            .unwrap_or_else(|_| Err(timed_out(&self.id, &self.socket)))
    }

    fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Refuses work that needs a live init.
    fn check_alive(&self, why: &'static str) -> Result<(), TaskError> {
        if self.exited().is_some() {
            return Err(TaskError::WrongState {
                id: self.id.clone(),
                status: "stopped",
                why,
            });
        }
        Ok(())
    }
}

fn report_marker(dir: &Path, exec_id: Option<&str>) -> PathBuf {
    match exec_id {
        None => dir.join("exit.reported"),
        Some(e) => dir.join(format!("exec-{e}.exit.reported")),
    }
}

enum Slot {
    /// A create is under way.
    Creating,
    /// The container is being deleted: no task may start meanwhile.
    Held,
    Ready(Arc<Task>),
}

/// Keeps a container without a task while it is deleted (see
/// [`Tasks::hold`]); released when dropped.
pub struct Hold {
    tasks: Arc<Tasks>,
    key: (String, String),
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.tasks.lock().remove(&self.key);
    }
}

/// The tasks of every namespace.
pub struct Tasks {
    config: TaskConfig,
    images: Arc<Images>,
    events: Arc<Exchange>,
    table: Mutex<HashMap<(String, String), Slot>>,
}

fn check_exec_id(exec_id: &str) -> Result<(), TaskError> {
    if valid_id(exec_id) && exec_id.len() <= 128 {
        Ok(())
    } else {
        Err(TaskError::Invalid {
            what: "exec id",
            reason: format!("{exec_id:?}: use 1-128 letters, digits, '_', '-' and '.', not starting with '.' or '-'"),
        })
    }
}

impl Tasks {
    pub fn new(config: TaskConfig, images: Arc<Images>, events: Arc<Exchange>) -> Arc<Tasks> {
        Arc::new(Tasks {
            config,
            images,
            events,
            table: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Slot>> {
        // The table holds no invariant a panic could break halfway.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dir(&self, ns: &str, id: &str) -> PathBuf {
        self.config.state.join("shims").join(ns).join(id)
    }

    fn runtime_root(&self, ns: &str) -> PathBuf {
        self.config.state.join("runtime").join(ns)
    }

    fn task(&self, ns: &str, id: &str) -> Result<Arc<Task>, TaskError> {
        match self.lock().get(&(ns.to_string(), id.to_string())) {
            Some(Slot::Ready(t)) => Ok(Arc::clone(t)),
            _ => Err(TaskError::NotFound(id.to_string())),
        }
    }

    /// Reserves a container that has no task, so that none is created
    /// while it is deleted; `None` when it has a task (or one is being
    /// created).
    pub fn hold(self: &Arc<Self>, ns: &str, id: &str) -> Option<Hold> {
        let key = (ns.to_string(), id.to_string());
        let mut table = self.lock();
        if table.contains_key(&key) {
            return None;
        }
        table.insert(key.clone(), Slot::Held);
        Some(Hold {
            tasks: Arc::clone(self),
            key,
        })
    }

    fn resolve_runtime(&self, name: &str) -> Result<PathBuf, TaskError> {
        let found = if name == DEFAULT_RUNTIME {
            Some(self.config.runtime.clone())
        } else if name.starts_with('/') {
            Some(PathBuf::from(name)).filter(|p| p.is_file())
        } else if !name.contains('/') {
            find_on_path(name)
        } else {
            None
        };
        found.ok_or_else(|| TaskError::RuntimeNotFound {
            name: name.to_string(),
        })
    }

    /// Queues an event (see `Exchange::enqueue`): in order, without
    /// waiting for the disk.
    fn publish(&self, ns: &str, topic: &str, attributes: BTreeMap<String, String>) {
        self.events.enqueue(ns, topic, attributes, None)
    }

    fn attributes(task: &Task, exec_id: Option<&str>, pid: u32) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            ("container_id".to_string(), task.id.clone()),
            ("pid".to_string(), pid.to_string()),
        ]);
        if let Some(e) = exec_id {
            a.insert("exec_id".into(), e.to_string());
        }
        a
    }

    // -----------------------------------------------------------------
    // Create and delete

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

    async fn create_task(
        &self,
        ns: &str,
        id: &str,
        record: &containers::ContainerRecord,
        opts: &CreateOptions,
    ) -> Result<Arc<Task>, TaskError> {
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
        let dir2 = dir.clone();
        blocking(move || {
            bundle::write(&dir2, &spec)?;
            if let Err(e) = bundle::mount_rootfs(&dir2, &mounts) {
                let _ = bundle::remove(&dir2);
                return Err(e.into());
            }
            Ok(())
        })
        .await?;

        let mut shim_opts = Options::new(runtime, self.runtime_root(ns), &dir, id, &socket, &dir);
        shim_opts.no_stdin = !opts.stdin;
        shim_opts.log_max_size = (opts.log_max_size > 0).then_some(opts.log_max_size);
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
        Ok(Task::new(ns, id, dir, socket, pid, terminal))
    }

    /// Runs the shim, which returns once it serves and has created the
    /// container; the init's pid.
    async fn start_shim(&self, ns: &str, id: &str, opts: &Options) -> Result<u32, TaskError> {
        let out = tokio::process::Command::new(&self.config.shim)
            .args(opts.to_args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .map_err(|e| TaskError::ShimStart {
                id: id.to_string(),
                reason: format!("run {}: {e}", self.config.shim.display()),
            })?;
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
            let mut conn = ShimConn::connect(&opts.socket).await?;
            conn.call_as::<ProcessState>(&Request::State { exec_id: None })
                .await
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
        if let Err(e) = blocking(move || Ok(bundle::remove(&dir)?)).await {
            // A retry finds the shim gone and removes the bundle again.
            task.deleting.store(false, Ordering::SeqCst);
            return Err(e);
        }
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

    async fn delete_shim(&self, task: &Task) -> Result<Exit, TaskError> {
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
    async fn cleanup_dead_shim(&self, task: &Task) -> Exit {
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
    async fn runtime_force_delete(&self, ns: &str, id: &str) {
        let runtime = match containers::get(&self.images, ns, id) {
            Ok(r) => self.resolve_runtime(&r.runtime).ok(),
            Err(_) => None,
        }
        .unwrap_or_else(|| self.config.runtime.clone());
        let out = tokio::process::Command::new(&runtime)
            .arg("--root")
            .arg(self.runtime_root(ns))
            .args(["delete", "--force", id])
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

    // -----------------------------------------------------------------
    // Exits and OOM kills

    /// Follows the shim's events until the shim exits; a stream that
    /// breaks while the shim lives is opened again (the shim replays the
    /// exits it recorded, which are reported once).
    async fn monitor(self: Arc<Self>, task: Arc<Task>) {
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
    async fn follow_events(&self, task: &Task) {
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
    async fn report_exit(&self, task: &Task, exec_id: Option<&str>, pid: u32, exit: Exit) {
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

    // -----------------------------------------------------------------
    // Restart

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

    async fn recover_one(
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
        let task = Task::new(ns, id, dir.clone(), socket, pid, terminal);
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

    // -----------------------------------------------------------------
    // Processes

    /// Starts the init, or a registered exec'd process; its pid.
    pub async fn start(&self, ns: &str, id: &str, exec_id: Option<&str>) -> Result<u32, TaskError> {
        let task = self.task(ns, id)?;
        // Held until the start is queued: an exit that comes meanwhile is
        // queued after it.
        let _gate = task.starting.lock().await;
        let started: Started = match exec_id {
            None => task.call_as(&Request::Start).await?,
            Some(e) => {
                task.check_alive("cannot start a process in it")?;
                task.call_as(&Request::StartExec {
                    exec_id: e.to_string(),
                })
                .await?
            }
        };
        let pid = started.pid.max(0) as u32;
        let topic = if exec_id.is_some() {
            "/tasks/exec-started"
        } else {
            "/tasks/start"
        };
        self.publish(ns, topic, Self::attributes(&task, exec_id, pid));
        Ok(pid)
    }

    /// Registers a process (an OCI `process` object, JSON) to run in the
    /// task at `start`.
    pub async fn exec(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        process: &[u8],
        terminal: bool,
        stdin: bool,
    ) -> Result<(), TaskError> {
        check_exec_id(exec_id)?;
        let process: Value = serde_json::from_slice(process).map_err(|e| TaskError::Invalid {
            what: "process",
            reason: e.to_string(),
        })?;
        if !process.is_object() {
            return Err(TaskError::Invalid {
                what: "process",
                reason: "not a JSON object".into(),
            });
        }
        let task = self.task(ns, id)?;
        task.check_alive("cannot exec in it")?;
        task.call(&Request::Exec {
            exec_id: exec_id.to_string(),
            process,
            terminal,
        })
        .await?;
        if !stdin && !terminal {
            task.call(&Request::CloseStdin {
                exec_id: Some(exec_id.to_string()),
            })
            .await?;
        }
        let mut attributes = Self::attributes(&task, Some(exec_id), 0);
        attributes.remove("pid");
        self.publish(ns, "/tasks/exec-added", attributes);
        Ok(())
    }

    /// Forgets an exited exec'd process; its exit.
    pub async fn delete_process(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
    ) -> Result<(u32, Exit), TaskError> {
        check_exec_id(exec_id)?;
        let task = self.task(ns, id)?;
        let state: ProcessState = task
            .call_as(&Request::State {
                exec_id: Some(exec_id.to_string()),
            })
            .await?;
        let info: ExitInfo = task
            .call_as(&Request::Delete {
                exec_id: Some(exec_id.to_string()),
            })
            .await?;
        // Its marker may still be on its way: removed once written.
        task.markers.idle().await;
        let _ = std::fs::remove_file(report_marker(&task.dir, Some(exec_id)));
        Ok((state.pid.unwrap_or(0).max(0) as u32, Exit::from_info(&info)))
    }

    pub async fn get(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
    ) -> Result<ProcessInfo, TaskError> {
        if let Some(e) = exec_id {
            check_exec_id(e)?;
        }
        let task = self.task(ns, id)?;
        self.process_info(&task, exec_id).await
    }

    async fn process_info(
        &self,
        task: &Task,
        exec_id: Option<&str>,
    ) -> Result<ProcessInfo, TaskError> {
        let request = Request::State {
            exec_id: exec_id.map(str::to_owned),
        };
        let state =
            match tokio::time::timeout(SHIM_CALL_TIMEOUT, task.call_as::<ProcessState>(&request))
                .await
            {
                Ok(state) => state,
                Err(_) => Err(timed_out(&task.id, &task.socket)),
            };
        match state {
            Ok(s) => Ok(ProcessInfo {
                container_id: task.id.clone(),
                exec_id: exec_id.map(str::to_owned),
                pid: s.pid.unwrap_or(0).max(0) as u32,
                status: TaskStatus::from_shim(s.status),
                terminal: s.terminal,
                exit: s.exit_status.map(|status| Exit {
                    status,
                    at: s
                        .exited_at
                        .as_deref()
                        .and_then(berth_shim::time::parse_rfc3339)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                }),
            }),
            // The shim cannot be reached: what the supervisor knows.
            Err(TaskError::Shim { .. }) if exec_id.is_none() => {
                let exit = task.exited();
                Ok(ProcessInfo {
                    container_id: task.id.clone(),
                    exec_id: None,
                    pid: task.pid,
                    status: if exit.is_some() {
                        TaskStatus::Stopped
                    } else {
                        TaskStatus::Unknown
                    },
                    terminal: task.terminal,
                    exit,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The inits of the namespace's tasks.
    pub async fn list(&self, ns: &str) -> Vec<ProcessInfo> {
        let tasks: Vec<Arc<Task>> = self
            .lock()
            .iter()
            .filter(|((n, _), _)| n == ns)
            .filter_map(|(_, slot)| match slot {
                Slot::Ready(t) => Some(Arc::clone(t)),
                Slot::Creating | Slot::Held => None,
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(info) = self.process_info(&task, None).await {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        out
    }

    pub async fn kill(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
        signal: u32,
        all: bool,
    ) -> Result<(), TaskError> {
        let signal = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| TaskError::Invalid {
                what: "signal",
                reason: format!("{signal} is not a signal number (1-64)"),
            })?;
        let task = self.task(ns, id)?;
        task.call(&Request::Kill {
            signal,
            all,
            exec_id: exec_id.map(str::to_owned),
        })
        .await
        .map(drop)
    }

    /// Returns once the process has exited.
    pub async fn wait(&self, ns: &str, id: &str, exec_id: Option<&str>) -> Result<Exit, TaskError> {
        let task = self.task(ns, id)?;
        match exec_id {
            None => {
                let mut rx = task.exit.subscribe();
                let exit = rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| TaskError::NotFound(id.to_string()))?;
                Ok(exit.clone().unwrap_or_else(Exit::unknown))
            }
            Some(e) => {
                let info: ExitInfo = task
                    .call_as(&Request::Wait {
                        exec_id: Some(e.to_string()),
                    })
                    .await?;
                Ok(Exit::from_info(&info))
            }
        }
    }

    pub async fn resize(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
        width: u32,
        height: u32,
    ) -> Result<(), TaskError> {
        let size = |v: u32, what| {
            u16::try_from(v).map_err(|_| TaskError::Invalid {
                what,
                reason: format!("{v} is more than {}", u16::MAX),
            })
        };
        let (width, height) = (size(width, "width")?, size(height, "height")?);
        self.task(ns, id)?
            .call(&Request::Resize {
                exec_id: exec_id.map(str::to_owned),
                width,
                height,
            })
            .await
            .map(drop)
    }

    pub async fn close_stdin(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
    ) -> Result<(), TaskError> {
        self.task(ns, id)?
            .call(&Request::CloseStdin {
                exec_id: exec_id.map(str::to_owned),
            })
            .await
            .map(drop)
    }

    pub async fn pause(&self, ns: &str, id: &str) -> Result<(), TaskError> {
        let task = self.task(ns, id)?;
        task.check_alive("cannot pause it")?;
        task.call(&Request::Pause).await?;
        self.publish(ns, "/tasks/paused", Self::attributes(&task, None, task.pid));
        Ok(())
    }

    pub async fn resume(&self, ns: &str, id: &str) -> Result<(), TaskError> {
        let task = self.task(ns, id)?;
        task.check_alive("cannot resume it")?;
        task.call(&Request::Resume).await?;
        self.publish(
            ns,
            "/tasks/resumed",
            Self::attributes(&task, None, task.pid),
        );
        Ok(())
    }

    pub async fn pids(&self, ns: &str, id: &str) -> Result<Vec<u32>, TaskError> {
        let task = self.task(ns, id)?;
        let pids: Pids = task.call_as(&Request::Pids).await?;
        Ok(pids.pids.into_iter().map(|p| p.max(0) as u32).collect())
    }

    /// Changes the task's limits (an OCI `linux.resources` object, JSON).
    pub async fn update(&self, ns: &str, id: &str, resources: &[u8]) -> Result<(), TaskError> {
        let value: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(resources).map_err(|e| TaskError::Invalid {
                what: "resources",
                reason: e.to_string(),
            })?;
        let resources = serde_json::to_value(&value).map_err(|e| TaskError::Invalid {
            what: "resources",
            reason: e.to_string(),
        })?;
        let task = self.task(ns, id)?;
        task.check_alive("cannot update it")?;
        task.call(&Request::Update { resources }).await.map(drop)
    }

    pub async fn stats(&self, ns: &str, id: &str) -> Result<Stats, TaskError> {
        let task = self.task(ns, id)?;
        task.check_alive("it has no cgroup any more")?;
        Ok(Stats::from_runtime(task.call(&Request::Stats).await?))
    }

    /// Attaches to a process: its output, and (with `stdin`) its input.
    pub async fn attach(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
        stdin: bool,
    ) -> Result<(AttachOutput, AttachInput), TaskError> {
        if let Some(e) = exec_id {
            check_exec_id(e)?;
        }
        let task = self.task(ns, id)?;
        let conn = task.conn().await?;
        conn.attach(exec_id, stdin)
            .await
            .map_err(|e| TaskError::shim(id, e))
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

/// A shim that did not answer in time.
fn timed_out(id: &str, socket: &Path) -> TaskError {
    TaskError::Shim {
        id: id.to_string(),
        source: ShimError::Io {
            path: socket.to_path_buf(),
            source: io::ErrorKind::TimedOut.into(),
        },
    }
}

/// Whether the shim of bundle `dir` runs (see [`StateDir::shim_running`]).
fn shim_alive(dir: &Path) -> bool {
    StateDir::new(dir).shim_running()
}

/// Runs blocking work (mounts, file trees) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TaskError> + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        TaskError::Bundle(BundleError::Io {
            what: "run",
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stats_read_v1_and_v2_reports() {
        let v1 = json!({"type": "stats", "data": {
            "cpu": {"usage": {"total": 5, "user": 3, "kernel": 2}},
            "memory": {"usage": {"usage": 100, "max": 200, "limit": 9223372036854771712u64}},
            "pids": {"current": 2, "limit": 0},
            "blkio": {"ioServiceBytesRecursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 10},
                {"major": 8, "minor": 0, "op": "Write", "value": 7},
                {"major": 8, "minor": 16, "op": "Read", "value": 1}]}}});
        let s = Stats::from_runtime(v1);
        assert_eq!((s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns), (5, 3, 2));
        assert_eq!(
            (s.memory_usage, s.memory_max_usage, s.memory_limit),
            (100, 200, 0)
        );
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (11, 7));
        let v2 = json!({"memory": {"usage": {"usage": 4096, "limit": 16777216}},
                        "pids": {"current": 1, "limit": 64}});
        let s = Stats::from_runtime(v2);
        assert_eq!((s.memory_usage, s.memory_limit), (4096, 16 << 20));
        assert_eq!((s.pids_current, s.pids_limit), (1, 64));
    }

    #[test]
    fn exec_ids_are_checked() {
        assert!(check_exec_id("e1").is_ok());
        assert!(check_exec_id("../x").is_err());
        assert!(check_exec_id("").is_err());
        assert!(check_exec_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn bundles_are_listed_by_namespace() {
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
