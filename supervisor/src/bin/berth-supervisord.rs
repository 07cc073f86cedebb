//! berth-supervisord: the supervisor daemon (see the library's `server`).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "berth-supervisord",
    version,
    about = "berth's supervisor: images, content, snapshots, containers and tasks over gRPC"
)]
struct Args {
    /// Persistent state (content, snapshots, metadata).
    #[arg(long, default_value = "/var/lib/berth/supervisor")]
    root: PathBuf,
    /// Runtime state: shims/<namespace>/<id>/ (each task's bundle and
    /// shim) and runtime/<namespace>/ (the runtime's state).
    #[arg(long, default_value = "/run/berth")]
    state: PathBuf,
    /// The gRPC socket.
    #[arg(long, default_value = "/run/berth/supervisor.sock")]
    address: PathBuf,
    /// Registry credentials and insecure registries (docker config.json format).
    #[arg(long)]
    registry_config: Option<PathBuf>,
    /// The berth-shim binary (default: beside this one, else on PATH).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// The binary the runtime name "berth-runtime" runs (default: beside
    /// this one, else on PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Kubernetes' CRI socket (mode 0600) [default: cri.sock beside
    /// --address, so /run/berth/cri.sock].
    #[arg(long)]
    cri_address: Option<PathBuf>,
    /// Where the CRI's streaming server (the URLs of Exec, Attach and
    /// PortForward) listens; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    stream_address: std::net::SocketAddr,
    /// Serve no CRI (an empty --cri-address does the same).
    #[arg(long)]
    no_cri: bool,
    /// Registry mirrors and per-registry settings, containerd's layout:
    /// <DIR>/<registry>/hosts.toml (a missing directory configures nothing).
    #[arg(long, default_value = "/etc/berth/certs.d")]
    registry_config_dir: PathBuf,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// The image pod sandboxes' pause processes run from (pulled when
    /// absent).
    #[arg(long, default_value = berth_supervisor::cri::DEFAULT_PAUSE_IMAGE)]
    pause_image: String,
    /// Where CNI plugins are looked for, a colon-separated list.
    #[arg(long, default_value = "/usr/lib/cni:/opt/cni/bin")]
    cni_bin_dir: String,
    /// The CNI network config directory (the first .conflist or .conf in
    /// lexical order is the pods' network).
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Log debug messages.
    #[arg(long)]
    debug: bool,
}

fn main() {
    berth_supervisor::sys::limit_malloc_arenas();
    let args = Args::parse();
    // --debug is berth's own debug messages; its libraries' (h2's frames,
    // hyper's connections) would bury them, so those stay at info.
    let ours = if args.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("berth", ours);
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    // Beside the gRPC socket by default: supervisors on private sockets
    // (tests, berthd's own) never meet at /run/berth/cri.sock.
    let cri_address = match args.cri_address {
        _ if args.no_cri => None,
        Some(path) if path.as_os_str().is_empty() => None,
        Some(path) => Some(path),
        None => Some(args.address.with_file_name("cri.sock")),
    };
    // systemd's notification socket (Type=notify); the shims are run
    // without it.
    let notify_socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
    let config = berth_supervisor::server::Config {
        root: args.root,
        state: args.state,
        address: args.address,
        registry_config: args.registry_config,
        shim: args.shim,
        runtime: args.runtime,
        registry_hosts_dir: Some(args.registry_config_dir),
        cri_address,
        metrics_addr: args.metrics_addr,
        stream_address: args.stream_address,
        pause_image: Some(args.pause_image),
        cni_bin_dirs: std::env::split_paths(&args.cni_bin_dir).collect(),
        cni_conf_dir: args.cni_conf_dir,
        notify_socket,
    };
    // Two workers are plenty: the heavy work (hashing, unpacking) runs on
    // the blocking pool, and fewer threads keep the idle daemon small.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Idle blocking threads go soon: their stacks are the idle
        // daemon's memory, and starting one is cheap next to a pull.
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth-supervisord: start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(berth_supervisor::server::serve(config, shutdown_signal()));
    if let Err(e) = result {
        eprintln!("berth-supervisord: {e:#}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default actions still stop the daemon.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
