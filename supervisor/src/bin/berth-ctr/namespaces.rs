//! `berth-ctr namespaces`: list, create and remove namespaces.

use anyhow::Result;
use berth_client::Client;
use clap::Subcommand;

use crate::output::{for_each, labels, print_table, rpc};
use crate::parse_label;

#[derive(Subcommand)]
pub enum NamespacesCommand {
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

pub async fn handle(client: &Client, cmd: NamespacesCommand) -> Result<()> {
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
