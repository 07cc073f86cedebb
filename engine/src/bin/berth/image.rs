//! The image commands: images, pull and push (docker's progress display),
//! tag, rmi, save, load, import, and image prune.

use std::io::{IsTerminal, Read, Write};

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{enc, query, Client};
use crate::common::{
    confirm, filters_json, for_each, go_io_error, print_rows, registry_auth, validate_reference,
    Reference,
};
use crate::container::{bool_param, download};
use crate::output::progress::{Lines, Renderer};
use crate::output::{short_id, terminal_width, units};
use crate::StatusError;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images
    Images(ImagesArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    pub repository: Option<String>,
}

#[derive(Args)]
pub struct PullArgs {
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    pub name: String,
}

#[derive(Args)]
pub struct PushArgs {
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub name: String,
}

#[derive(Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    pub no_prune: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long)]
    pub input: Option<String>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long)]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// file|URL|-
    pub source: String,
    pub reference: Option<String>,
}

#[derive(Args)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

pub async fn run(c: &Client, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Images(a) => images(c, a).await,
        ImageCommand::Pull(a) => pull(c, a).await,
        ImageCommand::Push(a) => push(c, a).await,
        ImageCommand::Tag(a) => {
            validate_reference(&a.target).map_err(|e| {
                StatusError::new(
                    1,
                    format!(
                        "Error parsing reference: {:?} is not a valid repository/tag: {e}",
                        a.target
                    ),
                )
            })?;
            let r = Reference::parse(&a.target);
            let path = format!(
                "/images/{}/tag{}",
                enc(&a.source),
                query(&[("repo", r.repo.clone()), ("tag", r.tag_or_digest())])
            );
            c.post(&path).await?;
            Ok(())
        }
        ImageCommand::Rmi(a) => {
            let q = query(&[
                ("force", bool_param(a.force)),
                ("noprune", bool_param(a.no_prune)),
            ]);
            for_each(&a.images, |name| {
                let q = q.clone();
                async move {
                    let list: Vec<Value> = c
                        .json(Method::DELETE, &format!("/images/{}{q}", enc(&name)), None)
                        .await?;
                    Ok(Some(deleted_lines(&list, "Untagged", "Deleted").join("\n"))
                        .filter(|s| !s.is_empty()))
                }
            })
            .await
        }
        ImageCommand::Save(a) => {
            let q: Vec<(&str, String)> = a.images.iter().map(|i| ("names", i.clone())).collect();
            download(c, &format!("/images/get{}", query(&q)), a.output.as_deref()).await
        }
        ImageCommand::Load(a) => load(c, a).await,
        ImageCommand::Import(a) => import(c, a).await,
    }
}

/// `Untagged: x` / `Deleted: y` lines of a delete or prune answer.
fn deleted_lines(list: &[Value], untagged: &str, deleted: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in list {
        if let Some(u) = item["Untagged"].as_str() {
            out.push(format!("{untagged}: {u}"));
        }
        if let Some(d) = item["Deleted"].as_str() {
            out.push(format!("{deleted}: {d}"));
        }
    }
    out
}

const IMAGE_HEADERS: [(&str, &str); 10] = [
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
];

pub async fn images(c: &Client, a: ImagesArgs) -> anyhow::Result<()> {
    let mut filters = a.filter.clone();
    if let Some(r) = &a.repository {
        filters.push(format!("reference={r}"));
    }
    let mut q = Vec::new();
    if a.all {
        q.push(("all", "1".to_string()));
    }
    if let Some(f) = filters_json(&filters)? {
        q.push(("filters", f));
    }
    let list: Vec<Value> = c
        .json(Method::GET, &format!("/images/json{}", query(&q)), None)
        .await?;
    let trunc = !a.no_trunc;
    let mut rows = Vec::new();
    for img in &list {
        rows.extend(image_rows(img, trunc));
    }
    let default_table = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let format = if a.quiet {
        rows.dedup_by(|x, y| x["ID"] == y["ID"]);
        Some("{{.ID}}".to_string())
    } else {
        a.format.clone()
    };
    print_rows(format.as_deref(), default_table, &rows, &IMAGE_HEADERS)
}

/// One row per tag of an image (one `<none>` row when untagged).
fn image_rows(img: &Value, trunc: bool) -> Vec<Value> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let id = img["Id"].as_str().unwrap_or_default();
    let id = if trunc { short_id(id) } else { id.to_string() };
    let created = img["Created"].as_i64().unwrap_or(0);
    let size = img["Size"].as_f64().unwrap_or(0.0);
    let digests = strs(&img["RepoDigests"]);
    let digest_of = |repo: &str| {
        digests
            .iter()
            .find_map(|d| {
                d.split_once('@')
                    .filter(|(r, _)| *r == repo)
                    .map(|(_, d)| d.to_string())
            })
            .unwrap_or_else(|| "<none>".into())
    };
    let mut pairs: Vec<(String, String)> = strs(&img["RepoTags"])
        .iter()
        .filter(|t| t.as_str() != "<none>:<none>")
        .map(|t| {
            let r = Reference::parse(t);
            (r.repo, r.tag.unwrap_or_else(|| "<none>".into()))
        })
        .collect();
    if pairs.is_empty() {
        match digests.first().and_then(|d| d.split_once('@')) {
            Some((repo, _)) => pairs.push((repo.to_string(), "<none>".into())),
            None => pairs.push(("<none>".into(), "<none>".into())),
        }
    }
    let containers = img["Containers"].as_i64().unwrap_or(-1);
    pairs
        .into_iter()
        .map(|(repo, tag)| {
            json!({
                "ID": id,
                "Digest": digest_of(&repo),
                "Repository": repo,
                "Tag": tag,
                "CreatedSince": units::ago(created as f64),
                "CreatedAt": units::go_time_string(created),
                "Size": units::human_size_precision(size, 3),
                "Containers": if containers < 0 { "N/A".to_string() } else { containers.to_string() },
                "SharedSize": "N/A",
                "UniqueSize": "N/A",
                "VirtualSize": units::human_size_precision(size, 3),
            })
        })
        .collect()
}

/// Draws a JSON message stream on `out`; an error line fails it.
pub(crate) async fn render_stream(
    resp: hyper::Response<hyper::body::Incoming>,
    out: impl Write,
    terminal: bool,
) -> anyhow::Result<()> {
    let mut renderer = Renderer::new(out, terminal, terminal_width());
    let mut body = resp.into_body();
    let mut lines = Lines::default();
    let mut failure = None;
    while let Some(frame) = body.frame().await {
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
        Some(e) => Err(StatusError::new(1, e.to_string()).into()),
        None => Ok(()),
    }
}

/// What pull and push check before asking the daemon: the grammar of a
/// reference (docker leaves an upper-case name to the daemon).
fn check_pull_reference(name: &str) -> anyhow::Result<()> {
    match validate_reference(name) {
        Err(e) if !e.ends_with("must be lowercase") => Err(StatusError::new(1, e).into()),
        _ => Ok(()),
    }
}

fn pull_path(name: &str, platform: Option<&str>) -> String {
    let r = Reference::parse(name);
    let mut q = vec![("fromImage", r.repo.clone()), ("tag", r.tag_or_digest())];
    if let Some(p) = platform {
        q.push(("platform", p.to_string()));
    }
    format!("/images/create{}", query(&q))
}

async fn pull(c: &Client, a: PullArgs) -> anyhow::Result<()> {
    check_pull_reference(&a.name)?;
    let r = Reference::parse(&a.name);
    if r.tag.is_none() && r.digest.is_none() {
        println!("Using default tag: latest");
    }
    let headers = [("x-registry-auth", registry_auth(&a.name))];
    let resp = c
        .send(
            Method::POST,
            &pull_path(&a.name, a.platform.as_deref()),
            Bytes::new(),
            &headers,
        )
        .await?;
    if a.quiet {
        render_stream(resp, std::io::sink(), false).await?;
    } else {
        let stdout = std::io::stdout();
        let terminal = stdout.is_terminal();
        render_stream(resp, stdout.lock(), terminal).await?;
    }
    println!("{}", r.full());
    Ok(())
}

/// The pull `run` and `create` do for a missing image: progress on stderr.
pub async fn pull_quiet_to_stderr(c: &Client, name: &str) -> anyhow::Result<()> {
    let headers = [("x-registry-auth", registry_auth(name))];
    let resp = c
        .send(Method::POST, &pull_path(name, None), Bytes::new(), &headers)
        .await?;
    let stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    render_stream(resp, stderr.lock(), terminal).await
}

async fn push(c: &Client, a: PushArgs) -> anyhow::Result<()> {
    check_pull_reference(&a.name)?;
    let r = Reference::parse(&a.name);
    if r.tag.is_none() && r.digest.is_none() {
        println!("Using default tag: latest");
    }
    let path = format!(
        "/images/{}/push{}",
        enc(&r.repo),
        query(&[("tag", r.tag_or_digest())])
    );
    let headers = [("x-registry-auth", registry_auth(&a.name))];
    let resp = c.send(Method::POST, &path, Bytes::new(), &headers).await?;
    if a.quiet {
        render_stream(resp, std::io::sink(), false).await?;
        println!("{}", a.name);
    } else {
        let stdout = std::io::stdout();
        let terminal = stdout.is_terminal();
        render_stream(resp, stdout.lock(), terminal).await?;
    }
    Ok(())
}

fn read_input(path: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    match path {
        Some("-") | None => {
            std::io::stdin().lock().read_to_end(&mut data)?;
        }
        Some(p) => {
            data = std::fs::read(p)
                .map_err(|e| StatusError::new(1, format!("open {p}: {}", go_io_error(&e))))?;
        }
    }
    Ok(data)
}

async fn load(c: &Client, a: LoadArgs) -> anyhow::Result<()> {
    if a.input.is_none() && std::io::stdin().is_terminal() {
        return Err(StatusError::new(1, "requested load from stdin, but stdin is empty").into());
    }
    let data = read_input(a.input.as_deref())?;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let quiet = a.quiet || !terminal;
    let path = format!("/images/load?quiet={}", bool_param(quiet));
    let headers = [("content-type", "application/x-tar".to_string())];
    let resp = c
        .send(Method::POST, &path, Bytes::from(data), &headers)
        .await?;
    render_stream(resp, stdout.lock(), terminal).await
}

async fn import(c: &Client, a: ImportArgs) -> anyhow::Result<()> {
    let mut q = Vec::new();
    let is_url = a.source.starts_with("http://") || a.source.starts_with("https://");
    q.push((
        "fromSrc",
        if is_url { a.source.clone() } else { "-".into() },
    ));
    if let Some(r) = &a.reference {
        let r = Reference::parse(r);
        q.push(("repo", r.repo.clone()));
        if let Some(t) = r.tag {
            q.push(("tag", t));
        }
    }
    if let Some(m) = &a.message {
        q.push(("message", m.clone()));
    }
    for ch in &a.change {
        q.push(("changes", ch.clone()));
    }
    let data = if is_url {
        Vec::new()
    } else {
        read_input(Some(&a.source))?
    };
    let headers = [("content-type", "application/x-tar".to_string())];
    let resp = c
        .send(
            Method::POST,
            &format!("/images/create{}", query(&q)),
            Bytes::from(data),
            &headers,
        )
        .await?;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    render_stream(resp, stdout.lock(), terminal).await
}

pub async fn prune(c: &Client, a: ImagePruneArgs) -> anyhow::Result<()> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.force && !confirm(warning) {
        return Ok(());
    }
    let (lines, reclaimed) = prune_images(c, a.all, &a.filter).await?;
    if !lines.is_empty() {
        println!("Deleted Images:");
        for l in &lines {
            println!("{l}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", units::human_size(reclaimed));
    Ok(())
}

/// `POST /images/prune`: the lines docker prints and the space reclaimed.
pub async fn prune_images(
    c: &Client,
    all: bool,
    filters: &[String],
) -> anyhow::Result<(Vec<String>, f64)> {
    let mut filters = filters.to_vec();
    filters.push(format!("dangling={}", !all));
    let f = filters_json(&filters)?.unwrap_or_default();
    let v: Value = c
        .json(
            Method::POST,
            &format!("/images/prune{}", query(&[("filters", f)])),
            None,
        )
        .await?;
    let list = v["ImagesDeleted"].as_array().cloned().unwrap_or_default();
    Ok((
        deleted_lines(&list, "untagged", "deleted"),
        v["SpaceReclaimed"].as_f64().unwrap_or(0.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_rows_per_tag_and_untagged() {
        let img = json!({"Id": "sha256:0123456789abcdef", "RepoTags": ["a:1", "b:latest"],
            "RepoDigests": ["a@sha256:99"], "Created": 0, "Size": 4_260_000});
        let rows = image_rows(&img, true);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0]["Repository"].as_str(), rows[0]["Tag"].as_str()),
            (Some("a"), Some("1"))
        );
        assert_eq!(rows[0]["Digest"], "sha256:99");
        assert_eq!(rows[1]["Digest"], "<none>");
        assert_eq!(rows[0]["ID"], "0123456789ab");
        assert_eq!(rows[0]["Size"], "4.26MB");
        let none = image_rows(&json!({"Id": "sha256:ab", "RepoTags": null}), true);
        assert_eq!(
            (none[0]["Repository"].as_str(), none[0]["Tag"].as_str()),
            (Some("<none>"), Some("<none>"))
        );
    }
}
