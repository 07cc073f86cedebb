//! CRI containers: a CRI container is a supervisor container (in
//! [`NAMESPACE`], labelled with its kind and pod sandbox) whose task runs
//! the container's process, writing its output in the CRI log format to
//! the path kubelet gives; what only the CRI knows (the config as given,
//! times, exit reason, log path) is its record in [`super::store`].
//!
//! Here: create, start, stop, remove, update and reopen-log; `status`
//! builds ContainerStatus, the list and the stats; `events` the
//! GetContainerEvents stream; `spec` the OCI spec (`mounts` and
//! `security` its parts; on `host` for what it asks of the machine,
//! `seccomp` for profiles); `service` the thin gRPC calls. See
//! docs/cri.md.

pub mod events;
pub mod host;
pub mod image_volumes;
pub mod mounts;
pub mod seccomp;
pub mod security;
pub mod service;
pub mod spec;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::cri::v1 as cri;
use prost::Message;

use super::images::{self as cri_images, CriImageError};
use super::store::{ContainerRecord, CriTable, SandboxRecord, SandboxState, Store, StoreError};
use super::{Cri, NAMESPACE};
use crate::containers::{self, Accounts, ContainerError, NewContainer, ProcessConfig};
use crate::tasks::{CreateOptions, TaskError, TaskStatus};
use berth_shim::logfile::LogFormat;

/// The label naming a supervisor container's CRI kind.
pub const KIND_LABEL: &str = "io.cri-containerd.kind";
/// The label naming a CRI container's sandbox.
pub const SANDBOX_LABEL: &str = "io.kubernetes.pod-sandbox.id";

/// The topics this module publishes (the task's own events say when the
/// process starts and exits).
pub const TOPIC_CREATED: &str = "/cri/containers/create";
pub const TOPIC_DELETED: &str = "/cri/containers/delete";

#[derive(Debug, thiserror::Error)]
pub enum CtrError {
    /// containerd's words.
    #[error("failed to find sandbox id {0:?}: not found")]
    SandboxNotFound(String),
    #[error("sandbox {0:?} is not ready: its containers cannot be created or started")]
    SandboxNotReady(String),
    /// containerd's words.
    #[error("an error occurred when try to find container {0:?}: not found")]
    NotFound(String),
    /// containerd's words.
    #[error("failed to resolve image {0:?}: not found")]
    ImageNotFound(String),
    #[error("failed to reserve container name {name:?}: name {name:?} is reserved for {id:?}")]
    NameReserved { name: String, id: String },
    #[error("container {id:?} is in {state} state: {why}")]
    WrongState {
        id: String,
        state: &'static str,
        why: &'static str,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("failed to generate container {id:?} spec: {source}")]
    Spec {
        id: String,
        source: Box<spec::SpecError>,
    },
    #[error(transparent)]
    Image(#[from] CriImageError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn invalid(what: &'static str, reason: impl Into<String>) -> CtrError {
    CtrError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    crate::metadata::now() as i64
}

/// Runs blocking work (file trees, the metadata) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CtrError> + Send + 'static,
) -> Result<T, CtrError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CtrError::Io {
            what: "run blocking work".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// The full id of a container a caller names (or a unique prefix of it).
pub fn resolve(cri: &Cri, wanted: &str) -> Result<Option<String>, CtrError> {
    Ok(cri.store.resolve(CriTable::Containers, wanted)?)
}

fn record(cri: &Cri, id: &str) -> Result<ContainerRecord, CtrError> {
    cri.store
        .container(id)?
        .ok_or_else(|| CtrError::NotFound(id.to_string()))
}

/// The container's name as containerd makes it unique in a node:
/// `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
fn unique_name(config: &cri::ContainerConfig, pod: &cri::PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    let p = pod.metadata.clone().unwrap_or_default();
    format!(
        "{}_{}_{}_{}_{}",
        m.name, p.name, p.namespace, p.uid, m.attempt
    )
}

/// Creates a container in a ready sandbox; its id. Nothing is left behind
/// when it fails.
pub async fn create(
    cri: &Cri,
    sandbox_wanted: &str,
    mut config: cri::ContainerConfig,
    pod: cri::PodSandboxConfig,
) -> Result<String, CtrError> {
    let Some(sandbox_id) = cri.store.resolve(CriTable::Sandboxes, sandbox_wanted)? else {
        return Err(CtrError::SandboxNotFound(sandbox_wanted.to_string()));
    };
    let meta = config
        .metadata
        .clone()
        .ok_or_else(|| invalid("container config", "metadata is missing"))?;
    if meta.name.is_empty() {
        return Err(invalid("container config", "metadata.name is empty"));
    }
    let image_wanted = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_wanted.is_empty() {
        return Err(invalid("container config", "image is empty"));
    }
    let _sandbox_lock = cri.locks.lock(&sandbox_id).await;
    let sandbox = cri
        .store
        .sandbox(&sandbox_id)?
        .ok_or_else(|| CtrError::SandboxNotFound(sandbox_wanted.to_string()))?;
    if sandbox.state != SandboxState::Ready || sandbox.pid == 0 {
        return Err(CtrError::SandboxNotReady(sandbox_id));
    }
    // The pod's own config as stored, not as this call repeats it.
    let stored_pod = sandbox.config(&sandbox_id).unwrap_or(pod);
    let name = unique_name(&config, &stored_pod);
    for (other, r) in cri.store.containers_of(&sandbox_id)? {
        if let Ok(c) = r.config(&other) {
            if unique_name(&c, &stored_pod) == name {
                return Err(CtrError::NameReserved { name, id: other });
            }
        }
    }

    let image = {
        let images = Arc::clone(&cri.images);
        let wanted = image_wanted.clone();
        blocking(move || Ok(cri_images::find(&images, &wanted)?)).await?
    }
    .ok_or_else(|| CtrError::ImageNotFound(image_wanted.clone()))?;
    let stored_name = image
        .repo_tags
        .first()
        .or(image.repo_digests.first())
        .cloned()
        .ok_or_else(|| CtrError::ImageNotFound(image_wanted.clone()))?;

    let id = super::store::new_id().map_err(|source| CtrError::Io {
        what: "make a container id".into(),
        source,
    })?;
    let log_path = match pod_log_dir(&stored_pod) {
        Some(dir) if !config.log_path.is_empty() => Some(dir.join(&config.log_path)),
        _ => None,
    };
    let target_pid = target_pid(cri, &config, &stored_pod).await?;
    // Undone when a later step fails; the config gets each one's image id.
    let volumes = image_volumes::prepare(cri, &id, &mut config).await?;
    let spec = {
        let images = Arc::clone(&cri.images);
        let (id, config, sandbox_id, pod, sandbox) = (
            id.clone(),
            volumes.spec_config(&config),
            sandbox_id.clone(),
            stored_pod.clone(),
            sandbox.clone(),
        );
        let image = image.clone();
        let stored_name = stored_name.clone();
        blocking(move || {
            let bytes = serde_json::to_vec(&image.config).unwrap_or_default();
            let process = ProcessConfig::from_image_config(&bytes)
                .map_err(|e| invalid("image config", format!("{}: {e}", image.id)))?;
            let lowers = {
                let rx = images.meta.read().map_err(ContainerError::from)?;
                images
                    .snapshots
                    .lowers(&rx, NAMESPACE, Some(&image.chain_id))
                    .map_err(ContainerError::from)?
            };
            let accounts = Accounts::read(&lowers)?;
            build_spec(
                &id,
                &config,
                &sandbox_id,
                &pod,
                &sandbox,
                target_pid,
                spec::Image {
                    name: &stored_name,
                    process: &process,
                    accounts: &accounts,
                },
            )
        })
        .await?
    };

    let labels = BTreeMap::from([
        (KIND_LABEL.to_string(), "container".to_string()),
        (SANDBOX_LABEL.to_string(), sandbox_id.clone()),
    ]);
    let record = ContainerRecord {
        sandbox_id: sandbox_id.clone(),
        config: config.encode_to_vec(),
        image_ref: image_wanted,
        image_id: image.id.clone(),
        created_at: now_ns(),
        log_path,
        ..Default::default()
    };
    {
        let images = Arc::clone(&cri.images);
        let new = NewContainer {
            id: id.clone(),
            image: stored_name.clone(),
            labels: labels.into_iter().collect(),
            spec: Some(serde_json::to_vec(&spec).unwrap_or_default()),
            ..Default::default()
        };
        // The supervisor container and the CRI's record in one commit.
        let id2 = id.clone();
        blocking(move || {
            containers::create_with(&images, NAMESPACE, new, |tx| {
                Store::put_container_in(tx, &id2, &record)
            })?;
            Ok(())
        })
        .await?;
    }
    volumes.keep();
    publish(cri, TOPIC_CREATED, &id);
    tracing::info!(container = %id, sandbox = %sandbox_id, name = %name, "CRI container created");
    Ok(id)
}

/// The pod's log directory, when it has one.
fn pod_log_dir(pod: &cri::PodSandboxConfig) -> Option<PathBuf> {
    Some(PathBuf::from(&pod.log_directory)).filter(|d| !d.as_os_str().is_empty())
}

/// The spec on the real machine, with the pause process's namespaces.
fn build_spec(
    id: &str,
    config: &cri::ContainerConfig,
    sandbox_id: &str,
    pod: &cri::PodSandboxConfig,
    sandbox: &SandboxRecord,
    target_pid: Option<u32>,
    image: spec::Image<'_>,
) -> Result<serde_json::Value, CtrError> {
    let file = |name: &str| {
        let p = sandbox.dir.join(name);
        p.exists().then_some(p)
    };
    let (hostname, hosts, resolv) = (file("hostname"), file("hosts"), file("resolv.conf"));
    let sb = spec::Sandbox {
        id: sandbox_id,
        config: pod,
        pid: sandbox.pid,
        netns: sandbox.network.netns.as_deref(),
        hostname_file: hostname.as_deref(),
        hosts_file: hosts.as_deref(),
        resolv_conf: resolv.as_deref(),
        shm: sandbox.shm.as_deref(),
    };
    let input = spec::SpecInput {
        id,
        config,
        sandbox: &sb,
        image,
        target_pid,
    };
    spec::build(&input, &host::SystemHost).map_err(|source| CtrError::Spec {
        id: id.to_string(),
        source: Box::new(source),
    })
}

/// The pid of the running container a `TARGET` pid namespace names.
async fn target_pid(
    cri: &Cri,
    config: &cri::ContainerConfig,
    pod: &cri::PodSandboxConfig,
) -> Result<Option<u32>, CtrError> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .or_else(|| {
            pod.linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.clone())
        })
        .unwrap_or_default();
    if sc.pid != cri::NamespaceMode::Target as i32 {
        return Ok(None);
    }
    let not_running = || {
        invalid(
            "pid namespace target",
            format!("container {:?} is not running", sc.target_id),
        )
    };
    let target = resolve(cri, &sc.target_id)?.ok_or_else(not_running)?;
    match cri.tasks.get(NAMESPACE, &target, None).await {
        Ok(info) if info.exit.is_none() && info.pid != 0 => Ok(Some(info.pid)),
        _ => Err(not_running()),
    }
}

fn publish(cri: &Cri, topic: &str, id: &str) {
    cri.events.enqueue(
        NAMESPACE,
        topic,
        BTreeMap::from([("container_id".to_string(), id.to_string())]),
        None,
    );
}

/// Starts a created container: its task, with the CRI log at the path
/// kubelet gave.
pub async fn start(cri: &Cri, wanted: &str) -> Result<(), CtrError> {
    let id = resolve(cri, wanted)?.ok_or_else(|| CtrError::NotFound(wanted.to_string()))?;
    let _lock = cri.locks.lock(&id).await;
    let rec = record(cri, &id)?;
    let state = status::state_of(cri, &id, &rec).await;
    if state.state != cri::ContainerState::ContainerCreated {
        return Err(CtrError::WrongState {
            id,
            state: status::state_name(state.state),
            why: "only a created container can be started",
        });
    }
    let sandbox = cri.store.sandbox(&rec.sandbox_id)?;
    let Some(sandbox) = sandbox.filter(|s| s.state == SandboxState::Ready && s.pid != 0) else {
        return Err(CtrError::SandboxNotReady(rec.sandbox_id));
    };
    let config = rec.config(&id)?;
    image_volumes::ensure(cri, &id, &config).await?;
    if let Some(path) = &rec.log_path {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| CtrError::Io {
                what: format!("create the log directory {}", dir.display()),
                source,
            })?;
        }
    }
    let opts = CreateOptions {
        stdin: config.stdin,
        log_path: rec.log_path.clone(),
        no_log: rec.log_path.is_none(),
        log_format: LogFormat::Cri,
        volatile_rootfs: true,
        rootfs_idmap: super::userns::rootfs_idmap(&sandbox.config(&rec.sandbox_id)?, sandbox.pid),
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let started = async {
        cri.tasks.create(NAMESPACE, &id, opts).await?;
        let created = t0.elapsed();
        if let Err(e) = cri.tasks.start(NAMESPACE, &id, None).await {
            let _ = cri.tasks.delete(NAMESPACE, &id).await;
            return Err(CtrError::from(e));
        }
        Ok(created)
    }
    .await;
    match started {
        Ok(created) => {
            tracing::debug!(
                container = %id,
                task_create_ms = created.as_secs_f64() * 1e3,
                task_started_ms = t0.elapsed().as_secs_f64() * 1e3,
                "CRI container's task"
            );
            cri.store
                .update_container(&id, |r| r.started_at = now_ns())?;
            tracing::info!(container = %id, "CRI container started");
            Ok(())
        }
        Err(e) => {
            let message = e.to_string();
            cri.store.update_container(&id, |r| {
                r.finished_at = now_ns();
                r.exit_code = 128;
                r.reason = "StartError".into();
                r.message = message;
            })?;
            Err(e)
        }
    }
}

/// The signal a container stops with: its config's, else SIGTERM.
fn stop_signal(config: &cri::ContainerConfig) -> u32 {
    match cri::Signal::try_from(config.stop_signal) {
        Ok(cri::Signal::RuntimeDefault) | Err(_) => libc::SIGTERM as u32,
        Ok(s) => signal_number(s.as_str_name().trim_start_matches("SIGNAL_"))
            .unwrap_or(libc::SIGTERM as u32),
    }
}

/// "SIGKILL" and its like as a number.
fn signal_number(name: &str) -> Option<u32> {
    let n = match name {
        "SIGABRT" => libc::SIGABRT,
        "SIGALRM" => libc::SIGALRM,
        "SIGCONT" => libc::SIGCONT,
        "SIGHUP" => libc::SIGHUP,
        "SIGINT" => libc::SIGINT,
        "SIGQUIT" => libc::SIGQUIT,
        "SIGKILL" => libc::SIGKILL,
        "SIGUSR1" => libc::SIGUSR1,
        "SIGUSR2" => libc::SIGUSR2,
        "SIGTERM" => libc::SIGTERM,
        "SIGSTOP" => libc::SIGSTOP,
        "SIGWINCH" => libc::SIGWINCH,
        _ => return None,
    };
    Some(n as u32)
}

/// Stops a container: its stop signal, then SIGKILL after `timeout`
/// seconds. An unknown id or a stopped container is no error.
pub async fn stop(cri: &Cri, wanted: &str, timeout: i64) -> Result<(), CtrError> {
    let Some(id) = resolve(cri, wanted)? else {
        tracing::debug!(
            container = wanted,
            "stop of an unknown container: nothing to do"
        );
        return Ok(());
    };
    let _lock = cri.locks.lock(&id).await;
    let Some(rec) = cri.store.container(&id)? else {
        return Ok(());
    };
    stop_locked(cri, &id, &rec, timeout, Caller::Kubelet).await
}

/// Who stops or removes a container: kubelet itself, or its pod's stop
/// or removal (which kills at once, as containerd's StopPodSandbox stops
/// containers with a timeout of 0, and reads the event log once for an
/// OOM kill instead of waiting for the kill's exit event).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Kubelet,
    Pod,
}

/// Stops a container of a pod that is being stopped: SIGKILL, its exit
/// recorded as StopContainer records it, and its task deleted (the
/// container stays, exited, until it is removed).
pub(crate) async fn stop_for_pod(cri: &Cri, id: &str) -> Result<(), CtrError> {
    let _lock = cri.locks.lock(id).await;
    let Some(rec) = cri.store.container(id)? else {
        return Ok(());
    };
    stop_locked(cri, id, &rec, 0, Caller::Pod).await?;
    match cri.tasks.delete(NAMESPACE, id).await {
        Ok(_) | Err(TaskError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn stop_locked(
    cri: &Cri,
    id: &str,
    rec: &ContainerRecord,
    timeout: i64,
    caller: Caller,
) -> Result<(), CtrError> {
    let info = match cri.tasks.get(NAMESPACE, id, None).await {
        Ok(info) => info,
        Err(TaskError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if info.exit.is_none() {
        let waited = if info.status == TaskStatus::Stopped {
            // Reaped already: its exit comes once its output is drained.
            false
        } else {
            let config = rec.config(id)?;
            let signal = stop_signal(&config);
            if timeout > 0 && signal != libc::SIGKILL as u32 {
                kill(cri, id, signal).await?;
                let wait = cri.tasks.wait(NAMESPACE, id, None);
                tokio::time::timeout(Duration::from_secs(timeout as u64), wait)
                    .await
                    .is_ok()
            } else {
                false
            }
        };
        if !waited {
            if info.status != TaskStatus::Stopped {
                kill(cri, id, libc::SIGKILL as u32).await?;
            }
            cri.tasks.wait(NAMESPACE, id, None).await?;
        }
    }
    match caller {
        Caller::Kubelet => status::record_exit(cri, id).await?,
        Caller::Pod => status::record_exit_of_pod_stop(cri, id).await?,
    }
    tracing::info!(container = %id, "CRI container stopped");
    Ok(())
}

/// Signals the container's processes; one that is already gone is no
/// error.
async fn kill(cri: &Cri, id: &str, signal: u32) -> Result<(), CtrError> {
    match cri.tasks.kill(NAMESPACE, id, None, signal, true).await {
        Ok(()) => Ok(()),
        Err(TaskError::Refused { .. }) | Err(TaskError::WrongState { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes a container, killing it first if it runs. An unknown id is no
/// error.
pub async fn remove(cri: &Cri, wanted: &str) -> Result<(), CtrError> {
    let Some(id) = resolve(cri, wanted)? else {
        tracing::debug!(
            container = wanted,
            "remove of an unknown container: nothing to do"
        );
        return Ok(());
    };
    remove_locked(cri, &id, Caller::Kubelet).await
}

/// Removes a container of a pod that is being removed.
pub(crate) async fn remove_for_pod(cri: &Cri, id: &str) -> Result<(), CtrError> {
    remove_locked(cri, id, Caller::Pod).await
}

async fn remove_locked(cri: &Cri, id: &str, caller: Caller) -> Result<(), CtrError> {
    let _lock = cri.locks.lock(id).await;
    let Some(rec) = cri.store.container(id)? else {
        return Ok(());
    };
    stop_locked(cri, id, &rec, 0, caller).await?;
    match cri.tasks.delete(NAMESPACE, id).await {
        Ok(_) | Err(TaskError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    image_volumes::remove(cri, id, &rec.config(id).unwrap_or_default()).await?;
    // The supervisor container and the CRI's record in one commit.
    let images = Arc::clone(&cri.images);
    let id2 = id.to_string();
    blocking(move || {
        let also = |tx: &crate::metadata::WriteTx| Store::delete_container_in(tx, &id2).map(|_| ());
        match containers::delete_with(&images, NAMESPACE, &id2, also) {
            Ok(_) => Ok(()),
            Err(ContainerError::NotFound(_)) => {
                let tx = images.meta.write().map_err(StoreError::from)?;
                Store::delete_container_in(&tx, &id2).map_err(StoreError::from)?;
                tx.commit().map_err(StoreError::from)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    publish(cri, TOPIC_DELETED, id);
    crate::cri::sandbox::stats::forget_sample(id);
    tracing::info!(container = %id, "CRI container removed");
    Ok(())
}

/// Changes a running container's cgroup limits, and its spec for later.
pub async fn update_resources(
    cri: &Cri,
    wanted: &str,
    resources: &cri::LinuxContainerResources,
) -> Result<(), CtrError> {
    let id = resolve(cri, wanted)?.ok_or_else(|| CtrError::NotFound(wanted.to_string()))?;
    let _lock = cri.locks.lock(&id).await;
    record(cri, &id)?;
    let linux = spec::linux_resources(resources).map_err(|source| CtrError::Spec {
        id: id.clone(),
        source: Box::new(source),
    })?;
    let linux = serde_json::Value::Object(linux);
    match cri.tasks.get(NAMESPACE, &id, None).await {
        Ok(info) if info.exit.is_none() => {
            let bytes = serde_json::to_vec(&linux).unwrap_or_default();
            cri.tasks.update(NAMESPACE, &id, &bytes).await?;
        }
        Ok(_) => {
            return Err(CtrError::WrongState {
                id,
                state: "CONTAINER_EXITED",
                why: "cannot update its resources",
            })
        }
        Err(TaskError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // The spec keeps the limits (with its device rules) for a later start.
    let images = Arc::clone(&cri.images);
    let id2 = id.clone();
    blocking(move || {
        let current = containers::get(&images, NAMESPACE, &id2)?;
        let mut spec: serde_json::Value = serde_json::from_str(&current.spec)
            .map_err(|e| ContainerError::InvalidSpec(e.to_string()))?;
        let devices = spec.pointer("/linux/resources/devices").cloned();
        let mut merged = linux.clone();
        if let Some(d) = devices {
            merged["devices"] = d;
        }
        if let Some(l) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) {
            l.insert("resources".into(), merged);
        }
        let change = containers::Update {
            spec: Some(serde_json::to_vec(&spec).unwrap_or_default()),
            ..Default::default()
        };
        containers::update(&images, NAMESPACE, &id2, change)?;
        Ok(())
    })
    .await?;
    tracing::info!(container = %id, "CRI container resources updated");
    Ok(())
}

/// Reopens a running container's log after kubelet rotated it.
pub async fn reopen_log(cri: &Cri, wanted: &str) -> Result<(), CtrError> {
    let id = resolve(cri, wanted)?.ok_or_else(|| CtrError::NotFound(wanted.to_string()))?;
    let rec = record(cri, &id)?;
    let state = status::state_of(cri, &id, &rec).await;
    if state.state != cri::ContainerState::ContainerRunning {
        return Err(CtrError::WrongState {
            id,
            state: status::state_name(state.state),
            why: "the log of a container that is not running cannot be reopened",
        });
    }
    if rec.log_path.is_none() {
        return Err(invalid("container", format!("{id:?} has no log path")));
    }
    cri.tasks.reopen_log(NAMESPACE, &id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_pod_and_attempt() {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            }),
            ..Default::default()
        };
        let pod = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        assert_eq!(unique_name(&config, &pod), "app_web_ns_u1_2");
    }

    #[test]
    fn stop_signals() {
        let mut c = cri::ContainerConfig::default();
        assert_eq!(stop_signal(&c), libc::SIGTERM as u32);
        c.stop_signal = cri::Signal::Sigkill as i32;
        assert_eq!(stop_signal(&c), libc::SIGKILL as u32);
        c.stop_signal = cri::Signal::Sigquit as i32;
        assert_eq!(stop_signal(&c), libc::SIGQUIT as u32);
    }
}
