//! berth: the command line of berthd, and of any Docker Engine API. It is a
//! client like the docker CLI: the same commands, flags, output and exit
//! codes, over HTTP on the daemon's unix socket or TCP with or without TLS
//! (`client`, `transport`), the daemon chosen by `-H` or a context
//! (`context`). One file per command group; `output` prints tables,
//! templates and progress.

mod auth;
mod build;
mod client;
mod common;
mod completion;
mod container;
mod context;
mod cp;
mod examples;
mod exec;
mod healthopts;
mod image;
mod network;
mod opts;
mod output;
mod ps;
mod run;
mod stats;
mod stream;
mod system;
mod terminal;
mod transport;
mod volume;

use std::error::Error as _;

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
    /// Name of the context to use to connect to the daemon (overrides
    /// DOCKER_HOST env var and default context set with "berth context use")
    #[arg(short = 'c', long = "context")]
    context: Option<String>,
    /// Daemon socket to connect to
    #[arg(short = 'H', long = "host", global = true)]
    host: Option<String>,
    /// Use TLS; implied by --tlsverify
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tls: Option<bool>,
    /// Use TLS and verify the remote
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tlsverify: Option<bool>,
    /// Trust certs signed only by this CA
    #[arg(long, value_name = "string")]
    tlscacert: Option<std::path::PathBuf>,
    /// Path to TLS certificate file
    #[arg(long, value_name = "string")]
    tlscert: Option<std::path::PathBuf>,
    /// Path to TLS key file
    #[arg(long, value_name = "string")]
    tlskey: Option<std::path::PathBuf>,
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
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::CpArgs),
    /// Manage containers
    #[command(subcommand, name = "container")]
    ContainerGroup(ContainerGroup),
    /// Manage images
    #[command(subcommand, name = "image")]
    ImageGroup(ImageGroup),
    /// Manage networks
    #[command(subcommand, name = "network")]
    Network(network::NetworkCommand),
    /// List port mappings or a specific mapping for the container
    Port(network::PortArgs),
    /// Manage volumes
    #[command(subcommand, name = "volume")]
    Volume(volume::VolumeCommand),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// Create a new image from a container's changes
    Commit(build::CommitArgs),
    /// Show the history of an image
    History(build::HistoryArgs),
    /// Manage builds
    #[command(subcommand, name = "builder")]
    Builder(BuilderGroup),
    /// Manage contexts
    #[command(subcommand, name = "context")]
    Context(context::ContextCommand),
    /// Generate the autocompletion script for the specified shell
    Completion(completion::CompletionArgs),
    /// Write a man page for every command into a directory
    #[command(hide = true)]
    Manpages(completion::ManpagesArgs),
}

/// `berth builder ...`.
#[derive(Subcommand)]
enum BuilderGroup {
    /// Remove build cache
    Prune(build::BuilderPruneArgs),
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
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::CpArgs),
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
    // The commands that print what the command line itself is.
    let cli = match cli.command {
        Command::Completion(args) => {
            return completion::completion(
                examples::add(<Cli as clap::CommandFactory>::command()),
                args,
            )
        }
        Command::Manpages(args) => {
            return completion::manpages(
                examples::add(<Cli as clap::CommandFactory>::command()),
                args,
            )
        }
        command => Cli { command, ..cli },
    };
    let opts = context::ConnectOptions {
        host: cli.host.clone(),
        context: cli.context.clone(),
        tls: cli.tls,
        tlsverify: cli.tlsverify,
        tlscacert: cli.tlscacert.clone(),
        tlscert: cli.tlscert.clone(),
        tlskey: cli.tlskey.clone(),
    };
    let cli = match cli.command {
        Command::Context(cmd) => return context::run(cmd, &opts),
        command => Cli { command, ..cli },
    };
    let client = Client::new(context::resolve_endpoint(&opts)?);
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
        Command::Cp(args) | Command::ContainerGroup(ContainerGroup::Cp(args)) => {
            cp::run(c, args).await
        }
        Command::ContainerGroup(ContainerGroup::Prune(args)) => {
            system::container_prune(c, args).await
        }
        Command::Network(cmd) => network::run(c, cmd).await,
        Command::Port(args) => network::port(c, args).await,
        Command::Volume(cmd) => volume::run(c, cmd).await,
        Command::Build(args) => build::build(c, args).await,
        Command::Commit(args) => build::commit(c, args).await,
        Command::History(args) => build::history(c, args).await,
        Command::Builder(BuilderGroup::Prune(args)) => build::builder_prune(c, args).await,
        Command::Completion(_) | Command::Manpages(_) | Command::Context(_) => {
            unreachable!("answered above")
        }
    }
}

/// The subcommand the arguments name ("ps", "container ls") and its
/// usage line, for errors worded as docker's.
fn command_path(args: &[String]) -> (String, String, clap::Command) {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        // The global options that take a value (those before the command
        // only, but for -H).
        let top = matches!(
            arg.as_str(),
            "-c" | "--context" | "--tlscacert" | "--tlscert" | "--tlskey"
        );
        if arg == "-H" || arg == "--host" || (top && path.is_empty()) {
            skip_value = true;
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(arg) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                cmd = sub.clone();
            }
            None => break,
        }
    }
    let usage = cmd.render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let path = path.join(" ");
    let usage = match usage.split_once(' ') {
        _ if usage.starts_with("berth ") => usage.to_string(),
        Some((_, rest)) => format!("berth {path} {rest}"),
        None => format!("berth {path}"),
    };
    (path, docker_usage(&usage), cmd)
}

/// clap's usage in docker's notation: `<C>...` is `C [C...]`, `<C>` is `C`.
fn docker_usage(usage: &str) -> String {
    usage
        .split(' ')
        .map(
            |word| match word.strip_prefix('<').and_then(|w| w.strip_suffix(">...")) {
                Some(name) if !name.contains(' ') => format!("{name} [{name}...]"),
                _ => word.replace(['<', '>'], "").replace("]...", "]"),
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// "1 argument", "at least 2 arguments": what the command's required
/// positional arguments ask for, in docker's words.
fn arguments_needed(cmd: &clap::Command) -> String {
    let required: Vec<&clap::Arg> = cmd
        .get_positionals()
        .filter(|a| a.is_required_set())
        .collect();
    let n = required.len().max(1);
    let many = required
        .iter()
        .any(|a| a.get_num_args().is_some_and(|r| r.max_values() > 1));
    let noun = if n == 1 { "argument" } else { "arguments" };
    if many {
        format!("at least {n} {noun}")
    } else {
        format!("{n} {noun}")
    }
}

/// A flag as docker names it in errors: "-n, --last".
fn flag_name(cmd: &clap::Command, rendered: &str) -> String {
    let long = rendered.split_whitespace().next().unwrap_or(rendered);
    let long = long.trim_start_matches('-');
    match cmd.get_arguments().find(|a| a.get_long() == Some(long)) {
        Some(a) => match a.get_short() {
            Some(s) => format!("-{s}, --{long}"),
            None => format!("--{long}"),
        },
        None => rendered.to_string(),
    }
}

/// A command-line error as docker words it, and its exit code.
fn usage_error(e: &clap::Error) -> (i32, String) {
    use clap::error::{ContextKind, ErrorKind};
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, usage, cmd) = command_path(&args);
    let context = |kind| e.get(kind).map(ToString::to_string).unwrap_or_default();
    let footer = format!("Usage:  {usage}\n\nRun 'berth {path} --help' for more information");
    match e.kind() {
        ErrorKind::UnknownArgument => (
            125,
            format!(
                "unknown flag: {}\n\n{footer}",
                context(ContextKind::InvalidArg)
            ),
        ),
        ErrorKind::MissingRequiredArgument | ErrorKind::TooFewValues => {
            let needed = arguments_needed(&cmd);
            (
            1,
            format!(
                "berth: 'berth {path}' requires {needed}\n\nUsage:  {usage}\n\n{} 'berth {path} --help' for more information",
                if needed.starts_with("at least") { "See" } else { "Run" }
            ),
            )
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => (
            125,
            format!(
                "invalid argument {:?} for \"{}\" flag: {}\n\n{footer}",
                context(ContextKind::InvalidValue),
                flag_name(&cmd, &context(ContextKind::InvalidArg)),
                e.source()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "invalid value".into())
            ),
        ),
        _ => (125, format!("{}", e.render()).trim_end().to_string()),
    }
}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = examples::add(Cli::command())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let (code, message) = usage_error(&e);
            eprintln!("{message}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lines_read_as_docker_writes_them() {
        assert_eq!(
            docker_usage("berth stop [OPTIONS] <CONTAINER>..."),
            "berth stop [OPTIONS] CONTAINER [CONTAINER...]"
        );
        assert_eq!(
            docker_usage("berth exec [OPTIONS] <CONTAINER> <COMMAND [ARG...]>..."),
            "berth exec [OPTIONS] CONTAINER COMMAND [ARG...]"
        );
        let (path, usage, _) = command_path(&["container".into(), "ls".into(), "-a".into()]);
        assert_eq!(
            (path.as_str(), usage.as_str()),
            ("container ls", "berth container ls [OPTIONS]")
        );
    }
}
