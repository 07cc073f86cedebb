//! The message channel between the runtime and the container process it is
//! setting up: length-prefixed JSON over a socketpair.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("create socketpair: {0}")]
    Create(std::io::Error),
    #[error("send {what}: {source}")]
    Send {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("receive: {0}")]
    Receive(std::io::Error),
    #[error("receive: malformed message: {0}")]
    Malformed(String),
    #[error("receive a descriptor: {0}")]
    ReceiveFd(String),
}

/// Messages from the container process to the runtime.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToParent {
    /// A new user namespace exists: write its uid and gid maps.
    NeedIdMaps,
    /// The init forked into its new pid namespace; this is the real init.
    InitPid(i32),
    /// Mounts are done, pivot_root is next: run prestart and createRuntime hooks.
    RunCreateHooks,
    /// The seccomp filter with its notify listener is installed; the
    /// listener follows on the channel (SCM_RIGHTS): hand it to the agent at
    /// `linux.seccomp.listenerPath`, then send `Proceed`.
    SeccompListener,
    /// The init's step timings of a traced create (see [`crate::trace`]),
    /// sent just before `Ready`.
    Steps(Vec<crate::trace::Step>),
    /// Everything is set up; the process waits for start.
    Ready,
    Error(String),
}

/// Messages from the runtime to the container process.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// Go on; `host_pid` is the init's pid as the host sees it.
    Proceed { host_pid: i32 },
    /// The container's cgroup exists and has its limits: join it.
    CgroupReady,
    /// Exec the user's process now (`run`, which needs no exec socket).
    Start,
}

pub struct Channel {
    stream: UnixStream,
}

impl Channel {
    /// Two connected ends; both close on exec.
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = UnixStream::pair().map_err(ChannelError::Create)?;
        Ok((Channel { stream: a }, Channel { stream: b }))
    }

    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ChannelError> {
        let body = serde_json::to_vec(msg).map_err(|e| ChannelError::Malformed(e.to_string()))?;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .map_err(|source| ChannelError::Send {
                what: std::any::type_name::<T>(),
                source,
            })
    }

    /// The next message, or None if the other end closed (it exited, or
    /// exec'd and its end was closed on exec).
    pub fn recv<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, ChannelError> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(ChannelError::Receive(e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > 1 << 20 {
            return Err(ChannelError::Malformed(format!("frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.stream
            .read_exact(&mut body)
            .map_err(ChannelError::Receive)?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ChannelError::Malformed(e.to_string()))
    }

    /// The next message from process `pid` (the other end), or None once
    /// that process has exited and left nothing queued, even if its end of
    /// the channel is still open somewhere else: a dead peer is never
    /// waited for. Its exit is seen through a pidfd, or, on kernels
    /// without pidfds, by looking at it every 50 ms.
    pub fn recv_from<T: for<'de> Deserialize<'de>>(
        &mut self,
        pid: i32,
    ) -> Result<Option<T>, ChannelError> {
        let pidfd = crate::sys::pidfd_open(pid).ok();
        loop {
            if self.readable(PollTimeout::ZERO)? {
                return self.recv();
            }
            let exited = match &pidfd {
                Some(fd) => wait_readable(&self.stream, fd.as_fd())?,
                None => {
                    !self.readable(PollTimeout::from(50u8))?
                        && crate::state::process_start_time(pid).is_none()
                }
            };
            if exited {
                // A last message may have been queued just before the exit.
                if self.readable(PollTimeout::ZERO)? {
                    return self.recv();
                }
                return Ok(None);
            }
        }
    }

    /// Whether a read would not block (data, end of file or an error).
    fn readable(&self, timeout: PollTimeout) -> Result<bool, ChannelError> {
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(ChannelError::Receive(e.into())),
        }
    }

    /// Sends a descriptor (SCM_RIGHTS) with `name` as the data.
    pub fn send_fd(&mut self, fd: BorrowedFd<'_>, name: &str) -> Result<(), ChannelError> {
        crate::console::send_fd(&self.stream, fd.as_raw_fd(), name).map_err(|e| {
            ChannelError::Send {
                what: "descriptor",
                source: std::io::Error::other(e.to_string()),
            }
        })
    }

    /// Receives the descriptor `send_fd` sent (nothing else may be queued
    /// behind it: the sender waits for an answer).
    pub fn recv_fd(&mut self) -> Result<OwnedFd, ChannelError> {
        crate::console::recv_fd(&self.stream).map_err(|e| ChannelError::ReceiveFd(e.to_string()))
    }
}

/// Waits until `stream` or `pidfd` is readable; true when it was the pidfd
/// alone (the process exited).
fn wait_readable(stream: &UnixStream, pidfd: BorrowedFd<'_>) -> Result<bool, ChannelError> {
    let mut fds = [
        PollFd::new(stream.as_fd(), PollFlags::POLLIN),
        PollFd::new(pidfd, PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(false),
        Err(e) => return Err(ChannelError::Receive(e.into())),
    }
    let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
    Ok(!ready(&fds[0]) && ready(&fds[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&ToParent::InitPid(42)).unwrap();
        assert!(matches!(
            b.recv::<ToParent>().unwrap(),
            Some(ToParent::InitPid(42))
        ));
        drop(a);
        assert!(b.recv::<ToParent>().unwrap().is_none());
    }

    /// The peer's end stays open in another process (here: this one), and
    /// the peer process exits: the wait ends instead of blocking for ever.
    #[test]
    fn a_dead_peer_is_not_waited_for() {
        let (_held_elsewhere, mut b) = Channel::pair().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        assert!(b
            .recv_from::<ToParent>(child.id() as i32)
            .unwrap()
            .is_none());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        child.wait().unwrap();
    }

    /// A message queued before the peer exited is still delivered.
    #[test]
    fn a_last_message_is_read() {
        let (mut a, mut b) = Channel::pair().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        a.send(&ToParent::Ready).unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(matches!(
            b.recv_from::<ToParent>(pid).unwrap(),
            Some(ToParent::Ready)
        ));
        child.wait().unwrap();
    }
}
