//! berthd: the Docker Engine API on berth's supervisor (see the library's
//! `daemon`).

use std::path::PathBuf;

use anyhow::Context;
use berth_engine::config::{Paths, DEFAULT_DATA_ROOT, DEFAULT_EXEC_ROOT};
use berth_engine::daemon::{self, Options};
use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth's engine: the Docker Engine API on a unix socket"
)]
struct Args {
    /// The API socket, unix://PATH (default: <exec-root>/berth.sock).
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// Persistent state: the engine's and its supervisor's.
    #[arg(long, default_value = DEFAULT_DATA_ROOT)]
    data_root: PathBuf,
    /// Runtime state: sockets, shims, the runtime's state.
    #[arg(long, default_value = DEFAULT_EXEC_ROOT)]
    exec_root: PathBuf,
    /// Write the daemon's pid here.
    #[arg(short = 'p', long)]
    pidfile: Option<PathBuf>,
    /// A running berth-supervisord's socket (default: start one).
    #[arg(long)]
    supervisor: Option<PathBuf>,
    /// The berth-supervisord binary to start (default: beside berthd).
    #[arg(long)]
    supervisor_binary: Option<PathBuf>,
    /// The default bridge network's device ("none": no networking at all).
    #[arg(short = 'b', long = "bridge")]
    bridge: Option<String>,
    /// The default bridge's address and prefix (e.g. 172.30.0.1/16).
    #[arg(long)]
    bip: Option<String>,
    /// A name server for containers (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// Log debug messages.
    #[arg(short = 'D', long)]
    debug: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = if args.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    // Debug messages of berth's own crates only (not of hyper, h2, tower).
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("berth_engine", level)
        .with_target("berth_client", level)
        .with_default(tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let socket = match &args.host {
        None => None,
        Some(host) => Some(PathBuf::from(host.strip_prefix("unix://").with_context(
            || format!("-H {host}: only unix://PATH sockets are served"),
        )?)),
    };
    let opts = Options {
        paths: Paths::new(args.data_root, args.exec_root),
        socket,
        supervisor: args.supervisor,
        supervisor_binary: args.supervisor_binary,
        pidfile: args.pidfile,
        debug: args.debug,
        network: berth_engine::network::NetworkOptions {
            bridge: args.bridge,
            bip: args.bip,
            dns: args.dns,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime
        .block_on(daemon::run(opts, shutdown_signal()))
        .context("berthd")?;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
