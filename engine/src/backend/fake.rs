//! An in-memory [`Supervisor`] for the domain's unit tests: images and blobs
//! put in by the test, containers and tasks kept in maps. A task's init
//! "runs" from `start` until it is killed (it then exits with 128 + the
//! signal) or the test ends it with [`Fake::exit`], either way publishing
//! `/tasks/exit` as the supervisor does; it writes no output.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_proto::containers::v1 as containers;
use berth_proto::events::v1 as events;
use berth_proto::images::v1 as images;
use berth_proto::tasks::v1 as tasks;
use berth_proto::types::v1 as types;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Attached, BackendError, BoxFuture, Result, Stream, Supervisor, TaskOptions};

#[derive(Default)]
struct State {
    images: BTreeMap<String, images::Image>,
    blobs: BTreeMap<String, Bytes>,
    containers: BTreeMap<String, containers::Container>,
    tasks: BTreeMap<String, FakeTask>,
    next_pid: u32,
    calls: Vec<String>,
    leased: Vec<(String, String)>,
    /// What a pull of a name finds: the image, its blobs, the progress.
    remote: BTreeMap<String, Remote>,
    imported: Vec<images::Image>,
    logins: BTreeMap<String, (String, String)>,
    /// Snapshots by key: their parent, and whether committed.
    snapshots: BTreeMap<String, (String, bool)>,
}

#[derive(Clone)]
struct Remote {
    image: images::Image,
    blobs: Vec<(String, Bytes)>,
    progress: Vec<Vec<images::Progress>>,
}

struct FakeTask {
    pid: u32,
    status: tasks::Status,
    exit: watch::Sender<Option<u32>>,
}

/// The in-memory supervisor. Clones share their state.
#[derive(Clone)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    /// `/tasks/exit` events, as the supervisor publishes them.
    events: tokio::sync::broadcast::Sender<events::Envelope>,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            state: Arc::default(),
            events: tokio::sync::broadcast::channel(64).0,
        }
    }
}

fn not_found(what: &str, id: &str) -> BackendError {
    BackendError::NotFound(format!("{what} {id} not found"))
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores an image and the blobs it names (manifest, config).
    pub fn add_image(&self, image: images::Image, blobs: Vec<(String, Bytes)>) {
        let mut state = self.lock();
        state.blobs.extend(blobs);
        state.images.insert(image.name.clone(), image);
    }

    /// Makes `image` pullable by its name: a pull reports `progress`, one
    /// message per entry, then stores the image and its blobs.
    pub fn add_remote(
        &self,
        image: images::Image,
        blobs: Vec<(String, Bytes)>,
        progress: Vec<Vec<images::Progress>>,
    ) {
        let remote = Remote {
            image: image.clone(),
            blobs,
            progress,
        };
        self.lock().remote.insert(image.name, remote);
    }

    /// What the next import stores (the archive's bytes are not read).
    pub fn set_import(&self, images: Vec<images::Image>) {
        self.lock().imported = images;
    }

    /// Credentials a registry accepts.
    pub fn add_login(&self, registry: &str, username: &str, password: &str) {
        self.lock().logins.insert(
            registry.to_string(),
            (username.to_string(), password.to_string()),
        );
    }

    /// Ends a running task's init with this status, and publishes its
    /// `/tasks/exit`.
    pub fn exit(&self, id: &str, status: u32) {
        let mut state = self.lock();
        if let Some(task) = state.tasks.get_mut(id) {
            task.status = tasks::Status::Stopped;
            task.exit.send_replace(Some(status));
            let attributes = std::collections::HashMap::from([
                ("container_id".to_string(), id.to_string()),
                ("exit_status".to_string(), status.to_string()),
            ]);
            let _ = self.events.send(events::Envelope {
                topic: "/tasks/exit".into(),
                attributes,
                ..Default::default()
            });
        }
    }

    /// The calls made so far, as "method id".
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The calls made under a lease ([`super::lease_scope`]), as
    /// ("method id", lease).
    pub fn leased_calls(&self) -> Vec<(String, String)> {
        self.lock().leased.clone()
    }

    fn record(&self, call: String) {
        let mut state = self.lock();
        if let Some(lease) = super::current_lease() {
            state.leased.push((call.clone(), lease));
        }
        state.calls.push(call);
    }
}

impl Supervisor for Fake {
    fn create_lease(&self, id: &str, expire_seconds: i64) -> BoxFuture<'_, Result<()>> {
        self.record(format!("create_lease {id} {expire_seconds}"));
        Box::pin(async { Ok(()) })
    }

    fn delete_lease(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        self.record(format!("delete_lease {id}"));
        Box::pin(async { Ok(()) })
    }

    fn get_image(&self, name: &str) -> BoxFuture<'_, Result<images::Image>> {
        let found = self.lock().images.get(name).cloned();
        let name = name.to_string();
        Box::pin(async move { found.ok_or_else(|| not_found("image", &name)) })
    }

    fn list_images(&self) -> BoxFuture<'_, Result<Vec<images::Image>>> {
        let all = self.lock().images.values().cloned().collect();
        Box::pin(async move { Ok(all) })
    }

    fn read_blob(&self, digest: &str) -> BoxFuture<'_, Result<Bytes>> {
        let found = self.lock().blobs.get(digest).cloned();
        let digest = digest.to_string();
        Box::pin(async move { found.ok_or_else(|| not_found("blob", &digest)) })
    }

    fn pull(
        &self,
        req: images::PullRequest,
    ) -> BoxFuture<'_, Result<Stream<images::PullResponse>>> {
        self.record(format!("pull {}", req.reference));
        let remote = self.lock().remote.get(&req.reference).cloned();
        let fake = self.clone();
        Box::pin(async move {
            let remote = remote.ok_or_else(|| not_found("manifest", &req.reference))?;
            let mut messages: Vec<Result<images::PullResponse>> = remote
                .progress
                .iter()
                .map(|p| {
                    Ok(images::PullResponse {
                        progress: p.clone(),
                        image: None,
                    })
                })
                .collect();
            fake.add_image(remote.image.clone(), remote.blobs.clone());
            messages.push(Ok(images::PullResponse {
                progress: Vec::new(),
                image: Some(remote.image),
            }));
            Ok(futures_util::stream::iter(messages).boxed())
        })
    }

    fn push(
        &self,
        req: images::PushRequest,
    ) -> BoxFuture<'_, Result<Stream<images::PushResponse>>> {
        self.record(format!("push {} {}", req.name, req.reference));
        let found = self.lock().images.get(&req.name).cloned();
        Box::pin(async move {
            let image = found.ok_or_else(|| not_found("image", &req.name))?;
            let digest = image.target.unwrap_or_default().digest;
            let last = images::PushResponse {
                progress: Vec::new(),
                digest,
            };
            Ok(futures_util::stream::iter([Ok(last)]).boxed())
        })
    }

    fn tag_image(&self, source: &str, target: &str) -> BoxFuture<'_, Result<images::Image>> {
        self.record(format!("tag {source} {target}"));
        let mut state = self.lock();
        let result = match state.images.get(source).cloned() {
            Some(mut image) => {
                image.name = target.to_string();
                state.images.insert(target.to_string(), image.clone());
                Ok(image)
            }
            None => Err(not_found("image", source)),
        };
        Box::pin(async move { result })
    }

    fn delete_image(&self, name: &str) -> BoxFuture<'_, Result<()>> {
        self.record(format!("delete_image {name}"));
        let result = self
            .lock()
            .images
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found("image", name));
        Box::pin(async move { result })
    }

    fn import_images(
        &self,
        options: images::ImportOptions,
        data: BoxStream<'static, Bytes>,
    ) -> BoxFuture<'_, Result<Vec<images::Image>>> {
        self.record(format!("import {}", options.name));
        Box::pin(async move {
            let _: Vec<Bytes> = data.collect().await;
            let imported = std::mem::take(&mut self.lock().imported);
            for image in &imported {
                self.lock().images.insert(image.name.clone(), image.clone());
            }
            Ok(imported)
        })
    }

    fn export_images(
        &self,
        names: Vec<String>,
        _unnamed: Vec<String>,
        _format: images::ArchiveFormat,
    ) -> BoxFuture<'_, Result<Stream<Bytes>>> {
        self.record(format!("export {}", names.join(" ")));
        Box::pin(async move {
            let data = Bytes::from(names.join("\n"));
            Ok(futures_util::stream::iter([Ok(data)]).boxed())
        })
    }

    fn check_auth(&self, registry: &str, auth: images::RegistryAuth) -> BoxFuture<'_, Result<()>> {
        let accepted = self.lock().logins.get(registry).cloned();
        let registry = registry.to_string();
        Box::pin(async move {
            match accepted {
                Some((user, password)) if user == auth.username && password == auth.password => {
                    Ok(())
                }
                _ => Err(BackendError::Unauthorized(format!(
                    "registry {registry} refused the credentials"
                ))),
            }
        })
    }

    fn create_container(
        &self,
        req: containers::CreateContainerRequest,
    ) -> BoxFuture<'_, Result<containers::Container>> {
        self.record(format!("create_container {}", req.id));
        let mut state = self.lock();
        let result = if state.containers.contains_key(&req.id) {
            Err(BackendError::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )))
        } else if !state.images.contains_key(&req.image) {
            Err(not_found("image", &req.image))
        } else {
            let container = containers::Container {
                id: req.id.clone(),
                image: req.image,
                snapshot_key: req.id.clone(),
                runtime: "berth-runtime".into(),
                spec: req.spec,
                labels: req.labels,
                ..Default::default()
            };
            state.containers.insert(req.id, container.clone());
            Ok(container)
        };
        Box::pin(async move { result })
    }

    fn get_container(&self, id: &str) -> BoxFuture<'_, Result<containers::Container>> {
        let found = self
            .lock()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("container", id));
        Box::pin(async move { found })
    }

    fn update_container_spec(&self, id: &str, spec: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        let mut state = self.lock();
        let result = match state.containers.get_mut(id) {
            Some(c) => {
                c.spec = spec;
                Ok(())
            }
            None => Err(not_found("container", id)),
        };
        Box::pin(async move { result })
    }

    fn delete_container(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        self.record(format!("delete_container {id}"));
        let mut state = self.lock();
        let result = if state.tasks.contains_key(id) {
            Err(BackendError::FailedPrecondition(format!(
                "container {id} has a task"
            )))
        } else {
            state
                .containers
                .remove(id)
                .map(|_| ())
                .ok_or_else(|| not_found("container", id))
        };
        Box::pin(async move { result })
    }

    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<containers::Container>>> {
        let all = self.lock().containers.values().cloned().collect();
        Box::pin(async move { Ok(all) })
    }

    fn create_task(&self, id: &str, _opts: TaskOptions) -> BoxFuture<'_, Result<u32>> {
        self.record(format!("create_task {id}"));
        let mut state = self.lock();
        let result = if !state.containers.contains_key(id) {
            Err(not_found("container", id))
        } else if state.tasks.contains_key(id) {
            Err(BackendError::AlreadyExists(format!(
                "task {id} already exists"
            )))
        } else {
            state.next_pid += 1;
            let pid = 1000 + state.next_pid;
            let (exit, _) = watch::channel(None);
            let task = FakeTask {
                pid,
                status: tasks::Status::Created,
                exit,
            };
            state.tasks.insert(id.to_string(), task);
            Ok(pid)
        };
        Box::pin(async move { result })
    }

    fn start(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<u32>> {
        self.record(format!("start {id} {exec_id}"));
        let mut state = self.lock();
        let result = match state.tasks.get_mut(id) {
            Some(task) if task.status == tasks::Status::Created => {
                task.status = tasks::Status::Running;
                Ok(task.pid)
            }
            Some(_) => Err(BackendError::FailedPrecondition(format!(
                "task {id} started"
            ))),
            None => Err(not_found("task", id)),
        };
        Box::pin(async move { result })
    }

    fn get_task(&self, id: &str, _exec_id: &str) -> BoxFuture<'_, Result<tasks::Process>> {
        let state = self.lock();
        let result = state
            .tasks
            .get(id)
            .map(|task| tasks::Process {
                container_id: id.to_string(),
                pid: task.pid,
                status: task.status as i32,
                exit_status: task.exit.borrow().unwrap_or(0),
                ..Default::default()
            })
            .ok_or_else(|| not_found("task", id));
        Box::pin(async move { result })
    }

    fn list_tasks(&self) -> BoxFuture<'_, Result<Vec<tasks::Process>>> {
        let state = self.lock();
        let all = state
            .tasks
            .iter()
            .map(|(id, task)| tasks::Process {
                container_id: id.clone(),
                pid: task.pid,
                status: task.status as i32,
                exit_status: task.exit.borrow().unwrap_or(0),
                ..Default::default()
            })
            .collect();
        Box::pin(async move { Ok(all) })
    }

    fn kill(&self, id: &str, _exec_id: &str, signal: u32, _all: bool) -> BoxFuture<'_, Result<()>> {
        self.record(format!("kill {id} {signal}"));
        let running = self
            .lock()
            .tasks
            .get(id)
            .map(|t| t.status == tasks::Status::Running);
        let result = match running {
            Some(true) => {
                self.exit(id, 128 + signal);
                Ok(())
            }
            Some(false) => Err(BackendError::FailedPrecondition(format!(
                "task {id} not running"
            ))),
            None => Err(not_found("task", id)),
        };
        Box::pin(async move { result })
    }

    fn delete_task(&self, id: &str) -> BoxFuture<'_, Result<tasks::DeleteResponse>> {
        self.record(format!("delete_task {id}"));
        let mut state = self.lock();
        let result = match state.tasks.get(id) {
            Some(task) if task.status == tasks::Status::Running => Err(
                BackendError::FailedPrecondition(format!("task {id} is running")),
            ),
            Some(_) => {
                let task = state.tasks.remove(id);
                let status = task.and_then(|t| *t.exit.borrow()).unwrap_or(0);
                Ok(tasks::DeleteResponse {
                    id: id.to_string(),
                    exit_status: status,
                    ..Default::default()
                })
            }
            None => Err(not_found("task", id)),
        };
        Box::pin(async move { result })
    }

    fn delete_process(&self, _id: &str, _exec_id: &str) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { Ok(()) })
    }

    fn exec(&self, req: tasks::ExecProcessRequest) -> BoxFuture<'_, Result<()>> {
        self.record(format!("exec {} {}", req.container_id, req.exec_id));
        Box::pin(async move { Ok(()) })
    }

    fn resize(&self, _: &str, _: &str, _: u32, _: u32) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { Ok(()) })
    }

    fn close_stdin(&self, _: &str, _: &str) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { Ok(()) })
    }

    fn pause(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        self.set_status(id, tasks::Status::Running, tasks::Status::Paused)
    }

    fn resume(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        self.set_status(id, tasks::Status::Paused, tasks::Status::Running)
    }

    fn list_pids(&self, id: &str) -> BoxFuture<'_, Result<Vec<u32>>> {
        let pids = self
            .lock()
            .tasks
            .get(id)
            .map(|t| vec![t.pid])
            .ok_or_else(|| not_found("task", id));
        Box::pin(async move { pids })
    }

    fn update_task(&self, id: &str, _resources: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        self.record(format!("update_task {id}"));
        Box::pin(async move { Ok(()) })
    }

    fn stats(&self, id: &str) -> BoxFuture<'_, Result<tasks::StatsResponse>> {
        let found = self.lock().tasks.contains_key(id);
        let id = id.to_string();
        Box::pin(async move {
            found
                .then(tasks::StatsResponse::default)
                .ok_or_else(|| not_found("task", &id))
        })
    }

    fn wait(&self, id: &str, _exec_id: &str) -> BoxFuture<'_, Result<tasks::WaitResponse>> {
        let rx = self.lock().tasks.get(id).map(|t| t.exit.subscribe());
        let id = id.to_string();
        Box::pin(async move {
            let mut rx = rx.ok_or_else(|| not_found("task", &id))?;
            let status = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| BackendError::Unavailable("task gone".into()))?
                .unwrap_or(0);
            Ok(tasks::WaitResponse {
                exit_status: status,
                exited_at: None,
            })
        })
    }

    fn attach(&self, _id: &str, _exec_id: &str, _stdin: bool) -> BoxFuture<'_, Result<Attached>> {
        Box::pin(async move {
            let output = futures_util::stream::empty().boxed();
            Ok(Attached {
                input: None,
                output,
            })
        })
    }

    fn write_blob(&self, data: Bytes) -> BoxFuture<'_, Result<String>> {
        use sha2::Digest as _;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
        self.record(format!("write_blob {digest}"));
        self.lock().blobs.insert(digest.clone(), data);
        Box::pin(async move { Ok(digest) })
    }

    fn create_image(
        &self,
        name: &str,
        target: types::Descriptor,
    ) -> BoxFuture<'_, Result<images::Image>> {
        self.record(format!("create_image {name} {}", target.digest));
        let mut state = self.lock();
        let result = if state.blobs.contains_key(&target.digest) {
            let image = images::Image {
                name: name.to_string(),
                size: target.size,
                target: Some(target),
                ..Default::default()
            };
            state.images.insert(name.to_string(), image.clone());
            Ok(image)
        } else {
            Err(not_found("content", &target.digest))
        };
        Box::pin(async move { result })
    }

    fn prepare_snapshot(&self, key: &str, parent: &str) -> BoxFuture<'_, Result<()>> {
        self.record(format!("prepare_snapshot {key} {parent}"));
        let mut state = self.lock();
        let result = if state.snapshots.contains_key(key) {
            Err(BackendError::AlreadyExists(format!(
                "snapshot {key} already exists"
            )))
        } else if !parent.is_empty() && !state.snapshots.get(parent).is_some_and(|s| s.1) {
            Err(not_found("snapshot", parent))
        } else {
            state
                .snapshots
                .insert(key.to_string(), (parent.to_string(), false));
            Ok(())
        };
        Box::pin(async move { result })
    }

    fn snapshot_mounts(&self, key: &str) -> BoxFuture<'_, Result<Vec<types::Mount>>> {
        // The fake has no files: a known snapshot (a build's or a
        // container's) shows nothing to mount.
        let found = {
            let state = self.lock();
            state.snapshots.contains_key(key) || state.containers.contains_key(key)
        };
        let key = key.to_string();
        Box::pin(async move {
            found
                .then(Vec::new)
                .ok_or_else(|| not_found("snapshot", &key))
        })
    }

    fn commit_snapshot(&self, name: &str, key: &str) -> BoxFuture<'_, Result<()>> {
        self.record(format!("commit_snapshot {name} {key}"));
        let mut state = self.lock();
        let result = match state.snapshots.remove(key) {
            Some((parent, false)) => {
                state.snapshots.insert(name.to_string(), (parent, true));
                Ok(())
            }
            Some(committed) => {
                state.snapshots.insert(key.to_string(), committed);
                Err(BackendError::FailedPrecondition(format!(
                    "snapshot {key} is not active"
                )))
            }
            None => Err(not_found("snapshot", key)),
        };
        Box::pin(async move { result })
    }

    fn remove_snapshot(&self, key: &str) -> BoxFuture<'_, Result<()>> {
        self.record(format!("remove_snapshot {key}"));
        let mut state = self.lock();
        let result = if state.snapshots.values().any(|(parent, _)| parent == key) {
            Err(BackendError::FailedPrecondition(format!(
                "snapshot {key} is the parent of another"
            )))
        } else if state.snapshots.remove(key).is_some() {
            Ok(())
        } else {
            Err(not_found("snapshot", key))
        };
        Box::pin(async move { result })
    }

    fn diff_snapshot(
        &self,
        key: &str,
        media_type: &str,
    ) -> BoxFuture<'_, Result<(types::Descriptor, String)>> {
        use sha2::Digest as _;
        self.record(format!("diff_snapshot {key}"));
        let mut state = self.lock();
        // The fake has no files: the layer is the key's name, so each
        // snapshot gives its own blob.
        let result = if state.snapshots.contains_key(key) {
            let blob = Bytes::from(format!("layer of {key}"));
            let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob)));
            let size = blob.len() as i64;
            state.blobs.insert(digest.clone(), blob);
            let media_type = if media_type.is_empty() {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                media_type
            };
            let descriptor = types::Descriptor {
                media_type: media_type.to_string(),
                digest: digest.clone(),
                size,
                annotations: Default::default(),
            };
            Ok((descriptor, digest))
        } else {
            Err(not_found("snapshot", key))
        };
        Box::pin(async move { result })
    }

    fn changes(&self, key: &str) -> BoxFuture<'_, Result<Vec<(String, i32)>>> {
        let found = self.lock().containers.contains_key(key);
        let key = key.to_string();
        Box::pin(async move {
            found
                .then(Vec::new)
                .ok_or_else(|| not_found("snapshot", &key))
        })
    }

    fn snapshot_usage(&self, key: &str) -> BoxFuture<'_, Result<i64>> {
        let found = self.lock().containers.contains_key(key);
        let key = key.to_string();
        Box::pin(async move {
            found
                .then_some(0)
                .ok_or_else(|| not_found("snapshot", &key))
        })
    }

    fn export(&self, key: &str) -> BoxFuture<'_, Result<BoxStream<'static, Result<Bytes>>>> {
        let found = self.lock().containers.contains_key(key);
        let key = key.to_string();
        Box::pin(async move {
            if !found {
                return Err(not_found("snapshot", &key));
            }
            Ok(futures_util::stream::iter([Ok(Bytes::from_static(&[0u8; 1024]))]).boxed())
        })
    }

    fn resolve_user(&self, _key: &str, user: &str) -> BoxFuture<'_, Result<(u32, u32, Vec<u32>)>> {
        // Numbers only: the fake has no files.
        let (u, g) = user.split_once(':').unwrap_or((user, "0"));
        let parsed = u.parse().ok().zip(g.parse().ok());
        let user = user.to_string();
        Box::pin(async move {
            let (uid, gid) = parsed.ok_or_else(|| {
                BackendError::InvalidArgument(format!("unable to find user {user}"))
            })?;
            Ok((uid, gid, Vec::new()))
        })
    }

    fn subscribe(
        &self,
        _topics: Vec<String>,
        _after: Option<u64>,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<events::Envelope>>>> {
        let rx = self.events.subscribe();
        Box::pin(async move {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(event) => return Some((Ok(event), rx)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    }
                }
            });
            Ok(stream.boxed())
        })
    }
}

impl Fake {
    fn set_status(
        &self,
        id: &str,
        from: tasks::Status,
        to: tasks::Status,
    ) -> BoxFuture<'_, Result<()>> {
        let mut state = self.lock();
        let result = match state.tasks.get_mut(id) {
            Some(task) if task.status == from => {
                task.status = to;
                Ok(())
            }
            Some(_) => Err(BackendError::FailedPrecondition(format!(
                "task {id} is not {from:?}"
            ))),
            None => Err(not_found("task", id)),
        };
        Box::pin(async move { result })
    }
}

#[cfg(test)]
#[path = "fake_tests.rs"]
mod tests;
