//! `berth-ctr content`: list, read and remove blobs through the Content service.

use anyhow::Result;
use berth_client::Client;
use clap::Subcommand;

use crate::output::{ago, for_each, labels, print_table, rpc, size, write_stdout};

#[derive(Subcommand)]
pub enum ContentCommand {
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

pub async fn handle(client: &Client, cmd: ContentCommand) -> Result<()> {
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
