//! berth-ctr: the supervisor's debug client, like containerd's `ctr`.
//!
//! Parses arguments, makes the gRPC calls through `berth_client`,
//! and prints the answers: tables, progress bars, raw bytes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use berth_client::{docker_credentials, registry_host, Client};
use berth_proto::containers::v1::{CreateContainerRequest, Overrides};
use berth_proto::images::v1::{
    ArchiveFormat, DeleteImageRequest, ExportRequest, Image, ImportOptions, ImportRequest,
    ListImagesRequest, Progress, ProgressState, PullRequest, PushRequest, RegistryAuth,
    TagImageRequest,
};
use berth_proto::types::v1::Mount;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::StreamExt as _;
use indicatif::{
    HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle,
};
use prost_types::Timestamp;
use tracing::debug;

mod tasks;

const DEFAULT_ADDRESS: &str = "/run/berth/supervisor.sock";
const DEFAULT_NAMESPACE: &str = "default";
/// The size of the data in each message of an import.
const CHUNK: usize = 1 << 20;

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
    Images(ImagesCommand),
    /// Manage content (blobs)
    #[command(subcommand)]
    Content(ContentCommand),
    /// Manage snapshots
    #[command(subcommand, visible_aliases = ["snapshot", "s"])]
    Snapshots(SnapshotsCommand),
    /// Manage containers
    #[command(subcommand, visible_aliases = ["container", "c"])]
    Containers(ContainersCommand),
    /// Manage tasks (the running side of containers)
    #[command(subcommand, visible_aliases = ["task", "t"])]
    Tasks(tasks::TasksCommand),
    /// Run an image's process in a new container, like `ctr run`
    Run(Box<tasks::RunArgs>),
    /// Manage namespaces
    #[command(subcommand, visible_aliases = ["namespace", "ns"])]
    Namespaces(NamespacesCommand),
    /// Manage leases
    #[command(subcommand, visible_alias = "lease")]
    Leases(LeasesCommand),
    /// Print the namespace's events as they happen (one line each)
    Events {
        /// First replay the kept events after this sequence number (0: all)
        #[arg(long)]
        after: Option<u64>,
        /// Only these topics ("/images/create"), or topic prefixes ending in '/'
        topics: Vec<String>,
    },
    /// Print the client and server versions
    Version,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Fetch an image from its registry and unpack it
    Pull(PullArgs),
    /// Send a stored image to a registry
    Push(PushArgs),
    /// List images
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove image names (and what only they used)
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Image names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Give an image another name
    Tag {
        /// Existing image name
        source: String,
        /// New name
        target: String,
    },
    /// Import an OCI image layout or `docker save` tarball
    Import(ImportArgs),
    /// Export images as an OCI image layout or `docker save` tarball
    Export(ExportArgs),
}

#[derive(Args)]
struct AuthArgs {
    /// Registry credentials; without a password, it is read from stdin
    #[arg(short, long, value_name = "USER[:PASSWORD]")]
    user: Option<String>,
    /// Docker config file with registry credentials [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
}

#[derive(Args)]
struct PullArgs {
    #[command(flatten)]
    auth: AuthArgs,
    /// Platform to unpack, os/arch[/variant] [default: the supervisor's]
    #[arg(long, value_parser = parse_platform)]
    platform: Option<String>,
    /// Fetch the content only, without unpacking into snapshots
    #[arg(long)]
    no_unpack: bool,
    /// Show no progress, print only the result
    #[arg(short, long)]
    quiet: bool,
    /// Image reference, e.g. registry.example:5000/app:1.0
    reference: String,
}

#[derive(Args)]
struct PushArgs {
    #[command(flatten)]
    auth: AuthArgs,
    /// Platform to push, os/arch[/variant] [default: everything the image holds]
    #[arg(long, value_parser = parse_platform)]
    platform: Option<String>,
    /// Show no progress, print only the result
    #[arg(short, long)]
    quiet: bool,
    /// Stored image to push
    name: String,
    /// Where to push it [default: NAME]
    remote_ref: Option<String>,
}

#[derive(Args)]
struct ImportArgs {
    /// Name for an image the archive does not name
    #[arg(long)]
    name: Option<String>,
    /// Platform to unpack, os/arch[/variant] [default: the supervisor's]
    #[arg(long, value_parser = parse_platform)]
    platform: Option<String>,
    /// Store the content only, without unpacking into snapshots
    #[arg(long)]
    no_unpack: bool,
    /// Archive to read, or - for stdin
    file: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Oci,
    Docker,
}

#[derive(Args)]
struct ExportArgs {
    /// Archive format
    #[arg(long, value_enum, default_value = "oci")]
    format: Format,
    /// Platform to export, os/arch[/variant] [default: all (oci), the supervisor's (docker)]
    #[arg(long, value_parser = parse_platform)]
    platform: Option<String>,
    /// Archive to write, or - for stdout
    file: String,
    /// Images to export
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Subcommand)]
enum ContentCommand {
    /// List blobs
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the digests
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a blob's bytes to stdout
    Get {
        /// Digest of the blob, e.g. sha256:...
        digest: String,
    },
    /// Remove blobs from the namespace
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Digests of the blobs
        #[arg(required = true)]
        digests: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SnapshotsCommand {
    /// List snapshots
    #[command(visible_alias = "list")]
    Ls,
    /// Show the disk usage of one or all snapshots
    Usage {
        /// Snapshot [default: all]
        key: Option<String>,
    },
    /// Create a writable snapshot
    Prepare(SnapshotArgs),
    /// Create a read-only snapshot
    View(SnapshotArgs),
    /// Commit an active snapshot as NAME
    Commit {
        /// Name of the committed snapshot
        name: String,
        /// Active snapshot to commit
        key: String,
    },
    /// Remove snapshots
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Snapshot keys
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the mount commands that assemble a snapshot at TARGET
    Mounts {
        /// Directory to mount on
        target: String,
        /// Snapshot
        key: String,
    },
    /// Store a snapshot's changes as a layer and print its descriptor
    Diff {
        /// Snapshot whose changes against its parent become the layer
        key: String,
        /// Layer media type [default: application/vnd.oci.image.layer.v1.tar+gzip]
        #[arg(long)]
        media_type: Option<String>,
    },
}

#[derive(Args)]
struct SnapshotArgs {
    /// Key of the new snapshot
    key: String,
    /// Committed snapshot to start from [default: empty]
    parent: Option<String>,
    /// Print the mount commands that assemble it at TARGET
    #[arg(long)]
    target: Option<String>,
}

#[derive(Subcommand)]
enum ContainersCommand {
    /// Create a container from an image
    Create(Box<CreateArgs>),
    /// List containers
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print a container's record with its spec
    Info {
        /// Container id
        id: String,
    },
    /// Remove containers and the snapshots they prepared
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Container ids
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// How a container's process differs from its image's, and its record's
/// runtime and labels: shared by `containers create` and `run`.
#[derive(Args, Default)]
struct ProcessArgs {
    /// Environment variable, merged over the image's (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory [default: the image's, or /]
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// user[:group], names or numbers [default: the image's]
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Hostname [default: the container id]
    #[arg(long)]
    hostname: Option<String>,
    /// Memory limit in bytes, swap included
    #[arg(long, value_name = "BYTES")]
    memory_limit: Option<i64>,
    /// Runtime: berth-runtime, or another runc-compatible one (runc, crun, a path)
    #[arg(long)]
    runtime: Option<String>,
    /// Label (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    label: Vec<(String, String)>,
}

impl ProcessArgs {
    /// The create request for container `id` of `image` running `args`.
    fn create_request(
        &self,
        id: String,
        image: String,
        args: Vec<String>,
        terminal: bool,
    ) -> CreateContainerRequest {
        CreateContainerRequest {
            id,
            image,
            labels: self.label.iter().cloned().collect(),
            runtime: self.runtime.clone().unwrap_or_default(),
            overrides: Some(Overrides {
                args,
                env: self.env.clone(),
                cwd: self.cwd.clone().unwrap_or_default(),
                user: self.user.clone().unwrap_or_default(),
                terminal,
                hostname: self.hostname.clone().unwrap_or_default(),
                memory_limit: self.memory_limit.unwrap_or(0),
            }),
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct CreateArgs {
    /// Existing snapshot to use as the root filesystem [default: a new one on the image, named ID]
    #[arg(long, value_name = "KEY")]
    snapshot_key: Option<String>,
    #[command(flatten)]
    process: ProcessArgs,
    /// Give the process a terminal
    #[arg(short, long)]
    tty: bool,
    /// Image name
    image: String,
    /// Container id
    id: String,
    /// Command and arguments [default: the image's Entrypoint and Cmd]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum NamespacesCommand {
    /// List namespaces
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a namespace
    Create {
        /// Namespace name
        name: String,
        /// Labels
        #[arg(value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Remove empty namespaces
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Namespace names
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LeasesCommand {
    /// List leases
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a lease and print its id
    Create {
        /// Lease id [default: a random one]
        #[arg(long)]
        id: Option<String>,
        /// Seconds until the lease expires [default: never]
        #[arg(long, value_name = "SECS")]
        expires: Option<u32>,
        /// Label of the lease (repeatable)
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
        label: Vec<(String, String)>,
    },
    /// Remove leases, and what only they kept
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Lease ids
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// An error already printed to stderr: exit 1 without another message.
#[derive(Debug)]
struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors reported above")
    }
}

impl std::error::Error for Reported {}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.debug {
        debug_log::init();
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
        Command::Images(cmd) => images(&client, cmd).await,
        Command::Content(cmd) => content(&client, cmd).await,
        Command::Snapshots(cmd) => snapshots(&client, cmd).await,
        Command::Containers(cmd) => containers(&client, cmd).await,
        Command::Tasks(cmd) => return tasks::tasks(&client, cmd).await,
        Command::Run(args) => return tasks::run(&client, *args).await,
        Command::Namespaces(cmd) => namespaces(&client, cmd).await,
        Command::Leases(cmd) => leases(&client, cmd).await,
        Command::Events { after, topics } => events(&client, after, topics).await,
        Command::Version => version(&client).await,
    };
    done.map(|()| 0)
}

/// The error a person reads for a failed call: the status message, or the
/// code's description when the message is empty.
fn rpc(status: tonic::Status) -> anyhow::Error {
    debug!(code = ?status.code(), message = status.message(), "call failed");
    if status.message().is_empty() {
        anyhow!("{}", status.code().description())
    } else {
        anyhow!("{}", status.message())
    }
}

/// Runs `f` on every item, printing each failure; fails after all were tried.
async fn for_each<F, Fut>(items: Vec<String>, mut f: F) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut failed = false;
    for item in items {
        match f(item.clone()).await {
            Ok(()) => println!("{item}"),
            Err(status) => {
                eprintln!("berth-ctr: {item}: {:#}", rpc(status));
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

fn parse_platform(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{s:?} is not os/arch[/variant]"));
    }
    Ok(s.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

// ---- images ----

async fn images(client: &Client, cmd: ImagesCommand) -> Result<()> {
    match cmd {
        ImagesCommand::Pull(args) => images_pull(client, args).await,
        ImagesCommand::Push(args) => images_push(client, args).await,
        ImagesCommand::Ls { quiet } => images_ls(client, quiet).await,
        ImagesCommand::Rm { names } => {
            let images = client.images();
            for_each(names, |name| {
                let mut images = images.clone();
                async move { images.delete(DeleteImageRequest { name }).await.map(|_| ()) }
            })
            .await
        }
        ImagesCommand::Tag { source, target } => {
            let image = client
                .images()
                .tag(TagImageRequest { source, target })
                .await
                .map_err(rpc)?
                .into_inner();
            println!("{}", image.name);
            Ok(())
        }
        ImagesCommand::Import(args) => images_import(client, args).await,
        ImagesCommand::Export(args) => images_export(client, args).await,
    }
}

/// Credentials for the registry of `reference`: `--user`, else the docker config.
fn registry_auth(args: &AuthArgs, reference: &str) -> Result<Option<RegistryAuth>> {
    if let Some(user) = &args.user {
        let (username, password) = match user.split_once(':') {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => (user.clone(), read_password()?),
        };
        if username.is_empty() {
            bail!("--user needs a user name");
        }
        return Ok(Some(RegistryAuth {
            username,
            password,
            identity_token: String::new(),
        }));
    }
    if let Some(path) = &args.registry_config {
        if !path.exists() {
            bail!("registry config {} does not exist", path.display());
        }
    }
    let host = registry_host(reference);
    let auth = docker_credentials(args.registry_config.as_deref(), host)?;
    debug!(
        registry = host,
        found = auth.is_some(),
        "registry credentials"
    );
    Ok(auth)
}

/// The password of `--user USER`: the first line of stdin, unless it is a terminal.
fn read_password() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("password required: give --user USER:PASSWORD, or the password on stdin");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("read password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("password required: stdin was empty");
    }
    Ok(password.to_string())
}

async fn images_pull(client: &Client, args: PullArgs) -> Result<()> {
    let auth = registry_auth(&args.auth, &args.reference)?;
    let request = PullRequest {
        reference: args.reference.clone(),
        platform: args.platform.unwrap_or_default(),
        auth,
        no_unpack: args.no_unpack,
    };
    let mut stream = client
        .images()
        .pull(request)
        .await
        .map_err(rpc)?
        .into_inner();
    let mut transfer = Transfer::new(args.quiet);
    let mut image: Option<Image> = None;
    while let Some(message) = stream.message().await.map_err(rpc)? {
        transfer.update(&message.progress);
        if message.image.is_some() {
            image = message.image;
        }
    }
    transfer.finish();
    let image =
        image.ok_or_else(|| anyhow!("pull of {} ended without an image", args.reference))?;
    let digest = image
        .target
        .as_ref()
        .map(|t| t.digest.as_str())
        .unwrap_or("");
    println!("pulled {} ({digest}, {})", image.name, size(image.size));
    Ok(())
}

async fn images_push(client: &Client, args: PushArgs) -> Result<()> {
    let remote = args.remote_ref.clone().unwrap_or_else(|| args.name.clone());
    let auth = registry_auth(&args.auth, &remote)?;
    let request = PushRequest {
        name: args.name.clone(),
        reference: args.remote_ref.unwrap_or_default(),
        auth,
        platform: args.platform.unwrap_or_default(),
    };
    let mut stream = client
        .images()
        .push(request)
        .await
        .map_err(rpc)?
        .into_inner();
    let mut transfer = Transfer::new(args.quiet);
    let mut digest = String::new();
    while let Some(message) = stream.message().await.map_err(rpc)? {
        transfer.update(&message.progress);
        if !message.digest.is_empty() {
            digest = message.digest;
        }
    }
    transfer.finish();
    if digest.is_empty() {
        bail!("push of {} ended without a digest", args.name);
    }
    println!("pushed {} to {remote} ({digest})", args.name);
    Ok(())
}

async fn images_ls(client: &Client, quiet: bool) -> Result<()> {
    let mut images = client
        .images()
        .list(ListImagesRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .images;
    images.sort_by(|a, b| a.name.cmp(&b.name));
    if quiet {
        for image in images {
            println!("{}", image.name);
        }
        return Ok(());
    }
    let rows = images.iter().map(|image| {
        let target = image.target.clone().unwrap_or_default();
        vec![
            image.name.clone(),
            target.media_type,
            target.digest,
            size(image.size),
            ago(image.created_at.as_ref()),
        ]
    });
    print_table(&["REF", "TYPE", "DIGEST", "SIZE", "CREATED"], rows);
    Ok(())
}

async fn images_import(client: &Client, args: ImportArgs) -> Result<()> {
    let (source, what): (Box<dyn Read + Send>, String) = if args.file == "-" {
        if std::io::stdin().is_terminal() {
            bail!("refusing to read an archive from a terminal: give a file or redirect stdin");
        }
        (Box::new(std::io::stdin()), "stdin".to_string())
    } else {
        let file =
            std::fs::File::open(&args.file).with_context(|| format!("open {}", args.file))?;
        (Box::new(file), args.file.clone())
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    // A plain thread, not spawn_blocking: a read stuck on stdin must not keep
    // the runtime from shutting down when the call fails.
    std::thread::spawn(move || read_chunks(source, tx));
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let first = ImportRequest {
        options: Some(ImportOptions {
            name: args.name.unwrap_or_default(),
            platform: args.platform.unwrap_or_default(),
            no_unpack: args.no_unpack,
        }),
        data: Vec::new(),
    };
    let chunks =
        futures_util::stream::unfold((rx, Some(err_tx)), |(mut rx, mut err_tx)| async move {
            match rx.recv().await {
                Some(Ok(data)) => Some((
                    ImportRequest {
                        options: None,
                        data,
                    },
                    (rx, err_tx),
                )),
                Some(Err(e)) => {
                    if let Some(tx) = err_tx.take() {
                        let _ = tx.send(e);
                    }
                    // Never end the stream: a clean end would hand the supervisor
                    // a truncated archive. The call is dropped instead.
                    std::future::pending().await
                }
                None => None,
            }
        });
    let requests = futures_util::stream::iter([first]).chain(chunks);
    let mut images = client.images();
    let imported = tokio::select! {
        result = images.import(requests) => result.map_err(rpc)?.into_inner().images,
        Ok(e) = err_rx => return Err(anyhow::Error::new(e).context(format!("read {what}"))),
    };
    for image in imported {
        let digest = image
            .target
            .as_ref()
            .map(|t| t.digest.as_str())
            .unwrap_or("");
        println!("imported {} ({digest}, {})", image.name, size(image.size));
    }
    Ok(())
}

/// Reads `source` in CHUNK-sized pieces into `tx`, until its end or an error.
fn read_chunks(
    mut source: Box<dyn Read + Send>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        // An error means the call ended: nobody wants the rest.
        if tx.blocking_send(Ok(buf)).is_err() || filled < CHUNK {
            return;
        }
    }
}

async fn images_export(client: &Client, args: ExportArgs) -> Result<()> {
    let format = match args.format {
        Format::Oci => ArchiveFormat::Oci,
        Format::Docker => ArchiveFormat::Docker,
    };
    // Opened first, so that a bad path fails before the supervisor works.
    let mut output = Output::create(&args.file)?;
    let request = ExportRequest {
        names: args.names,
        format: format as i32,
        platform: args.platform.unwrap_or_default(),
    };
    let mut stream = client
        .images()
        .export(request)
        .await
        .map_err(rpc)?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(rpc)? {
        if !output.write(&message.data)? {
            return Ok(());
        }
    }
    output.commit()
}

/// Where an export goes: stdout, or a file that appears only when whole.
enum Output {
    Stdout,
    File {
        file: std::fs::File,
        temp: PathBuf,
        path: PathBuf,
        done: bool,
    },
}

impl Output {
    fn create(name: &str) -> Result<Output> {
        if name == "-" {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: give a file or redirect stdout");
            }
            return Ok(Output::Stdout);
        }
        let path = PathBuf::from(name);
        let file_name = path
            .file_name()
            .ok_or_else(|| anyhow!("{name} is not a file name"))?
            .to_string_lossy()
            .into_owned();
        let temp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        let file =
            std::fs::File::create(&temp).with_context(|| format!("create {}", temp.display()))?;
        Ok(Output::File {
            file,
            temp,
            path,
            done: false,
        })
    }

    /// Writes `data`; false when stdout's reader went away.
    fn write(&mut self, data: &[u8]) -> Result<bool> {
        match self {
            Output::Stdout => write_stdout(data),
            Output::File { file, temp, .. } => {
                file.write_all(data)
                    .with_context(|| format!("write {}", temp.display()))?;
                Ok(true)
            }
        }
    }

    fn commit(mut self) -> Result<()> {
        if let Output::File {
            file,
            temp,
            path,
            done,
        } = &mut self
        {
            file.sync_all()
                .with_context(|| format!("write {}", temp.display()))?;
            std::fs::rename(&*temp, &*path)
                .with_context(|| format!("rename {} to {}", temp.display(), path.display()))?;
            *done = true;
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Output::File {
            temp, done: false, ..
        } = self
        {
            let _ = std::fs::remove_file(&*temp);
        }
    }
}

/// Writes raw bytes to stdout; false when its reader went away (`| head`).
fn write_stdout(data: &[u8]) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("write stdout")),
    }
}

/// The progress of a pull or push: one bar per blob on stderr, like `ctr
/// pull`. Where bars cannot show (stderr is not a terminal), one line per
/// blob as it completes; with `--quiet`, nothing.
struct Transfer {
    multi: MultiProgress,
    style: ProgressStyle,
    blobs: Vec<Blob>,
    index: HashMap<String, usize>,
    lines: bool,
}

struct Blob {
    kind: String,
    digest: String,
    bar: ProgressBar,
    state: ProgressState,
    total: i64,
    reported: Option<ProgressState>,
}

impl Blob {
    fn line(&self) -> String {
        format!(
            "{:<8} {}  {:<11} {}",
            self.kind,
            short_digest(&self.digest),
            state_name(self.state),
            size(self.total)
        )
    }
}

impl Transfer {
    fn new(quiet: bool) -> Transfer {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let lines = !quiet && multi.is_hidden();
        // The template is a constant that parses; the fallback is never used.
        let style = ProgressStyle::with_template(
            "{prefix} {msg:<11} [{wide_bar}] {bytes:>10}/{total_bytes:<10}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Transfer {
            multi,
            style,
            blobs: Vec::new(),
            index: HashMap::new(),
            lines,
        }
    }

    fn update(&mut self, progress: &[Progress]) {
        for p in progress {
            let i = match self.index.get(&p.digest) {
                Some(&i) => i,
                None => {
                    let bar = self.multi.add(ProgressBar::no_length());
                    bar.set_style(self.style.clone());
                    let kind = if p.kind.is_empty() { "blob" } else { &p.kind };
                    bar.set_prefix(format!("{kind:<8} {}", short_digest(&p.digest)));
                    self.blobs.push(Blob {
                        kind: kind.to_string(),
                        digest: p.digest.clone(),
                        bar,
                        state: ProgressState::Waiting,
                        total: 0,
                        reported: None,
                    });
                    self.index.insert(p.digest.clone(), self.blobs.len() - 1);
                    self.blobs.len() - 1
                }
            };
            let blob = &mut self.blobs[i];
            blob.state = p.state();
            if p.total > 0 {
                blob.total = p.total;
                blob.bar.set_length(p.total as u64);
            }
            let done = matches!(blob.state, ProgressState::Done | ProgressState::Exists);
            let offset = if done { blob.total } else { p.offset.max(0) };
            blob.bar.set_position(offset as u64);
            blob.bar.set_message(state_name(blob.state));
            if done && self.lines && blob.reported != Some(blob.state) {
                eprintln!("{}", blob.line());
                blob.reported = Some(blob.state);
            }
        }
    }

    /// Leaves the bars as they are, and reports what no line reported yet.
    fn finish(&mut self) {
        for blob in &mut self.blobs {
            blob.bar.abandon();
            if self.lines && blob.reported != Some(blob.state) {
                eprintln!("{}", blob.line());
                blob.reported = Some(blob.state);
            }
        }
    }
}

fn state_name(state: ProgressState) -> String {
    state.as_str_name().to_ascii_lowercase()
}

/// "sha256:" and the first 12 hex digits, as docker shows ids.
fn short_digest(digest: &str) -> &str {
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 12 => &digest[..algorithm.len() + 1 + 12],
        _ => digest,
    }
}

// ---- content ----

async fn content(client: &Client, cmd: ContentCommand) -> Result<()> {
    use berth_proto::content::v1::{DeleteContentRequest, ListContentRequest, ReadContentRequest};
    match cmd {
        ContentCommand::Ls { quiet } => {
            let mut infos = client
                .content()
                .list(ListContentRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .info;
            infos.sort_by(|a, b| a.digest.cmp(&b.digest));
            if quiet {
                for info in infos {
                    println!("{}", info.digest);
                }
                return Ok(());
            }
            let rows = infos.into_iter().map(|info| {
                vec![
                    info.digest,
                    size(info.size),
                    ago(info.created_at.as_ref()),
                    labels(&info.labels),
                ]
            });
            print_table(&["DIGEST", "SIZE", "AGE", "LABELS"], rows);
            Ok(())
        }
        ContentCommand::Get { digest } => {
            let request = ReadContentRequest {
                digest,
                offset: 0,
                size: 0,
            };
            let mut stream = client
                .content()
                .read(request)
                .await
                .map_err(rpc)?
                .into_inner();
            while let Some(message) = stream.message().await.map_err(rpc)? {
                if !write_stdout(&message.data)? {
                    break;
                }
            }
            Ok(())
        }
        ContentCommand::Rm { digests } => {
            let content = client.content();
            for_each(digests, |digest| {
                let mut content = content.clone();
                async move {
                    content
                        .delete(DeleteContentRequest { digest })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
    }
}

// ---- snapshots ----

async fn snapshots(client: &Client, cmd: SnapshotsCommand) -> Result<()> {
    use berth_proto::snapshots::v1::{
        CommitSnapshotRequest, DiffRequest, Kind, ListSnapshotsRequest, MountsRequest,
        PrepareSnapshotRequest, RemoveSnapshotRequest, UsageRequest, ViewSnapshotRequest,
    };
    let mut snapshots = client.snapshots();
    match cmd {
        SnapshotsCommand::Ls => {
            let mut infos = snapshots
                .list(ListSnapshotsRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .info;
            infos.sort_by(|a, b| a.name.cmp(&b.name));
            let rows = infos.into_iter().map(|info| {
                let kind = match info.kind() {
                    Kind::View => "View",
                    Kind::Active => "Active",
                    Kind::Committed => "Committed",
                    Kind::Unknown => "Unknown",
                };
                vec![info.name, info.parent, kind.to_string()]
            });
            print_table(&["KEY", "PARENT", "KIND"], rows);
            Ok(())
        }
        SnapshotsCommand::Usage { key } => {
            let keys = match key {
                Some(key) => vec![key],
                None => {
                    let mut infos = snapshots
                        .list(ListSnapshotsRequest {})
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .info;
                    infos.sort_by(|a, b| a.name.cmp(&b.name));
                    infos.into_iter().map(|info| info.name).collect()
                }
            };
            let mut rows = Vec::new();
            for key in keys {
                let usage = snapshots
                    .usage(UsageRequest { key: key.clone() })
                    .await
                    .map_err(|s| rpc(s).context(key.clone()))?
                    .into_inner();
                rows.push(vec![key, size(usage.size), usage.inodes.to_string()]);
            }
            print_table(&["KEY", "SIZE", "INODES"], rows);
            Ok(())
        }
        SnapshotsCommand::Prepare(args) => {
            let request = PrepareSnapshotRequest {
                key: args.key,
                parent: args.parent.unwrap_or_default(),
                labels: HashMap::new(),
            };
            let mounts = snapshots.prepare(request).await.map_err(rpc)?;
            show_mounts(args.target, &mounts.into_inner().mounts);
            Ok(())
        }
        SnapshotsCommand::View(args) => {
            let request = ViewSnapshotRequest {
                key: args.key,
                parent: args.parent.unwrap_or_default(),
                labels: HashMap::new(),
            };
            let mounts = snapshots.view(request).await.map_err(rpc)?;
            show_mounts(args.target, &mounts.into_inner().mounts);
            Ok(())
        }
        SnapshotsCommand::Commit { name, key } => {
            let request = CommitSnapshotRequest {
                name,
                key,
                labels: HashMap::new(),
            };
            snapshots.commit(request).await.map_err(rpc)?;
            Ok(())
        }
        SnapshotsCommand::Rm { keys } => {
            for_each(keys, |key| {
                let mut snapshots = snapshots.clone();
                async move {
                    snapshots
                        .remove(RemoveSnapshotRequest { key })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        SnapshotsCommand::Mounts { target, key } => {
            let mounts = snapshots
                .mounts(MountsRequest { key })
                .await
                .map_err(rpc)?
                .into_inner()
                .mounts;
            emit(&mount_commands(&target, &mounts));
            Ok(())
        }
        SnapshotsCommand::Diff { key, media_type } => {
            let request = DiffRequest {
                key,
                media_type: media_type.unwrap_or_default(),
                labels: HashMap::new(),
            };
            let response = snapshots.diff(request).await.map_err(rpc)?.into_inner();
            let diff = response
                .diff
                .ok_or_else(|| anyhow!("the supervisor returned no descriptor"))?;
            let mut descriptor = serde_json::json!({
                "mediaType": diff.media_type,
                "digest": diff.digest,
                "size": diff.size,
            });
            if !diff.annotations.is_empty() {
                descriptor["annotations"] = serde_json::json!(diff.annotations);
            }
            let text = serde_json::to_string_pretty(&descriptor).context("encode descriptor")?;
            emit(&format!("{text}\n"));
            eprintln!("diff id: {}", response.diff_id);
            Ok(())
        }
    }
}

/// The mount(8) commands that assemble `mounts` at `target`, as `ctr
/// snapshots mounts` prints them.
/// With `--target`, prints the commands that mount `mounts` there.
fn show_mounts(target: Option<String>, mounts: &[Mount]) {
    if let Some(target) = target {
        emit(&mount_commands(&target, mounts));
    }
}

fn mount_commands(target: &str, mounts: &[Mount]) -> String {
    let mut out = String::new();
    for m in mounts {
        let dir = if m.target.is_empty() {
            target.to_string()
        } else {
            Path::new(target)
                .join(m.target.trim_start_matches('/'))
                .display()
                .to_string()
        };
        let mut options = m.options.clone();
        let command = if m.r#type == "bind" {
            // mount(8) has no "bind" type: the option makes it a bind mount.
            if !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.insert(0, "bind".to_string());
            }
            "mount".to_string()
        } else {
            format!("mount -t {}", shell_quote(&m.r#type))
        };
        let _ = write!(out, "{command} ");
        if !options.is_empty() {
            let _ = write!(out, "-o {} ", shell_quote(&options.join(",")));
        }
        let _ = writeln!(out, "{} {}", shell_quote(&m.source), shell_quote(&dir));
    }
    out
}

fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:=,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---- namespaces ----

async fn namespaces(client: &Client, cmd: NamespacesCommand) -> Result<()> {
    use berth_proto::namespaces::v1::{
        CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
    };
    let mut namespaces = client.namespaces();
    match cmd {
        NamespacesCommand::Ls { quiet } => {
            let mut list = namespaces
                .list(ListNamespacesRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .namespaces;
            list.sort_by(|a, b| a.name.cmp(&b.name));
            if quiet {
                for ns in list {
                    println!("{}", ns.name);
                }
                return Ok(());
            }
            let rows = list.into_iter().map(|ns| vec![ns.name, labels(&ns.labels)]);
            print_table(&["NAME", "LABELS"], rows);
            Ok(())
        }
        NamespacesCommand::Create { name, labels } => {
            let namespace = Namespace {
                name,
                labels: labels.into_iter().collect(),
            };
            namespaces
                .create(CreateNamespaceRequest {
                    namespace: Some(namespace),
                })
                .await
                .map_err(rpc)?;
            Ok(())
        }
        NamespacesCommand::Rm { names } => {
            for_each(names, |name| {
                let mut namespaces = namespaces.clone();
                async move {
                    namespaces
                        .delete(DeleteNamespaceRequest { name })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
    }
}

// ---- leases ----

async fn leases(client: &Client, cmd: LeasesCommand) -> Result<()> {
    use berth_proto::leases::v1::{CreateLeaseRequest, DeleteLeaseRequest, ListLeasesRequest};
    let mut leases = client.leases();
    match cmd {
        LeasesCommand::Ls { quiet } => {
            let mut list = leases
                .list(ListLeasesRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .leases;
            list.sort_by(|a, b| a.id.cmp(&b.id));
            if quiet {
                for lease in list {
                    println!("{}", lease.id);
                }
                return Ok(());
            }
            let rows = list.into_iter().map(|lease| {
                vec![
                    lease.id,
                    ago(lease.created_at.as_ref()),
                    expires(lease.expires_at.as_ref()),
                    labels(&lease.labels),
                ]
            });
            print_table(&["ID", "CREATED", "EXPIRES", "LABELS"], rows);
            Ok(())
        }
        LeasesCommand::Create { id, expires, label } => {
            let request = CreateLeaseRequest {
                id: id.unwrap_or_default(),
                labels: label.into_iter().collect(),
                expire_seconds: expires.map(i64::from).unwrap_or(0),
            };
            let lease = leases.create(request).await.map_err(rpc)?.into_inner();
            println!("{}", lease.id);
            Ok(())
        }
        LeasesCommand::Rm { ids } => {
            for_each(ids, |id| {
                let mut leases = leases.clone();
                async move { leases.delete(DeleteLeaseRequest { id }).await.map(|_| ()) }
            })
            .await
        }
    }
}

// ---- containers ----

async fn containers(client: &Client, cmd: ContainersCommand) -> Result<()> {
    use berth_proto::containers::v1::{
        DeleteContainerRequest, GetContainerRequest, ListContainersRequest,
    };
    let mut containers = client.containers();
    match cmd {
        ContainersCommand::Create(a) => {
            let mut request = a.process.create_request(a.id, a.image, a.args, a.tty);
            request.snapshot_key = a.snapshot_key.unwrap_or_default();
            let c = containers.create(request).await.map_err(rpc)?.into_inner();
            println!("{}", c.id);
            Ok(())
        }
        ContainersCommand::Ls { quiet } => {
            let mut list = containers
                .list(ListContainersRequest::default())
                .await
                .map_err(rpc)?
                .into_inner()
                .containers;
            list.sort_by(|a, b| a.id.cmp(&b.id));
            if quiet {
                let ids: String = list.iter().map(|c| format!("{}\n", c.id)).collect();
                emit(&ids);
                return Ok(());
            }
            let rows = list
                .into_iter()
                .map(|c| vec![c.id, c.image, c.runtime, ago(c.created_at.as_ref())]);
            print_table(&["ID", "IMAGE", "RUNTIME", "CREATED"], rows);
            Ok(())
        }
        ContainersCommand::Info { id } => {
            let c = containers
                .get(GetContainerRequest { id })
                .await
                .map_err(rpc)?
                .into_inner();
            let spec: serde_json::Value = serde_json::from_slice(&c.spec)
                .unwrap_or_else(|_| String::from_utf8_lossy(&c.spec).into_owned().into());
            let time = |t: Option<&Timestamp>| {
                t.map(|t| format!("{}.{:09}", t.seconds, t.nanos))
                    .unwrap_or_default()
            };
            let info = serde_json::json!({
                "id": c.id,
                "image": c.image,
                "snapshot_key": c.snapshot_key,
                "runtime": c.runtime,
                "labels": c.labels,
                "created_at": time(c.created_at.as_ref()),
                "updated_at": time(c.updated_at.as_ref()),
                "spec": spec,
            });
            let text = serde_json::to_string_pretty(&info).context("format the record")?;
            emit(&format!("{text}\n"));
            Ok(())
        }
        ContainersCommand::Rm { ids } => {
            for_each(ids, |id| {
                let mut containers = containers.clone();
                async move {
                    containers
                        .delete(DeleteContainerRequest { id })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
    }
}

// ---- events ----

async fn events(client: &Client, after: Option<u64>, topics: Vec<String>) -> Result<()> {
    let request = berth_proto::events::v1::SubscribeRequest {
        topics,
        after_sequence: after,
    };
    let mut stream = client
        .events()
        .subscribe(request)
        .await
        .map_err(rpc)?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(rpc)? {
        let mut attributes: Vec<String> = e
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        attributes.sort();
        let time = e
            .timestamp
            .map(|t| format!("{}.{:09}", t.seconds, t.nanos))
            .unwrap_or_default();
        emit(&format!(
            "{} {time} {} {}\n",
            e.sequence,
            e.topic,
            attributes.join(" ")
        ));
    }
    Ok(())
}

// ---- version ----

async fn version(client: &Client) -> Result<()> {
    let server = client
        .version()
        .version(())
        .await
        .map_err(rpc)?
        .into_inner();
    println!(
        "Server:\n  Version:  {}\n  Revision: {}",
        server.version, server.revision
    );
    Ok(())
}

// ---- output ----

/// Prints `rows` under `header` in columns, like Go's tabwriter in ctr.
fn print_table<I>(header: &[&str], rows: I)
where
    I: IntoIterator<Item = Vec<String>>,
{
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    table.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let _ = write!(line, "{cell:<width$}   ", width = widths[i]);
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    emit(&out);
}

/// Prints text to stdout, quietly stopping if its reader went away.
fn emit(text: &str) {
    if let Err(e) = write_stdout(text.as_bytes()) {
        eprintln!("berth-ctr: {e:#}");
    }
}

fn size(bytes: i64) -> String {
    HumanBytes(bytes.max(0) as u64).to_string()
}

fn labels(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

fn to_system_time(ts: Option<&Timestamp>) -> Option<SystemTime> {
    SystemTime::try_from(*ts?).ok()
}

/// "3 hours ago", from a timestamp.
fn ago(ts: Option<&Timestamp>) -> String {
    let Some(time) = to_system_time(ts) else {
        return "-".to_string();
    };
    match SystemTime::now().duration_since(time) {
        Ok(d) if d >= Duration::from_secs(1) => format!("{} ago", HumanDuration(d)),
        _ => "just now".to_string(),
    }
}

/// "in 5 minutes", "expired" or "never".
fn expires(ts: Option<&Timestamp>) -> String {
    let Some(time) = to_system_time(ts) else {
        return "never".to_string();
    };
    match time.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {}", HumanDuration(d)),
        Err(_) => "expired".to_string(),
    }
}

/// `--debug`: tracing events on stderr, berth's from debug level, the
/// libraries' (tonic, h2, hyper) from info.
mod debug_log {
    use std::fmt::Write as _;

    use tracing::field::{Field, Visit};
    use tracing::level_filters::LevelFilter;
    use tracing::{Event, Level, Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::prelude::*;

    struct Stderr;

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, " {value:?}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                let _ = write!(self.0, " {value}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
    }

    fn wanted(metadata: &Metadata<'_>) -> bool {
        let max = if metadata.target().starts_with("berth") {
            Level::DEBUG
        } else {
            Level::INFO
        };
        *metadata.level() <= max
    }

    impl<S: Subscriber> Layer<S> for Stderr {
        fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
            wanted(metadata)
        }

        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::DEBUG)
        }

        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let metadata = event.metadata();
            if !wanted(metadata) {
                return;
            }
            let mut line = Line(format!("{} {}:", metadata.level(), metadata.target()));
            event.record(&mut line);
            eprintln!("{}", line.0);
        }
    }

    pub fn init() {
        tracing_subscriber::registry().with(Stderr).init();
    }
}

#[cfg(test)]
mod tests {
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
            Command::Images(ImagesCommand::Ls { quiet: false })
        ));
    }

    #[test]
    fn parses_pull() {
        let cli = Cli::try_parse_from([
            "berth-ctr",
            "i",
            "pull",
            "--platform",
            "linux/arm64/v8",
            "--user",
            "u:p",
            "--no-unpack",
            "-q",
            "127.0.0.1:5000/app:1",
        ])
        .unwrap();
        let Command::Images(ImagesCommand::Pull(args)) = cli.command else {
            panic!("not a pull");
        };
        assert_eq!(args.platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(args.auth.user.as_deref(), Some("u:p"));
        assert!(args.no_unpack && args.quiet);
        assert_eq!(args.reference, "127.0.0.1:5000/app:1");
        assert!(
            Cli::try_parse_from(["berth-ctr", "images", "pull", "--platform", "linux", "x"])
                .is_err()
        );
    }

    #[test]
    fn parses_containers_create() {
        let cli = Cli::try_parse_from([
            "berth-ctr",
            "c",
            "create",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--cwd",
            "/w",
            "-u",
            "5:6",
            "--tty",
            "img",
            "web",
            "sh",
            "-c",
            "ls -l",
            "--not-ours",
        ])
        .unwrap();
        let Command::Containers(ContainersCommand::Create(a)) = cli.command else {
            panic!("not a create");
        };
        assert_eq!((a.image.as_str(), a.id.as_str()), ("img", "web"));
        assert_eq!(a.process.env, ["A=1", "B=2"]);
        assert_eq!(a.process.cwd.as_deref(), Some("/w"));
        assert_eq!(a.process.user.as_deref(), Some("5:6"));
        assert!(a.tty);
        assert_eq!(a.args, ["sh", "-c", "ls -l", "--not-ours"]);
        assert!(Cli::try_parse_from(["berth-ctr", "containers", "create", "img"]).is_err());
        assert!(Cli::try_parse_from(["berth-ctr", "containers", "rm"]).is_err());
    }

    #[test]
    fn parses_export_and_labels() {
        let cli = Cli::try_parse_from([
            "berth-ctr",
            "images",
            "export",
            "--format",
            "docker",
            "-",
            "a",
            "b",
        ])
        .unwrap();
        let Command::Images(ImagesCommand::Export(args)) = cli.command else {
            panic!("not an export");
        };
        assert!(matches!(args.format, Format::Docker));
        assert_eq!(args.names, ["a", "b"]);
        assert!(Cli::try_parse_from(["berth-ctr", "images", "export", "out.tar"]).is_err());
        assert!(Cli::try_parse_from(["berth-ctr", "ns", "create", "x", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["berth-ctr", "leases", "create", "--label", "a=b=c"]).is_ok());
    }

    #[test]
    fn user_with_password_needs_no_stdin() {
        let args = AuthArgs {
            user: Some("alice:pw:x".to_string()),
            registry_config: None,
        };
        let auth = registry_auth(&args, "busybox").unwrap().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("alice", "pw:x")
        );
        let args = AuthArgs {
            user: None,
            registry_config: Some(PathBuf::from("/nonexistent/config.json")),
        };
        let err = registry_auth(&args, "busybox").unwrap_err();
        assert_eq!(
            err.to_string(),
            "registry config /nonexistent/config.json does not exist"
        );
    }

    #[test]
    fn mount_commands_like_ctr() {
        let mounts = vec![
            Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![
                    "lowerdir=/l/1:/l/2".into(),
                    "upperdir=/u".into(),
                    "workdir=/w".into(),
                ],
            },
            Mount {
                r#type: "bind".into(),
                source: "/var/lib/x y".into(),
                target: String::new(),
                options: vec!["ro".into(), "rbind".into()],
            },
        ];
        assert_eq!(
            mount_commands("/tmp/t", &mounts),
            "mount -t overlay -o lowerdir=/l/1:/l/2,upperdir=/u,workdir=/w overlay /tmp/t\n\
             mount -o ro,rbind '/var/lib/x y' /tmp/t\n"
        );
    }

    #[test]
    fn short_digests() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("nodigest"), "nodigest");
    }

    #[test]
    fn status_message_not_debug_dump() {
        assert_eq!(
            rpc(tonic::Status::not_found("image \"x\": not found")).to_string(),
            "image \"x\": not found"
        );
        assert_eq!(
            rpc(tonic::Status::not_found("")).to_string(),
            "Some requested entity was not found"
        );
    }

    /// An Images service that answers the way the supervisor would, and
    /// records what an import sent.
    mod fake {
        use std::sync::{Arc, Mutex};

        use berth_proto::images::v1::images_server::Images;
        use berth_proto::images::v1::*;
        use berth_proto::types::v1::Descriptor;
        use tonic::{Request, Response, Status, Streaming};

        #[derive(Clone, Default)]
        pub struct FakeImages {
            pub chunks: Arc<Mutex<Vec<usize>>>,
            pub options: Arc<Mutex<Option<ImportOptions>>>,
        }

        type Answers<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

        pub fn image(name: &str, size: i64) -> Image {
            Image {
                name: name.to_string(),
                target: Some(Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: format!("sha256:{}", "b".repeat(64)),
                    size: 500,
                    annotations: Default::default(),
                }),
                size,
                ..Default::default()
            }
        }

        fn not_found(name: &str) -> Status {
            Status::not_found(format!("image {name:?}: not found"))
        }

        #[tonic::async_trait]
        impl Images for FakeImages {
            type PullStream = Answers<PullResponse>;

            async fn pull(
                &self,
                request: Request<PullRequest>,
            ) -> Result<Response<Self::PullStream>, Status> {
                let reference = request.into_inner().reference;
                let layer = |state: ProgressState, offset| Progress {
                    digest: format!("sha256:{}", "a".repeat(64)),
                    kind: "layer".into(),
                    state: state as i32,
                    offset,
                    total: 100,
                };
                Ok(Response::new(tokio_stream::iter(vec![
                    Ok(PullResponse {
                        progress: vec![layer(ProgressState::Downloading, 50)],
                        image: None,
                    }),
                    Ok(PullResponse {
                        progress: vec![layer(ProgressState::Done, 100)],
                        image: Some(image(&reference, 100)),
                    }),
                ])))
            }

            type PushStream = Answers<PushResponse>;

            async fn push(
                &self,
                _: Request<PushRequest>,
            ) -> Result<Response<Self::PushStream>, Status> {
                Err(Status::unimplemented("push"))
            }

            async fn get(&self, _: Request<GetImageRequest>) -> Result<Response<Image>, Status> {
                Err(Status::unimplemented("get"))
            }

            async fn list(
                &self,
                _: Request<ListImagesRequest>,
            ) -> Result<Response<ListImagesResponse>, Status> {
                Ok(Response::new(ListImagesResponse {
                    images: vec![image("b:1", 2048), image("a:1", 10)],
                }))
            }

            async fn tag(&self, _: Request<TagImageRequest>) -> Result<Response<Image>, Status> {
                Err(Status::unimplemented("tag"))
            }

            async fn delete(
                &self,
                request: Request<DeleteImageRequest>,
            ) -> Result<Response<()>, Status> {
                match request.into_inner().name.as_str() {
                    "missing" => Err(not_found("missing")),
                    _ => Ok(Response::new(())),
                }
            }

            async fn import(
                &self,
                request: Request<Streaming<ImportRequest>>,
            ) -> Result<Response<ImportResponse>, Status> {
                let mut stream = request.into_inner();
                let first = stream
                    .message()
                    .await?
                    .ok_or_else(|| Status::invalid_argument("no options"))?;
                let options = first
                    .options
                    .ok_or_else(|| Status::invalid_argument("no options"))?;
                if !first.data.is_empty() {
                    return Err(Status::invalid_argument("data in the first message"));
                }
                let mut total = 0;
                while let Some(message) = stream.message().await? {
                    if message.options.is_some() {
                        return Err(Status::invalid_argument("options after the first message"));
                    }
                    total += message.data.len() as i64;
                    self.chunks.lock().unwrap().push(message.data.len());
                }
                let name = options.name.clone();
                *self.options.lock().unwrap() = Some(options);
                Ok(Response::new(ImportResponse {
                    images: vec![image(&name, total)],
                }))
            }

            type ExportStream = Answers<ExportResponse>;

            async fn export(
                &self,
                request: Request<ExportRequest>,
            ) -> Result<Response<Self::ExportStream>, Status> {
                let request = request.into_inner();
                if let Some(name) = request.names.iter().find(|n| *n == "missing") {
                    return Err(not_found(name));
                }
                Ok(Response::new(tokio_stream::iter(vec![
                    Ok(ExportResponse {
                        data: b"abc".to_vec(),
                    }),
                    Ok(ExportResponse {
                        data: b"def".to_vec(),
                    }),
                ])))
            }
        }
    }

    /// Serves `fake` on a socket in a temporary directory.
    async fn serve(
        fake: fake::FakeImages,
    ) -> (tempfile::TempDir, Client, tokio::task::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("supervisor.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(berth_proto::images::v1::images_server::ImagesServer::new(
                    fake,
                ))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        let client = Client::connect(&socket, "test").await.unwrap();
        (dir, client, server)
    }

    #[tokio::test]
    async fn pull_and_ls() {
        let (_dir, client, server) = serve(fake::FakeImages::default()).await;
        let args = PullArgs {
            auth: AuthArgs {
                user: Some("u:p".into()),
                registry_config: None,
            },
            platform: None,
            no_unpack: false,
            quiet: false,
            reference: "127.0.0.1:5000/app:1".into(),
        };
        images_pull(&client, args).await.unwrap();
        images_ls(&client, false).await.unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn import_sends_options_then_1mib_chunks() {
        let fake = fake::FakeImages::default();
        let (dir, client, server) = serve(fake.clone()).await;
        let archive = dir.path().join("image.tar");
        std::fs::write(&archive, vec![7u8; 2 * CHUNK + CHUNK / 2]).unwrap();
        let args = ImportArgs {
            name: Some("imported:1".into()),
            platform: Some("linux/amd64".into()),
            no_unpack: true,
            file: archive.display().to_string(),
        };
        images_import(&client, args).await.unwrap();
        assert_eq!(*fake.chunks.lock().unwrap(), [CHUNK, CHUNK, CHUNK / 2]);
        let options = fake.options.lock().unwrap().clone().unwrap();
        assert_eq!(
            (
                options.name.as_str(),
                options.platform.as_str(),
                options.no_unpack
            ),
            ("imported:1", "linux/amd64", true)
        );

        let args = ImportArgs {
            name: None,
            platform: None,
            no_unpack: false,
            file: dir.path().join("none.tar").display().to_string(),
        };
        let err = images_import(&client, args).await.unwrap_err();
        assert!(format!("{err:#}").starts_with("open "), "{err:#}");
        server.abort();
    }

    #[tokio::test]
    async fn export_file_appears_only_when_whole() {
        let (dir, client, server) = serve(fake::FakeImages::default()).await;
        let out = dir.path().join("out").join("image.tar");
        std::fs::create_dir(out.parent().unwrap()).unwrap();
        let args = |names: &[&str]| ExportArgs {
            format: Format::Oci,
            platform: None,
            file: out.display().to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let err = images_export(&client, args(&["a", "missing"]))
            .await
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "image \"missing\": not found");
        assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 0);

        images_export(&client, args(&["a"])).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"abcdef");
        assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);
        server.abort();
    }

    #[tokio::test]
    async fn rm_tries_every_name() {
        let (_dir, client, server) = serve(fake::FakeImages::default()).await;
        let names = vec!["missing".to_string(), "a:1".to_string()];
        let err = images(&client, ImagesCommand::Rm { names })
            .await
            .unwrap_err();
        assert!(err.is::<Reported>());
        images(
            &client,
            ImagesCommand::Rm {
                names: vec!["a:1".into()],
            },
        )
        .await
        .unwrap();
        server.abort();
    }
}
