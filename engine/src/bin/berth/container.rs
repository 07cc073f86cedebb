//! The container commands that act on existing containers: start, stop,
//! restart, kill, rm, pause, unpause, rename, update, wait, top, diff,
//! export, logs, and inspect (of containers and images).

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{enc, query, Client, ClientError};
use crate::common::for_each;
use crate::opts::{parse_cpus, parse_memory, parse_restart};
use crate::output::{json as out_json, table, template::Format, units};
use crate::StatusError;

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Pause all processes within one or more containers
    Pause(Targets),
    /// Unpause all processes within one or more containers
    Unpause(Targets),
    /// Rename a container
    Rename(RenameArgs),
    /// Update configuration of one or more containers
    Update(UpdateArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(Targets),
    /// Display the running processes of a container
    Top(TopArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(OneTarget),
    /// Export a container's filesystem as a tar archive
    Export(ExportArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Return low-level information on Docker objects
    Inspect(InspectArgs),
}

#[derive(Args)]
pub struct Targets {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct OneTarget {
    pub container: String,
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<i64>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Remove the specified link
    #[arg(short = 'l', long)]
    pub link: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args)]
pub struct UpdateArgs {
    /// Memory limit
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct TopArgs {
    pub container: String,
    /// Options of ps
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    pub container: String,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show extra details provided to logs
    #[arg(long)]
    pub details: bool,
    pub container: String,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    pub size: bool,
    /// Only inspect objects of the given type
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
}

pub async fn run(c: &Client, cmd: ContainerCommand) -> anyhow::Result<()> {
    match cmd {
        ContainerCommand::Start(a) => start(c, a).await,
        ContainerCommand::Stop(a) => stop(c, a, "stop").await,
        ContainerCommand::Restart(a) => stop(c, a, "restart").await,
        ContainerCommand::Kill(a) => {
            let q = query(
                &a.signal
                    .iter()
                    .map(|s| ("signal", s.clone()))
                    .collect::<Vec<_>>(),
            );
            for_each(&a.containers, |id| {
                let q = q.clone();
                async move {
                    c.post(&format!("/containers/{}/kill{q}", enc(&id))).await?;
                    Ok(Some(id))
                }
            })
            .await
        }
        ContainerCommand::Rm(a) => {
            let q = query(&[
                ("force", bool_param(a.force)),
                ("v", bool_param(a.volumes)),
                ("link", bool_param(a.link)),
            ]);
            for_each(&a.containers, |id| {
                let q = q.clone();
                async move {
                    c.bytes(
                        Method::DELETE,
                        &format!("/containers/{}{q}", enc(&id)),
                        None,
                    )
                    .await?;
                    Ok(Some(id))
                }
            })
            .await
        }
        ContainerCommand::Pause(a) => simple(c, &a.containers, "pause").await,
        ContainerCommand::Unpause(a) => simple(c, &a.containers, "unpause").await,
        ContainerCommand::Rename(a) => {
            let path = format!(
                "/containers/{}/rename?name={}",
                enc(&a.container),
                enc(&a.new_name)
            );
            c.post(&path).await.map_err(|e| {
                StatusError::new(
                    1,
                    format!(
                        "{e}\nError: failed to rename container named {}",
                        a.container
                    ),
                )
            })?;
            Ok(())
        }
        ContainerCommand::Update(a) => update(c, a).await,
        ContainerCommand::Wait(a) => {
            for_each(&a.containers, |id| async move {
                let v: Value = c
                    .json(
                        Method::POST,
                        &format!("/containers/{}/wait", enc(&id)),
                        None,
                    )
                    .await?;
                Ok(Some(v["StatusCode"].as_i64().unwrap_or(-1).to_string()))
            })
            .await
        }
        ContainerCommand::Top(a) => top(c, a).await,
        ContainerCommand::Diff(a) => {
            let changes: Value = c
                .json(
                    Method::GET,
                    &format!("/containers/{}/changes", enc(&a.container)),
                    None,
                )
                .await?;
            for ch in changes.as_array().into_iter().flatten() {
                let kind = match ch["Kind"].as_i64() {
                    Some(1) => "A",
                    Some(2) => "D",
                    _ => "C",
                };
                println!("{kind} {}", ch["Path"].as_str().unwrap_or(""));
            }
            Ok(())
        }
        ContainerCommand::Export(a) => {
            let path = format!("/containers/{}/export", enc(&a.container));
            download(c, &path, a.output.as_deref()).await
        }
        ContainerCommand::Logs(a) => logs(c, a).await,
        ContainerCommand::Inspect(a) => inspect(c, a).await,
    }
}

pub fn bool_param(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

async fn simple(c: &Client, targets: &[String], action: &str) -> anyhow::Result<()> {
    for_each(targets, |id| async move {
        c.post(&format!("/containers/{}/{action}", enc(&id)))
            .await?;
        Ok(Some(id))
    })
    .await
}

async fn start(c: &Client, a: StartArgs) -> anyhow::Result<()> {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return Err(StatusError::new(
                1,
                "you cannot start and attach multiple containers at once",
            )
            .into());
        }
        return crate::run::start_attached(c, &a.containers[0], a.interactive, a.detach_keys).await;
    }
    for_each(&a.containers, |id| async move {
        c.post(&format!("/containers/{}/start", enc(&id))).await?;
        Ok(Some(id))
    })
    .await
    .map_err(|e| match e.downcast::<StatusError>() {
        Ok(s) => StatusError::new(
            s.code,
            format!(
                "{}\nError: failed to start containers: {}",
                s.message,
                a.containers.join(", ")
            ),
        )
        .into(),
        Err(e) => e,
    })
}

async fn stop(c: &Client, a: StopArgs, action: &str) -> anyhow::Result<()> {
    let mut q = Vec::new();
    if let Some(s) = &a.signal {
        q.push(("signal", s.clone()));
    }
    if let Some(t) = a.time {
        q.push(("t", t.to_string()));
    }
    let q = query(&q);
    for_each(&a.containers, |id| {
        let q = q.clone();
        async move {
            c.post(&format!("/containers/{}/{action}{q}", enc(&id)))
                .await?;
            Ok(Some(id))
        }
    })
    .await
}

async fn update(c: &Client, a: UpdateArgs) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    if let Some(m) = &a.memory {
        body.insert("Memory".into(), json!(parse_memory(m, "-m, --memory")?));
    }
    if let Some(m) = &a.memory_swap {
        let v = if m == "-1" {
            -1
        } else {
            parse_memory(m, "--memory-swap")?
        };
        body.insert("MemorySwap".into(), json!(v));
    }
    if let Some(m) = &a.memory_reservation {
        body.insert(
            "MemoryReservation".into(),
            json!(parse_memory(m, "--memory-reservation")?),
        );
    }
    if let Some(cpus) = &a.cpus {
        body.insert("NanoCpus".into(), json!(parse_cpus(cpus)?));
    }
    if let Some(s) = a.cpu_shares {
        body.insert("CpuShares".into(), json!(s));
    }
    if let Some(p) = a.pids_limit {
        body.insert("PidsLimit".into(), json!(p));
    }
    if let Some(r) = &a.restart {
        body.insert(
            "RestartPolicy".into(),
            serde_json::to_value(parse_restart(r)?)?,
        );
    }
    if body.is_empty() {
        return Err(StatusError::new(
            1,
            "you must provide one or more flags when using this command",
        )
        .into());
    }
    let body = Value::Object(body);
    for_each(&a.containers, |id| {
        let body = body.clone();
        async move {
            let resp: Value = c
                .json(
                    Method::POST,
                    &format!("/containers/{}/update", enc(&id)),
                    Some(&body),
                )
                .await?;
            for w in resp["Warnings"].as_array().into_iter().flatten() {
                eprintln!("{}", w.as_str().unwrap_or_default());
            }
            Ok(Some(id))
        }
    })
    .await
}

async fn top(c: &Client, a: TopArgs) -> anyhow::Result<()> {
    let q = if a.ps_args.is_empty() {
        String::new()
    } else {
        query(&[("ps_args", a.ps_args.join(" "))])
    };
    let v: Value = c
        .json(
            Method::GET,
            &format!("/containers/{}/top{q}", enc(&a.container)),
            None,
        )
        .await?;
    let mut text = String::new();
    let titles: Vec<&str> = v["Titles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    text.push_str(&titles.join("\t"));
    text.push('\n');
    for row in v["Processes"].as_array().into_iter().flatten() {
        let cells: Vec<&str> = row
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        text.push_str(&cells.join("\t"));
        text.push('\n');
    }
    print!("{}", table::align(&text, 20, 3));
    Ok(())
}

/// Streams a response body to `-o FILE` or stdout (never to a terminal).
pub async fn download(c: &Client, path: &str, output: Option<&str>) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = match output {
        Some(file) => Box::new(
            std::fs::File::create(file)
                .map_err(|e| StatusError::new(1, format!("failed to export container: {e}")))?,
        ),
        None => {
            if std::io::stdout().is_terminal() {
                return Err(StatusError::new(
                    1,
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect",
                )
                .into());
            }
            Box::new(std::io::stdout().lock())
        }
    };
    let resp = c.send(Method::GET, path, bytes::Bytes::new(), &[]).await?;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.write_all(&data)?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn logs(c: &Client, a: LogsArgs) -> anyhow::Result<()> {
    let info: Value = c
        .json(
            Method::GET,
            &format!("/containers/{}/json", enc(&a.container)),
            None,
        )
        .await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let now = units::now_unix();
    let mut q = vec![
        ("stdout", "1".to_string()),
        ("stderr", "1".to_string()),
        ("tail", a.tail.clone()),
    ];
    for (name, value) in [("since", &a.since), ("until", &a.until)] {
        if let Some(v) = value {
            let t = units::api_time(v, now)
                .ok_or_else(|| StatusError::new(1, format!("invalid value for \"{name}\": failed to parse value as time or duration: \"{v}\"")))?;
            q.push((name, t));
        }
    }
    if a.follow {
        q.push(("follow", "1".into()));
    }
    if a.timestamps {
        q.push(("timestamps", "1".into()));
    }
    if a.details {
        q.push(("details", "1".into()));
    }
    let path = format!("/containers/{}/logs{}", enc(&a.container), query(&q));
    let resp = c.send(Method::GET, &path, bytes::Bytes::new(), &[]).await?;
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if tty {
            stdout.write_all(&data)?;
            stdout.flush()?;
            continue;
        }
        pending.extend_from_slice(&data);
        loop {
            if pending.len() < 8 {
                break;
            }
            let size =
                u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
            if pending.len() < 8 + size {
                break;
            }
            let payload = &pending[8..8 + size];
            if pending[0] == 2 {
                stderr.write_all(payload)?;
            } else {
                stdout.write_all(payload)?;
            }
            pending.drain(..8 + size);
        }
        stdout.flush()?;
        stderr.flush()?;
    }
    Ok(())
}

/// One object's raw JSON and kind, found by name.
async fn find_object(
    c: &Client,
    name: &str,
    kind: Option<&str>,
    size: bool,
) -> Result<Option<bytes::Bytes>, ClientError> {
    let tries: &[&str] = match kind {
        Some("container") => &["container"],
        Some("image") => &["image"],
        _ => &["container", "image"],
    };
    for t in tries {
        let path = match *t {
            "container" => format!(
                "/containers/{}/json{}",
                enc(name),
                if size { "?size=1" } else { "" }
            ),
            _ => format!("/images/{}/json", enc(name)),
        };
        match c.bytes(Method::GET, &path, None).await {
            Ok(b) => return Ok(Some(b)),
            // Asked for one kind, docker shows the daemon's own message.
            Err(e) if e.status() == Some(404) && kind.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

pub async fn inspect(c: &Client, a: InspectArgs) -> anyhow::Result<()> {
    if let Some(k) = a.kind.as_deref() {
        if !["container", "image"].contains(&k) {
            return Err(
                StatusError::new(1, format!("\"{k}\" is not a valid value for --type")).into(),
            );
        }
    }
    let format = match a.format.as_deref() {
        Some(f) if !f.is_empty() && f != "json" => {
            Some(Format::parse(f).map_err(|e| StatusError::new(1, e.to_string()))?)
        }
        _ => None,
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &a.names {
        match find_object(c, name, a.kind.as_deref(), a.size).await {
            Ok(Some(raw)) => docs.push(raw.to_vec()),
            Ok(None) => errors.push(format!("Error: No such object: {name}")),
            Err(e) if e.status() == Some(404) => errors.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = std::io::stdout().lock();
    match format {
        None => out.write_all(out_json::indented_array(&docs).as_bytes())?,
        Some(f) => {
            for doc in &docs {
                crate::output::template::remember_key_order(&String::from_utf8_lossy(doc));
                let value: Value = serde_json::from_slice(doc)?;
                let text = f
                    .render(&value)
                    .map_err(|e| StatusError::new(1, e.to_string()))?;
                writeln!(out, "{text}")?;
            }
            if docs.is_empty() {
                // docker's template inspector prints an empty line for nothing.
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StatusError::new(1, errors.join("\n")).into())
    }
}
