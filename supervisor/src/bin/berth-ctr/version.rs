//! `berth-ctr version`: the server's version (`main` prints the client's
//! before connecting).

use anyhow::Result;
use berth_client::Client;

use crate::output::rpc;

pub async fn handle(client: &Client) -> Result<()> {
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
