//! The daemon: opens the stores, collects what a crash left behind, and
//! serves the gRPC services on a unix socket (mode 0600) until told to stop,
//! Kubernetes' CRI (`cri`) on a socket of its own when configured, and
//! Prometheus metrics (`metrics`) on `--metrics-addr`.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_proto::containers::v1::containers_server::ContainersServer;
use berth_proto::content::v1::content_server::ContentServer;
use berth_proto::events::v1::events_server::EventsServer;
use berth_proto::images::v1::images_server::ImagesServer;
use berth_proto::leases::v1::leases_server::LeasesServer;
use berth_proto::namespaces::v1::namespaces_server::NamespacesServer;
use berth_proto::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_proto::tasks::v1::tasks_server::TasksServer;
use berth_proto::version::v1::version_server::VersionServer;
use tokio::net::UnixListener;
use tokio::sync::RwLock;
use tokio_stream::wrappers::UnixListenerStream;

use crate::api::Service;
use crate::content::ContentStore;
use crate::cri::{self, Cri, CriConfig};
use crate::events::Exchange;
use crate::images::Images;
use crate::metadata::Metadata;
use crate::oci::Platform;
use crate::registry::{Client, RegistryConfig};
use crate::snapshots::Snapshotter;
use crate::tasks::{TaskConfig, Tasks};

pub struct Config {
    /// Persistent state: content, snapshots, metadata.
    pub root: PathBuf,
    /// Runtime state: the shims' bundles and the runtime's state.
    pub state: PathBuf,
    pub address: PathBuf,
    /// A docker-style config.json with registry credentials and the
    /// registries allowed over plain HTTP.
    pub registry_config: Option<PathBuf>,
    /// The shim and runtime binaries; `None`: beside this executable, or
    /// on PATH.
    pub shim: Option<PathBuf>,
    pub runtime: Option<PathBuf>,
    /// Registry mirrors and per-registry settings (hosts.toml directory),
    /// for every pull; a missing directory is none.
    pub registry_hosts_dir: Option<PathBuf>,
    /// The CRI socket; `None`: no CRI.
    pub cri_address: Option<PathBuf>,
    /// Where Prometheus metrics are served (`ADDR:PORT`); `None`: nowhere.
    pub metrics_addr: Option<String>,
    /// The CRI's pause image; `None`: [`cri::DEFAULT_PAUSE_IMAGE`].
    pub pause_image: Option<String>,
    /// Where CNI plugins are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The CNI network config directory.
    pub cni_conf_dir: PathBuf,
    /// The CRI's streaming server (exec, attach, port-forward URLs).
    pub stream_address: std::net::SocketAddr,
    /// systemd's `NOTIFY_SOCKET` (a path or an `@abstract` name): told
    /// `READY=1` once the API serves with the shims recovered, and
    /// `STOPPING=1` at shutdown. `None`: nothing is told. The shims and
    /// runtimes are run without it in their environment.
    pub notify_socket: Option<std::ffi::OsString>,
}

fn private_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("create {}", path.display()))
}

/// Opens the stores under `root`.
pub fn open_images(root: &Path, registry: RegistryConfig) -> anyhow::Result<Arc<Images>> {
    private_dir(root)?;
    let content = ContentStore::open(&root.join("content")).context("open the content store")?;
    let meta = Metadata::open(&root.join("meta.redb")).context("open the metadata")?;
    let snapshots = Snapshotter::open(&root.join("snapshots")).context("open the snapshots")?;
    let registry = Client::new(registry).context("set up the registry client")?;
    Ok(Arc::new(Images {
        content: Arc::new(content),
        meta: Arc::new(meta),
        snapshots: Arc::new(snapshots),
        registry,
        gc_lock: Arc::new(RwLock::new(())),
        platform: Platform::host(),
    }))
}

/// Binds a socket (mode 0600), refusing to take it from a live server.
pub(crate) fn bind(address: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = address.parent() {
        private_dir(dir)?;
    }
    if address.exists() {
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            bail!("{} is served by another supervisor", address.display());
        }
        std::fs::remove_file(address)
            .with_context(|| format!("remove stale socket {}", address.display()))?;
    }
    let listener =
        UnixListener::bind(address).with_context(|| format!("listen on {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", address.display()))?;
    Ok(listener)
}

pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut registry = match &config.registry_config {
        Some(path) => RegistryConfig::load(path)?,
        None => RegistryConfig::default(),
    };
    if let Some(dir) = &config.registry_hosts_dir {
        registry.load_hosts_dir(dir)?;
    }
    private_dir(&config.state)?;
    let images = open_images(&config.root, registry)?;
    // A crash leaves at most files no record names, and expired leases.
    crate::gc::collect_now(&images)
        .await
        .map_err(|e| anyhow::anyhow!("garbage collection at start: {e}"))?;
    let metrics_listener = match &config.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr.as_str())
                .await
                .with_context(|| format!("listen on {addr} for metrics"))?,
        ),
        None => None,
    };
    let listener = bind(&config.address)?;
    tracing::info!(address = %config.address.display(), root = %config.root.display(), "serving");
    let cri_config = config.cri_address.clone().map(|address| CriConfig {
        address,
        registry_config_dir: config.registry_hosts_dir.clone().unwrap_or_default(),
        snapshots_dir: config.root.join("snapshots"),
        root_dir: config.root.join("cri"),
        state_dir: config.state.join("cri"),
        pause_image: config
            .pause_image
            .clone()
            .unwrap_or_else(|| cri::DEFAULT_PAUSE_IMAGE.to_string()),
        cni_bin_dirs: config.cni_bin_dirs.clone(),
        cni_conf_dir: config.cni_conf_dir.clone(),
        stream_address: config.stream_address,
    });
    let cri_listener = cri_config.as_ref().map(cri::bind).transpose()?;

    let events = Arc::new(Exchange::new(Arc::clone(&images.meta)));
    events.start_writer().context("start the event writer")?;
    // Absolute and without symlinks: the shims and the runtime get these
    // paths, and the kernel reports mounts by their real paths.
    let state = std::fs::canonicalize(&config.state)
        .with_context(|| format!("resolve {}", config.state.display()))?;
    let mut task_config = TaskConfig::beside_executable(state);
    if let Some(shim) = config.shim {
        task_config.shim = shim;
    }
    if let Some(runtime) = config.runtime {
        task_config.runtime = runtime;
    }
    let tasks = Tasks::new(task_config, Arc::clone(&images), Arc::clone(&events));
    // Views an export was reading when the last supervisor was killed.
    crate::rootfs::remove_views(&tasks.views_dir());
    // Shims that outlived the last supervisor, before anyone can ask.
    tasks
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("recover tasks: {e}"))?;
    let metrics_task = metrics_listener.map(|listener| {
        tracing::info!(
            addr = config.metrics_addr.as_deref().unwrap_or(""),
            "serving metrics at /metrics"
        );
        tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&tasks),
            Arc::clone(&images),
        ))
    });
    let service = Service {
        images: Arc::clone(&images),
        events: Arc::clone(&events),
        tasks: Arc::clone(&tasks),
    };
    let (cri_stop, cri_task) = match (cri_config, cri_listener) {
        (Some(config), Some(listener)) => {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (streaming, streams) =
                cri::streaming::service::Streaming::bind(config.stream_address, &images, &tasks)
                    .await?;
            let cri = Cri::new(
                Arc::clone(&images),
                Arc::clone(&events),
                tasks,
                config,
                streaming,
            );
            let task = tokio::spawn(cri::serve(cri, listener, streams, async {
                let _ = rx.await;
            }));
            (Some(tx), Some(task))
        }
        _ => (None, None),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(|inner| Timed { inner }))
        .layer(tower::layer::layer_fn(|inner| crate::metrics::Counted {
            inner,
        }))
        .add_service(VersionServer::new(service.clone()))
        .add_service(NamespacesServer::new(service.clone()))
        .add_service(ContentServer::new(service.clone()))
        .add_service(ImagesServer::new(service.clone()))
        .add_service(SnapshotsServer::new(service.clone()))
        .add_service(LeasesServer::new(service.clone()))
        .add_service(ContainersServer::new(service.clone()))
        .add_service(TasksServer::new(service.clone()))
        .add_service(EventsServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    let mut server = std::pin::pin!(server);
    // Both listeners are bound and the shims recovered: a client that
    // connects now is served (a Type=notify unit is ready, and units
    // ordered after it, berthd's, start only now).
    if let Some(socket) = &config.notify_socket {
        if let Err(e) = berth_client::sd_notify::notify(socket, "READY=1") {
            tracing::warn!(error = %e, "tell systemd the supervisor is ready");
        }
    }
    tokio::select! {
        r = &mut server => r.context("serve")?,
        () = shutdown => {
            tracing::info!("shutting down");
            if let Some(socket) = &config.notify_socket {
                let _ = berth_client::sd_notify::notify(socket, "STOPPING=1");
            }
            events.close();
            let _ = stop_tx.send(());
            if let Some(stop) = cri_stop {
                let _ = stop.send(());
            }
            // Calls in flight get a moment to finish; what they leave is
            // safe either way (see the crash rules in docs/supervisor.md).
            if tokio::time::timeout(Duration::from_secs(10), &mut server).await.is_err() {
                tracing::warn!("calls still running after 10 s; stopping anyway");
            }
        }
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    // What is queued is written before the daemon exits.
    let writer = Arc::clone(&events);
    let _ = tokio::task::spawn_blocking(move || writer.stop_writer()).await;
    let _ = std::fs::remove_file(&config.address);
    if let Some(task) = cri_task {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Err(e))) => tracing::warn!("CRI server: {e:#}"),
            Ok(Err(e)) => tracing::warn!("CRI server stopped: {e}"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => tracing::warn!("CRI calls still running after 10 s; stopping anyway"),
        }
    }
    Ok(())
}

/// Logs each gRPC call's method and duration at debug level, when debug
/// logging is on (the engine benchmark's per-phase timing reads them). A
/// streaming call's duration ends when its response starts.
#[derive(Clone)]
struct Timed<S> {
    inner: S,
}

type BoxedCall<R, E> = std::pin::Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for Timed<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxedCall<S::Response, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let path = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().path().to_owned());
        let began = std::time::Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            if let Some(path) = path {
                let micros = began.elapsed().as_micros() as u64;
                tracing::debug!(path, micros, "grpc call");
            }
            result
        })
    }
}
