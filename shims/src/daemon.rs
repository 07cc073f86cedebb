//! Start-up of the `berth-shim` process: the process the caller starts
//! forks the shim, which leaves the caller's session, points its stdio away
//! from the caller, creates the container and reports back on a pipe; the
//! first process then exits, 0 once the control socket listens and the
//! container is created, 1 with the reason on stderr otherwise. The shim
//! itself is then an orphan in its own session, parented by init or the
//! nearest subreaper, and outlives whoever started it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, pipe2, setsid, ForkResult};
use tracing::{error, Level};

use crate::options::Options;
use crate::server::{Shim, SHIM_LOG_FILE};
use crate::sys;
use crate::trace::LineSubscriber;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("resolve {path}: {source}")]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("make state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("make the start-up pipe: {0}")]
    Pipe(nix::Error),
    #[error("fork: {0}")]
    Fork(nix::Error),
}

/// Makes every path absolute (the shim changes directory to `/`) and the
/// bundle canonical; makes the state directory.
fn prepare(mut opts: Options) -> Result<Options, DaemonError> {
    let absolute = |path: &Path| {
        std::path::absolute(path).map_err(|source| DaemonError::Path {
            path: path.to_path_buf(),
            source,
        })
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.state_dir)
        .map_err(|source| DaemonError::StateDir {
            path: opts.state_dir.clone(),
            source,
        })?;
    opts.state_dir = absolute(&opts.state_dir)?;
    opts.bundle = fs::canonicalize(&opts.bundle).map_err(|source| DaemonError::Path {
        path: opts.bundle.clone(),
        source,
    })?;
    opts.socket = absolute(&opts.socket)?;
    opts.runtime_root = absolute(&opts.runtime_root)?;
    // A bare name is looked up in PATH; anything with a slash is a path.
    if opts.runtime.components().count() > 1 {
        opts.runtime = absolute(&opts.runtime)?;
    }
    if let Some(log) = &opts.log_file {
        opts.log_file = Some(absolute(log)?);
    }
    Ok(opts)
}

/// The shim's `main`: returns the process's exit code.
pub fn run(opts: Options) -> i32 {
    let started = prepare(opts).and_then(|opts| {
        let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(DaemonError::Pipe)?;
        let forked = sys::fork_single_threaded().map_err(DaemonError::Fork)?;
        Ok((opts, forked, ready_r, ready_w))
    });
    match started {
        Err(e) => {
            eprintln!("berth-shim: {e}");
            1
        }
        Ok((_, ForkResult::Parent { child }, ready_r, ready_w)) => {
            drop(ready_w);
            let code = wait_ready(ready_r);
            if code != 0 {
                // The shim failed and exits: reap it here, while it is
                // still this process's child, so it leaves no zombie.
                let _ = waitpid(child, None);
            }
            code
        }
        Ok((opts, ForkResult::Child, ready_r, ready_w)) => {
            drop(ready_r);
            serve(opts, ready_w)
        }
    }
}

/// In the first process: waits for the shim's word and turns it into an
/// exit code.
fn wait_ready(ready: OwnedFd) -> i32 {
    let mut word = String::new();
    let _ = File::from(ready).read_to_string(&mut word);
    if word.starts_with("ok") {
        return 0;
    }
    let reason = word.strip_prefix("error: ").unwrap_or(&word).trim();
    if reason.is_empty() {
        eprintln!("berth-shim: the shim exited during start-up");
    } else {
        eprintln!("berth-shim: {reason}");
    }
    1
}

/// In the shim: detaches, starts, reports, serves.
fn serve(opts: Options, ready: OwnedFd) -> i32 {
    let kept = sys::close_inherited_fds(ready.as_raw_fd());
    let mut ready = File::from(ready);
    if let Err(e) = kept.and_then(|()| detach(&opts.state_dir)) {
        let _ = writeln!(ready, "error: detach from the caller: {e}");
        return 1;
    }
    let level = if opts.debug {
        Level::DEBUG
    } else {
        Level::INFO
    };
    LineSubscriber::new(&opts.id, level).install();
    match Shim::start(opts) {
        Ok(shim) => {
            let _ = ready.write_all(b"ok\n");
            drop(ready);
            shim.run()
        }
        Err(e) => {
            error!(error = %e, "start-up failed");
            let _ = writeln!(ready, "error: {e}");
            1
        }
    }
}

/// New session; stdin from /dev/null, stdout and stderr to `shim.log`;
/// working directory `/`.
fn detach(state_dir: &Path) -> std::io::Result<()> {
    setsid()?;
    let null = File::open("/dev/null")?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(SHIM_LOG_FILE))?;
    dup2_stdin(&null)?;
    dup2_stdout(&log)?;
    dup2_stderr(&log)?;
    std::env::set_current_dir("/")?;
    Ok(())
}
