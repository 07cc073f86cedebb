//! The message channel between the runtime and the container process it is
//! setting up: length-prefixed JSON over a socketpair.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

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
}
