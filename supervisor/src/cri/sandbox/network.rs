//! A pod's network through CNI: the ADD at run, recorded as it goes, and
//! the DEL at stop with what the ADD recorded.

use std::path::{Path, PathBuf};

use berth_proto::cri::v1 as cri;

use super::cni::{self, Cni as CniPlugins, CniError, PodArgs, PortMapping};
use super::{Cri, SandboxError};
use crate::cri::store::SandboxRecord;

/// The CNI plugins and config directory.
pub fn cni_plugins(cri: &Cri) -> CniPlugins {
    CniPlugins {
        bin_dirs: cri.config.cni_bin_dirs.clone(),
        conf_dir: cri.config.cni_conf_dir.clone(),
    }
}

pub(super) fn pod_args(config: &cri::PodSandboxConfig) -> PodArgs {
    let m = config.metadata.clone().unwrap_or_default();
    PodArgs {
        namespace: m.namespace,
        name: m.name,
        uid: m.uid,
    }
}

/// The pod's port mappings as the portmap plugin takes them (those
/// without a host port publish nothing).
pub(super) fn port_mappings(config: &cri::PodSandboxConfig) -> Vec<PortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match cri::Protocol::try_from(p.protocol) {
                Ok(cri::Protocol::Udp) => "udp",
                Ok(cri::Protocol::Sctp) => "sctp",
                _ => "tcp",
            },
            host_ip: p.host_ip.clone(),
        })
        .collect()
}

/// CNI ADD for the pod; the network and its result are recorded at once,
/// so a crash after leaves what a DEL needs. Without a network config the
/// pod has only `lo`.
pub(super) async fn attach_network(
    cri: &Cri,
    id: &str,
    config: &cri::PodSandboxConfig,
    netns: &Path,
) -> Result<(), SandboxError> {
    let plugins = cni_plugins(cri);
    let network = match plugins.load() {
        Ok(n) => n,
        Err(CniError::NoConfig(dir)) => {
            tracing::warn!(sandbox = id, dir = %dir.display(), "no CNI config: the pod has only lo");
            return Ok(());
        }
        Err(source) => {
            return Err(SandboxError::NetworkSetup {
                id: id.to_string(),
                source,
            })
        }
    };
    let list = json_of_network(&network);
    // Recorded before the ADD: a crash during it leaves a DEL to do.
    cri.store.update_sandbox(id, |r| {
        r.network.cni_network = Some(network.name.clone());
        r.network.cni_config = Some(list.clone());
    })?;
    let result = plugins
        .add(
            &network,
            id,
            netns,
            &pod_args(config),
            &port_mappings(config),
        )
        .await
        .map_err(|source| SandboxError::NetworkSetup {
            id: id.to_string(),
            source,
        })?;
    let addresses = cni::addresses(&result);
    cri.store.update_sandbox(id, |r| {
        r.network.cni_result = Some(result.clone());
        r.network.ip = addresses.ip.clone();
        r.network.additional_ips = addresses.additional.clone();
    })?;
    tracing::debug!(sandbox = id, ip = %addresses.ip, network = %network.name, "pod network attached");
    Ok(())
}

pub(super) fn json_of_network(n: &cni::Network) -> serde_json::Value {
    serde_json::json!({"name": n.name, "cniVersion": n.version, "plugins": n.plugins})
}

/// CNI DEL for a pod whose record names a network, with the config and
/// result the ADD had.
pub(super) async fn detach_network(
    cri: &Cri,
    id: &str,
    record: &SandboxRecord,
) -> Result<(), SandboxError> {
    let (Some(list), Some(netns)) = (&record.network.cni_config, &record.network.netns) else {
        return Ok(());
    };
    let network = cni::Network {
        name: list["name"].as_str().unwrap_or_default().to_string(),
        version: list["cniVersion"].as_str().unwrap_or("0.4.0").to_string(),
        plugins: list["plugins"].as_array().cloned().unwrap_or_default(),
        path: PathBuf::from("(recorded)"),
    };
    let config = record.config(id)?;
    cni_plugins(cri)
        .del(
            &network,
            id,
            netns,
            &pod_args(&config),
            &port_mappings(&config),
            record.network.cni_result.as_ref(),
        )
        .await
        .map_err(|source| SandboxError::NetworkTeardown {
            id: id.to_string(),
            source,
        })
}
