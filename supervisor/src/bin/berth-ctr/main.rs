//! berth-ctr: the supervisor's debug client, like containerd's `ctr`.
//!
//! This file parses the arguments and hands each command group to its
//! module (`images`, `content`, `snapshots`, `containers`, `tasks` and
//! `run`, `namespaces`, `leases`, `events`, `version`), which makes the gRPC
//! calls through `berth_client` and prints the answers with `output`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use berth_client::Client;
use clap::{Parser, Subcommand};
use tracing::debug;

mod containers;
mod content;
mod events;
mod images;
mod leases;
mod namespaces;
mod output;
mod snapshots;
mod tasks;
mod version;

use output::Reported;

const DEFAULT_ADDRESS: &str = "/run/berth/supervisor.sock";
const DEFAULT_NAMESPACE: &str = "default";

#[derive(Parser)]
#[command(
    name = "berth-ctr",
    version,
    about = "Debug client of berth-supervisord, like containerd's ctr"
)]
struct Cli {
    /// Supervisor socket [env: BERTH_ADDRESS] [default: /run/berth/supervisor.sock]
    #[arg(short, long, global = true, value_name = "PATH")]
    address: Option<PathBuf>,
    /// Namespace of every call [env: BERTH_NAMESPACE] [default: default]
    #[arg(short, long, global = true, value_name = "NAME")]
    namespace: Option<String>,
    /// Log debug messages to stderr
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage images
    #[command(subcommand, visible_aliases = ["image", "i"])]
    Images(images::ImagesCommand),
    /// Manage content (blobs)
    #[command(subcommand)]
    Content(content::ContentCommand),
    /// Manage snapshots
    #[command(subcommand, visible_aliases = ["snapshot", "s"])]
    Snapshots(snapshots::SnapshotsCommand),
    /// Manage containers
    #[command(subcommand, visible_aliases = ["container", "c"])]
    Containers(containers::ContainersCommand),
    /// Manage tasks (the running side of containers)
    #[command(subcommand, visible_aliases = ["task", "t"])]
    Tasks(tasks::TasksCommand),
    /// Run an image's process in a new container, like `ctr run`
    Run(Box<tasks::RunArgs>),
    /// Manage namespaces
    #[command(subcommand, visible_aliases = ["namespace", "ns"])]
    Namespaces(namespaces::NamespacesCommand),
    /// Manage leases
    #[command(subcommand, visible_alias = "lease")]
    Leases(leases::LeasesCommand),
    /// Print the namespace's events as they happen (one line each)
    Events(events::EventsArgs),
    /// Print the client and server versions
    Version,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.debug {
        output::debug_log::init();
    }
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !e.is::<Reported>() {
                eprintln!("berth-ctr: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let address = cli
        .address
        .or_else(|| {
            std::env::var_os("BERTH_ADDRESS")
                .filter(|a| !a.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ADDRESS));
    let namespace = cli
        .namespace
        .or_else(|| {
            std::env::var("BERTH_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    if let Command::Version = cli.command {
        println!("Client:\n  Version:  {}", env!("CARGO_PKG_VERSION"));
    }
    debug!(address = %address.display(), namespace = %namespace, "connecting");
    let client = Client::connect(&address, &namespace).await?;
    let done = match cli.command {
        Command::Images(cmd) => images::handle(&client, cmd).await,
        Command::Content(cmd) => content::handle(&client, cmd).await,
        Command::Snapshots(cmd) => snapshots::handle(&client, cmd).await,
        Command::Containers(cmd) => containers::handle(&client, cmd).await,
        Command::Tasks(cmd) => return tasks::tasks(&client, cmd).await,
        Command::Run(args) => return tasks::run(&client, *args).await,
        Command::Namespaces(cmd) => namespaces::handle(&client, cmd).await,
        Command::Leases(cmd) => leases::handle(&client, cmd).await,
        Command::Events(args) => events::handle(&client, args).await,
        Command::Version => version::handle(&client).await,
    };
    done.map(|()| 0)
}

/// `--platform`: os/arch[/variant].
fn parse_platform(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{s:?} is not os/arch[/variant]"));
    }
    Ok(s.to_string())
}

/// `KEY=VALUE` labels.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_global_flags_anywhere() {
        let cli =
            Cli::try_parse_from(["berth-ctr", "images", "ls", "-n", "test", "-a", "/s"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("test"));
        assert_eq!(cli.address.as_deref(), Some(Path::new("/s")));
        assert!(matches!(
            cli.command,
            Command::Images(images::ImagesCommand::Ls { quiet: false })
        ));
    }
}
