//! What a CRI container is: its state (from its task, and from its record
//! once it has exited), ContainerStatus, the list with its filters, and
//! the stats.

use std::collections::HashMap;
use std::sync::Arc;

use berth_proto::cri::v1 as cri;

use super::{blocking, record, resolve, CtrError};
use crate::cri::store::ContainerRecord;
use crate::cri::{Cri, NAMESPACE};
use crate::tasks::{TaskError, TaskStatus};

/// A container's live state and its exit, if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub state: cri::ContainerState,
    pub pid: u32,
    /// (exit code, nanoseconds since the epoch).
    pub exit: Option<(i32, i64)>,
}

pub fn state_name(state: cri::ContainerState) -> &'static str {
    state.as_str_name()
}

/// The state: exited once its record says so or its task's init has
/// exited; running while the task runs; created before it has a task.
pub async fn state_of(cri: &Cri, id: &str, rec: &ContainerRecord) -> Live {
    use cri::ContainerState as S;
    let recorded = (rec.finished_at != 0).then_some((rec.exit_code, rec.finished_at));
    match cri.tasks.get(NAMESPACE, id, None).await {
        Ok(info) => {
            let exit = info.exit.as_ref().map(|e| {
                let at =
                    e.at.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as i64)
                        .unwrap_or(0);
                (e.status, at)
            });
            // A process the shim has reaped but whose output it still
            // drains into the log runs on until its exit is reported: the
            // log is whole once a container shows as exited.
            let state = match (exit.or(recorded), info.status) {
                (Some(_), _) => S::ContainerExited,
                (None, TaskStatus::Unknown) => S::ContainerUnknown,
                (None, _) => S::ContainerRunning,
            };
            Live {
                state,
                pid: info.pid,
                exit: exit.or(recorded),
            }
        }
        Err(TaskError::NotFound(_)) => Live {
            state: if recorded.is_some() || rec.started_at != 0 {
                S::ContainerExited
            } else {
                S::ContainerCreated
            },
            pid: 0,
            exit: recorded,
        },
        Err(e) => {
            tracing::warn!(container = id, error = %e, "task state unknown");
            Live {
                state: S::ContainerUnknown,
                pid: 0,
                exit: recorded,
            }
        }
    }
}

/// Writes the exit of a container whose task has exited into its record
/// (once), with its reason: `OOMKilled` after an OOM kill, else
/// `Completed` for 0 and `Error` for anything else.
pub async fn record_exit(cri: &Cri, id: &str) -> Result<(), CtrError> {
    record_exit_polling(cri, id, OOM_POLLS).await
}

/// [`record_exit`] for a container its pod's stop has just killed: the
/// event log is read once, not waited on for the exit's own event (the
/// SIGKILL was ours; an OOM kill that came before it is in the log
/// already).
pub async fn record_exit_of_pod_stop(cri: &Cri, id: &str) -> Result<(), CtrError> {
    record_exit_polling(cri, id, 1).await
}

/// How many times (25 ms apart) the event log is read for an OOM kill.
const OOM_POLLS: usize = 40;

async fn record_exit_polling(cri: &Cri, id: &str, polls: usize) -> Result<(), CtrError> {
    let rec = record(cri, id)?;
    if rec.finished_at != 0 {
        return Ok(());
    }
    let live = state_of(cri, id, &rec).await;
    let Some((code, at)) = live.exit else {
        return Ok(());
    };
    let oom = oom_killed(cri, id, code, polls).await;
    cri.store.update_container(id, |r| {
        if r.finished_at == 0 {
            r.finished_at = at;
            r.exit_code = code;
            r.reason = exit_reason(code, oom).into();
        }
    })?;
    Ok(())
}

/// Whether the container's init was killed for memory. The task knows
/// (the shim reports an OOM kill before the exit it caused) unless it was
/// found again at a supervisor start or is gone: then the event log is
/// read, for a process killed by SIGKILL until its exit is in it (events
/// are written in order, a moment after they happen). The log holds up to
/// `events::KEEP` events, so it is read only when the task cannot tell.
async fn oom_killed(cri: &Cri, id: &str, code: i32, polls: usize) -> bool {
    let within = std::time::Duration::from_millis(25 * polls as u64);
    if let Some(oom) = cri.tasks.oom_killed(NAMESPACE, id, within).await {
        return oom;
    }
    let about = |e: &crate::events::Event, topic: &str| {
        e.topic == topic
            && e.attributes.get("container_id").map(String::as_str) == Some(id)
            && !e.attributes.contains_key("exec_id")
    };
    for poll in 0..polls {
        if poll > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let Ok(events) = cri.events.backlog(NAMESPACE, 0) else {
            return false;
        };
        if events.iter().any(|e| about(e, "/tasks/oom")) {
            return true;
        }
        if code != 128 + libc::SIGKILL || events.iter().any(|e| about(e, "/tasks/exit")) {
            return false;
        }
    }
    false
}

pub fn exit_reason(code: i32, oom: bool) -> &'static str {
    match (oom, code) {
        (true, _) => "OOMKilled",
        (false, 0) => "Completed",
        (false, _) => "Error",
    }
}

/// ContainerStatus, with `info["info"]` when verbose.
pub async fn status(
    cri: &Cri,
    wanted: &str,
    verbose: bool,
) -> Result<(cri::ContainerStatus, HashMap<String, String>), CtrError> {
    let id = resolve(cri, wanted)?.ok_or_else(|| CtrError::NotFound(wanted.to_string()))?;
    let mut rec = record(cri, &id)?;
    let live = state_of(cri, &id, &rec).await;
    if live.state == cri::ContainerState::ContainerExited && rec.finished_at == 0 {
        record_exit(cri, &id).await?;
        rec = record(cri, &id)?;
    }
    let config = rec.config(&id)?;
    let (exit_code, finished_at) = live.exit.unwrap_or((rec.exit_code, rec.finished_at));
    let reason = if !rec.reason.is_empty() {
        rec.reason.clone()
    } else if live.state == cri::ContainerState::ContainerExited {
        exit_reason(exit_code, false).to_string()
    } else {
        String::new()
    };
    let status = cri::ContainerStatus {
        id: id.clone(),
        metadata: config.metadata.clone(),
        state: live.state as i32,
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at: if live.state == cri::ContainerState::ContainerExited {
            finished_at
        } else {
            0
        },
        exit_code: if live.state == cri::ContainerState::ContainerExited {
            exit_code
        } else {
            0
        },
        image: Some(cri::ImageSpec {
            image: rec.image_ref.clone(),
            annotations: config
                .image
                .as_ref()
                .map(|i| i.annotations.clone())
                .unwrap_or_default(),
            ..Default::default()
        }),
        image_ref: rec.image_id.clone(),
        reason,
        message: rec.message.clone(),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        mounts: config.mounts.clone(),
        log_path: rec
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        resources: config.linux.as_ref().and_then(|l| {
            l.resources.clone().map(|r| cri::ContainerResources {
                linux: Some(r),
                windows: None,
            })
        }),
        image_id: rec.image_id.clone(),
        user: None,
        stop_signal: config.stop_signal,
    };
    let mut info = HashMap::new();
    if verbose {
        let spec = {
            let images = Arc::clone(&cri.images);
            let id2 = id.clone();
            blocking(move || Ok(crate::containers::get(&images, NAMESPACE, &id2)?)).await?
        };
        let spec: serde_json::Value = serde_json::from_str(&spec.spec).unwrap_or_default();
        let doc = serde_json::json!({
            "sandboxID": rec.sandbox_id,
            "pid": live.pid,
            "runtimeSpec": spec,
            "config": config_json(&config),
        });
        info.insert("info".to_string(), doc.to_string());
    }
    Ok((status, info))
}

/// The parts of a config kubelet and crictl read back from `info`.
fn config_json(config: &cri::ContainerConfig) -> serde_json::Value {
    serde_json::json!({
        "metadata": config.metadata.as_ref().map(|m| serde_json::json!({"name": m.name, "attempt": m.attempt})),
        "image": config.image.as_ref().map(|i| i.image.clone()),
        "command": config.command,
        "args": config.args,
        "working_dir": config.working_dir,
        "log_path": config.log_path,
        "tty": config.tty,
        "stdin": config.stdin,
    })
}

/// The containers a filter selects.
pub async fn list(
    cri: &Cri,
    filter: Option<cri::ContainerFilter>,
) -> Result<Vec<cri::Container>, CtrError> {
    let filter = filter.unwrap_or_default();
    let mut out = Vec::new();
    let wanted_id = if filter.id.is_empty() {
        None
    } else {
        match resolve(cri, &filter.id)? {
            Some(id) => Some(id),
            None => return Ok(out),
        }
    };
    let wanted_sandbox = if filter.pod_sandbox_id.is_empty() {
        None
    } else {
        match cri.store.resolve(
            crate::cri::store::CriTable::Sandboxes,
            &filter.pod_sandbox_id,
        )? {
            Some(id) => Some(id),
            None => return Ok(out),
        }
    };
    for (id, rec) in cri.store.containers()? {
        if wanted_id.as_ref().is_some_and(|w| *w != id)
            || wanted_sandbox
                .as_ref()
                .is_some_and(|s| *s != rec.sandbox_id)
        {
            continue;
        }
        let Ok(config) = rec.config(&id) else {
            continue;
        };
        if !filter
            .label_selector
            .iter()
            .all(|(k, v)| config.labels.get(k) == Some(v))
        {
            continue;
        }
        let live = state_of(cri, &id, &rec).await;
        if let Some(s) = &filter.state {
            if s.state != live.state as i32 {
                continue;
            }
        }
        out.push(cri::Container {
            id: id.clone(),
            pod_sandbox_id: rec.sandbox_id.clone(),
            metadata: config.metadata.clone(),
            image: Some(cri::ImageSpec {
                image: rec.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: rec.image_id.clone(),
            state: live.state as i32,
            created_at: rec.created_at,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            image_id: rec.image_id.clone(),
        });
    }
    out.sort_by_key(|c| c.created_at);
    Ok(out)
}

/// One container's stats: CPU and memory from its cgroup while it runs,
/// and the disk its writable layer uses.
pub async fn stats(cri: &Cri, wanted: &str) -> Result<cri::ContainerStats, CtrError> {
    let id = resolve(cri, wanted)?.ok_or_else(|| CtrError::NotFound(wanted.to_string()))?;
    let rec = record(cri, &id)?;
    let config = rec.config(&id)?;
    let now = super::now_ns();
    let attributes = cri::ContainerAttributes {
        id: id.clone(),
        metadata: config.metadata.clone(),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
    };
    let (cpu, memory) = match cri.tasks.stats(NAMESPACE, &id).await {
        Ok(s) => {
            let inactive = s
                .memory_stats
                .get("total_inactive_file")
                .or_else(|| s.memory_stats.get("inactive_file"))
                .copied()
                .unwrap_or(0);
            let rss = s
                .memory_stats
                .get("total_rss")
                .or_else(|| s.memory_stats.get("anon"))
                .copied()
                .unwrap_or(0);
            let faults = |k: &str, v1: &str| {
                s.memory_stats
                    .get(v1)
                    .or_else(|| s.memory_stats.get(k))
                    .copied()
                    .unwrap_or(0)
            };
            let working_set = s.memory_usage.saturating_sub(inactive);
            let cpu = cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: Some(cri::UInt64Value {
                    value: s.cpu_usage_ns,
                }),
                usage_nano_cores: crate::cri::sandbox::stats::nano_cores(&id, now, s.cpu_usage_ns)
                    .map(|value| cri::UInt64Value { value }),
                psi: None,
            };
            let memory = cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: Some(cri::UInt64Value { value: working_set }),
                available_bytes: (s.memory_limit > 0).then(|| cri::UInt64Value {
                    value: s.memory_limit.saturating_sub(working_set),
                }),
                usage_bytes: Some(cri::UInt64Value {
                    value: s.memory_usage,
                }),
                rss_bytes: Some(cri::UInt64Value { value: rss }),
                page_faults: Some(cri::UInt64Value {
                    value: faults("pgfault", "total_pgfault"),
                }),
                major_page_faults: Some(cri::UInt64Value {
                    value: faults("pgmajfault", "total_pgmajfault"),
                }),
                psi: None,
            };
            (Some(cpu), Some(memory))
        }
        Err(_) => (None, None),
    };
    let writable = {
        let images = Arc::clone(&cri.images);
        let id2 = id.clone();
        blocking(move || {
            let rx = images
                .meta
                .read()
                .map_err(crate::containers::ContainerError::from)?;
            let record = crate::containers::get(&images, NAMESPACE, &id2)?;
            let used = images
                .snapshots
                .usage(&rx, NAMESPACE, &record.snapshot_key)
                .map_err(crate::containers::ContainerError::from)?;
            Ok(used)
        })
        .await
        .ok()
    };
    let writable_layer = writable.map(|(bytes, inodes)| cri::FilesystemUsage {
        timestamp: now,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: cri.config.snapshots_dir.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(cri::UInt64Value { value: bytes }),
        inodes_used: Some(cri::UInt64Value { value: inodes }),
    });
    Ok(cri::ContainerStats {
        attributes: Some(attributes),
        cpu,
        memory,
        writable_layer,
        swap: None,
        io: None,
    })
}

/// The stats of the containers a filter selects (running or not).
pub async fn list_stats(
    cri: &Cri,
    filter: Option<cri::ContainerStatsFilter>,
) -> Result<Vec<cri::ContainerStats>, CtrError> {
    let filter = filter.unwrap_or_default();
    let selected = list(
        cri,
        Some(cri::ContainerFilter {
            id: filter.id,
            state: None,
            pod_sandbox_id: filter.pod_sandbox_id,
            label_selector: filter.label_selector,
        }),
    )
    .await?;
    let mut out = Vec::new();
    for c in selected {
        match stats(cri, &c.id).await {
            Ok(s) => out.push(s),
            Err(CtrError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons() {
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(1, false), "Error");
        assert_eq!(exit_reason(137, true), "OOMKilled");
    }
}
