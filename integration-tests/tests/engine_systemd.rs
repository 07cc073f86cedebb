//! The installed service under a real systemd: a systemd 252 (Debian's) runs
//! as PID 1 of fresh PID, mount, cgroup, network, UTS and IPC namespaces,
//! on a root of its own (tmpfs, with the host's /usr and /etc under
//! overlays whose upper layers are in that tmpfs, so nothing is written to
//! the host's). `make install` runs inside it, to its `/`, as an operator
//! would; then, with the real docker CLI on the socket systemd made:
//!
//! - `systemctl start berth.socket` leaves berthd stopped; the first
//!   `docker version` starts it (socket activation, `-H fd://`), and
//!   berth-supervisord with it (Type=notify, so berthd finds its socket);
//! - the socket is root's and the berth group's, mode 0660: a user in the
//!   group is served, another refused;
//! - a container runs; `systemctl stop` of berthd, the socket and the
//!   supervisor leaves its process and its shim running;
//! - `systemctl start berth.socket` again: `docker ps` shows it Up with the
//!   same pid, `docker exec` and `docker stop` work;
//! - `make uninstall` removes the files and systemd forgets the units.
//!
//! Everything lives in those namespaces: killing their PID 1 ends every
//! process (shims and containers too) and every mount; the guard does that,
//! on failure too, then removes the cgroups it made on the host.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::engine::{berthd_binary, busybox_tar, docker_binary};
use integration_tests::registry::require_program;
use integration_tests::{release_temp_tree, require_root};

/// How long one command may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

const UNITS: &[&str] = &[
    "berth.socket",
    "berthd.service",
    "berth-supervisord.service",
];

/// Runs `cmd` (stdin from `input`, else /dev/null) and collects its
/// output; kills it and panics when it has not exited after `TIMEOUT`.
fn run(mut cmd: Command, input: Option<&Path>) -> Output {
    let what = format!("{cmd:?}");
    let stdin = match input {
        Some(path) => Stdio::from(File::open(path).expect("test set-up")),
        None => Stdio::null(),
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One cgroup hierarchy of the host, as /proc/self/mountinfo shows it.
struct Hierarchy {
    mount_point: PathBuf,
    fs_type: String,
    /// The superblock's options (`rw,cpu`, `rw,name=systemd`): mounted so
    /// again inside, they show the same hierarchy from the namespace's root.
    options: String,
}

fn cgroup_hierarchies() -> Vec<Hierarchy> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut out: Vec<Hierarchy> = info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?;
            let options = right.nth(1)?;
            ((fs_type == "cgroup" || fs_type == "cgroup2")
                && mount_point.starts_with("/sys/fs/cgroup"))
            .then(|| Hierarchy {
                mount_point: mount_point.into(),
                fs_type: fs_type.into(),
                options: options.into(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    out
}

/// The systemd in its namespaces; dropping it kills them all and removes
/// what it made on the host.
struct Systemd {
    /// `unshare`, whose child is the namespaces' PID 1.
    unshare: Child,
    /// The host's pid of that PID 1 (systemd once it has exec'd).
    pid: u32,
    /// The cgroup directories made for it on the host, one per hierarchy.
    cgroups: Vec<PathBuf>,
    tmp: Option<tempfile::TempDir>,
}

impl Systemd {
    /// Boots systemd on a root under a new temp dir, with `binds` (the
    /// repository, the binaries) visible read-only at their own paths.
    fn boot(binds: &[&Path]) -> Systemd {
        let systemd = ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or_else(|| {
                panic!("systemd is not installed: `apt-get install systemd` (or `make deps`)")
            });
        require_program("unshare", "util-linux");
        require_program("nsenter", "util-linux");
        remove_stale();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("berth-systemd-{}-", std::process::id()))
            .tempdir()
            .expect("test set-up");
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).expect("test set-up");

        let name = format!("berth-systemd-test-{}", std::process::id());
        let hierarchies = cgroup_hierarchies();
        assert!(!hierarchies.is_empty(), "no cgroup hierarchy is mounted");
        let mut cgroups = Vec::new();
        let mut mount_cgroups = String::new();
        if !hierarchies
            .iter()
            .any(|h| h.mount_point == Path::new("/sys/fs/cgroup"))
        {
            mount_cgroups.push_str("mount -t tmpfs -o mode=755 tmpfs \"$R/sys/fs/cgroup\"\n");
        }
        for h in &hierarchies {
            let dir = h.mount_point.join(&name);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
            // A v1 cpuset starts empty and takes no task until given cpus
            // and memory nodes: its parent's.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(h.mount_point.join(file)) {
                    let _ = std::fs::write(dir.join(file), v.trim());
                }
            }
            cgroups.push(dir);
            let target = format!("$R{}", h.mount_point.display());
            mount_cgroups.push_str(&format!(
                "mkdir -p \"{target}\"\nmount -t {} -o {} cgroup \"{target}\"\n",
                h.fs_type, h.options
            ));
        }
        let mut bind_paths = String::new();
        for path in binds {
            bind_paths.push_str(&format!(
                "mkdir -p \"$R{p}\"\nmount --bind \"{p}\" \"$R{p}\"\n\
                 mount -o remount,bind,ro \"$R{p}\"\n",
                p = path.display()
            ));
        }
        // PID 1 of the new namespaces until it execs systemd: the root, then
        // pivot_root into it. Mounts made here are private to the mount
        // namespace and go when it goes.
        let init = format!(
            r#"set -eu
R={root}
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs "$R"
mkdir -p "$R"/usr "$R"/etc "$R"/var "$R"/run "$R"/tmp "$R"/proc "$R"/sys "$R"/dev "$R"/root
mkdir -p "$R"/.overlay/usr/upper "$R"/.overlay/usr/work "$R"/.overlay/etc/upper "$R"/.overlay/etc/work
for l in bin lib lib64 sbin; do [ -e /usr/$l ] && ln -s usr/$l "$R/$l"; done
mount -t overlay overlay -o lowerdir=/usr,upperdir="$R"/.overlay/usr/upper,workdir="$R"/.overlay/usr/work "$R"/usr
mount -t overlay overlay -o lowerdir=/etc,upperdir="$R"/.overlay/etc/upper,workdir="$R"/.overlay/etc/work "$R"/etc
chmod 1777 "$R"/tmp
mount -t proc proc "$R"/proc
# /sys read-only, as systemd-nspawn has it: systemd then leaves udev alone.
mount -t sysfs -o ro sysfs "$R"/sys
{mount_cgroups}
# A /dev of its own: the usual nodes, its own ptys, no console, no kmsg.
mount -t tmpfs -o mode=755,nosuid tmpfs "$R"/dev
for n in null zero full random urandom tty; do touch "$R/dev/$n"; mount --bind /dev/$n "$R/dev/$n"; done
mkdir "$R"/dev/pts "$R"/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R"/dev/pts
ln -s pts/ptmx "$R"/dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R"/dev/shm
ln -s /proc/self/fd "$R"/dev/fd
{bind_paths}
# Boot to a target of our own: the host's enabled units (dockerd,
# containerd) stay stopped; udev is masked besides.
mkdir -p "$R"/etc/systemd/system
printf '[Unit]\nDescription=berth test boot\nWants=systemd-journald.socket\n' \
    > "$R"/etc/systemd/system/berth-test.target
for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
         systemd-udev-trigger.service; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
done
rm -f "$R"/etc/machine-id
: > "$R"/etc/machine-id
ip link set lo up
cd "$R"
mkdir .old
pivot_root . .old
umount -l /.old
rmdir /.old
export container=berth-test
exec {systemd} --unit=berth-test.target --log-target=journal
"#,
            root = root.display(),
        );
        let init_path = tmp.path().join("init.sh");
        std::fs::write(&init_path, init).expect("test set-up");
        // The child joins the cgroups made for it, then unshares: those
        // cgroups are the roots of its cgroup namespace.
        let mut start = Command::new("bash");
        start
            .arg("-c")
            .arg(
                r#"for procs in "${@:2}"; do echo $$ > "$procs"; done
exec unshare --mount --cgroup --pid --net --uts --ipc --fork --kill-child bash "$1""#,
            )
            .arg("start")
            .arg(&init_path)
            .args(cgroups.iter().map(|c| c.join("cgroup.procs")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(tmp.path().join("init.log")).expect("test set-up"));
        // A test killed outright takes unshare along, and with it
        // (--kill-child) the namespaces.
        // SAFETY: the hook only calls prctl, which is async-signal-safe and
        // allocates nothing.
        unsafe { start.pre_exec(die_with_parent) };
        let unshare = start.spawn().expect("run unshare");
        let mut sd = Systemd {
            pid: 0,
            unshare,
            cgroups,
            tmp: Some(tmp),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = sd.unshare.try_wait().expect("wait") {
                panic!(
                    "the namespaces' init exited ({status}): {}",
                    std::fs::read_to_string(sd.dir().join("init.log")).unwrap_or_default()
                );
            }
            if sd.pid == 0 {
                sd.pid = child_of(sd.unshare.id()).unwrap_or(0);
            }
            if sd.pid != 0 {
                let out = sd.command(&["systemctl", "is-system-running"]).output();
                let state = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default();
                if state == "running" || state == "degraded" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "systemd did not come up within 30 s: {}",
                std::fs::read_to_string(sd.dir().join("init.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sd
    }

    fn dir(&self) -> &Path {
        self.tmp.as_ref().expect("test set-up").path()
    }

    /// A command run inside the namespaces and their root, with a plain
    /// root environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .arg("-a")
            .args(["env", "-i"])
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("HOME=/root")
            .args(args);
        cmd
    }

    /// Runs `args` inside; its output, whatever its status.
    fn run(&self, args: &[&str]) -> Output {
        run(self.command(args), None)
    }

    /// Runs `args` inside and fails (with the journal) unless it succeeds;
    /// its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            self.fail(&format!("{args:?}: {}", text(&out)));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A path inside the namespaces' root, as the host reaches it.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.pid))
    }

    /// The real docker CLI, on the host, on the socket systemd made.
    fn docker(&self, args: &[&str], input: Option<&Path>) -> Output {
        let mut cmd = Command::new(docker_binary());
        cmd.args(args).env(
            "DOCKER_HOST",
            format!("unix://{}", self.path("/run/berth/berth.sock").display()),
        );
        run(cmd, input)
    }

    #[track_caller]
    fn docker_ok(&self, args: &[&str], input: Option<&Path>) -> String {
        let out = self.docker(args, input);
        if !out.status.success() {
            self.fail(&format!("docker {args:?}: {}", text(&out)));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn active(&self, unit: &str) -> String {
        let out = self.run(&["systemctl", "is-active", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The command line of process `pid` of the namespaces, if it lives.
    fn cmdline(&self, pid: &str) -> Option<String> {
        let raw = std::fs::read(self.path(&format!("/proc/{pid}/cmdline"))).ok()?;
        Some(String::from_utf8_lossy(&raw).replace('\0', " "))
    }

    /// The pids of the namespaces' processes whose command line contains
    /// `needle`.
    fn pids_running(&self, needle: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.path("/proc")) else {
            return Vec::new();
        };
        dir.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
            .filter(|p| self.cmdline(p).is_some_and(|c| c.contains(needle)))
            .collect()
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        let journal = self.run(&[
            "journalctl",
            "--no-pager",
            "-n",
            "60",
            "-o",
            "short-monotonic",
        ]);
        panic!(
            "{what}\n--- journal inside ---\n{}",
            String::from_utf8_lossy(&journal.stdout)
        );
    }

    #[track_caller]
    fn check(&self, cond: bool, what: &str) {
        if !cond {
            self.fail(what);
        }
    }
}

/// What a test process killed outright (SIGKILL: no guard ran; its
/// namespaces died with it) left: its temp dir and its cgroups, named
/// with its pid.
fn remove_stale() {
    let dead = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead(&name, "berth-systemd-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    for h in cgroup_hierarchies() {
        for entry in std::fs::read_dir(&h.mount_point)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name, "berth-systemd-test-") {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
}

/// Removes the cgroup `dir` and those under it, children first; whether
/// some are left (still holding processes).
fn remove_cgroup_tree(dir: &Path) -> bool {
    let mut dirs = walk_dirs(dir);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let mut left = false;
    for d in dirs {
        if d.exists() && std::fs::remove_dir(&d).is_err() {
            left = true;
        }
    }
    left
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        // SIGKILL to a PID namespace's init kills every process in it.
        if self.pid != 0 {
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // the namespaces' init, a grandchild of this process.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        for dir in &self.cgroups {
            // Children first: systemd made its slices and services inside.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = remove_cgroup_tree(dir);
                if !left || Instant::now() > deadline {
                    if left {
                        problems.push(format!("cgroup {} left", dir.display()));
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        release_temp_tree(self.tmp.take(), &mut problems);
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("clean-up: {}", problems.join("; "));
        }
    }
}

/// `dir` and every directory under it.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out
}

/// Sets the calling process's parent-death signal to SIGKILL (a
/// `pre_exec` hook).
fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) reads no memory of ours; it only sets
    // the signal this process gets when its parent thread exits.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `program`'s absolute path: itself when it has a slash, else found on
/// PATH.
fn which(program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        return std::fs::canonicalize(program).expect("test set-up");
    }
    let name = program.to_string_lossy();
    let found = require_program(&name, "docker.io");
    std::fs::canonicalize(found).expect("test set-up")
}

/// A child of `parent`, from /proc/*/stat.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command's closing parenthesis: state, ppid.
        let rest = &stat[stat.rfind(')')? + 2..];
        let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
}

#[test]
fn installed_service_under_systemd_socket_activation_stop_and_reattach() {
    require_root();
    let started = Instant::now();
    let repo = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .expect("test set-up");
    let bin_src = std::fs::canonicalize(berthd_binary().parent().expect("the binaries' directory"))
        .expect("test set-up");
    let image = busybox_tar()
        .parent()
        .expect("test set-up")
        .join("busybox-docker.tar");
    // The docker CLI is also run inside (as users of the berth group): from
    // the host's /usr, seen through the overlay, or bound in.
    let docker_inside = which(&docker_binary());
    let docker_dir = docker_inside.parent().expect("test set-up").to_path_buf();
    let mut binds: Vec<&Path> = vec![&repo];
    for dir in [&bin_src, &docker_dir] {
        if !dir.starts_with(&repo) && !dir.starts_with("/usr") && !binds.contains(&dir.as_path()) {
            binds.push(dir);
        }
    }
    let host_unit = Path::new("/usr/local/lib/systemd/system/berth.socket");
    let host_had_unit = host_unit.exists();

    let sd = Systemd::boot(&binds);
    let booted = started.elapsed();

    // make install to `/`, inside: the group is made, systemd reloaded.
    let repo_arg = repo.to_string_lossy();
    let bin_src_arg = format!("BIN_SRC={}", bin_src.display());
    sd.ok(&[
        "make",
        "--no-print-directory",
        "-C",
        &repo_arg,
        "install",
        &bin_src_arg,
    ]);
    let group = sd.ok(&["getent", "group", "berth"]);
    let gid: u32 = group
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| sd.fail(&format!("getent group berth: {group}")));
    for unit in UNITS {
        let state = sd.run(&["systemctl", "show", "-P", "LoadState", unit]);
        sd.check(
            String::from_utf8_lossy(&state.stdout).trim() == "loaded",
            &format!("{unit} is not loaded: {}", text(&state)),
        );
    }
    assert_eq!(
        host_unit.exists(),
        host_had_unit,
        "make install inside wrote the host's /usr/local"
    );

    // The socket, and nothing else yet.
    sd.ok(&["systemctl", "start", "berth.socket"]);
    let meta = std::fs::metadata(sd.path("/run/berth/berth.sock"))
        .unwrap_or_else(|e| sd.fail(&format!("/run/berth/berth.sock: {e}")));
    assert_eq!(meta.mode() & 0o7777, 0o660, "the socket's mode");
    assert_eq!((meta.uid(), meta.gid()), (0, gid), "the socket's owner");
    assert_eq!(sd.active("berthd.service"), "inactive");
    assert_eq!(sd.active("berth-supervisord.service"), "inactive");

    // The first connection starts berthd, which starts after its
    // supervisor is ready.
    let version = sd.docker_ok(&["version", "--format", "{{.Server.Version}}"], None);
    sd.check(
        !version.trim().is_empty(),
        "docker version: no server version",
    );
    assert_eq!(sd.active("berthd.service"), "active");
    assert_eq!(sd.active("berth-supervisord.service"), "active");
    let journal = sd.ok(&["journalctl", "--no-pager", "-u", "berthd.service"]);
    sd.check(
        journal.contains("(from systemd)"),
        &format!("berthd did not take systemd's socket:\n{journal}"),
    );
    sd.check(
        !journal.contains("Error"),
        &format!("berthd failed before it served:\n{journal}"),
    );

    // The berth group is what the socket's access takes: a user in it is
    // served, one outside is refused (the docker CLI run inside, as them).
    let docker_inside = docker_inside.to_string_lossy();
    sd.ok(&["useradd", "--no-create-home", "--groups", "berth", "member"]);
    sd.ok(&["useradd", "--no-create-home", "outsider"]);
    let as_user = |user: &str| {
        sd.run(&[
            "runuser",
            "-u",
            user,
            "--",
            "env",
            "HOME=/tmp",
            &docker_inside,
            "-H",
            "unix:///run/berth/berth.sock",
            "version",
            "--format",
            "{{.Server.Version}}",
        ])
    };
    let member = as_user("member");
    sd.check(
        member.status.success() && String::from_utf8_lossy(&member.stdout).trim() == version.trim(),
        &format!("a member of the berth group: {}", text(&member)),
    );
    let outsider = as_user("outsider");
    sd.check(
        !outsider.status.success()
            && String::from_utf8_lossy(&outsider.stderr).contains("permission denied"),
        &format!("a user outside the berth group: {}", text(&outsider)),
    );

    // A container.
    sd.docker_ok(&["load"], Some(&image));
    let id = sd.docker_ok(
        &["run", "-d", "--name", "svc", "busybox", "sleep", "600"],
        None,
    );
    let id = id.trim().to_string();
    let pid = sd
        .docker_ok(&["inspect", "-f", "{{.State.Pid}}", "svc"], None)
        .trim()
        .to_string();
    sd.check(
        sd.cmdline(&pid).is_some_and(|c| c.starts_with("sleep 600")),
        &format!("the container's process {pid} is not sleep 600"),
    );
    let shims = sd.pids_running(&format!("--id {id}"));
    sd.check(shims.len() == 1, &format!("the shims of {id}: {shims:?}"));

    // Stopped as an operator would: the daemons go, the container stays.
    sd.ok(&[
        "systemctl",
        "stop",
        "berthd.service",
        "berth.socket",
        "berth-supervisord.service",
    ]);
    for unit in UNITS {
        assert_eq!(sd.active(unit), "inactive", "{unit} after stop");
    }
    sd.check(
        sd.pids_running("/usr/local/bin/berthd").is_empty()
            && sd
                .pids_running("/usr/local/bin/berth-supervisord")
                .is_empty(),
        "a daemon outlived systemctl stop",
    );
    sd.check(
        sd.cmdline(&pid).is_some_and(|c| c.starts_with("sleep 600")),
        "systemctl stop killed the container",
    );
    sd.check(
        sd.pids_running(&format!("--id {id}")) == shims,
        "systemctl stop killed the shim",
    );
    sd.check(
        !sd.path("/run/berth/berth.sock").exists(),
        "the socket outlived berth.socket",
    );

    // Started again: the next berthd and supervisor take the container back.
    sd.ok(&["systemctl", "start", "berth.socket"]);
    let ps = sd.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"], None);
    sd.check(ps.starts_with("svc Up"), &format!("docker ps: {ps}"));
    let again = sd.docker_ok(&["inspect", "-f", "{{.State.Pid}}", "svc"], None);
    assert_eq!(again.trim(), pid, "the container's pid after the restart");
    let said = sd.docker_ok(&["exec", "svc", "echo", "reattached"], None);
    assert_eq!(said.trim(), "reattached");
    sd.docker_ok(&["stop", "-t", "1", "svc"], None);
    let status = sd.docker_ok(&["inspect", "-f", "{{.State.Status}}", "svc"], None);
    assert_eq!(status.trim(), "exited");
    sd.check(sd.cmdline(&pid).is_none(), "docker stop left the process");
    sd.docker_ok(&["rm", "svc"], None);

    // make uninstall: the files go, and systemd forgets the units.
    sd.ok(&[
        "systemctl",
        "stop",
        "berthd.service",
        "berth.socket",
        "berth-supervisord.service",
    ]);
    sd.ok(&["make", "--no-print-directory", "-C", &repo_arg, "uninstall"]);
    for bin in ["berthd", "berth-supervisord", "berth-shim", "berth-runtime"] {
        let path = sd.path(&format!("/usr/local/bin/{bin}"));
        sd.check(!path.exists(), &format!("{} left", path.display()));
    }
    for unit in UNITS {
        let state = sd.run(&["systemctl", "show", "-P", "LoadState", unit]);
        sd.check(
            String::from_utf8_lossy(&state.stdout).trim() == "not-found",
            &format!("{unit} after uninstall: {}", text(&state)),
        );
    }
    eprintln!(
        "systemd booted in {booted:?}; the whole test took {:?}",
        started.elapsed()
    );
}
