//! The stages of a build, built at the same time when nothing orders
//! them (as BuildKit does; the legacy builder builds them in turn): a
//! stage starts, as a tokio task, once the stages its FROM and its
//! `COPY --from`s name are built. Each stage's output goes to a channel of
//! its own, and the channels are forwarded to the client one stage after
//! the other, in the Dockerfile's order, so the output reads as a build
//! in turn would (every `Step N/M` in order, a step's lines together).
//! The first failure stops the others at their next step; their
//! containers and snapshots are removed as any failed step's are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::args::StageArgs;
use super::cachefrom::CacheFrom;
use super::dockerfile::instructions::Instruction;
use super::dockerfile::{self, Dockerfile, ParseError};
use super::image::{apply_metadata, cache_key, push_history, ImageDoc};
use super::pipeline::{
    base_image, config_id, now, run_step, BuildError, BuildOptions, Built, Output,
};
use crate::backend::BackendError;
use crate::images::names::short_id;
use crate::images::transfer::Message;
use crate::Engine;

/// What every stage of one build reads.
pub struct Shared {
    pub engine: Arc<Engine>,
    pub opts: BuildOptions,
    pub file: Dockerfile,
    /// The global ARGs' values.
    pub global: Vec<(String, String)>,
    /// The context.
    pub root: PathBuf,
    /// The number of steps, for `Step N/M`.
    pub total: usize,
    pub cache_from: CacheFrom,
    /// Set at the first failure: the other stages stop.
    pub cancelled: AtomicBool,
}

/// A built stage.
#[derive(Default)]
pub struct StageDone {
    pub built: Built,
    /// The image before its last step (Docker's `Parent`).
    pub parent: Option<String>,
    /// The ARGs it declared.
    pub declared: BTreeSet<String>,
}

type StageResult = (usize, Result<StageDone, BuildError>, Vec<String>);

/// Builds the stages `needed` (in the Dockerfile's order), the first
/// numbered `first_step + 1`: each one's result, and the step images
/// made on the way (for the build to delete), whatever the end.
pub async fn build_stages(
    shared: Arc<Shared>,
    needed: &[usize],
    first_step: usize,
    out: &Output<'_>,
) -> (Result<BTreeMap<usize, StageDone>, BuildError>, Vec<String>) {
    let mut offsets = BTreeMap::new();
    let mut step = first_step;
    let mut senders = BTreeMap::new();
    let mut receivers = Vec::new();
    for &index in needed {
        offsets.insert(index, step);
        step += 1 + shared.file.stages[index].steps.len();
        let (tx, rx) = mpsc::channel::<Message>(256);
        senders.insert(index, tx);
        receivers.push(rx);
    }
    let lease = crate::backend::current_lease();
    let schedule = async move {
        let mut done: BTreeMap<usize, StageDone> = BTreeMap::new();
        let mut made = Vec::new();
        let mut first_error: Option<BuildError> = None;
        let mut tasks = tokio::task::JoinSet::<StageResult>::new();
        let mut waiting: Vec<usize> = offsets.keys().copied().collect();
        loop {
            if first_error.is_none() {
                let ready: Vec<usize> = waiting
                    .iter()
                    .copied()
                    .filter(|i| {
                        let deps = shared.file.dependencies(*i);
                        deps.iter().all(|d| done.contains_key(d))
                    })
                    .collect();
                for index in ready {
                    waiting.retain(|w| *w != index);
                    let deps: BTreeMap<usize, Built> = shared
                        .file
                        .dependencies(index)
                        .into_iter()
                        .filter_map(|d| done.get(&d).map(|s| (d, s.built.clone())))
                        .collect();
                    let Some(tx) = senders.remove(&index) else {
                        continue;
                    };
                    let first = offsets.get(&index).copied().unwrap_or_default();
                    let shared = Arc::clone(&shared);
                    let stage = async move {
                        let out = Output::new(&tx, shared.opts.quiet);
                        let mut made = Vec::new();
                        let result =
                            build_stage(&shared, index, first, deps, &out, &mut made).await;
                        (index, result, made)
                    };
                    // The build's lease covers its stages' calls too.
                    match lease.clone() {
                        Some(id) => tasks.spawn(crate::backend::lease_scope(id, stage)),
                        None => tasks.spawn(stage),
                    };
                }
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined {
                Ok((index, result, stage_made)) => {
                    made.extend(stage_made);
                    match result {
                        Ok(stage) => {
                            done.insert(index, stage);
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(BuildError::Backend(BackendError::Internal(
                        format!("a build stage stopped: {e}"),
                    )));
                }
            }
            if first_error.is_some() {
                // The stages not started never will; the others stop at
                // their next step.
                shared.cancelled.store(true, Ordering::SeqCst);
                senders.clear();
            }
        }
        // A stage whose dependencies never finished (none, unless one
        // failed) has its channel closed here.
        drop(senders);
        match first_error {
            Some(e) => (Err(e), made),
            None => (Ok(done), made),
        }
    };
    let forward = async {
        for mut rx in receivers {
            while let Some(message) = rx.recv().await {
                // The client went away: the receivers dropped, the stages
                // fail at their next message.
                out.send(message).await?;
            }
        }
        Ok::<(), BuildError>(())
    };
    let ((result, made), forwarded) = tokio::join!(schedule, forward);
    match (result, forwarded) {
        (Ok(done), Ok(())) => (Ok(done), made),
        (Err(e), _) | (Ok(_), Err(e)) => (Err(e), made),
    }
}

/// Builds stage `index` (its FROM numbered `first_step + 1`) on the
/// results of the stages it reads from (`deps`).
async fn build_stage(
    shared: &Shared,
    index: usize,
    first_step: usize,
    deps: BTreeMap<usize, Built>,
    out: &Output<'_>,
    intermediate: &mut Vec<String>,
) -> Result<StageDone, BuildError> {
    let engine = &shared.engine;
    let opts = &shared.opts;
    let file = &shared.file;
    let global = &shared.global;
    let total = shared.total;
    let escape = file.directives.escape;
    let root: &Path = &shared.root;
    let mut cache_from = shared.cache_from.clone();
    let mut step = first_step;
    let mut declared = BTreeSet::new();
    let mut last_parent = None;
    let stage = &file.stages[index];
    step += 1;
    out.say(format!("Step {step}/{total} : {}\n", stage.original))
        .await?;
    let base = Instruction::From(stage.base.clone())
        .expand(global, escape)
        .map_err(|source| BuildError::Expand {
            word: stage.base.image.clone(),
            source,
        })?;
    let Instruction::From(base) = base else {
        return Err(BuildError::Unsupported("a FROM that is not one".into()));
    };
    let mut built = match file.stage_named(&base.image, index) {
        Some(previous) => deps.get(&previous).cloned().unwrap_or_default(),
        None if base.image.eq_ignore_ascii_case("scratch") => Built {
            doc: ImageDoc::from_value(json!({
                "architecture": crate::go_arch(),
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            })),
            layers: Vec::new(),
        },
        None => base_image(engine, opts, &base.image, base.platform.as_deref(), out).await?,
    };
    let (_, id) = config_id(&built.doc);
    if !built.layers.is_empty() || !base.image.eq_ignore_ascii_case("scratch") {
        out.say(format!(" ---> {}\n", short_id(&id))).await?;
    }
    // The base's ONBUILD triggers run first, and are not inherited.
    let triggers = onbuild_triggers(&mut built, out).await?;
    let mut args = StageArgs::new(&opts.build_args, global);
    let mut cmd_set = false;
    let steps = triggers
        .iter()
        .map(|s| (true, s))
        .chain(stage.steps.iter().map(|s| (false, s)));
    for (trigger, s) in steps {
        if shared.cancelled.load(Ordering::SeqCst) {
            return Err(BuildError::Cancelled);
        }
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
                    declared.insert(name.clone());
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
                    Some(i) => deps.get(&i).cloned().unwrap_or_default(),
                    None => base_image(engine, opts, &name, None, out).await?,
                };
                Some(super::copy::mount_stage(engine, &source).await?)
            }
            _ => None,
        };
        // Heredocs and URLs are written into a directory of the step's.
        let staged = match &expanded {
            Instruction::Copy(copy) | Instruction::Add(copy)
                if super::staged::needs_staging(copy, add_or_copy(&expanded)) =>
            {
                let dir = engine.paths.engine_dir().join("builds");
                let what = add_or_copy(&expanded);
                let staged = super::staged::stage(&dir, copy, what, &lookup, escape)
                    .await
                    .map_err(|e| at_line(e, s.line))?;
                Some(staged)
            }
            _ => None,
        };
        let (expanded, extract) = match (&staged, expanded) {
            (Some(staged), Instruction::Add(_)) => {
                (Instruction::Add(staged.copy.clone()), !staged.remote)
            }
            (Some(staged), _) => (Instruction::Copy(staged.copy.clone()), false),
            (None, other) => {
                let extract = matches!(other, Instruction::Add(_));
                (other, extract)
            }
        };
        let root: &Path = match (&staged, &from_mount) {
            (Some(staged), _) => staged.root(),
            (None, Some(mount)) => mount.root(),
            (None, None) => root,
        };
        let what = describe(&built, &args, &expanded, root)?;
        let (_, parent) = config_id(&built.doc);
        last_parent = Some(parent.clone());
        let key = cache_key(&parent, &Value::Object(built.doc.config.clone()), &what);
        if !opts.no_cache {
            let hit = cached(engine, &key, built.layers.len()).await;
            if let Some(hit) = hit.filter(|hit| cache_from.admits(hit)) {
                built = hit;
                reused(out, &built, s, started).await?;
                continue;
            }
        }
        if !cache_from.is_empty() {
            let expected = super::cachefrom::expected(&built, &args, &expanded, root, cmd_set)?;
            if let Some((predicted, created_by)) = expected {
                if let Some(hit) = cache_from.probe(&built, &created_by, &predicted) {
                    built = hit;
                    reused(out, &built, s, started).await?;
                    continue;
                }
            }
        }
        if let Instruction::Run(run) = &expanded {
            let step = run_step(&built, &args, run)?;
            super::run::run_step(
                engine,
                &mut built,
                step,
                &opts.host_config,
                out,
                intermediate,
            )
            .await?;
        } else if file_step(engine, &mut built, root, &expanded, extract)
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
        crate::metrics::build_step(false);
        let (_, id) = config_id(&built.doc);
        out.say(format!(" ---> {}\n", short_id(&id))).await?;
        step_done(s, false, started);
    }
    Ok(StageDone {
        built,
        parent: last_parent,
        declared,
    })
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

fn add_or_copy(instruction: &Instruction) -> &'static str {
    if matches!(instruction, Instruction::Add(_)) {
        "ADD"
    } else {
        "COPY"
    }
}

/// COPY, ADD and WORKDIR, which write into a snapshot; `None` for the
/// other instructions. `extract`: ADD's archives are extracted (not a
/// downloaded one's).
async fn file_step(
    engine: &Engine,
    built: &mut Built,
    context: &Path,
    instruction: &Instruction,
    extract: bool,
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
            let step = super::copy::CopyStep {
                what,
                extract,
                workdir: &workdir,
                shell: &shell,
                created: &now(),
            };
            super::copy::copy_step(engine, built, context, copy, &step).await?;
        }
        _ => return Ok(None),
    }
    Ok(Some(()))
}

fn at_line(e: BuildError, line: usize) -> BuildError {
    match e {
        BuildError::Expand { source, .. } => ParseError::Expand { line, source }.into(),
        other => other,
    }
}

/// A step taken from the cache: counted, shown as Docker shows it, timed.
async fn reused(
    out: &Output<'_>,
    built: &Built,
    step: &dockerfile::instructions::Step,
    started: std::time::Instant,
) -> Result<(), BuildError> {
    crate::metrics::build_step(true);
    let (_, id) = config_id(&built.doc);
    out.say(format!(" ---> Using cache\n ---> {}\n", short_id(&id)))
        .await?;
    step_done(step, true, started);
    Ok(())
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
