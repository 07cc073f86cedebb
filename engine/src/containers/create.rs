//! `POST /containers/create`: a name, the image's config merged into the
//! client's as Docker merges it, the container's directory (log, generated
//! /etc files), the supervisor's container (spec and snapshot), and the
//! record, written last; on any failure what was made is undone.

use berth_client::trace::{self, Layer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use berth_proto::containers::v1 as pb;

use super::record::{ContainerRecord, RunState};
use super::{Container, ContainerError, Result};
use crate::events::Kind;
use crate::images;
use crate::names;
use crate::types::CreateRequest;
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
    let span = trace::span(Layer::Engine, "image resolved");
    let image = images::resolve(engine, &req.config.image).await?;
    drop(span);
    let span = trace::span(Layer::Engine, "config merged, volumes prepared");
    let config = super::spec::merge_image_config(&req.config, &image.config.config)?;
    let argv = super::spec::process::command(&config);
    validate_host_config(&req)?;
    let config_user = config.user.clone();
    let group_add_numbers: Vec<u32> = req
        .host_config
        .group_add
        .iter()
        .flatten()
        .filter_map(|g| g.parse().ok())
        .collect();
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
        user: super::runspec::provisional_user(&config_user),
        group_add: group_add_numbers,
        mount_points: Vec::new(),
    };
    if record.config.hostname.is_empty()
        && !record.host_config.network_mode.starts_with("container:")
    {
        record.config.hostname = id[..12].to_string();
    }
    if record.host_config.network_mode.is_empty() {
        record.host_config.network_mode = "default".into();
    }
    if record.host_config.runtime.is_empty() {
        // berth-runtime answers to runc's name, as dockerd's default.
        record.host_config.runtime = "runc".into();
    }
    if record.host_config.log_config.kind.is_empty() {
        record.host_config.log_config.kind = "json-file".into();
    }
    crate::network::check_create(engine, &mut record)
        .map_err(|e| ContainerError::Network(Box::new(e)))?;

    let volumes = crate::volumes::mounts::prepare(engine, &record)?;
    record.mount_points = volumes.points.clone();
    let dir = engine.paths.container_dir(id);
    if let Err(source) = std::fs::create_dir_all(&dir) {
        volumes.undo(engine, id);
        return Err(ContainerError::Io {
            what: "create directory",
            path: dir.clone(),
            source,
        });
    }
    drop(span);
    let made = async {
        let span = trace::span(Layer::Engine, "OCI spec built");
        let spec = super::runspec::container_spec(engine, &record, &image)?;
        drop(span);
        let labels = std::collections::HashMap::from([(NAME_LABEL.to_string(), name.to_string())]);
        let request = pb::CreateContainerRequest {
            id: id.to_string(),
            image: image.name.clone(),
            labels,
            spec,
            ..Default::default()
        };
        engine
            .supervisor
            .create_container(request)
            .await
            .map_err(ContainerError::backend(format!("create container {id}")))?;
        if let Err(e) = crate::volumes::mounts::copy_up(engine, id, &record.mount_points).await {
            let _ = engine.supervisor.delete_container(id).await;
            return Err(e);
        }
        // A user or group by name: resolved in the container's own files,
        // and the spec made again with the numbers.
        if super::runspec::needs_resolution(&record) {
            let resolved = async {
                let (user, groups) = super::runspec::resolve_user(engine, &record).await?;
                record.user = user;
                record.group_add = groups;
                let spec = super::runspec::container_spec(engine, &record, &image)?;
                engine
                    .supervisor
                    .update_container_spec(id, spec)
                    .await
                    .map_err(ContainerError::backend(format!("create container {id}")))
            }
            .await;
            if let Err(e) = resolved {
                let _ = engine.supervisor.delete_container(id).await;
                return Err(e);
            }
        }
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
            volumes.undo(engine, id);
            Err(e)
        }
    }
}

/// Checks what a spec cannot say wrong later.
fn validate_host_config(req: &CreateRequest) -> Result<()> {
    let hc = &req.host_config;
    super::restart::validate(&hc.restart_policy)?;
    super::health::validate(req.config.healthcheck.as_ref())?;
    if hc.auto_remove && !matches!(hc.restart_policy.name.as_str(), "" | "no") {
        return Err(ContainerError::InvalidConfig(
            "can't create 'AutoRemove' container with restart policy".into(),
        ));
    }
    for (key, value) in &hc.log_config.config {
        match key.as_str() {
            "max-size" if super::lifecycle::parse_size(value).is_none_or(|n| n == 0) => {
                return Err(ContainerError::InvalidConfig(format!(
                    "failed to create logger: invalid max-size: {value:?}"
                )));
            }
            "max-file" if value.parse::<u32>().is_ok_and(|n| n >= 1) => {}
            "max-file" => {
                return Err(ContainerError::InvalidConfig(format!(
                    "failed to create logger: max-file must be a number of 1 or more: {value:?}"
                )));
            }
            "max-size" | "compress" | "labels" | "labels-regex" | "env" | "env-regex" | "tag"
            | "mode" | "max-buffer-size" => {}
            other => {
                return Err(ContainerError::InvalidConfig(format!(
                    "failed to create logger: unknown log opt '{other}' for {} log driver",
                    if hc.log_config.kind.is_empty() {
                        "json-file"
                    } else {
                        hc.log_config.kind.as_str()
                    }
                )));
            }
        }
    }
    match hc.log_config.kind.as_str() {
        "" | "json-file" | "none" | "local" => {}
        other => {
            return Err(ContainerError::InvalidConfig(format!(
                "logger: no log driver named '{other}' is registered"
            )))
        }
    }
    Ok(())
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
