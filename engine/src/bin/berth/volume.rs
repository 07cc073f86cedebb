//! `berth volume create|ls|inspect|rm|prune`, with docker's flags and
//! output, and the volumes section of `berth system df -v`.

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{enc, query, Client};
use crate::common::{confirm, filters_json, for_each, print_rows};
use crate::output::units;
use crate::StatusError;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Specify volume name
    #[arg(long)]
    pub name: Option<String>,
    #[arg(value_name = "VOLUME")]
    pub volume: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

pub async fn run(c: &Client, cmd: VolumeCommand) -> anyhow::Result<()> {
    match cmd {
        VolumeCommand::Create(a) => create(c, a).await,
        VolumeCommand::Ls(a) => ls(c, a).await,
        VolumeCommand::Inspect(a) => inspect(c, a).await,
        VolumeCommand::Rm(a) => {
            let force = a.force;
            for_each(&a.names, |name| async move {
                let q = if force { "?force=1" } else { "" };
                c.bytes(Method::DELETE, &format!("/volumes/{}{q}", enc(&name)), None)
                    .await?;
                Ok(Some(name))
            })
            .await
        }
        VolumeCommand::Prune(a) => prune(c, a).await,
    }
}

/// `k=v` flags as a map (a lone `k` is `k=`).
fn key_values(flag: &str, values: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for v in values {
        let (k, val) = v.split_once('=').unwrap_or((v, ""));
        if k.is_empty() {
            return Err(
                StatusError::new(125, format!("invalid argument {v:?} for \"{flag}\"")).into(),
            );
        }
        out.insert(k.to_string(), Value::String(val.to_string()));
    }
    Ok(out)
}

async fn create(c: &Client, a: CreateArgs) -> anyhow::Result<()> {
    let name =
        match (a.name, a.volume) {
            (Some(n), Some(v)) if n != v => return Err(StatusError::new(
                1,
                "conflicting options: either specify --name or provide positional arg, not both",
            )
            .into()),
            (n, v) => n.or(v).unwrap_or_default(),
        };
    let body = json!({
        "Name": name, "Driver": a.driver,
        "DriverOpts": key_values("--opt", &a.opt)?,
        "Labels": key_values("--label", &a.label)?,
    });
    let v: Value = c.json(Method::POST, "/volumes/create", Some(&body)).await?;
    println!("{}", v["Name"].as_str().unwrap_or_default());
    Ok(())
}

async fn ls(c: &Client, a: LsArgs) -> anyhow::Result<()> {
    let q = match filters_json(&a.filter)? {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let v: Value = c.json(Method::GET, &format!("/volumes{q}"), None).await?;
    let mut list = v["Volumes"].as_array().cloned().unwrap_or_default();
    list.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
    let rows: Vec<Value> = list.iter().map(row).collect();
    let format = if a.quiet {
        Some("{{.Name}}")
    } else {
        a.format.as_deref()
    };
    print_rows(
        format,
        "table {{.Driver}}\t{{.Name}}",
        &rows,
        &[
            ("Driver", "DRIVER"),
            ("Name", "VOLUME NAME"),
            ("Scope", "SCOPE"),
            ("Mountpoint", "MOUNTPOINT"),
            ("Labels", "LABELS"),
            ("Links", "LINKS"),
            ("Size", "SIZE"),
        ],
    )
}

/// A volume as `ls` and `system df -v` templates see it.
fn row(v: &Value) -> Value {
    let labels: Vec<String> = v["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let usage = |k: &str| v["UsageData"][k].as_f64();
    json!({
        "Driver": v["Driver"], "Name": v["Name"], "Scope": v["Scope"],
        "Mountpoint": v["Mountpoint"], "Labels": labels.join(","),
        "Links": usage("RefCount").map(|n| (n as i64).to_string()).unwrap_or("N/A".into()),
        "Size": usage("Size").map(units::human_size).unwrap_or("N/A".into()),
    })
}

async fn inspect(c: &Client, a: InspectArgs) -> anyhow::Result<()> {
    crate::common::inspect_each(c, "/volumes", &a.names, a.format.as_deref()).await
}

async fn prune(c: &Client, a: PruneArgs) -> anyhow::Result<()> {
    let warning = if a.all {
        "WARNING! This will remove all local volumes not used by at least one container."
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    };
    if !a.force && !confirm(warning) {
        return Ok(());
    }
    let mut filters = a.filter.clone();
    if a.all {
        filters.push("all=true".into());
    }
    let q = match filters_json(&filters)? {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let v: Value = c
        .json(Method::POST, &format!("/volumes/prune{q}"), None)
        .await?;
    let deleted = v["VolumesDeleted"].as_array().cloned().unwrap_or_default();
    if !deleted.is_empty() {
        println!("Deleted Volumes:");
        for d in &deleted {
            println!("{}", d.as_str().unwrap_or_default());
        }
        println!();
    }
    let reclaimed = v["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    println!("Total reclaimed space: {}", units::human_size(reclaimed));
    Ok(())
}

/// The volumes section of `system df -v`, from `/system/df`'s answer.
pub fn print_df_volumes(df: &Value) -> anyhow::Result<()> {
    println!("Local Volumes space usage:\n");
    let mut list = df["Volumes"].as_array().cloned().unwrap_or_default();
    list.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
    let rows: Vec<Value> = list.iter().map(row).collect();
    print_rows(
        None,
        "table {{.Name}}\t{{.Links}}\t{{.Size}}",
        &rows,
        &[
            ("Name", "VOLUME NAME"),
            ("Links", "LINKS"),
            ("Size", "SIZE"),
        ],
    )
}

/// `system df -v`: images, containers and volumes, each with its sizes.
pub fn print_df_verbose(df: &Value) -> anyhow::Result<()> {
    let list = |k: &str| df[k].as_array().cloned().unwrap_or_default();
    let f = |x: &Value| x.as_f64().unwrap_or(0.0);
    println!("Images space usage:\n");
    let images: Vec<Value> = list("Images")
        .iter()
        .map(|i| {
            let tag = i["RepoTags"][0].as_str().unwrap_or("<none>:<none>");
            let (repo, tag) = tag.rsplit_once(':').unwrap_or((tag, "<none>"));
            let id = i["Id"].as_str().unwrap_or_default();
            let id = id.strip_prefix("sha256:").unwrap_or(id);
            let shared = f(&i["SharedSize"]).max(0.0);
            json!({
                "Repository": repo, "Tag": tag, "ID": &id[..id.len().min(12)],
                "CreatedSince": units::ago(f(&i["Created"])), "Size": units::human_size(f(&i["Size"])),
                "SharedSize": units::human_size(shared),
                "UniqueSize": units::human_size(f(&i["Size"]) - shared),
                "Containers": (f(&i["Containers"]).max(0.0) as i64).to_string(),
            })
        })
        .collect();
    print_rows(
        None,
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
        &images,
        &[
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("ID", "IMAGE ID"),
            ("CreatedSince", "CREATED"),
            ("Size", "SIZE"),
            ("SharedSize", "SHARED SIZE"),
            ("UniqueSize", "UNIQUE SIZE"),
            ("Containers", "CONTAINERS"),
        ],
    )?;
    println!("\nContainers space usage:\n");
    let containers: Vec<Value> = list("Containers")
        .iter()
        .map(|c| {
            let id = c["Id"].as_str().unwrap_or_default();
            let mounts = c["Mounts"].as_array().cloned().unwrap_or_default();
            let volumes = mounts.iter().filter(|m| m["Type"] == "volume").count();
            let name = c["Names"][0].as_str().unwrap_or_default();
            json!({
                "ID": &id[..id.len().min(12)], "Image": c["Image"],
                "Command": format!("\"{}\"", c["Command"].as_str().unwrap_or_default()),
                "LocalVolumes": volumes.to_string(), "Size": units::human_size(f(&c["SizeRw"])),
                "CreatedSince": units::ago(f(&c["Created"])), "Status": c["Status"],
                "Names": name.trim_start_matches('/'),
            })
        })
        .collect();
    print_rows(
        None,
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.CreatedSince}}\t{{.Status}}\t{{.Names}}",
        &containers,
        &[
            ("ID", "CONTAINER ID"),
            ("Image", "IMAGE"),
            ("Command", "COMMAND"),
            ("LocalVolumes", "LOCAL VOLUMES"),
            ("Size", "SIZE"),
            ("CreatedSince", "CREATED"),
            ("Status", "STATUS"),
            ("Names", "NAMES"),
        ],
    )?;
    println!();
    print_df_volumes(df)?;
    let cache: f64 = list("BuildCache").iter().map(|x| f(&x["Size"])).sum();
    println!("\nBuild cache usage: {}\n", units::human_size(cache));
    Ok(())
}
