//! `POST /containers/create`: a name, the image's config merged into the
//! client's as Docker merges it, the container's directory (log, generated
//! /etc files), the supervisor's container (spec and snapshot), and the
//! record, written last; on any failure what was made is undone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use berth_proto::containers::v1 as pb;

use super::record::{ContainerRecord, RunState};
use super::{Container, ContainerError, Result};
use crate::events::Kind;
use crate::images::{self, Image};
use crate::names;
use crate::types::{ContainerConfig, CreateRequest};
use crate::Engine;

/// The label the supervisor's container carries with the Docker name.
pub const NAME_LABEL: &str = "berth.engine/name";

/// Creates a container; its id.
pub async fn create(
    engine: &Engine,
    name: Option<&str>,
    req: CreateRequest,
) -> Result<Arc<Container>> {
    let id = names::new_id();
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => {
            let n = names::validate(n)?;
            engine.containers.reserve_name(&n, &id)?;
            n
        }
        None => reserve_random_name(engine, &id)?,
    };
    let result = create_reserved(engine, &id, &name, req).await;
    if result.is_err() {
        engine.containers.release_name(&name, &id);
    }
    result
}

fn reserve_random_name(engine: &Engine, id: &str) -> Result<String> {
    let mut retry = 0;
    loop {
        let name = names::random_name(retry);
        match engine.containers.reserve_name(&name, id) {
            Ok(()) => return Ok(name),
            Err(ContainerError::NameInUse { .. }) if retry < 10 => retry += 1,
            Err(e) => return Err(e),
        }
    }
}

async fn create_reserved(
    engine: &Engine,
    id: &str,
    name: &str,
    req: CreateRequest,
) -> Result<Arc<Container>> {
    if req.config.image.is_empty() {
        return Err(ContainerError::InvalidConfig(
            "config cannot be empty in order to create a container".into(),
        ));
    }
    let image = images::resolve(engine, &req.config.image).await?;
    let config = merge_config(req.config.clone(), &image);
    let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    argv.extend(config.cmd.clone().unwrap_or_default());
    if argv.is_empty() {
        return Err(ContainerError::InvalidConfig("No command specified".into()));
    }
    validate_host_config(&req)?;
    let mut record = ContainerRecord {
        id: id.to_string(),
        name: name.to_string(),
        created: SystemTime::now(),
        image: req.config.image.clone(),
        image_id: image.id.clone(),
        image_ref: image.name.clone(),
        config,
        host_config: req.host_config,
        networking_config: req.networking_config,
        path: argv[0].clone(),
        args: argv[1..].to_vec(),
        state: RunState::default(),
        restart_count: 0,
    };
    if record.config.hostname.is_empty() {
        record.config.hostname = id[..12].to_string();
    }
    if record.host_config.network_mode.is_empty() {
        record.host_config.network_mode = "default".into();
    }
    if record.host_config.log_config.kind.is_empty() {
        record.host_config.log_config.kind = "json-file".into();
    }

    let dir = engine.paths.container_dir(id);
    std::fs::create_dir_all(&dir).map_err(|source| ContainerError::Io {
        what: "create directory",
        path: dir.clone(),
        source,
    })?;
    let made = async {
        let spec = super::runspec::container_spec(engine, &record).await?;
        let labels = std::collections::HashMap::from([(NAME_LABEL.to_string(), name.to_string())]);
        let request = pb::CreateContainerRequest {
            id: id.to_string(),
            image: image.name.clone(),
            labels,
            spec: spec.spec,
            overrides: spec.overrides,
            ..Default::default()
        };
        engine
            .supervisor
            .create_container(request)
            .await
            .map_err(ContainerError::backend(format!("create container {id}")))?;
        match engine.containers.insert(record) {
            Ok(c) => Ok(c),
            Err(e) => {
                let _ = engine.supervisor.delete_container(id).await;
                Err(e)
            }
        }
    }
    .await;
    match made {
        Ok(container) => {
            tracing::info!(container = %id, name, image = %image.name, "container created");
            emit(engine, &container, "create");
            Ok(container)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// Checks what a spec cannot say wrong later.
fn validate_host_config(req: &CreateRequest) -> Result<()> {
    let hc = &req.host_config;
    match hc.restart_policy.name.as_str() {
        "" | "no" | "always" | "unless-stopped" | "on-failure" => {}
        other => {
            return Err(ContainerError::InvalidConfig(format!(
                "invalid restart policy '{other}'"
            )))
        }
    }
    if hc.restart_policy.maximum_retry_count < 0 {
        return Err(ContainerError::InvalidConfig(
            "invalid restart policy: maximum retry count cannot be negative".into(),
        ));
    }
    if hc.auto_remove && !matches!(hc.restart_policy.name.as_str(), "" | "no") {
        return Err(ContainerError::InvalidConfig(
            "can't create 'AutoRemove' container with restart policy".into(),
        ));
    }
    match hc.log_config.kind.as_str() {
        "" | "json-file" | "none" | "local" => {}
        other => {
            return Err(ContainerError::InvalidConfig(format!(
                "failed to create logger: logger: no log driver named '{other}' is registered"
            )))
        }
    }
    Ok(())
}

/// The image's config under the client's, as Docker merges them.
pub fn merge_config(mut user: ContainerConfig, image: &Image) -> ContainerConfig {
    let img = &image.config.config;
    if user.user.is_empty() {
        user.user = img.user.clone();
    }
    if let Some(ports) = &img.exposed_ports {
        let mine = user.exposed_ports.get_or_insert_with(BTreeMap::new);
        for (k, v) in ports {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(image_env) = &img.env {
        let env = user.env.get_or_insert_with(Vec::new);
        for entry in image_env {
            let key = entry.split('=').next().unwrap_or(entry);
            let set = env.iter().any(|e| e.split('=').next().unwrap_or(e) == key);
            if !set {
                env.push(entry.clone());
            }
        }
    }
    if let Some(image_labels) = &img.labels {
        let labels = user.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in image_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    // `--entrypoint ""` arrives as [""]: no entrypoint at all, not the image's.
    let reset_entrypoint = user
        .entrypoint
        .as_ref()
        .is_some_and(|e| e.len() == 1 && e[0].is_empty());
    if reset_entrypoint {
        user.entrypoint = Some(Vec::new());
    }
    if user.entrypoint.as_ref().is_none_or(Vec::is_empty) {
        if user.cmd.as_ref().is_none_or(Vec::is_empty) {
            user.cmd = img.cmd.clone();
        }
        if user.entrypoint.is_none() {
            user.entrypoint = img.entrypoint.clone();
        }
    }
    if user.working_dir.is_empty() {
        user.working_dir = img.working_dir.clone();
    }
    if let Some(vols) = &img.volumes {
        let mine = user.volumes.get_or_insert_with(BTreeMap::new);
        for (k, v) in vols {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if user.stop_signal.is_none() {
        user.stop_signal = img.stop_signal.clone();
    }
    if user.healthcheck.is_none() {
        user.healthcheck = img.healthcheck.clone();
    }
    if user.on_build.is_none() {
        user.on_build = img.on_build.clone();
    }
    if user.shell.is_none() {
        user.shell = img.shell.clone();
    }
    user
}

/// Emits a container event with Docker's attributes (image, name, labels).
pub fn emit(engine: &Engine, container: &Container, action: &str) {
    emit_with(engine, container, action, BTreeMap::new());
}

pub fn emit_with(
    engine: &Engine,
    container: &Container,
    action: &str,
    extra: BTreeMap<String, String>,
) {
    let record = container.record();
    let mut attributes = record.config.labels.clone().unwrap_or_default();
    attributes.insert("image".into(), record.image.clone());
    attributes.insert("name".into(), record.name.clone());
    attributes.extend(extra);
    engine
        .events
        .emit(Kind::Container, action, &container.id, attributes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageConfigFile;

    fn image(cfg: ContainerConfig) -> Image {
        Image {
            name: "docker.io/library/x:latest".into(),
            id: "sha256:abc".into(),
            target_digest: "sha256:def".into(),
            config: ImageConfigFile {
                config: cfg,
                ..Default::default()
            },
        }
    }

    #[test]
    fn merges_as_docker_does() {
        let img = image(ContainerConfig {
            env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
            cmd: Some(vec!["sh".into()]),
            entrypoint: None,
            working_dir: "/w".into(),
            user: "1:1".into(),
            ..Default::default()
        });
        let user = ContainerConfig {
            env: Some(vec!["A=mine".into()]),
            ..Default::default()
        };
        let merged = merge_config(user, &img);
        assert_eq!(merged.env, Some(vec!["A=mine".into(), "PATH=/bin".into()]));
        assert_eq!(merged.cmd, Some(vec!["sh".into()]));
        assert_eq!(merged.working_dir, "/w");
        assert_eq!(merged.user, "1:1");

        // An entrypoint of the client's drops the image's Cmd.
        let img = image(ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        });
        let user = ContainerConfig {
            entrypoint: Some(vec!["echo".into()]),
            ..Default::default()
        };
        let merged = merge_config(user, &img);
        assert_eq!(merged.cmd, None);
        assert_eq!(merged.entrypoint, Some(vec!["echo".into()]));

        // `--entrypoint ""` keeps neither entrypoint, and takes the image's Cmd.
        let img = image(ContainerConfig {
            entrypoint: Some(vec!["/init".into()]),
            cmd: Some(vec!["x".into()]),
            ..Default::default()
        });
        let user = ContainerConfig {
            entrypoint: Some(vec![String::new()]),
            ..Default::default()
        };
        let merged = merge_config(user, &img);
        assert_eq!(merged.entrypoint, Some(vec![]));
        assert_eq!(merged.cmd, Some(vec!["x".into()]));
    }
}
