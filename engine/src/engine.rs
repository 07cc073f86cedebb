//! [`Engine`]: the domain's parts together, what every API handler is given.

use std::sync::Arc;

use crate::backend::Supervisor;
use crate::config::Paths;
use crate::containers::{ContainerError, Containers};
use crate::events::Events;
use crate::exec::Execs;
use crate::network::{NetworkError, Networks};
use crate::state::{StateError, Store};

/// The engine: the supervisor it works through and the state it keeps.
pub struct Engine {
    pub supervisor: Arc<dyn Supervisor>,
    pub paths: Paths,
    pub events: Events,
    pub containers: Containers,
    pub execs: Execs,
    pub networks: Networks,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Containers(#[from] ContainerError),
    #[error(transparent)]
    Networks(#[from] NetworkError),
}

impl Engine {
    /// The engine over `supervisor`, with its state under `paths`.
    pub fn open(supervisor: Arc<dyn Supervisor>, paths: Paths) -> Result<Engine, EngineError> {
        let store = Arc::new(Store::open(&paths.database())?);
        let containers = Containers::load(store.clone())?;
        let networks = Networks::load(store)?;
        Ok(Engine {
            supervisor,
            paths,
            events: Events::new(),
            containers,
            execs: Execs::default(),
            networks,
        })
    }

    /// Follows the supervisor's exits and brings the records up to date
    /// with its tasks (live restore). Returns once the records are current.
    pub async fn start_monitor(self: &Arc<Self>) -> Result<(), EngineError> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(crate::containers::monitor::follow(self.clone(), ready_tx));
        let _ = ready_rx.await;
        crate::containers::monitor::recover(self).await?;
        crate::network::recover(self).await;
        Ok(())
    }
}
