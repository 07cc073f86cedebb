//! `berthd`'s life: the managed supervisor (started and watched unless the
//! daemon is given one), the engine, and the API served on its listeners
//! ([`crate::listeners`]; TLS on TCP, [`crate::tls`]) until a signal. Containers are left running when the daemon stops: their shims
//! hold them, and the next daemon reattaches.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};
use tokio_rustls::rustls;

use crate::backend::grpc::Grpc;
use crate::config::Paths;
use crate::listeners::{Host, Listener, TcpPolicy};
use crate::tls::TlsOptions;
use crate::Engine;

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(30);

/// How long a managed supervisor may take to open its socket.
const SUPERVISOR_START: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("write pid file {path}: {source}")]
    PidFile { path: PathBuf, source: io::Error },
    #[error("another berthd (pid {pid}) uses pid file {path}")]
    Running { path: PathBuf, pid: i32 },
    #[error("start the supervisor {binary}: {source}")]
    SpawnSupervisor { binary: PathBuf, source: io::Error },
    #[error("the supervisor exited before it was ready ({status})")]
    SupervisorExited { status: std::process::ExitStatus },
    #[error("the supervisor did not open {socket} within {secs} s")]
    SupervisorTimeout { socket: PathBuf, secs: u64 },
    #[error(transparent)]
    Connect(#[from] berth_client::ClientError),
    #[error(transparent)]
    Listen(#[from] crate::listeners::ListenError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("engine: {0}")]
    Engine(String),
}

/// What `berthd` is told on its command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub paths: Paths,
    /// Where the API is served (`-H`); none: `<exec-root>/berth.sock`.
    pub hosts: Vec<Host>,
    /// TLS for the TCP listeners.
    pub tls: TlsOptions,
    /// Where Prometheus metrics are served (`--metrics-addr`), plain HTTP.
    pub metrics_addr: Option<String>,
    /// A running supervisor's socket; none: start one.
    pub supervisor: Option<PathBuf>,
    /// The `berth-supervisord` binary to start; default: beside this one.
    pub supervisor_binary: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub debug: bool,
    /// The default bridge and containers' name servers.
    pub network: crate::network::NetworkOptions,
}

fn create_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::create_dir_all(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(|source| DaemonError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes our pid, refusing when a live process holds the file.
fn write_pidfile(path: &Path) -> Result<(), DaemonError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            let alive = pid > 0
                && pid != std::process::id() as i32
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "berthd");
            if alive {
                return Err(DaemonError::Running {
                    path: path.to_path_buf(),
                    pid,
                });
            }
        }
    }
    std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
        DaemonError::PidFile {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The supervisor the daemon started, watched and restarted if it dies.
pub struct ManagedSupervisor {
    binary: PathBuf,
    paths: Paths,
    debug: bool,
    child: Option<Child>,
}

impl ManagedSupervisor {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(self.paths.supervisor_root())
            .arg("--state")
            .arg(self.paths.supervisor_state())
            .arg("--address")
            .arg(self.paths.supervisor_socket())
            .stdin(Stdio::null())
            // systemd's sockets and notifications are berthd's, not its.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            // Its own process group: a terminal's ^C stops berthd, which
            // stops the supervisor in order.
            .process_group(0)
            .kill_on_drop(false);
        if self.debug {
            cmd.arg("--debug");
        }
        cmd
    }

    /// Starts the supervisor and waits until its socket answers.
    async fn start(&mut self) -> Result<(), DaemonError> {
        let socket = self.paths.supervisor_socket();
        // A supervisor left by a berthd that was killed still serves: use it.
        if berth_client::connect(&socket).await.is_ok() {
            tracing::info!(socket = %socket.display(), "using the supervisor already running");
            return Ok(());
        }
        let mut child = self
            .command()
            .spawn()
            .map_err(|source| DaemonError::SpawnSupervisor {
                binary: self.binary.clone(),
                source,
            })?;
        let deadline = Instant::now() + SUPERVISOR_START;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DaemonError::SupervisorExited { status });
            }
            if berth_client::connect(&socket).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(DaemonError::SupervisorTimeout {
                    socket,
                    secs: SUPERVISOR_START.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(pid = child.id(), "supervisor started");
        self.child = Some(child);
        Ok(())
    }

    /// Watches the supervisor for the daemon's life and starts a new one
    /// when it dies (shims and containers outlive it; the new one
    /// reconnects to them). Ends, stopping the supervisor, at `stop`.
    async fn supervise(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        loop {
            let died = async {
                match &mut self.child {
                    Some(child) => {
                        let status = child.wait().await;
                        tracing::warn!(?status, "the supervisor exited");
                    }
                    // One this daemon did not start: watched by its socket.
                    None => loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if berth_client::connect(&self.paths.supervisor_socket())
                            .await
                            .is_err()
                        {
                            tracing::warn!("the supervisor no longer answers");
                            return;
                        }
                    },
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                () = died => {}
            }
            self.child = None;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match self.start().await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(error = %e, "restart the supervisor"),
                }
            }
        }
        self.stop().await;
    }

    /// Stops the supervisor this daemon started (shims and containers stay).
    async fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Some(pid) = child.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// The `berth-supervisord` beside the running binary, else on PATH.
fn default_supervisor_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("berth-supervisord")));
    match beside {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("berth-supervisord"),
    }
}

/// Runs the daemon until `shutdown` resolves. The listeners are bound
/// first: a refused `-H`, certificate or metrics address stops berthd
/// before anything is created or started, and clients of a socket-activated
/// daemon wait in the socket's backlog while it starts.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let paths = opts.paths.clone();
    let tls = crate::tls::server_config(&opts.tls)?;
    if let Some(pidfile) = &opts.pidfile {
        write_pidfile(pidfile)?;
    }
    let hosts = if opts.hosts.is_empty() {
        vec![Host::Unix(paths.socket())]
    } else {
        opts.hosts.clone()
    };
    let policy = TcpPolicy {
        tls: opts.tls.enabled(),
        plain_allowed: opts.tls.explicitly_off(),
    };
    let listeners = crate::listeners::bind_all(&hosts, policy)?;
    let metrics = match &opts.metrics_addr {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr.as_str()).await {
            Ok(l) => Some(l),
            Err(source) => {
                listeners.iter().for_each(Listener::cleanup);
                return Err(crate::listeners::ListenError::Bind {
                    addr: format!("metrics {addr}"),
                    source,
                }
                .into());
            }
        },
    };
    let made: Vec<PathBuf> = listeners
        .iter()
        .filter_map(|l| match l {
            Listener::Unix {
                path: Some(path), ..
            } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let result = run_bound(&opts, listeners, metrics, tls, shutdown).await;
    if result.is_err() {
        for path in made {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some(pidfile) = &opts.pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    result
}

/// [`run`] once its listeners are bound.
async fn run_bound(
    opts: &Options,
    listeners: Vec<Listener>,
    metrics: Option<tokio::net::TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let paths = opts.paths.clone();
    create_dir(&paths.data_root, 0o711)?;
    create_dir(&paths.exec_root, 0o711)?;
    create_dir(&paths.engine_dir(), 0o700)?;
    let mut managed = None;
    let supervisor_socket = match &opts.supervisor {
        Some(socket) => socket.clone(),
        None => {
            let mut sup = ManagedSupervisor {
                binary: opts
                    .supervisor_binary
                    .clone()
                    .unwrap_or_else(default_supervisor_binary),
                paths: paths.clone(),
                debug: opts.debug,
                child: None,
            };
            sup.start().await?;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
            managed = Some((stop_tx, tokio::spawn(sup.supervise(stop_rx))));
            paths.supervisor_socket()
        }
    };
    let client = berth_client::Client::connect(&supervisor_socket, crate::NAMESPACE).await?;
    let engine = Engine::open(Arc::new(Grpc::new(client)), paths.clone())
        .map_err(|e| DaemonError::Engine(e.to_string()))?;
    let engine = Arc::new(engine);
    // `--bridge none`, as dockerd's: no default bridge; here no networking
    // at all (containers get a namespace with loopback only).
    if opts.network.bridge.as_deref() != Some("none") {
        engine
            .networks
            .init(&paths.exec_root, opts.network.clone())
            .await
            .map_err(|e| DaemonError::Engine(format!("set up networking: {e}")))?;
    }
    engine
        .start_monitor()
        .await
        .map_err(|e| DaemonError::Engine(e.to_string()))?;
    for l in &listeners {
        tracing::info!(listener = %l.describe(), "berthd serving the Docker Engine API");
    }
    let metrics = metrics.map(|listener| {
        tracing::info!(
            addr = opts.metrics_addr.as_deref().unwrap_or(""),
            "serving metrics at /metrics"
        );
        tokio::spawn(crate::api::metrics::serve(engine.clone(), listener))
    });
    crate::listeners::notify_ready();
    serve(engine.clone(), listeners, tls, shutdown).await;
    // Removed networks' bridges still going are gone before berthd is.
    engine.networks.settle().await;
    if let Some(task) = metrics {
        task.abort();
    }
    crate::listeners::notify_stopping();
    if let Some((stop, watcher)) = managed {
        let _ = stop.send(());
        let _ = watcher.await;
    }
    Ok(())
}

/// Accepts connections on every listener until `shutdown` resolves, then
/// removes the sockets it made.
pub async fn serve(
    engine: Arc<Engine>,
    listeners: Vec<Listener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut loops = Vec::new();
    for listener in listeners {
        let engine = engine.clone();
        let acceptor = acceptor.clone();
        let mut stop = stop_rx.clone();
        loops.push(tokio::spawn(async move {
            accept_loop(&engine, &listener, acceptor, &mut stop).await;
            listener.cleanup();
        }));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
}

async fn accept_loop(
    engine: &Arc<Engine>,
    listener: &Listener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = accept(listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Unix(stream)) => {
                tokio::spawn(serve_connection(engine.clone(), stream));
            }
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let engine = engine.clone();
                match &acceptor {
                    None => {
                        tokio::spawn(serve_connection(engine, stream));
                    }
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        tokio::spawn(async move {
                            match tokio::time::timeout(TLS_HANDSHAKE, handshake).await {
                                Ok(Ok(stream)) => serve_connection(engine, stream).await,
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, error = %e, "TLS handshake refused")
                                }
                                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            Err(e) => {
                tracing::warn!(listener = %listener.describe(), error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Unix { listener, .. } => listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
        Listener::Tcp { listener, .. } => listener
            .accept()
            .await
            .map(|(s, peer)| Accepted::Tcp(s, peer)),
    }
}

/// Serves HTTP/1.1 (with upgrades for attach and exec) on one connection.
async fn serve_connection<S>(engine: Arc<Engine>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let engine = engine.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::api::handle(engine, req).await) }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "API connection ended");
    }
}
