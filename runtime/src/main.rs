//! berth-runtime's command line: runc's commands and flags.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_runtime::container::{CreateOptions, ExecOptions, ExecProcess, Runtime};
use berth_runtime::logging::{self, LogFormat};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "berth-runtime",
    about = "A runc-compatible OCI runtime",
    disable_version_flag = true
)]
struct Cli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = "/run/berth/runtime")]
    root: PathBuf,
    /// Write the log to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    log_format: FormatArg,
    #[arg(long, global = true)]
    debug: bool,
    /// Read cgroupsPath as systemd's slice:prefix:name.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility; the runtime detects rootless itself.
    #[arg(long = "rootless", id = "global_rootless", hide = true)]
    global_rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Args)]
struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long = "no-new-keyring", hide = true)]
    no_new_keyring: bool,
    /// Pass descriptors 3 .. 3+N-1 on to the container process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container; its process waits for start.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Create and start a container; wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
    },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal to a container's init (or to all its processes).
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it holds.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        id: String,
        /// Arguments for ps(1) in table format (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run one more process in a running container.
    Exec(ExecArgs),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a running container's resource limits.
    Update(UpdateArgs),
    /// Print resource usage (and OOM events) of a container.
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime supports, as JSON.
    Features,
}

#[derive(Args)]
struct ExecArgs {
    /// A process.json to run instead of the arguments.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID]
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Args)]
struct UpdateArgs {
    /// LinuxResources JSON file, or - for stdin.
    #[arg(short, long)]
    resources: Option<String>,
    #[arg(long)]
    memory: Option<i64>,
    #[arg(long = "memory-swap")]
    memory_swap: Option<i64>,
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<i64>,
    #[arg(long = "cpu-shares")]
    cpu_shares: Option<u64>,
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    id: String,
}

fn parse_user(s: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = uid
        .parse()
        .with_context(|| format!("invalid user {s:?}: want UID[:GID]"))?;
    let gid = gid
        .map(|g| g.parse())
        .transpose()
        .with_context(|| format!("invalid user {s:?}: want UID[:GID]"))?;
    Ok((uid, gid))
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
    }
}

fn update_resources(a: &UpdateArgs) -> anyhow::Result<oci_spec::runtime::LinuxResources> {
    let mut value = match a.resources.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read resources from stdin")?;
            serde_json::from_str(&text).context("parse resources from stdin")?
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
            serde_json::from_str(&text).with_context(|| format!("parse {path}"))?
        }
        None => serde_json::json!({}),
    };
    let set = |v: &mut serde_json::Value, section: &str, key: &str, x: serde_json::Value| {
        if !v[section].is_object() {
            v[section] = serde_json::json!({});
        }
        v[section][key] = x;
    };
    if let Some(m) = a.memory {
        set(&mut value, "memory", "limit", m.into());
    }
    if let Some(m) = a.memory_swap {
        set(&mut value, "memory", "swap", m.into());
    }
    if let Some(m) = a.memory_reservation {
        set(&mut value, "memory", "reservation", m.into());
    }
    if let Some(c) = a.cpu_shares {
        set(&mut value, "cpu", "shares", c.into());
    }
    if let Some(c) = a.cpu_quota {
        set(&mut value, "cpu", "quota", c.into());
    }
    if let Some(c) = a.cpu_period {
        set(&mut value, "cpu", "period", c.into());
    }
    if let Some(c) = &a.cpuset_cpus {
        set(&mut value, "cpu", "cpus", c.clone().into());
    }
    if let Some(c) = &a.cpuset_mems {
        set(&mut value, "cpu", "mems", c.clone().into());
    }
    if let Some(p) = a.pids_limit {
        set(&mut value, "pids", "limit", p.into());
    }
    if let Some(w) = a.blkio_weight {
        set(&mut value, "blockIO", "weight", w.into());
    }
    serde_json::from_value(value).context("invalid resources")
}

fn print_list(rt: &Runtime, format: ListFormat, quiet: bool) -> anyhow::Result<()> {
    let list = rt.list()?;
    if quiet {
        for (r, _) in &list {
            println!("{}", r.id);
        }
        return Ok(());
    }
    if format == ListFormat::Json {
        let docs: Vec<_> = list
            .iter()
            .map(|(r, s)| berth_runtime::container::StateOutput {
                oci: r.oci_state(*s),
                rootfs: &r.rootfs,
                created: &r.created,
                owner: &r.owner,
            })
            .collect();
        println!("{}", serde_json::to_string(&docs)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for (r, s) in &list {
        let pid = if *s == berth_runtime::state::Status::Stopped {
            0
        } else {
            r.pid
        };
        println!(
            "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
            r.id,
            pid,
            s,
            r.bundle.display(),
            r.created,
            r.owner
        );
    }
    Ok(())
}

fn print_ps(pids: &[i32], format: ListFormat, args: &[String]) -> anyhow::Result<()> {
    if format == ListFormat::Json {
        println!("{}", serde_json::to_string(pids)?);
        return Ok(());
    }
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("run ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

fn events(rt: &Runtime, id: &str, once: bool, interval: &str) -> anyhow::Result<()> {
    let interval: Duration = humantime::parse_duration(interval)
        .with_context(|| format!("invalid interval {interval:?}"))?;
    if interval.is_zero() {
        bail!("interval must be greater than 0");
    }
    let mut ooms = None;
    loop {
        let (doc, alive, oom_count) = rt.stats(id)?;
        if let Some(prev) = ooms {
            if oom_count > prev {
                println!("{}", serde_json::json!({"type": "oom", "id": id}));
            }
        }
        ooms = Some(oom_count);
        println!("{doc}");
        if once || !alive {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let Some(command) = cli.command else {
        bail!("no command given; see --help");
    };
    tracing::debug!("berth-runtime started");
    let rt = Runtime::new(cli.root.clone(), cli.systemd_cgroup);
    match command {
        Command::Create(a) => rt.create(&create_options(&a))?,
        Command::Start { id } => rt.start(&id)?,
        Command::Run { create, detach } => return Ok(rt.run(&create_options(&create), detach)?),
        Command::State { id } => println!("{}", rt.state(&id)?),
        Command::Kill { all, id, signal } => rt.kill(&id, &signal, all)?,
        Command::Delete { force, id } => rt.delete(&id, force)?,
        Command::List { format, quiet } => print_list(&rt, format, quiet)?,
        Command::Ps {
            format,
            id,
            ps_args,
        } => print_ps(&rt.pids(&id)?, format, &ps_args)?,
        Command::Exec(a) => {
            let process = match &a.process {
                Some(path) => ExecProcess::File(path.clone()),
                None => ExecProcess::Args {
                    args: a.args.clone(),
                    env: a.env.clone(),
                    cwd: a.cwd.clone(),
                    user: a.user.as_deref().map(parse_user).transpose()?,
                    additional_gids: a.additional_gids.clone(),
                    tty: a.tty,
                    caps: a.cap.clone(),
                    no_new_privs: a.no_new_privs,
                },
            };
            let opts = ExecOptions {
                id: a.id.clone(),
                process,
                detach: a.detach,
                pid_file: a.pid_file.clone(),
                console_socket: a.console_socket.clone(),
                preserve_fds: a.preserve_fds,
            };
            return Ok(rt.exec(&opts)?);
        }
        Command::Pause { id } => rt.pause(&id)?,
        Command::Resume { id } => rt.resume(&id)?,
        Command::Update(a) => rt.update(&a.id, &update_resources(&a)?)?,
        Command::Events {
            stats,
            interval,
            id,
        } => events(&rt, &id, stats, &interval)?,
        Command::Spec { bundle, rootless } => {
            berth_runtime::spec::write_default_spec(&bundle, rootless)?
        }
        Command::Features => println!(
            "{}",
            serde_json::to_string_pretty(&berth_runtime::features())?
        ),
    }
    Ok(0)
}

/// The exit status of a failed command: runc's 255 for exec (whose
/// successful runs exit with the process's status), else 1.
fn failure_status(command: Option<&Command>) -> i32 {
    match command {
        Some(Command::Exec(_)) => 255,
        _ => 1,
    }
}

/// Reports a failure as runc does and exits: an `error` line in the log
/// (stderr without `--log`, in `--log-format`); with a log file, the bare
/// message on stderr too.
fn fail(message: &str, to_file: bool, status: i32) -> ! {
    tracing::error!("{message}");
    if to_file {
        eprintln!("{message}");
    }
    std::process::exit(status)
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // A usage error: one error line, runc's status 1.
            logging::init(None, LogFormat::Text, false);
            let text = e.render().to_string();
            let first = text.split("\n\n").next().unwrap_or_default();
            let first = first.trim().trim_start_matches("error: ");
            let message = first.split_whitespace().collect::<Vec<_>>().join(" ");
            fail(&message, false, 1)
        }
    };
    if cli.version {
        println!("berth-runtime version {}", env!("CARGO_PKG_VERSION"));
        println!(
            "commit: {}",
            option_env!("BERTH_COMMIT").unwrap_or("unknown")
        );
        println!("spec: {}", berth_runtime::OCI_VERSION);
        return;
    }
    let format = match cli.log_format {
        FormatArg::Text => LogFormat::Text,
        FormatArg::Json => LogFormat::Json,
    };
    let log_file = match &cli.log {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                // As runc: the log is not open, so the error goes to stderr.
                logging::init(None, format, cli.debug);
                fail(&format!("open {}: {e}", path.display()), false, 1)
            }
        },
        None => None,
    };
    let has_log = log_file.is_some();
    logging::init(log_file, format, cli.debug);
    let status = failure_status(cli.command.as_ref());
    berth_runtime::trace::init_from_env();
    let result = run(cli);
    berth_runtime::trace::write();
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{e:#}");
            let msg = if status == 255 {
                format!("exec failed: {msg}")
            } else {
                msg
            };
            fail(&msg, has_log, status)
        }
    }
}
