//! berthd: the Docker Engine API on berth's supervisor (see the library's
//! `daemon`).

use std::path::PathBuf;

use anyhow::Context;
use berth_engine::config::{Paths, DEFAULT_DATA_ROOT, DEFAULT_EXEC_ROOT};
use berth_engine::daemon::{self, Options};
use berth_engine::daemon_config::{self, Settings, DEFAULT_CONFIG_FILE};
use berth_engine::listeners;
use berth_engine::tls::TlsOptions;
use clap::{CommandFactory, FromArgMatches, Parser};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth's engine: the Docker Engine API on a unix socket, TCP (with TLS) or \
             systemd's sockets"
)]
struct Args {
    /// Where to serve the API (repeatable): unix://PATH, tcp://ADDR:PORT,
    /// fd:// or fd://N (systemd's sockets) [default: unix://<exec-root>/berth.sock].
    #[arg(short = 'H', long = "host")]
    hosts: Vec<String>,
    /// Settings as dockerd's daemon.json (a missing file at the default
    /// path is none).
    #[arg(long, default_value = DEFAULT_CONFIG_FILE)]
    config_file: PathBuf,
    /// Persistent state: the engine's and its supervisor's [default: /var/lib/berth].
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Runtime state: sockets, shims, the runtime's state [default: /run/berth].
    #[arg(long)]
    exec_root: Option<PathBuf>,
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
    /// The log level: debug, info, warn, error or fatal [default: info].
    #[arg(short = 'l', long)]
    log_level: Option<String>,
    /// Serve TLS on TCP listeners (--tls=false: serve plain TCP off
    /// loopback, knowingly).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tls: Option<bool>,
    /// Serve TLS and require client certificates signed by --tlscacert
    /// (implies --tls) [default: true when DOCKER_TLS_VERIFY is set].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tlsverify: Option<bool>,
    /// Trust client certificates signed by this CA only [default: ~/.docker/ca.pem].
    #[arg(long)]
    tlscacert: Option<PathBuf>,
    /// The server's certificate [default: ~/.docker/cert.pem].
    #[arg(long)]
    tlscert: Option<PathBuf>,
    /// The server's key [default: ~/.docker/key.pem].
    #[arg(long)]
    tlskey: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long)]
    metrics_addr: Option<String>,
}

impl Args {
    /// The settings given as flags (unset ones absent).
    fn settings(&self) -> Settings {
        Settings {
            hosts: self.hosts.clone(),
            data_root: self.data_root.clone(),
            exec_root: self.exec_root.clone(),
            pidfile: self.pidfile.clone(),
            supervisor: self.supervisor.clone(),
            supervisor_binary: self.supervisor_binary.clone(),
            bridge: self.bridge.clone(),
            bip: self.bip.clone(),
            dns: self.dns.clone(),
            debug: self.debug.then_some(true),
            log_level: self.log_level.clone(),
            tls: self.tls,
            tlsverify: self.tlsverify,
            tlscacert: self.tlscacert.clone(),
            tlscert: self.tlscert.clone(),
            tlskey: self.tlskey.clone(),
            metrics_addr: self.metrics_addr.clone(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches)?;
    let named = matches.value_source("config_file") == Some(clap::parser::ValueSource::CommandLine);
    let flags = args.settings();
    let settings = match daemon_config::load(&args.config_file, named)? {
        Some(file) => daemon_config::merge(&flags, &file, &args.config_file)?,
        None => flags,
    };
    settings.validate()?;
    let debug = settings.debug == Some(true);
    let level = match settings.log_level.as_deref() {
        _ if debug => tracing::Level::DEBUG,
        Some("debug") => tracing::Level::DEBUG,
        Some("warn") => tracing::Level::WARN,
        Some("error" | "fatal") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    // Debug messages of berth's own crates only (not of hyper, h2, tower).
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("berth_engine", level)
        .with_target("berth_client", level)
        .with_default(level.min(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let tls = TlsOptions {
        tls: settings.tls,
        // dockerd: DOCKER_TLS_VERIFY in its environment turns it on.
        verify: settings.tlsverify.or_else(|| {
            std::env::var_os("DOCKER_TLS_VERIFY")
                .filter(|v| !v.is_empty())
                .map(|_| true)
        }),
        ca: settings.tlscacert.clone(),
        cert: settings.tlscert.clone(),
        key: settings.tlskey.clone(),
    };
    let hosts = settings
        .hosts
        .iter()
        .map(|h| listeners::parse_host(h, tls.enabled()))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        paths: Paths::new(
            settings
                .data_root
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT)),
            settings
                .exec_root
                .unwrap_or_else(|| PathBuf::from(DEFAULT_EXEC_ROOT)),
        ),
        hosts,
        tls,
        metrics_addr: settings.metrics_addr,
        supervisor: settings.supervisor,
        supervisor_binary: settings.supervisor_binary,
        pidfile: settings.pidfile,
        debug,
        network: berth_engine::network::NetworkOptions {
            bridge: settings.bridge,
            bip: settings.bip,
            dns: settings.dns,
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
