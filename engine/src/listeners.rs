//! Where `berthd` listens: its `-H` addresses, as dockerd takes them.
//!
//! - `unix://PATH`: a socket made here, mode 0660, group `berth` when the
//!   group exists; removed when the daemon stops.
//! - `tcp://ADDR:PORT` (or a bare `ADDR:PORT`): TLS when the daemon is given
//!   `--tls` or `--tlsverify` ([`crate::tls`]). Plain TCP on an address other
//!   than loopback is refused unless the user says `--tls=false` (or
//!   `--tlsverify=false`), as dockerd 27 refuses it; on loopback it is
//!   served with a warning.
//! - `fd://` (every socket systemd passed) or `fd://N` (the one at fd N):
//!   socket activation, from `LISTEN_PID`, `LISTEN_FDS` and the fds from 3.
//!
//! [`notify_ready`] tells systemd (`NOTIFY_SOCKET`) the daemon serves.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::SockaddrLike;
use tokio::net::{TcpListener, UnixListener};

/// dockerd's ports: plain and TLS.
pub const DEFAULT_TCP_PORT: u16 = 2375;
pub const DEFAULT_TLS_PORT: u16 = 2376;

/// The first fd systemd passes.
const LISTEN_FDS_START: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid -H address {0:?}: the scheme must be unix://, tcp:// or fd://")]
    Scheme(String),
    #[error("invalid -H address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("resolve {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("set the mode of {path}: {source}")]
    SocketMode { path: PathBuf, source: io::Error },
    #[error(
        "the API on tcp://{addr} would be served without encryption: anyone who reaches \
         it has root on this host. Use --tlsverify (mutual TLS), or say --tls=false to \
         serve it in the clear anyway"
    )]
    Unencrypted { addr: SocketAddr },
    #[error(
        "fd://: no sockets were passed by systemd (LISTEN_FDS and LISTEN_PID unset or not ours)"
    )]
    NoActivation,
    #[error("fd://{fd}: systemd passed fds {first} to {last} only")]
    NoSuchFd {
        fd: RawFd,
        first: RawFd,
        last: RawFd,
    },
    #[error("fd://{fd}: {reason}")]
    BadFd { fd: RawFd, reason: String },
}

/// One `-H` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    /// `host:port` as given (resolved when bound).
    Tcp(String),
    /// `fd://` (every passed socket) or `fd://N`.
    Fd(Option<RawFd>),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(path) => write!(f, "unix://{}", path.display()),
            Host::Tcp(addr) => write!(f, "tcp://{addr}"),
            Host::Fd(None) => write!(f, "fd://"),
            Host::Fd(Some(fd)) => write!(f, "fd://{fd}"),
        }
    }
}

/// Parses a `-H` address; `tls` picks the default port (2376, else 2375).
pub fn parse_host(addr: &str, tls: bool) -> Result<Host, ListenError> {
    let bad = |reason: &str| ListenError::Address {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = addr.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        // dockerd: an address without a scheme is TCP.
        None => ("tcp".to_string(), trimmed),
    };
    match scheme.as_str() {
        "unix" => {
            if rest.is_empty() {
                return Err(bad("a unix socket needs a path"));
            }
            Ok(Host::Unix(PathBuf::from(rest)))
        }
        "fd" => match rest {
            "" | "*" => Ok(Host::Fd(None)),
            n => n
                .parse::<RawFd>()
                .ok()
                .filter(|n| *n >= LISTEN_FDS_START)
                .map(|n| Host::Fd(Some(n)))
                .ok_or_else(|| bad("fd:// takes nothing or a number from 3")),
        },
        "tcp" => {
            let rest = rest.trim_end_matches('/');
            if rest.contains('/') {
                return Err(bad("a tcp address takes no path"));
            }
            let port = if tls {
                DEFAULT_TLS_PORT
            } else {
                DEFAULT_TCP_PORT
            };
            // [v6]:port, host:port, host, :port, or nothing.
            let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
                let port = match after.strip_prefix(':') {
                    Some(p) => p.parse::<u16>().map_err(|_| bad("invalid port"))?,
                    None if after.is_empty() => port,
                    None => return Err(bad("junk after ']'")),
                };
                (format!("[{host}]"), port)
            } else {
                match rest.rsplit_once(':') {
                    Some((host, p)) => {
                        let p = if p.is_empty() {
                            port
                        } else {
                            p.parse::<u16>().map_err(|_| bad("invalid port"))?
                        };
                        (host.to_string(), p)
                    }
                    None => (rest.to_string(), port),
                }
            };
            // dockerd's default host is localhost.
            let host = if host.is_empty() {
                "127.0.0.1".to_string()
            } else {
                host
            };
            Ok(Host::Tcp(format!("{host}:{port}")))
        }
        _ => Err(ListenError::Scheme(addr.to_string())),
    }
}

/// A bound listener.
pub enum Listener {
    /// `path`: the socket file to remove at the end (none for an inherited
    /// socket, which systemd owns).
    Unix {
        listener: UnixListener,
        path: Option<PathBuf>,
    },
    Tcp {
        listener: TcpListener,
        addr: SocketAddr,
    },
}

impl Listener {
    /// What it listens on, for logs.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix {
                path: Some(path), ..
            } => format!("unix://{}", path.display()),
            Listener::Unix {
                listener,
                path: None,
            } => match listener.local_addr().ok().and_then(|a| {
                a.as_pathname()
                    .map(|p| format!("unix://{} (from systemd)", p.display()))
            }) {
                Some(s) => s,
                None => "a unix socket from systemd".to_string(),
            },
            Listener::Tcp { addr, .. } => format!("tcp://{addr}"),
        }
    }

    /// Removes the socket file this listener made.
    pub fn cleanup(&self) {
        if let Listener::Unix {
            path: Some(path), ..
        } = self
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How TCP listeners may be served.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpPolicy {
    /// TLS is configured.
    pub tls: bool,
    /// The user said `--tls=false` or `--tlsverify=false`.
    pub plain_allowed: bool,
}

/// Binds every host, all or none: on an error the sockets made so far are
/// removed.
pub fn bind_all(hosts: &[Host], policy: TcpPolicy) -> Result<Vec<Listener>, ListenError> {
    let mut bound: Vec<Listener> = Vec::new();
    for host in hosts {
        let result = match host {
            Host::Unix(path) => bind_unix(path).map(|l| vec![l]),
            Host::Tcp(addr) => bind_tcp(addr, policy).map(|l| vec![l]),
            Host::Fd(which) => activated(*which, policy),
        };
        match result {
            Ok(mut listeners) => bound.append(&mut listeners),
            Err(e) => {
                bound.iter().for_each(Listener::cleanup);
                return Err(e);
            }
        }
    }
    Ok(bound)
}

/// A unix socket: mode 0660, group `berth` when it exists.
pub fn bind_unix(path: &Path) -> Result<Listener, ListenError> {
    let listen_err = |source| ListenError::Bind {
        addr: format!("unix://{}", path.display()),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|source| {
        ListenError::SocketMode {
            path: path.to_path_buf(),
            source,
        }
    })?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("berth") {
        let _ = nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid));
    }
    Ok(Listener::Unix {
        listener,
        path: Some(path.to_path_buf()),
    })
}

/// Judges plain TCP on `addr`: refused off loopback unless allowed.
fn check_plain(addr: SocketAddr, policy: TcpPolicy) -> Result<(), ListenError> {
    if policy.tls {
        return Ok(());
    }
    if addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the API is served on tcp://{addr} without encryption: every local user who can \
             connect has root on this host"
        );
        return Ok(());
    }
    if policy.plain_allowed {
        tracing::warn!(
            %addr,
            "the API is served on tcp://{addr} without encryption (--tls=false): anyone who \
             reaches it has root on this host"
        );
        return Ok(());
    }
    Err(ListenError::Unencrypted { addr })
}

fn bind_tcp(addr: &str, policy: TcpPolicy) -> Result<Listener, ListenError> {
    let resolved = addr
        .to_socket_addrs()
        .map_err(|source| ListenError::Resolve {
            addr: addr.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| ListenError::Resolve {
            addr: addr.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        })?;
    check_plain(resolved, policy)?;
    let bind_err = |source| ListenError::Bind {
        addr: format!("tcp://{resolved}"),
        source,
    };
    let std_listener = std::net::TcpListener::bind(resolved).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let local = std_listener.local_addr().map_err(bind_err)?;
    let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
    Ok(Listener::Tcp {
        listener,
        addr: local,
    })
}

/// The fds systemd passed to this process: `LISTEN_PID` must be ours.
fn passed_fds() -> Option<std::ops::Range<RawFd>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let n: RawFd = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    (n > 0).then_some(LISTEN_FDS_START..LISTEN_FDS_START + n)
}

/// The sockets systemd passed: all of them, or the one at `which`.
fn activated(which: Option<RawFd>, policy: TcpPolicy) -> Result<Vec<Listener>, ListenError> {
    let range = passed_fds().ok_or(ListenError::NoActivation)?;
    let wanted: Vec<RawFd> = match which {
        None => range.collect(),
        Some(fd) if range.contains(&fd) => vec![fd],
        Some(fd) => {
            return Err(ListenError::NoSuchFd {
                fd,
                first: range.start,
                last: range.end - 1,
            })
        }
    };
    wanted
        .into_iter()
        .map(|fd| adopt(fd, policy))
        .collect::<Result<Vec<_>, _>>()
}

/// Takes the passed socket at `fd` as a listener.
fn adopt(fd: RawFd, policy: TcpPolicy) -> Result<Listener, ListenError> {
    let bad = |reason: String| ListenError::BadFd { fd, reason };
    // The fd must be open before it is owned.
    nix::fcntl::fcntl(
        // SAFETY: only borrowed for one fcntl(F_GETFD) call that tells
        // whether it is open; nothing is closed or kept.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(|e| bad(format!("not open: {e}")))?;
    // SAFETY: systemd passed this fd to this process (LISTEN_PID is ours),
    // it is open (checked above), and nothing else in berthd owns it: each
    // fd is adopted once, at start.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not into the supervisor berthd starts.
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let accepting: bool =
        nix::sys::socket::getsockopt(&owned, nix::sys::socket::sockopt::AcceptConn)
            .map_err(|e| bad(format!("not a socket: {e}")))?;
    if !accepting {
        return Err(bad("not a listening socket".to_string()));
    }
    let family =
        nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(owned.as_raw_fd())
            .map_err(|e| bad(format!("getsockname: {e}")))?
            .family();
    let io_err = |e: io::Error| bad(e.to_string());
    match family {
        Some(nix::sys::socket::AddressFamily::Unix) => {
            let std_listener = std::os::unix::net::UnixListener::from(owned);
            std_listener.set_nonblocking(true).map_err(io_err)?;
            Ok(Listener::Unix {
                listener: UnixListener::from_std(std_listener).map_err(io_err)?,
                path: None,
            })
        }
        Some(nix::sys::socket::AddressFamily::Inet | nix::sys::socket::AddressFamily::Inet6) => {
            let std_listener = std::net::TcpListener::from(owned);
            std_listener.set_nonblocking(true).map_err(io_err)?;
            let addr = std_listener.local_addr().map_err(io_err)?;
            check_plain(addr, policy)?;
            Ok(Listener::Tcp {
                listener: TcpListener::from_std(std_listener).map_err(io_err)?,
                addr,
            })
        }
        other => Err(bad(format!("unsupported socket family {other:?}"))),
    }
}

/// Tells systemd the daemon is ready (`READY=1` on `NOTIFY_SOCKET`); no
/// socket set is nothing to do.
pub fn notify_ready() {
    if let Err(e) = sd_notify("READY=1") {
        tracing::warn!(error = %e, "tell systemd the daemon is ready");
    }
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = sd_notify("STOPPING=1");
}

fn sd_notify(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => berth_client::sd_notify::notify(&socket, state),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_as_dockerd_reads_them() {
        let tcp = |s: &str| Host::Tcp(s.to_string());
        assert_eq!(
            parse_host("unix:///run/x.sock", false).unwrap(),
            Host::Unix("/run/x.sock".into())
        );
        assert_eq!(
            parse_host("tcp://0.0.0.0:2376", true).unwrap(),
            tcp("0.0.0.0:2376")
        );
        assert_eq!(
            parse_host("tcp://127.0.0.1", false).unwrap(),
            tcp("127.0.0.1:2375")
        );
        assert_eq!(
            parse_host("tcp://127.0.0.1", true).unwrap(),
            tcp("127.0.0.1:2376")
        );
        assert_eq!(
            parse_host("tcp://:2375", false).unwrap(),
            tcp("127.0.0.1:2375")
        );
        assert_eq!(
            parse_host("10.0.0.1:99", false).unwrap(),
            tcp("10.0.0.1:99")
        );
        assert_eq!(parse_host("tcp://[::1]:7", false).unwrap(), tcp("[::1]:7"));
        assert_eq!(parse_host("fd://", false).unwrap(), Host::Fd(None));
        assert_eq!(parse_host("fd://4", false).unwrap(), Host::Fd(Some(4)));
        assert!(matches!(
            parse_host("ssh://x", false),
            Err(ListenError::Scheme(_))
        ));
        assert!(parse_host("fd://1", false).is_err());
        assert!(parse_host("unix://", false).is_err());
        assert!(parse_host("tcp://h:port", false).is_err());
        assert!(parse_host("tcp://h:1/path", false).is_err());
    }

    #[test]
    fn plain_tcp_is_refused_off_loopback_unless_allowed() {
        let any: SocketAddr = "0.0.0.0:2375".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:2375".parse().unwrap();
        let refuse = TcpPolicy::default();
        assert!(matches!(
            check_plain(any, refuse),
            Err(ListenError::Unencrypted { .. })
        ));
        assert!(check_plain(lo, refuse).is_ok());
        let allow = TcpPolicy {
            tls: false,
            plain_allowed: true,
        };
        assert!(check_plain(any, allow).is_ok());
        let tls = TcpPolicy {
            tls: true,
            plain_allowed: false,
        };
        assert!(check_plain(any, tls).is_ok());
    }

    #[test]
    fn fd_without_activation_is_an_error() {
        // The test process was not socket-activated (LISTEN_PID is not us).
        if passed_fds().is_none() {
            assert!(matches!(
                activated(None, TcpPolicy::default()),
                Err(ListenError::NoActivation)
            ));
        }
    }
}
