//! `exec`: a new process in a running container, entering its namespaces
//! and cgroup.

use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::channel::{Channel, ToChild, ToParent};
use crate::console::{self, Proxy};
use crate::init::{self, TenantConfig};
use crate::namespaces;
use crate::spec::SpecError;
use crate::state::{Record, Status};
use crate::sys;

use super::supervise::{block_signals, supervise};
use super::{
    console_ends, io_err, open_unified, write_pid_file, ContainerError, ExecOptions, ExecProcess,
    Runtime,
};

impl Runtime {
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
                    why: "cannot exec in a stopped container",
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
        let invalid = |e: crate::sched::SchedError| SpecError::Invalid(e.to_string());
        let attributes =
            crate::sched::Attributes::for_exec(&process, &record.spec).map_err(invalid)?;
        let affinity =
            crate::sched::ExecAffinity::for_exec(&process, &record.spec).map_err(invalid)?;
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
        // The process is born on execCPUAffinity.initial; we go back after.
        let saved = affinity
            .enter_initial()
            .map_err(|e| ContainerError::Usage(e.to_string()))?;
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
                        attributes,
                        affinity,
                    },
                    child_chan,
                )
            }
            sys::Forked::Parent(pid) => pid,
        };
        saved.restore();
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
        loop {
            match chan.recv_from::<ToParent>(pid) {
                Ok(None) => break,
                Ok(Some(ToParent::Error(msg))) => return Err(fail(ContainerError::Init(msg))),
                Ok(Some(ToParent::SeccompListener)) => {
                    hand_listener_to_agent(&record, seccomp.as_ref(), pid, &mut chan)
                        .map_err(fail)?;
                }
                Ok(Some(other)) => {
                    return Err(fail(ContainerError::Init(format!(
                        "unexpected message {other:?}"
                    ))))
                }
                Err(e) => return Err(fail(e.into())),
            }
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

/// Passes an `exec`'d process's seccomp listener to the agent, with the
/// container's state (running, the init's pid) as runc sends it.
fn hand_listener_to_agent(
    record: &Record,
    seccomp: Option<&crate::seccomp::Filter>,
    pid: i32,
    chan: &mut Channel,
) -> Result<(), ContainerError> {
    let fd = chan.recv_fd()?;
    if let Some(listener) = seccomp.and_then(|f| f.listener()) {
        let state = serde_json::to_vec(&record.oci_state(Status::Running)).unwrap_or_default();
        crate::seccomp::notify::send_to_agent(
            listener,
            record.spec.version(),
            pid,
            &state,
            fd.as_fd(),
        )?;
    }
    chan.send(&ToChild::Proceed { host_pid: pid })?;
    Ok(())
}

/// The process an `exec` runs: a process.json, or the container's process
/// with the command line's changes.
fn exec_process(record: &Record, source: &ExecProcess) -> Result<Process, ContainerError> {
    let mut process = match source {
        ExecProcess::File(path) => {
            let data = std::fs::read(path).map_err(io_err(format!("read {}", path.display())))?;
            let p: Process = crate::sched::parse_with_sched_flags(&data, "/scheduler/flags")
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
