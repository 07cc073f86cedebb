//! What the supervisor is given to make a container's OCI spec from: the
//! image config with Docker's process settings as overrides.

use berth_proto::containers::v1 as pb;

use super::record::ContainerRecord;
use super::Result;
use crate::Engine;

/// A whole spec (JSON), or overrides of the supervisor's own.
pub struct SpecRequest {
    pub spec: Vec<u8>,
    pub overrides: Option<pb::Overrides>,
}

pub async fn container_spec(_engine: &Engine, record: &ContainerRecord) -> Result<SpecRequest> {
    let config = &record.config;
    let mut args = vec![record.path.clone()];
    args.extend(record.args.iter().cloned());
    let mut env = config.env.clone().unwrap_or_default();
    env.push(format!("HOSTNAME={}", config.hostname));
    if config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let overrides = pb::Overrides {
        args,
        env,
        cwd: config.working_dir.clone(),
        user: config.user.clone(),
        terminal: config.tty,
        hostname: config.hostname.clone(),
        memory_limit: record.host_config.memory,
    };
    Ok(SpecRequest {
        spec: Vec::new(),
        overrides: Some(overrides),
    })
}
