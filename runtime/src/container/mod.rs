//! The runtime's commands on containers: the runtime side of create, start,
//! run, exec, kill, delete, pause, resume, update, ps and events.
//!
//! `create` (with `start` and `run`) is in `create`, `exec` in `exec`, and
//! the waiting of a foreground `run` or `exec` in `supervise`.

mod create;
mod exec;
mod supervise;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Spec};
use serde::Serialize;

use crate::cgroups::{Cgroup, CgroupError};
use crate::channel::ChannelError;
use crate::console::{self, ConsoleError};
use crate::hooks::{self, HookError};
use crate::namespaces::NamespaceError;
use crate::spec::SpecError;
use crate::state::{self, Record, StateError, StateRoot, Status, EXEC_SOCKET};

use self::supervise::wait_gone;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    NetDev(#[from] crate::netdev::NetDevError),
    #[error("container init failed: {0}")]
    Init(String),
    #[error("container init exited during setup ({0})")]
    InitDied(String),
    #[error("{action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    /// A command refused in the container's status, in runc's words
    /// (`container not running`, `cannot start a container that has
    /// stopped`, ...), which tools look for.
    #[error("{why}")]
    WrongState {
        id: String,
        status: Status,
        why: &'static str,
    },
    #[error("cannot start a container in the {0} state")]
    CannotStart(Status),
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped { id: String, status: Status },
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    #[error("{0}")]
    Usage(String),
}

/// A signal by name (`TERM`, `SIGTERM`, any case) or number, as runc reads
/// it; `None` for 0, which only checks that the process exists.
pub fn parse_signal(s: &str) -> Result<Option<Signal>, ContainerError> {
    let unknown = || ContainerError::UnknownSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        if n == 0 {
            return Ok(None);
        }
        return Signal::try_from(n).map(Some).map_err(|_| unknown());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map(Some).map_err(|_| unknown())
}

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let action = action.into();
    move |source| ContainerError::Io { action, source }
}

/// Options of `create` and `run`.
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
}

/// Where the process of `exec` comes from.
pub enum ExecProcess {
    /// A whole `process.json`.
    File(PathBuf),
    /// The container's own process, with these changes.
    Args {
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        user: Option<(u32, Option<u32>)>,
        additional_gids: Vec<u32>,
        tty: bool,
        caps: Vec<String>,
        no_new_privs: bool,
    },
}

pub struct ExecOptions {
    pub id: String,
    pub process: ExecProcess,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
}

/// The `state` and `list --format json` document: the runtime-spec state
/// plus the fields runc adds.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateOutput<'a> {
    #[serde(flatten)]
    pub oci: state::OciState<'a>,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
}

/// The runtime: a state root and global options.
pub struct Runtime {
    pub root: StateRoot,
    pub systemd_cgroup: bool,
}

fn write_pid_file(path: &Path, pid: i32) -> Result<(), ContainerError> {
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, pid.to_string())
        .map_err(io_err(format!("write pid file {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!("write pid file {}", path.display())))
}

/// A unix socket path short enough for sun_path: long ones are reached
/// through /proc/self/fd of their directory.
fn socket_path(dir_fd: &OwnedFd, dir: &Path, name: &str) -> PathBuf {
    let full = dir.join(name);
    if full.as_os_str().len() < 100 {
        return full;
    }
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir_fd.as_raw_fd()))
}

fn open_dir(path: &Path) -> Result<OwnedFd, ContainerError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(io_err(format!("open {}", path.display())))
}

/// The two ends of a terminal hand-over: the one the container process
/// sends its pty master on (connected to `--console-socket`, or one end of
/// a socketpair whose other end, returned second, we read it from to proxy
/// the terminal ourselves). Nothing without a terminal.
fn console_ends(
    socket: Option<&Path>,
    terminal: bool,
) -> Result<(Option<UnixStream>, Option<UnixStream>), ContainerError> {
    match (socket, terminal) {
        (Some(path), true) => Ok((Some(console::connect(path)?), None)),
        (None, true) => {
            let (a, b) = UnixStream::pair().map_err(io_err("console socketpair"))?;
            Ok((Some(a), Some(b)))
        }
        _ => Ok((None, None)),
    }
}

/// The container's unified-tree directory, opened for CLONE_INTO_CGROUP.
fn open_unified(cgroup: &Cgroup) -> Option<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = cgroup.unified_dir()?;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .ok()
        .map(OwnedFd::from)
}

fn run_stage_hooks(spec: &Spec, stage: &'static str, state: &[u8]) -> Result<(), HookError> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    #[allow(
        deprecated,
        reason = "the prestart hook is deprecated in the spec but still run"
    )]
    let list = match stage {
        "prestart" => h.prestart(),
        "createRuntime" => h.create_runtime(),
        "poststart" => h.poststart(),
        "poststop" => h.poststop(),
        _ => &None,
    };
    match list {
        Some(list) => hooks::run_hooks(stage, list, state),
        None => Ok(()),
    }
}

fn state_json(record: &Record, status: Status) -> Vec<u8> {
    serde_json::to_vec(&record.oci_state(status)).unwrap_or_default()
}

impl Runtime {
    pub fn new(root: PathBuf, systemd_cgroup: bool) -> Runtime {
        Runtime {
            root: StateRoot::new(root),
            systemd_cgroup,
        }
    }

    fn cgroup_of(&self, record: &Record) -> Result<Cgroup, ContainerError> {
        Ok(Cgroup::new(
            &record.cgroups_path,
            record.systemd_cgroup,
            &record.id,
        )?)
    }

    /// The container's status, worked out from the live system.
    pub fn status(&self, record: &Record) -> Status {
        self.status_with(record, None)
    }

    /// `status` for a caller that already has the container's cgroup.
    fn status_in(&self, record: &Record, cgroup: &Cgroup) -> Status {
        self.status_with(record, Some(cgroup))
    }

    fn status_with(&self, record: &Record, cgroup: Option<&Cgroup>) -> Status {
        if record.pid == 0 {
            // Recorded, but create has not started the init (or was killed
            // before it did).
            return Status::Creating;
        }
        if !record.init_alive() {
            return Status::Stopped;
        }
        let frozen = match cgroup {
            Some(cg) => cg.is_frozen(),
            None => self.cgroup_of(record).is_ok_and(|cg| cg.is_frozen()),
        };
        if frozen {
            return Status::Paused;
        }
        if self.root.dir(&record.id).join(EXEC_SOCKET).exists() {
            return Status::Created;
        }
        Status::Running
    }

    /// Removes a container whose init is gone: stray processes, cgroup,
    /// poststop hooks, state.
    fn destroy(&self, record: &Record, cgroup: &Cgroup) -> Result<(), ContainerError> {
        if record.init_alive() {
            let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            wait_gone(record, Duration::from_secs(10));
        }
        // Without a pid namespace of its own, processes outlive the init.
        let _ = cgroup.signal_all(Signal::SIGKILL);
        cgroup.destroy()?;
        if let Err(e) = run_stage_hooks(
            &record.spec,
            "poststop",
            &state_json(record, Status::Stopped),
        ) {
            tracing::warn!(container = %record.id, error = %e, "poststop hook failed");
        }
        self.root.remove(&record.id)?;
        Ok(())
    }

    pub fn state(&self, id: &str) -> Result<String, ContainerError> {
        let record = self.root.load(id)?;
        let status = self.status(&record);
        let out = StateOutput {
            oci: record.oci_state(status),
            rootfs: &record.rootfs,
            created: &record.created,
            owner: &record.owner,
        };
        serde_json::to_string_pretty(&out).map_err(|e| ContainerError::Usage(e.to_string()))
    }

    /// `kill`, as runc does it: the container is looked up before the
    /// signal is read; `--all` signals whatever the cgroup still holds,
    /// even once the init is gone; without it a stopped container is an
    /// error (`container not running`). Signal 0 only checks.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), ContainerError> {
        let record = self.root.load(id)?;
        let signal = parse_signal(signal)?;
        let cgroup = self.cgroup_of(&record)?;
        let status = self.status_in(&record, &cgroup);
        let not_running = || ContainerError::WrongState {
            id: id.into(),
            status: Status::Stopped,
            why: "container not running",
        };
        if all {
            let Some(signal) = signal else { return Ok(()) };
            return match cgroup.signal_all(signal) {
                Ok(()) => Ok(()),
                // The cgroup may be gone with the init.
                Err(_) if status == Status::Stopped => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        if status == Status::Stopped || status == Status::Creating {
            return Err(not_running());
        }
        kill(Pid::from_raw(record.pid), signal).map_err(|e| match e {
            nix::errno::Errno::ESRCH => not_running(),
            e => io_err(format!("unable to signal init {}", record.pid))(e.into()),
        })?;
        // A frozen cgroup v1 holds a killed process until it is thawed.
        if status == Status::Paused && signal == Some(Signal::SIGKILL) {
            let _ = cgroup.thaw();
        }
        Ok(())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<(), ContainerError> {
        let record = match self.root.load(id) {
            Ok(r) => r,
            // runc's delete --force of an unknown id succeeds: nothing to do.
            Err(StateError::NotFound(_)) if force && !self.root.exists(id) => return Ok(()),
            Err(StateError::NotFound(_)) if self.root.exists(id) => {
                // A create that never finished: nothing runs, drop the remains.
                self.root.remove(id)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let cgroup = self.cgroup_of(&record)?;
        let status = self.status_in(&record, &cgroup);
        match status {
            Status::Stopped | Status::Created | Status::Creating => {}
            _ if force => {
                cgroup.signal_all(Signal::SIGKILL)?;
                let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            }
            _ => {
                return Err(ContainerError::NotStopped {
                    id: id.into(),
                    status,
                })
            }
        }
        self.destroy(&record, &cgroup)
    }

    pub fn pause(&self, id: &str) -> Result<(), ContainerError> {
        let record = self.root.load(id)?;
        let cgroup = self.cgroup_of(&record)?;
        let status = self.status_in(&record, &cgroup);
        if status != Status::Running && status != Status::Created {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                why: "container not running",
            });
        }
        Ok(cgroup.freeze()?)
    }

    pub fn resume(&self, id: &str) -> Result<(), ContainerError> {
        let record = self.root.load(id)?;
        let cgroup = self.cgroup_of(&record)?;
        let status = self.status_in(&record, &cgroup);
        if status != Status::Paused {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                why: "container not paused",
            });
        }
        Ok(cgroup.thaw()?)
    }

    pub fn pids(&self, id: &str) -> Result<Vec<i32>, ContainerError> {
        let record = self.root.load(id)?;
        Ok(self.cgroup_of(&record)?.pids()?)
    }

    /// `list`: every container with its status.
    pub fn list(&self) -> Result<Vec<(Record, Status)>, ContainerError> {
        let mut out = Vec::new();
        for id in self.root.ids()? {
            if let Ok(record) = self.root.load(&id) {
                let status = self.status(&record);
                out.push((record, status));
            }
        }
        Ok(out)
    }

    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), ContainerError> {
        let mut record = self.root.load(id)?;
        let cgroup = self.cgroup_of(&record)?;
        let status = self.status_in(&record, &cgroup);
        if status == Status::Stopped {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                why: "container not running",
            });
        }
        let resources = &crate::cgroups::without_zero_limits(resources.clone());
        cgroup.update(resources)?;
        // Remember the new limits, as runc does, merged over the old ones.
        let mut linux = record.spec.linux().clone().unwrap_or_default();
        let mut current = linux.resources().clone().unwrap_or_default();
        if resources.memory().is_some() {
            current.set_memory(*resources.memory());
        }
        if resources.cpu().is_some() {
            current.set_cpu(resources.cpu().clone());
        }
        if resources.pids().is_some() {
            current.set_pids(*resources.pids());
        }
        if resources.block_io().is_some() {
            current.set_block_io(resources.block_io().clone());
        }
        linux.set_resources(Some(current));
        record.spec.set_linux(Some(linux));
        self.root.save(&record)?;
        Ok(())
    }

    /// One `events` document of type stats.
    pub fn stats(&self, id: &str) -> Result<(serde_json::Value, bool, u64), ContainerError> {
        let record = self.root.load(id)?;
        let alive = record.init_alive();
        let cgroup = self.cgroup_of(&record)?;
        let doc = serde_json::json!({"type": "stats", "id": id, "data": cgroup.stats()});
        Ok((doc, alive, cgroup.oom_kills()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_as_runc_reads_them() {
        for s in ["TERM", "term", "SIGTERM", "sigTerm", "15"] {
            assert_eq!(parse_signal(s).unwrap(), Some(Signal::SIGTERM), "{s}");
        }
        assert_eq!(parse_signal("0").unwrap(), None);
        for bad in ["BOGUS", "SIGBOGUS", "999", "-1", ""] {
            let e = parse_signal(bad).unwrap_err();
            assert_eq!(e.to_string(), format!("unknown signal {bad:?}"));
        }
    }
}
