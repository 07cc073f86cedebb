//! Builds whose steps depend on how and where they run: RUN containers with
//! the build's network mode (`--network none|host|<user network>`, the
//! default bridge), `--add-host` (`host-gateway` too), `--shm-size` and the
//! resource options (`--memory`, `--cpu-shares`, `--cpuset-cpus`,
//! `--cpu-period`, `--cpu-quota`, `--ulimit`), with the real docker CLI's
//! legacy builder on a berthd with networking, in a network namespace of
//! its own; ADD of a URL and COPY of heredocs; `--cache-from`; stages built
//! at once; FROM pulling with the client's registry credentials; commit's
//! pause; a step's stderr.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::engine::{Berthd, DockerOutput};
use integration_tests::registry::run_with_timeout;

const TIMEOUT: Duration = Duration::from_secs(120);

fn docker_build(berthd: &Berthd, args: &[&str]) -> DockerOutput {
    let mut cmd: Command = berthd.docker_command(args);
    cmd.env("DOCKER_BUILDKIT", "0");
    let out = run_with_timeout(cmd, TIMEOUT);
    DockerOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context directory");
    fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    dir
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("a UTF-8 path")
}

/// What `cat /out` prints in the image built from `dockerfile` with `flags`.
fn built_file(berthd: &Berthd, dockerfile: &str, flags: &[&str]) -> String {
    let ctx = context(dockerfile);
    let mut args = vec!["build", "-q", "-t", "probe"];
    args.extend_from_slice(flags);
    args.push(path(ctx.path()));
    docker_build(berthd, &args).ok();
    berthd
        .docker(&["run", "--rm", "--network", "none", "probe", "cat", "/out"])
        .ok()
        .stdout
}

fn no_build_container_left(berthd: &Berthd) {
    let netns = berthd.exec_root().join("netns");
    let left: Vec<_> = fs::read_dir(&netns)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "network namespaces left: {left:?}");
    let out = berthd.docker(&["network", "inspect", "-f", "{{len .Containers}}", "bridge"]);
    assert_eq!(out.ok().stdout.trim(), "0");
}

#[test]
fn run_steps_get_the_builds_network_and_resources() {
    let berthd = Berthd::start_networked(&[]);
    let interfaces = "FROM busybox\nRUN ls /sys/class/net > /out\n";

    // The default is the default bridge: an address of its subnet.
    let default = built_file(
        &berthd,
        "FROM busybox\nRUN ip -4 -o addr show eth0 > /out\n",
        &[],
    );
    let bridge_subnet = berthd
        .docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            "bridge",
        ])
        .ok()
        .stdout;
    let prefix: String = bridge_subnet
        .trim()
        .rsplitn(2, '.')
        .last()
        .expect("a subnet")
        .into();
    assert!(default.contains(&format!("inet {prefix}.")), "{default}");

    // none: loopback only.
    let none = built_file(&berthd, interfaces, &["--network", "none"]);
    assert_eq!(none.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    // A user network: an address of its subnet.
    berthd
        .docker(&["network", "create", "--subnet", "10.77.0.0/24", "buildnet"])
        .ok();
    let user = built_file(
        &berthd,
        "FROM busybox\nRUN ip -4 -o addr show eth0 > /out\n",
        &["--network", "buildnet"],
    );
    assert!(user.contains("inet 10.77.0."), "{user}");

    // host: the daemon's namespace, whose interfaces (its bridges) it sees
    // as a run container on the host's network does.
    let host = built_file(&berthd, interfaces, &["--network", "host"]);
    let run_host = berthd
        .docker(&[
            "run",
            "--rm",
            "--network",
            "host",
            "busybox",
            "ls",
            "/sys/class/net",
        ])
        .ok()
        .stdout;
    assert_eq!(
        host.split_whitespace().collect::<Vec<_>>(),
        run_host.split_whitespace().collect::<Vec<_>>()
    );
    assert!(host.split_whitespace().any(|i| i == "berth0"), "{host}");

    // An unknown network: Docker's 404 words, nothing built.
    let ctx = context(interfaces);
    docker_build(&berthd, &["build", "--network", "nosuch", path(ctx.path())])
        .fails_with(1, "network nosuch not found");

    // --add-host, host-gateway being the default bridge's gateway.
    let hosts = built_file(
        &berthd,
        "FROM busybox\nRUN ping -c1 -W1 hello.world.test && cp /etc/hosts /out\n",
        &[
            "--add-host",
            "hello.world.test:127.0.0.1",
            "--add-host",
            "gw.test:host-gateway",
        ],
    );
    assert!(hosts.contains("127.0.0.1\thello.world.test\n"), "{hosts}");
    let gateway = berthd
        .docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            "bridge",
        ])
        .ok()
        .stdout;
    assert!(
        hosts.contains(&format!("{}\tgw.test\n", gateway.trim())),
        "{hosts}"
    );

    // --shm-size, --memory, --cpu-shares, --cpuset-cpus, --ulimit.
    let limits = built_file(
        &berthd,
        "FROM busybox\n\
         RUN (grep ' /dev/shm ' /proc/mounts; \
              cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
                || cat /sys/fs/cgroup/memory.max; \
              cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu.weight; \
              cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null \
                || cat /sys/fs/cgroup/cpuset.cpus; \
              ulimit -n; ulimit -Hn; \
              cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null \
                || cut -d' ' -f1 /sys/fs/cgroup/cpu.max) > /out\n",
        &[
            "--shm-size",
            "2m",
            "--memory",
            "64m",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--ulimit",
            "nofile=1234:2345",
            "--cpu-period",
            "100000",
            "--cpu-quota",
            "50000",
        ],
    );
    let lines: Vec<&str> = limits.lines().collect();
    assert!(lines[0].contains("size=2048k"), "{limits}");
    assert_eq!(lines[1], (64u64 << 20).to_string(), "{limits}");
    // cgroup v1's shares, or v2's weight for 512 shares: 1 + (512 - 2) *
    // 9999 / 262142.
    assert!(lines[2] == "512" || lines[2] == "20", "{limits}");
    assert_eq!(lines[3], "0", "{limits}");
    assert_eq!(&lines[4..], ["1234", "2345", "50000"], "{limits}");

    // A memory limit too low for the kernel: the option named, no image.
    let ctx = context(interfaces);
    docker_build(&berthd, &["build", "--memory", "1k", path(ctx.path())])
        .fails_with(1, "Minimum memory limit allowed is 6MB");
    no_build_container_left(&berthd);
}

/// A tiny HTTP server on 127.0.0.1: `/data.txt` answers the current
/// content with a fixed Last-Modified, anything else 404.
struct FileServer {
    port: u16,
    content: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// 2020-09-13T12:26:40Z.
const LAST_MODIFIED: (&str, u64) = ("Sun, 13 Sep 2020 12:26:40 GMT", 1_600_000_000);

impl FileServer {
    fn start(content: &[u8]) -> FileServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let content = std::sync::Arc::new(std::sync::Mutex::new(content.to_vec()));
        let shared = content.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let found = line.starts_with("GET /data.txt ");
                let body = if found {
                    shared.lock().expect("content").clone()
                } else {
                    b"not found".to_vec()
                };
                let status = if found { "200 OK" } else { "404 Not Found" };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: {}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    LAST_MODIFIED.0
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        FileServer { port, content }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(file.path(), data).expect("write");
    let out = Command::new("sha256sum")
        .arg(file.path())
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

#[test]
fn add_of_a_url_and_copy_of_heredocs() {
    let berthd = Berthd::start();
    let server = FileServer::start(b"first\n");
    let dockerfile = format!(
        "FROM busybox\n\
         ARG NAME=world\n\
         ADD {url} /downloaded/\n\
         ADD --checksum=sha256:{sum} {url} /named.txt\n\
         COPY <<EOF /greeting\n\
         hello ${{NAME}} \"quoted\"\n\
         EOF\n\
         COPY <<-'RAW' <<TWO /docs/\n\
         \traw $NAME\n\
         \tRAW\n\
         two $NAME\n\
         TWO\n\
         RUN <<EOF\n\
         echo from a heredoc > /ran\n\
         EOF\n",
        url = server.url("data.txt"),
        sum = sha256_hex(b"first\n"),
    );
    let ctx = context(&dockerfile);
    let out = docker_build(&berthd, &["build", "-t", "fetched", path(ctx.path())]).ok();
    assert!(!out.stdout.contains("Using cache"), "{}", out.stdout);
    let shown = berthd
        .docker(&[
            "run",
            "--rm",
            "fetched",
            "sh",
            "-c",
            "stat -c '%a %Y %n' /downloaded/data.txt /named.txt; cat /downloaded/data.txt \
             /named.txt /greeting /docs/RAW /docs/TWO /ran; stat -c '%a %n' /greeting",
        ])
        .ok()
        .stdout;
    assert_eq!(
        shown,
        format!(
            "600 {t} /downloaded/data.txt\n600 {t} /named.txt\nfirst\nfirst\n\
             hello world \"quoted\"\nraw $NAME\ntwo world\nfrom a heredoc\n644 /greeting\n",
            t = LAST_MODIFIED.1
        )
    );

    // Unchanged: every step from the cache. The content changed: the
    // downloads run again (the checksum now fails the second).
    let again = docker_build(&berthd, &["build", "-t", "fetched", path(ctx.path())]).ok();
    assert_eq!(
        again.stdout.matches("Using cache").count(),
        6,
        "{}",
        again.stdout
    );
    *server.content.lock().expect("content") = b"second\n".to_vec();
    let changed = docker_build(&berthd, &["build", "-t", "fetched", path(ctx.path())])
        .fails_with(1, "checksum mismatch");
    assert!(
        changed.stdout.contains("Step 3/7 : ADD")
            && changed.stdout.matches("Using cache").count() == 1,
        "{}",
        changed.stdout
    );

    // A missing file: the status, nothing left behind.
    let ctx = context(&format!("FROM busybox\nADD {} /x\n", server.url("nosuch")));
    docker_build(&berthd, &["build", path(ctx.path())]).fails_with(1, "404");
    let builds = berthd.data_root().join("engine/builds");
    let left: Vec<_> = fs::read_dir(&builds)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build directories left: {left:?}");
}

fn using_cache(out: &DockerOutput) -> usize {
    out.stdout.matches("Using cache").count()
}

fn image_id(berthd: &Berthd, name: &str) -> String {
    berthd
        .docker(&["image", "inspect", "-f", "{{.Id}}", name])
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[test]
fn cache_from_takes_steps_from_the_history_of_a_given_image() {
    let berthd = Berthd::start();
    let ctx = context("FROM busybox\nENV FOO=bar\nRUN touch /baz\nRUN touch /bax\n");
    let dir = path(ctx.path());
    docker_build(&berthd, &["build", "-t", "cf:1", dir]).ok();
    let source = image_id(&berthd, "cf:1");
    // A --cache-from image that is not there: the build cache is not read
    // either (as Docker's cache decides), every step runs.
    let out = docker_build(
        &berthd,
        &["build", "--cache-from", "nosuchtag", "-t", "cf:2", dir],
    )
    .ok();
    assert_eq!(using_cache(&out), 0, "{}", out.stdout);
    assert_ne!(image_id(&berthd, "cf:2"), source);
    // The build cache forgotten: every step from cf:1's history, and the
    // image cf:1 itself at the end.
    berthd.docker(&["builder", "prune", "-f"]).ok();
    let out = docker_build(
        &berthd,
        &["build", "--cache-from", "cf:1", "-t", "cf:3", dir],
    )
    .ok();
    assert_eq!(using_cache(&out), 3, "{}", out.stdout);
    assert_eq!(image_id(&berthd, "cf:3"), source);
    // A changed step and the ones after it run; the ones before do not.
    let ctx = context("FROM busybox\nENV FOO=bar\nRUN touch /baz\nRUN touch /other\n");
    let out = docker_build(
        &berthd,
        &["build", "--cache-from", "cf:1", path(ctx.path())],
    )
    .ok();
    assert_eq!(using_cache(&out), 2, "{}", out.stdout);
    let run = berthd
        .docker(&["run", "--rm", "cf:3", "ls", "/baz", "/bax"])
        .ok();
    assert_eq!(run.stdout, "/bax\n/baz\n");
}

fn uptime_of(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

#[test]
fn independent_stages_build_at_the_same_time_and_unneeded_ones_not_at_all() {
    let berthd = Berthd::start();
    let stamp = |name: &str| {
        format!(
            "RUN echo \"{name}-start $(cut -d' ' -f1 /proc/uptime)\" > /{name}; sleep 1; \
                 echo \"{name}-end $(cut -d' ' -f1 /proc/uptime)\" >> /{name}\n"
        )
    };
    let dockerfile = format!(
        "FROM busybox AS a\n{}FROM busybox AS b\n{}FROM busybox AS unused\nRUN exit 1\n\
         FROM busybox\nCOPY --from=a /a /t/\nCOPY --from=b /b /t/\n",
        stamp("a"),
        stamp("b")
    );
    let ctx = context(&dockerfile);
    let began = std::time::Instant::now();
    let out = docker_build(&berthd, &["build", "-t", "stages", path(ctx.path())]).ok();
    let took = began.elapsed();
    // Every step in order, the unneeded stage's none.
    let steps: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Step "))
        .collect();
    let expected: Vec<String> = (1..=7).map(|n| format!("Step {n}/7 : ")).collect();
    assert_eq!(steps.len(), 7, "{}", out.stdout);
    for (line, prefix) in steps.iter().zip(&expected) {
        assert!(line.starts_with(prefix), "{}", out.stdout);
    }
    assert!(!out.stdout.contains("exit 1"), "{}", out.stdout);
    // Each RUN's lines follow its step.
    let run_a = out.stdout.find("Step 2/7 : RUN").expect("step 2");
    let step_b = out.stdout.find("Step 3/7 : FROM").expect("step 3");
    assert!(out.stdout[run_a..step_b].contains("Removing intermediate container"));
    // The two sleeps overlapped.
    let files = berthd
        .docker(&["run", "--rm", "stages", "cat", "/t/a", "/t/b"])
        .ok()
        .stdout;
    let (a0, a1) = (uptime_of(&files, "a-start"), uptime_of(&files, "a-end"));
    let (b0, b1) = (uptime_of(&files, "b-start"), uptime_of(&files, "b-end"));
    assert!(a0 < b1 && b0 < a1, "the stages ran in turn: {files}");
    // Both sleeps within well under the 2 s they take in turn.
    let span = a1.max(b1) - a0.min(b0);
    assert!(span < 1.6, "the sleeps took {span} s: {files}");
    eprintln!("two stages of `sleep 1`: the sleeps {span:.2} s, the build {took:?}");
}

#[test]
fn a_failed_stage_stops_the_build_and_leaves_nothing() {
    let berthd = Berthd::start();
    let ctx = context(
        "FROM busybox AS slow\nRUN sleep 3\nRUN echo never\n\
         FROM busybox AS bad\nRUN exit 3\n\
         FROM busybox\nCOPY --from=slow /etc/hostname /a\nCOPY --from=bad /etc/hostname /b\n",
    );
    let out = docker_build(&berthd, &["build", path(ctx.path())])
        .fails_with(1, "returned a non-zero code: 3");
    assert!(
        !out.stdout.contains("echo never\n ---> Running"),
        "{}",
        out.stdout
    );
    let left = berthd.docker(&["ps", "-aq"]).ok().stdout;
    assert_eq!(left.trim(), "");
    let images = berthd
        .docker(&["images", "-a", "--format", "{{.Repository}}"])
        .ok()
        .stdout;
    assert_eq!(images.trim(), "busybox", "{images}");
}

#[test]
fn from_pulls_with_the_clients_registry_credentials() {
    use integration_tests::registry::{require_program, Auth, Registry};
    require_program("docker-registry", "docker-registry");
    let registry = Registry::start(Auth::basic("berth", "s3cret"));
    let berthd = Berthd::start();
    let host = registry.host();
    let image = format!("{host}/busy:1");
    berthd
        .docker(&["login", "-u", "berth", "-p", "s3cret", &host])
        .ok();
    berthd.docker(&["tag", "busybox", &image]).ok();
    berthd.docker(&["push", &image]).ok();
    berthd.docker(&["rmi", &image]).ok();
    berthd.docker(&["logout", &host]).ok();

    // No credentials: the registry refuses the pull.
    let ctx = context(&format!("FROM {image}\nRUN echo built > /built\n"));
    let dir = path(ctx.path());
    docker_build(&berthd, &["build", "-t", "pulled", dir]).fails_with(1, "");
    // Logged in, the CLI sends X-Registry-Config: FROM pulls with it.
    berthd
        .docker(&["login", "-u", "berth", "-p", "s3cret", &host])
        .ok();
    let out = docker_build(&berthd, &["build", "-t", "pulled", dir]).ok();
    assert!(out.stdout.contains("Pulling from busy"), "{}", out.stdout);
    let run = berthd
        .docker(&["run", "--rm", "pulled", "cat", "/built"])
        .ok();
    assert_eq!(run.stdout, "built\n");
    // Present now: no pull, unless --pull asks for one.
    let out = docker_build(&berthd, &["build", dir]).ok();
    assert!(!out.stdout.contains("Pulling from"), "{}", out.stdout);
    let out = docker_build(&berthd, &["build", "--pull", dir]).ok();
    assert!(out.stdout.contains("Pulling from busy"), "{}", out.stdout);
}

#[test]
fn commit_pauses_a_running_container_and_takes_an_exited_one() {
    let berthd = Berthd::start();
    let busybox = image_id(&berthd, "busybox");
    // Started and committed at once, as docker-py's CommitTest does: the
    // command may have exited by the commit.
    for round in 0..5 {
        let id = berthd
            .docker(&["create", "busybox", "touch", "/test"])
            .ok()
            .stdout
            .trim()
            .to_string();
        berthd.docker(&["start", &id]).ok();
        let tag = format!("committed:{round}");
        berthd.docker(&["commit", &id, &tag]).ok();
        let parent = berthd
            .docker(&["image", "inspect", "-f", "{{.Parent}}", &tag])
            .ok()
            .stdout;
        assert_eq!(parent.trim(), busybox);
        berthd.docker(&["rm", "-f", &id]).ok();
    }
    // A running one is paused for the commit and running after it.
    berthd
        .docker(&[
            "run",
            "-d",
            "--name",
            "busy",
            "busybox",
            "sh",
            "-c",
            "echo x > /file; sleep 60",
        ])
        .ok();
    std::thread::sleep(Duration::from_millis(300));
    berthd.docker(&["commit", "busy", "busy:1"]).ok();
    let state = berthd
        .docker(&["inspect", "-f", "{{.State.Status}}", "busy"])
        .ok()
        .stdout;
    assert_eq!(state.trim(), "running");
    let out = berthd
        .docker(&["run", "--rm", "busy:1", "cat", "/file"])
        .ok();
    assert_eq!(out.stdout, "x\n");
    berthd.docker(&["rm", "-f", "busy"]).ok();
}

#[test]
fn a_steps_stderr_is_streamed_in_red_as_docker_shows_it() {
    let berthd = Berthd::start();
    let ctx = context("FROM busybox\nRUN echo out; echo err >&2\n");
    let out = docker_build(&berthd, &["build", path(ctx.path())]).ok();
    assert!(out.stdout.contains("out\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("\u{1b}[91merr\n\u{1b}[0m"),
        "{:?}",
        out.stdout
    );
}
