//! `docker update`: new resource limits and restart policy for a
//! container. The fields given (non-zero, as Docker reads them) replace the
//! container's; a running container's cgroup takes them at once, and its
//! spec keeps them for later starts.

use std::sync::Arc;

use serde::Deserialize;

use super::spec::{resources, SystemHost};
use super::{Container, ContainerError, Result};
use crate::types::{HostConfig, RestartPolicy};
use crate::Engine;

/// `POST /containers/{id}/update`'s body: Docker's Resources and the
/// restart policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateRequest {
    pub cpu_shares: i64,
    pub memory: i64,
    pub nano_cpus: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    // Go reads JSON names without regard to case, and docker-py sends
    // these two as `CPURealtime…`.
    #[serde(alias = "CPURealtimePeriod")]
    pub cpu_realtime_period: i64,
    #[serde(alias = "CPURealtimeRuntime")]
    pub cpu_realtime_runtime: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub blkio_weight: u16,
    pub memory_reservation: i64,
    pub memory_swap: i64,
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicy>,
}

fn is_set<T: Default + PartialEq>(v: &T) -> bool {
    *v != T::default()
}

/// Docker's `update`: the fields given replace the container's.
fn apply(hc: &mut HostConfig, u: &UpdateRequest) {
    macro_rules! set_nonzero {
        ($($f:ident),*) => {$(
            if is_set(&u.$f) {
                hc.$f = u.$f.clone();
            }
        )*};
    }
    set_nonzero!(
        cpu_shares,
        memory,
        nano_cpus,
        cpu_period,
        cpu_quota,
        cpu_realtime_period,
        cpu_realtime_runtime,
        cpuset_cpus,
        cpuset_mems,
        blkio_weight,
        memory_reservation,
        memory_swap
    );
    if u.memory != 0 && u.memory_swap == 0 && hc.memory_swap > 0 && hc.memory_swap < u.memory {
        // A new memory limit above the old swap limit takes swap along.
        hc.memory_swap = u.memory * 2;
    }
    if let Some(p) = u.pids_limit {
        hc.pids_limit = Some(p);
    }
    if let Some(policy) = &u.restart_policy {
        hc.restart_policy = policy.clone();
    }
}

pub async fn update(engine: &Engine, c: &Arc<Container>, u: UpdateRequest) -> Result<Vec<String>> {
    let _op = c.op.lock().await;
    let record = c.record();
    let mut hc = record.host_config.clone();
    apply(&mut hc, &u);
    super::restart::validate(&hc.restart_policy)?;
    if hc.auto_remove && !matches!(hc.restart_policy.name.as_str(), "" | "no") {
        return Err(ContainerError::InvalidConfig(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
                .into(),
        ));
    }
    resources::check(&hc, &SystemHost)?;
    let mut updated = record.clone();
    updated.host_config = hc.clone();
    let image = crate::images::resolve(engine, &record.image_ref).await?;
    let spec = super::runspec::container_spec(engine, &updated, &image)?;
    if record.state.status.is_running() {
        let mut res = resources::resources(&hc);
        res.remove("devices");
        let bytes = serde_json::to_vec(&res).unwrap_or_default();
        engine
            .supervisor
            .update_task(&c.id, bytes)
            .await
            .map_err(ContainerError::backend(format!("update {}", c.id)))?;
    }
    engine
        .supervisor
        .update_container_spec(&c.id, spec)
        .await
        .map_err(ContainerError::backend(format!("update {}", c.id)))?;
    c.update(|r| r.host_config = hc);
    engine.containers.persist(c)?;
    super::create::emit(engine, c, "update");
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_fields_change() {
        let mut hc = HostConfig {
            memory: 100 << 20,
            cpu_shares: 512,
            ..Default::default()
        };
        let u = UpdateRequest {
            memory: 200 << 20,
            ..Default::default()
        };
        apply(&mut hc, &u);
        assert_eq!(hc.memory, 200 << 20);
        assert_eq!(hc.cpu_shares, 512);
        let u = UpdateRequest {
            restart_policy: Some(RestartPolicy {
                name: "always".into(),
                maximum_retry_count: 0,
            }),
            ..Default::default()
        };
        apply(&mut hc, &u);
        assert_eq!(hc.restart_policy.name, "always");
    }
}
