//! `berth-ctr events`: the namespace's events as they happen, one line each.

use anyhow::Result;
use berth_client::Client;
use clap::Args;

use crate::output::{emit, rpc};

#[derive(Args)]
pub struct EventsArgs {
    /// First replay the kept events after this sequence number (0: all)
    #[arg(long)]
    after: Option<u64>,
    /// Only these topics ("/images/create"), or topic prefixes ending in '/'
    topics: Vec<String>,
}

pub async fn handle(client: &Client, args: EventsArgs) -> Result<()> {
    let request = berth_proto::events::v1::SubscribeRequest {
        topics: args.topics,
        after_sequence: args.after,
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
