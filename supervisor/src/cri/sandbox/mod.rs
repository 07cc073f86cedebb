//! Pod sandboxes. A sandbox is a supervisor container (label
//! `io.berth.cri.kind=sandbox`) in [`NAMESPACE`] whose task runs the pause
//! process, holding the pod's network, IPC and UTS namespaces; its CRI
//! record (`store`) keeps the config, the pinned network namespace and
//! the CNI result.
//!
//! Run: the pause image (found, else berth's own imported or the named
//! one pulled), the CNI config and the pause spec; the record (not
//! ready) with the pause container in one commit; the pod's files
//! (hostname, hosts, resolv.conf), /dev/shm and the network namespace;
//! then CNI ADD and the pause task at once; the record ready with the
//! pid and the CNI result. A failure undoes every step. Stop: the pod's
//! containers through the containers' own stop (all at once), then the
//! pause task, while CNI DEL releases the network; an unknown id is no
//! error (as kubelet retries stops). Remove: stop, then the pod's
//! containers (through the containers' removal), the pod's files, the
//! pause container with the record; an unknown id is no error.
//!
//! `status` answers PodSandboxStatus and ListPodSandbox, `stats` the
//! stats calls; `spec` makes the pause process's OCI spec, `netns` the
//! pinned network namespace, `cni` runs the CNI plugins, `pause` is
//! berth's pause image; `service` is the thin gRPC part.

pub mod cni;
mod files;
pub mod netns;
mod network;
pub mod pause;
pub mod service;
pub mod spec;
pub mod stats;
pub mod status;
mod userns;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::cri::v1 as cri;
use prost::Message;

use super::container;
use super::images::{self as cri_images, CriImageError};
use super::store::{
    self, CriTable, SandboxNetwork, SandboxRecord, SandboxState, Store, StoreError,
};
use super::{Cri, NAMESPACE};
use crate::containers::{self, ContainerError, NewContainer, ProcessConfig};
use crate::tasks::{CreateOptions, TaskError};
use cni::CniError;
use files::{check_dns, mount_shm, remove_files, unmount, write_pod_files};
use netns::NetnsError;
pub use network::cni_plugins;
use network::{add_network, detach_network, json_of_network, load_network, record_result};
use spec::{NamespaceModes, PauseSpec, SpecError};

/// The label that marks a supervisor container as a CRI sandbox or
/// container.
pub const KIND_LABEL: &str = "io.berth.cri.kind";
/// The OOM score containerd gives pause processes (clamped to what the
/// host allows).
const SANDBOX_OOM_SCORE_ADJ: i32 = -998;
/// How long a stop waits for a killed process to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no runtime for {0:?} is configured")]
    UnknownHandler(String),
    #[error("failed to reserve sandbox name {name:?}: name {name:?} is reserved for {id:?}")]
    NameReserved { name: String, id: String },
    #[error("an error occurred when try to find sandbox {0:?}: not found")]
    NotFound(String),
    #[error("get the pause image {image:?}: {source}")]
    PauseImage {
        image: String,
        source: Box<CriImageError>,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("failed to setup network for sandbox {id:?}: {source}")]
    NetworkSetup { id: String, source: CniError },
    #[error("failed to destroy network for sandbox {id:?}: {source}")]
    NetworkTeardown { id: String, source: CniError },
    #[error("{what} {path}: {source}")]
    Files {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("make the pod's /dev/shm on {path}: {source}")]
    Shm { path: PathBuf, source: nix::Error },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    PodContainer(#[from] Box<super::container::CtrError>),
}

fn files_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Files {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Nanoseconds since the epoch, as the CRI reports times.
pub fn now_ns() -> i64 {
    crate::metadata::now() as i64
}

/// The sandbox name containerd reserves: one pod attempt, one sandbox.
fn sandbox_name(config: &cri::PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The pause image's stored name and process config, pulled when absent.
async fn pause_image(cri: &Cri) -> Result<(String, ProcessConfig), SandboxError> {
    let wanted = cri.config.pause_image.clone();
    let err = |source: CriImageError| SandboxError::PauseImage {
        image: wanted.clone(),
        source: Box::new(source),
    };
    let reference = cri_images::normalise(&wanted).map_err(err)?;
    let name = reference.to_string();
    let found = cri_images::find(&cri.images, &wanted).map_err(err)?;
    let image = match found {
        Some(image) => image,
        None => {
            if wanted == super::DEFAULT_PAUSE_IMAGE {
                // berth's own, imported at first need: no pull, and a
                // supervisor that never runs a pod keeps no CRI image.
                let images = std::sync::Arc::clone(&cri.images);
                let name = name.clone();
                tokio::task::spawn_blocking(move || pause::import_if_absent(&images, &name))
                    .await
                    .map_err(|e| {
                        err(CriImageError::BadImage {
                            name: wanted.clone(),
                            reason: e.to_string(),
                        })
                    })?
                    .map_err(|e| err(e.into()))?;
            } else {
                cri_images::pull(&cri.images, &reference, None)
                    .await
                    .map_err(err)?;
            }
            cri_images::find(&cri.images, &wanted)
                .map_err(err)?
                .ok_or_else(|| {
                    err(CriImageError::BadImage {
                        name: name.clone(),
                        reason: "pulled, yet not found".into(),
                    })
                })?
        }
    };
    let stored = if image.repo_tags.contains(&name) || image.repo_digests.contains(&name) {
        name
    } else {
        image
            .repo_tags
            .first()
            .or(image.repo_digests.first())
            .cloned()
            .unwrap_or(name)
    };
    let process = serde_json::from_value::<ProcessConfigDoc>(image.config)
        .map(|d| d.config.unwrap_or_default())
        .unwrap_or_default();
    Ok((stored, process))
}

#[derive(serde::Deserialize)]
struct ProcessConfigDoc {
    #[serde(default)]
    config: Option<ProcessConfig>,
}

/// The OOM score a pod process gets: `wanted`, raised to the
/// supervisor's own when the host does not let it lower scores (no
/// CAP_SYS_RESOURCE), as containerd's `restrict_oom_score_adj` does.
pub fn clamp_oom_score_adj(wanted: i32) -> i32 {
    let current = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    if wanted >= current || has_sys_resource() {
        wanted
    } else {
        current
    }
}

/// CAP_SYS_RESOURCE's bit.
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process's effective capabilities have CAP_SYS_RESOURCE.
fn has_sys_resource() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The directories of a sandbox: its files under the root, its runtime
/// state (shm) under the state directory.
fn sandbox_dirs(cri: &Cri, id: &str) -> (PathBuf, PathBuf) {
    (
        cri.config.root_dir.join("sandboxes").join(id),
        cri.config.state_dir.join("sandboxes").join(id),
    )
}

fn netns_path(cri: &Cri, id: &str) -> PathBuf {
    cri.config.state_dir.join("netns").join(id)
}

/// The cgroup a pod goes in: `<cgroup_parent>/<id>` (cgroupfs), else one
/// of berth's own.
fn cgroup_of(config: &cri::PodSandboxConfig, id: &str) -> String {
    let parent = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.trim_end_matches('/'))
        .unwrap_or_default();
    if parent.is_empty() {
        format!("/berth/{NAMESPACE}/{id}")
    } else if parent.starts_with('/') {
        format!("{parent}/{id}")
    } else {
        format!("/{parent}/{id}")
    }
}

/// Runs a pod sandbox; its id.
pub async fn run(
    cri: &Cri,
    config: cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, SandboxError> {
    let Some(metadata) = config.metadata.clone() else {
        return Err(SandboxError::InvalidConfig("metadata is missing".into()));
    };
    if metadata.name.is_empty() {
        return Err(SandboxError::InvalidConfig("metadata.name is empty".into()));
    }
    if !matches!(handler, "" | "berth" | "runc") {
        return Err(SandboxError::UnknownHandler(handler.to_string()));
    }
    let t0 = std::time::Instant::now();
    let modes = spec::namespace_modes(&config)?;
    spec::check_hostname(&config.hostname)?;
    check_dns(&config)?;
    let name = sandbox_name(&config);
    let (image, process) = pause_image(cri).await?;

    let id = store::new_id().map_err(files_err("read random bytes for", Path::new("an id")))?;
    let (dir, state) = sandbox_dirs(cri, &id);
    let netns = (!modes.host_network).then(|| netns_path(cri, &id));
    // The network's config list is read before anything is made (one
    // that cannot be read fails the pod with nothing to undo), so the
    // first record has what a DEL needs.
    let network = match &netns {
        Some(_) => load_network(cri, &id)?,
        None => None,
    };
    let record = SandboxRecord {
        config: config.encode_to_vec(),
        created_at: now_ns(),
        state: SandboxState::NotReady,
        runtime_handler: handler.to_string(),
        image: image.clone(),
        pid: 0,
        network: SandboxNetwork {
            netns,
            cni_network: network.as_ref().map(|n| n.name.clone()),
            cni_config: network.as_ref().map(json_of_network),
            ..Default::default()
        },
        dir: dir.clone(),
        shm: (!modes.host_ipc).then(|| state.join("shm")),
        cgroup: cgroup_of(&config, &id),
    };
    let spec = spec::pause_spec(&PauseSpec {
        id: &id,
        config: &config,
        modes,
        image: &process,
        netns: record.network.netns.as_deref(),
        shm: record.shm.as_deref(),
        cgroup: &record.cgroup,
        oom_score_adj: clamp_oom_score_adj(SANDBOX_OOM_SCORE_ADJ),
    })?;
    let new = NewContainer {
        id: id.clone(),
        image: record.image.clone(),
        labels: [(KIND_LABEL.to_string(), "sandbox".to_string())].into(),
        spec: Some(spec.to_string().into_bytes()),
        ..Default::default()
    };
    // Held while the name is checked and the record written: a second run
    // of the same pod attempt waits and then finds the name taken.
    let names_lock = cri.locks.lock("sandbox names").await;
    let _lock = cri.locks.lock(&id).await;
    for (other, record) in cri.store.sandboxes()? {
        if let Ok(c) = record.config(&other) {
            if sandbox_name(&c) == name {
                return Err(SandboxError::NameReserved { name, id: other });
            }
        }
    }
    // The record and the pause container (spec and snapshot) first, in
    // one commit: a crash part-way leaves a not-ready sandbox that a
    // remove cleans up.
    {
        let images = std::sync::Arc::clone(&cri.images);
        let (id, record) = (id.clone(), record.clone());
        blocking(move || {
            containers::create_with(&images, NAMESPACE, new, |tx| {
                Store::put_sandbox_in(tx, &id, &record)
            })?;
            Ok(())
        })
        .await?;
    }
    drop(names_lock);
    let recorded = t0.elapsed();
    match start(cri, &id, &config, &record, modes, network.as_ref()).await {
        Ok((pid, result)) => {
            let started = t0.elapsed();
            cri.store.update_sandbox(&id, |r| {
                r.state = SandboxState::Ready;
                r.pid = pid;
                if let Some(result) = &result {
                    record_result(r, result);
                }
            })?;
            tracing::debug!(
                sandbox = %id,
                recorded_ms = recorded.as_secs_f64() * 1e3,
                started_ms = started.as_secs_f64() * 1e3,
                total_ms = t0.elapsed().as_secs_f64() * 1e3,
                "pod run's parts"
            );
            tracing::info!(sandbox = %id, name = %name, pid, "pod sandbox running");
            Ok(id)
        }
        Err((e, result)) => {
            tracing::warn!(sandbox = %id, error = %e, "pod sandbox failed to start: cleaning up");
            let cleaned = async {
                if let Some(result) = &result {
                    // The undoing DEL gets the ADD's result.
                    cri.store
                        .update_sandbox(&id, |r| record_result(r, result))?;
                }
                teardown(cri, &id, &record, Del::Lenient, &[]).await?;
                remove_container(cri, &id).await?;
                remove_files(cri, &id, &record).await?;
                cri.store.delete_sandbox(&id)?;
                Ok::<(), SandboxError>(())
            };
            if let Err(ce) = cleaned.await {
                tracing::warn!(sandbox = %id, error = %ce, "clean up after a failed run");
            }
            Err(e)
        }
    }
}

/// A started pod's pause pid and CNI result; or why it failed, with the
/// CNI result when the ADD succeeded (for the undoing DEL).
type Started = Result<(u32, Option<serde_json::Value>), (SandboxError, Option<serde_json::Value>)>;

/// The steps of a run after the record: the pod's files, shm and network
/// namespace; then CNI ADD and the pause task (created and started) at
/// once, as neither needs the other (the pause joins the pinned
/// namespace, the plugins work in it). The pause's pid and the ADD's
/// result; on failure, the ADD's result too when it succeeded.
async fn start(
    cri: &Cri,
    id: &str,
    config: &cri::PodSandboxConfig,
    record: &SandboxRecord,
    modes: NamespaceModes,
    network: Option<&cni::Network>,
) -> Started {
    let (dir, config2) = (record.dir.clone(), config.clone());
    let shm = record.shm.clone();
    // A pod in its own user namespace gets the pause's (see userns.rs).
    let netns = record
        .network
        .netns
        .clone()
        .filter(|_| modes.userns.is_none());
    let t_files = std::time::Instant::now();
    blocking(move || {
        write_pod_files(&dir, &config2, modes)?;
        if let Some(shm) = &shm {
            mount_shm(shm)?;
        }
        if let Some(netns) = &netns {
            netns::create(netns)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| (e, None))?;
    if modes.userns.is_some() {
        return userns::start(cri, id, config, record, network).await;
    }
    // How long each part takes, for --debug: what a pod's start costs.
    let t0 = std::time::Instant::now();
    let add = async {
        let added = match (&record.network.netns, network) {
            (Some(netns), Some(network)) => {
                add_network(cri, id, config, netns, network).await.map(Some)
            }
            _ => Ok(None),
        };
        (added, t0.elapsed())
    };
    let pause = async {
        let opts = CreateOptions {
            no_log: true,
            volatile_rootfs: true,
            ..Default::default()
        };
        cri.tasks.create(NAMESPACE, id, opts).await?;
        let created = t0.elapsed();
        let pid = cri.tasks.start(NAMESPACE, id, None).await?;
        Ok::<_, SandboxError>((pid, created, t0.elapsed()))
    };
    let ((added, add_took), pause) = tokio::join!(add, pause);
    if let Ok((_, created, started)) = &pause {
        tracing::debug!(
            sandbox = id,
            files_ms = (t0 - t_files).as_secs_f64() * 1e3,
            cni_add_ms = add_took.as_secs_f64() * 1e3,
            task_create_ms = created.as_secs_f64() * 1e3,
            task_started_ms = started.as_secs_f64() * 1e3,
            "pod network and pause task, at once"
        );
    }
    match (added, pause.map(|(pid, _, _)| pid)) {
        (Ok(result), Ok(pid)) => Ok((pid, result)),
        (Ok(result), Err(e)) => Err((e, result)),
        (Err(e), _) => Err((e, None)),
    }
}

/// Runs blocking work (files, mounts, the metadata) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(SandboxError::Files {
            what: "run blocking work for",
            path: PathBuf::from("a sandbox"),
            source: io::Error::other(e.to_string()),
        })
    })
}

/// Kills a task (all its processes) and waits for its exit; a missing
/// task is no error.
async fn kill_task(cri: &Cri, id: &str) -> Result<(), SandboxError> {
    match cri.tasks.get(NAMESPACE, id, None).await {
        Ok(info) if info.exit.is_some() => return Ok(()),
        Ok(_) => {}
        Err(TaskError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match cri
        .tasks
        .kill(NAMESPACE, id, None, libc::SIGKILL as u32, true)
        .await
    {
        Ok(()) => {}
        Err(TaskError::NotFound(_)) => return Ok(()),
        // Already gone: the shim says so in its refusal.
        Err(TaskError::Refused { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    match tokio::time::timeout(KILL_WAIT, cri.tasks.wait(NAMESPACE, id, None)).await {
        Ok(Ok(_)) | Ok(Err(TaskError::NotFound(_))) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(SandboxError::Task(TaskError::WrongState {
            id: id.to_string(),
            status: "running",
            why: "it did not exit within 10 s of SIGKILL",
        })),
    }
}

/// Deletes a task if there is one.
async fn delete_task(cri: &Cri, id: &str) -> Result<(), SandboxError> {
    match cri.tasks.delete(NAMESPACE, id).await {
        Ok(_) | Err(TaskError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How a teardown takes a failing CNI DEL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Del {
    /// It fails the teardown (a stop, which kubelet retries).
    Strict,
    /// It is logged (undoing a failed run, whose ADD already ran DEL).
    Lenient,
}

/// Stops the pod's containers (`containers`) and its pause task and
/// releases what the pod holds on the host (network, shm); the records and
/// the pod's files stay.
async fn teardown(
    cri: &Cri,
    id: &str,
    record: &SandboxRecord,
    del: Del,
    containers: &[String],
) -> Result<(), SandboxError> {
    // The record as it is now: a run records the network as it attaches it.
    let record = cri.store.sandbox(id)?.unwrap_or_else(|| record.clone());
    // The processes and the network at once: the containers (through
    // their own stop, each exit recorded and its task deleted, as
    // containerd deletes a container's task once it exits), the pause (all
    // are killed with SIGKILL, so none waits for another), and the CNI
    // DEL, which works in the pinned namespace and needs no process in it.
    let t0 = std::time::Instant::now();
    let containers_stop = async {
        let stops = containers.iter().map(|c| container::stop_for_pod(cri, c));
        for stopped in futures_util::future::join_all(stops).await {
            stopped.map_err(Box::new)?;
        }
        Ok::<_, SandboxError>(t0.elapsed())
    };
    let pause_stop = async {
        kill_task(cri, id).await?;
        delete_task(cri, id).await?;
        Ok::<_, SandboxError>(t0.elapsed())
    };
    let pause = async {
        let (containers_took, pause_took) = tokio::join!(containers_stop, pause_stop);
        Ok::<_, SandboxError>((containers_took?, pause_took?))
    };
    let network = async {
        let detached = match detach_network(cri, id, &record).await {
            Ok(()) => Ok(()),
            Err(e) if del == Del::Lenient => {
                tracing::warn!(sandbox = id, error = %e, "CNI DEL while undoing a failed run");
                Ok(())
            }
            Err(e) => Err(e),
        };
        (detached, t0.elapsed())
    };
    let (paused, (detached, del_took)) = tokio::join!(pause, network);
    let (containers_took, pause_took) = paused?;
    detached?;
    tracing::debug!(
        sandbox = id,
        containers_ms = containers_took.as_secs_f64() * 1e3,
        pause_ms = pause_took.as_secs_f64() * 1e3,
        cni_del_ms = del_took.as_secs_f64() * 1e3,
        "pod processes and network released, at once"
    );
    let netns = record.network.netns.clone();
    let shm = record.shm.clone();
    blocking(move || {
        if let Some(netns) = &netns {
            netns::remove(netns)?;
        }
        if let Some(shm) = &shm {
            unmount(shm);
        }
        Ok(())
    })
    .await
}

/// Stops a sandbox: its containers' processes are killed, the pause task
/// deleted, the network released. An unknown id is no error.
pub async fn stop(cri: &Cri, wanted: &str) -> Result<(), SandboxError> {
    let Some(id) = cri.store.resolve(CriTable::Sandboxes, wanted)? else {
        tracing::debug!(
            sandbox = wanted,
            "stop of an unknown sandbox: nothing to do"
        );
        return Ok(());
    };
    let _lock = cri.locks.lock(&id).await;
    stop_locked(cri, &id).await
}

async fn stop_locked(cri: &Cri, id: &str) -> Result<(), SandboxError> {
    let Some(record) = cri.store.sandbox(id)? else {
        return Ok(());
    };
    // The pod's containers are stopped with a timeout of 0 (SIGKILL, as
    // containerd stops them here; each exit recorded); their records stay.
    let ids: Vec<String> = cri
        .store
        .containers_of(id)?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    teardown(cri, id, &record, Del::Strict, &ids).await?;
    let stopped_already = record.state == SandboxState::NotReady
        && record.pid == 0
        && record.network.netns.is_none()
        && record.network.cni_config.is_none()
        && record.network.cni_result.is_none();
    if stopped_already {
        // A second stop (RemovePodSandbox after StopPodSandbox): nothing
        // changes, so nothing is committed.
        return Ok(());
    }
    cri.store.update_sandbox(id, |r| {
        r.state = SandboxState::NotReady;
        r.pid = 0;
        r.network.netns = None;
        r.network.cni_result = None;
        r.network.cni_network = None;
        r.network.cni_config = None;
    })?;
    tracing::info!(sandbox = %id, "pod sandbox stopped");
    Ok(())
}

/// Removes a sandbox (stopping it first) with its containers. An unknown
/// id is no error.
pub async fn remove(cri: &Cri, wanted: &str) -> Result<(), SandboxError> {
    let Some(id) = cri.store.resolve(CriTable::Sandboxes, wanted)? else {
        tracing::debug!(
            sandbox = wanted,
            "remove of an unknown sandbox: nothing to do"
        );
        return Ok(());
    };
    let _lock = cri.locks.lock(&id).await;
    let t0 = std::time::Instant::now();
    stop_locked(cri, &id).await?;
    let stop_took = t0.elapsed();
    // The containers at once, through the containers' own removal.
    let ids: Vec<String> = cri
        .store
        .containers_of(&id)?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let removals = async {
        let removals = ids.iter().map(|c| container::remove_for_pod(cri, c));
        for removed in futures_util::future::join_all(removals).await {
            removed.map_err(Box::new)?;
        }
        Ok::<_, SandboxError>(t0.elapsed())
    };
    delete_task(cri, &id).await?;
    let Some(record) = cri.store.sandbox(&id)? else {
        removals.await?;
        remove_container(cri, &id).await?;
        return Ok(());
    };
    // The pod's files beside its containers' removal: neither needs the
    // other once every process is gone.
    let files = async {
        remove_files(cri, &id, &record).await?;
        Ok::<_, SandboxError>(t0.elapsed())
    };
    let (containers_took, files_took) = tokio::join!(removals, files);
    let (containers_took, files_took) = (containers_took?, files_took?);
    // The pause container and the record in one commit.
    let images = std::sync::Arc::clone(&cri.images);
    let id2 = id.clone();
    blocking(move || {
        let also = |tx: &crate::metadata::WriteTx| Store::delete_sandbox_in(tx, &id2).map(|_| ());
        match containers::delete_with(&images, NAMESPACE, &id2, also) {
            Ok(_) => Ok(()),
            Err(ContainerError::NotFound(_)) => {
                let tx = images.meta.write().map_err(StoreError::from)?;
                Store::delete_sandbox_in(&tx, &id2).map_err(StoreError::from)?;
                tx.commit().map_err(StoreError::from)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    stats::forget_sample(&id);
    tracing::debug!(
        sandbox = %id,
        stop_ms = stop_took.as_secs_f64() * 1e3,
        containers_ms = containers_took.as_secs_f64() * 1e3,
        files_ms = files_took.as_secs_f64() * 1e3,
        total_ms = t0.elapsed().as_secs_f64() * 1e3,
        "pod removal's parts"
    );
    tracing::info!(sandbox = %id, "pod sandbox removed");
    Ok(())
}

/// Deletes a supervisor container; a missing one is no error.
async fn remove_container(cri: &Cri, id: &str) -> Result<(), SandboxError> {
    let images = std::sync::Arc::clone(&cri.images);
    let id = id.to_string();
    blocking(move || match containers::delete(&images, NAMESPACE, &id) {
        Ok(_) | Err(ContainerError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_go_under_the_parent_or_berths_own() {
        let mut c = cri::PodSandboxConfig::default();
        assert_eq!(cgroup_of(&c, "abc"), "/berth/k8s.io/abc");
        c.linux = Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/besteffort/".into(),
            ..Default::default()
        });
        assert_eq!(cgroup_of(&c, "abc"), "/kubepods/besteffort/abc");
        c.linux = Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "test.slice".into(),
            ..Default::default()
        });
        assert_eq!(cgroup_of(&c, "abc"), "/test.slice/abc");
    }

    #[test]
    fn oom_scores_are_never_lowered_below_what_the_host_allows() {
        let current: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(clamp_oom_score_adj(1000), 1000);
        let low = clamp_oom_score_adj(-1000);
        if has_sys_resource() {
            assert_eq!(low, -1000);
        } else {
            assert_eq!(low, current);
        }
    }

    #[test]
    fn sandbox_names_are_one_per_pod_attempt() {
        let c = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "ns".into(),
                attempt: 2,
            }),
            ..Default::default()
        };
        assert_eq!(sandbox_name(&c), "web_ns_u1_2");
    }
}
