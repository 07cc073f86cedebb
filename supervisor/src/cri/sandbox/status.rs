//! What PodSandboxStatus and ListPodSandbox report: a sandbox's live
//! state is its record's and its pause task's (a pod whose pause died is
//! not ready), with the config's metadata, labels and annotations as
//! given, and the pod's addresses.

use std::collections::HashMap;

use berth_proto::cri::v1 as cri;
use serde_json::json;

use super::{Cri, SandboxError};
use crate::cri::store::{CriTable, SandboxRecord, SandboxState};
use crate::cri::NAMESPACE;
use crate::tasks::TaskStatus;

/// A sandbox as the CRI reports it.
pub struct SandboxView {
    pub id: String,
    pub record: SandboxRecord,
    pub config: cri::PodSandboxConfig,
    pub ready: bool,
    /// The pause process's status, `None` without a task.
    pub task: Option<TaskStatus>,
}

impl SandboxView {
    fn state(&self) -> i32 {
        if self.ready {
            cri::PodSandboxState::SandboxReady as i32
        } else {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }

    pub fn to_status(&self) -> cri::PodSandboxStatus {
        let network = &self.record.network;
        let options = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        cri::PodSandboxStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state(),
            created_at: self.record.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: network.ip.clone(),
                additional_ips: network
                    .additional_ips
                    .iter()
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(options.unwrap_or_default()),
                }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.record.runtime_handler.clone(),
        }
    }

    pub fn to_item(&self) -> cri::PodSandbox {
        cri::PodSandbox {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state(),
            created_at: self.record.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.record.runtime_handler.clone(),
        }
    }

    /// `info` of a verbose status: what the CRI keeps about the pod, as
    /// containerd's `info` key holds it.
    pub fn verbose_info(&self) -> HashMap<String, String> {
        let r = &self.record;
        let info = json!({
            "pid": r.pid,
            "processStatus": self.task.map_or("deleted", |t| t.name()),
            "netNamespacePath": r.network.netns,
            "netNamespaceClosed": r.network.netns.is_none(),
            "image": r.image,
            "runtimeHandler": r.runtime_handler,
            "cgroupPath": r.cgroup,
            "sandboxDir": r.dir,
            "shmPath": r.shm,
            "cniNetwork": r.network.cni_network,
            "cniResult": r.network.cni_result,
            "state": match r.state {
                SandboxState::Ready => "ready",
                SandboxState::NotReady => "notready",
            },
        });
        HashMap::from([("info".to_string(), info.to_string())])
    }
}

/// The live view of one record.
async fn view(cri: &Cri, id: String, record: SandboxRecord) -> Result<SandboxView, SandboxError> {
    let config = record.config(&id)?;
    let task = match cri.tasks.get(NAMESPACE, &id, None).await {
        Ok(info) => Some(info.status),
        Err(_) => None,
    };
    let ready = record.state == SandboxState::Ready
        && matches!(task, Some(TaskStatus::Running | TaskStatus::Paused));
    Ok(SandboxView {
        id,
        record,
        config,
        ready,
        task,
    })
}

/// One sandbox, by id or unique prefix.
pub async fn get(cri: &Cri, wanted: &str) -> Result<SandboxView, SandboxError> {
    let not_found = || SandboxError::NotFound(wanted.to_string());
    let id = cri
        .store
        .resolve(CriTable::Sandboxes, wanted)?
        .ok_or_else(not_found)?;
    let record = cri.store.sandbox(&id)?.ok_or_else(not_found)?;
    view(cri, id, record).await
}

/// The sandboxes a filter selects (all without one), oldest first.
pub async fn list(
    cri: &Cri,
    filter: Option<&cri::PodSandboxFilter>,
) -> Result<Vec<SandboxView>, SandboxError> {
    let id = match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
        Some(wanted) => match cri.store.resolve(CriTable::Sandboxes, wanted)? {
            Some(id) => Some(id),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let mut out = Vec::new();
    for (sid, record) in cri.store.sandboxes()? {
        if id.as_ref().is_some_and(|id| *id != sid) {
            continue;
        }
        let v = match view(cri, sid.clone(), record).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(sandbox = %sid, error = %e, "unreadable sandbox record left out");
                continue;
            }
        };
        if let Some(f) = filter {
            if f.state.as_ref().is_some_and(|s| s.state != v.state()) {
                continue;
            }
            if !f
                .label_selector
                .iter()
                .all(|(k, want)| v.config.labels.get(k) == Some(want))
            {
                continue;
            }
        }
        out.push(v);
    }
    out.sort_by_key(|v| v.record.created_at);
    Ok(out)
}
