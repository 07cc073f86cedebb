//! [`Engine`]: the domain's parts together, what every API handler is given.

use std::sync::Arc;

use crate::backend::Supervisor;
use crate::config::Paths;
use crate::containers::{ContainerError, Containers};
use crate::events::Events;
use crate::exec::Execs;
use crate::network::{NetworkError, Networks};
use crate::state::{StateError, Store};
use crate::volumes::{VolumeError, Volumes};

/// The engine: the supervisor it works through and the state it keeps.
pub struct Engine {
    pub supervisor: Arc<dyn Supervisor>,
    pub paths: Paths,
    pub events: Events,
    pub containers: Containers,
    pub execs: Execs,
    pub networks: Networks,
    pub volumes: Volumes,
    /// The engine itself, for tasks that outlive a request (restarts by
    /// policy, health probes); set by [`Engine::start_monitor`].
    this: std::sync::OnceLock<std::sync::Weak<Engine>>,
    pub build_cache: crate::build::cache::BuildCache,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Containers(#[from] ContainerError),
    #[error(transparent)]
    Volumes(#[from] VolumeError),
    #[error(transparent)]
    Networks(#[from] NetworkError),
}

impl Engine {
    /// The engine over `supervisor`, with its state under `paths`.
    pub fn open(supervisor: Arc<dyn Supervisor>, paths: Paths) -> Result<Engine, EngineError> {
        let store = Arc::new(Store::open(&paths.database())?);
        let build_cache = crate::build::cache::BuildCache::new(Arc::clone(&store));
        let containers = Containers::load(store.clone())?;
        let claims = containers.all().into_iter().map(|c| {
            let r = c.record();
            (r.id, crate::volumes::mounts::volume_names(&r.mount_points))
        });
        let networks = Networks::load(store.clone())?;
        let volumes = Volumes::load(store, paths.engine_dir().join("volumes"), claims)?;
        Ok(Engine {
            supervisor,
            paths,
            events: Events::new(),
            containers,
            execs: Execs::default(),
            networks,
            volumes,
            this: std::sync::OnceLock::new(),
            build_cache,
        })
    }

    /// Follows the supervisor's exits and brings the records up to date
    /// with its tasks (live restore). Returns once the records are current.
    pub async fn start_monitor(self: &Arc<Self>) -> Result<(), EngineError> {
        let _ = self.this.set(Arc::downgrade(self));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(crate::containers::monitor::follow(self.clone(), ready_tx));
        let _ = ready_rx.await;
        crate::containers::monitor::recover(self).await?;
        crate::network::recover(self).await;
        crate::volumes::mounts::restore(self);
        crate::containers::restart::start_at_boot(self).await;
        Ok(())
    }

    /// The engine as an `Arc`, once its monitor runs.
    pub fn arc(&self) -> Option<Arc<Engine>> {
        self.this.get().and_then(std::sync::Weak::upgrade)
    }
}
