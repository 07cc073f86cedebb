//! A foreground `run` or `exec`: signals forwarded to the container's
//! process, its exit waited for and turned into the runtime's exit code.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::console::Proxy;
use crate::state::Record;

use super::{io_err, ContainerError};

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

pub(super) fn block_signals() -> Result<(), ContainerError> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded_signals()), None)
        .map_err(|e| io_err("block signals")(e.into()))
}

/// Waits for `pid` to exit while forwarding signals to it (and copying a
/// terminal, if any). Returns its exit code, 128+N for signal N.
pub(super) fn supervise(pid: i32, proxy: Option<Proxy>) -> Result<i32, ContainerError> {
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
pub(super) fn wait_gone(record: &Record, limit: Duration) -> bool {
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
