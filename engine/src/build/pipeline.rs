//! One build: the Dockerfile read from the context, the stages the target
//! needs, each step applied in order, and the image written: its config
//! and an OCI manifest into the content store, named by Images.Create
//! (once per tag). The output is Docker's JSON-lines messages (`Step N/M
//! : ...`, ` ---> <id>`, `Successfully built`, `Successfully tagged`) sent
//! as they happen.
//!
//! FROM (an image, pulled if missing, a previous stage, or `scratch`), the
//! metadata instructions and RUN ([`super::run`]) are built; COPY, ADD and
//! WORKDIR, which write into a snapshot, are refused with a clear error
//! until that layer is in.

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
use super::image::{apply_metadata, cache_key, push_history, ImageConfigError, ImageDoc};
use crate::backend::BackendError;
use crate::images::names::{familiar, short_id};
use crate::images::transfer::{Message, PullOptions};
use crate::images::{ImageError, Layer};
use crate::Engine;

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

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
    pub auth: Option<crate::images::auth::AuthConfig>,
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

impl Output<'_> {
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

fn config_id(doc: &ImageDoc) -> (Vec<u8>, String) {
    let bytes = serde_json::to_vec(&doc.to_value()).unwrap_or_default();
    let id = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    (bytes, id)
}

fn now() -> String {
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

/// Runs a build on an unpacked context; the image id. The images named
/// on the way (for RUN's containers) are deleted at the end, whatever the
/// end.
pub async fn build(
    engine: &Arc<Engine>,
    opts: &BuildOptions,
    root: &Path,
    tx: &mpsc::Sender<Message>,
) -> Result<String, BuildError> {
    let mut intermediate = Vec::new();
    let result = build_steps(engine, opts, root, tx, &mut intermediate).await;
    for name in intermediate {
        if let Err(e) = engine.supervisor.delete_image(&name).await {
            tracing::warn!(image = %name, error = %e, "remove a build step's image");
        }
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
    let text = read_dockerfile(root, &opts.dockerfile)?;
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
    let escape = file.directives.escape;
    let mut declared_anywhere: BTreeSet<String> = global.iter().map(|(k, _)| k.clone()).collect();
    for step_arg in &file.global_args {
        if let Instruction::Arg(args) = &step_arg.instruction {
            declared_anywhere.extend(args.iter().map(|(k, _)| k.clone()));
        }
    }
    let mut results: BTreeMap<usize, Built> = BTreeMap::new();
    for &index in &needed {
        let stage = &file.stages[index];
        step += 1;
        out.say(format!("Step {step}/{total} : {}\n", stage.original))
            .await?;
        let base = Instruction::From(stage.base.clone())
            .expand(&global, escape)
            .map_err(|source| BuildError::Expand {
                word: stage.base.image.clone(),
                source,
            })?;
        let Instruction::From(base) = base else {
            return Err(BuildError::Unsupported("a FROM that is not one".into()));
        };
        let mut built = match file.stage_named(&base.image, index) {
            Some(previous) => results.get(&previous).cloned().unwrap_or_default(),
            None if base.image.eq_ignore_ascii_case("scratch") => Built {
                doc: ImageDoc::from_value(json!({
                    "architecture": crate::go_arch(),
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []},
                })),
                layers: Vec::new(),
            },
            None => base_image(engine, opts, &base.image, &out).await?,
        };
        let (_, id) = config_id(&built.doc);
        if !built.layers.is_empty() || !base.image.eq_ignore_ascii_case("scratch") {
            out.say(format!(" ---> {}\n", short_id(&id))).await?;
        }
        // The base's ONBUILD triggers run first, and are not inherited.
        let triggers = onbuild_triggers(&mut built, &out).await?;
        let mut args = StageArgs::new(&opts.build_args, &global);
        let mut cmd_set = false;
        let steps = triggers
            .iter()
            .map(|s| (true, s))
            .chain(stage.steps.iter().map(|s| (false, s)));
        for (trigger, s) in steps {
            let started = std::time::Instant::now();
            if !trigger {
                step += 1;
                out.say(format!("Step {step}/{total} : {}\n", s.original))
                    .await?;
            }
            let env: Vec<String> = built
                .doc
                .config
                .get("Env")
                .and_then(super::image::strings)
                .unwrap_or_default();
            let lookup = args.expansion_env(&env);
            let expanded = s
                .instruction
                .expand(&lookup, escape)
                .map_err(|source| BuildError::Expand {
                    word: s.original.clone(),
                    source,
                })
                .map_err(|e| at_line(e, s.line))?;
            // ARG and CMD change the stage's state, cached or not.
            match &expanded {
                Instruction::Arg(list) => {
                    for (name, default) in list {
                        args.declare(name, default.clone());
                        declared_anywhere.insert(name.clone());
                    }
                }
                Instruction::Cmd(_) => cmd_set = true,
                _ => {}
            }
            // COPY --from reads another stage's (or an image's) files.
            let from_mount = match &expanded {
                Instruction::Copy(copy) if copy.from.is_some() => {
                    let name = copy.from.clone().unwrap_or_default();
                    let source = match file.stage_named(&name, index) {
                        Some(i) => results.get(&i).cloned().unwrap_or_default(),
                        None => base_image(engine, opts, &name, &out).await?,
                    };
                    Some(super::copy::mount_stage(engine, &source).await?)
                }
                _ => None,
            };
            let root: &Path = from_mount.as_ref().map_or(root, |m| m.root());
            let what = describe(&built, &args, &expanded, root)?;
            let (_, parent) = config_id(&built.doc);
            let key = cache_key(&parent, &Value::Object(built.doc.config.clone()), &what);
            if !opts.no_cache {
                if let Some(hit) = cached(engine, &key, built.layers.len()).await {
                    built = hit;
                    let (_, id) = config_id(&built.doc);
                    out.say(format!(" ---> Using cache\n ---> {}\n", short_id(&id)))
                        .await?;
                    step_done(s, true, started);
                    continue;
                }
            }
            if let Instruction::Run(run) = &expanded {
                let step = run_step(&built, &args, run)?;
                super::run::run_step(engine, &mut built, step, &out, intermediate).await?;
            } else if file_step(engine, &mut built, root, &expanded)
                .await?
                .is_none()
            {
                let applied = apply_metadata(&mut built.doc, &expanded, cmd_set)?;
                push_history(&mut built.doc, &now(), &applied.created_by, None);
            }
            let entry = super::cache::Entry::from_layers(built.doc.to_value(), &built.layers);
            if let Err(e) = engine.build_cache.put(&key, &entry) {
                tracing::warn!(error = %e, "keep a build step in the cache");
            }
            let (_, id) = config_id(&built.doc);
            out.say(format!(" ---> {}\n", short_id(&id))).await?;
            step_done(s, false, started);
        }
        results.insert(index, built);
    }
    let built = results.remove(&target).unwrap_or_default();
    let started = std::time::Instant::now();
    let id = write_image(engine, &built, &tags).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "build image written"
    );
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

/// Logs (debug) how long a step took: where a build's time goes.
fn step_done(step: &dockerfile::instructions::Step, cached: bool, started: std::time::Instant) {
    tracing::debug!(
        line = step.line,
        cached,
        ms = started.elapsed().as_millis() as u64,
        "build step {}",
        step.original
    );
}

/// The ONBUILD triggers of a stage's base, parsed, removed from the
/// config the stage inherits (Docker runs them once).
async fn onbuild_triggers(
    built: &mut Built,
    out: &Output<'_>,
) -> Result<Vec<dockerfile::instructions::Step>, BuildError> {
    let triggers: Vec<String> = built
        .doc
        .config
        .get("OnBuild")
        .and_then(super::image::strings)
        .unwrap_or_default();
    if triggers.is_empty() {
        return Ok(Vec::new());
    }
    built.doc.config.insert("OnBuild".into(), Value::Null);
    let plural = if triggers.len() == 1 { "" } else { "s" };
    out.say(format!(
        "# Executing {} build trigger{plural}\n",
        triggers.len()
    ))
    .await?;
    let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
    let parsed = dockerfile::parse(&text)?;
    Ok(parsed
        .stages
        .into_iter()
        .next()
        .map(|stage| stage.steps)
        .unwrap_or_default())
}

/// What a step does, for its cache key: a RUN's history line (its
/// command and the build arguments it sees), COPY's and ADD's sources
/// (their hash) and flags, any other instruction with its values.
fn describe(
    built: &Built,
    args: &StageArgs,
    instruction: &Instruction,
    context: &Path,
) -> Result<String, BuildError> {
    Ok(match instruction {
        Instruction::Run(run) => run_step(built, args, run)?.created_by,
        Instruction::Copy(copy) | Instruction::Add(copy) => {
            let what = if matches!(instruction, Instruction::Copy(_)) {
                "COPY"
            } else {
                "ADD"
            };
            super::copy::check_supported(copy, what)?;
            let sources = super::sources::find_sources(context, &copy.sources)
                .map_err(|source| BuildError::Source { what, source })?;
            format!(
                "{what} {} in {} chown={:?} chmod={:?} from={}",
                super::sources::sources_hash(&sources),
                copy.dest,
                copy.chown,
                copy.chmod,
                copy.from.is_some()
            )
        }
        other => format!("{other:?}"),
    })
}

/// A cached step's result, if the layer it made (if any: the step's
/// parent had `layers_before`) is still there.
async fn cached(engine: &Engine, key: &str, layers_before: usize) -> Option<Built> {
    let entry = match engine.build_cache.get(key) {
        Ok(entry) => entry?,
        Err(e) => {
            tracing::warn!(error = %e, "read the build cache");
            return None;
        }
    };
    let built = Built {
        doc: ImageDoc::from_value(entry.config.clone()),
        layers: entry.layers(),
    };
    let diff_ids: Vec<String> = built.doc.top["rootfs"]["diff_ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if built.layers.len() > layers_before {
        if let Some(top) = crate::images::remove::chain_ids(&diff_ids).last() {
            engine.supervisor.snapshot_usage(top).await.ok()?;
        }
    }
    Some(built)
}

/// COPY, ADD and WORKDIR, which write into a snapshot; `None` for the
/// other instructions.
async fn file_step(
    engine: &Engine,
    built: &mut Built,
    context: &Path,
    instruction: &Instruction,
) -> Result<Option<()>, BuildError> {
    let shell = built.doc.shell();
    let workdir = built
        .doc
        .config
        .get("WorkingDir")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match instruction {
        Instruction::Workdir(path) => {
            let dir = super::image::resolve_workdir(&workdir, path);
            built.doc.config.insert("WorkingDir".into(), json!(dir));
            let created_by = super::image::nop_string_created_by(&shell, &format!("WORKDIR {dir}"));
            super::copy::make_workdir(engine, built, &dir, &created_by, &now()).await?;
        }
        Instruction::Copy(copy) | Instruction::Add(copy) => {
            let what = if matches!(instruction, Instruction::Copy(_)) {
                "COPY"
            } else {
                "ADD"
            };
            super::copy::copy_step(engine, built, context, copy, what, &workdir, &shell, &now())
                .await?;
        }
        _ => return Ok(None),
    }
    Ok(Some(()))
}

/// What a RUN instruction runs, with what, and its history line.
fn run_step(
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

fn at_line(e: BuildError, line: usize) -> BuildError {
    match e {
        BuildError::Expand { source, .. } => ParseError::Expand { line, source }.into(),
        other => other,
    }
}

/// The base image of a stage: its config and layers, pulled first when
/// missing (or when the build asks to pull).
async fn base_image(
    engine: &Arc<Engine>,
    opts: &BuildOptions,
    name: &str,
    out: &Output<'_>,
) -> Result<Built, BuildError> {
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
                auth: opts.auth.clone(),
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
    Ok(Built {
        doc: ImageDoc::from_value(value),
        layers: image.layers,
    })
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
