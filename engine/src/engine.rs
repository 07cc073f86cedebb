//! [`Engine`]: the domain's parts together, what every API handler is given.

use std::sync::Arc;

use crate::backend::Supervisor;
use crate::config::Paths;
use crate::events::Events;

/// The engine: the supervisor it works through and the state it keeps.
pub struct Engine {
    pub supervisor: Arc<dyn Supervisor>,
    pub paths: Paths,
    pub events: Events,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("open the engine's state: {0}")]
    Open(String),
}

impl Engine {
    /// The engine over `supervisor`, with its state under `paths`.
    pub async fn open(
        supervisor: Arc<dyn Supervisor>,
        paths: Paths,
    ) -> Result<Engine, EngineError> {
        Ok(Engine {
            supervisor,
            paths,
            events: Events::new(),
        })
    }
}
