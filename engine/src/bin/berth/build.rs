//! `berth build`, `berth commit`, `berth history` and `berth builder
//! prune`. Build: the context directory packed
//! with its `.dockerignore` (the library's `build::context::pack`), sent to
//! `POST /build` with the options as docker's legacy builder sends them,
//! and the messages printed as they come (`-q`: the image id only), or,
//! on a terminal, step by step (`output::build_progress`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use berth_engine::build::context::pack::pack_dir;
use bytes::Bytes;
use hyper::Method;

use crate::client::{query, Client};
use crate::StatusError;

/// Build an image from a Dockerfile
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Set metadata for an image
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pull: bool,
    /// Type of progress output (auto, plain, tty, quiet): on a terminal
    /// (auto, tty) the running step with a spinner, collapsed when done
    #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "tty", "quiet"])]
    progress: String,
    /// The build context: a directory, or "-" for a tar on stdin
    context: String,
}

/// The Dockerfile's path inside the context directory.
fn dockerfile_in(context: &Path, file: Option<&str>) -> anyhow::Result<String> {
    let Some(file) = file else {
        return Ok("Dockerfile".to_string());
    };
    let given = PathBuf::from(file);
    let absolute = std::fs::canonicalize(&given)
        .map_err(|e| StatusError::new(1, format!("unable to prepare context: {file}: {e}")))?;
    let root = std::fs::canonicalize(context)?;
    match absolute.strip_prefix(&root) {
        Ok(rel) => Ok(rel.to_string_lossy().into_owned()),
        Err(_) => Err(StatusError::new(
            1,
            format!(
                "the Dockerfile ({file}) must be in the build context ({})",
                context.display()
            ),
        )
        .into()),
    }
}

pub async fn build(c: &Client, a: BuildArgs) -> anyhow::Result<()> {
    let quiet = a.quiet || a.progress == "quiet";
    let (body, dockerfile) = if a.context == "-" {
        let mut data = Vec::new();
        std::io::stdin().lock().read_to_end(&mut data)?;
        (data, a.file.clone().unwrap_or_else(|| "Dockerfile".into()))
    } else {
        let context = PathBuf::from(&a.context);
        if !context.is_dir() {
            return Err(StatusError::new(
                1,
                format!("unable to prepare context: path {:?} not found", a.context),
            )
            .into());
        }
        let dockerfile = dockerfile_in(&context, a.file.as_deref())?;
        let mut data = Vec::new();
        pack_dir(&context, &dockerfile, &mut data)
            .map_err(|e| StatusError::new(1, format!("unable to prepare context: {e}")))?;
        (data, dockerfile)
    };
    let mut build_args: BTreeMap<String, Option<String>> = BTreeMap::new();
    for arg in &a.build_args {
        match arg.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), Some(v.to_string())),
            // `--build-arg NAME` takes the value from the environment.
            None => build_args.insert(arg.clone(), std::env::var(arg).ok()),
        };
    }
    let labels: BTreeMap<String, String> = a
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    let mut q: Vec<(&str, String)> = Vec::new();
    for tag in &a.tags {
        q.push(("t", tag.clone()));
    }
    q.push(("dockerfile", dockerfile));
    q.push(("buildargs", serde_json::to_string(&build_args)?));
    q.push(("labels", serde_json::to_string(&labels)?));
    if let Some(target) = &a.target {
        q.push(("target", target.clone()));
    }
    if a.no_cache {
        q.push(("nocache", "1".into()));
    }
    if quiet {
        q.push(("q", "1".into()));
    }
    if a.pull {
        q.push(("pull", "1".into()));
    }
    q.push(("rm", "1".into()));
    let headers = [("content-type", "application/x-tar".to_string())];
    let resp = c
        .send(
            Method::POST,
            &format!("/build{}", query(&q)),
            Bytes::from(body),
            &headers,
        )
        .await?;
    let stdout = std::io::stdout();
    let steps = match a.progress.as_str() {
        "tty" => true,
        "auto" => stdout.is_terminal() && !quiet,
        _ => false,
    };
    if steps {
        return render_steps(resp, stdout.lock()).await;
    }
    let terminal = stdout.is_terminal() && a.progress != "plain";
    crate::image::render_stream(resp, stdout.lock(), terminal).await
}

/// The build stream drawn step by step for a terminal, the spinner turning
/// between messages.
async fn render_steps(
    resp: hyper::Response<hyper::body::Incoming>,
    out: impl std::io::Write,
) -> anyhow::Result<()> {
    use crate::output::build_progress::{BuildRenderer, TICK};
    use crate::output::progress::Lines;
    use http_body_util::BodyExt;
    let mut renderer = BuildRenderer::new(out, crate::output::terminal_width());
    let mut body = resp.into_body();
    let mut lines = Lines::default();
    let mut failure = None;
    let mut ticks = tokio::time::interval(TICK);
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = ticks.tick() => {
                renderer.tick();
                continue;
            }
        };
        let Some(frame) = frame else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        for msg in lines.push(&data)? {
            if let Err(e) = renderer.message(&msg) {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(msg) = lines.finish()? {
        if let Err(e) = renderer.message(&msg) {
            failure.get_or_insert(e);
        }
    }
    match failure {
        Some(e) => Err(StatusError::new(1, e).into()),
        None => {
            renderer.end();
            Ok(())
        }
    }
}

/// Remove build cache
#[derive(clap::Args)]
pub struct BuilderPruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove all unused build cache, not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
}

pub async fn builder_prune(c: &Client, a: BuilderPruneArgs) -> anyhow::Result<()> {
    let _ = (a.force, a.all);
    let report: serde_json::Value = c.json(Method::POST, "/build/prune", None).await?;
    let reclaimed = report["SpaceReclaimed"].as_u64().unwrap_or(0);
    println!(
        "Total:\t{}",
        berth_engine::images::transfer::human_size(reclaimed as i64)
    );
    Ok(())
}

/// Create a new image from a container's changes
#[derive(clap::Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set)]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

pub async fn commit(c: &Client, a: CommitArgs) -> anyhow::Result<()> {
    let mut q: Vec<(&str, String)> = vec![("container", a.container.clone())];
    if let Some(reference) = &a.reference {
        // The tag is after the last colon that is not part of a registry
        // host's port (no slash after it).
        match reference.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => {
                q.push(("repo", repo.to_string()));
                q.push(("tag", tag.to_string()));
            }
            _ => q.push(("repo", reference.clone())),
        }
    }
    if let Some(author) = &a.author {
        q.push(("author", author.clone()));
    }
    if let Some(message) = &a.message {
        q.push(("comment", message.clone()));
    }
    for change in &a.changes {
        q.push(("changes", change.clone()));
    }
    q.push(("pause", if a.pause { "1".into() } else { "0".into() }));
    let answer: serde_json::Value = c
        .json(Method::POST, &format!("/commit{}", query(&q)), None)
        .await?;
    println!("{}", answer["Id"].as_str().unwrap_or_default());
    Ok(())
}

/// Show the history of an image
#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    image: String,
}

const HISTORY_HEADERS: [(&str, &str); 6] = [
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

pub async fn history(c: &Client, a: HistoryArgs) -> anyhow::Result<()> {
    use crate::output::{short_id, units};
    let path = format!("/images/{}/history", crate::client::enc(&a.image));
    let list: Vec<serde_json::Value> = c.json(Method::GET, &path, None).await?;
    let trunc = !a.no_trunc;
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|entry| {
            let id = entry["Id"].as_str().unwrap_or("<missing>");
            let id = if trunc && id.starts_with("sha256:") {
                short_id(id)
            } else {
                id.to_string()
            };
            let created = entry["Created"].as_i64().unwrap_or(0);
            let mut created_by = entry["CreatedBy"].as_str().unwrap_or("").replace('\t', " ");
            if trunc && created_by.chars().count() > 45 {
                created_by = created_by.chars().take(44).collect::<String>() + "…";
            }
            let size = entry["Size"].as_f64().unwrap_or(0.0);
            serde_json::json!({
                "ID": id,
                "CreatedSince": if a.human { units::ago(created as f64) } else { created.to_string() },
                "CreatedAt": units::go_time_string(created),
                "CreatedBy": created_by,
                "Size": if a.human { units::human_size_precision(size, 3) } else { format!("{size}") },
                "Comment": entry["Comment"].as_str().unwrap_or(""),
            })
        })
        .collect();
    let format = if a.quiet {
        Some("{{.ID}}".to_string())
    } else {
        a.format.clone()
    };
    crate::common::print_rows(
        format.as_deref(),
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
        &rows,
        &HISTORY_HEADERS,
    )
}
