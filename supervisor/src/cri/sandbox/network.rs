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

/// The pod network's config list, read when the pod is run (so it goes
/// into the sandbox's first record, and a DEL after a crash has it);
/// `None` without one: the pod has only `lo`.
pub(super) fn load_network(cri: &Cri, id: &str) -> Result<Option<cni::Network>, SandboxError> {
    match cni_plugins(cri).load() {
        Ok(n) => Ok(Some(n)),
        Err(CniError::NoConfig(dir)) => {
            tracing::warn!(sandbox = id, dir = %dir.display(), "no CNI config: the pod has only lo");
            Ok(None)
        }
        Err(source) => Err(SandboxError::NetworkSetup {
            id: id.to_string(),
            source,
        }),
    }
}

/// CNI ADD for the pod; its result, which the caller records (with the
/// pod ready, in one commit). The list is recorded already: a crash
/// before the result is recorded leaves a DEL to run without a
/// `prevResult`, which the CNI specification has plugins accept.
pub(super) async fn add_network(
    cri: &Cri,
    id: &str,
    config: &cri::PodSandboxConfig,
    netns: &Path,
    network: &cni::Network,
) -> Result<serde_json::Value, SandboxError> {
    let result = cni_plugins(cri)
        .add(
            network,
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
    tracing::debug!(sandbox = id, network = %network.name, "pod network attached");
    Ok(result)
}

/// Writes an ADD's result and the pod's addresses into its record.
pub(super) fn record_result(record: &mut SandboxRecord, result: &serde_json::Value) {
    let addresses = cni::addresses(result);
    record.network.cni_result = Some(result.clone());
    record.network.ip = addresses.ip;
    record.network.additional_ips = addresses.additional;
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
