//! `run`, `create`, `attach` and `start -a`: docker's sequence. `run`
//! creates the container (pulling its image on a 404 unless `--pull
//! never`), attaches with the connection upgrade before starting it, asks
//! for its exit (`wait?condition=next-exit`, `removed` with `--rm`) before
//! starting it, starts it, relays stdio, and exits with its code.

use berth_client::trace::{self, Layer};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::client::{enc, query, Client, ClientError};
use crate::common::Reference;
use crate::opts::ContainerOpts;
use crate::stream::{relay, RelayEnd, RelayOptions};
use crate::terminal::{self, DEFAULT_DETACH_KEYS};
use crate::{image, StatusError};

#[derive(Subcommand)]
pub enum RunCommand {
    /// Create and run a new container from an image
    #[command(
        disable_help_flag = true,
        override_usage = "berth run [OPTIONS] IMAGE [COMMAND] [ARG...]"
    )]
    Run(Box<RunArgs>),
    /// Create a new container
    #[command(
        disable_help_flag = true,
        override_usage = "berth create [OPTIONS] IMAGE [COMMAND] [ARG...]"
    )]
    Create(Box<CreateArgs>),
    /// Attach local standard input, output, and error streams to a running container
    Attach(AttachArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Print where the time of the run went, phase by phase through every
    /// layer (CLI, berthd, supervisor, shim, runtime), to stderr
    #[arg(long)]
    pub trace: bool,
    #[command(flatten)]
    pub opts: ContainerOpts,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: ContainerOpts,
}

#[derive(Args)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    pub container: String,
}

pub async fn run(c: &Client, cmd: RunCommand) -> anyhow::Result<()> {
    match cmd {
        RunCommand::Run(a) if a.trace => run_traced(c, *a).await,
        RunCommand::Run(a) => run_container(c, *a).await,
        RunCommand::Create(a) => {
            let id = create(c, &a.opts, true)
                .await
                .map_err(|e| usage_error("create", e))?;
            println!("{id}");
            Ok(())
        }
        RunCommand::Attach(a) => attach(c, a).await,
    }
}

/// docker's "docker: ERROR\n\nRun 'docker run --help'" wrapping, exit 125.
fn usage_error(cmd: &str, e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<StatusError>().is_some() {
        return e;
    }
    if let Some(crate::opts::OptsError::Flag { .. }) = e.downcast_ref::<crate::opts::OptsError>() {
        // A bad flag value: docker's usage error.
        return StatusError::new(
            125,
            format!(
                "{e}\n\nUsage:  berth {cmd} [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nRun 'berth {cmd} --help' for more information"
            ),
        )
        .into();
    }
    StatusError::new(
        125,
        format!("berth: {e:#}\n\nRun 'berth {cmd} --help' for more information"),
    )
    .into()
}

/// Creates the container, pulling its image first as `--pull` says.
async fn create(c: &Client, opts: &ContainerOpts, attach: bool) -> anyhow::Result<String> {
    let request = opts.to_request(attach)?;
    let body = serde_json::to_value(&request)?;
    let mut q = Vec::new();
    if let Some(name) = &opts.name {
        q.push(("name", name.clone()));
    }
    if let Some(p) = &opts.platform {
        q.push(("platform", p.clone()));
    }
    let path = format!("/containers/create{}", query(&q));
    let image = opts.image().to_string();
    match opts.pull.as_str() {
        "always" => image::pull_quiet_to_stderr(c, &image).await?,
        "missing" | "never" => {}
        other => {
            return Err(anyhow::anyhow!(
            "invalid pull option: '{other}': must be one of \"always\", \"missing\" or \"never\""
        ))
        }
    }
    let resp: Result<Value, ClientError> = c.json(Method::POST, &path, Some(&body)).await;
    let resp = match resp {
        // As docker: a 404 from create is the image missing.
        Err(e) if e.status() == Some(404) && opts.pull == "missing" => {
            let r = Reference::parse(&image);
            let shown = if r.tag.is_none() && r.digest.is_none() {
                format!("{image}:latest")
            } else {
                image.clone()
            };
            eprintln!("Unable to find image '{shown}' locally");
            image::pull_quiet_to_stderr(c, &image).await?;
            c.json(Method::POST, &path, Some(&body)).await?
        }
        other => other?,
    };
    for w in resp["Warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            eprintln!("WARNING: {w}");
        }
    }
    Ok(resp["Id"].as_str().unwrap_or_default().to_string())
}

/// The exit code docker gives a failed start, from the daemon's words as
/// docker reads them (`runStartContainerErr`): 127 when the command is not
/// found, 126 when it cannot be run, 125 otherwise.
fn start_failure_code(message: &str) -> i32 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
        || message.contains("system cannot find the file specified")
    {
        127
    } else if message.contains("permission denied") || message.contains("is a directory") {
        126
    } else {
        125
    }
}

/// docker refuses `-it` when stdin is not a terminal.
pub fn check_tty_input(tty: bool, interactive: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if tty && interactive && !std::io::stdin().is_terminal() {
        return Err(StatusError::new(1, "the input device is not a TTY").into());
    }
    Ok(())
}

/// `run --trace`: the run, then its phases from every layer on stderr, on
/// one time base (CLOCK_MONOTONIC), whether the run succeeded or not.
async fn run_traced(c: &Client, a: RunArgs) -> anyhow::Result<()> {
    let collected = trace::Trace::default();
    let result = trace::scope(Some(collected.clone()), async {
        let _total = trace::span(Layer::Cli, "berth run");
        run_container(c, a).await
    })
    .await;
    eprint!("{}", trace::render(collected.take()));
    result
}

async fn run_container(c: &Client, a: RunArgs) -> anyhow::Result<()> {
    let opts = &a.opts;
    if !a.detach {
        check_tty_input(opts.tty, opts.interactive)?;
    }
    let detach_keys = match &opts.detach_keys {
        Some(k) => terminal::detach_keys(k).map_err(|e| usage_error("run", e.into()))?,
        None => DEFAULT_DETACH_KEYS.to_vec(),
    };
    if trace::active() {
        // The connection's first request, the API version's negotiation,
        // timed on its own.
        let _span = trace::span(Layer::Cli, "connect (API version)");
        c.version()
            .await
            .map_err(|e| usage_error("run", e.into()))?;
    }
    let span = trace::span(Layer::Cli, "create");
    let id = create(c, opts, !a.detach)
        .await
        .map_err(|e| usage_error("run", e))?;
    drop(span);
    if a.detach {
        // docker prints the id before starting, so it is shown even when
        // the start fails.
        println!("{id}");
        let _span = trace::span(Layer::Cli, "start");
        c.post(&format!("/containers/{id}/start"))
            .await
            .map_err(start_error)?;
        return Ok(());
    }
    let mut aq = vec![
        ("stream", "1".to_string()),
        ("stdout", "1".to_string()),
        ("stderr", "1".to_string()),
    ];
    if opts.interactive {
        aq.push(("stdin", "1".into()));
    }
    if let Some(k) = &opts.detach_keys {
        aq.push(("detachKeys", k.clone()));
    }
    let span = trace::span(Layer::Cli, "attach");
    let conn = c
        .upgrade(
            Method::POST,
            &format!("/containers/{id}/attach{}", query(&aq)),
            None,
        )
        .await
        .map_err(|e| usage_error("run", e.into()))?;
    drop(span);
    // The wait is registered (its response headers back) before the start,
    // so a container that exits at once is not missed.
    let condition = if opts.rm { "removed" } else { "next-exit" };
    let span = trace::span(Layer::Cli, "wait (registered)");
    let wait = c
        .send(
            Method::POST,
            &format!("/containers/{id}/wait?condition={condition}"),
            bytes::Bytes::new(),
            &[],
        )
        .await
        .map_err(|e| usage_error("run", e.into()))?;
    drop(span);
    let span = trace::span(Layer::Cli, "start");
    let started = c.post(&format!("/containers/{id}/start")).await;
    drop(span);
    let ran = trace::span(
        Layer::Cli,
        "the container runs: output relayed, exit waited for",
    );
    if let Err(e) = started {
        if opts.rm {
            let _ = c
                .bytes(Method::DELETE, &format!("/containers/{id}?force=1"), None)
                .await;
        }
        return Err(start_error(e));
    }
    if opts.tty {
        resize(c, &format!("/containers/{id}/resize")).await;
        spawn_resizer(c, format!("/containers/{id}/resize"));
    } else {
        spawn_signal_proxy(c, &id);
    }
    let end = relay(
        conn,
        RelayOptions {
            tty: opts.tty,
            stdin: opts.interactive,
            detach_keys,
        },
    )
    .await?;
    if end == RelayEnd::Detached {
        return Ok(());
    }
    let code = exit_code(wait).await?;
    drop(ran);
    if code == 0 {
        Ok(())
    } else {
        Err(StatusError::silent(code).into())
    }
}

fn start_error(e: ClientError) -> anyhow::Error {
    let code = e.daemon_message().map_or(125, start_failure_code);
    StatusError::new(
        code,
        format!("berth: {e}\n\nRun 'berth run --help' for more information"),
    )
    .into()
}

/// The exit code in the body of `POST /containers/{id}/wait`.
async fn exit_code(resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<i32> {
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&body)?;
    if let Some(msg) = v["Error"]["Message"].as_str().filter(|m| !m.is_empty()) {
        return Err(StatusError::new(125, msg.to_string()).into());
    }
    Ok(v["StatusCode"].as_i64().unwrap_or(125) as i32)
}

/// Tells the daemon the size of our terminal.
async fn resize(c: &Client, path: &str) {
    if let Some((rows, cols)) = terminal::size(libc::STDOUT_FILENO) {
        let _ = c.post(&format!("{path}?h={rows}&w={cols}")).await;
    }
}

/// Keeps the container's tty the size of ours (SIGWINCH).
fn spawn_resizer(c: &Client, path: String) {
    let Ok(mut winch) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return;
    };
    // A client of its own: the task outlives the borrow of `c`.
    let c = c.clone();
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            resize(&c, &path).await;
        }
    });
}

/// docker's `--sig-proxy`: the signals we receive go to the container
/// (without a tty; with one, the terminal sends the keys itself).
fn spawn_signal_proxy(c: &Client, id: &str) {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ];
    for (kind, name) in kinds {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let path = format!("/containers/{id}/kill?signal={name}");
        let c = c.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let _ = c.post(&path).await;
            }
        });
    }
}

async fn attach(c: &Client, a: AttachArgs) -> anyhow::Result<()> {
    let info: Value = c
        .json(
            Method::GET,
            &format!("/containers/{}/json", enc(&a.container)),
            None,
        )
        .await?;
    if !info["State"]["Running"].as_bool().unwrap_or(false) {
        return Err(StatusError::new(
            1,
            "You cannot attach to a stopped container, start it first",
        )
        .into());
    }
    if info["State"]["Paused"].as_bool().unwrap_or(false) {
        return Err(StatusError::new(
            1,
            "You cannot attach to a paused container, unpause it first",
        )
        .into());
    }
    let id = info["Id"].as_str().unwrap_or_default().to_string();
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !a.no_stdin && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    attach_and_wait(c, &id, tty, stdin, a.detach_keys, false).await
}

/// `start -a [-i]`: attach, start, relay, exit with the container's code.
pub async fn start_attached(
    c: &Client,
    name: &str,
    interactive: bool,
    detach_keys: Option<String>,
) -> anyhow::Result<()> {
    let info: Value = c
        .json(
            Method::GET,
            &format!("/containers/{}/json", enc(name)),
            None,
        )
        .await?;
    let id = info["Id"].as_str().unwrap_or_default().to_string();
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = interactive && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    attach_and_wait(c, &id, tty, stdin, detach_keys, true).await
}

async fn attach_and_wait(
    c: &Client,
    id: &str,
    tty: bool,
    stdin: bool,
    detach_keys: Option<String>,
    start: bool,
) -> anyhow::Result<()> {
    let keys = match &detach_keys {
        Some(k) => terminal::detach_keys(k)?,
        None => DEFAULT_DETACH_KEYS.to_vec(),
    };
    let mut q = vec![
        ("stream", "1".to_string()),
        ("stdout", "1".to_string()),
        ("stderr", "1".to_string()),
    ];
    if stdin {
        q.push(("stdin", "1".into()));
    }
    if let Some(k) = &detach_keys {
        q.push(("detachKeys", k.clone()));
    }
    let conn = c
        .upgrade(
            Method::POST,
            &format!("/containers/{id}/attach{}", query(&q)),
            None,
        )
        .await?;
    // As docker: the exit is waited for from before the start (attach
    // waits for the container to stop), and is the command's exit code.
    let condition = if start { "next-exit" } else { "not-running" };
    let wait = c
        .send(
            Method::POST,
            &format!("/containers/{id}/wait?condition={condition}"),
            bytes::Bytes::new(),
            &[],
        )
        .await?;
    if start {
        c.post(&format!("/containers/{id}/start")).await?;
    }
    if tty {
        resize(c, &format!("/containers/{id}/resize")).await;
        spawn_resizer(c, format!("/containers/{id}/resize"));
    }
    let end = relay(
        conn,
        RelayOptions {
            tty,
            stdin,
            detach_keys: keys,
        },
    )
    .await?;
    if end == RelayEnd::Detached {
        return Ok(());
    }
    match exit_code(wait).await? {
        0 => Ok(()),
        code => Err(StatusError::silent(code).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_map_to_docker_exit_codes() {
        assert_eq!(
            start_failure_code(
                "failed to create task: exec: \"nope\": executable file not found in $PATH"
            ),
            127
        );
        assert_eq!(
            start_failure_code("exec /etc/passwd: permission denied"),
            126
        );
        assert_eq!(start_failure_code("cgroup trouble"), 125);
    }
}
