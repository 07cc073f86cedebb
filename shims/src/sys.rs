//! The shim's few calls without a safe wrapper, behind safe functions.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use nix::unistd::ForkResult;

/// Forks the calling process.
///
/// Call only while the process has a single thread: the shim forks once, in
/// `main`, before it starts anything.
pub fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: the shim calls this from main before any thread exists, so the
    // child is a consistent copy and may allocate and run ordinary code.
    unsafe { nix::unistd::fork() }
}

/// One descriptor to watch, and what happened to it.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    pub fd: RawFd,
    pub read: bool,
    pub write: bool,
    /// Readable, or hung up / in error (a read will tell which).
    pub readable: bool,
    /// Writable, or hung up / in error (a write will tell which).
    pub writable: bool,
}

impl Watch {
    pub fn new(fd: RawFd, read: bool, write: bool) -> Self {
        Watch {
            fd,
            read,
            write,
            readable: false,
            writable: false,
        }
    }
}

/// `poll(2)` on `watches`, waiting at most `timeout_ms` (-1: no limit).
/// Fills `readable` and `writable`; an interrupted call returns 0.
pub fn poll(watches: &mut [Watch], timeout_ms: i32) -> io::Result<usize> {
    let mut fds: Vec<libc::pollfd> = watches
        .iter()
        .map(|w| libc::pollfd {
            fd: w.fd,
            events: (if w.read { libc::POLLIN } else { 0 })
                | (if w.write { libc::POLLOUT } else { 0 }),
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures that
    // outlives the call; poll only writes their revents.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    let trouble = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    for (w, p) in watches.iter_mut().zip(&fds) {
        w.readable = w.read && p.revents & (libc::POLLIN | trouble) != 0;
        w.writable = w.write && p.revents & (libc::POLLOUT | trouble) != 0;
    }
    Ok(n as usize)
}

/// Sets the window size of the terminal whose master is `fd` (TIOCSWINSZ).
pub fn set_winsize(fd: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at
    // a live local; `fd` is an open descriptor for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from 3 up except `keep`: what the shim's
/// starter left open (without close-on-exec) must not stay pinned by the
/// shim for the container's lifetime.
///
/// Call only before the process opens descriptors of its own (other than
/// `keep`): the shim does so right after it forks.
pub fn close_inherited_fds(keep: RawFd) -> io::Result<()> {
    let mut fds: Vec<RawFd> = Vec::new();
    for entry in std::fs::read_dir(Path::new("/proc/self/fd"))? {
        let name = entry?.file_name();
        if let Some(fd) = name.to_str().and_then(|n| n.parse::<RawFd>().ok()) {
            fds.push(fd);
        }
    }
    // The directory's own descriptor was in the listing; it is closed now
    // and closing it again below fails harmlessly with EBADF.
    for fd in fds.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        // SAFETY: nothing in this process owns these descriptors: they were
        // inherited, and the shim has opened none but `keep` yet.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// A descriptor that becomes readable when process `pid` (a child of ours,
/// not yet reaped) exits: waiting on it wakes at the exit instead of polling
/// with a timer. `None` where the kernel lacks `pidfd_open` (before 5.3).
pub fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
