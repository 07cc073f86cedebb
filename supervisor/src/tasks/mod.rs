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
//!
//! This module holds the types, the table of tasks and the one connection
//! helper ([`Task`]'s calls); the work is in `lifecycle` (create and
//! delete), `processes` (start, exec, signals, queries), `exits`
//! (following the shims' events, reporting exits), `recover` (the
//! restart) and `markers` (the files that make an exit published once).
//! The shim is reached through [`shim`] and its state directory only
//! through `berth_shim::client::StateDir`.

pub mod bundle;
mod exits;
pub mod idmap;
mod lifecycle;
mod markers;
mod processes;
mod recover;
pub mod shim;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_shim::client::StateDir;
use berth_shim::options::valid_id;
use berth_shim::protocol::{ErrorKind, ExitInfo, Refusal, Request, Status};
use serde_json::Value;
use tokio::sync::watch;

use crate::containers::{ContainerError, DEFAULT_RUNTIME};
use crate::events::Exchange;
use crate::images::Images;
use bundle::BundleError;
use markers::MarkerWrites;
use shim::{ShimConn, ShimError};

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

    pub fn name(self) -> &'static str {
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
    /// 1 or 2; 0 until [`Tasks::stats`] sets it.
    pub cgroup_version: u32,
    /// memory.stat, key by key.
    pub memory_stats: BTreeMap<String, u64>,
    pub memory_failcnt: u64,
    /// Per CPU, ns (v1 only).
    pub cpu_percpu_ns: Vec<u64>,
    pub cpu_throttling_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_time_ns: u64,
}

/// Which cgroup hierarchy the host has (and so its containers): 2 when
/// /sys/fs/cgroup is cgroup2, else 1.
pub fn host_cgroup_version() -> u32 {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => 2,
        _ => 1,
    }
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
            cgroup_version: 0,
            memory_stats: data
                .pointer("/memory/raw")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default(),
            memory_failcnt: n("/memory/usage/failcnt"),
            cpu_percpu_ns: data
                .pointer("/cpu/usage/percpu")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
            cpu_throttling_periods: n("/cpu/throttling/periods"),
            cpu_throttled_periods: n("/cpu/throttling/throttledPeriods"),
            cpu_throttled_time_ns: n("/cpu/throttling/throttledTime"),
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
    /// Where the container log goes (appended to); `None`: `log.json` in
    /// the shim's directory, removed with the task.
    pub log_path: Option<PathBuf>,
    /// How many log files to keep when rotating; 0 counts as 1.
    pub log_max_files: u32,
    /// No container log at all (Docker's `none` driver).
    pub no_log: bool,
    /// How the log's entries are written: Docker's JSON lines, or the
    /// CRI's text lines for kubelet.
    pub log_format: berth_shim::logfile::LogFormat,
    /// Mount an overlay root filesystem with overlayfs's `volatile`: no
    /// syncs. Unmounting a plain overlay syncs its whole upper filesystem
    /// (the host's, where snapshots live), which costs milliseconds on an
    /// idle host and much more under writes. For a container whose
    /// writable layer is never used again after a host crash (the CRI's:
    /// kubelet never starts an exited container again, it makes a new
    /// one); never for Docker's, which `docker start` runs again.
    pub volatile_rootfs: bool,
    /// Id-map the root filesystem's layers to this user namespace (a
    /// container in a pod's user namespace; see `idmap`).
    pub rootfs_idmap: Option<idmap::RootfsIdmap>,
}

impl CreateOptions {
    /// Refuses a log path the shim could not open: relative, in a
    /// directory that does not exist, or a directory itself.
    fn check_log(&self) -> Result<(), TaskError> {
        let Some(path) = self.log_path.as_deref().filter(|_| !self.no_log) else {
            return Ok(());
        };
        let invalid = |reason: String| TaskError::Invalid {
            what: "log path",
            reason,
        };
        if !path.is_absolute() {
            return Err(invalid(format!(
                "{}: give an absolute path",
                path.display()
            )));
        }
        if path.file_name().is_none() {
            return Err(invalid(format!("{}: name a file", path.display())));
        }
        match path.parent().map(std::fs::metadata) {
            Some(Ok(m)) if m.is_dir() => {}
            _ => {
                return Err(invalid(format!(
                    "{}: its directory does not exist",
                    path.display()
                )))
            }
        }
        if path.is_dir() {
            return Err(invalid(format!("{}: is a directory", path.display())));
        }
        Ok(())
    }
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
    /// The shim reported an OOM kill (before the exit it caused: its
    /// events come in order).
    oom: AtomicBool,
    /// Found again at a supervisor start: an OOM kill reported before
    /// then is only in the event log.
    recovered: bool,
}

impl Task {
    fn new(
        ns: &str,
        id: &str,
        dir: PathBuf,
        socket: PathBuf,
        pid: u32,
        terminal: bool,
        recovered: bool,
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
            oom: AtomicBool::new(false),
            recovered,
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

    /// Where read-only views of snapshots are mounted while they are read
    /// (`crate::rootfs`): runtime state, like the tasks' mounts.
    pub fn views_dir(&self) -> PathBuf {
        self.config.state.join("views")
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

    /// Whether the task's init was killed for memory, once its exit is
    /// known (waiting up to `within` for it); `None` when this supervisor
    /// cannot tell: no such task, one found again at start (see the event
    /// log), or no exit yet.
    pub async fn oom_killed(
        &self,
        ns: &str,
        id: &str,
        within: std::time::Duration,
    ) -> Option<bool> {
        let task = self.task(ns, id).ok().filter(|t| !t.recovered)?;
        let mut rx = task.exit.subscribe();
        tokio::time::timeout(within, rx.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?;
        Some(task.oom.load(std::sync::atomic::Ordering::SeqCst))
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
            "cpu": {"usage": {"total": 5, "user": 3, "kernel": 2, "percpu": [4, 1]},
                    "throttling": {"periods": 9, "throttledPeriods": 2, "throttledTime": 70}},
            "memory": {"usage": {"usage": 100, "max": 200, "limit": 9223372036854771712u64,
                                 "failcnt": 1},
                       "raw": {"cache": 30, "total_inactive_file": 20}},
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
        assert_eq!(s.cpu_percpu_ns, vec![4, 1]);
        assert_eq!(
            (
                s.cpu_throttling_periods,
                s.cpu_throttled_periods,
                s.cpu_throttled_time_ns
            ),
            (9, 2, 70)
        );
        assert_eq!(s.memory_failcnt, 1);
        assert_eq!(s.memory_stats["total_inactive_file"], 20);
        let v2 = json!({"memory": {"usage": {"usage": 4096, "limit": 16777216},
                                   "raw": {"inactive_file": 1024, "anon": 8}},
                        "pids": {"current": 1, "limit": 64},
                        "blkio": {"ioServiceBytesRecursive": [
                            {"major": 8, "minor": 0, "op": "read", "value": 5},
                            {"major": 8, "minor": 0, "op": "write", "value": 6}]}});
        let s = Stats::from_runtime(v2);
        assert_eq!((s.memory_usage, s.memory_limit), (4096, 16 << 20));
        assert_eq!((s.pids_current, s.pids_limit), (1, 64));
        assert_eq!(s.memory_stats.get("inactive_file"), Some(&1024));
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (5, 6));
        assert!(s.cpu_percpu_ns.is_empty());
        assert!(matches!(host_cgroup_version(), 1 | 2));
    }

    #[test]
    fn log_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let with = |path: &str| CreateOptions {
            log_path: Some(PathBuf::from(path)),
            ..CreateOptions::default()
        };
        let file = dir.path().join("c1.log");
        assert!(CreateOptions::default().check_log().is_ok());
        assert!(with(file.to_str().unwrap()).check_log().is_ok());
        let refused = |opts: CreateOptions, text: &str| match opts.check_log() {
            Err(e @ TaskError::Invalid { .. }) => {
                assert!(e.to_string().contains(text), "{e}")
            }
            other => panic!("{other:?}"),
        };
        refused(with("logs/c1.log"), "give an absolute path");
        let missing = dir.path().join("missing/c1.log");
        refused(with(missing.to_str().unwrap()), "directory does not exist");
        refused(with(dir.path().to_str().unwrap()), "is a directory");
        refused(with("/"), "name a file");
        // Without a log, the path is not used.
        let mut none = with("relative");
        none.no_log = true;
        assert!(none.check_log().is_ok());
    }

    #[test]
    fn exec_ids_are_checked() {
        assert!(check_exec_id("e1").is_ok());
        assert!(check_exec_id("../x").is_err());
        assert!(check_exec_id("").is_err());
        assert!(check_exec_id(&"a".repeat(129)).is_err());
    }
}
