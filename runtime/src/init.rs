//! What runs in the new process between clone and exec: the container's
//! init (`create`/`run`) and extra processes (`exec`).
//!
//! The runtime is single-threaded, so this code may allocate (see
//! `sys::clone_process`). Every failure is sent to the runtime as a message
//! and the process exits; nothing here returns to the caller's code.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::cgroups::Cgroup;
use crate::channel::{Channel, ChannelError, ToChild, ToParent};
use crate::console::{self, ConsoleError};
use crate::hooks::{self, HookError};
use crate::namespaces::{self, NamespaceError, Plan};
use crate::process::{self, ProcessError};
use crate::rootfs::{self, MountContext, RootfsError};
use crate::state::{OciState, Status};
use crate::sys;
use crate::trace;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Sched(#[from] crate::sched::SchedError),
    #[error("the runtime went away during setup")]
    ParentGone,
    #[error("{0}")]
    Setup(String),
}

/// How the init learns that it may exec.
pub enum Gate {
    /// `create`: a `start` command connects to this socket.
    Socket(UnixListener),
    /// `run`: the runtime sends `Start` over the setup channel.
    Channel,
}

/// Everything the container's init needs, prepared by the runtime.
pub struct InitConfig<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a Plan,
    pub cgroup: &'a Cgroup,
    /// Whether clone already created the new namespaces (no joins needed).
    pub namespaces_made: bool,
    /// Whether clone placed us in the container's unified-tree cgroup.
    pub in_unified: bool,
    pub console: Option<UnixStream>,
    pub gate: Gate,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    /// The compiled seccomp profile, checked before clone.
    pub seccomp: Option<&'a crate::seccomp::Filter>,
    /// Id-mapped copies of mount sources, made by the runtime.
    pub mount_sources: &'a rootfs::MountSources,
}

fn proceed(chan: &mut Channel) -> Result<i32, InitError> {
    match chan.recv::<ToChild>()? {
        Some(ToChild::Proceed { host_pid }) => Ok(host_pid),
        _ => Err(InitError::ParentGone),
    }
}

/// Entry point of the container's init in the cloned process.
pub fn run_init(cfg: InitConfig<'_>, mut chan: Channel) -> ! {
    let err = match init(cfg, &mut chan) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = chan.send(&ToParent::Error(err.to_string()));
    sys::exit_now(1)
}

enum Never {}

/// The state on the stdin of the hooks the init runs (createContainer,
/// startContainer): they run in the container's namespaces, so the pid is
/// the init's as the container sees it (the spec's rule; runc's init
/// reports its getpid too).
fn hook_state(cfg: &InitConfig<'_>, status: Status) -> Vec<u8> {
    let state = OciState {
        oci_version: cfg.spec.version(),
        id: cfg.id,
        status,
        pid: Some(nix::unistd::getpid().as_raw()),
        bundle: cfg.bundle,
        annotations: cfg.spec.annotations().clone().unwrap_or_default(),
    };
    serde_json::to_vec(&state).unwrap_or_default()
}

fn init(mut cfg: InitConfig<'_>, chan: &mut Channel) -> Result<Never, InitError> {
    // The steps the runtime recorded before clone are its own to write.
    drop(trace::take());
    let gate = std::mem::replace(&mut cfg.gate, Gate::Channel);
    let console = cfg.console.take();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // Die with the runtime while setting up; cleared once we are ready.
    sys::set_parent_death_signal(libc::SIGKILL).map_err(|e| InitError::Setup(e.to_string()))?;
    let host_pid = proceed(chan)?;
    let step = trace::begin();
    let plan = cfg.plan;
    // The runtime makes the cgroup while we mount, unless we must join it
    // first: in a new user namespace while we still hold the host's ids
    // (so the cgroup files are ours to write), or before forking into a
    // new pid namespace. See Runtime::spawn.
    // The OOM score first, as runc's nsexec sets it: once we are root of
    // a new or joined user namespace our /proc files are no longer ours
    // to write (they stay the host root's until we exec).
    if let Some(adj) = cfg.spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        process::set_oom_score_adj(adj)?;
    }
    let mut joined = false;
    if !cfg.namespaces_made || plan.creates(LinuxNamespaceType::User) {
        join_cgroup(&cfg, chan)?;
        joined = true;
    }
    if !cfg.namespaces_made {
        join_and_unshare(plan, chan, host_pid)?;
    } else if plan.creates(LinuxNamespaceType::User) {
        become_namespace_root()?;
    }
    // A new time namespace, owned by our user namespace, with its offsets
    // written before anything enters it (neither clone path makes it).
    if plan.creates(LinuxNamespaceType::Time) {
        let offsets = cfg
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.time_offsets().clone());
        namespaces::enter_new_time_namespace(&offsets.unwrap_or_default())?;
    }
    // A new cgroup namespace is made once we are in our cgroup (which
    // becomes its root) and in our user namespace, and before any cgroup
    // mount: a cgroup2 mount shows the namespace's root.
    let mut cgroupns_made = false;
    if joined {
        enter_cgroup_namespace(plan, &mut cgroupns_made)?;
    }
    let step = trace::end("init: namespaces entered", step);
    let process = cfg
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::Setup("process is missing from the config".into()))?;
    let linux = cfg.spec.linux().clone().unwrap_or_default();
    let mounts = cfg.spec.mounts().clone().unwrap_or_default();
    let userns = plan.has(LinuxNamespaceType::User);
    // Without a mount namespace the root is prepared in the runtime's, as
    // runc does (see rootfs::host_ns).
    let mountns = plan.has(LinuxNamespaceType::Mount);
    if mountns {
        rootfs::prepare_root(cfg.rootfs, linux.rootfs_propagation().as_deref())?;
    } else {
        rootfs::host_ns::bind_root(cfg.rootfs)?;
    }
    let root_dir = rootfs::RootDir::open(cfg.rootfs)?;
    let ctx = MountContext {
        rootfs: &root_dir,
        cgroup: Some(cfg.cgroup),
        cgroupns: plan.has(LinuxNamespaceType::Cgroup),
        userns,
        netns: plan.has(LinuxNamespaceType::Network),
        ipcns: plan.has(LinuxNamespaceType::Ipc),
        sources: cfg.mount_sources,
    };
    for (index, m) in mounts.iter().enumerate() {
        // A cgroup mount shows the container's cgroup: it must exist.
        if !joined && matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2")) {
            join_cgroup(&cfg, chan)?;
            joined = true;
            enter_cgroup_namespace(plan, &mut cgroupns_made)?;
        }
        rootfs::mount_one(&ctx, index, m)?;
    }
    if !rootfs::binds_host_dev(&mounts) {
        let has_devpts = mounts.iter().any(|m| {
            m.destination() == Path::new("/dev/pts") && m.typ().as_deref() == Some("devpts")
        });
        rootfs::create_devices(
            cfg.rootfs,
            linux.devices().as_deref().unwrap_or(&[]),
            userns,
            has_devpts,
        )?;
    }
    // runc creates a missing working directory; so do we, inside the root.
    let cwd = rootfs::resolve_in_root(cfg.rootfs, process.cwd())?;
    if !cwd.exists() {
        std::fs::create_dir_all(&cwd).map_err(|e| {
            InitError::Setup(format!("create cwd {}: {e}", process.cwd().display()))
        })?;
    } else if !cwd.is_dir() {
        // Found now, as runc does, rather than at start.
        return Err(InitError::Setup(format!(
            "chdir to cwd ({:?}) set in config.json failed: not a directory",
            process.cwd()
        )));
    }
    if !joined {
        join_cgroup(&cfg, chan)?;
    }
    let step = trace::end("init: rootfs mounts and devices", step);
    // The root's descriptor must not outlive the mounts (CVE-2024-21626:
    // a process.cwd of /proc/self/fd/N would lead through it).
    drop(root_dir);
    // Prestart and createRuntime hooks run in the runtime, now; without
    // any, the round trip is skipped.
    let hooks = cfg.spec.hooks().as_ref();
    #[allow(
        deprecated,
        reason = "prestart hooks are deprecated in the spec, and still run"
    )]
    let runtime_hooks = hooks.is_some_and(|h| {
        h.prestart().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
    });
    if runtime_hooks {
        chan.send(&ToParent::RunCreateHooks)?;
        proceed(chan)?;
    }
    enter_cgroup_namespace(plan, &mut cgroupns_made)?;
    if let Some(h) = cfg
        .spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
    {
        // Without `env`, the process's environment, as in runc's init.
        hooks::run_hooks_with_env(
            "createContainer",
            &h,
            &hook_state(&cfg, Status::Creating),
            process.env().as_deref().unwrap_or_default(),
        )?;
    }
    if !mountns {
        rootfs::host_ns::chroot_root(cfg.rootfs)?;
    } else if cfg.no_pivot {
        rootfs::move_root(cfg.rootfs)?;
    } else {
        rootfs::pivot_root(cfg.rootfs)?;
    }
    let step = trace::end("init: hooks, pivot_root", step);
    let mounts_proc = mounts
        .iter()
        .any(|m| m.destination() == Path::new("/proc") && m.typ().as_deref() == Some("proc"));
    if mounts_proc {
        rootfs::check_proc_is_procfs()?;
    }
    if let Some(sysctl) = linux.sysctl() {
        rootfs::set_sysctls(sysctl.iter())?;
    }
    rootfs::readonly_paths(linux.readonly_paths().as_deref().unwrap_or(&[]))?;
    rootfs::mask_paths(linux.masked_paths().as_deref().unwrap_or(&[]))?;
    if cfg.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        rootfs::readonly_root()?;
    }
    let step = trace::end("init: sysctls, masked and read-only paths", step);
    set_uts(cfg.spec, plan)?;
    if process.terminal() == Some(true) {
        attach_terminal(process, console.as_ref())?;
    } else {
        nix::unistd::setsid().map_err(|e| InitError::Setup(format!("setsid: {e}")))?;
    }
    process::set_rlimits(process.rlimits().as_deref().unwrap_or(&[]))?;
    apply_lsm_labels(process)?;
    // Capability sets the kernel would refuse after start fail create, as
    // runc's do.
    process::check_capabilities(process)?;
    let prepared = process::prepare(process)?;
    crate::sched::Attributes::for_init(cfg.spec)?.apply()?;
    drop(console);
    cfg.seccomp = hand_over_listener(cfg.seccomp, chan)?;
    sys::set_parent_death_signal(0).map_err(|e| InitError::Setup(e.to_string()))?;
    if trace::end("init: hostname, terminal, rlimits, capabilities", step).is_some() {
        chan.send(&ToParent::Steps(trace::take()))?;
    }
    chan.send(&ToParent::Ready)?;

    // From here on errors go to whoever started us.
    let mut reply: Option<UnixStream> = None;
    match &gate {
        Gate::Socket(listener) => {
            let (mut conn, _) = listener
                .accept()
                .map_err(|e| InitError::Setup(format!("wait for start: {e}")))?;
            let mut go = [0u8; 1];
            conn.read_exact(&mut go)
                .map_err(|e| InitError::Setup(format!("wait for start: {e}")))?;
            reply = Some(conn);
        }
        Gate::Channel => match chan.recv::<ToChild>()? {
            Some(ToChild::Start) => {}
            _ => return Err(InitError::ParentGone),
        },
    }
    drop(gate);
    let result = finish(&cfg, process, &prepared);
    let err = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    if let Some(mut conn) = reply {
        let _ = conn.write_all(err.to_string().as_bytes());
        sys::exit_now(1)
    }
    Err(err)
}

/// After start: become the user, run the startContainer hooks, exec.
///
/// The hooks run as runc runs them: as the process's user, with its
/// capabilities, working directory and seccomp filter, with the process's
/// environment unless they give their own. A failing hook stops the
/// container as it stops runc's: its error goes to the container's stderr
/// and the init exits, without failing `start` (which then runs the
/// poststart hooks, as runc's does).
fn finish(
    cfg: &InitConfig<'_>,
    process: &Process,
    prepared: &process::Prepared,
) -> Result<Never, InitError> {
    become_process(process, cfg.plan.has(LinuxNamespaceType::User), cfg.seccomp)?;
    if let Some(h) = cfg
        .spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().clone())
    {
        let env: Vec<String> = prepared
            .env
            .iter()
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        let state = hook_state(cfg, Status::Created);
        if let Err(e) = hooks::run_hooks_with_env("startContainer", &h, &state, &env) {
            let _ = writeln!(std::io::stderr(), "{e}");
            sys::exit_now(1)
        }
    }
    Err(process::exec(prepared, cfg.preserve_fds).into())
}

/// The user switch, working directory, no_new_privs and seccomp, shared
/// with exec. Without no_new_privs, installing a filter needs CAP_SYS_ADMIN,
/// so it goes in before capabilities are dropped; with it, as late as
/// possible, so that the fewest syscalls run under the filter (as runc).
fn become_process(
    process: &Process,
    userns: bool,
    seccomp: Option<&crate::seccomp::Filter>,
) -> Result<(), InitError> {
    let nnp = process.no_new_privileges() == Some(true);
    if let (Some(filter), false) = (seccomp, nnp) {
        filter.install()?;
    }
    let setgroups_allowed = !userns
        || std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow");
    process::switch_user(process, setgroups_allowed)?;
    process::change_dir(process.cwd())?;
    if nnp {
        process::set_no_new_privileges()?;
        if let Some(filter) = seccomp {
            filter.install()?;
        }
    }
    Ok(())
}

/// A filter with a notify listener is installed at once, while the runtime
/// waits to pass the listener to the agent (as runc, before the start gate);
/// returns the filter still to install later, if any.
fn hand_over_listener<'a>(
    seccomp: Option<&'a crate::seccomp::Filter>,
    chan: &mut Channel,
) -> Result<Option<&'a crate::seccomp::Filter>, InitError> {
    match seccomp {
        Some(filter) if filter.listener().is_some() => {
            crate::seccomp::notify::install_and_hand_over(filter, chan)?;
            Ok(None)
        }
        other => Ok(other),
    }
}

/// The general path: join namespaces by path while still privileged in the
/// host's user namespace, then create the new ones; a new pid namespace
/// takes one more fork, whose child becomes the init. Returns the init's
/// host pid.
fn join_and_unshare(plan: &Plan, chan: &mut Channel, host_pid: i32) -> Result<i32, InitError> {
    for (typ, path) in &plan.join {
        if *typ == LinuxNamespaceType::Pid {
            continue; // joined by the runtime before clone
        }
        let fd = namespaces::open(path)?;
        namespaces::join(*typ, &fd, path)?;
        // Root of a joined user namespace (joined first), so that what we
        // make in it (a tmpfs's directories) has ids it maps.
        if *typ == LinuxNamespaceType::User {
            become_namespace_root()?;
        }
    }
    let flags = plan.new
        - CloneFlags::CLONE_NEWPID
        - CloneFlags::CLONE_NEWCGROUP
        - namespaces::clone_flag(LinuxNamespaceType::Time);
    namespaces::unshare(flags)?;
    if flags.contains(CloneFlags::CLONE_NEWUSER) {
        chan.send(&ToParent::NeedIdMaps)?;
        proceed(chan)?;
        become_namespace_root()?;
    }
    if !plan.creates(LinuxNamespaceType::Pid) {
        return Ok(host_pid);
    }
    namespaces::unshare(CloneFlags::CLONE_NEWPID)?;
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| InitError::Setup(format!("pipe: {e}")))?;
    match sys::clone_process(0, None)
        .map_err(|e| InitError::Setup(format!("fork into the pid namespace: {e}")))?
        .0
    {
        sys::Forked::Parent(child) => {
            drop(rx);
            chan.send(&ToParent::InitPid(child))?;
            let _ = nix::unistd::write(&tx, &child.to_le_bytes());
            sys::exit_now(0)
        }
        sys::Forked::Child => {
            // No parent-death signal here: our parent exits on purpose, and
            // we are re-parented to the runtime, which is a subreaper.
            drop(tx);
            let mut pid = [0u8; 4];
            let mut file = std::fs::File::from(rx);
            file.read_exact(&mut pid)
                .map_err(|_| InitError::ParentGone)?;
            Ok(i32::from_le_bytes(pid))
        }
    }
}

/// Unshares the cgroup namespace the config asks for, once.
fn enter_cgroup_namespace(plan: &Plan, made: &mut bool) -> Result<(), InitError> {
    if plan.creates(LinuxNamespaceType::Cgroup) && !*made {
        namespaces::unshare(CloneFlags::CLONE_NEWCGROUP)?;
        *made = true;
    }
    Ok(())
}

/// Waits until the runtime has made the container's cgroup, and joins it.
fn join_cgroup(cfg: &InitConfig<'_>, chan: &mut Channel) -> Result<(), InitError> {
    match chan.recv::<ToChild>()? {
        Some(ToChild::CgroupReady) => {
            cfg.cgroup.join_self(cfg.in_unified)?;
            crate::sched::reset_affinity();
            Ok(())
        }
        _ => Err(InitError::ParentGone),
    }
}

/// After clone into a new user namespace we still carry the host's ids,
/// which the namespace does not map: take its root's, as runc does, so that
/// files we create belong to the container's root.
fn become_namespace_root() -> Result<(), InitError> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| InitError::Setup(format!("become root of the user namespace (gid): {e}")))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| InitError::Setup(format!("become root of the user namespace (uid): {e}")))?;
    Ok(())
}

fn set_uts(spec: &Spec, plan: &Plan) -> Result<(), InitError> {
    let private = plan.has(LinuxNamespaceType::Uts);
    for (what, value) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        let Some(value) = value.as_deref().filter(|v| !v.is_empty()) else {
            continue;
        };
        if !private {
            return Err(InitError::Setup(format!(
                "cannot set {what} without a private UTS namespace"
            )));
        }
        let result = if what == "hostname" {
            nix::unistd::sethostname(value).map_err(std::io::Error::from)
        } else {
            sys::set_domainname(value)
        };
        result.map_err(|e| InitError::Setup(format!("set {what} {value:?}: {e}")))?;
    }
    Ok(())
}

/// Opens a pty in the container, hands its master to the console socket and
/// makes its slave our terminal.
fn attach_terminal(process: &Process, socket: Option<&UnixStream>) -> Result<(), InitError> {
    let socket = socket.ok_or_else(|| {
        InitError::Setup("process.terminal is set but no console socket was given".into())
    })?;
    let pty = console::open_pty()?;
    if let Some(size) = process.console_size() {
        let _ = sys::set_window_size(
            pty.master.as_fd(),
            size.height() as u16,
            size.width() as u16,
        );
    }
    let _ = nix::unistd::fchown(&pty.slave, Some(process.user().uid().into()), None);
    console::send_fd(socket, pty.master.as_raw_fd(), &pty.name)?;
    console::become_terminal_owner(&pty.slave)?;
    Ok(())
}

/// AppArmor and SELinux labels: applied when the host has the LSM; a label
/// the host cannot honour is a warning, never a silent pass.
fn apply_lsm_labels(process: &Process) -> Result<(), InitError> {
    if let Some(profile) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y");
        if enabled {
            let attr = ["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .ok_or_else(|| {
                    InitError::Setup(
                        "apparmor is enabled but /proc/self/attr/exec is missing".into(),
                    )
                })?;
            std::fs::write(&attr, format!("exec {profile}"))
                .map_err(|e| InitError::Setup(format!("set apparmor profile {profile}: {e}")))?;
        } else {
            tracing::warn!(
                profile,
                "apparmor profile requested but apparmor is not enabled on this host; not applied"
            );
        }
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        if Path::new("/sys/fs/selinux/enforce").exists() {
            std::fs::write("/proc/self/attr/exec", label)
                .map_err(|e| InitError::Setup(format!("set selinux label {label}: {e}")))?;
        } else {
            tracing::warn!(
                label,
                "selinux label requested but selinux is not enabled on this host; not applied"
            );
        }
    }
    Ok(())
}

/// What an `exec`'d process needs.
pub struct TenantConfig<'a> {
    pub process: &'a Process,
    /// Namespaces of the container to enter, in join order (pid excluded:
    /// the runtime joined it before forking).
    pub namespaces: Vec<(LinuxNamespaceType, OwnedFd, PathBuf)>,
    pub userns: bool,
    pub cgroup: &'a Cgroup,
    pub in_unified: bool,
    pub console: Option<UnixStream>,
    pub preserve_fds: u32,
    pub seccomp: Option<&'a crate::seccomp::Filter>,
    /// Scheduler, I/O priority, personality, memory policy.
    pub attributes: crate::sched::Attributes,
    /// execCPUAffinity: `final` is taken once in the cgroup.
    pub affinity: crate::sched::ExecAffinity,
}

/// Entry point of an exec'd process in the forked child.
pub fn run_tenant(cfg: TenantConfig<'_>, mut chan: Channel) -> ! {
    let err = match tenant(cfg, &mut chan) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = chan.send(&ToParent::Error(err.to_string()));
    sys::exit_now(1)
}

fn tenant(cfg: TenantConfig<'_>, chan: &mut Channel) -> Result<Never, InitError> {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    proceed(chan)?;
    cfg.cgroup.join_self(cfg.in_unified)?;
    cfg.affinity.apply_final()?;
    for (typ, fd, path) in &cfg.namespaces {
        namespaces::join(*typ, fd, path)?;
        if *typ == LinuxNamespaceType::User {
            become_namespace_root()?;
        }
    }
    drop(cfg.namespaces);
    if cfg.process.terminal() == Some(true) {
        attach_terminal(cfg.process, cfg.console.as_ref())?;
    }
    drop(cfg.console);
    process::set_rlimits(cfg.process.rlimits().as_deref().unwrap_or(&[]))?;
    apply_lsm_labels(cfg.process)?;
    process::check_capabilities(cfg.process)?;
    let prepared = process::prepare(cfg.process)?;
    cfg.attributes.apply()?;
    let seccomp = hand_over_listener(cfg.seccomp, chan)?;
    become_process(cfg.process, cfg.userns, seccomp)?;
    Err(process::exec(&prepared, cfg.preserve_fds).into())
}
