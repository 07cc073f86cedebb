//! The CRI's streaming: ExecSync, and the server that answers the URLs
//! Exec, Attach and PortForward return, as kubelet's streaming server does.
//!
//! A call to Exec, Attach or PortForward is checked, then cached under a
//! one-time token (valid for a minute) and answered with
//! `http://ADDRESS/{exec,attach,portforward}/TOKEN`. The client (kubelet's
//! API server proxy, crictl, critest) upgrades a request to that URL to one
//! of the protocols client-go speaks:
//! - SPDY/3.1 (`spdy`, `session`): exec and attach with the
//!   `v4.channel.k8s.io` stream protocol (one SPDY stream per `streamType`:
//!   error, stdin, stdout, stderr, resize), port-forward with
//!   `portforward.k8s.io` (an error and a data stream per connection);
//! - WebSocket (`websocket`): exec and attach with `v5.channel.k8s.io` or
//!   `v4.channel.k8s.io` (one byte of channel number in front of each
//!   binary message), and port-forward tunnelled as SPDY inside WebSocket
//!   messages (`SPDY/3.1+portforward.k8s.io`).
//!
//! `remotecommand` runs exec and attach over either transport, `portforward`
//! port-forwarding; both act through [`Backend`], which `tasks` implements
//! over the supervisor's tasks (exec'd processes and their stdio through
//! the shim, a pod's network namespace for port-forward). `service` holds
//! the CRI calls. See docs/cri.md.

mod backend;
mod http;
mod portforward;
mod remotecommand;
pub mod service;
pub mod session;
pub mod spdy;
mod websocket;

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use backend::TaskBackend;

/// How long a URL answered by Exec, Attach or PortForward stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most requests waiting for their client at once (kubelet's limit).
const MAX_PENDING: usize = 1000;

/// A terminal's size, as the resize stream carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A request cached until its client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Exec {
        container_id: String,
        cmd: Vec<String>,
        opts: StdioOptions,
    },
    Attach {
        container_id: String,
        opts: StdioOptions,
        /// Close the process's stdin when the client closes its own.
        stdin_once: bool,
    },
    PortForward {
        sandbox_id: String,
    },
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

/// Which of a process's streams a client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StdioOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The process side of an exec or attach: what the client sends, and where
/// its output goes. A channel that is `None` was not asked for; a closed
/// `stdin` is the client's end of input; a dropped output sender closes
/// that stream; a closed output receiver means the client is gone.
pub struct StreamIo {
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub stdout: Option<mpsc::Sender<Vec<u8>>>,
    pub stderr: Option<mpsc::Sender<Vec<u8>>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    pub tty: bool,
}

/// How an exec or attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this status (an attach reports 0).
    Exited(i32),
    /// It could not be run; the message goes to the client.
    Failed(String),
}

/// A boxed future, for the backend's calls.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the streaming server needs from the runtime.
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in the container with `io`, until it exits.
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        cmd: &'a [String],
        io: StreamIo,
    ) -> BoxFuture<'a, Outcome>;
    /// Attaches `io` to the container's main process until it exits or the
    /// client goes.
    fn attach<'a>(
        &'a self,
        container_id: &'a str,
        stdin_once: bool,
        io: StreamIo,
    ) -> BoxFuture<'a, Outcome>;
    /// Connects to `port` on the loopback of the pod's network namespace.
    fn connect<'a>(
        &'a self,
        sandbox_id: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, String>>;
}

/// The requests waiting for their client, by token.
#[derive(Default)]
struct Cache {
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Pending, Instant)>> {
        // The map holds no invariant a panic could break halfway.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, request: Pending) -> Result<String, StreamingError> {
        let token = new_token()?;
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        if map.len() >= MAX_PENDING {
            return Err(StreamingError::TooManyPending);
        }
        map.insert(token.clone(), (request, now));
        Ok(token)
    }

    /// The request of `token`, once: a used or expired token is unknown.
    fn take(&self, token: &str) -> Option<Pending> {
        let (request, at) = self.lock().remove(token)?;
        (at.elapsed() < TOKEN_TTL).then_some(request)
    }
}

/// 16 random bytes, URL-safe base64.
fn new_token() -> Result<String, StreamingError> {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StreamingError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("too many streaming requests waiting for their client")]
    TooManyPending,
    #[error("read random bytes for a token: {0}")]
    Random(std::io::Error),
}

/// The streaming server: where its URLs point, and what it serves.
pub struct Server {
    address: SocketAddr,
    cache: Cache,
    backend: Arc<dyn Backend>,
}

impl Server {
    /// Binds `address` (port 0: one the kernel picks) for a server over
    /// `backend`; [`Server::serve`] serves it.
    pub async fn bind(
        address: SocketAddr,
        backend: Arc<dyn Backend>,
    ) -> anyhow::Result<(Arc<Server>, TcpListener)> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("listen for streams on {address}"))?;
        let address = listener
            .local_addr()
            .context("the streaming server's address")?;
        let server = Arc::new(Server {
            address,
            cache: Cache::default(),
            backend,
        });
        Ok((server, listener))
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Caches `request` and returns the URL its client connects to.
    pub fn url_for(&self, request: Pending) -> Result<String, StreamingError> {
        let path = request.path();
        let token = self.cache.insert(request)?;
        // A server on every address is reached on the loopback.
        let mut address = self.address;
        if address.ip().is_unspecified() {
            address.set_ip(match address {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Ok(format!("http://{address}/{path}/{token}"))
    }

    /// Serves connections until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tracing::info!(address = %self.address, "serving CRI streams");
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((conn, _)) => {
                        let server = Arc::clone(&self);
                        tokio::spawn(http::serve_connection(server, conn));
                    }
                    Err(e) => {
                        tracing::warn!("accept a streaming connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut shutdown => return,
            }
        }
    }
}

/// The JSON `Status` the error stream carries at the end of an exec or
/// attach (Kubernetes' `metav1.Status`): success, or a failure that says
/// why, with the exit code as a cause for a non-zero exit.
pub fn status_json(outcome: &Outcome) -> Vec<u8> {
    let value = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    };
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests;
