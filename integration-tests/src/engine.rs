//! A real `berthd` (with the supervisor it starts) on a temporary data root,
//! exec root and socket, driven by the real docker CLI (`DOCKER_HOST`) or by
//! raw HTTP requests.
//!
//! The guard removes every container through the API, stops the daemon
//! (which stops its supervisor), then kills whatever tasks are left (their
//! shims outlive the daemons), and removes its tree; leftovers and mounts
//! are reported as leaks, on failure too.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::registry::run_with_timeout;
use crate::supervisor::{child_output, ctr_binary};
use crate::{build_binary, release_temp_tree, require_root};

/// How long one docker command may take before the test fails.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);

pub fn berthd_binary() -> PathBuf {
    build_binary("BERTHD", "berthd")
}

pub fn berth_binary() -> PathBuf {
    build_binary("BERTH", "berth")
}

/// The docker CLI the tests drive.
pub fn docker_binary() -> PathBuf {
    std::env::var_os("DOCKER_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| "docker".into())
}

/// A busybox image (`busybox:latest`, Debian's static busybox) as an OCI
/// layout tarball, made once per test process.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-engine-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/make-busybox-image.sh");
        let out = Command::new(script)
            .arg(&dir)
            .output()
            .expect("run make-busybox-image.sh");
        assert!(
            out.status.success(),
            "make-busybox-image.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = IMAGE_DIR.set(dir.clone());
        // SAFETY: remove_image_dir is an extern "C" fn taking nothing that
        // only reads a OnceLock; atexit may call it at process exit.
        unsafe { libc::atexit(remove_image_dir) };
        dir.join("busybox-oci.tar")
    })
}

static IMAGE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_image_dir() {
    if let Some(dir) = IMAGE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What a docker command did.
#[derive(Debug)]
pub struct DockerOutput {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl DockerOutput {
    fn from(args: &[&str], out: Output) -> DockerOutput {
        DockerOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> DockerOutput {
        assert_eq!(
            self.code, 0,
            "docker {:?} failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(self, code: i32, needle: &str) -> DockerOutput {
        assert_eq!(
            self.code, code,
            "docker {:?}: exit code\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "docker {:?}: stderr lacks {needle:?}:\n{}",
            self.args,
            self.stderr
        );
        self
    }
}

/// A running berthd. [`Berthd::start`] runs it in the host's network
/// namespace with `--bridge none` (no networking set up: nothing of the
/// host's network is touched, and registries on the host's loopback are
/// reachable); [`Berthd::start_networked`] runs it with networking in a
/// network namespace of its own (bound at `<dir>/netns`, so a restarted
/// daemon finds its bridges and containers), where its bridges, veths,
/// firewall rules and sysctls live and die.
pub struct Berthd {
    tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    /// Flags berthd is started with besides its paths.
    args: Vec<String>,
    /// Whether it runs in its own network namespace.
    netns: bool,
}

impl Berthd {
    /// Starts berthd on a fresh tree and imports `busybox:latest`.
    pub fn start() -> Berthd {
        Berthd::start_in(&["--bridge", "none"], false)
    }

    /// Starts berthd with networking, in a network namespace of its own,
    /// with more flags (`--dns`, `--bip`).
    pub fn start_networked(args: &[&str]) -> Berthd {
        Berthd::start_in(args, true)
    }

    /// [`Berthd::start_networked`] (its first name).
    pub fn start_with(args: &[&str]) -> Berthd {
        Berthd::start_networked(args)
    }

    /// Starts berthd in the host's network namespace with these flags
    /// (`-H`: the fixture's unix socket is added to them).
    pub fn start_with_args(args: &[&str]) -> Berthd {
        Berthd::start_in(args, false)
    }

    /// [`Berthd::start_with_args`] with flags made once the fixture's
    /// directory exists (to write a file there first).
    pub fn start_configured(args: impl FnOnce(&Berthd) -> Vec<String>) -> Berthd {
        let mut d = Berthd::start_in_later(&[], false);
        d.args = args(&d);
        d.spawn();
        d.import_busybox();
        d
    }

    fn start_in(args: &[&str], netns: bool) -> Berthd {
        let mut d = Berthd::start_in_later(args, netns);
        d.spawn();
        d.import_busybox();
        d
    }

    fn start_in_later(args: &[&str], netns: bool) -> Berthd {
        require_root();
        // A short name: a shim's socket path (state dir, namespace, a
        // 64-digit id) must fit in 107 bytes.
        let tmp = tempfile::Builder::new()
            .prefix("be")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = Berthd {
            tmp: Some(tmp),
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            netns,
        };
        std::fs::create_dir_all(d.dir().join("docker-config")).expect("docker config dir");
        if netns {
            d.make_netns();
        }
        d
    }

    fn make_netns(&self) {
        let d = self;
        let netns = d.netns();
        std::fs::write(&netns, b"").expect("netns file");
        let made = Command::new("unshare")
            .arg(format!("--net={}", netns.display()))
            .arg("true")
            .status()
            .expect("unshare");
        assert!(made.success(), "make berthd's network namespace");
        // Its loopback up, as a host's is.
        let lo = d.in_netns("ip").args(["link", "set", "lo", "up"]).status();
        assert!(lo.is_ok_and(|s| s.success()), "lo up in berthd's namespace");
    }

    pub fn dir(&self) -> &Path {
        self.tmp
            .as_ref()
            .map(|t| t.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir().join("run")
    }

    /// The network namespace berthd runs in.
    pub fn netns(&self) -> PathBuf {
        self.dir().join("netns")
    }

    /// `program` to run in berthd's network namespace (to reach its
    /// containers, list its links or its firewall rules).
    pub fn in_netns(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    pub fn socket(&self) -> PathBuf {
        self.exec_root().join("berth.sock")
    }

    pub fn supervisor_socket(&self) -> PathBuf {
        self.exec_root().join("supervisor.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("berthd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Starts the daemon and waits until it answers `/_ping`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "berthd is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("berthd.log"))
            .expect("open berthd.log");
        let mut cmd = if self.netns {
            self.in_netns(&berthd_binary().to_string_lossy())
        } else {
            Command::new(berthd_binary())
        };
        // With -H given, the fixture's socket is one of the listeners.
        if self
            .args
            .iter()
            .any(|a| a == "-H" || a == "--host" || a.starts_with("--host="))
        {
            cmd.arg("-H")
                .arg(format!("unix://{}", self.socket().display()));
        }
        let child = cmd
            .args(&self.args)
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .request("GET", "/_ping", None)
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("berthd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not answer within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the daemon with SIGTERM (its supervisor with it).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9` of berthd only (its supervisor keeps running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pid of the supervisor berthd started, from its children.
    pub fn supervisor_pid(&self) -> Option<i32> {
        let sock = self.supervisor_socket().to_string_lossy().into_owned();
        crate::host_processes(|_, cmdline| {
            cmdline.contains("berth-supervisord") && cmdline.contains(&sock)
        })
        .first()
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
    }

    fn import_busybox(&self) {
        let out = Command::new(ctr_binary())
            .arg("--address")
            .arg(self.supervisor_socket())
            .args([
                "-n",
                "berth",
                "images",
                "import",
                "--name",
                "busybox:latest",
            ])
            .arg(busybox_tar())
            .output()
            .expect("berth-ctr import");
        assert!(
            out.status.success(),
            "import busybox: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The docker CLI with this daemon, no stdin.
    pub fn docker(&self, args: &[&str]) -> DockerOutput {
        DockerOutput::from(
            args,
            run_with_timeout(self.docker_command(args), DOCKER_TIMEOUT),
        )
    }

    /// The docker CLI with this daemon, `input` on its stdin.
    pub fn docker_input(&self, args: &[&str], input: &[u8]) -> DockerOutput {
        let mut child = self
            .docker_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child_output(child, DOCKER_TIMEOUT, "docker");
        let _ = writer.join();
        DockerOutput::from(args, out)
    }

    /// A docker command with `DOCKER_HOST` set (to start it yourself).
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(docker_binary());
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir().join("docker-config"))
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    /// The berth CLI with this daemon (through `DOCKER_HOST`, as docker
    /// is pointed): exit code, stdout, stderr.
    pub fn berth(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(berth_binary())
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir().join("docker-config"))
            .env_remove("BERTH_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap_or_else(|e| panic!("run berth {args:?}: {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits (up to 10 s) until the daemon's namespace has no veth and no
    /// user bridge left (both go in the background after their removal
    /// answered); the `ip -br link` seen last.
    pub fn links_once_gone(&self) -> String {
        let links = || {
            let out = self
                .in_netns("ip")
                .args(["-br", "link"])
                .output()
                .expect("ip link");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = links();
            let left = now.contains("veth") || now.contains("br-");
            if !left || std::time::Instant::now() >= deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One HTTP request on the API socket: status and body; `None` when the
    /// socket does not answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Option<(u16, Vec<u8>)> {
        http(&self.socket(), method, path, body)
    }

    /// Removes every container through the API.
    pub fn remove_all(&self) {
        let Some((200, body)) = self.request("GET", "/containers/json?all=1", None) else {
            return;
        };
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        for c in list.as_array().into_iter().flatten() {
            if let Some(id) = c["Id"].as_str() {
                let _ = self.request("DELETE", &format!("/containers/{id}?force=1"), None);
            }
        }
    }

    /// Kills what is left of every task and removes its bundle.
    fn remove_tasks(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let shims = self.exec_root().join("shims");
        for ns in std::fs::read_dir(&shims).into_iter().flatten().flatten() {
            for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let dir = task.path();
                let id = task.file_name().to_string_lossy().into_owned();
                for name in ["shim.pid", "init.pid"] {
                    if let Some(pid) = std::fs::read_to_string(dir.join(name))
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok())
                    {
                        // SAFETY: kill(2) of the test's own shim or container.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                let _ = Command::new(crate::runtime_binary())
                    .arg("--root")
                    .arg(self.exec_root().join("runtime").join(ns.file_name()))
                    .args(["delete", "--force", &id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(dir.join("rootfs"))
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(&dir);
                removed.push(id);
            }
        }
        removed
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        if std::thread::panicking() {
            eprintln!("--- berthd log ---\n{}", self.log());
        }
        if self.child.is_some() {
            self.remove_all();
        }
        if let Some(status) = self.stop() {
            if !status.success() && !std::thread::panicking() {
                problems.push(format!("berthd exited with {status} on SIGTERM"));
            }
        }
        // A supervisor left by a kill -9 of berthd.
        if let Some(pid) = self.supervisor_pid() {
            // SAFETY: kill(2) of the test's own supervisor.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for task in self.remove_tasks() {
            problems.push(format!("task {task} left behind"));
        }
        if self.netns {
            let _ = Command::new("umount")
                .arg(self.netns())
                .stderr(Stdio::null())
                .status();
        }
        release_temp_tree(self.tmp.take(), &mut problems);
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("berthd guard: {}", problems.join("; "));
        }
    }
}

/// A minimal HTTP/1.1 client on a unix socket: one request, `Connection:
/// close`, the status and the whole body (chunked bodies decoded).
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Option<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    // A server may answer (and close) before it has read a refused body.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut rest = resp[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        rest = dechunk(&rest);
    }
    Some((status, rest))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}
