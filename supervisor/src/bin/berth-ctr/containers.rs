//! `berth-ctr containers`: create, list, show and remove container records
//! through the Containers service; [`ProcessArgs`] is shared with `run`.

use anyhow::{Context, Result};
use berth_client::Client;
use berth_proto::containers::v1::{CreateContainerRequest, Overrides};
use clap::{Args, Subcommand};
use prost_types::Timestamp;

use crate::output::{ago, emit, for_each, print_table, rpc};
use crate::parse_label;

#[derive(Subcommand)]
pub enum ContainersCommand {
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
pub struct ProcessArgs {
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
    pub fn create_request(
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
pub struct CreateArgs {
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

pub async fn handle(client: &Client, cmd: ContainersCommand) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

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
}
