//! `berth-ctr run` and `berth-ctr tasks …`: running containers through the
//! Tasks service, with their stdio over Tasks.Attach.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::str::FromStr;

use anyhow::{anyhow, Context, Result};
use berth_client::{Client, Scoped};
use berth_proto::containers::v1::{DeleteContainerRequest, GetContainerRequest};
use berth_proto::tasks::v1::tasks_client::TasksClient;
use berth_proto::tasks::v1::{
    AttachRequest, CreateTaskRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest,
    KillRequest, ListPidsRequest, ListTasksRequest, PauseRequest, ResizePtyRequest, ResumeRequest,
    StartRequest, StatsRequest, Status as TaskStatus, WaitRequest,
};
use clap::{Args, Subcommand};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::containers::ProcessArgs;
use crate::output::{emit, for_each, print_table, rpc, size};

#[derive(Args)]
pub struct RunArgs {
    /// Container id [default: a random one]
    #[arg(long, value_name = "ID")]
    name: Option<String>,
    /// Delete the task and the container when the process exits
    #[arg(long)]
    rm: bool,
    /// Give the process a terminal
    #[arg(short, long)]
    tty: bool,
    /// Keep stdin open and feed it to the process
    #[arg(short, long)]
    interactive: bool,
    /// Start it and print its id instead of waiting for it
    #[arg(short, long, conflicts_with = "rm")]
    detach: bool,
    #[command(flatten)]
    process: ProcessArgs,
    /// Image name
    image: String,
    /// Command and arguments [default: the image's Entrypoint and Cmd]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
pub enum TasksCommand {
    /// List the namespace's tasks
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create a container's task and start it
    Start {
        /// Keep stdin open and attach to the process
        #[arg(short, long)]
        interactive: bool,
        /// Start it and return instead of attaching
        #[arg(short, long)]
        detach: bool,
        /// Container id
        id: String,
    },
    /// Signal a task's processes
    Kill {
        /// Signal name or number
        #[arg(short, long, default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the container
        #[arg(long)]
        all: bool,
        /// Signal this exec'd process instead of the init
        #[arg(long)]
        exec_id: Option<String>,
        /// Container ids
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run one more process in a running task
    Exec {
        /// Exec id
        #[arg(long, required = true)]
        exec_id: String,
        /// Give the process a terminal
        #[arg(short, long)]
        tty: bool,
        /// Keep stdin open and feed it to the process
        #[arg(short, long)]
        interactive: bool,
        /// Container id
        id: String,
        /// Command and arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the processes of a task (host pids)
    Ps {
        /// Container id
        id: String,
    },
    /// Freeze a task's processes
    Pause {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Thaw a task's processes
    Resume {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print a task's cgroup metrics
    Metrics {
        /// Container id
        id: String,
    },
    /// Delete stopped tasks
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// A signal by name (`SIGKILL`, `KILL`) or number.
fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|s| s as u32)
        .map_err(|_| anyhow!("unknown signal {text:?}"))
}

fn random_id() -> String {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

/// The terminal in raw mode while attached; restored on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on stdout, if it is one.
fn window_size() -> Option<(u32, u32)> {
    nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid, owned `ws`;
    // the descriptor is stdout's, open for the whole process.
    unsafe { get_winsize(libc::STDOUT_FILENO, &mut ws) }.ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// One attached process: where its output goes while it runs.
struct Attached {
    output: tonic::Streaming<berth_proto::tasks::v1::AttachResponse>,
    /// Held until the output ends: dropping the request stream would end
    /// the call.
    _requests: Option<mpsc::Sender<AttachRequest>>,
}

/// Attaches to a process (before it starts, so no output is missed); with
/// `stdin`, this process's stdin feeds it until end of file.
async fn attach(client: &Client, id: &str, exec_id: Option<&str>, stdin: bool) -> Result<Attached> {
    let (tx, rx) = mpsc::channel::<AttachRequest>(8);
    tx.send(AttachRequest {
        container_id: id.to_string(),
        exec_id: exec_id.unwrap_or_default().to_string(),
        stdin,
        ..Default::default()
    })
    .await
    .map_err(|_| anyhow!("attach: the request stream closed"))?;
    let mut held = None;
    if stdin {
        // A thread: reading stdin blocks, and must not hold up the runtime.
        std::thread::spawn(move || {
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let (data, close) = match input.read(&mut buf) {
                    Ok(0) | Err(_) => (Vec::new(), true),
                    Ok(n) => (buf[..n].to_vec(), false),
                };
                let msg = AttachRequest {
                    data,
                    close_stdin: close,
                    ..Default::default()
                };
                if tx.blocking_send(msg).is_err() || close {
                    break;
                }
            }
        });
    } else {
        held = Some(tx);
    }
    let output = client
        .tasks()
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(rpc)?
        .into_inner();
    Ok(Attached {
        output,
        _requests: held,
    })
}

impl Attached {
    /// Copies the output to stdout and stderr until the process is done.
    async fn copy_output(mut self) -> Result<()> {
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        while let Some(msg) = self.output.next().await {
            let msg = msg.map_err(rpc)?;
            let out: &mut dyn Write = if msg.stream == 2 {
                &mut stderr
            } else {
                &mut stdout
            };
            // A closed stdout (`| head`) ends the copy, not the task.
            if out.write_all(&msg.data).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Gives the process's terminal the size of ours, and keeps it so.
async fn follow_window_size(client: &Client, id: &str, exec_id: Option<&str>) {
    let Some(size) = window_size() else {
        return;
    };
    let mut tasks = client.tasks();
    let (id, exec_id) = (id.to_string(), exec_id.unwrap_or_default().to_string());
    let resize = move |(width, height)| ResizePtyRequest {
        container_id: id.clone(),
        exec_id: exec_id.clone(),
        width,
        height,
    };
    let _ = tasks.resize_pty(resize(size)).await;
    tokio::spawn(async move {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(size) = window_size() {
                let _ = tasks.resize_pty(resize(size)).await;
            }
        }
    });
}

/// Forwards the signals a person sends this client (Ctrl-C, `kill`) to the
/// process, as `ctr run` and `docker run` do, so it can shut down its way.
fn forward_signals(client: &Client, id: &str, exec_id: Option<&str>) {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    for kind in kinds {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let mut tasks = client.tasks();
        let (id, exec_id) = (id.to_string(), exec_id.unwrap_or_default().to_string());
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let request = KillRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                    signal: kind.as_raw_value() as u32,
                    all: false,
                };
                let _ = tasks.kill(request).await;
            }
        });
    }
}

/// Runs an image's process like `ctr run`: create the container and its
/// task, attach, start, wait; with --rm delete both. The process's exit
/// status becomes ours.
pub async fn run(client: &Client, a: RunArgs) -> Result<u8> {
    let id = a.name.clone().unwrap_or_else(random_id);
    let request = a
        .process
        .create_request(id.clone(), a.image.clone(), a.args.clone(), a.tty);
    client
        .containers()
        .create(request)
        .await
        .map_err(rpc)
        .context("create the container")?;
    let result = run_task(client, &id, &a).await;
    if a.rm {
        let removed = remove(client, &id).await;
        if let (Ok(_), Err(e)) = (&result, removed) {
            return Err(e);
        }
    }
    result
}

async fn run_task(client: &Client, id: &str, a: &RunArgs) -> Result<u8> {
    let mut tasks = client.tasks();
    tasks
        .create(CreateTaskRequest {
            container_id: id.to_string(),
            stdin: a.interactive,
            ..Default::default()
        })
        .await
        .map_err(rpc)
        .context("create the task")?;
    if a.detach {
        tasks
            .start(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })
            .await
            .map_err(rpc)?;
        println!("{id}");
        return Ok(0);
    }
    let attached = attach(client, id, None, a.interactive).await?;
    let _raw = if a.tty && a.interactive {
        RawTerminal::enter()
    } else {
        None
    };
    // The size holds from the first byte the process writes.
    if a.tty {
        follow_window_size(client, id, None).await;
    }
    tasks
        .start(StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .map_err(rpc)
        .context("start the task")?;
    if !(a.tty && a.interactive) {
        forward_signals(client, id, None);
    }
    attached.copy_output().await?;
    let exit = tasks
        .wait(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    Ok(exit_code(exit.exit_status))
}

fn exit_code(status: u32) -> u8 {
    u8::try_from(status).unwrap_or(255)
}

/// Deletes the task (killing it first if it still runs) and the container.
async fn remove(client: &Client, id: &str) -> Result<()> {
    let mut tasks = client.tasks();
    let deleted = tasks
        .delete(DeleteTaskRequest {
            container_id: id.to_string(),
        })
        .await;
    if let Err(status) = deleted {
        if status.code() == tonic::Code::FailedPrecondition {
            tasks
                .kill(KillRequest {
                    container_id: id.to_string(),
                    signal: libc::SIGKILL as u32,
                    all: true,
                    ..Default::default()
                })
                .await
                .map_err(rpc)?;
            tasks
                .wait(WaitRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                })
                .await
                .map_err(rpc)?;
            tasks
                .delete(DeleteTaskRequest {
                    container_id: id.to_string(),
                })
                .await
                .map_err(rpc)?;
        } else if status.code() != tonic::Code::NotFound {
            return Err(rpc(status));
        }
    }
    client
        .containers()
        .delete(DeleteContainerRequest { id: id.to_string() })
        .await
        .map_err(rpc)?;
    Ok(())
}

fn status_name(status: i32) -> &'static str {
    match TaskStatus::try_from(status).unwrap_or(TaskStatus::Unknown) {
        TaskStatus::Unknown => "UNKNOWN",
        TaskStatus::Created => "CREATED",
        TaskStatus::Running => "RUNNING",
        TaskStatus::Stopped => "STOPPED",
        TaskStatus::Paused => "PAUSED",
    }
}

pub async fn tasks(client: &Client, cmd: TasksCommand) -> Result<u8> {
    let mut tasks = client.tasks();
    match cmd {
        TasksCommand::Ls { quiet } => {
            let list = tasks
                .list(ListTasksRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .tasks;
            if quiet {
                emit(
                    &list
                        .iter()
                        .map(|t| format!("{}\n", t.container_id))
                        .collect::<String>(),
                );
                return Ok(0);
            }
            let rows = list.into_iter().map(|t| {
                vec![
                    t.container_id,
                    t.pid.to_string(),
                    status_name(t.status).to_string(),
                ]
            });
            print_table(&["TASK", "PID", "STATUS"], rows);
            Ok(0)
        }
        TasksCommand::Start {
            interactive,
            detach,
            id,
        } => {
            let c = client
                .containers()
                .get(GetContainerRequest { id: id.clone() })
                .await
                .map_err(rpc)?
                .into_inner();
            let tty = serde_json::from_slice::<serde_json::Value>(&c.spec)
                .ok()
                .and_then(|s| s.pointer("/process/terminal").and_then(|t| t.as_bool()))
                .unwrap_or(false);
            let args = RunArgs {
                name: Some(id.clone()),
                rm: false,
                tty,
                interactive,
                detach,
                process: ProcessArgs::default(),
                image: c.image,
                args: Vec::new(),
            };
            run_task(client, &id, &args).await
        }
        TasksCommand::Kill {
            signal,
            all,
            exec_id,
            ids,
        } => {
            let signal = parse_signal(&signal)?;
            let exec_id = exec_id.unwrap_or_default();
            for_each(ids, |id| {
                let mut tasks = tasks.clone();
                let exec_id = exec_id.clone();
                async move {
                    tasks
                        .kill(KillRequest {
                            container_id: id,
                            exec_id,
                            signal,
                            all,
                        })
                        .await
                        .map(drop)
                }
            })
            .await?;
            Ok(0)
        }
        TasksCommand::Exec {
            exec_id,
            tty,
            interactive,
            id,
            args,
        } => exec(client, &id, &exec_id, tty, interactive, args).await,
        TasksCommand::Ps { id } => {
            let pids = tasks
                .list_pids(ListPidsRequest { container_id: id })
                .await
                .map_err(rpc)?
                .into_inner()
                .pids;
            print_table(&["PID"], pids.into_iter().map(|p| vec![p.to_string()]));
            Ok(0)
        }
        TasksCommand::Pause { ids } => each_task(&tasks, ids, Freeze::Pause).await,
        TasksCommand::Resume { ids } => each_task(&tasks, ids, Freeze::Resume).await,
        TasksCommand::Metrics { id } => {
            let s = tasks
                .stats(StatsRequest { container_id: id })
                .await
                .map_err(rpc)?
                .into_inner();
            let limit = |v: u64| {
                if v == 0 {
                    "none".to_string()
                } else {
                    size(v as i64)
                }
            };
            let rows = vec![
                vec![
                    "cpu".into(),
                    format!("{:.3} s", s.cpu_usage_ns as f64 / 1e9),
                ],
                vec![
                    "cpu user".into(),
                    format!("{:.3} s", s.cpu_user_ns as f64 / 1e9),
                ],
                vec![
                    "cpu system".into(),
                    format!("{:.3} s", s.cpu_system_ns as f64 / 1e9),
                ],
                vec!["memory".into(), size(s.memory_usage as i64)],
                vec!["memory max".into(), size(s.memory_max_usage as i64)],
                vec!["memory limit".into(), limit(s.memory_limit)],
                vec!["pids".into(), s.pids_current.to_string()],
                vec![
                    "pids limit".into(),
                    if s.pids_limit == 0 {
                        "none".into()
                    } else {
                        s.pids_limit.to_string()
                    },
                ],
                vec!["io read".into(), size(s.io_read_bytes as i64)],
                vec!["io write".into(), size(s.io_write_bytes as i64)],
            ];
            print_table(&["METRIC", "VALUE"], rows);
            Ok(0)
        }
        TasksCommand::Rm { ids } => {
            for_each(ids, |id| {
                let mut tasks = tasks.clone();
                async move {
                    tasks
                        .delete(DeleteTaskRequest { container_id: id })
                        .await
                        .map(drop)
                }
            })
            .await?;
            Ok(0)
        }
    }
}

enum Freeze {
    Pause,
    Resume,
}

/// Pauses or resumes each task, printing each failure.
async fn each_task(tasks: &TasksClient<Scoped>, ids: Vec<String>, what: Freeze) -> Result<u8> {
    for_each(ids, |id| {
        let mut tasks = tasks.clone();
        let freeze = matches!(what, Freeze::Pause);
        async move {
            if freeze {
                tasks
                    .pause(PauseRequest { container_id: id })
                    .await
                    .map(drop)
            } else {
                tasks
                    .resume(ResumeRequest { container_id: id })
                    .await
                    .map(drop)
            }
        }
    })
    .await?;
    Ok(0)
}

/// Runs one more process in a task: the container's process settings
/// (env, cwd, user) with other arguments.
async fn exec(
    client: &Client,
    id: &str,
    exec_id: &str,
    tty: bool,
    interactive: bool,
    args: Vec<String>,
) -> Result<u8> {
    let c = client
        .containers()
        .get(GetContainerRequest { id: id.to_string() })
        .await
        .map_err(rpc)?
        .into_inner();
    let spec: serde_json::Value =
        serde_json::from_slice(&c.spec).context("the container's spec is not JSON")?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| anyhow!("the container's spec has no process"))?;
    process["args"] = serde_json::json!(args);
    process["terminal"] = serde_json::json!(tty);
    if tty && process.pointer("/env").is_some_and(|e| e.is_array()) {
        let env = process["env"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut env: Vec<serde_json::Value> = env;
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|s| s.starts_with("TERM=")))
        {
            env.push("TERM=xterm".into());
        }
        process["env"] = env.into();
    }
    let mut tasks = client.tasks();
    tasks
        .exec(ExecProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: interactive,
            terminal: tty,
            spec: serde_json::to_vec(&process)?,
        })
        .await
        .map_err(rpc)?;
    let result = async {
        let attached = attach(client, id, Some(exec_id), interactive).await?;
        let _raw = if tty && interactive {
            RawTerminal::enter()
        } else {
            None
        };
        if tty {
            follow_window_size(client, id, Some(exec_id)).await;
        }
        tasks
            .start(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            })
            .await
            .map_err(rpc)?;

        if !(tty && interactive) {
            forward_signals(client, id, Some(exec_id));
        }
        attached.copy_output().await?;
        let exit = tasks
            .wait(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        Ok::<u8, anyhow::Error>(exit_code(exit.exit_status))
    }
    .await;
    let deleted = tasks
        .delete_process(DeleteProcessRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await;
    match (result, deleted) {
        (Ok(code), Ok(_)) => Ok(code),
        (Ok(_), Err(e)) => Err(rpc(e)),
        (Err(e), _) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert!(parse_signal("SIGBOGUS").is_err());
    }
}
