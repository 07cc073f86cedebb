//! `berth-ctr leases`: list, create and remove leases.

use anyhow::Result;
use berth_client::Client;
use clap::Subcommand;

use crate::output::{ago, expires, for_each, labels, print_table, rpc};
use crate::parse_label;

#[derive(Subcommand)]
pub enum LeasesCommand {
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

pub async fn handle(client: &Client, cmd: LeasesCommand) -> Result<()> {
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
