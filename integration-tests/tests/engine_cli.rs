//! `berth`, the command line, side by side with the real docker CLI
//! against the same daemon: the same output, exit codes and error
//! messages for ps, images, inspect -f, run (stdout, stderr, exit code,
//! piped stdin), logs, exec, pull from the local registry with and
//! without auth, login/logout (config.json in a temporary HOME), and
//! unknown containers.
//!
//! The daemon is a parameter of [`Clients`]: by default these tests run
//! against a private Debian dockerd 20.10 ([`Docker`]); with
//! `ENGINE_CLI_HOST=unix:///path/berth.sock` the same checks run against
//! that daemon (berthd). The registries of the pull test are started where
//! the daemon reaches them: in the fixture dockerd's network namespace, or
//! on the host.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::engine::Berthd;
use integration_tests::interop::{Docker, PtyProcess, IMAGE};
use integration_tests::registry::{Auth, Registry};
use integration_tests::{build_binary, images, require_root, unique_id};

/// How long one client command may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What one command did.
#[derive(Debug, Clone)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The two clients for one daemon, each with its own docker config
/// directory (so a login by one is not seen by the other).
struct Clients {
    host: String,
    berth: PathBuf,
    tmp: tempfile::TempDir,
    /// The daemon's network namespace when it has one of its own (a pid in
    /// it): registries for it are started there, on its loopback.
    netns_pid: Option<u32>,
}

impl Clients {
    /// Clients of the daemon at `host` (`unix:///path`).
    fn new(host: &str) -> Clients {
        let berth = build_binary("BERTH_CLI", "berth");
        assert!(
            berth.is_file(),
            "{} not found: build it (`cargo build -p berth-engine --bin berth`)",
            berth.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix("berth-cli-")
            .tempdir()
            .expect("temp dir");
        for d in ["berth-home", "docker-home"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        Clients {
            host: host.to_owned(),
            berth,
            tmp,
            netns_pid: None,
        }
    }

    /// The clients of a private dockerd.
    fn of_dockerd(docker: &Docker) -> Clients {
        let cmd = docker.docker_command(&[]);
        let host = cmd
            .get_envs()
            .find(|(k, _)| *k == "DOCKER_HOST")
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
            .expect("the fixture sets DOCKER_HOST");
        let mut clients = Clients::new(&host);
        // The fixture's dockerd lives in a network namespace of its own.
        let pid_file = Path::new(host.trim_start_matches("unix://")).with_file_name("docker.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", pid_file.display()));
        clients.netns_pid = Some(pid.trim().parse().expect("dockerd's pid"));
        clients
    }

    /// Starts a registry the daemon reaches at 127.0.0.1 and pushes the
    /// test image to it as `repo_tag`: in the daemon's network namespace
    /// when it has one (a thread of ours joins it, and what it starts
    /// stays there).
    fn registry(&self, auth: Auth, repo_tag: &'static str) -> Registry {
        // The interop busybox: gzip layers, which dockerd 20.10 takes.
        let layout = images::LayoutRef {
            layout: integration_tests::interop::image().layout.clone(),
            tag: "latest".into(),
        };
        let start = move || {
            let registry = Registry::start(auth);
            images::push(&layout, &registry, repo_tag);
            registry
        };
        let Some(pid) = self.netns_pid else {
            return start();
        };
        std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .unwrap_or_else(|e| panic!("open the daemon's network namespace: {e}"));
            // SAFETY: setns(2) is given an open namespace fd and changes
            // only this thread, which ends when the registry is started.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            integration_tests::host("ip", &["link", "set", "lo", "up"]);
            start()
        })
        .join()
        .expect("registry thread")
    }

    fn home(&self, program: &str) -> PathBuf {
        self.tmp.path().join(format!("{program}-home"))
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = match program {
            "berth" => Command::new(&self.berth),
            _ => Command::new("docker"),
        };
        cmd.env("DOCKER_HOST", &self.host)
            .env("HOME", self.home(program))
            .env_remove("BERTH_HOST")
            .env_remove("DOCKER_CONFIG")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CLI_HINTS", "false")
            .args(args);
        cmd
    }

    fn run_with(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut cmd = self.command(program, args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(input).expect("write stdin");
        }
        let mut out_pipe = child.stdout.take().expect("stdout");
        let mut err_pipe = child.stderr.take().expect("stderr");
        let out_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out_pipe.read_to_end(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err_pipe.read_to_end(&mut s);
            s
        });
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {args:?} did not finish within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        Out {
            code: integration_tests::exit_code(&status),
            stdout,
            stderr,
        }
    }

    fn berth(&self, args: &[&str]) -> Out {
        self.run_with("berth", args, None)
    }

    fn docker(&self, args: &[&str]) -> Out {
        self.run_with("docker", args, None)
    }

    /// Runs `args` with both clients and returns both outputs.
    fn both(&self, args: &[&str]) -> (Out, Out) {
        (self.docker(args), self.berth(args))
    }

    /// Runs `args` with both clients; they must print the same and exit alike.
    #[track_caller]
    fn same(&self, args: &[&str]) -> Out {
        let (d, b) = self.both(args);
        assert_same(args, &d, &b);
        b
    }
}

/// Docker's stderr with its program name in berth's words.
fn berth_words(text: &str) -> String {
    text.replace("docker: ", "berth: ")
        .replace("'docker ", "'berth ")
        .replace("Usage:  docker ", "Usage:  berth ")
        .replace("/docker-home/", "/berth-home/")
}

/// Text with every 64-digit hex id (a container's, an exec's) in one
/// form: two runs make different ids.
fn without_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for ch in text.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_hexdigit() {
            run.push(ch);
            continue;
        }
        if run.len() == 64 {
            out.push_str("<id>");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(ch);
    }
    out.pop();
    out
}

/// Output lines as JSON values where they are JSON (key order is the
/// daemon's, which the docker CLI re-orders), else as text.
fn normalised(stdout: &str) -> Vec<Result<serde_json::Value, String>> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|_| l.to_string()))
        .collect()
}

#[track_caller]
fn assert_same(args: &[&str], docker: &Out, berth: &Out) {
    assert_eq!(
        (
            docker.code,
            normalised(&docker.stdout),
            without_ids(&berth_words(&docker.stderr))
        ),
        (
            berth.code,
            normalised(&berth.stdout),
            without_ids(&berth.stderr)
        ),
        "`{}`: docker (left) and berth (right) differ",
        args.join(" ")
    );
}

/// Which daemon the clients talk to.
#[derive(Clone, Copy)]
enum Daemon {
    /// A private Debian dockerd, or the daemon `ENGINE_CLI_HOST` names.
    Dockerd,
    /// A berthd of the test's own (integration_tests::engine::Berthd).
    Berthd,
}

/// Whatever keeps the daemon alive for the test.
enum Guard {
    Dockerd(#[allow(dead_code, reason = "held for its Drop")] Option<Box<Docker>>),
    Berthd(#[allow(dead_code, reason = "held for its Drop")] Box<Berthd>),
}

/// A daemon and its clients. `Daemon::Dockerd`: a private dockerd, or with
/// `ENGINE_CLI_HOST=unix:///run/berth/berth.sock` that daemon; in both
/// cases and for berthd the test image is loaded into it first.
fn setup(daemon: Daemon) -> (Guard, Clients) {
    require_root();
    let load = |clients: &Clients| {
        let archive = integration_tests::interop::image()
            .docker_archive
            .to_str()
            .expect("utf-8 path")
            .to_owned();
        let out = clients.docker(&["load", "--quiet", "--input", &archive]);
        assert_eq!(out.code, 0, "load the test image: {out:?}");
    };
    match (daemon, std::env::var("ENGINE_CLI_HOST")) {
        (Daemon::Berthd, _) => {
            let berthd = Box::new(Berthd::start());
            let clients = Clients::new(&format!("unix://{}", berthd.socket().display()));
            load(&clients);
            (Guard::Berthd(berthd), clients)
        }
        (Daemon::Dockerd, Ok(host)) if !host.is_empty() => {
            let clients = Clients::new(&host);
            load(&clients);
            (Guard::Dockerd(None), clients)
        }
        (Daemon::Dockerd, _) => {
            let docker = Docker::start();
            let clients = Clients::of_dockerd(&docker);
            (Guard::Dockerd(Some(Box::new(docker))), clients)
        }
    }
}

#[test]
fn run_prints_output_errors_and_exit_codes_as_docker() {
    run_prints_output_errors_and_exit_codes_as_docker_with(Daemon::Dockerd);
}

#[test]
fn run_prints_output_errors_and_exit_codes_as_docker_on_berthd() {
    run_prints_output_errors_and_exit_codes_as_docker_with(Daemon::Berthd);
}

fn run_prints_output_errors_and_exit_codes_as_docker_with(daemon: Daemon) {
    let (_daemon, cli) = setup(daemon);
    cli.same(&["run", "--rm", "--network", "none", IMAGE, "echo", "hello"]);
    cli.same(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    cli.same(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1:2",
        IMAGE,
        "sh",
        "-c",
        "echo $A; pwd; id -u; id -g",
    ]);
    // Piped stdin through -i.
    for program in ["docker", "berth"] {
        let out = cli.run_with(
            program,
            &[
                "run",
                "--rm",
                "-i",
                "--network",
                "none",
                IMAGE,
                "sh",
                "-c",
                "tr a-z A-Z; echo done",
            ],
            Some(b"piped input\n"),
        );
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "PIPED INPUT\ndone\n"),
            "{program}: {out:?}"
        );
    }
    // A signal to the client reaches the container (docker's sig-proxy).
    for program in ["docker", "berth"] {
        let mut child = cli
            .command(
                program,
                &[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    IMAGE,
                    "sh",
                    "-c",
                    "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut ready = [0u8; 6];
        stdout.read_exact(&mut ready).expect("read ready");
        assert_eq!(&ready, b"ready\n", "{program}");
        // The docker CLI installs its signal proxy only once its start call
        // has returned, and the container's "ready" can arrive before that:
        // a TERM in between is taken by the CLI's own handler and never
        // forwarded (a race of the CLI's, not the daemon's). So the signal
        // is sent again until the container answers; the trap exits on the
        // first that reaches it.
        let reader = std::thread::spawn(move || {
            let mut rest = String::new();
            stdout.read_to_string(&mut rest).expect("read the rest");
            rest
        });
        let pid = child.id() as i32;
        let mut status = None;
        for _ in 0..20 {
            // SAFETY: kill(2) with the pid of our own child and a valid signal.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            std::thread::sleep(std::time::Duration::from_millis(500));
            if let Some(s) = child.try_wait().expect("try_wait") {
                status = Some(s);
                break;
            }
        }
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                child.wait().expect("wait")
            }
        };
        let rest = reader.join().expect("reader");
        assert_eq!(
            (integration_tests::exit_code(&status), rest.as_str()),
            (9, "got-term\n"),
            "{program}"
        );
    }
    // -it with stdin not a terminal is refused, as docker does.
    let (d, b) = cli.both(&["run", "-it", "--rm", "--network", "none", IMAGE, "true"]);
    assert_same(&["run", "-it"], &d, &b);
    // A command that cannot be run: 126 for both, and the same words.
    cli.same(&["run", "--rm", "--network", "none", IMAGE, "/etc"]);
    // A command that does not exist: 127 for both.
    let (d, b) = cli.both(&["run", "--rm", "--network", "none", IMAGE, "no-such-command"]);
    assert_eq!((d.code, b.code), (127, 127), "{d:?}\n{b:?}");
    // A missing image with --pull never.
    let (d, b) = cli.both(&["run", "--rm", "--pull", "never", "nope/missing:1", "true"]);
    assert_eq!((d.code, b.code), (125, 125), "{d:?}\n{b:?}");
    assert!(b.stderr.contains("No such image"), "{b:?}");
    // A bad flag value.
    let (d, b) = cli.both(&["run", "--rm", "--memory", "lots", IMAGE, "true"]);
    assert_eq!((d.code, b.code), (125, 125), "{d:?}\n{b:?}");
    assert!(b.stderr.contains("invalid size: 'lots'"), "{b:?}");
    // Mistakes the daemon or the client refuses, worded alike.
    for args in [
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "a:b:c:d",
            IMAGE,
            "true",
        ][..],
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--mount",
            "type=bind,target=/x",
            IMAGE,
            "true",
        ],
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--log-opt",
            "nokey",
            IMAGE,
            "true",
        ],
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--restart",
            "always",
            IMAGE,
            "true",
        ],
        &[
            "run",
            "--network",
            "none",
            "--restart",
            "on-failure:x",
            IMAGE,
            "true",
        ],
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--pull",
            "bogus",
            IMAGE,
            "true",
        ],
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--name",
            "bad/name",
            IMAGE,
            "true",
        ],
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--cpus",
            "abc",
            IMAGE,
            "true",
        ],
    ] {
        cli.same(args);
    }
}

#[test]
fn ps_images_inspect_logs_exec_compare_with_docker() {
    ps_images_inspect_logs_exec_compare_with_docker_with(Daemon::Dockerd);
}

#[test]
fn ps_images_inspect_logs_exec_compare_with_docker_on_berthd() {
    ps_images_inspect_logs_exec_compare_with_docker_with(Daemon::Berthd);
}

fn ps_images_inspect_logs_exec_compare_with_docker_with(daemon: Daemon) {
    let (_daemon, cli) = setup(daemon);
    let name = unique_id("cli");
    let id = cli
        .berth(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "-l",
            "k=v",
            "-l",
            "c=3",
            "-l",
            "a=1",
            "-l",
            "b=2",
            IMAGE,
            "sh",
            "-c",
            "echo started; echo oops >&2; sleep 300",
        ])
        .stdout
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    let exited = unique_id("cli-exited");
    cli.docker(&[
        "run",
        "--network",
        "none",
        "--name",
        &exited,
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);

    cli.same(&["ps", "-q"]);
    cli.same(&["ps", "-a", "-q", "--no-trunc"]);
    cli.same(&[
        "ps",
        "-a",
        "--format",
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.Names}}\t{{.Labels}}",
    ]);
    cli.same(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}} {{.State}}",
    ]);
    // The status ages ("Up Less than a second", "Up 1 second") can change
    // between the two commands: tried again then.
    let filter = format!("name={name}");
    let args = [
        "ps",
        "--filter",
        &filter,
        "--format",
        "{{.ID}}: {{.Status}}",
    ];
    let mut tries = 0;
    let (d, b) = loop {
        let (d, b) = cli.both(&args);
        tries += 1;
        if tries == 3 || d.stdout == b.stdout {
            break (d, b);
        }
    };
    assert_same(&args, &d, &b);
    // The default table: the same header, columns where docker puts them.
    // The widths follow the ages ("Less than a second ago", "1 second
    // ago"), which can change between the two commands: tried again then.
    let mut tries = 0;
    let (d, b) = loop {
        let (d, b) = cli.both(&["ps", "-a"]);
        tries += 1;
        if tries == 3 || d.stdout.lines().next() == b.stdout.lines().next() {
            break (d, b);
        }
    };
    assert_eq!(
        d.stdout.lines().next(),
        b.stdout.lines().next(),
        "{d:?}\n{b:?}"
    );
    assert_eq!(d.stdout.lines().count(), b.stdout.lines().count());

    cli.same(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}",
    ]);
    cli.same(&["images", "-q"]);
    let (d, b) = cli.both(&["images"]);
    // The columns, not their widths: an age ("1 second ago") can grow
    // between the two commands.
    let header = |o: &Out| {
        let line = o.stdout.lines().next().unwrap_or_default().to_string();
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(header(&d), header(&b), "{d:?}\n{b:?}");

    for format in [
        "{{.State.Status}} {{.State.Running}} {{.Config.Image}}",
        "{{.Name}} {{.Config.Cmd}} {{.HostConfig.NetworkMode}}",
        "{{json .Config.Labels}}",
        "{{json .State}}",
        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}",
        "{{json .Config}}",
        "{{index .Config.Labels \"k\"}} {{range .Config.Env}}{{.}};{{end}}",
        "{{.State.ExitCode}}",
    ] {
        cli.same(&["inspect", "-f", format, &name]);
    }
    cli.same(&[
        "inspect",
        "-f",
        "{{.State.ExitCode}} {{.State.Status}}",
        &exited,
    ]);
    cli.same(&["inspect", "--format", "{{.Id}} {{.RepoTags}}", IMAGE]);
    cli.same(&["inspect", &name]);
    cli.same(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", IMAGE]);

    cli.same(&["logs", &name]);
    cli.same(&["logs", "--tail", "1", &name]);
    cli.same(&["exec", &name, "sh", "-c", "echo in; echo err >&2; exit 4"]);
    cli.same(&[
        "exec",
        "-e",
        "X=y",
        "-w",
        "/etc",
        "-u",
        "5",
        &name,
        "sh",
        "-c",
        "echo $X; pwd; id -u",
    ]);
    for program in ["docker", "berth"] {
        let out = cli.run_with(
            program,
            &["exec", "-i", &name, "cat"],
            Some(b"through exec\n"),
        );
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "through exec\n"),
            "{program}: {out:?}"
        );
    }
    cli.same(&["top", &name, "-o", "comm"]);
    cli.same(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        &name,
    ]);
    cli.same(&["system", "df"]);
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    cli.same(&["events", "--since", "0", "--until", &until]);
    cli.same(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "event=start",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    cli.same(&["diff", &exited]);
    cli.same(&["wait", &exited]);
    cli.same(&["stop", "-t", "1", &name]);
    // rm prints each name it removed; one container for each client.
    let d = cli.docker(&["rm", &exited]);
    assert_eq!(
        (d.code, d.stdout.clone()),
        (0, format!("{exited}\n")),
        "{d:?}"
    );
    let b = cli.berth(&["rm", "--force", &name]);
    assert_eq!(
        (b.code, b.stdout.clone()),
        (0, format!("{name}\n")),
        "{b:?}"
    );
    cli.same(&["ps", "-a", "-q"]);
}

#[test]
fn unknown_containers_and_images_fail_as_in_docker() {
    unknown_containers_and_images_fail_as_in_docker_with(Daemon::Dockerd);
}

#[test]
fn unknown_containers_and_images_fail_as_in_docker_on_berthd() {
    unknown_containers_and_images_fail_as_in_docker_with(Daemon::Berthd);
}

fn unknown_containers_and_images_fail_as_in_docker_with(daemon: Daemon) {
    let (_daemon, cli) = setup(daemon);
    for args in [
        &["rm", "no-such-container"][..],
        &["stop", "no-such-container"],
        &["start", "no-such-container"],
        &["kill", "no-such-container"],
        &["logs", "no-such-container"],
        &["inspect", "no-such-thing"],
        &["inspect", "-f", "{{.Id}}", "no-such-thing"],
        &["exec", "no-such-container", "true"],
        &["rmi", "no-such-image:1"],
        &["wait", "no-such-container"],
        &["pause", "no-such-container"],
        &["rename", "no-such-container", "other"],
        &["image", "inspect", "no-such-image"],
        // Bad references and files.
        &["pull", "nope/x@sha256:zzz"],
        &["tag", IMAGE, "Bad:Tag"],
        &["push", "a:b:c"],
        &["load", "-i", "/nonexistent.tar"],
        // Command-line mistakes.
        &["ps", "--bogus"],
        &["container", "ls", "--bogus"],
        &["run"],
        &["logs"],
        &["rename", "one"],
        &["stop"],
    ] {
        cli.same(args);
    }
}

#[test]
fn pull_login_logout_and_push_with_the_local_registry() {
    pull_login_logout_and_push_with_the_local_registry_with(Daemon::Dockerd);
}

#[test]
fn pull_login_logout_and_push_with_the_local_registry_on_berthd() {
    pull_login_logout_and_push_with_the_local_registry_with(Daemon::Berthd);
}

fn pull_login_logout_and_push_with_the_local_registry_with(daemon: Daemon) {
    let (_daemon, cli) = setup(daemon);
    // An open registry: pull prints the same final lines as docker's.
    let open = cli.registry(Auth::None, "cli/busybox:v1");
    let reference = format!("{}/cli/busybox:v1", open.host());
    let (d, b) = cli.both(&["pull", &reference]);
    assert_eq!((d.code, b.code), (0, 0), "{d:?}\n{b:?}");
    assert_eq!(
        d.stdout.lines().last(),
        b.stdout.lines().last(),
        "{d:?}\n{b:?}"
    );
    assert!(
        b.stdout.contains("Pull complete")
            || b.stdout.contains("Already exists")
            || b.stdout.contains("Image is up to date"),
        "{b:?}"
    );
    cli.same(&["pull", "-q", &reference]);
    cli.same(&["tag", &reference, &format!("{}/cli/copy:v2", open.host())]);
    let (d, b) = cli.both(&["push", &format!("{}/cli/copy:v2", open.host())]);
    assert_eq!((d.code, b.code), (0, 0), "{d:?}\n{b:?}");
    assert_eq!(
        d.stdout.lines().last(),
        b.stdout.lines().last(),
        "{d:?}\n{b:?}"
    );

    // A registry with htpasswd: refused without a login, then logged in.
    let closed = cli.registry(Auth::basic("alice", "s3cret"), "cli/private:v1");
    let private = format!("{}/cli/private:v1", closed.host());
    let (d, b) = cli.both(&["pull", &private]);
    assert_eq!((d.code, b.code), (1, 1), "{d:?}\n{b:?}");
    let (d, b) = cli.both(&["login", "-u", "alice", "-p", "wrong", &closed.host()]);
    assert_eq!((d.code, b.code), (1, 1), "{d:?}\n{b:?}");
    cli.same(&["login", "-u", "alice", "-p", "s3cret", &closed.host()]);
    let config = |program: &str| -> serde_json::Value {
        let text =
            std::fs::read(cli.home(program).join(".docker/config.json")).expect("config.json");
        serde_json::from_slice(&text).expect("config.json is JSON")
    };
    assert_eq!(
        config("docker")["auths"][closed.host()]["auth"],
        config("berth")["auths"][closed.host()]["auth"]
    );
    let (d, b) = cli.both(&["pull", &private]);
    assert_eq!((d.code, b.code), (0, 0), "{d:?}\n{b:?}");
    assert_eq!(d.stdout.lines().last(), b.stdout.lines().last());
    cli.same(&["logout", &closed.host()]);
    assert_eq!(config("berth")["auths"].get(closed.host()), None);
    cli.same(&["logout", &closed.host()]);
}

#[test]
fn run_it_on_a_terminal_and_detach_keys_as_docker() {
    run_it_on_a_terminal_and_detach_keys_as_docker_with(Daemon::Dockerd);
}

#[test]
fn run_it_on_a_terminal_and_detach_keys_as_docker_on_berthd() {
    run_it_on_a_terminal_and_detach_keys_as_docker_with(Daemon::Berthd);
}

fn run_it_on_a_terminal_and_detach_keys_as_docker_with(daemon: Daemon) {
    let (_daemon, cli) = setup(daemon);
    // On a terminal: the container has a tty, the output is the same, the
    // exit code is the container's.
    let script = "tty; echo done; exit 6";
    let mut outputs = Vec::new();
    for program in ["docker", "berth"] {
        let cmd = cli.command(
            program,
            &[
                "run",
                "-it",
                "--rm",
                "--network",
                "none",
                IMAGE,
                "sh",
                "-c",
                script,
            ],
        );
        let pty = PtyProcess::spawn(cmd, 30, 100);
        let (code, output) = pty.wait(TIMEOUT);
        assert_eq!(code, 6, "{program}: {output:?}");
        assert!(
            output.contains("/dev/pts/0\ndone\n"),
            "{program}: {output:?}"
        );
        outputs.push(output.replace('\0', ""));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "docker (left) and berth (right) differ"
    );

    // Typed input reaches the shell; ctrl-p ctrl-q detaches and leaves it running.
    for program in ["docker", "berth"] {
        let name = unique_id(&format!("tty-{program}"));
        let cmd = cli.command(
            program,
            &[
                "run",
                "-it",
                "--name",
                &name,
                "--network",
                "none",
                IMAGE,
                "sh",
            ],
        );
        let mut pty = PtyProcess::spawn(cmd, 24, 80);
        pty.read_until("# ", TIMEOUT);
        pty.write(b"echo typed-$((40+2))\r");
        pty.read_until("typed-42", TIMEOUT);
        pty.write(b"\x10\x11");
        let (code, _) = pty.wait(TIMEOUT);
        assert_eq!(code, 0, "{program} detached");
        let state = cli.docker(&["inspect", "-f", "{{.State.Running}}", &name]);
        assert_eq!(state.stdout, "true\n", "{program}: {state:?}");
        cli.docker(&["rm", "-f", &name]);
    }
}

/// Holds a private dockerd for comparing the clients by hand:
/// `cargo test -p integration-tests --test engine_cli -- --ignored --nocapture hold`.
#[test]
#[ignore = "manual: keeps a dockerd running for ten minutes"]
fn hold_a_private_dockerd() {
    let (_docker, cli) = setup(Daemon::Dockerd);
    println!("DOCKER_HOST={}", cli.host);
    let marker = Path::new("/tmp/berth-cli-hold");
    std::fs::write(marker, &cli.host).expect("write marker");
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline && marker.exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
}
