//! A real `berth-supervisord` on a temporary root, state directory and
//! socket, and `berth-ctr` pointed at it.
//!
//! The guard stops the daemon (SIGTERM, then SIGKILL after a deadline) and
//! removes its tree when dropped, on failure too; it reports mounts left
//! under the tree (the supervisor itself never mounts anything).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry::run_with_timeout;
use crate::{release_temp_tree, require_root};

/// How long a `berth-ctr` command may take (a pull of the test images is
/// far quicker; the limit only stops a hung test).
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);

fn binary(env: &str, name: &str) -> PathBuf {
    match std::env::var_os(env) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name),
    }
}

pub fn supervisord_binary() -> PathBuf {
    binary("BERTH_SUPERVISORD", "berth-supervisord")
}

pub fn ctr_binary() -> PathBuf {
    binary("BERTH_CTR", "berth-ctr")
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
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("berth-sup-")
            .tempdir()
            .expect("temp dir");
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
                cmd.output().expect("run berth-ctr")
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
        release_temp_tree(self.tmp.take(), &mut problems);
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("supervisor guard: {}", problems.join("; "));
        }
    }
}

/// A registry config (docker config.json format) with credentials for one
/// registry.
pub fn registry_config_with(host: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#)
}
