//! RUN: the command runs as a container of the supervisor on a snapshot
//! prepared from the image so far, made as the engine makes a run
//! container, with the build's network and resources
//! ([`super::container`]); its output is streamed as it comes (stderr in
//! Docker's red);
//! its changes become a layer (Snapshots.Diff) and the snapshot is
//! committed under the new chain id, so the next step (and the image)
//! start from it without unpacking anything.
//!
//! The supervisor makes containers from images only, so the state before
//! the RUN is named as an image first (`build-step-<id>@<digest>`); the
//! build deletes those names when its image is named (or when it fails),
//! and the task, the container, its network and, on failure, the snapshot
//! are removed whatever happens.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::container::StepContainer;
use super::image::push_history;
use super::pipeline::{write_manifest, BuildError, Built, Output};
use crate::backend::TaskOptions;
use crate::images::names::short_id;
use crate::images::remove::chain_ids;
use crate::images::{ImageConfigFile, Layer};
use crate::types::HostConfig;
use crate::Engine;

/// The media type of the layers a build or a commit makes: uncompressed.
/// They live on this machine, where compressing costs far more than it
/// saves (gzip runs at tens of MB/s on incompressible data, the disk at
/// hundreds); dockerd and containerd keep local diffs uncompressed too. A
/// push sends them as they are, which the OCI image spec allows.
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The diff id of a layer that changes nothing (an empty tar).
const EMPTY_LAYER: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

fn diff_ids(built: &Built) -> Vec<String> {
    built.doc.top["rootfs"]["diff_ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    hex::encode(Sha256::digest(seed.as_bytes()))
}

/// What one RUN runs.
pub struct RunStep {
    /// The whole command line (the shell form already through SHELL).
    pub argv: Vec<String>,
    /// The build arguments it sees, `KEY=value`, under the image's ENV.
    pub env: Vec<String>,
    /// Its history line (`|1 A=b /bin/sh -c ...`).
    pub created_by: String,
    pub created: String,
}

/// Runs one RUN step on `built`, adding its layer; `intermediate` collects
/// the image names made on the way (for the build to delete).
pub async fn run_step(
    engine: &Engine,
    built: &mut Built,
    step: RunStep,
    hc: &HostConfig,
    out: &Output<'_>,
    intermediate: &mut Vec<String>,
) -> Result<(), BuildError> {
    let supervisor = &engine.supervisor;
    let (manifest, id) = write_manifest(engine, built).await?;
    let image = format!("build-step-{}@{}", short_id(&id), manifest.digest);
    let created = supervisor.create_image(&image, manifest).await?;
    intermediate.push(created.name.clone());

    let key = prepare(engine, built).await?;
    let doc: ImageConfigFile = serde_json::from_value(built.doc.to_value()).unwrap_or_default();
    let result = run_in(engine, &created.name, &doc, &key, &step, hc, out).await;
    let status = match result {
        Ok(status) => status,
        Err(e) => {
            let _ = supervisor.remove_snapshot(&key).await;
            return Err(e);
        }
    };
    if status != 0 {
        let _ = supervisor.remove_snapshot(&key).await;
        return Err(BuildError::RunFailed {
            command: step.argv.join(" "),
            status,
        });
    }
    commit_layer(engine, built, &key, &step.created_by, &step.created).await
}

/// Prepares an active snapshot on the layers of `built`; its key.
pub async fn prepare(engine: &Engine, built: &Built) -> Result<String, BuildError> {
    let chain = chain_ids(&diff_ids(built));
    let parent = chain.last().cloned().unwrap_or_default();
    let key = format!("build-{}", unique("snapshot"));
    engine.supervisor.prepare_snapshot(&key, &parent).await?;
    Ok(key)
}

/// Turns what the step changed in snapshot `key` into a layer of `built`
/// (the snapshot committed under its chain id) with its history line. The
/// snapshot is removed if this fails.
pub async fn commit_layer(
    engine: &Engine,
    built: &mut Built,
    key: &str,
    created_by: &str,
    created: &str,
) -> Result<(), BuildError> {
    let supervisor = &engine.supervisor;
    let (layer, diff_id) = match supervisor.diff_snapshot(key, MEDIA_LAYER).await {
        Ok(diff) => diff,
        Err(e) => {
            let _ = supervisor.remove_snapshot(key).await;
            return Err(e.into());
        }
    };
    if diff_id == EMPTY_LAYER {
        // Nothing changed: an empty layer, as Docker records it.
        let _ = supervisor.remove_snapshot(key).await;
        push_history(&mut built.doc, created, created_by, None);
        return Ok(());
    }
    let mut ids = diff_ids(built);
    ids.push(diff_id.clone());
    let name = chain_ids(&ids).pop().unwrap_or_default();
    if let Err(e) = supervisor.commit_snapshot(&name, key).await {
        // The same layer on the same parent is committed already (an
        // earlier build): that one serves.
        let _ = supervisor.remove_snapshot(key).await;
        if !matches!(e, crate::backend::BackendError::AlreadyExists(_)) {
            return Err(e.into());
        }
    }
    built.layers.push(Layer {
        media_type: layer.media_type,
        digest: layer.digest,
        size: layer.size,
    });
    push_history(&mut built.doc, created, created_by, Some(&diff_id));
    Ok(())
}

/// The container and its task: the exit status. Both are removed before
/// this returns, and the container's network with them.
async fn run_in(
    engine: &Engine,
    image: &str,
    doc: &ImageConfigFile,
    key: &str,
    step: &RunStep,
    hc: &HostConfig,
    out: &Output<'_>,
) -> Result<u32, BuildError> {
    let supervisor = &engine.supervisor;
    let id = unique("container");
    let container =
        StepContainer::create(engine, &id, image, doc, key, &step.argv, &step.env, hc).await?;
    let ran = async {
        out.say(format!(" ---> Running in {}\n", short_id(&id)))
            .await?;
        container.attach_network(engine).await?;
        supervisor
            .create_task(
                &id,
                TaskOptions {
                    no_log: true,
                    ..Default::default()
                },
            )
            .await?;
        let mut output = supervisor.attach(&id, "", false).await?.output;
        supervisor.start(&id, "").await?;
        while let Some(chunk) = output.next().await {
            let Ok((stream, bytes)) = chunk else { break };
            let text = String::from_utf8_lossy(&bytes);
            // Docker shows a step's stderr in red.
            let text = match stream {
                2 => format!("\x1b[91m{text}\x1b[0m"),
                _ => text.into_owned(),
            };
            out.say(text).await?;
        }
        let exit = supervisor.wait(&id, "").await?;
        Ok::<u32, BuildError>(exit.exit_status)
    }
    .await;
    if ran.is_err() {
        let _ = supervisor.kill(&id, "", 9, true).await;
        let _ = supervisor.wait(&id, "").await;
    }
    let _ = supervisor.delete_task(&id).await;
    container.remove(engine).await;
    if ran.is_ok() {
        out.say(format!(
            "Removing intermediate container {}\n",
            short_id(&id)
        ))
        .await?;
    }
    ran
}
