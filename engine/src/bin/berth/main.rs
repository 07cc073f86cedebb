//! berth: the command line of berthd, and of any Docker Engine API. It is a
//! client like the docker CLI: the same commands, flags, output and exit
//! codes, over HTTP on the daemon's unix socket (`client`). One file per
//! command group; `output` prints tables, templates and progress.

mod client;
mod common;
mod container;
mod exec;
mod image;
mod opts;
mod output;
mod ps;
mod run;
mod stats;
mod stream;
mod system;
mod terminal;

use clap::{Parser, Subcommand};

use client::Client;

/// A failure with docker's exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StatusError {
    pub code: i32,
    /// Printed on stderr unless empty.
    pub message: String,
}

impl StatusError {
    pub fn new(code: i32, message: impl Into<String>) -> StatusError {
        StatusError {
            code,
            message: message.into(),
        }
    }

    /// Exit with `code`, printing nothing.
    pub fn silent(code: i32) -> StatusError {
        StatusError::new(code, "")
    }
}

#[derive(Parser)]
#[command(
    name = "berth",
    about = "A self-sufficient runtime for containers",
    version,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Cli {
    /// Daemon socket to connect to
    #[arg(short = 'H', long = "host", global = true)]
    host: Option<String>,
    /// Print version information and quit
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Container(container::ContainerCommand),
    #[command(flatten)]
    Run(run::RunCommand),
    #[command(flatten)]
    Image(image::ImageCommand),
    #[command(flatten)]
    System(system::SystemCommand),
    /// List containers
    #[command(alias = "list")]
    Ps(ps::PsArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Manage containers
    #[command(subcommand, name = "container")]
    ContainerGroup(ContainerGroup),
    /// Manage images
    #[command(subcommand, name = "image")]
    ImageGroup(ImageGroup),
}

/// `berth container ...`: the container commands under their group.
#[derive(Subcommand)]
enum ContainerGroup {
    #[command(flatten)]
    Container(container::ContainerCommand),
    #[command(flatten)]
    Run(run::RunCommand),
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls(ps::PsArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Remove all stopped containers
    Prune(system::PruneArgs),
}

/// `berth image ...`.
#[derive(Subcommand)]
enum ImageGroup {
    #[command(flatten)]
    Image(image::ImageCommand),
    /// List images
    #[command(alias = "list")]
    Ls(image::ImagesArgs),
    /// Display detailed information on one or more images
    Inspect(container::InspectArgs),
    /// Remove unused images
    Prune(image::ImagePruneArgs),
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let address = client::daemon_address(cli.host.as_deref());
    let client = Client::new(&client::socket_path(&address)?);
    let c = &client;
    match cli.command {
        Command::ContainerGroup(ContainerGroup::Container(
            container::ContainerCommand::Inspect(mut a),
        )) => {
            a.kind = Some("container".into());
            container::inspect(c, a).await
        }
        Command::ImageGroup(ImageGroup::Inspect(mut a)) => {
            a.kind = Some("image".into());
            container::inspect(c, a).await
        }
        Command::Container(cmd) | Command::ContainerGroup(ContainerGroup::Container(cmd)) => {
            container::run(c, cmd).await
        }
        Command::Run(cmd) | Command::ContainerGroup(ContainerGroup::Run(cmd)) => {
            run::run(c, cmd).await
        }
        Command::Image(cmd) | Command::ImageGroup(ImageGroup::Image(cmd)) => {
            image::run(c, cmd).await
        }
        Command::ImageGroup(ImageGroup::Ls(args)) => image::images(c, args).await,
        Command::ImageGroup(ImageGroup::Prune(args)) => image::prune(c, args).await,
        Command::System(cmd) => system::run(c, cmd).await,
        Command::Ps(args) | Command::ContainerGroup(ContainerGroup::Ls(args)) => {
            ps::ps(c, args).await
        }
        Command::Exec(args) | Command::ContainerGroup(ContainerGroup::Exec(args)) => {
            exec::exec(c, args).await
        }
        Command::Stats(args) | Command::ContainerGroup(ContainerGroup::Stats(args)) => {
            stats::stats(c, args).await
        }
        Command::ContainerGroup(ContainerGroup::Prune(args)) => {
            system::container_prune(c, args).await
        }
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                // docker exits 125 on a flag error.
                _ => 125,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<StatusError>() {
            Some(status) => {
                if !status.message.is_empty() {
                    eprintln!("{}", status.message);
                }
                status.code
            }
            None => {
                eprintln!("{e:#}");
                1
            }
        },
    };
    // Exit at once: a thread may still be blocked reading stdin.
    std::process::exit(code);
}
