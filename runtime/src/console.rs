//! Terminals: a pty made inside the container, its master handed to whoever
//! listens on the console socket (SCM_RIGHTS), or proxied to our own stdio.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("connect to console socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("open pty: {0}")]
    Open(std::io::Error),
    #[error("send pty master over the console socket: {0}")]
    Send(nix::Error),
    #[error("receive pty master: {0}")]
    Receive(String),
    #[error("make the pty the controlling terminal: {0}")]
    Control(std::io::Error),
}

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub name: String,
}

/// Opens a new pty from the /dev/ptmx that the current root shows.
pub fn open_pty() -> Result<Pty, ConsoleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")
        .map_err(ConsoleError::Open)?
        .into();
    let number = sys::unlock_pty(master.as_fd()).map_err(ConsoleError::Open)?;
    let name = format!("/dev/pts/{number}");
    let slave = match sys::open_pty_peer(master.as_fd()) {
        Ok(fd) => fd,
        Err(_) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&name)
                .map_err(ConsoleError::Open)?
                .into()
        }
    };
    Ok(Pty {
        master,
        slave,
        name,
    })
}

pub fn connect(path: &Path) -> Result<UnixStream, ConsoleError> {
    UnixStream::connect(path).map_err(|source| ConsoleError::Connect {
        path: path.to_path_buf(),
        source,
    })
}

/// Sends `fd` with `name` as the message body, as runc does.
pub fn send_fd(socket: &UnixStream, fd: RawFd, name: &str) -> Result<(), ConsoleError> {
    let fds = [fd];
    let iov = [IoSlice::new(name.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map(|_| ())
        .map_err(ConsoleError::Send)
}

pub fn recv_fd(socket: &UnixStream) -> Result<OwnedFd, ConsoleError> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| ConsoleError::Receive(e.to_string()))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| ConsoleError::Receive(e.to_string()))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us
                // (SCM_RIGHTS); nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(ConsoleError::Receive("no descriptor in the message".into()))
}

/// In the container process: start a session, make the pty slave its
/// controlling terminal and its stdin, stdout and stderr.
pub fn become_terminal_owner(slave: &OwnedFd) -> Result<(), ConsoleError> {
    nix::unistd::setsid().map_err(|e| ConsoleError::Control(e.into()))?;
    sys::set_controlling_terminal(slave.as_fd()).map_err(ConsoleError::Control)?;
    for target in 0..3 {
        sys::dup_onto(slave.as_fd(), target).map_err(ConsoleError::Control)?;
    }
    Ok(())
}

/// Copies between our stdin/stdout and a pty master until the process on the
/// other side is gone. Host stdin is put in raw mode while it is a terminal.
pub struct Proxy {
    pub master: OwnedFd,
    saved: Option<nix::sys::termios::Termios>,
}

impl Proxy {
    pub fn new(master: OwnedFd) -> Proxy {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            nix::sys::termios::cfmakeraw(&mut raw);
            let _ = nix::sys::termios::tcsetattr(
                stdin.as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                &raw,
            );
        }
        let proxy = Proxy { master, saved };
        proxy.resize();
        proxy
    }

    /// Gives the pty the size of our own terminal.
    pub fn resize(&self) {
        if let Some((rows, cols)) = sys::window_size(std::io::stdin().as_fd()) {
            let _ = sys::set_window_size(self.master.as_fd(), rows, cols);
        }
    }

    /// Moves what is ready; returns false when the master is closed.
    pub fn pump(&self, stdin_ready: bool, master_ready: bool) -> bool {
        let mut buf = [0u8; 16384];
        if master_ready {
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => write_all(std::io::stdout().as_fd(), &buf[..n]),
            }
        }
        if stdin_ready {
            if let Ok(n) = nix::unistd::read(std::io::stdin(), &mut buf) {
                if n > 0 {
                    write_all(self.master.as_fd(), &buf[..n]);
                }
            }
        }
        true
    }

    /// Copies whatever output is left once the process has exited.
    pub fn drain(&self) {
        let fd = self.master.as_fd();
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let mut buf = [0u8; 16384];
        while let Ok(n) = nix::unistd::read(&self.master, &mut buf) {
            if n == 0 {
                break;
            }
            write_all(std::io::stdout().as_fd(), &buf[..n]);
        }
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) | Err(_) => return,
            Ok(n) => data = &data[n..],
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(orig) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}
