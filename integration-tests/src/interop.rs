//! Fixtures for the interoperability tests: `berth-runtime` as the runtime
//! of the real `containerd` (through `ctr` and containerd's runc shim,
//! `containerd-shim-runc-v2`) and of the real `dockerd`.
//!
//! - [`image`] builds, once per test binary, a busybox image from the host's
//!   static busybox with `umoci`, as an OCI image-layout tarball (for
//!   `ctr images import`) and, through `skopeo`, a docker-archive tarball
//!   (for `docker load`).
//! - [`Containerd`] starts a private `containerd`: its own config, root,
//!   state, socket, cgroup parent and runtime `--root`, all under one
//!   temporary tree, with the CRI plugin disabled. `ctr` runs containers
//!   with `--runc-binary <berth-runtime>`.
//! - [`Docker`] starts a private `dockerd` on top of a [`Containerd`] of its
//!   own, with `--add-runtime berth=<berth-runtime>`, no bridge, no iptables
//!   and no IP forwarding, in a network namespace of its own: it never
//!   touches the host's network. (Its own namespace matters: a dockerd
//!   started with `--bridge=none` deletes any interface named `docker0` in
//!   its namespace, which would break the host's Docker.)
//! - [`PtyProcess`] runs a client (`ctr run -t`, `docker run -it`) on a
//!   pseudo-terminal, the way a person at a terminal would.
//!
//! Dropping a fixture, even while a test panics, removes what is left
//! (containers and tasks through the daemons), stops the daemons (SIGTERM,
//! then SIGKILL), kills stray shims and container processes, removes the
//! cgroups, lazily unmounts whatever the daemons left mounted in the tree,
//! and deletes the tree. When the test itself passed, anything that had to
//! be cleaned up that the runtime should have removed (a state entry, a
//! cgroup, a mount, a live shim) fails it.
//!
//! Two paths outside the tree cannot be moved by any flag: containerd 1.6
//! puts shim sockets in `/run/containerd/s/` (named by a hash of the daemon
//! address, so they never collide with a system containerd's) and dockerd
//! 20.10 makes `/run/docker/plugins/`. Every live fixture, in any test
//! process, holds a shared flock on /run; a fixture going away that then
//! gets it exclusively removes those directories again, if its process
//! found them missing and they are empty.
//!
//! To check the tests themselves against runc, run them with
//! `BERTH_RUNTIME=$(which runc)`, as the runtime tests.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::registry::require_program;
use crate::{
    cgroup_hierarchies, host, pid_alive, require_root, runtime_binary, unique_id, wait_for,
    COMMAND_TIMEOUT,
};

/// The reference under which the test image is imported and loaded.
pub const IMAGE: &str = "berth-interop/busybox:latest";
/// The containerd namespace `ctr` works in.
pub const NAMESPACE: &str = "test";
/// How long a daemon may take to answer after it was started.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const DAEMON_STOP_GRACE: Duration = Duration::from_secs(10);

fn runtime_under_test() -> PathBuf {
    let bin = runtime_binary();
    assert!(
        bin.is_file(),
        "runtime binary {} not found: build it (`cargo build -p berth-runtime`) \
         or set BERTH_RUNTIME (e.g. BERTH_RUNTIME=$(which runc))",
        bin.display()
    );
    // The daemons resolve it from their own working directory: make it absolute.
    fs::canonicalize(&bin).unwrap_or_else(|e| panic!("canonicalize {}: {e}", bin.display()))
}

// ---------------------------------------------------------------------------
// Commands with a deadline

/// What one client command (`ctr`, `docker`) did.
#[derive(Debug)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// The exit code, or 128+signal if the command was killed by a signal.
    pub fn code(&self) -> i32 {
        crate::exit_code(&self.status)
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, with everything the command said, unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "expected success: {self}");
        self
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Waits for `child` until `deadline`; kills it and returns None after.
fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Runs `cmd` with stdin from /dev/null and its output in files under
/// `io_dir` (a container may keep a pipe open past the command's exit; a
/// file never blocks), failing the test after `timeout`.
#[track_caller]
fn run_command(mut cmd: Command, io_dir: &Path, timeout: Duration) -> CmdOutput {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out_path = io_dir.join(format!("{n}.out"));
    let err_path = io_dir.join(format!("{n}.err"));
    let command = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{command}`: {e}"));
    let status = wait_deadline(&mut child, Instant::now() + timeout);
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    match status {
        Some(status) => CmdOutput {
            command,
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "`{command}` did not exit within {timeout:?}; killed it\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

// ---------------------------------------------------------------------------
// The image

/// The test image as files: an OCI image layout, its tarball and a
/// docker-archive tarball, all tagged [`IMAGE`].
#[derive(Debug)]
pub struct Image {
    dir: PathBuf,
    /// The OCI image layout, tag `latest`.
    pub layout: PathBuf,
    /// The layout as a tarball, for `ctr images import --base-name`.
    pub oci_archive: PathBuf,
    /// A docker-archive tarball (`docker save` format) tagged [`IMAGE`].
    pub docker_archive: PathBuf,
}

/// The directory of the image of this test binary; removed at exit.
static IMAGE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_image_dir() {
    if let Some(dir) = IMAGE_DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The test image, built on first use in this test binary.
pub fn image() -> &'static Image {
    static IMAGE_FILES: OnceLock<Image> = OnceLock::new();
    IMAGE_FILES.get_or_init(build_image)
}

fn build_image() -> Image {
    require_root();
    require_program("umoci", "umoci");
    require_program("skopeo", "skopeo");
    let dir = tempfile::Builder::new()
        .prefix("berth-image-")
        .tempdir()
        .expect("make image temp dir")
        .keep();
    let _ = IMAGE_DIR.set(dir.clone());
    // SAFETY: remove_image_dir is an extern "C" fn taking nothing, which
    // atexit may call at process exit; it only reads a OnceLock.
    unsafe { libc::atexit(remove_image_dir) };

    let rootfs = dir.join("rootfs");
    crate::make_rootfs(&rootfs);
    let layout = dir.join("layout");
    let layout_s = layout.to_str().expect("utf-8 path");
    let tagged = format!("{layout_s}:latest");
    host("umoci", &["init", "--layout", layout_s]);
    host("umoci", &["new", "--image", &tagged]);
    host(
        "umoci",
        &[
            "insert",
            "--image",
            &tagged,
            rootfs.to_str().expect("utf-8 path"),
            "/",
        ],
    );
    host(
        "umoci",
        &[
            "config",
            "--image",
            &tagged,
            "--config.cmd",
            "sh",
            "--config.env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--config.workingdir",
            "/",
        ],
    );
    host("umoci", &["gc", "--layout", layout_s]);

    let oci_archive = dir.join("busybox-oci.tar");
    host(
        "tar",
        &[
            "-C",
            layout_s,
            "-cf",
            oci_archive.to_str().expect("utf-8 path"),
            ".",
        ],
    );
    let docker_archive = dir.join("busybox-docker.tar");
    host(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            &format!("oci:{tagged}"),
            &format!(
                "docker-archive:{}:{IMAGE}",
                docker_archive.to_str().expect("utf-8 path")
            ),
        ],
    );
    Image {
        dir,
        layout,
        oci_archive,
        docker_archive,
    }
}

impl Image {
    /// The directory holding the image files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

// ---------------------------------------------------------------------------
// Daemons

/// A daemon process started by a fixture, its output in a log file.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Daemon {
        let file = File::create(log).expect("create daemon log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            // Its own process group: a ^C of the test run reaches the test
            // binary alone, whose clean-up then stops the daemon in order.
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Daemon {
            name,
            child,
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The end of the daemon's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics with the log if the daemon has exited.
    #[track_caller]
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Shows the end of the log when the test failed: the tree with the
    /// log is removed next.
    fn show_log_if_failed(&self) {
        if thread::panicking() {
            eprintln!(
                "--- the end of the {} log ---\n{}\n---",
                self.name,
                self.log_tail()
            );
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns a problem if the daemon
    /// had to be killed.
    fn stop(&mut self, grace: Duration) -> Option<String> {
        if let Ok(Some(_)) = self.child.try_wait() {
            return None;
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own unreaped child, so it cannot have been reused.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        if wait_deadline(&mut self.child, Instant::now() + grace).is_some() {
            return None;
        }
        // wait_deadline killed (SIGKILL) and reaped it.
        Some(format!(
            "{} did not exit within {grace:?} of SIGTERM; killed it",
            self.name
        ))
    }
}

// ---------------------------------------------------------------------------
// Paths outside the tree that the daemons make

/// Whether /run/containerd and /run/docker existed before this test
/// binary's first fixture.
static PREEXISTING: OnceLock<(bool, bool)> = OnceLock::new();

/// flock(2) on /run itself, which every live fixture of every test process
/// holds shared: whoever gets it exclusively knows no daemon of any
/// fixture is running, and may remove the directories they make there.
fn lock_run(operation: libc::c_int) -> Option<File> {
    let dir = File::open("/run").ok()?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(dir.as_raw_fd(), operation) };
    (rc == 0).then_some(dir)
}

/// A fixture's share of the lock on /run; see [`lock_run`].
struct SystemDirsLease {
    lock: Option<File>,
}

fn system_dirs_enter() -> SystemDirsLease {
    // Blocks only while another fixture removes the directories.
    let lock = lock_run(libc::LOCK_SH);
    PREEXISTING.get_or_init(|| {
        (
            Path::new("/run/containerd").exists(),
            Path::new("/run/docker").exists(),
        )
    });
    SystemDirsLease { lock }
}

/// Gives the lease back; if no fixture anywhere holds one any more, removes
/// the directories the daemons made outside the tree, when they did not
/// exist before and are empty.
fn system_dirs_leave(lease: &mut SystemDirsLease, problems: &mut Vec<String>) {
    drop(lease.lock.take());
    let Some(_exclusive) = lock_run(libc::LOCK_EX | libc::LOCK_NB) else {
        return;
    };
    let (containerd, docker) = PREEXISTING.get().copied().unwrap_or((true, true));
    if !containerd {
        let left = dir_entries(Path::new("/run/containerd/s"));
        if !left.is_empty() {
            problems.push(format!("shim sockets left in /run/containerd/s: {left:?}"));
        }
        for dir in ["/run/containerd/s", "/run/containerd"] {
            let _ = fs::remove_dir(dir);
        }
    }
    if !docker {
        for dir in ["/run/docker/plugins", "/run/docker"] {
            let _ = fs::remove_dir(dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Sweeping up

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && pid_alive(i64::from(*pid)))
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

fn sigkill(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions; callers pass
    // processes this fixture started (shims, container processes).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Kills the processes of a cgroup directory and its children, then
/// removes them, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
            sigkill(pid);
        }
        let freezer = dir.join("freezer.state");
        if freezer.exists() {
            let _ = fs::write(&freezer, "THAWED");
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() || Instant::now() >= deadline {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The directories of cgroup `parent` (absolute, `/berth-interop-…`) in
/// every hierarchy where it exists.
fn cgroup_parent_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.mount_point.join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// Entries of a directory, as names; empty if it does not exist.
fn dir_entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// containerd

/// A private `containerd` and the paths `ctr` needs to run containers with
/// the runtime under test. See the module documentation for Drop.
pub struct Containerd {
    tmp: Option<tempfile::TempDir>,
    daemon: Option<Daemon>,
    socket: PathBuf,
    runtime: PathBuf,
    cgroup_parent: String,
    lease: SystemDirsLease,
    /// Problems found by a fixture built on this one (dockerd), reported
    /// with ours.
    extra_problems: Mutex<Vec<String>>,
}

impl Containerd {
    /// Starts containerd and imports the test image into [`NAMESPACE`].
    pub fn start() -> Self {
        require_root();
        let runtime = runtime_under_test();
        let containerd = require_program("containerd", "containerd");
        require_program("ctr", "containerd");
        require_program("containerd-shim-runc-v2", "containerd");
        let image = image();
        let lease = system_dirs_enter();
        let tmp = tempfile::Builder::new()
            .prefix("berth-ctd-")
            .tempdir()
            .expect("make temp dir");
        // Container processes must be able to walk to their rootfs.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tmp");
        for dir in ["root", "state", "runc", "fifo", "io"] {
            fs::create_dir(tmp.path().join(dir)).expect("mkdir");
        }
        let socket = tmp.path().join("containerd.sock");
        let config = tmp.path().join("config.toml");
        crate::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
# CRI wants CNI and a sandbox image; the tests use the plain task API.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "debug"
"#,
                root = tmp.path().join("root").display(),
                state = tmp.path().join("state").display(),
                socket = socket.display(),
            ),
        );
        let mut cmd = Command::new(containerd);
        cmd.arg("--config").arg(&config);
        let daemon = Daemon::spawn("containerd", cmd, &tmp.path().join("containerd.log"));
        let cgroup_parent = format!("/{}", unique_id("berth-interop"));
        let mut ctd = Containerd {
            tmp: Some(tmp),
            daemon: Some(daemon),
            socket,
            runtime,
            cgroup_parent,
            lease,
            extra_problems: Mutex::new(Vec::new()),
        };
        ctd.wait_ready();
        let archive = image.oci_archive.to_str().expect("utf-8 path");
        ctd.ctr(&[
            "images",
            "import",
            "--base-name",
            IMAGE.trim_end_matches(":latest"),
            archive,
        ])
        .ok();
        ctd
    }

    #[track_caller]
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            if let Some(d) = self.daemon.as_mut() {
                d.check_alive();
            }
            if self.socket.exists() && self.ctr(&["version"]).success() {
                return;
            }
            if Instant::now() >= deadline {
                let tail = self.daemon.as_ref().map(Daemon::log_tail);
                panic!(
                    "containerd did not answer within {DAEMON_START_TIMEOUT:?}; its log ends:\n{}",
                    tail.unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The private temporary tree.
    pub fn tmp(&self) -> &Path {
        self.tmp.as_ref().expect("tmp present until drop").path()
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime under test (absolute).
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// The cgroup under which every container of this fixture lives.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The runtime's `--root` for containers `ctr` runs (the shim appends
    /// the namespace).
    pub fn runtime_root(&self) -> PathBuf {
        self.tmp().join("runc")
    }

    /// The runtime's state entries left under its root, as `<ns>/<id>`.
    pub fn runtime_state_entries(&self) -> Vec<String> {
        let root = self.runtime_root();
        dir_entries(&root)
            .into_iter()
            .flat_map(|ns| {
                dir_entries(&root.join(&ns))
                    .into_iter()
                    .map(move |id| format!("{ns}/{id}"))
            })
            .collect()
    }

    /// A fresh container id.
    pub fn new_id(&self, prefix: &str) -> String {
        unique_id(prefix)
    }

    /// `ctr -a <socket> -n test ARGS`, with [`COMMAND_TIMEOUT`].
    #[track_caller]
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = self.ctr_command(args);
        cmd.env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        run_command(cmd, &self.tmp().join("io"), COMMAND_TIMEOUT)
    }

    /// The `ctr` command line, unstarted (to run it on a terminal).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args);
        cmd
    }

    /// `ctr run` and its flags that make the task use the runtime under
    /// test, this fixture's runtime root, FIFO directory and cgroup
    /// parent; then `extra`, the image, `id` and `args`.
    pub fn run_args(&self, extra: &[&str], id: &str, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = vec![
            "run".into(),
            "--runc-binary".into(),
            self.runtime.display().to_string(),
            "--runc-root".into(),
            self.runtime_root().display().to_string(),
            "--fifo-dir".into(),
            self.tmp().join("fifo").display().to_string(),
            "--cgroup".into(),
            format!("{}/{id}", self.cgroup_parent),
        ];
        all.extend(extra.iter().map(|s| s.to_string()));
        all.push(IMAGE.into());
        all.push(id.into());
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    /// `ctr run ... [extra] IMAGE ID ARGS` (see [`Containerd::run_args`]).
    #[track_caller]
    pub fn run(&self, extra: &[&str], id: &str, args: &[&str]) -> CmdOutput {
        let all = self.run_args(extra, id, args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.ctr(&refs)
    }

    /// `ctr task exec --fifo-dir F [extra] --exec-id EXEC ID ARGS`.
    #[track_caller]
    pub fn exec(&self, extra: &[&str], id: &str, exec_id: &str, args: &[&str]) -> CmdOutput {
        let fifo = self.tmp().join("fifo").display().to_string();
        let mut all = vec!["task", "exec", "--fifo-dir", &fifo];
        all.extend_from_slice(extra);
        all.extend_from_slice(&["--exec-id", exec_id, id]);
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    /// The task's (pid, status) from `ctr task ls`, if it has a task.
    #[track_caller]
    pub fn task(&self, id: &str) -> Option<(i64, String)> {
        let out = self.ctr(&["task", "ls"]).ok();
        out.stdout.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [task, pid, status] if *task == id => Some((pid.parse().ok()?, status.to_string())),
                _ => None,
            }
        })
    }

    /// Waits until `ctr task ls` shows the task with `status` (RUNNING,
    /// STOPPED, PAUSED).
    #[track_caller]
    pub fn wait_task_status(&self, id: &str, status: &str) {
        wait_for(
            &format!("task {id} to be {status}"),
            crate::WAIT_TIMEOUT,
            || self.task(id).filter(|(_, s)| s == status).map(|_| ()),
        )
    }

    fn record_problem(&self, problem: String) {
        self.extra_problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(problem);
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .extra_problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let Some(tmp_path) = self.tmp.as_ref().map(|t| t.path().to_path_buf()) else {
            return problems;
        };
        if let Some(d) = &self.daemon {
            d.show_log_if_failed();
        }
        let daemon_alive = self
            .daemon
            .as_mut()
            .is_some_and(|d| matches!(d.child.try_wait(), Ok(None)));
        if daemon_alive {
            // Whatever the test left in our namespace: kill and delete it
            // through containerd, so the runtime's delete runs.
            for ns in ["moby", NAMESPACE] {
                self.delete_all(ns);
            }
        }
        let entries = self.runtime_state_entries();
        if !entries.is_empty() {
            problems.push(format!(
                "runtime state left after every task was deleted: {entries:?}"
            ));
        }
        let leaf_cgroups: Vec<PathBuf> = cgroup_parent_dirs(&self.cgroup_parent)
            .iter()
            .flat_map(|parent| {
                fs::read_dir(parent)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
            })
            .collect();
        if !leaf_cgroups.is_empty() {
            problems.push(format!("container cgroups left: {leaf_cgroups:?}"));
        }
        if let Some(problem) = self.daemon.as_mut().and_then(|d| d.stop(DAEMON_STOP_GRACE)) {
            problems.push(problem);
        }
        // Shims carry the daemon's address on their command line.
        let needle = tmp_path.display().to_string();
        let shims = processes_mentioning(&needle);
        if !shims.is_empty() {
            problems.push(format!("processes left running: {shims:?}"));
            for pid in shims {
                sigkill(pid);
            }
        }
        for dir in cgroup_parent_dirs(&self.cgroup_parent) {
            remove_cgroup_tree(&dir);
        }
        crate::release_temp_tree(self.tmp.take(), &mut problems);
        system_dirs_leave(&mut self.lease, &mut problems);
        problems
    }

    /// Kills and deletes every task and container of namespace `ns`.
    fn delete_all(&self, ns: &str) {
        let quiet = |what: &str| -> Vec<String> {
            let mut cmd = Command::new("ctr");
            cmd.arg("--address")
                .arg(&self.socket)
                .arg("--namespace")
                .arg(ns)
                .args([what, "ls", "-q"]);
            run_command(cmd, &self.tmp().join("io"), COMMAND_TIMEOUT)
                .stdout
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let ctr_ns = |args: &[&str]| {
            let mut cmd = Command::new("ctr");
            cmd.arg("--address")
                .arg(&self.socket)
                .arg("--namespace")
                .arg(ns)
                .args(args);
            run_command(cmd, &self.tmp().join("io"), COMMAND_TIMEOUT)
        };
        for task in quiet("tasks") {
            let _ = ctr_ns(&["tasks", "kill", "--all", "--signal", "SIGKILL", &task]);
            let _ = ctr_ns(&["tasks", "delete", "--force", &task]);
        }
        for container in quiet("containers") {
            let _ = ctr_ns(&["containers", "delete", &container]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let problems = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cleanup()))
            .unwrap_or_else(|_| vec!["clean-up itself panicked (see above)".to_owned()]);
        if !problems.is_empty() && !thread::panicking() {
            panic!("the test left things behind:\n  {}", problems.join("\n  "));
        }
    }
}

// ---------------------------------------------------------------------------
// dockerd

/// A private `dockerd` on a private [`Containerd`], with the runtime under
/// test registered as runtime `berth` and the test image loaded.
pub struct Docker {
    daemon: Option<Daemon>,
    dir: PathBuf,
    socket: PathBuf,
    // Dropped after the Drop of Docker has stopped dockerd.
    containerd: Containerd,
}

impl Docker {
    /// Starts dockerd and loads the test image.
    pub fn start() -> Self {
        let containerd = Containerd::start();
        let dockerd = require_program("dockerd", "docker.io");
        require_program("docker", "docker.io");
        let dir = containerd.tmp().join("docker");
        for sub in ["", "data", "exec", "cli"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let socket = dir.join("docker.sock");
        // Our own configuration file, so /etc/docker/daemon.json is not
        // read; it moves the libtrust key dockerd 20.10 would otherwise
        // write to /etc/docker/key.json (there is no flag for it).
        crate::write(
            dir.join("daemon.json"),
            serde_json::json!({"deprecated-key-path": dir.join("key.json")}).to_string(),
        );
        let mut cmd = Command::new(dockerd);
        cmd.arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--containerd")
            .arg(containerd.socket())
            .arg("--add-runtime")
            .arg(format!("berth={}", containerd.runtime().display()))
            .arg("--cgroup-parent")
            .arg(containerd.cgroup_parent())
            .args([
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                // No network of its own; the namespace it gets below keeps
                // even what --bridge=none deletes away from the host's.
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--shutdown-timeout=2",
                "--debug",
            ]);
        let own_network_namespace = || {
            // SAFETY: unshare(2) takes no pointers and changes only the
            // calling process.
            match unsafe { libc::unshare(libc::CLONE_NEWNET) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        };
        // SAFETY: between fork and exec the hook makes one system call,
        // unshare(2), which is async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(own_network_namespace);
        }
        let daemon = Daemon::spawn("dockerd", cmd, &dir.join("dockerd.log"));
        let mut docker = Docker {
            daemon: Some(daemon),
            dir,
            socket,
            containerd,
        };
        docker.wait_ready();
        let archive = image().docker_archive.to_str().expect("utf-8 path");
        docker.docker(&["load", "--quiet", "--input", archive]).ok();
        docker
    }

    #[track_caller]
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        loop {
            if let Some(d) = self.daemon.as_mut() {
                d.check_alive();
            }
            if self.socket.exists()
                && self
                    .docker(&["version", "--format", "{{.Server.Version}}"])
                    .success()
            {
                return;
            }
            if Instant::now() >= deadline {
                let tail = self.daemon.as_ref().map(Daemon::log_tail);
                panic!(
                    "dockerd did not answer within {DAEMON_START_TIMEOUT:?}; its log ends:\n{}",
                    tail.unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The containerd under this dockerd.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// The runtime's state entries for dockerd's containers: dockerd gives
    /// the shim `--root <exec-root>/runtime-<name>`, plus the namespace.
    pub fn runtime_state_entries(&self) -> Vec<String> {
        let exec = self.dir.join("exec");
        dir_entries(&exec)
            .into_iter()
            .filter(|d| d.starts_with("runtime-"))
            .flat_map(|d| {
                dir_entries(&exec.join(&d).join("moby"))
                    .into_iter()
                    .map(move |id| format!("{d}/moby/{id}"))
            })
            .collect()
    }

    /// The `docker` command line for this daemon, unstarted.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .args(args);
        cmd
    }

    /// `docker ARGS` against this daemon, with [`COMMAND_TIMEOUT`].
    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> CmdOutput {
        run_command(
            self.docker_command(args),
            &self.containerd.tmp().join("io"),
            COMMAND_TIMEOUT,
        )
    }

    /// `docker inspect --format FORMAT ID`, trimmed.
    #[track_caller]
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.docker(&["inspect", "--format", format, id])
            .ok()
            .stdout
            .trim()
            .to_owned()
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(d) = &self.daemon {
            d.show_log_if_failed();
        }
        let alive = self
            .daemon
            .as_mut()
            .is_some_and(|d| matches!(d.child.try_wait(), Ok(None)));
        if alive {
            let left = self.docker(&["ps", "--all", "--quiet", "--no-trunc"]);
            let ids: Vec<&str> = left.stdout.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "--force", "--volumes"];
                args.extend_from_slice(&ids);
                let _ = self.docker(&args);
            }
        }
        if let Some(problem) = self.daemon.as_mut().and_then(|d| d.stop(DAEMON_STOP_GRACE)) {
            problems.push(problem);
        }
        let entries = self.runtime_state_entries();
        if !entries.is_empty() {
            problems.push(format!(
                "runtime state left after every docker container was removed: {entries:?}"
            ));
        }
        problems
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let problems = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cleanup()))
            .unwrap_or_else(|_| vec!["docker clean-up itself panicked (see above)".to_owned()]);
        for problem in problems {
            self.containerd.record_problem(problem);
        }
        // The containerd field is dropped next and reports everything.
    }
}

// ---------------------------------------------------------------------------
// Pseudo-terminals

/// A client command running on a new pseudo-terminal (its stdin, stdout,
/// stderr and controlling terminal), as when a person types it.
pub struct PtyProcess {
    command: String,
    child: Option<Child>,
    master: File,
    output: Vec<u8>,
}

impl PtyProcess {
    /// Starts `cmd` on a new pty of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtyProcess {
        let command = describe(&cmd);
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: the out-pointers are valid c_ints, the name pointer and
        // termios pointer may be null, and size is a valid winsize.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert!(rc == 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: openpty succeeded, so this is an open descriptor that
        // nothing else owns.
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        // SAFETY: as for the master.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        for fd in [&master, &slave] {
            // SAFETY: fcntl on a descriptor we own, with an int argument.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave))
            .env("TERM", "xterm");
        // SAFETY: the hook runs between fork and exec and calls only
        // setsid and ioctl, which are async-signal-safe.
        unsafe { cmd.pre_exec(take_terminal) };
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{command}` on a pty: {e}"));
        drop(cmd);
        drop(slave);
        PtyProcess {
            command,
            child: Some(child),
            master: File::from(master),
            output: Vec::new(),
        }
    }

    /// Everything read from the terminal so far, without carriage returns
    /// (two terminals in a row turn a newline into "\r\r\n").
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output).replace('\r', "")
    }

    /// Types `bytes` on the terminal.
    pub fn write(&mut self, bytes: &[u8]) {
        io::Write::write_all(&mut self.master, bytes)
            .unwrap_or_else(|e| panic!("write to the pty of `{}`: {e}", self.command));
    }

    /// Reads what is ready within `wait`; false once the terminal is closed
    /// (every process holding it has exited).
    fn read_some(&mut self, wait: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return true;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.output.extend_from_slice(&buf[..n]);
                true
            }
            // EIO: the slave side is closed.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => panic!("read the pty of `{}`: {e}", self.command),
        }
    }

    /// Reads until the output (all of it so far) contains `needle`;
    /// panics at the deadline or if the terminal closes first.
    #[track_caller]
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.output();
            if text.contains(needle) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {needle:?} from `{}`; read so far: {text:?}",
                self.command
            );
            if !self.read_some(left.min(Duration::from_millis(100))) {
                let text = self.output();
                assert!(
                    text.contains(needle),
                    "the terminal of `{}` closed before {needle:?}; read: {text:?}",
                    self.command
                );
                return text;
            }
        }
    }

    /// Reads until the terminal closes and waits for the command; returns
    /// its exit code and all its output. Panics (killing it) at the deadline.
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> (i32, String) {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("waited twice");
        let mut open = true;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Collect what is still buffered.
                while open && self.read_some(Duration::from_millis(50)) {
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                return (code, self.output());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{}` did not exit within {timeout:?}; killed it; output: {:?}",
                    self.command,
                    self.output()
                );
            }
            if open {
                open = self.read_some(left.min(Duration::from_millis(50)));
            } else {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// In the child, before exec: a new session whose controlling terminal is
/// stdin (the pty slave by then).
fn take_terminal() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCSCTTY takes an int argument, no pointer.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for PtyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
