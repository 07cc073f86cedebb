//! `berthd`'s life: the managed supervisor (started and watched unless the
//! daemon is given one), the engine, and the API socket served until a
//! signal. Containers are left running when the daemon stops: their shims
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
use tokio::net::UnixListener;
use tokio::process::{Child, Command};

use crate::backend::grpc::Grpc;
use crate::config::Paths;
use crate::Engine;

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
    #[error("listen on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("set the mode of {path}: {source}")]
    SocketMode { path: PathBuf, source: io::Error },
    #[error("engine: {0}")]
    Engine(String),
}

/// What `berthd` is told on its command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub paths: Paths,
    /// The API socket; default `<exec-root>/berth.sock`.
    pub socket: Option<PathBuf>,
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

/// Binds the API socket: mode 0660, group `berth` when it exists.
fn listen(path: &Path) -> Result<UnixListener, DaemonError> {
    let listen_err = |source| DaemonError::Listen {
        path: path.to_path_buf(),
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
        DaemonError::SocketMode {
            path: path.to_path_buf(),
            source,
        }
    })?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("berth") {
        let _ = nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid));
    }
    Ok(listener)
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let paths = opts.paths.clone();
    create_dir(&paths.data_root, 0o711)?;
    create_dir(&paths.exec_root, 0o711)?;
    create_dir(&paths.engine_dir(), 0o700)?;
    if let Some(pidfile) = &opts.pidfile {
        write_pidfile(pidfile)?;
    }
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
    let socket = opts.socket.clone().unwrap_or_else(|| paths.socket());
    let listener = listen(&socket)?;
    tracing::info!(socket = %socket.display(), "berthd serving the Docker Engine API");
    serve(engine, listener, shutdown).await;
    let _ = std::fs::remove_file(&socket);
    if let Some((stop, watcher)) = managed {
        let _ = stop.send(());
        let _ = watcher.await;
    }
    if let Some(pidfile) = &opts.pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    Ok(())
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the API socket");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let engine = engine.clone();
        tokio::spawn(async move {
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
        });
    }
}
