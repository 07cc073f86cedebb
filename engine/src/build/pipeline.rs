//! One build: the Dockerfile read from the context, the stages the target
//! needs, each step applied in order, and the image written: its config
//! and an OCI manifest into the content store, named by Images.Create
//! (once per tag). The output is Docker's JSON-lines messages (`Step N/M
//! : ...`, ` ---> <id>`, `Successfully built`, `Successfully tagged`) sent
//! as they happen.
//!
//! The stages are built by [`super::stage`] (independent ones at once);
//! FROM is an image (pulled if missing or with `pull`, with the
//! `X-Registry-Config` credentials of its registry), a previous stage, or
//! `scratch`. The whole build runs under a lease of the supervisor's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::args::{unused, StageArgs};
use super::context::{resolve_in_scope, ContextError};
use super::dockerfile::instructions::Instruction;
use super::dockerfile::shell::ShellError;
use super::dockerfile::{self, ParseError};
use super::image::{ImageConfigError, ImageDoc};
use crate::backend::BackendError;
use crate::images::names::{familiar, short_id};
use crate::images::transfer::{Message, PullOptions};
use crate::images::{ImageError, Layer};
use crate::Engine;

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// How long a build's lease outlives a daemon that died mid-build.
const LEASE_SECONDS: i64 = 24 * 3600;

/// What `POST /build` asks for.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path in the context.
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub quiet: bool,
    /// Pull base images even when they are present.
    pub pull: bool,
    /// Run every step, the cache unread (it is still written).
    pub no_cache: bool,
    /// Images whose history steps may be taken from (`--cache-from`).
    pub cache_from: Vec<String>,
    pub auth: Option<crate::images::auth::AuthConfig>,
    /// `X-Registry-Config`: credentials per registry for base images.
    pub registries: crate::images::auth::RegistryConfig,
    /// How RUN containers run: the network mode, extra hosts, shm size and
    /// resources (`build::container::host_config`).
    pub host_config: crate::types::HostConfig,
    /// The `platform` query: the platform of base images a FROM does not
    /// name one for.
    pub platform: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("Cannot locate specified Dockerfile: {0}")]
    NoDockerfile(String),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("failed to process {word:?}: {source}")]
    Expand { word: String, source: ShellError },
    #[error(transparent)]
    Config(#[from] ImageConfigError),
    #[error("{0} is not supported by this builder yet")]
    Unsupported(String),
    /// A platform that is malformed or not this daemon's.
    #[error("{0}")]
    Platform(String),
    #[error(
        "image with reference {image} was found but does not match the specified platform: \
         wanted {wanted}, actual: {actual}"
    )]
    WrongPlatform {
        image: String,
        wanted: String,
        actual: String,
    },
    #[error("invalid reference format: {0}")]
    BadTag(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{what} failed: {source}")]
    Source {
        what: &'static str,
        source: super::sources::SourceError,
    },
    /// Writing into a step's snapshot failed (a bad destination, --chown,
    /// --chmod, the mount).
    #[error("{0}")]
    Write(String),
    #[error("The command '{command}' returned a non-zero code: {status}")]
    RunFailed { command: String, status: u32 },
    #[error("the client went away")]
    Gone,
    /// Another stage of the build failed first.
    #[error("the build stopped: another stage failed")]
    Cancelled,
    /// A RUN step's container could not be made (a bad resource option,
    /// its files).
    #[error("{0}")]
    RunContainer(Box<crate::containers::ContainerError>),
    /// ADD of a URL: the download failed.
    #[error("failed to GET {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("checksum mismatch for {url}: expected {expected}, got {got}")]
    Checksum {
        url: String,
        expected: String,
        got: String,
    },
    /// A RUN step's network (an unknown network, its endpoint).
    #[error("{0}")]
    RunNetwork(crate::network::NetworkError),
}

/// A stage's result: its config document and its layers.
#[derive(Clone, Debug, Default)]
pub struct Built {
    pub doc: ImageDoc,
    pub layers: Vec<Layer>,
}

pub struct Output<'a> {
    tx: &'a mpsc::Sender<Message>,
    quiet: bool,
}

impl<'a> Output<'a> {
    pub fn new(tx: &'a mpsc::Sender<Message>, quiet: bool) -> Output<'a> {
        Output { tx, quiet }
    }

    pub async fn say(&self, text: String) -> Result<(), BuildError> {
        if self.quiet {
            return Ok(());
        }
        self.send(Message::stream(text)).await
    }

    pub async fn send(&self, message: Message) -> Result<(), BuildError> {
        self.tx.send(message).await.map_err(|_| BuildError::Gone)
    }
}

pub(super) fn config_id(doc: &ImageDoc) -> (Vec<u8>, String) {
    let bytes = serde_json::to_vec(&doc.to_value()).unwrap_or_default();
    let id = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    (bytes, id)
}

pub(super) fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Reads the Dockerfile from the unpacked context.
pub fn read_dockerfile(root: &Path, name: &str) -> Result<String, BuildError> {
    let name = if name.is_empty() { "Dockerfile" } else { name };
    let path = resolve_in_scope(root, name, true)?;
    let meta = std::fs::metadata(&path).map_err(|_| BuildError::NoDockerfile(name.to_string()))?;
    if !meta.is_file() {
        return Err(BuildError::NoDockerfile(name.to_string()));
    }
    if meta.len() > dockerfile::parser::MAX_DOCKERFILE as u64 {
        return Err(ParseError::TooLarge {
            size: meta.len() as usize,
            max: dockerfile::parser::MAX_DOCKERFILE,
        }
        .into());
    }
    let bytes = std::fs::read(&path).map_err(|_| BuildError::NoDockerfile(name.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Docker's daemon drops the Dockerfile and `.dockerignore` from the
/// context (once the Dockerfile is read) when `.dockerignore` lists them:
/// clients send them whatever it says, and `COPY .` does not copy them.
fn drop_ignored_build_files(root: &Path, dockerfile: &str) {
    let Ok(text) = std::fs::read_to_string(root.join(".dockerignore")) else {
        return;
    };
    let Ok(ignore) = super::dockerignore::Ignore::parse(&text) else {
        return;
    };
    let dockerfile = if dockerfile.is_empty() {
        "Dockerfile"
    } else {
        dockerfile
    };
    for name in [dockerfile, ".dockerignore"] {
        if !ignore.excludes(name) {
            continue;
        }
        if let Ok(path) = resolve_in_scope(root, name, false) {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "drop an ignored build file");
                }
            }
        }
    }
}

/// Runs a build on an unpacked context; the image id. The images named
/// on the way (for RUN's containers) are deleted at the end, whatever the
/// end, and the build's lease with them.
pub async fn build(
    engine: &Arc<Engine>,
    opts: &BuildOptions,
    root: &Path,
    tx: &mpsc::Sender<Message>,
) -> Result<String, BuildError> {
    // What the build writes (blobs, committed snapshots) is the lease's
    // until the image names it; a daemon that dies mid-build leaves a
    // lease that expires.
    let lease = format!("build-{}", &super::run::unique("lease")[..32]);
    engine
        .supervisor
        .create_lease(&lease, LEASE_SECONDS)
        .await?;
    let result = crate::backend::lease_scope(lease.clone(), async {
        let mut intermediate = Vec::new();
        let result = build_steps(engine, opts, root, tx, &mut intermediate).await;
        // Stages on one base name the same step image.
        intermediate.sort();
        intermediate.dedup();
        for name in intermediate {
            if let Err(e) = engine.supervisor.delete_image(&name).await {
                tracing::warn!(image = %name, error = %e, "remove a build step's image");
            }
        }
        result
    })
    .await;
    if let Err(e) = engine.supervisor.delete_lease(&lease).await {
        tracing::warn!(lease = %lease, error = %e, "delete a build's lease");
    }
    result
}

async fn build_steps(
    engine: &Arc<Engine>,
    opts: &BuildOptions,
    root: &Path,
    tx: &mpsc::Sender<Message>,
    intermediate: &mut Vec<String>,
) -> Result<String, BuildError> {
    let out = Output {
        tx,
        quiet: opts.quiet,
    };
    // Tags are checked before any work.
    let mut tags = Vec::new();
    for tag in &opts.tags {
        let normal =
            crate::images::names::normalize(tag).map_err(|_| BuildError::BadTag(tag.clone()))?;
        tags.push(normal);
    }
    super::container::check_host_config(engine, &opts.host_config)?;
    let text = read_dockerfile(root, &opts.dockerfile)?;
    drop_ignored_build_files(root, &opts.dockerfile);
    let mut file = dockerfile::parse(&text)?;
    if !opts.labels.is_empty() {
        // Docker adds the build's labels as a last LABEL step.
        let words: Vec<String> = opts
            .labels
            .iter()
            .map(|(k, v)| format!("{}='{v}'", super::image::go_quote(k)))
            .collect();
        let line = format!("LABEL {}", words.join(" "));
        let target = file.target_index(opts.target.as_deref())?;
        let last_line = file.stages[target]
            .steps
            .last()
            .map_or(file.stages[target].line, |s| s.line);
        file.stages[target]
            .steps
            .push(dockerfile::instructions::Step {
                line: last_line,
                original: line,
                instruction: Instruction::Label(opts.labels.clone().into_iter().collect()),
            });
    }
    let needed = file.needed_stages(opts.target.as_deref())?;
    let target = file.target_index(opts.target.as_deref())?;
    let build_args: BTreeMap<String, String> = opts
        .build_args
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    let global = file.global_arg_values(&build_args)?;
    let total = file.global_args.len()
        + needed
            .iter()
            .map(|i| 1 + file.stages[*i].steps.len())
            .sum::<usize>();
    let mut step = 0;
    for arg in &file.global_args {
        step += 1;
        out.say(format!("Step {step}/{total} : {}\n", arg.original))
            .await?;
    }
    let mut declared_anywhere: BTreeSet<String> = global.iter().map(|(k, _)| k.clone()).collect();
    for step_arg in &file.global_args {
        if let Instruction::Arg(args) = &step_arg.instruction {
            declared_anywhere.extend(args.iter().map(|(k, _)| k.clone()));
        }
    }
    let cache_from = match opts.no_cache {
        true => super::cachefrom::CacheFrom::default(),
        false => super::cachefrom::CacheFrom::load(engine, &opts.cache_from).await,
    };
    let shared = Arc::new(super::stage::Shared {
        engine: Arc::clone(engine),
        opts: opts.clone(),
        file,
        global,
        root: root.to_path_buf(),
        total,
        cache_from,
        cancelled: Default::default(),
    });
    let (done, made) = super::stage::build_stages(Arc::clone(&shared), &needed, step, &out).await;
    intermediate.extend(made);
    let mut done = done?;
    for stage in done.values() {
        declared_anywhere.extend(stage.declared.iter().cloned());
    }
    let finished = done.remove(&target).unwrap_or_default();
    let built = finished.built;
    let started = std::time::Instant::now();
    let id = write_image(engine, &built, &tags).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "build image written"
    );
    if let Some(parent) = finished.parent.filter(|p| *p != id) {
        if let Err(e) = engine.build_cache.set_parent(&id, &parent) {
            tracing::warn!(image = %id, error = %e, "record a built image's parent");
        }
    }
    let unused = unused(&opts.build_args, &declared_anywhere);
    if !unused.is_empty() {
        out.say(format!(
            "[Warning] One or more build-args [{}] were not consumed\n",
            unused.join(" ")
        ))
        .await?;
    }
    out.send(Message {
        aux: Some(json!({"ID": id})),
        ..Default::default()
    })
    .await?;
    if opts.quiet {
        out.send(Message::stream(format!("{id}\n"))).await?;
    } else {
        out.say(format!("Successfully built {}\n", short_id(&id)))
            .await?;
        for tag in &tags {
            out.say(format!("Successfully tagged {}\n", familiar(tag)))
                .await?;
        }
    }
    Ok(id)
}

/// A RUN's history line.
pub(super) fn run_created_by(
    built: &Built,
    args: &StageArgs,
    run: &dockerfile::instructions::Run,
) -> Result<String, BuildError> {
    Ok(run_step(built, args, run)?.created_by)
}

/// What a RUN instruction runs, with what, and its history line.
pub(super) fn run_step(
    built: &Built,
    args: &StageArgs,
    run: &dockerfile::instructions::Run,
) -> Result<super::run::RunStep, BuildError> {
    if !run.mounts.is_empty() {
        return Err(BuildError::Unsupported("RUN --mount".into()));
    }
    if run.network.is_some() {
        return Err(BuildError::Unsupported("RUN --network".into()));
    }
    let shell = built.doc.shell();
    let argv = match (&run.command, run.heredocs.as_slice()) {
        (command, []) => super::image::command_line(command, &shell),
        // `RUN <<EOF`: the heredoc is the script.
        (dockerfile::instructions::Command::Shell(text), [one])
            if dockerfile::parser::parse_heredoc(text.trim()).is_some() =>
        {
            let mut argv = shell.clone();
            argv.push(one.content.clone());
            argv
        }
        // A command reading heredocs: the shell gets them as written.
        (dockerfile::instructions::Command::Shell(text), docs) => {
            let mut script = format!("{text}\n");
            for doc in docs {
                script.push_str(&doc.content);
                script.push_str(&doc.name);
                script.push('\n');
            }
            let mut argv = shell.clone();
            argv.push(script);
            argv
        }
        (command, _) => super::image::command_line(command, &shell),
    };
    let image_env: Vec<String> = built
        .doc
        .config
        .get("Env")
        .and_then(super::image::strings)
        .unwrap_or_default();
    Ok(super::run::RunStep {
        created_by: args.run_created_by(&image_env, &argv),
        env: args.run_env(&image_env),
        argv,
        created: now(),
    })
}

/// The base image of a stage: its config and layers, pulled first when
/// missing (or when the build asks to pull).
pub(super) async fn base_image(
    engine: &Arc<Engine>,
    opts: &BuildOptions,
    name: &str,
    platform: Option<&str>,
    out: &Output<'_>,
) -> Result<Built, BuildError> {
    let platform = platform
        .or(opts.platform.as_deref())
        .filter(|p| !p.is_empty())
        .map(host_platform)
        .transpose()?;
    let found = if opts.pull {
        Err(ImageError::NotFound(name.to_string()))
    } else {
        crate::images::resolve(engine, name).await
    };
    let image = match found {
        Ok(image) => image,
        Err(ImageError::NotFound(_)) => {
            let pull = PullOptions {
                image: name.to_string(),
                tag: String::new(),
                platform: String::new(),
                auth: opts
                    .registries
                    .for_image(name)
                    .or_else(|| opts.auth.clone()),
            };
            let mut messages = crate::images::transfer::pull(Arc::clone(engine), pull).await?;
            while let Some(message) = messages.next().await {
                if let Some(error) = &message.error {
                    return Err(ImageError::InvalidArgument(error.clone()).into());
                }
                if !opts.quiet {
                    out.send(message).await?;
                }
            }
            crate::images::resolve(engine, name).await?
        }
        Err(e) => return Err(e.into()),
    };
    let raw = engine.supervisor.read_blob(&image.id).await?;
    let value: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    if let Some(wanted) = platform {
        let field = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or("");
        let actual = format!("{}/{}", field("os"), field("architecture"));
        if actual != wanted {
            return Err(BuildError::WrongPlatform {
                image: name.to_string(),
                wanted,
                actual,
            });
        }
    }
    Ok(Built {
        doc: ImageDoc::from_value(value),
        layers: image.layers,
    })
}

/// The platform a FROM or the `platform` query names, as `os/arch`, when
/// it is this daemon's: the images it stores and runs are this host's
/// platform's (a foreign one would need an emulator to RUN anything), so
/// another is refused up front with a message that says so.
pub(super) fn host_platform(spec: &str) -> Result<String, BuildError> {
    let host_arch = crate::go_arch();
    let parts: Vec<&str> = spec.split('/').collect();
    let (os, arch) = match parts.as_slice() {
        [os] => (*os, host_arch),
        [os, arch] | [os, arch, _] => (*os, *arch),
        _ => ("", ""),
    };
    let arch = match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    if os.is_empty() || arch.is_empty() || spec.chars().any(char::is_whitespace) {
        return Err(BuildError::Platform(format!(
            "\"{spec}\": unknown operating system or architecture: invalid argument"
        )));
    }
    let wanted = format!("{}/{arch}", os.to_ascii_lowercase());
    let host = format!("linux/{host_arch}");
    if wanted != host {
        return Err(BuildError::Platform(format!(
            "platform {spec}: this daemon builds and runs {host} images only"
        )));
    }
    Ok(wanted)
}

/// Writes the config and an OCI manifest, and names the image by each tag
/// (or, untagged, by its digest); the image id.
async fn write_image(
    engine: &Engine,
    built: &Built,
    tags: &[String],
) -> Result<String, BuildError> {
    let (target, id) = write_manifest(engine, built).await?;
    let manifest_digest = target.digest.clone();
    let mut names = tags.to_vec();
    if tags.is_empty() {
        // Untagged: a name only its digest tells apart, as a load by id.
        names.push(format!("build-{}@{manifest_digest}", short_id(&id)));
    }
    for name in &names {
        // A rebuild that changed nothing names the same manifest again:
        // Images.Create would only redo its transactions (a lease, a hold
        // per blob, the record), a good part of such a rebuild's time.
        let same = engine
            .supervisor
            .get_image(name)
            .await
            .ok()
            .and_then(|image| image.target)
            .is_some_and(|t| t.digest == manifest_digest);
        if !same {
            engine.supervisor.create_image(name, target.clone()).await?;
        }
    }
    Ok(id)
}

/// Writes the config and an OCI manifest of the layers: the manifest's
/// descriptor and the image id.
pub async fn write_manifest(
    engine: &Engine,
    built: &Built,
) -> Result<(berth_proto::types::v1::Descriptor, String), BuildError> {
    let (config, id) = config_id(&built.doc);
    let size = config.len();
    let written = write_document(engine, config).await?;
    if written != id {
        return Err(BackendError::Internal(format!("config {id} stored as {written}")).into());
    }
    let layers: Vec<Value> = built
        .layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": id, "size": size},
        "layers": layers,
    }))
    .unwrap_or_default();
    let manifest_size = manifest.len() as i64;
    let manifest_digest = write_document(engine, manifest).await?;
    let target = berth_proto::types::v1::Descriptor {
        media_type: MEDIA_MANIFEST.to_string(),
        digest: manifest_digest,
        size: manifest_size,
        annotations: Default::default(),
    };
    Ok((target, id))
}

/// Writes a small document (a config, a manifest) into the content
/// store unless it is there already with these bytes, as after a rebuild
/// that changed nothing: a write is committed with a disk sync, a read of
/// a few KiB is not. Its digest.
async fn write_document(engine: &Engine, bytes: Vec<u8>) -> Result<String, BuildError> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if engine
        .supervisor
        .read_blob(&digest)
        .await
        .is_ok_and(|stored| stored[..] == bytes[..])
    {
        return Ok(digest);
    }
    Ok(engine.supervisor.write_blob(Bytes::from(bytes)).await?)
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
