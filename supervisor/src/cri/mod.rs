//! The Kubernetes Container Runtime Interface (CRI v1, `runtime.v1`),
//! served on a unix socket of its own, as containerd's CRI plugin lives in
//! containerd: kubelet and crictl talk to it, it acts on the supervisor's
//! own domain (images, content, snapshots) in the namespace
//! [`NAMESPACE`], never through the supervisor's gRPC API.
//!
//! Here: the server and its configuration; `streaming` is ExecSync and
//! the streaming server Exec, Attach and PortForward point at; `runtime` is the
//! RuntimeService (Version, Status, RuntimeConfig; the pod and container
//! calls answer `Unimplemented` until they are built); `images` is the
//! ImageService's domain (CRI images: one per config digest, with every
//! name that points at it) and `image_service` its thin gRPC service.
//! See docs/cri.md.

mod image_service;
pub mod images;
mod runtime;
pub mod streaming;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use berth_proto::cri::v1::image_service_server::ImageServiceServer;
use berth_proto::cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;

use crate::events::Exchange;
use crate::images::Images;

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
    /// Where the streaming server listens (port 0: one the kernel picks).
    pub stream_address: SocketAddr,
}

/// What the CRI services share.
#[derive(Clone)]
pub struct Cri {
    pub images: Arc<Images>,
    pub events: Arc<Exchange>,
    pub config: CriConfig,
    pub streaming: Arc<streaming::service::Streaming>,
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
    let (stop_streams, streams_stopped) = tokio::sync::oneshot::channel::<()>();
    let stream_server = Arc::clone(&cri.streaming.server).serve(streams, async {
        let _ = streams_stopped.await;
    });
    let stream_task = tokio::spawn(stream_server);
    let result = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(cri.clone()))
        .add_service(ImageServiceServer::new(cri))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serve the CRI");
    let _ = stop_streams.send(());
    let _ = stream_task.await;
    let _ = std::fs::remove_file(&address);
    result
}
