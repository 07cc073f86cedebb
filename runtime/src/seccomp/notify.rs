//! The seccomp notify listener (`linux.seccomp.listenerPath`,
//! `listenerMetadata`), handed to a seccomp agent as runc does.
//!
//! A profile with `SCMP_ACT_NOTIFY` rules is installed with
//! SECCOMP_FILTER_FLAG_NEW_LISTENER, which gives the init a descriptor on
//! which the kernel queues the notified syscalls. As in runc, the init
//! installs such a filter while the runtime still waits for it (before
//! `Ready`, or before an `exec`'d process execs), sends the descriptor over
//! its setup channel (`SeccompListener`, then SCM_RIGHTS), and waits: the
//! runtime connects to the unix socket at `listenerPath` on the host and
//! sends, in one message, the OCI `containerProcessState` JSON as data and
//! the descriptor as SCM_RIGHTS; then it lets the init go on. Neither keeps
//! the descriptor.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use serde::Serialize;

use super::SeccompError;
use crate::channel::{Channel, ToChild, ToParent};

/// The name of the listener in `fds`, as the runtime-spec gives it.
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// Where the listener goes.
#[derive(Debug, Clone)]
pub struct Listener {
    pub path: PathBuf,
    pub metadata: String,
}

/// runtime-spec's `containerProcessState`: what the agent receives.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerProcessState<'a> {
    oci_version: &'a str,
    fds: [&'a str; 1],
    pid: i32,
    metadata: &'a str,
    state: serde_json::Value,
}

/// Checks a profile's use of SCMP_ACT_NOTIFY with runc's rules: not as the
/// default action, not for `write` (the init writes to the runtime after
/// installing the filter), and only with a `listenerPath`. Returns where the
/// listener goes when some rule notifies (a listenerPath without such a
/// rule is unused, as in runc).
pub fn check(profile: &LinuxSeccomp) -> Result<Option<Listener>, SeccompError> {
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::NotifyDefault);
    }
    let mut notifies = false;
    for sc in profile.syscalls().iter().flatten() {
        if sc.action() == LinuxSeccompAction::ScmpActNotify {
            if sc.names().iter().any(|n| n == "write") {
                return Err(SeccompError::NotifyWrite);
            }
            notifies |= !sc.names().is_empty();
        }
    }
    if !notifies {
        return Ok(None);
    }
    match profile.listener_path().as_ref() {
        Some(path) if !path.as_os_str().is_empty() => Ok(Some(Listener {
            path: path.clone(),
            metadata: profile.listener_metadata().clone().unwrap_or_default(),
        })),
        _ => Err(SeccompError::NoListenerPath),
    }
}

/// In the init (or an `exec`'d process), while still privileged: installs
/// `filter` and hands its listener to the runtime, then waits until the
/// runtime has passed it on to the agent.
pub fn install_and_hand_over(
    filter: &super::Filter,
    chan: &mut Channel,
) -> Result<(), SeccompError> {
    let listener_err = |message: String| SeccompError::Listener {
        path: filter
            .listener()
            .map(|l| l.path.clone())
            .unwrap_or_default(),
        message,
    };
    let fd = filter
        .install_listening()?
        .ok_or_else(|| listener_err("the kernel gave no listener".into()))?;
    chan.send(&ToParent::SeccompListener)
        .map_err(|e| listener_err(e.to_string()))?;
    chan.send_fd(std::os::fd::AsFd::as_fd(&fd), SECCOMP_FD_NAME)
        .map_err(|e| listener_err(e.to_string()))?;
    drop(fd);
    match chan.recv::<ToChild>() {
        Ok(Some(ToChild::Proceed { .. })) => Ok(()),
        Ok(_) => Err(listener_err("the runtime went away".into())),
        Err(e) => Err(listener_err(e.to_string())),
    }
}

/// In the runtime: sends the listener `fd` of process `pid` to the agent at
/// `listener.path`, with the container's `state` (its OCI state JSON).
pub fn send_to_agent(
    listener: &Listener,
    oci_version: &str,
    pid: i32,
    state: &[u8],
    fd: BorrowedFd<'_>,
) -> Result<(), SeccompError> {
    let err = |message: String| SeccompError::Listener {
        path: listener.path.clone(),
        message,
    };
    let state: serde_json::Value =
        serde_json::from_slice(state).map_err(|e| err(format!("state: {e}")))?;
    let body = serde_json::to_vec(&ContainerProcessState {
        oci_version,
        fds: [SECCOMP_FD_NAME],
        pid,
        metadata: &listener.metadata,
        state,
    })
    .map_err(|e| err(e.to_string()))?;
    let conn = UnixStream::connect(&listener.path).map_err(|e| err(format!("connect: {e}")))?;
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(&body)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| err(format!("send: {e}")))?;
    if sent != body.len() {
        // The descriptor went with the first bytes; send the rest plainly.
        use std::io::Write;
        (&conn)
            .write_all(&body[sent..])
            .map_err(|e| err(format!("send: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_receives_the_state_and_the_descriptor() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&path).unwrap();
        let listener = Listener {
            path: path.clone(),
            metadata: "meta".into(),
        };
        let file = std::fs::File::open("/dev/null").unwrap();
        let state =
            br#"{"ociVersion":"1.0.2","id":"c","status":"creating","pid":42,"bundle":"/b"}"#;
        send_to_agent(
            &listener,
            "1.0.2",
            42,
            state,
            std::os::fd::AsFd::as_fd(&file),
        )
        .unwrap();
        let (conn, _) = agent.accept().unwrap();
        let fd = crate::console::recv_fd(&conn).unwrap();
        drop(fd);
        // recv_fd read the body too; check its shape from a second send.
        send_to_agent(
            &listener,
            "1.0.2",
            42,
            state,
            std::os::fd::AsFd::as_fd(&file),
        )
        .unwrap();
        let (conn, _) = agent.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let n = msg.bytes;
        assert_eq!(msg.cmsgs().unwrap().count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(v["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(v["pid"], 42);
        assert_eq!(v["metadata"], "meta");
        assert_eq!(v["ociVersion"], "1.0.2");
        assert_eq!(v["state"]["status"], "creating");
        assert_eq!(v["state"]["id"], "c");
    }
}
