//! A real `berth-supervisord` on a temporary root, state directory and
//! socket, and `berth-ctr` pointed at it.
//!
//! The guard stops the daemon (SIGTERM, then SIGKILL after a deadline) and
//! removes its tree when dropped, on failure too. Tasks still there (their
//! shims outlive the daemon) are killed and their containers, cgroups and
//! rootfs mounts removed; the guard reports them, and mounts left under the
//! tree, as leaks.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::Client;
use berth_proto::snapshots::v1 as snapshots_pb;
use berth_proto::types::v1 as types_pb;
use berth_supervisor::oci::chain_ids;

use crate::images::{self, image_set, Image};
use crate::registry::{run_with_timeout, Registry};
use crate::{build_binary, release_temp_tree, require_root};

/// How long a `berth-ctr` command may take (a pull of the test images is
/// far quicker; the limit only stops a hung test).
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);

pub fn supervisord_binary() -> PathBuf {
    build_binary("BERTH_SUPERVISORD", "berth-supervisord")
}

pub fn ctr_binary() -> PathBuf {
    build_binary("BERTH_CTR", "berth-ctr")
}

pub struct Supervisor {
    tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    registry_config: Option<PathBuf>,
}

/// What a `berth-ctr` command did.
#[derive(Debug)]
pub struct CtrOutput {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl CtrOutput {
    pub fn ok(self) -> Self {
        assert!(
            self.code == 0,
            "berth-ctr {:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts failure with `needle` in the error message.
    pub fn failed_with(self, needle: &str) -> Self {
        assert!(
            self.code != 0,
            "berth-ctr {:?} should have failed:\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "berth-ctr {:?}: error should mention {needle:?}:\n{}",
            self.args,
            self.stderr
        );
        self
    }
}

impl Supervisor {
    pub fn start() -> Supervisor {
        Supervisor::start_with(None)
    }

    /// Starts a supervisor whose registry configuration (docker
    /// config.json format) is `registry_config`.
    pub fn start_with(registry_config: Option<&str>) -> Supervisor {
        Supervisor::start_configured(registry_config, &[])
    }

    /// Starts a supervisor with a hosts.toml per registry (`(registry,
    /// text)`, written to `<dir>/certs.d/<registry>/hosts.toml`).
    pub fn start_with_hosts(hosts: &[(&str, String)]) -> Supervisor {
        Supervisor::start_configured(None, hosts)
    }

    fn start_configured(registry_config: Option<&str>, hosts: &[(&str, String)]) -> Supervisor {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("berth-sup-")
            .tempdir()
            .expect("temp dir");
        for (registry, text) in hosts {
            let dir = tmp.path().join("certs.d").join(registry);
            std::fs::create_dir_all(&dir).expect("mkdir certs.d");
            std::fs::write(dir.join("hosts.toml"), text).expect("write hosts.toml");
        }
        let config = registry_config.map(|text| {
            let p = tmp.path().join("registries.json");
            std::fs::write(&p, text).expect("write registry config");
            p
        });
        let mut s = Supervisor {
            tmp: Some(tmp),
            child: None,
            registry_config: config,
        };
        s.spawn();
        s
    }

    pub fn dir(&self) -> &Path {
        self.tmp
            .as_ref()
            .map(|t| t.path())
            .expect("supervisor tree")
    }

    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("supervisor.sock")
    }

    /// The CRI socket (the daemon's default: beside its gRPC socket).
    pub fn cri_socket(&self) -> PathBuf {
        self.dir().join("cri.sock")
    }

    /// The CNI network config directory the daemon reads (empty unless a
    /// test writes a config there).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir().join("net.d")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("supervisord.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("supervisord.log"))
            .expect("log file");
        let mut cmd = Command::new(supervisord_binary());
        cmd.arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.dir().join("state"))
            .arg("--address")
            .arg(self.socket())
            // Never the host's /etc/berth/certs.d.
            .arg("--registry-config-dir")
            .arg(self.dir().join("certs.d"))
            // Never the host's CNI config.
            .arg("--cni-conf-dir")
            .arg(self.cni_conf_dir())
            .arg("--debug");
        if let Some(c) = &self.registry_config {
            cmd.arg("--registry-config").arg(c);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", supervisord_binary().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "berth-supervisord exited at start ({status}):\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "berth-supervisord did not listen within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon with SIGTERM; its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again after `kill9`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// `berth-ctr --address SOCKET -n NS ARGS...`
    pub fn ctr_ns(&self, ns: &str, args: &[&str]) -> CtrOutput {
        self.ctr_input(ns, args, None)
    }

    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        self.ctr_ns("default", args)
    }

    pub fn ctr_input(&self, ns: &str, args: &[&str], stdin: Option<&Path>) -> CtrOutput {
        let mut cmd = Command::new(ctr_binary());
        cmd.arg("--address")
            .arg(self.socket())
            .arg("-n")
            .arg(ns)
            .args(args);
        // Never the user's docker credentials.
        cmd.env("DOCKER_CONFIG", self.dir().join("no-docker-config"));
        let out = match stdin {
            // run_with_timeout gives the command no stdin.
            Some(p) => {
                cmd.stdin(std::fs::File::open(p).expect("stdin file"));
                output_within(cmd, CTR_TIMEOUT)
            }
            None => run_with_timeout(cmd, CTR_TIMEOUT),
        };
        CtrOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw_stdout: out.stdout,
        }
    }

    /// Every file under the content store's blobs and the snapshot
    /// directories, for consistency checks.
    pub fn blob_files(&self) -> Vec<String> {
        let dir = self.root().join("content/blobs/sha256");
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn snapshot_dirs(&self) -> Vec<String> {
        let dir = self.root().join("snapshots");
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Supervisor {
    /// `(namespace, id)` of every task bundle under the state directory.
    pub fn task_dirs(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let root = self.dir().join("state/shims");
        for ns in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for id in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                found.push((
                    ns.file_name().to_string_lossy().into_owned(),
                    id.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
        found.sort();
        found
    }

    /// Kills what is left of every task (shim, container, cgroup, rootfs
    /// mount) and removes its bundle; `ns/id` of each.
    fn remove_tasks(&self) -> Vec<String> {
        let mut removed = Vec::new();
        for (ns, id) in self.task_dirs() {
            let dir = self.dir().join("state/shims").join(&ns).join(&id);
            let pid = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
            };
            for pid in [pid("shim.pid"), pid("init.pid")].into_iter().flatten() {
                // SAFETY: kill(2) has no memory effects; the pids are the
                // test's own shim and container init.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = Command::new(crate::runtime_binary())
                .arg("--root")
                .arg(self.dir().join("state/runtime").join(&ns))
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
            removed.push(format!("{ns}/{id}"));
        }
        removed
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let status = self.stop();
        let mut problems = Vec::new();
        if let Some(status) = status {
            if !status.success() && !std::thread::panicking() {
                problems.push(format!("berth-supervisord exited with {status} on SIGTERM"));
            }
        }
        if std::thread::panicking() {
            eprintln!("--- berth-supervisord log ---\n{}", self.log());
        }
        for task in self.remove_tasks() {
            problems.push(format!("task {task} left behind"));
        }
        release_temp_tree(self.tmp.take(), &mut problems);
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("supervisor guard: {}", problems.join("; "));
        }
    }
}

/// Runs `cmd` with its own stdin, collecting its output; kills it and fails
/// the test after `timeout`.
fn output_within(mut cmd: Command, timeout: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth-ctr");
    child_output(child, timeout, "berth-ctr")
}

/// Collects a started child's piped stdout and stderr until it exits;
/// kills it and fails the test after `timeout` (`what` names it then).
pub fn child_output(mut child: Child, timeout: Duration, what: &str) -> std::process::Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for the child") {
            Some(status) => break status,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not exit within {timeout:?}");
            }
        }
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A registry config (docker config.json format) with credentials for one
/// registry.
pub fn registry_config_with(host: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#)
}

// ---------------------------------------------------------------------------
// Images and snapshots through the API

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn connect(rt: &tokio::runtime::Runtime, sup: &Supervisor, ns: &str) -> Client {
    rt.block_on(Client::connect(&sup.socket(), ns))
        .expect("connect")
}

pub fn push_layered(registry: &Registry, repo_tag: &str) -> &'static Image {
    let set = image_set();
    images::push(&set.layered_ref(), registry, repo_tag);
    &set.layered
}

/// The chain id of an image's top layer: the snapshot its rootfs is.
pub fn top_chain(image: &Image) -> String {
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    chain_ids(&diff_ids).pop().expect("layers")
}

/// A mount of a snapshot on a fresh directory under the supervisor's tree
/// (so its guard would also report a leak); unmounted when dropped, on
/// failure too.
pub struct Mounted {
    dir: Option<tempfile::TempDir>,
}

impl Mounted {
    pub fn new(sup: &Supervisor, m: &types_pb::Mount) -> Mounted {
        let dir = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(sup.dir())
            .expect("mount point");
        let mut cmd = Command::new("mount");
        if m.r#type == "bind" {
            let mode = if m.options.iter().any(|o| o == "ro") {
                "ro"
            } else {
                "rw"
            };
            cmd.args(["--rbind", "-o", mode]).arg(&m.source);
        } else {
            cmd.args(["-t", &m.r#type, "-o", &m.options.join(","), &m.source]);
        }
        let out = cmd.arg(dir.path()).output().expect("run mount");
        assert!(
            out.status.success(),
            "mount {m:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted").path()
    }

    /// Unmounts now; true when it worked.
    pub fn unmount(&mut self) -> bool {
        let Some(dir) = self.dir.take() else {
            return true;
        };
        let ok = Command::new("umount")
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
        drop(dir);
        ok
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A read-only view of snapshot `parent`, mounted while `f` runs; the view
/// and the mount are removed afterwards, on failure too.
pub fn with_view<T>(sup: &Supervisor, ns: &str, parent: &str, f: impl FnOnce(&Path) -> T) -> T {
    let rt = runtime();
    let client = connect(&rt, sup, ns);
    let key = format!("view-{}", std::process::id());
    let mounts = rt
        .block_on(client.snapshots().view(snapshots_pb::ViewSnapshotRequest {
            key: key.clone(),
            parent: parent.to_string(),
            labels: Default::default(),
        }))
        .expect("view")
        .into_inner()
        .mounts;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        let mounted = Mounted::new(sup, &mounts[0]);
        f(mounted.path())
    }));
    rt.block_on(
        client
            .snapshots()
            .remove(snapshots_pb::RemoveSnapshotRequest { key: key.clone() }),
    )
    .expect("remove view");
    match result {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

pub fn assert_rootfs_matches(sup: &Supervisor, ns: &str, image: &Image) {
    let diffs = with_view(sup, ns, &top_chain(image), images::check_rootfs);
    assert!(
        diffs.is_empty(),
        "unpacked image in {ns} differs:\n{}",
        diffs.join("\n")
    );
}

/// After everything named is removed, nothing may remain on disk.
pub fn assert_store_empty(sup: &Supervisor) {
    assert_eq!(sup.blob_files(), Vec::<String>::new(), "blobs left");
    assert_eq!(
        sup.snapshot_dirs(),
        Vec::<String>::new(),
        "snapshot dirs left"
    );
}
