//! A real `berth-supervisord` serving the CRI for pods: in a network
//! namespace the fixture made (pinned on a file in its tree, so a
//! restarted daemon finds the same one), with a CNI conflist the fixture
//! writes (bridge + host-local + portmap + loopback on a private subnet,
//! no default route, no masquerade, host-local's leases in the tree),
//! Debian's plugins from `/usr/lib/cni`, and the real `crictl`.
//!
//! The tree is short (`/tmp/bpXXXXXX`, state in `s/`): a shim's socket
//! under `<state>/shims/k8s.io/<64-digit id>/` must fit in 107 bytes.
//!
//! Dropping the guard removes every pod left (through the CRI), stops the
//! daemon, kills shims still there, and then fails the test when anything
//! is left: mounts under the tree, network namespaces, cgroups of its
//! pods, host-local leases.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::supervisor::supervisord_binary;
use crate::{build_dir, release_temp_tree, require_root};

/// How long a crictl command may take.
pub const CRICTL_TIMEOUT: Duration = Duration::from_secs(120);

/// The subnet test pods get addresses from.
pub const POD_SUBNET: &str = "10.88.7.0/24";
/// The bridge the test network makes in the daemon's namespace.
pub const POD_BRIDGE: &str = "cni-berth0";

/// A prebuilt tool from ../shared/tools (`crictl`, `critest`), unpacked
/// once into target/tools.
pub fn tool(name: &str) -> PathBuf {
    // Tests of one binary run on threads: one unpacks while the others
    // wait, so none execs a file that is still being written (ETXTBSY).
    static UNPACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _unpacking = UNPACK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = build_dir().join("../tools");
    let path = dir.join(name);
    if !path.exists() {
        let packed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/tools")
            .join(format!("{name}.xz"));
        assert!(packed.exists(), "{} is missing", packed.display());
        std::fs::create_dir_all(&dir).expect("mkdir target/tools");
        let tmp = dir.join(format!("{name}.{}", std::process::id()));
        let out = std::fs::File::create(&tmp).expect("create tool");
        let status = Command::new("xz")
            .arg("-dc")
            .arg(&packed)
            .stdout(out)
            .status()
            .expect("run xz");
        assert!(status.success(), "unpack {}", packed.display());
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &path).expect("install tool");
    }
    path
}

/// What a pod supervisor starts with.
#[derive(Default, Clone)]
pub struct PodOptions {
    /// hosts.toml per registry: `(registry, text)`.
    pub hosts: Vec<(String, String)>,
    /// No CNI config at all.
    pub no_network: bool,
    /// More flags for the daemon.
    pub args: Vec<String>,
}

pub struct PodSupervisor {
    tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    opts: PodOptions,
}

impl PodSupervisor {
    pub fn start(opts: PodOptions) -> PodSupervisor {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("bp")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut s = PodSupervisor {
            tmp: Some(tmp),
            child: None,
            opts,
        };
        for (registry, text) in &s.opts.hosts {
            let dir = s.dir().join("certs.d").join(registry);
            std::fs::create_dir_all(&dir).expect("mkdir certs.d");
            std::fs::write(dir.join("hosts.toml"), text).expect("write hosts.toml");
        }
        std::fs::create_dir_all(s.cni_conf_dir()).expect("mkdir net.d");
        if !s.opts.no_network {
            s.write_conflist("10-berth-test.conflist", &s.conflist());
        }
        s.make_netns();
        s.spawn();
        s
    }

    pub fn dir(&self) -> &Path {
        self.tmp
            .as_ref()
            .map(|t| t.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    pub fn root(&self) -> PathBuf {
        self.dir().join("r")
    }

    pub fn state(&self) -> PathBuf {
        self.dir().join("s")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("sup.sock")
    }

    pub fn cri_socket(&self) -> PathBuf {
        self.dir().join("cri.sock")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir().join("net.d")
    }

    /// Where host-local keeps its leases.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir().join("ipam")
    }

    /// The network namespace the daemon runs in.
    pub fn netns(&self) -> PathBuf {
        self.dir().join("netns")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("supervisord.log")).unwrap_or_default()
    }

    /// The test network: a bridge with host-local addresses from
    /// [`POD_SUBNET`] (no default route, no masquerade), portmap, loopback.
    pub fn conflist(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "berth-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "dataDir": self.ipam_dir(),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}
            ]
        })
        .to_string()
    }

    pub fn write_conflist(&self, name: &str, text: &str) {
        std::fs::write(self.cni_conf_dir().join(name), text).expect("write conflist");
    }

    fn make_netns(&self) {
        std::fs::write(self.netns(), b"").expect("netns file");
        let made = Command::new("unshare")
            .arg(format!("--net={}", self.netns().display()))
            .arg("true")
            .status()
            .expect("unshare");
        assert!(made.success(), "make the daemon's network namespace");
        let lo = self
            .in_netns("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(
            lo.is_ok_and(|s| s.success()),
            "lo up in the daemon's namespace"
        );
    }

    /// `program` run in the daemon's network namespace.
    pub fn in_netns(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("supervisord.log"))
            .expect("log file");
        let mut cmd = self.in_netns(&supervisord_binary().to_string_lossy());
        cmd.arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--address")
            .arg(self.socket())
            .arg("--cri-address")
            .arg(self.cri_socket())
            .arg("--registry-config-dir")
            .arg(self.dir().join("certs.d"))
            .arg("--cni-conf-dir")
            .arg(self.cni_conf_dir())
            .arg("--cni-bin-dir")
            .arg("/usr/lib/cni")
            .arg("--debug")
            .args(&self.opts.args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berth-supervisord");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.cri_socket()).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "berth-supervisord exited at start ({status}):\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the CRI socket did not answer within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would (its shims live on).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (after [`PodSupervisor::kill9`] or a stop).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Stops the daemon with SIGTERM.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(c.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `crictl` against this daemon.
    pub fn crictl_command(&self, args: &[&str]) -> Command {
        let endpoint = format!("unix://{}", self.cri_socket().display());
        let mut cmd = Command::new(tool("crictl"));
        cmd.arg("--runtime-endpoint")
            .arg(&endpoint)
            .arg("--image-endpoint")
            .arg(&endpoint)
            .arg("--timeout")
            .arg("60s")
            .args(args)
            .env("HOME", self.dir())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs crictl; its output (the test fails if it hangs).
    pub fn crictl(&self, args: &[&str]) -> Output {
        let mut tries = 0;
        let child = loop {
            match self
                .crictl_command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            {
                Ok(child) => break child,
                // A child another thread forked while the tool was being
                // unpacked may still hold it open for writing until its exec.
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("run crictl: {e:?}"),
            }
        };
        crate::supervisor::child_output(child, CRICTL_TIMEOUT, "crictl")
    }

    /// Runs crictl, failing the test unless it succeeds; its stdout.
    pub fn crictl_ok(&self, args: &[&str]) -> String {
        let out = self.crictl(args);
        assert!(
            out.status.success(),
            "crictl {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports the test busybox (the layered image of the image set) into
    /// the CRI's namespace as `name`, with berth-ctr: the daemon's network
    /// namespace reaches no registry.
    pub fn import_busybox(&self, name: &str) {
        let archive = self.dir().join("busybox.tar");
        crate::images::docker_archive(&crate::images::image_set().layered_ref(), &archive, name);
        let out = Command::new(crate::supervisor::ctr_binary())
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive)
            .env("DOCKER_CONFIG", self.dir().join("no-docker-config"))
            .output()
            .expect("run berth-ctr");
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains(" h2::") && !l.contains("tonic::transport"))
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// A gRPC channel to the CRI socket.
    pub async fn channel(&self) -> tonic::transport::Channel {
        berth_client::connect(&self.cri_socket())
            .await
            .expect("connect to the CRI")
    }

    /// Mounts under the tree (netns pins, pod /dev/shm, root filesystems).
    pub fn mounts(&self) -> Vec<String> {
        let tree = self.dir().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&tree) && *m != self.netns().display().to_string())
            .collect()
    }

    /// Leases host-local holds.
    pub fn leases(&self) -> Vec<String> {
        let dir = self.ipam_dir().join("berth-test");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains('.') || n.contains(':'))
            .filter(|n| !n.starts_with("last_reserved_ip"))
            .collect()
    }

    /// Network devices in the daemon's namespace besides lo and the bridge
    /// (each pod's host-side veth).
    pub fn veths(&self) -> Vec<String> {
        let out = self
            .in_netns("ip")
            .args(["-o", "link", "show", "type", "veth"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .collect()
    }

    /// The cgroups (v1 memory hierarchy, or v2) of this daemon's pods.
    pub fn pod_cgroups(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for base in [
            "/sys/fs/cgroup/memory/berth/k8s.io",
            "/sys/fs/cgroup/berth/k8s.io",
        ] {
            if let Ok(entries) = std::fs::read_dir(base) {
                for e in entries.flatten() {
                    if e.path().is_dir()
                        && self
                            .created_ids()
                            .contains(&e.file_name().to_string_lossy().into_owned())
                    {
                        found.push(e.path());
                    }
                }
            }
        }
        found
    }

    /// The ids of the pods and containers this daemon made (from its log).
    fn created_ids(&self) -> Vec<String> {
        let log = self.log();
        let mut ids = Vec::new();
        for word in log.split(|c: char| !c.is_ascii_hexdigit()) {
            if word.len() == 64 && !ids.iter().any(|i| i == word) {
                ids.push(word.to_string());
            }
        }
        ids
    }
}

impl Drop for PodSupervisor {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        // Every pod left, through the CRI (which releases its network).
        if self.child.is_none() && self.tmp.is_some() {
            self.spawn_quietly();
        }
        if self.child.is_some() {
            let out = self.crictl(&["pods", "-q"]);
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let out = self.crictl(&["rmp", "-f", id]);
                if !out.status.success() {
                    problems.push(format!(
                        "pod {id} not removed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        self.stop();
        // Shims of tasks still there (they outlive the daemon).
        let shims = self.state().join("shims");
        if let Ok(namespaces) = std::fs::read_dir(&shims) {
            for ns in namespaces.flatten() {
                for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    problems.push(format!("task left: {}", task.path().display()));
                    if let Ok(pid) = std::fs::read_to_string(task.path().join("shim.pid")) {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            // SAFETY: kill(2) takes no pointers.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                }
            }
        }
        let leases = self.leases();
        if !leases.is_empty() {
            problems.push(format!("host-local leases left: {leases:?}"));
        }
        let veths = self.veths();
        if !veths.is_empty() {
            problems.push(format!("veths left: {veths:?}"));
        }
        let cgroups = self.pod_cgroups();
        if !cgroups.is_empty() {
            problems.push(format!("pod cgroups left: {cgroups:?}"));
            for c in &cgroups {
                let _ = std::fs::remove_dir(c);
            }
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        if !mounts.is_empty() {
            problems.push(format!("mounts left: {mounts:?}"));
        }
        for m in mounts
            .iter()
            .map(String::as_str)
            .chain([self.netns().to_str().unwrap_or("")])
        {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        release_temp_tree(self.tmp.take(), &mut problems);
        if !problems.is_empty() && !std::thread::panicking() {
            panic!(
                "the pod supervisor left things behind:\n{}",
                problems.join("\n")
            );
        }
    }
}

impl PodSupervisor {
    /// Starts the daemon again for the clean-up, if it can.
    fn spawn_quietly(&mut self) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
        if result.is_err() {
            self.child = None;
        }
    }
}
