//! `berth-ctr images`: pull, push, list, remove, tag, import and export
//! images through the Images service, with registry credentials from
//! `--user` or the docker config (`berth_client::docker_config`).

mod archive;
#[cfg(test)]
mod fake;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use berth_client::{docker_credentials, registry_host, Client};
use berth_proto::images::v1::{
    DeleteImageRequest, Image, ListImagesRequest, PullRequest, PushRequest, RegistryAuth,
    TagImageRequest,
};
use clap::{Args, Subcommand};
use tracing::debug;

use self::archive::{ExportArgs, ImportArgs};
use crate::output::{ago, for_each, print_table, rpc, size, Transfer};
use crate::parse_platform;

#[derive(Subcommand)]
pub enum ImagesCommand {
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
pub struct AuthArgs {
    /// Registry credentials; without a password, it is read from stdin
    #[arg(short, long, value_name = "USER[:PASSWORD]")]
    user: Option<String>,
    /// Docker config file with registry credentials [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
}

#[derive(Args)]
pub struct PullArgs {
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
pub struct PushArgs {
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

pub async fn handle(client: &Client, cmd: ImagesCommand) -> Result<()> {
    match cmd {
        ImagesCommand::Pull(args) => pull(client, args).await,
        ImagesCommand::Push(args) => push(client, args).await,
        ImagesCommand::Ls { quiet } => ls(client, quiet).await,
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
        ImagesCommand::Import(args) => archive::import(client, args).await,
        ImagesCommand::Export(args) => archive::export(client, args).await,
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

async fn pull(client: &Client, args: PullArgs) -> Result<()> {
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

async fn push(client: &Client, args: PushArgs) -> Result<()> {
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

async fn ls(client: &Client, quiet: bool) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

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

    /// Serves `fake` on a socket in a temporary directory.
    pub async fn serve(
        fake: super::fake::FakeImages,
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
        let (_dir, client, server) = serve(super::fake::FakeImages::default()).await;
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
        pull(&client, args).await.unwrap();
        ls(&client, false).await.unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn rm_tries_every_name() {
        let (_dir, client, server) = serve(super::fake::FakeImages::default()).await;
        let names = vec!["missing".to_string(), "a:1".to_string()];
        let err = handle(&client, ImagesCommand::Rm { names })
            .await
            .unwrap_err();
        assert!(err.is::<crate::output::Reported>());
        handle(
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
