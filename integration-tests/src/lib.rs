//! Fixtures for the end-to-end tests of `berth-runtime`, an OCI runtime with
//! runc's command line.
//!
//! The tests drive the real binary: `$BERTH_RUNTIME` when set (for example
//! `BERTH_RUNTIME=$(which runc)` to check the tests themselves against runc),
//! otherwise the `berth-runtime` of the build these tests belong to (see
//! [`build_dir`]).
//!
//! Every test owns a [`Runtime`]: a private temporary tree holding the
//! runtime's `--root`, its `--log`, the bundles and any host scratch
//! directories. Dropping it, even while a test panics, force-deletes every
//! container the test made, runs the test's own clean-up steps, and then
//! checks that nothing is left: no state entry, no cgroup directory, no mount
//! under the tree, no live container process.
//!
//! Tests named `berth_only_*` check behaviour where berth deliberately
//! differs from runc 1.1 (wording, spec fixes); skip them when validating
//! against runc: `BERTH_RUNTIME=$(which runc) cargo test -p integration-tests
//! -- --skip berth_only_`.

pub mod cri;
pub mod engine;
pub mod images;
pub mod interop;
pub mod registry;
pub mod supervisor;
use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Longest time any single runtime command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Default deadline for conditions a test waits on.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Parent of every container cgroup the tests create.
pub const CGROUP_PARENT: &str = "/berth-test";
/// PATH given to processes inside the test containers.
pub const CONTAINER_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Fails the test unless it runs as root: these tests never skip silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the runtime integration tests must run as root (euid is {euid}); \
         run them with `sudo -E cargo test -p integration-tests`"
    );
}

/// The directory holding the binaries of the build these tests belong to
/// (`<target>/debug`). It is found from the test executable itself, which
/// cargo puts in `<target>/debug/deps/`, so a `CARGO_TARGET_DIR` or a
/// `build.target-dir` is honoured without being passed on.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    match exe.parent().and_then(Path::parent) {
        Some(dir) => dir.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
    }
}

/// The binary `name` of this build, unless the variable `env` names another.
pub fn build_binary(env: &str, name: &str) -> PathBuf {
    match std::env::var_os(env) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => build_dir().join(name),
    }
}

/// The runtime binary under test: `$BERTH_RUNTIME`, or this build's.
pub fn runtime_binary() -> PathBuf {
    build_binary("BERTH_RUNTIME", "berth-runtime")
}

/// A container id unique across tests, test processes and runs: `<prefix>-<hex>`.
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}{:x}{:05x}",
        std::process::id(),
        n,
        nanos >> 12
    )
}

/// Polls `cond` every few milliseconds until it holds; panics naming `what`
/// when `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, timeout, || cond().then_some(()))
}

/// Polls `f` until it returns `Some`, and returns that value; panics naming
/// `what` when `timeout` passes first.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// The live host processes other than this one, as `pid (command line)`,
/// that `keep` picks by their pid and command line: what a test left
/// running (until it execs, a container's init is a copy of the runtime
/// and carries the runtime's command line).
pub fn host_processes(mut keep: impl FnMut(&str, &str) -> bool) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let alive = pid.parse().is_ok_and(pid_alive);
            (alive && keep(&pid, &cmdline)).then(|| format!("{pid} ({})", cmdline.trim()))
        })
        .collect()
}

/// Whether a host process is alive (exists and is not a zombie).
pub fn pid_alive(pid: i64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// Start time of a process in clock ticks, to tell a pid from a later re-use.
fn pid_start_time(pid: i64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the command name start at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Reads a file to a string, with the path in the panic message.
pub fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes a file, with the path in the panic message.
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
    let path = path.as_ref();
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()))
}

/// Runs a host command that must succeed (used for fixtures: mount, ip, ...).
pub fn host(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Output of a runtime command

/// Removes a test's temporary tree: mounts left under it are reported and
/// lazily unmounted first; if any remain, the tree is kept (and reported)
/// rather than deleting host files through a bind mount.
pub fn release_temp_tree(tmp: Option<tempfile::TempDir>, problems: &mut Vec<String>) {
    let Some(tmp) = tmp else { return };
    for mount in host_mounts_under(tmp.path()).iter().rev() {
        problems.push(format!("mount {} left on the host", mount.display()));
        let _ = Command::new("umount")
            .arg("-l")
            .arg(mount)
            .stderr(Stdio::null())
            .status();
    }
    if host_mounts_under(tmp.path()).is_empty() {
        if let Err(e) = tmp.close() {
            problems.push(format!("removing the temp tree: {e}"));
        }
    } else {
        let kept = tmp.keep();
        problems.push(format!("kept {} (mounts remain)", kept.display()));
    }
}

/// A process's exit code as a shell reports it: 128+N when signal N killed
/// it, -1 if neither is known.
pub fn exit_code(status: &ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

/// What one invocation of the runtime did.
#[derive(Debug)]
pub struct Output {
    /// The arguments after the global flags, for messages.
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The file that received the command's stdout. Container processes
    /// started by `create` keep writing to it after the command returns.
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Output {
    /// The exit code, or 128+signal if the runtime itself was killed by a signal.
    pub fn code(&self) -> i32 {
        exit_code(&self.status)
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, with everything the runtime said, unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "expected success: {self}");
        self
    }

    /// Panics unless the command failed; returns it for more checks.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(!self.success(), "expected failure: {self}");
        self
    }

    /// Panics unless the command failed with `needle` in its stderr.
    #[track_caller]
    pub fn failed_with(self, needle: &str) -> Self {
        let out = self.failed();
        assert!(
            out.stderr.contains(needle),
            "expected {needle:?} in stderr: {out}"
        );
        out
    }

    /// The stdout file as it is now (container output written after the
    /// command returned included).
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Waits until the stdout file contains `needle`; returns its contents.
    #[track_caller]
    pub fn wait_stdout(&self, needle: &str) -> String {
        wait_for(
            &format!("{needle:?} in the output of {:?}", self.args),
            WAIT_TIMEOUT,
            || {
                let now = self.stdout_now();
                now.contains(needle).then_some(now)
            },
        )
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`runtime {}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// A runtime command running in the background (a foreground `run`, say).
pub struct Background {
    child: Option<Child>,
    args: Vec<String>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Background {
    /// The stdout file as it is now.
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Waits for the command to exit, killing it and panicking after `timeout`.
    #[track_caller]
    /// The pid of the runtime process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn wait(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("waited twice");
        let status = wait_child(&mut child, timeout, &self.args);
        collect(
            self.args.clone(),
            status,
            &self.stdout_path,
            &self.stderr_path,
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[track_caller]
fn wait_child(child: &mut Child, timeout: Duration, args: &[String]) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("wait for `runtime {}`: {e}", args.join(" ")),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`runtime {}` did not exit within {timeout:?}; killed it",
                args.join(" ")
            );
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn collect(args: Vec<String>, status: ExitStatus, stdout: &Path, stderr: &Path) -> Output {
    Output {
        args,
        status,
        stdout: fs::read_to_string(stdout).unwrap_or_default(),
        stderr: fs::read_to_string(stderr).unwrap_or_default(),
        stdout_path: stdout.to_path_buf(),
        stderr_path: stderr.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------
// config.json editing

/// A bundle's `config.json`, edited as JSON with a few helpers.
pub struct Spec(pub Value);

impl Spec {
    /// Sets the value at a JSON pointer (`/linux/resources/pids`), creating
    /// objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let mut node = &mut self.0;
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        let (last, parents) = parts.split_last().expect("empty pointer");
        for part in parents {
            if !node.get(*part).is_some_and(Value::is_object) {
                node[*part] = json!({});
            }
            node = &mut node[*part];
        }
        node[*last] = value;
        self
    }

    /// The value at a JSON pointer, if present.
    pub fn get(&self, pointer: &str) -> Option<&Value> {
        self.0.pointer(pointer)
    }

    /// Removes the value at a JSON pointer, if present.
    pub fn remove(&mut self, pointer: &str) -> &mut Self {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer without /");
        if let Some(Value::Object(map)) = self.0.pointer_mut(parent) {
            map.remove(key);
        }
        self
    }

    /// Appends to the array at a JSON pointer, creating it if needed.
    pub fn push(&mut self, pointer: &str, value: Value) -> &mut Self {
        if !self.get(pointer).is_some_and(Value::is_array) {
            self.set(pointer, json!([]));
        }
        self.0
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .expect("array just made")
            .push(value);
        self
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// `sh -c script`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.set("/process/terminal", json!(on))
    }

    pub fn readonly_root(&mut self, on: bool) -> &mut Self {
        self.set("/root/readonly", json!(on))
    }

    /// Sets `NAME=value` in the process environment, replacing an earlier value.
    pub fn env(&mut self, name: &str, value: &str) -> &mut Self {
        let prefix = format!("{name}=");
        let env = self.0["process"]["env"].as_array_mut();
        match env {
            Some(env) => {
                env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
                env.push(json!(format!("{name}={value}")));
            }
            None => {
                self.set(
                    "/process/env",
                    json!([CONTAINER_PATH, format!("{name}={value}")]),
                );
            }
        }
        self
    }

    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.set("/process/cwd", json!(cwd))
    }

    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.set("/process/user/uid", json!(uid));
        self.set("/process/user/gid", json!(gid))
    }

    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.set("/hostname", json!(name))
    }

    /// Adds a mount (after the spec's default ones).
    pub fn mount(&mut self, dest: &str, kind: &str, source: &str, options: &[&str]) -> &mut Self {
        self.push(
            "/mounts",
            json!({"destination": dest, "type": kind, "source": source, "options": options}),
        )
    }

    /// Bind-mounts a host path; `options` come after `rbind`/`bind`.
    pub fn bind(&mut self, host: &Path, dest: &str, options: &[&str]) -> &mut Self {
        let mut opts = vec!["bind"];
        opts.extend_from_slice(options);
        self.push(
            "/mounts",
            json!({"destination": dest, "type": "bind", "source": host, "options": opts}),
        )
    }

    /// Makes the container's namespaces exactly these types (new ones).
    pub fn namespaces(&mut self, types: &[&str]) -> &mut Self {
        let list: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
        self.set("/linux/namespaces", Value::Array(list))
    }

    /// Adds a namespace, new (`path` None) or joined by path; replaces one of the same type.
    pub fn namespace(&mut self, kind: &str, path: Option<&Path>) -> &mut Self {
        self.remove_namespace(kind);
        let ns = match path {
            Some(path) => json!({"type": kind, "path": path}),
            None => json!({"type": kind}),
        };
        self.push("/linux/namespaces", ns)
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(list) = self
            .0
            .pointer_mut("/linux/namespaces")
            .and_then(Value::as_array_mut)
        {
            list.retain(|ns| ns["type"] != kind);
        }
        self
    }

    /// Sets linux.cgroupsPath (the fixture's default is `/berth-test/<id>`).
    pub fn set_cgroups_path(&mut self, path: &str) -> &mut Self {
        self.set("/linux/cgroupsPath", json!(path))
    }

    /// The cgroupsPath the runtime is asked to use.
    pub fn cgroups_path(&self) -> Option<String> {
        self.get("/linux/cgroupsPath")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// Merges `resources` (LinuxResources JSON) into linux.resources.
    pub fn resources(&mut self, resources: Value) -> &mut Self {
        let Value::Object(add) = resources else {
            panic!("resources must be an object");
        };
        if !self.get("/linux/resources").is_some_and(Value::is_object) {
            self.set("/linux/resources", json!({}));
        }
        let target = self.0["linux"]["resources"]
            .as_object_mut()
            .expect("object just made");
        for (k, v) in add {
            target.insert(k, v);
        }
        self
    }

    /// Appends a hook of `kind` (prestart, createRuntime, ...).
    pub fn hook(&mut self, kind: &str, hook: Value) -> &mut Self {
        self.push(&format!("/hooks/{kind}"), hook)
    }
}

// ---------------------------------------------------------------------------
// Bundles

/// An OCI bundle: a directory with `rootfs/` (the host's static busybox and
/// its applets, minimal /etc) and `config.json` from `<runtime> spec`.
#[derive(Clone, Debug)]
pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn spec(&self) -> Spec {
        let text = read(self.config_path());
        Spec(serde_json::from_str(&text).expect("config.json is JSON"))
    }

    /// Edits config.json in place.
    pub fn edit(&self, edit: impl FnOnce(&mut Spec)) {
        let mut spec = self.spec();
        edit(&mut spec);
        let text = serde_json::to_string_pretty(&spec.0).expect("serialize spec");
        write(self.config_path(), text);
    }

    /// The cgroupsPath from config.json.
    pub fn cgroups_path(&self) -> Option<String> {
        self.spec().cgroups_path()
    }
}

fn busybox_path() -> PathBuf {
    let path = std::env::var_os("BERTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    assert!(
        path.is_file(),
        "{} is missing: install the static busybox (`apt-get install busybox-static`) \
         or set BERTH_BUSYBOX",
        path.display()
    );
    path
}

fn busybox_applets() -> &'static [String] {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    APPLETS.get_or_init(|| {
        host(busybox_path().to_str().expect("utf-8 path"), &["--list"])
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
            .map(str::to_owned)
            .collect()
    })
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
user:x:1000:1000:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nusers:x:100:\nuser:x:1000:\nnogroup:x:65534:\n";

/// The static busybox as `<root>/bin/busybox`, with a link per applet.
pub fn install_busybox(root: &Path) {
    fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    fs::copy(busybox_path(), root.join("bin/busybox")).expect("copy busybox");
    for applet in busybox_applets() {
        symlink("busybox", root.join("bin").join(applet)).expect("applet symlink");
    }
}

/// A busybox root filesystem: the usual directories, busybox and its
/// applets, and a minimal /etc (root, a user, nobody).
pub fn make_rootfs(rootfs: &Path) {
    for dir in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/user",
        "mnt",
        "run",
    ] {
        fs::create_dir_all(rootfs.join(dir)).expect("mkdir in rootfs");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    install_busybox(rootfs);
    write(rootfs.join("etc/passwd"), PASSWD);
    write(rootfs.join("etc/group"), GROUP);
    write(rootfs.join("etc/hostname"), "berth-test\n");
}

// ---------------------------------------------------------------------------
// The runtime under test, and the clean-up guard

/// Runs the runtime under test with a private `--root` and `--log`, and
/// owns everything a test makes; see the crate documentation for Drop.
pub struct Runtime {
    bin: PathBuf,
    tmp: Option<tempfile::TempDir>,
    state_root: PathBuf,
    log: PathBuf,
    seq: AtomicU32,
    ids: RefCell<Vec<String>>,
    cgroups: RefCell<Vec<String>>,
    pids: RefCell<Vec<(i64, u64)>>,
    cleanups: RefCell<Vec<Box<dyn FnOnce()>>>,
}

impl Runtime {
    /// Checks for root and the binary, and makes the private tree.
    pub fn new() -> Self {
        require_root();
        let bin = runtime_binary();
        assert!(
            bin.is_file(),
            "runtime binary {} not found: build it (`cargo build -p berth-runtime`) \
             or set BERTH_RUNTIME (e.g. BERTH_RUNTIME=$(which runc))",
            bin.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix("berth-it-")
            .tempdir()
            .expect("make temp dir");
        // Container processes in a user namespace must be able to walk to
        // their rootfs, so the tree is world-searchable (0700 by default).
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tmp");
        let state_root = tmp.path().join("state");
        for dir in ["state", "bundles", "io", "host"] {
            fs::create_dir(tmp.path().join(dir)).expect("mkdir");
        }
        let log = tmp.path().join("runtime.log");
        Runtime {
            bin,
            state_root,
            log,
            tmp: Some(tmp),
            seq: AtomicU32::new(0),
            ids: RefCell::new(Vec::new()),
            cgroups: RefCell::new(Vec::new()),
            pids: RefCell::new(Vec::new()),
            cleanups: RefCell::new(Vec::new()),
        }
    }

    /// The private temporary tree.
    pub fn tmp(&self) -> &Path {
        self.tmp.as_ref().expect("tmp present until drop").path()
    }

    /// The `--root` given to every command.
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// The `--log` given to every command (JSON lines).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log's lines parsed as JSON; panics on a line that is not JSON.
    pub fn log_entries(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// A fresh id, tracked so Drop force-deletes the container.
    pub fn new_id(&self, prefix: &str) -> String {
        let id = unique_id(prefix);
        self.track(&id);
        id
    }

    /// Tracks an id made elsewhere.
    pub fn track(&self, id: &str) {
        let mut ids = self.ids.borrow_mut();
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }

    /// Registers a clean-up step run on Drop after the containers are
    /// deleted (in reverse order of registration), before the leak checks.
    pub fn on_cleanup(&self, step: impl FnOnce() + 'static) {
        self.cleanups.borrow_mut().push(Box::new(step));
    }

    /// A new empty host directory under the private tree.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp().join("host").join(format!("{name}-{n}"));
        fs::create_dir_all(&dir).expect("mkdir host dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod host dir");
        dir
    }

    /// Makes a bundle for container `id`: rootfs, `<runtime> spec`, then the
    /// fixture's defaults (terminal off, cgroupsPath `/berth-test/<id>`), then `edit`.
    pub fn bundle(&self, id: &str, edit: impl FnOnce(&mut Spec)) -> Bundle {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp().join("bundles").join(format!("{id}-{n}"));
        make_rootfs(&dir.join("rootfs"));
        let out = self.command_in(&dir, &["spec"]);
        assert!(out.success(), "generating config.json: {out}");
        let bundle = Bundle { dir };
        bundle.edit(|spec| {
            spec.terminal(false);
            spec.set_cgroups_path(&format!("{CGROUP_PARENT}/{id}"));
            edit(spec);
        });
        if let Some(path) = bundle.cgroups_path() {
            self.cgroups.borrow_mut().push(path);
        }
        bundle
    }

    fn io_paths(&self) -> (PathBuf, PathBuf) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let io = self.tmp().join("io");
        (io.join(format!("{n}.out")), io.join(format!("{n}.err")))
    }

    fn base_command(&self, args: &[&str], stdin: Stdio) -> (Command, PathBuf, PathBuf) {
        let (out_path, err_path) = self.io_paths();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(&self.state_root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(stdin)
            .stdout(File::create(&out_path).expect("create stdout file"))
            .stderr(File::create(&err_path).expect("create stderr file"));
        (cmd, out_path, err_path)
    }

    /// Runs the runtime with the global flags and `args`; stdin is /dev/null
    /// and stdout/stderr go to files (containers may keep them open).
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, Stdio::null(), COMMAND_TIMEOUT)
    }

    /// Like [`Runtime::run`] with `input` as stdin.
    #[track_caller]
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let (path, _) = self.io_paths();
        write(&path, input);
        let file = File::open(&path).expect("open stdin file");
        self.run_with(args, Stdio::from(file), COMMAND_TIMEOUT)
    }

    #[track_caller]
    fn run_with(&self, args: &[&str], stdin: Stdio, timeout: Duration) -> Output {
        let (mut cmd, out, err) = self.base_command(args, stdin);
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let status = wait_child(&mut child, timeout, &owned);
        collect(owned, status, &out, &err)
    }

    /// Runs the runtime in `dir` without global flags (for `spec`).
    fn command_in(&self, dir: &Path, args: &[&str]) -> Output {
        let (out_path, err_path) = self.io_paths();
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = Command::new(&self.bin)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("create stdout file"))
            .stderr(File::create(&err_path).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let status = wait_child(&mut child, COMMAND_TIMEOUT, &owned);
        collect(owned, status, &out_path, &err_path)
    }

    /// Starts the runtime in the background (e.g. a foreground `run`).
    pub fn spawn(&self, args: &[&str]) -> Background {
        let (mut cmd, stdout_path, stderr_path) = self.base_command(args, Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        Background {
            child: Some(child),
            args: args.iter().map(|s| s.to_string()).collect(),
            stdout_path,
            stderr_path,
        }
    }

    /// `create --bundle B [extra...] ID`.
    #[track_caller]
    pub fn create(&self, bundle: &Bundle, id: &str, extra: &[&str]) -> Output {
        self.track(id);
        let dir = bundle.path().to_str().expect("utf-8 bundle path");
        let mut args = vec!["create", "--bundle", dir];
        args.extend_from_slice(extra);
        args.push(id);
        self.run(&args)
    }

    /// `run --bundle B [extra...] ID` in the foreground.
    #[track_caller]
    pub fn run_container(&self, bundle: &Bundle, id: &str, extra: &[&str]) -> Output {
        self.track(id);
        let dir = bundle.path().to_str().expect("utf-8 bundle path");
        let mut args = vec!["run", "--bundle", dir];
        args.extend_from_slice(extra);
        args.push(id);
        self.run(&args)
    }

    /// Creates and starts a container; returns the create's output, whose
    /// stdout file receives the container's stdout.
    #[track_caller]
    pub fn create_and_start(&self, bundle: &Bundle, id: &str) -> Output {
        let created = self.create(bundle, id, &[]).ok();
        self.run(&["start", id]).ok();
        created
    }

    /// The container's state JSON; panics if `state` fails.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let out = self.run(&["state", id]).ok();
        let state = out.json();
        if let Some(pid) = state["pid"].as_i64().filter(|p| *p > 0) {
            if let Some(start) = pid_start_time(pid) {
                let mut pids = self.pids.borrow_mut();
                if !pids.iter().any(|(p, _)| *p == pid) {
                    pids.push((pid, start));
                }
            }
        }
        state
    }

    /// The container's status string.
    #[track_caller]
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_else(|| panic!("state of {id} has no status"))
            .to_owned()
    }

    /// The container's init pid.
    #[track_caller]
    pub fn pid(&self, id: &str) -> i64 {
        let state = self.state(id);
        state["pid"]
            .as_i64()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("state of {id} has no pid: {state}"))
    }

    /// Waits until the container reports `status`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, status: &str) {
        wait_until(&format!("{id} to be {status}"), WAIT_TIMEOUT, || {
            let out = self.run(&["state", id]);
            out.success() && out.json()["status"] == status
        })
    }

    /// `exec ID ARGS...` (no extra flags).
    #[track_caller]
    pub fn exec(&self, id: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", id];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Ids with an entry in the state root.
    pub fn state_entries(&self) -> Vec<String> {
        fs::read_dir(&self.state_root)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Host mount points under the bundles and the state root (a test's own
    /// host mounts elsewhere in the tree do not count).
    pub fn leaked_mounts(&self) -> Vec<PathBuf> {
        let bundles = self.tmp().join("bundles");
        host_mounts()
            .into_iter()
            .map(|m| PathBuf::from(m.mount_point))
            .filter(|p| p.starts_with(&bundles) || p.starts_with(&self.state_root))
            .collect()
    }

    /// Asserts that container `id` left nothing: no state entry, no cgroup
    /// directory for `cgroups_path`, no host mount under the private tree.
    #[track_caller]
    pub fn assert_nothing_left(&self, id: &str, cgroups_path: Option<&str>) {
        let entries = self.state_entries();
        assert!(
            !entries.iter().any(|e| e == id),
            "state entry for {id} left in {}: {entries:?}",
            self.state_root.display()
        );
        if let Some(path) = cgroups_path {
            let dirs = existing_cgroup_dirs(path);
            assert!(
                dirs.is_empty(),
                "cgroup directories left for {id}: {dirs:?}"
            );
        }
        let mounts = self.leaked_mounts();
        assert!(mounts.is_empty(), "mounts left on the host: {mounts:?}");
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let ids: Vec<String> = self.ids.borrow_mut().drain(..).rev().collect();
        for id in &ids {
            // Ignore failures: most containers are already gone.
            let _ = self.run(&["delete", "--force", id]);
        }
        let steps: Vec<_> = self.cleanups.borrow_mut().drain(..).rev().collect();
        for step in steps {
            step();
        }
        for (pid, start) in self.pids.borrow().iter() {
            let same = || pid_start_time(*pid) == Some(*start) && pid_alive(*pid);
            let deadline = Instant::now() + Duration::from_secs(5);
            while same() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if same() {
                problems.push(format!("container process {pid} still alive"));
                // SAFETY: kill has no memory-safety preconditions; the pid is
                // a container process this test made, checked by start time.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        for path in self.cgroups.borrow().iter() {
            for dir in existing_cgroup_dirs(path) {
                problems.push(format!("cgroup {} left", dir.display()));
                remove_cgroup(&dir);
            }
        }
        for id in self.state_entries() {
            problems.push(format!("state entry {id} left in --root"));
        }
        release_temp_tree(self.tmp.take(), &mut problems);
        problems
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // A panic escaping a destructor during unwinding aborts every test
        // in the binary: contain it.
        let problems = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cleanup()))
            .unwrap_or_else(|_| vec!["clean-up itself panicked (see above)".to_owned()]);
        if !problems.is_empty() && !thread::panicking() {
            panic!("the test left things behind:\n  {}", problems.join("\n  "));
        }
    }
}

// ---------------------------------------------------------------------------
// Mounts

/// One line of /proc/<pid>/mountinfo.
#[derive(Clone, Debug)]
pub struct MountInfo {
    pub root: String,
    pub mount_point: String,
    pub mount_options: Vec<String>,
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: Vec<String>,
}

impl MountInfo {
    /// Whether a per-mount or super-block option is set.
    pub fn has_option(&self, option: &str) -> bool {
        self.mount_options.iter().any(|o| o == option)
            || self.super_options.iter().any(|o| o == option)
    }
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(digits)) = (bytes[i], octal) {
            if let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(digits), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (the host's, or a container's `cat /proc/self/mountinfo`).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                return None;
            }
            Some(MountInfo {
                root: unescape_mountinfo(l[3]),
                mount_point: unescape_mountinfo(l[4]),
                mount_options: l[5].split(',').map(str::to_owned).collect(),
                optional: l[6..].iter().map(|s| s.to_string()).collect(),
                fs_type: r[0].to_owned(),
                source: unescape_mountinfo(r[1]),
                super_options: r[2].split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// The host's mount table (this process's mount namespace).
pub fn host_mounts() -> Vec<MountInfo> {
    parse_mountinfo(&read("/proc/self/mountinfo"))
}

/// Host mount points at or under `dir`, outermost first.
pub fn host_mounts_under(dir: &Path) -> Vec<PathBuf> {
    host_mounts()
        .into_iter()
        .map(|m| PathBuf::from(m.mount_point))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The last mount at `mount_point` in a mountinfo text (the visible one).
pub fn find_mount(mounts: &[MountInfo], mount_point: &str) -> Option<MountInfo> {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == mount_point)
        .cloned()
}

// ---------------------------------------------------------------------------
// Cgroups

/// A mounted cgroup hierarchy on the host.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// v1 controllers (and `name=` for named hierarchies); empty for v2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// Every cgroup hierarchy mounted on the host.
pub fn cgroup_hierarchies() -> Vec<Hierarchy> {
    host_mounts()
        .into_iter()
        .filter_map(|m| match m.fs_type.as_str() {
            "cgroup2" => Some(Hierarchy {
                mount_point: PathBuf::from(&m.mount_point),
                controllers: Vec::new(),
                v2: true,
            }),
            "cgroup" => Some(Hierarchy {
                mount_point: PathBuf::from(&m.mount_point),
                controllers: m
                    .super_options
                    .iter()
                    .filter(|o| {
                        !matches!(
                            o.as_str(),
                            "rw" | "ro"
                                | "relatime"
                                | "noexec"
                                | "nosuid"
                                | "nodev"
                                | "clone_children"
                                | "xattr"
                        ) && !o.starts_with("release_agent=")
                    })
                    .cloned()
                    .collect(),
                v2: false,
            }),
            _ => None,
        })
        .collect()
}

/// Whether the host's controllers live in a unified (v2) hierarchy at
/// /sys/fs/cgroup; false on v1 and on the v1/v2 hybrid.
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The host directory of `controller` for `cgroups_path` (absolute, like
/// `/berth-test/<id>`): `/sys/fs/cgroup/<path>` on v2, the controller's
/// hierarchy on v1.
pub fn cgroup_dir(controller: &str, cgroups_path: &str) -> PathBuf {
    let rel = cgroups_path.trim_start_matches('/');
    if cgroup_v2() {
        return Path::new("/sys/fs/cgroup").join(rel);
    }
    let hierarchy = cgroup_hierarchies()
        .into_iter()
        .find(|h| !h.v2 && h.controllers.iter().any(|c| c == controller))
        .unwrap_or_else(|| panic!("no v1 hierarchy with the {controller} controller"));
    hierarchy.mount_point.join(rel)
}

/// Reads a cgroup file of `cgroups_path`, trimmed.
pub fn cgroup_read(controller: &str, cgroups_path: &str, file: &str) -> String {
    read(cgroup_dir(controller, cgroups_path).join(file))
        .trim()
        .to_owned()
}

/// Directories for `cgroups_path` that exist in any hierarchy.
pub fn existing_cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() {
        return Vec::new();
    }
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.mount_point.join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// Removes a leaked cgroup directory: kills its processes (container
/// processes of this test) and its children first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions; the process is
            // in a cgroup only this test's containers use.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let freezer = dir.join("freezer.state");
        if freezer.exists() {
            let _ = fs::write(&freezer, "THAWED");
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Capabilities

const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bit mask of a set of capability names, as in /proc/<pid>/status.
pub fn cap_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |mask, name| {
        let bit = CAPABILITIES
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("unknown capability {name}"));
        mask | (1 << bit)
    })
}

/// A `CapXxx:` field of /proc/<pid>/status text, as a mask.
pub fn status_caps(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in status:\n{status}"));
    let hex = line[field.len() + 1..].trim();
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("bad {field} {hex:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Console socket

/// A unix socket that receives a pty master by SCM_RIGHTS, as a runtime's
/// `--console-socket` does.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens at `path`.
    pub fn bind(path: &Path) -> Self {
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("bind console socket {}: {e}", path.display()));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        ConsoleSocket {
            path: path.to_path_buf(),
            listener,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 socket path")
    }

    /// Accepts the runtime's connection and receives the pty master.
    #[track_caller]
    pub fn receive(&self, timeout: Duration) -> Pty {
        let stream = wait_for(
            "the runtime to connect to the console socket",
            timeout,
            || match self.listener.accept() {
                Ok((stream, _)) => Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => panic!("accept on console socket: {e}"),
            },
        );
        stream.set_nonblocking(false).expect("blocking stream");
        stream
            .set_read_timeout(Some(timeout))
            .expect("stream timeout");
        let fd = recv_fd(stream.as_raw_fd())
            .unwrap_or_else(|e| panic!("receive pty master on console socket: {e}"));
        Pty { master: fd }
    }
}

/// Receives one file descriptor sent with SCM_RIGHTS on `sock`.
fn recv_fd(sock: i32) -> io::Result<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 64];
    // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at iov and control, which outlive the call and are
    // as large as the lengths say.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR only reads its
    // control fields and returns null or a pointer inside `control`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and points at a header inside `control`
        // written by the kernel.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: cmsg is a valid header; CMSG_DATA computes the address
            // of its payload inside `control`.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            // SAFETY: an SCM_RIGHTS payload holds at least one c_int; the
            // read is unaligned-safe.
            let fd = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>()) };
            // SAFETY: the kernel just installed fd in this process for us;
            // nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        // SAFETY: msg and cmsg are valid; CMSG_NXTHDR returns null at the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("message of {n} bytes carried no file descriptor"),
    ))
}

/// The master side of a container's pty.
pub struct Pty {
    master: OwnedFd,
}

impl Pty {
    /// Waits up to `timeout` for input; true when readable (or hung up).
    fn readable(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        n > 0
    }

    /// Reads until `needle` has been seen or the slave side closed; panics at
    /// the deadline. Returns everything read.
    #[track_caller]
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        let mut file = File::from(self.master.try_clone().expect("dup pty master"));
        loop {
            let text = String::from_utf8_lossy(&all).into_owned();
            if text.contains(needle) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("timed out waiting for {needle:?} on the pty; read so far: {text:?}");
            }
            if !self.readable(left) {
                continue;
            }
            let mut buf = [0u8; 4096];
            match file.read(&mut buf) {
                Ok(0) => panic!("pty closed before {needle:?}; read: {text:?}"),
                Ok(n) => all.extend_from_slice(&buf[..n]),
                // EIO: the slave side is closed (the container exited).
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    panic!("pty closed before {needle:?}; read: {text:?}")
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read pty: {e}"),
            }
        }
    }

    /// Writes input for the container's process (as typed on a terminal).
    pub fn write_all(&mut self, bytes: &[u8]) {
        let mut file = File::from(self.master.try_clone().expect("dup pty master"));
        io::Write::write_all(&mut file, bytes).expect("write to pty");
    }

    /// Reads until the slave side is closed (every process holding it
    /// exited); panics at the deadline.
    #[track_caller]
    pub fn read_to_end(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        let mut file = File::from(self.master.try_clone().expect("dup pty master"));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for the pty to close; read: {:?}",
                    String::from_utf8_lossy(&all)
                );
            }
            if !self.readable(left) {
                continue;
            }
            let mut buf = [0u8; 4096];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read pty: {e}"),
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    }
}
