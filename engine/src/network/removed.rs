//! Bridges of removed networks, deleted after the removal answered and
//! remembered in the `removed_bridges` table until they are gone, so a
//! crash in between is finished at the next start.

use super::{netlink, Live, Networks, Result};
use crate::state::Table;

impl Networks {
    /// The bridges of networks removed before a crash (or a kill) let
    /// their deletion finish, unless a network has the name again.
    pub(super) async fn delete_removed_bridges(&self, netlink: &netlink::Netlink) -> Result<()> {
        for (bridge, _) in self.store.list::<String>(Table::RemovedBridges)? {
            let in_use = self.reg().nets.values().any(|n| n.bridge == bridge);
            if !in_use {
                if let Err(e) = netlink.delete(&bridge).await {
                    tracing::warn!(bridge, error = %e, "delete a removed network's bridge");
                    continue;
                }
                tracing::info!(bridge, "removed network's bridge deleted");
            }
            self.store.delete_deferred(Table::RemovedBridges, &bridge)?;
        }
        Ok(())
    }

    /// Deletes a removed network's bridge after the removal answered: the
    /// kernel takes tens of milliseconds to let go of a device (longer
    /// while it destroys the namespaces of containers that just stopped,
    /// as after `docker compose down`), and the network is gone for every
    /// client already. Its tombstone in the database (written with the
    /// record's removal) goes with it.
    pub(super) fn delete_bridge_later(&self, live: &Live, bridge: String) {
        let netlink = live.netlink.clone();
        let store = self.store.clone();
        let task = tokio::spawn(async move {
            let began = std::time::Instant::now();
            match netlink.delete(&bridge).await {
                Ok(()) => {
                    let micros = began.elapsed().as_micros() as u64;
                    tracing::debug!(bridge, micros, "removed network's bridge deleted");
                    if let Err(e) = store.delete_deferred(Table::RemovedBridges, &bridge) {
                        tracing::warn!(bridge, error = %e, "forget a deleted bridge");
                    }
                }
                Err(e) => tracing::warn!(bridge, error = %e, "delete a removed network's bridge"),
            }
        });
        let mut removing = self.removing.lock().unwrap_or_else(|p| p.into_inner());
        removing.retain(|t| !t.is_finished());
        removing.push(task);
    }

    /// Waits for the bridges of removed networks to be gone: before a
    /// network is made (its bridge may have the same name or subnet as one
    /// going, and its subnet is chosen among the host's routes), and before
    /// berthd exits.
    pub async fn settle(&self) {
        let tasks = std::mem::take(&mut *self.removing.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}
