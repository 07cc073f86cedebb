//! `POST /commit`: a container's changes as a new image. The container's
//! snapshot is diffed into a layer (the task paused meanwhile when asked),
//! the image config is the container's config with the `changes`
//! (Dockerfile instructions: `CMD ["x"]`, `ENV A=b`, ...) applied over its
//! image's document, and the image is named by `repo:tag` (or, unnamed, by
//! its digest) through Images.Create, which unpacks the new layer.

use std::sync::Arc;

use serde_json::{json, Value};

use super::image::{push_history, ImageDoc};
use super::pipeline::{write_manifest, Built};
use crate::backend::BackendError;
use crate::containers::record::Status;
use crate::containers::ContainerError;
use crate::images::names::short_id;
use crate::images::{ImageError, Layer};
use crate::Engine;

/// The diff id of a layer that changes nothing (an empty tar).
const EMPTY_LAYER: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// What `POST /commit` asks for.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub container: String,
    pub repo: String,
    pub tag: String,
    pub comment: String,
    pub author: String,
    pub changes: Vec<String>,
    pub pause: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Build(#[from] super::pipeline::BuildError),
    #[error("commit: {0}")]
    Backend(#[from] BackendError),
}

/// Pauses the container's task for the diff, as dockerd does by default:
/// whether it was paused. A task that exited since its state was read (a
/// short command: `docker commit` right after `docker start`) has nothing
/// to pause, and the commit goes on without.
async fn pause_task(engine: &Engine, id: &str) -> Result<bool, CommitError> {
    match engine.supervisor.pause(id).await {
        Ok(()) => Ok(true),
        Err(BackendError::NotFound(_) | BackendError::FailedPrecondition(_)) => {
            tracing::debug!(container = id, "commit: the task exited before its pause");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Commits the container; the new image's id.
pub async fn commit(engine: &Arc<Engine>, opts: &CommitOptions) -> Result<String, CommitError> {
    let container = engine.containers.get(&opts.container)?;
    let record = container.record();
    let name = match (opts.repo.as_str(), opts.tag.as_str()) {
        ("", _) => None,
        (repo, "") => Some(crate::images::names::normalize(repo).map_err(ImageError::from)?),
        (repo, tag) => Some(
            crate::images::names::normalize(&format!("{repo}:{tag}")).map_err(ImageError::from)?,
        ),
    };
    let image = crate::images::resolve(engine, &record.image_id).await?;
    let raw = engine.supervisor.read_blob(&image.id).await?;
    let mut built = Built {
        doc: ImageDoc::from_value(serde_json::from_slice(&raw).unwrap_or(Value::Null)),
        layers: image.layers.clone(),
    };
    let mut config = serde_json::to_value(&record.config).unwrap_or_else(|_| json!({}));
    for change in &opts.changes {
        crate::images::archive::apply_change(&mut config, change)?;
    }
    if let Value::Object(map) = &mut config {
        map.insert("Image".into(), json!(image.id));
        built.doc.config = map.clone();
    }
    // No pause, unpause or start meanwhile: the commit holds the
    // container's operations.
    let _op = container.op.lock().await;
    let paused = opts.pause
        && container.status() == Status::Running
        && pause_task(engine, &record.id).await?;
    let diff = engine
        .supervisor
        .diff_snapshot(&record.id, super::run::MEDIA_LAYER)
        .await;
    if paused {
        // Resumed whatever the diff's end.
        if let Err(e) = engine.supervisor.resume(&record.id).await {
            tracing::warn!(container = %record.id, error = %e, "resume after commit");
        }
    }
    let (layer, diff_id) = diff?;
    if !opts.author.is_empty() {
        built.doc.top.insert("author".into(), json!(opts.author));
    }
    if !opts.comment.is_empty() {
        built.doc.top.insert("comment".into(), json!(opts.comment));
    }
    built.doc.top.insert("container".into(), json!(record.id));
    let created = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let created_by = {
        let mut line = vec![record.path.clone()];
        line.extend(record.args.iter().cloned());
        line.retain(|s| !s.is_empty());
        line.join(" ")
    };
    let layer_diff = (diff_id != EMPTY_LAYER).then_some(diff_id.as_str());
    if layer_diff.is_some() {
        built.layers.push(Layer {
            media_type: layer.media_type,
            digest: layer.digest,
            size: layer.size,
        });
    }
    push_history(&mut built.doc, &created, &created_by, layer_diff);
    if !opts.comment.is_empty() {
        if let Some(Value::Array(history)) = built.doc.top.get_mut("history") {
            if let Some(Value::Object(last)) = history.last_mut() {
                last.insert("comment".into(), json!(opts.comment));
            }
        }
    }
    let (target, id) = write_manifest(engine, &built).await?;
    let name = name.unwrap_or_else(|| format!("commit-{}@{}", short_id(&id), target.digest));
    engine.supervisor.create_image(&name, target).await?;
    if let Err(e) = engine.build_cache.set_parent(&id, &image.id) {
        tracing::warn!(image = %id, error = %e, "record a committed image's parent");
    }
    Ok(id)
}
