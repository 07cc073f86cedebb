//! The runtime's commands on containers: the runtime side of create, start,
//! run, exec, kill, delete, pause, resume, update, ps and events.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, LinuxResources, Process, Spec};
use serde::Serialize;

use crate::cgroups::{Cgroup, CgroupError};
use crate::channel::{Channel, ChannelError, ToChild, ToParent};
use crate::console::{self, ConsoleError, Proxy};
use crate::hooks::{self, HookError};
use crate::init::{self, Gate, InitConfig, TenantConfig};
use crate::namespaces::{self, NamespaceError, Plan};
use crate::spec::{self, SpecError};
use crate::state::{self, Record, StateError, StateRoot, Status, EXEC_SOCKET};
use crate::sys;

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
    #[error("container init failed: {0}")]
    Init(String),
    #[error("container init exited during setup ({0})")]
    InitDied(String),
    #[error("{action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("container {id} is {status}: {why}")]
    WrongState {
        id: String,
        status: Status,
        why: &'static str,
    },
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped { id: String, status: Status },
    #[error("{0}")]
    Usage(String),
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

/// Undoes a half-made container if create fails at any step.
struct CreateGuard<'a> {
    root: &'a StateRoot,
    id: String,
    cgroup: Option<Cgroup>,
    pids: Vec<i32>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in &self.pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(*pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.signal_all(Signal::SIGKILL);
            let _ = cg.destroy();
        }
        let _ = self.root.remove(&self.id);
    }
}

/// A container whose init is set up and waiting.
struct Spawned {
    record: Record,
    cgroup: Cgroup,
    chan: Channel,
    /// Our end of the console socket when we proxy the terminal ourselves.
    console_peer: Option<UnixStream>,
}

fn write_pid_file(path: &Path, pid: i32) -> Result<(), ContainerError> {
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, pid.to_string())
        .map_err(io_err(format!("write pid file {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!("write pid file {}", path.display())))
}

fn write_id_maps(
    pid: i32,
    uid: &[LinuxIdMapping],
    gid: &[LinuxIdMapping],
) -> Result<(), ContainerError> {
    for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
        let text: String = maps
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(io_err(format!("write {path}")))?;
    }
    Ok(())
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
    #[allow(deprecated)]
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

/// Signals we pass on to the container's process in the foreground.
fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCONT,
        Signal::SIGALRM,
    ] {
        set.add(s);
    }
    set
}

fn block_signals() -> Result<(), ContainerError> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded_signals()), None)
        .map_err(|e| io_err("block signals")(e.into()))
}

/// Waits for `pid` to exit while forwarding signals to it (and copying a
/// terminal, if any). Returns its exit code, 128+N for signal N.
fn supervise(pid: i32, proxy: Option<Proxy>) -> Result<i32, ContainerError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let sfd = SignalFd::with_flags(
        &forwarded_signals(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| io_err("signalfd")(e.into()))?;
    let target = Pid::from_raw(pid);
    let mut stdin_open = proxy.is_some();
    loop {
        if let Some(code) = reap(target) {
            if let Some(p) = &proxy {
                p.drain();
            }
            return Ok(code);
        }
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &proxy {
            fds.push(PollFd::new(p.master.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_err("poll")(e.into())),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, master_ready, stdin_ready) = (ready(0), ready(1), ready(2));
        let stdin_hup = fds
            .get(2)
            .and_then(|f| f.revents())
            .is_some_and(|r| r.contains(PollFlags::POLLHUP) && !r.contains(PollFlags::POLLIN));
        drop(fds);
        if let Some(p) = &proxy {
            if stdin_hup {
                stdin_open = false;
            }
            if !p.pump(stdin_ready && !stdin_hup, master_ready) {
                // The terminal closed; the process is exiting.
                let status = waitpid(target, None);
                return Ok(exit_code(status.ok()).unwrap_or(0));
            }
        }
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    continue;
                }
                if signo == libc::SIGWINCH {
                    if let Some(p) = &proxy {
                        p.resize();
                    }
                    continue;
                }
                if let Ok(sig) = Signal::try_from(signo) {
                    let _ = kill(target, sig);
                }
            }
        }
    }
}

fn exit_code(status: Option<WaitStatus>) -> Option<i32> {
    match status? {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Reaps every exited child (orphans re-parented to us included); returns
/// the exit code of `target` once it has exited.
fn reap(target: Pid) -> Option<i32> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(status) if status.pid() == Some(target) => return exit_code(Some(status)),
            Ok(_) => continue,
        }
    }
}

/// Waits until the process is gone (exited, or a zombie), up to `limit`.
fn wait_gone(record: &Record, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_micros(100);
    while record.init_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        // Our own child (run) must be reaped for its zombie to go.
        let _ = waitpid(Pid::from_raw(record.pid), Some(WaitPidFlag::WNOHANG));
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    true
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

    fn spawn(&self, opts: &CreateOptions, foreground: bool) -> Result<Spawned, ContainerError> {
        let bundle = std::fs::canonicalize(&opts.bundle).map_err(|e| SpecError::Read {
            path: opts.bundle.clone(),
            source: e,
        })?;
        let spec = spec::load_spec(&bundle)?;
        let rootfs = spec::rootfs_path(&spec, &bundle)?;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| ContainerError::Usage("config.json has no process to run".into()))?;
        let terminal = process.terminal() == Some(true);
        if terminal && opts.console_socket.is_none() && !foreground {
            return Err(ContainerError::Usage(
                "cannot allocate a tty when detached without a console socket (set process.terminal to false or pass --console-socket)".into(),
            ));
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let plan = Plan::from_config(linux.namespaces().as_deref().unwrap_or(&[]));
        let seccomp = linux
            .seccomp()
            .as_ref()
            .map(crate::seccomp::compile)
            .transpose()?;
        let state_dir = self.root.claim(&opts.id)?;
        let mut guard = CreateGuard {
            root: &self.root,
            id: opts.id.clone(),
            cgroup: None,
            pids: Vec::new(),
            armed: true,
        };
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Recorded at once, before anything exists on the host: a create
        // that is killed midway leaves a record that `delete` can clean up
        // from (its cgroup included).
        let mut record = Record {
            id: opts.id.clone(),
            pid: 0,
            pid_start: 0,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: state::now_rfc3339(),
            owner: "root".into(),
            cgroups_path: cgroups_path.clone(),
            systemd_cgroup: self.systemd_cgroup,
            spec: spec.clone(),
        };
        self.root.save(&record)?;
        let cgroup = Cgroup::new(&cgroups_path, self.systemd_cgroup, &opts.id)?;
        guard.cgroup = Some(cgroup.clone());
        let resources =
            crate::cgroups::without_zero_limits(linux.resources().clone().unwrap_or_default());
        let devices = linux.devices().clone().unwrap_or_default();
        let namespaces_made = plan.join.iter().all(|(t, _)| *t == LinuxNamespaceType::Pid);
        // Making a cgroup costs a millisecond or more (a memory cgroup's
        // mkdir alone is ~0.3 ms), about as long as the child takes to mount
        // its root: in the common case we make it while the child mounts,
        // and the child joins it when we say it is ready. A child that gets
        // a new user namespace (it must join while it has the host's ids) or
        // forks into a pid namespace (its child must be born inside) needs
        // it at once, so then it is made before clone.
        let early_cgroup = !namespaces_made || plan.creates(LinuxNamespaceType::User);
        if early_cgroup {
            cgroup.create()?;
            cgroup.apply(&resources, &devices)?;
        } else {
            cgroup.create_unified()?;
        }

        if let Some(path) = plan.joins(LinuxNamespaceType::Pid) {
            let fd = namespaces::open(path)?;
            namespaces::join(LinuxNamespaceType::Pid, &fd, path)?;
        }
        let (console_child, console_peer) = console_ends(opts.console_socket.as_deref(), terminal)?;
        let gate = if foreground {
            Gate::Channel
        } else {
            let dir_fd = open_dir(&state_dir)?;
            let path = socket_path(&dir_fd, &state_dir, EXEC_SOCKET);
            Gate::Socket(
                UnixListener::bind(&path)
                    .map_err(io_err(format!("listen on {}", path.display())))?,
            )
        };
        let (mut chan, child_chan) = Channel::pair()?;
        let flags = if namespaces_made {
            plan.new - CloneFlags::CLONE_NEWCGROUP
        } else {
            CloneFlags::empty()
        };
        sys::set_child_subreaper().map_err(io_err("become subreaper"))?;
        // The child is born non-dumpable and stays so until it execs the
        // container's program: no process in the container can ptrace it or
        // open its /proc/PID/exe (our binary) meanwhile.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| io_err("make the runtime non-dumpable")(e.into()))?;
        let unified = open_unified(&cgroup);
        let (forked, in_unified) = sys::clone_process(
            flags.bits() as libc::c_ulong,
            unified.as_ref().map(|f| f.as_fd()),
        )
        .map_err(io_err("clone"))?;
        let pid = match forked {
            sys::Forked::Child => {
                // The cgroup directory must not reach the container: a
                // process.cwd of /proc/self/fd/N would lead out of it
                // (CVE-2024-21626).
                drop(unified);
                drop(chan);
                init::run_init(
                    InitConfig {
                        id: &opts.id,
                        spec: &spec,
                        bundle: &bundle,
                        rootfs: &rootfs,
                        plan: &plan,
                        cgroup: &cgroup,
                        namespaces_made,
                        in_unified,
                        console: console_child,
                        gate,
                        no_pivot: opts.no_pivot,
                        preserve_fds: opts.preserve_fds,
                        seccomp: seccomp.as_ref(),
                    },
                    child_chan,
                )
            }
            sys::Forked::Parent(pid) => pid,
        };
        drop(child_chan);
        drop(gate);
        drop(console_child);
        guard.pids.push(pid);
        let uid_maps = linux.uid_mappings().clone().unwrap_or_default();
        let gid_maps = linux.gid_mappings().clone().unwrap_or_default();
        if namespaces_made && plan.creates(LinuxNamespaceType::User) {
            write_id_maps(pid, &uid_maps, &gid_maps)?;
        }
        chan.send(&ToChild::Proceed { host_pid: pid })?;
        if !early_cgroup {
            cgroup.create()?;
            cgroup.apply(&resources, &devices)?;
        }
        // The child moves itself into its cgroup (see Cgroup::join_self).
        chan.send(&ToChild::CgroupReady)?;
        tracing::debug!(container = %opts.id, pid, "init cloned");
        let mut init_pid = pid;
        record.pid = pid;
        loop {
            match chan.recv::<ToParent>()? {
                Some(ToParent::NeedIdMaps) => {
                    write_id_maps(pid, &uid_maps, &gid_maps)?;
                    chan.send(&ToChild::Proceed { host_pid: pid })?;
                }
                Some(ToParent::InitPid(p)) => {
                    init_pid = p;
                    guard.pids.insert(0, p);
                    let _ = waitpid(Pid::from_raw(pid), None);
                }
                Some(ToParent::RunCreateHooks) => {
                    record.pid = init_pid;
                    let state = state_json(&record, Status::Creating);
                    run_stage_hooks(&spec, "prestart", &state)?;
                    run_stage_hooks(&spec, "createRuntime", &state)?;
                    chan.send(&ToChild::Proceed { host_pid: init_pid })?;
                }
                Some(ToParent::Ready) => break,
                Some(ToParent::Error(msg)) => return Err(ContainerError::Init(msg)),
                None => {
                    let status = waitpid(Pid::from_raw(init_pid), Some(WaitPidFlag::WNOHANG));
                    return Err(ContainerError::InitDied(format!("{status:?}")));
                }
            }
        }
        record.pid = init_pid;
        record.pid_start = state::process_start_time(init_pid).unwrap_or(0);
        self.root.save(&record)?;
        if let Some(path) = &opts.pid_file {
            write_pid_file(path, init_pid)?;
        }
        guard.armed = false;
        tracing::debug!(container = %opts.id, pid = init_pid, "container created");
        Ok(Spawned {
            record,
            cgroup,
            chan,
            console_peer,
        })
    }

    /// `create`: sets the container up; its init waits for `start`.
    pub fn create(&self, opts: &CreateOptions) -> Result<(), ContainerError> {
        self.spawn(opts, false).map(drop)
    }

    /// `start`: releases a created container's init, which execs the
    /// user's process; reports that exec's failure if it fails.
    pub fn start(&self, id: &str) -> Result<(), ContainerError> {
        let record = self.root.load(id)?;
        let status = self.status(&record);
        match status {
            Status::Created => {}
            Status::Stopped => {
                return Err(ContainerError::WrongState {
                    id: id.into(),
                    status,
                    why: "cannot start a container that has stopped",
                })
            }
            _ => {
                return Err(ContainerError::WrongState {
                    id: id.into(),
                    status,
                    why: "cannot start an already running container",
                })
            }
        }
        let dir = self.root.dir(id);
        let dir_fd = open_dir(&dir)?;
        let path = socket_path(&dir_fd, &dir, EXEC_SOCKET);
        let mut conn = UnixStream::connect(&path).map_err(|e| ContainerError::WrongState {
            id: id.into(),
            status: Status::Stopped,
            why: if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "container not running"
            } else {
                "cannot reach its init"
            },
        })?;
        let _ = std::fs::remove_file(dir.join(EXEC_SOCKET));
        conn.write_all(b"s").map_err(io_err("signal start"))?;
        let mut reply = String::new();
        let _ = conn.read_to_string(&mut reply);
        if !reply.is_empty() {
            return Err(ContainerError::Init(reply));
        }
        if let Err(e) = run_stage_hooks(
            &record.spec,
            "poststart",
            &state_json(&record, Status::Running),
        ) {
            tracing::warn!(container = %id, error = %e, "poststart hook failed");
        }
        Ok(())
    }

    /// `run`: create and start; in the foreground, wait for the process,
    /// forward signals, then delete the container and return its exit code.
    pub fn run(&self, opts: &CreateOptions, detach: bool) -> Result<i32, ContainerError> {
        if !detach {
            block_signals()?;
        }
        let mut spawned = if detach {
            // A detached run is a create and a start.
            self.spawn(opts, false)?;
            self.start(&opts.id)?;
            return Ok(0);
        } else {
            self.spawn(opts, true)?
        };
        let id = opts.id.clone();
        let proxy = match spawned.console_peer.take() {
            Some(peer) => Some(Proxy::new(console::recv_fd(&peer)?)),
            None => None,
        };
        spawned.chan.send(&ToChild::Start)?;
        match spawned.chan.recv::<ToParent>() {
            Ok(None) => {}
            Ok(Some(ToParent::Error(msg))) => {
                drop(proxy);
                let _ = self.destroy(&spawned.record, &spawned.cgroup);
                return Err(ContainerError::Init(msg));
            }
            Ok(Some(other)) => {
                let _ = self.destroy(&spawned.record, &spawned.cgroup);
                return Err(ContainerError::Init(format!(
                    "unexpected message {other:?}"
                )));
            }
            Err(e) => {
                let _ = self.destroy(&spawned.record, &spawned.cgroup);
                return Err(e.into());
            }
        }
        if let Err(e) = run_stage_hooks(
            &spawned.record.spec,
            "poststart",
            &state_json(&spawned.record, Status::Running),
        ) {
            tracing::warn!(container = %id, error = %e, "poststart hook failed");
        }
        tracing::debug!(container = %id, "process started");
        let code = supervise(spawned.record.pid, proxy)?;
        tracing::debug!(container = %id, code, "process exited");
        self.destroy(&spawned.record, &spawned.cgroup)?;
        tracing::debug!(container = %id, "container removed");
        Ok(code)
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

    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), ContainerError> {
        let record = self.root.load(id)?;
        let cgroup = self.cgroup_of(&record)?;
        let status = self.status_in(&record, &cgroup);
        if status == Status::Stopped {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                why: "container not running",
            });
        }
        if all {
            cgroup.signal_all(signal)?;
            return Ok(());
        }
        kill(Pid::from_raw(record.pid), signal).map_err(|e| match e {
            nix::errno::Errno::ESRCH => ContainerError::WrongState {
                id: id.into(),
                status: Status::Stopped,
                why: "container not running",
            },
            e => io_err(format!("send {signal} to {}", record.pid))(e.into()),
        })
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

    /// `exec`: starts one more process in a running container.
    pub fn exec(&self, opts: &ExecOptions) -> Result<i32, ContainerError> {
        let record = self.root.load(&opts.id)?;
        let cgroup = self.cgroup_of(&record)?;
        let status = self.status_in(&record, &cgroup);
        match status {
            Status::Running | Status::Created => {}
            Status::Paused => {
                return Err(ContainerError::WrongState {
                    id: opts.id.clone(),
                    status,
                    why: "cannot exec in a paused container",
                })
            }
            _ => {
                return Err(ContainerError::WrongState {
                    id: opts.id.clone(),
                    status,
                    why: "cannot exec: container not running",
                })
            }
        }
        let process = exec_process(&record, &opts.process)?;
        let terminal = process.terminal() == Some(true);
        if terminal && opts.console_socket.is_none() && opts.detach {
            return Err(ContainerError::Usage(
                "cannot allocate a tty when detached without a console socket".into(),
            ));
        }
        let linux = record.spec.linux().clone().unwrap_or_default();
        let seccomp = linux
            .seccomp()
            .as_ref()
            .map(crate::seccomp::compile)
            .transpose()?;
        let mut namespaces = Vec::new();
        let mut pid_ns = None;
        let mut userns = false;
        let mut types: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|n| n.typ())
            .collect();
        types.sort_by_key(|t| namespaces::join_rank(*t));
        for typ in types {
            let name = namespaces::proc_name(typ);
            let path = PathBuf::from(format!("/proc/{}/ns/{name}", record.pid));
            if namespaces::identity(&path)
                == namespaces::identity(&PathBuf::from(format!("/proc/self/ns/{name}")))
            {
                continue;
            }
            let fd = namespaces::open(&path)?;
            match typ {
                LinuxNamespaceType::Pid => pid_ns = Some((fd, path)),
                t => {
                    userns |= t == LinuxNamespaceType::User;
                    namespaces.push((t, fd, path));
                }
            }
        }
        if let Some((fd, path)) = &pid_ns {
            namespaces::join(LinuxNamespaceType::Pid, fd, path)?;
        }
        if !opts.detach {
            block_signals()?;
        }
        let (console_child, console_peer) = console_ends(opts.console_socket.as_deref(), terminal)?;
        let (mut chan, child_chan) = Channel::pair()?;
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| io_err("make the runtime non-dumpable")(e.into()))?;
        let unified = open_unified(&cgroup);
        let (forked, in_unified) =
            sys::clone_process(0, unified.as_ref().map(|f| f.as_fd())).map_err(io_err("fork"))?;
        let pid = match forked {
            sys::Forked::Child => {
                drop(unified); // see run_init's branch: CVE-2024-21626
                drop(chan);
                init::run_tenant(
                    TenantConfig {
                        process: &process,
                        namespaces,
                        userns,
                        cgroup: &cgroup,
                        in_unified,
                        console: console_child,
                        preserve_fds: opts.preserve_fds,
                        seccomp: seccomp.as_ref(),
                    },
                    child_chan,
                )
            }
            sys::Forked::Parent(pid) => pid,
        };
        drop(child_chan);
        drop(console_child);
        drop(namespaces);
        let fail = |e: ContainerError| {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            e
        };
        chan.send(&ToChild::Proceed { host_pid: pid })
            .map_err(|e| fail(e.into()))?;
        let proxy = match console_peer {
            Some(peer) => Some(Proxy::new(
                console::recv_fd(&peer).map_err(|e| fail(e.into()))?,
            )),
            None => None,
        };
        match chan.recv::<ToParent>() {
            Ok(None) => {}
            Ok(Some(ToParent::Error(msg))) => return Err(fail(ContainerError::Init(msg))),
            Ok(Some(other)) => {
                return Err(fail(ContainerError::Init(format!(
                    "unexpected message {other:?}"
                ))))
            }
            Err(e) => return Err(fail(e.into())),
        }
        if let Some(path) = &opts.pid_file {
            write_pid_file(path, pid)?;
        }
        if opts.detach {
            return Ok(0);
        }
        supervise(pid, proxy)
    }
}

/// The process an `exec` runs: a process.json, or the container's process
/// with the command line's changes.
fn exec_process(record: &Record, source: &ExecProcess) -> Result<Process, ContainerError> {
    let mut process = match source {
        ExecProcess::File(path) => {
            let data = std::fs::read(path).map_err(io_err(format!("read {}", path.display())))?;
            let p: Process = serde_json::from_slice(&data)
                .map_err(|e| ContainerError::Usage(format!("parse {}: {e}", path.display())))?;
            p
        }
        ExecProcess::Args {
            args,
            env,
            cwd,
            user,
            additional_gids,
            tty,
            caps,
            no_new_privs,
        } => {
            let mut p = record.spec.process().clone().unwrap_or_default();
            if args.is_empty() {
                return Err(ContainerError::Usage("exec needs a command to run".into()));
            }
            p.set_args(Some(args.clone()));
            let mut merged = p.env().clone().unwrap_or_default();
            for kv in env {
                let key = kv.split('=').next().unwrap_or_default();
                merged.retain(|e| e.split('=').next() != Some(key));
                merged.push(kv.clone());
            }
            p.set_env(Some(merged));
            if let Some(cwd) = cwd {
                p.set_cwd(cwd.clone());
            }
            if let Some((uid, gid)) = user {
                let mut u = p.user().clone();
                u.set_uid(*uid);
                if let Some(gid) = gid {
                    u.set_gid(*gid);
                }
                p.set_user(u);
            }
            if !additional_gids.is_empty() {
                let mut u = p.user().clone();
                u.set_additional_gids(Some(additional_gids.clone()));
                p.set_user(u);
            }
            p.set_terminal(Some(*tty));
            if *no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if !caps.is_empty() {
                let mut c = p.capabilities().clone().unwrap_or_default();
                let extra: Vec<oci_spec::runtime::Capability> = caps
                    .iter()
                    .map(|name| {
                        let bare = name.strip_prefix("CAP_").unwrap_or(name);
                        bare.parse().map_err(|_| {
                            ContainerError::Usage(format!("unknown capability {name}"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                for set in [
                    c.bounding().clone(),
                    c.effective().clone(),
                    c.permitted().clone(),
                ]
                .iter_mut()
                .enumerate()
                {
                    let mut s = set.1.clone().unwrap_or_default();
                    s.extend(extra.iter().copied());
                    match set.0 {
                        0 => c.set_bounding(Some(s)),
                        1 => c.set_effective(Some(s)),
                        _ => c.set_permitted(Some(s)),
                    };
                }
                p.set_capabilities(Some(c));
            }
            p
        }
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(ContainerError::Usage(
            "process.args must not be empty".into(),
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(ContainerError::Usage(format!(
            "process.cwd {} is not absolute",
            process.cwd().display()
        )));
    }
    if process.cwd().as_os_str().is_empty() {
        process.set_cwd("/".into());
    }
    Ok(process)
}
