//! The start of a pod in its own user namespace. Its network namespace
//! must be owned by that user namespace (or sysfs, net sysctls and
//! CAP_NET_ADMIN do not work in the pod), so the pause makes both, as
//! containerd 2.x has runc make them: the pause task is created (its
//! init waiting), its network namespace pinned on the pod's netns path,
//! CNI ADD run in it, then the pause started. One after the other, where
//! a pod of the node's user namespace runs CNI and the pause at once.

use berth_proto::cri::v1 as cri;

use super::{add_network, blocking, cni, netns, Started};
use super::{SandboxError, SandboxRecord};
use crate::cri::{Cri, NAMESPACE};
use crate::tasks::CreateOptions;

pub(super) async fn start(
    cri: &Cri,
    id: &str,
    config: &cri::PodSandboxConfig,
    record: &SandboxRecord,
    network: Option<&cni::Network>,
) -> Started {
    let opts = CreateOptions {
        no_log: true,
        volatile_rootfs: true,
        ..Default::default()
    };
    let pid = cri
        .tasks
        .create(NAMESPACE, id, opts)
        .await
        .map_err(|e| (SandboxError::from(e), None))?;
    let mut result = None;
    if let Some(path) = record.network.netns.clone() {
        blocking(move || Ok(netns::pin(pid, &path)?))
            .await
            .map_err(|e| (e, None))?;
        if let (Some(path), Some(network)) = (&record.network.netns, network) {
            result = Some(
                add_network(cri, id, config, path, network)
                    .await
                    .map_err(|e| (e, None))?,
            );
        }
    }
    match cri.tasks.start(NAMESPACE, id, None).await {
        Ok(pid) => Ok((pid, result)),
        Err(e) => Err((e.into(), result)),
    }
}
