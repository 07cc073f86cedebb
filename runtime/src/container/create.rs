//! `create`, `start` and `run`: the container's init cloned into its
//! namespaces and cgroup, set up, and held until `start` releases it.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};

use crate::cgroups::Cgroup;
use crate::channel::{Channel, ToChild, ToParent};
use crate::console::{self, Proxy};
use crate::init::{self, Gate, InitConfig};
use crate::namespaces::{self, Plan};
use crate::spec::{self, SpecError};
use crate::state::{self, Record, StateRoot, Status, EXEC_SOCKET};
use crate::sys;
use crate::trace;

use super::supervise::{block_signals, supervise};
use super::{
    console_ends, io_err, open_dir, open_unified, run_stage_hooks, socket_path, state_json,
    write_pid_file, ContainerError, CreateOptions, Runtime,
};

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

/// Sends `msg` to the init `pid`. If it has already exited (a broken
/// pipe), the error it queued before going says why, rather than the pipe.
fn send_to_init(chan: &mut Channel, pid: i32, msg: &ToChild) -> Result<(), ContainerError> {
    let Err(e) = chan.send(msg) else {
        return Ok(());
    };
    while let Ok(Some(queued)) = chan.recv_from::<ToParent>(pid) {
        if let ToParent::Error(text) = queued {
            return Err(ContainerError::Init(text));
        }
    }
    Err(e.into())
}

impl Runtime {
    fn spawn(&self, opts: &CreateOptions, foreground: bool) -> Result<Spawned, ContainerError> {
        let step = trace::begin();
        let bundle = std::fs::canonicalize(&opts.bundle).map_err(|e| SpecError::Read {
            path: opts.bundle.clone(),
            source: e,
        })?;
        let (spec, mount_id_maps) = spec::load_spec_and_mount_id_maps(&bundle)?;
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
        let step = trace::end("config loaded, seccomp compiled", step);
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
            trace::end("state claimed, cgroup created, limits applied", step);
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
        // Id-mapped copies of mount sources are made here, with the host's
        // privileges, and attached by the init (see rootfs::idmap).
        let mount_sources = crate::rootfs::MountSources::open(&spec, &mount_id_maps)?;
        let (mut chan, child_chan) = Channel::pair()?;
        // The init makes a time namespace itself, to set its offsets first.
        let flags = if namespaces_made {
            plan.new
                - CloneFlags::CLONE_NEWCGROUP
                - namespaces::clone_flag(LinuxNamespaceType::Time)
        } else {
            CloneFlags::empty()
        };
        sys::set_child_subreaper().map_err(io_err("become subreaper"))?;
        // The child is born non-dumpable and stays so until it execs the
        // container's program: no process in the container can ptrace it or
        // open its /proc/PID/exe (our binary) meanwhile.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| io_err("make the runtime non-dumpable")(e.into()))?;
        let step = trace::begin();
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
                        mount_sources: &mount_sources,
                    },
                    child_chan,
                )
            }
            sys::Forked::Parent(pid) => pid,
        };
        drop(child_chan);
        drop(gate);
        drop(console_child);
        drop(mount_sources);
        guard.pids.push(pid);
        let uid_maps = linux.uid_mappings().clone().unwrap_or_default();
        let gid_maps = linux.gid_mappings().clone().unwrap_or_default();
        if namespaces_made && plan.creates(LinuxNamespaceType::User) {
            write_id_maps(pid, &uid_maps, &gid_maps)?;
        }
        // Ended before the init may go on, so its steps come after.
        let step = trace::end("init cloned into its namespaces", step);
        send_to_init(&mut chan, pid, &ToChild::Proceed { host_pid: pid })?;
        if !early_cgroup {
            cgroup.create()?;
            cgroup.apply(&resources, &devices)?;
            trace::end(
                "cgroup created, limits applied (while the init mounts)",
                step,
            );
        }
        // The child moves itself into its cgroup (see Cgroup::join_self).
        send_to_init(&mut chan, pid, &ToChild::CgroupReady)?;
        tracing::debug!(container = %opts.id, pid, "init cloned");
        let mut init_pid = pid;
        record.pid = pid;
        let mut net_devices = linux.net_devices().clone().unwrap_or_default();
        loop {
            // Never a blocking read on a dead init: see Channel::recv_from.
            let msg = chan.recv_from::<ToParent>(init_pid)?;
            // The init is in its namespaces once it mounts (hooks) or is
            // ready: move linux.netDevices into its network namespace.
            if !net_devices.is_empty()
                && matches!(msg, Some(ToParent::RunCreateHooks | ToParent::Ready))
            {
                crate::netdev::move_devices(init_pid, &std::mem::take(&mut net_devices))?;
            }
            match msg {
                Some(ToParent::NeedIdMaps) => {
                    write_id_maps(pid, &uid_maps, &gid_maps)?;
                    send_to_init(&mut chan, pid, &ToChild::Proceed { host_pid: pid })?;
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
                    send_to_init(
                        &mut chan,
                        init_pid,
                        &ToChild::Proceed { host_pid: init_pid },
                    )?;
                }
                Some(ToParent::SeccompListener) => {
                    record.pid = init_pid;
                    let state = state_json(&record, Status::Creating);
                    let fd = chan.recv_fd()?;
                    if let Some(listener) = seccomp.as_ref().and_then(|f| f.listener()) {
                        crate::seccomp::notify::send_to_agent(
                            listener,
                            spec.version(),
                            init_pid,
                            &state,
                            fd.as_fd(),
                        )?;
                    }
                    drop(fd);
                    send_to_init(
                        &mut chan,
                        init_pid,
                        &ToChild::Proceed { host_pid: init_pid },
                    )?;
                }
                Some(ToParent::Steps(steps)) => trace::add(steps),
                Some(ToParent::Ready) => break,
                Some(ToParent::Error(msg)) => return Err(ContainerError::Init(msg)),
                None => {
                    let status = waitpid(Pid::from_raw(init_pid), Some(WaitPidFlag::WNOHANG));
                    return Err(ContainerError::InitDied(format!("{status:?}")));
                }
            }
        }
        let step = trace::end("init set up (until it is ready)", step);
        record.pid = init_pid;
        record.pid_start = state::process_start_time(init_pid).unwrap_or(0);
        self.root.save(&record)?;
        trace::end("state saved", step);
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
            Status::Running => {
                return Err(ContainerError::WrongState {
                    id: id.into(),
                    status,
                    why: "cannot start an already running container",
                })
            }
            _ => return Err(ContainerError::CannotStart(status)),
        }
        let step = trace::begin();
        let dir = self.root.dir(id);
        let dir_fd = open_dir(&dir)?;
        let path = socket_path(&dir_fd, &dir, EXEC_SOCKET);
        let mut conn = UnixStream::connect(&path).map_err(|e| ContainerError::WrongState {
            id: id.into(),
            status: Status::Stopped,
            why: if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "container not running"
            } else {
                "cannot reach the container's init"
            },
        })?;
        let _ = std::fs::remove_file(dir.join(EXEC_SOCKET));
        let step = trace::end("state loaded, init reached", step);
        conn.write_all(b"s").map_err(io_err("signal start"))?;
        let mut reply = String::new();
        // End of file: the socket closed on the init's execve.
        let _ = conn.read_to_string(&mut reply);
        let step = trace::end("init released: seccomp, user, execve", step);
        if !reply.is_empty() {
            return Err(ContainerError::Init(reply));
        }
        // As runc (and the spec): a failing poststart hook stops the
        // container and fails start.
        if let Err(e) = run_stage_hooks(
            &record.spec,
            "poststart",
            &state_json(&record, Status::Running),
        ) {
            let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            return Err(e.into());
        }
        trace::end("poststart hooks", step);
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
        // From here a failure must remove the container it made.
        let proxy = match spawned
            .console_peer
            .take()
            .map(|peer| console::recv_fd(&peer))
        {
            Some(Ok(master)) => Some(Proxy::new(master)),
            Some(Err(e)) => {
                let _ = self.destroy(&spawned.record, &spawned.cgroup);
                return Err(e.into());
            }
            None => None,
        };
        if let Err(e) = send_to_init(&mut spawned.chan, spawned.record.pid, &ToChild::Start) {
            drop(proxy);
            let _ = self.destroy(&spawned.record, &spawned.cgroup);
            return Err(e);
        }
        match spawned.chan.recv_from::<ToParent>(spawned.record.pid) {
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
            drop(proxy);
            let _ = self.destroy(&spawned.record, &spawned.cgroup);
            return Err(e.into());
        }
        tracing::debug!(container = %id, "process started");
        let code = supervise(spawned.record.pid, proxy)?;
        tracing::debug!(container = %id, code, "process exited");
        self.destroy(&spawned.record, &spawned.cgroup)?;
        tracing::debug!(container = %id, "container removed");
        Ok(code)
    }
}
