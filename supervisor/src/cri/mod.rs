//! The Kubernetes Container Runtime Interface (CRI v1, `runtime.v1`),
//! served on a unix socket of its own, as containerd's CRI plugin lives in
//! containerd: kubelet and crictl talk to it, it acts on the supervisor's
//! own domain (images, content, snapshots) in the namespace
//! [`NAMESPACE`], never through the supervisor's gRPC API.
//!
//! Here: the server and its configuration, and [`Cri`], the domain handles
//! every part shares; `runtime` is the RuntimeService (each call a line
//! into its part); `images` is the ImageService's domain (CRI images: one
//! per config digest, with every name that points at it) and
//! `image_service` its thin gRPC service; `store` the CRI's durable
//! records of sandboxes and containers; `sandbox` the pod sandboxes;
//! `streaming` ExecSync and the streaming server Exec, Attach and
//! PortForward point at.
//! See docs/cri.md.

pub mod container;
mod fs_usage;
mod grpc;
mod image_service;
pub mod images;
pub mod metrics;
mod runtime;
pub mod sandbox;
pub mod store;
pub mod streaming;
pub mod userns;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use berth_proto::cri::v1::image_service_server::ImageServiceServer;
use berth_proto::cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::{TcpListener, UnixListener};

use crate::events::Exchange;
use crate::images::Images;
use crate::tasks::Tasks;

/// The supervisor namespace the CRI keeps its images (and later its pods
/// and containers) in, as containerd's CRI does.
pub const NAMESPACE: &str = "k8s.io";

/// The CRI version this server speaks.
pub const API_VERSION: &str = "v1";

/// The name the CRI reports for this runtime.
pub const RUNTIME_NAME: &str = "berth";

/// The CRI server's settings.
#[derive(Clone, Debug)]
pub struct CriConfig {
    /// The CRI socket (mode 0600).
    pub address: PathBuf,
    /// The hosts.toml directory registries are configured by.
    pub registry_config_dir: PathBuf,
    /// Where snapshots live: the image filesystem ImageFsInfo reports.
    pub snapshots_dir: PathBuf,
    /// The CRI's persistent files (`<root>/cri`: each sandbox's hostname,
    /// hosts and resolv.conf).
    pub root_dir: PathBuf,
    /// The CRI's runtime state (`<state>/cri`: pinned network namespaces
    /// under `netns/`, each pod's /dev/shm).
    pub state_dir: PathBuf,
    /// The image pause processes run from.
    pub pause_image: String,
    /// Where CNI plugins are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Where the CNI network config is read from.
    pub cni_conf_dir: PathBuf,
    /// Where the streaming server listens (port 0: one the kernel picks).
    pub stream_address: SocketAddr,
}

/// The pause image used when none is named.
pub const DEFAULT_PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// What the CRI services share: the supervisor's domain (images, content,
/// snapshots and the metadata database through `images`; containers are
/// functions over it; tasks; events), the CRI's own records and locks.
#[derive(Clone)]
pub struct Cri {
    pub images: Arc<Images>,
    pub events: Arc<Exchange>,
    pub tasks: Arc<Tasks>,
    pub store: Arc<store::Store>,
    pub locks: Arc<store::IdLocks>,
    pub config: CriConfig,
    pub streaming: Arc<streaming::service::Streaming>,
    /// The image filesystem's usage, sampled (ImageFsInfo).
    pub fs_usage: Arc<fs_usage::FsUsage>,
}

impl Cri {
    pub fn new(
        images: Arc<Images>,
        events: Arc<Exchange>,
        tasks: Arc<Tasks>,
        config: CriConfig,
        streaming: Arc<streaming::service::Streaming>,
    ) -> Cri {
        Cri {
            store: Arc::new(store::Store::new(Arc::clone(&images.meta))),
            images,
            events,
            tasks,
            locks: Arc::new(store::IdLocks::default()),
            fs_usage: fs_usage::FsUsage::new(config.snapshots_dir.clone()),
            config,
            streaming,
        }
    }
}

/// A stream a call answers with.
type CallStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Binds the CRI socket (mode 0600), refusing to take it from a live
/// server.
pub fn bind(config: &CriConfig) -> anyhow::Result<UnixListener> {
    crate::server::bind(&config.address)
}

/// Serves the CRI on a socket [`bind`] made, and the streaming server on
/// `streams`, until `shutdown` completes; the socket is removed afterwards.
pub async fn serve(
    cri: Cri,
    listener: UnixListener,
    streams: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let address = cri.config.address.clone();
    tracing::info!(address = %address.display(), namespace = NAMESPACE, "serving the CRI");
    container::image_volumes::sweep(&cri);
    let (stop_streams, streams_stopped) = tokio::sync::oneshot::channel::<()>();
    let stream_server = Arc::clone(&cri.streaming.server).serve(streams, async {
        let _ = streams_stopped.await;
    });
    let stream_task = tokio::spawn(stream_server);
    let routes = tonic::service::Routes::new(RuntimeServiceServer::new(cri.clone()))
        .add_service(ImageServiceServer::new(cri));
    let result = grpc::serve(listener, routes, shutdown)
        .await
        .context("serve the CRI");
    let _ = stop_streams.send(());
    let _ = stream_task.await;
    let _ = std::fs::remove_file(&address);
    result
}
