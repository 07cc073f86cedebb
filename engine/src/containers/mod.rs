//! Containers: Docker's create, start, stop, kill, wait, remove, inspect,
//! list, logs and attach, on the supervisor's containers and tasks. The
//! engine keeps each container's Docker-level record (name, config, state)
//! in its database; the supervisor holds the OCI side (spec, snapshot,
//! task).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::backend::BackendError;
use crate::images::ImageError;
use crate::names::NameError;
use crate::state::{StateError, Store, Table};

pub mod attach;
pub mod changes;
pub mod create;
pub mod health;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod monitor;
pub mod record;
pub mod restart;
pub mod runspec;
pub mod spec;
pub mod stats;
pub mod update;

pub use record::{ContainerRecord, RunState, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple IDs found with provided prefix: {0}")]
    Ambiguous(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("container {0} is already stopped")]
    AlreadyStopped(String),
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("Container {0} is paused, unpause the container before stopping or killing")]
    Paused(String),
    #[error("Container {0} is not paused")]
    NotPaused(String),
    #[error("cannot remove container \"/{0}\": container is running: stop the container before removing or force remove")]
    RemoveRunning(String),
    #[error("removal of container {0} is already in progress")]
    RemovalInProgress(String),
    #[error("failed to create task for container {id}: {source}")]
    StartFailed { id: String, source: BackendError },
    #[error("configured logging driver does not support reading")]
    LogsUnsupported,
    #[error("Invalid signal: {0}")]
    InvalidSignal(String),
    #[error("{what}: {source}")]
    Backend { what: String, source: BackendError },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Network(Box<crate::network::NetworkError>),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ContainerError {
    pub fn backend(what: impl Into<String>) -> impl FnOnce(BackendError) -> ContainerError {
        let what = what.into();
        move |source| ContainerError::Backend { what, source }
    }
}

pub type Result<T> = std::result::Result<T, ContainerError>;

/// One container: its record, and who is watching it.
pub struct Container {
    pub id: String,
    record: Mutex<ContainerRecord>,
    /// Bumped on every state change; waiters watch it.
    changes: watch::Sender<u64>,
    /// Attach sessions reading the running task's output.
    attached: AtomicUsize,
    /// Exits seen since the engine started (for `wait?condition=next-exit`).
    exits: std::sync::atomic::AtomicU64,
    /// Set once the container is removed.
    removed: std::sync::atomic::AtomicBool,
    /// Whether its removal takes its anonymous volumes (`rm -v`).
    pub(crate) remove_volumes: std::sync::atomic::AtomicBool,
    /// Clients attached before the next start.
    pub(crate) pending: attach::Pending,
    /// One start, exit, remove, rename or update at a time.
    pub(crate) op: tokio::sync::Mutex<()>,
    /// Its restart policy's back-off and cancellation.
    pub(crate) restart: restart::Manager,
    /// Its health probes while it runs.
    pub(crate) health: health::Prober,
}

impl Container {
    fn new(record: ContainerRecord) -> Container {
        Container {
            id: record.id.clone(),
            record: Mutex::new(record),
            changes: watch::channel(0).0,
            attached: AtomicUsize::new(0),
            exits: std::sync::atomic::AtomicU64::new(0),
            removed: std::sync::atomic::AtomicBool::new(false),
            remove_volumes: std::sync::atomic::AtomicBool::new(false),
            pending: attach::Pending::default(),
            op: tokio::sync::Mutex::new(()),
            restart: restart::Manager::default(),
            health: health::Prober::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ContainerRecord> {
        // Nothing panics while holding it; a poisoned record is still whole.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the record.
    pub fn record(&self) -> ContainerRecord {
        self.lock().clone()
    }

    pub fn name(&self) -> String {
        self.lock().name.clone()
    }

    pub fn status(&self) -> Status {
        self.lock().state.status
    }

    /// Changes the record, then tells watchers. The caller persists it.
    pub fn update<T>(&self, f: impl FnOnce(&mut ContainerRecord) -> T) -> T {
        let out = f(&mut self.lock());
        self.changes.send_modify(|n| *n += 1);
        out
    }

    /// A receiver that sees every later change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Counts an attach session while the guard lives.
    pub fn attach_guard(self: &Arc<Self>) -> AttachGuard {
        self.attached.fetch_add(1, Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
        AttachGuard {
            container: self.clone(),
        }
    }

    pub fn attached(&self) -> usize {
        self.attached.load(Ordering::SeqCst)
    }

    pub fn exits(&self) -> u64 {
        self.exits.load(Ordering::SeqCst)
    }

    /// Counts an exit and tells watchers.
    pub fn note_exit(&self) {
        self.exits.fetch_add(1, Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
        self.changes.send_modify(|n| *n += 1);
    }
}

/// See [`Container::attach_guard`].
pub struct AttachGuard {
    container: Arc<Container>,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        self.container.attached.fetch_sub(1, Ordering::SeqCst);
        self.container.changes.send_modify(|n| *n += 1);
    }
}

/// Every container of the engine, by id, with the name index.
pub struct Containers {
    store: Arc<Store>,
    inner: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    by_id: BTreeMap<String, Arc<Container>>,
    /// Name (without `/`) to id; names being created are reserved here too.
    names: BTreeMap<String, String>,
}

impl Containers {
    /// The containers recorded in `store`.
    pub fn load(store: Arc<Store>) -> Result<Containers> {
        let mut index = Index::default();
        for (id, record) in store.list::<ContainerRecord>(Table::Containers)? {
            index.names.insert(record.name.clone(), id.clone());
            index.by_id.insert(id, Arc::new(Container::new(record)));
        }
        Ok(Containers {
            store,
            inner: Mutex::new(index),
        })
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container an id, a name or a unique id prefix names.
    pub fn get(&self, key: &str) -> Result<Arc<Container>> {
        let index = self.index();
        if let Some(c) = index.by_id.get(key) {
            return Ok(c.clone());
        }
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = index.names.get(name).and_then(|id| index.by_id.get(id)) {
            return Ok(c.clone());
        }
        if key.is_empty() {
            return Err(ContainerError::NotFound(key.to_string()));
        }
        let mut found = index
            .by_id
            .range(key.to_string()..)
            .take_while(|(id, _)| id.starts_with(key));
        match (found.next(), found.next()) {
            (Some((_, c)), None) => Ok(c.clone()),
            (Some(_), Some(_)) => Err(ContainerError::Ambiguous(key.to_string())),
            (None, _) => Err(ContainerError::NotFound(key.to_string())),
        }
    }

    /// Every container, newest first.
    pub fn all(&self) -> Vec<Arc<Container>> {
        let mut all: Vec<_> = self.index().by_id.values().cloned().collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.lock().created));
        all
    }

    /// Reserves a name for a container being created or renamed.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let mut index = self.index();
        match index.names.get(name) {
            Some(owner) if owner != id => Err(ContainerError::NameInUse {
                name: name.to_string(),
                id: owner.clone(),
            }),
            _ => {
                index.names.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    /// Frees a name (if `id` holds it).
    pub fn release_name(&self, name: &str, id: &str) {
        let mut index = self.index();
        if index.names.get(name).is_some_and(|owner| owner == id) {
            index.names.remove(name);
        }
    }

    /// Records a new container durably and makes it visible.
    pub fn insert(&self, record: ContainerRecord) -> Result<Arc<Container>> {
        self.store.put(Table::Containers, &record.id, &record)?;
        let container = Arc::new(Container::new(record));
        self.index()
            .by_id
            .insert(container.id.clone(), container.clone());
        Ok(container)
    }

    /// Writes a container's record durably.
    pub fn persist(&self, container: &Container) -> Result<()> {
        let record = container.record();
        self.store.put(Table::Containers, &record.id, &record)?;
        Ok(())
    }

    /// Forgets a container: its record and its name.
    pub fn forget(&self, container: &Container) -> Result<()> {
        self.store.delete(Table::Containers, &container.id)?;
        let name = container.name();
        let mut index = self.index();
        index.by_id.remove(&container.id);
        if index
            .names
            .get(&name)
            .is_some_and(|owner| *owner == container.id)
        {
            index.names.remove(&name);
        }
        drop(index);
        container.mark_removed();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
