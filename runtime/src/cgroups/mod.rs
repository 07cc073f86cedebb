//! Control groups, v1 and v2, detected at run time.
//!
//! On a v1 (or hybrid) host a container gets one directory per mounted v1
//! hierarchy, plus one in the controller-less v2 tree of a hybrid host so
//! that its `/proc/self/cgroup` is whole. On a v2 host it gets one directory
//! in the unified tree, with the controllers it needs enabled in its parents.

pub mod devices_bpf;
mod v1;
mod v2;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDevice, LinuxResources};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {0}: {1}")]
    Unsupported(String, String),
    #[error("invalid cgroupsPath {0:?}: {1}")]
    InvalidPath(String, String),
    #[error("freeze {path}: still {state} after {waited:?}")]
    FreezeTimeout {
        path: PathBuf,
        state: String,
        waited: Duration,
    },
    #[error("remove cgroup {path}: processes still inside after {waited:?}")]
    Busy { path: PathBuf, waited: Duration },
}

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io {
        action,
        path,
        source,
    }
}

/// Writes `value` to a cgroup file, naming the file and value on failure.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: std::io::Error::new(source.kind(), format!("value {value:?}: {source}")),
    })
}

pub(crate) fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

/// Reads a file holding one integer (or "max"); None if absent or unparsable.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// v1 controllers, each hierarchy mounted somewhere; `unified` is the
    /// controller-less v2 mount of a hybrid host, if any.
    V1 {
        mounts: Vec<V1Mount>,
        unified: Option<PathBuf>,
    },
    /// The unified hierarchy, with its mount point.
    V2 { mount: PathBuf },
}

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Controllers it carries, e.g. ["cpu", "cpuacct"], or ["name=systemd"].
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
    /// Its root relative to the hierarchy (from mountinfo field 4).
    pub root: PathBuf,
}

impl Hierarchy {
    /// Detects the host's layout: a cgroup2 filesystem at /sys/fs/cgroup
    /// means v2; anything else is read from /proc/self/mountinfo.
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        let stat = nix::sys::statfs::statfs(CGROUP_ROOT).map_err(|e| CgroupError::Io {
            action: "statfs",
            path: CGROUP_ROOT.into(),
            source: e.into(),
        })?;
        if stat.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC {
            return Ok(Hierarchy::V2 {
                mount: CGROUP_ROOT.into(),
            });
        }
        let info = read_file(Path::new("/proc/self/mountinfo"))?;
        Ok(parse_mountinfo(&info))
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::V2 { .. })
    }
}

/// Builds the v1 layout from mountinfo text.
fn parse_mountinfo(info: &str) -> Hierarchy {
    let mut mounts = Vec::new();
    let mut unified = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let mountpoint = PathBuf::from(unescape_mountinfo(left[4]));
        match right[0] {
            "cgroup2" => unified = Some(mountpoint),
            "cgroup" => {
                let controllers: Vec<String> = right[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "xattr"
                        ) && !o.starts_with("release_agent")
                            && *o != "clone_children"
                            && *o != "cpuset_v2_mode"
                    })
                    .map(str::to_string)
                    .collect();
                if !controllers.is_empty() {
                    mounts.push(V1Mount {
                        controllers,
                        mountpoint,
                        root: PathBuf::from(unescape_mountinfo(left[3])),
                    });
                }
            }
            _ => {}
        }
    }
    Hierarchy::V1 { mounts, unified }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &s[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(oct, 8) {
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

/// The limits of `resources` with zeros removed: runc reads a zero CPU
/// shares, CFS quota or period, real-time period or runtime, block I/O
/// weight or memory limit as "not set", and Docker sends `cpu.shares: 0`
/// and `blockIO.weight: 0` for every container (the kernel refuses a block
/// I/O weight of 0 with ERANGE).
pub fn without_zero_limits(mut resources: LinuxResources) -> LinuxResources {
    fn set<T: PartialEq + Default>(v: Option<T>) -> Option<T> {
        v.filter(|x| *x != T::default())
    }
    if let Some(mut cpu) = resources.cpu().clone() {
        cpu.set_shares(set(cpu.shares()));
        cpu.set_quota(set(cpu.quota()));
        cpu.set_period(set(cpu.period()));
        cpu.set_realtime_runtime(set(cpu.realtime_runtime()));
        cpu.set_realtime_period(set(cpu.realtime_period()));
        resources.set_cpu(Some(cpu));
    }
    if let Some(mut blkio) = resources.block_io().clone() {
        blkio.set_weight(set(blkio.weight()));
        blkio.set_leaf_weight(set(blkio.leaf_weight()));
        resources.set_block_io(Some(blkio));
    }
    if let Some(mut memory) = *resources.memory() {
        memory.set_limit(set(memory.limit()));
        memory.set_reservation(set(memory.reservation()));
        memory.set_swap(set(memory.swap()));
        memory.set_kernel(set(memory.kernel()));
        resources.set_memory(Some(memory));
    }
    resources
}

/// The cgroup of a container: its path within every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    /// Path below the hierarchy root, starting with '/'.
    path: PathBuf,
}

/// Turns the config's `cgroupsPath` into a path below the hierarchy root.
/// Absolute paths are taken as they are; relative ones are placed under the
/// runtime's own cgroup (`own`); none means `/berth/<id>`. With
/// `--systemd-cgroup`, `slice:prefix:name` expands the way systemd names
/// nested slices and scopes.
pub fn resolve_path(
    cgroups_path: &str,
    systemd: bool,
    id: &str,
    own: &Path,
) -> Result<PathBuf, CgroupError> {
    let invalid = |why: &str| CgroupError::InvalidPath(cgroups_path.into(), why.into());
    if cgroups_path.split('/').any(|c| c == "..") {
        return Err(invalid("it must not contain '..'"));
    }
    if systemd {
        let parts: Vec<&str> = if cgroups_path.is_empty() {
            vec!["", "berth", id]
        } else {
            cgroups_path.split(':').collect()
        };
        let [slice, prefix, name] = parts[..] else {
            return Err(invalid("expected slice:prefix:name"));
        };
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let Some(stem) = slice.strip_suffix(".slice") else {
            return Err(invalid("the slice must end in .slice"));
        };
        let mut path = PathBuf::from("/");
        let mut acc = String::new();
        for part in stem.split('-').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('-');
            }
            acc.push_str(part);
            path.push(format!("{acc}.slice"));
        }
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        path.push(unit);
        return Ok(path);
    }
    if cgroups_path.is_empty() {
        return Ok(PathBuf::from("/berth").join(id));
    }
    let path = Path::new(cgroups_path);
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(own.join(path))
    }
}

/// The runtime's own cgroup path in the first hierarchy listed in
/// /proc/self/cgroup that matches `controller` ("" for the v2 line).
fn own_cgroup(controller: &str) -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
        if let (Some(ctrls), Some(path)) = (ctrls, path) {
            if ctrls.split(',').any(|c| c == controller) {
                return PathBuf::from(path);
            }
        }
    }
    PathBuf::from("/")
}

impl Cgroup {
    /// The cgroup for a container, from its config's cgroupsPath.
    pub fn new(cgroups_path: &str, systemd: bool, id: &str) -> Result<Cgroup, CgroupError> {
        let hierarchy = Hierarchy::detect()?;
        let own_ctrl = if hierarchy.is_v2() { "" } else { "memory" };
        let own = if Path::new(cgroups_path).is_absolute() || cgroups_path.is_empty() || systemd {
            PathBuf::from("/")
        } else {
            own_cgroup(own_ctrl)
        };
        let path = resolve_path(cgroups_path, systemd, id, &own)?;
        Ok(Cgroup { hierarchy, path })
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The path below every hierarchy's root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every directory that makes up this cgroup on the host.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        match &self.hierarchy {
            Hierarchy::V2 { mount } => vec![mount.join(rel)],
            Hierarchy::V1 { mounts, unified } => mounts
                .iter()
                .map(|m| m.mountpoint.join(rel))
                .chain(unified.iter().map(|u| u.join(rel)))
                .collect(),
        }
    }

    /// The directory of the v1 hierarchy carrying `controller`, if mounted.
    pub fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        let Hierarchy::V1 { mounts, .. } = &self.hierarchy else {
            return None;
        };
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        mounts
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
            .map(|m| m.mountpoint.join(rel))
    }

    /// Creates only the unified-tree directory, which must exist before a
    /// process can be cloned into it; `create` makes the rest later.
    pub fn create_unified(&self) -> Result<(), CgroupError> {
        match (&self.hierarchy, self.unified_dir()) {
            (Hierarchy::V2 { mount }, _) => v2::create(mount, &self.path),
            (Hierarchy::V1 { .. }, Some(dir)) => {
                std::fs::create_dir_all(&dir).map_err(io_err("create cgroup", &dir))
            }
            (Hierarchy::V1 { .. }, None) => Ok(()),
        }
    }

    /// Creates the directories (and, on v2, enables controllers on the way).
    pub fn create(&self) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V2 { mount } => v2::create(mount, &self.path),
            Hierarchy::V1 { .. } => {
                for dir in self.dirs() {
                    std::fs::create_dir_all(&dir).map_err(io_err("create cgroup", &dir))?;
                }
                if let Some(cpuset) = self.v1_dir("cpuset") {
                    v1::fill_cpuset_ancestors(&cpuset)?;
                }
                Ok(())
            }
        }
    }

    /// Sets limits from the config. `devices` are the config's device nodes,
    /// which are allowed along with the defaults every container needs.
    pub fn apply(
        &self,
        resources: &LinuxResources,
        devices: &[LinuxDevice],
    ) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => v2::apply(&self.dirs()[0], resources, devices),
            Hierarchy::V1 { .. } => v1::apply(self, resources, devices),
        }
    }

    /// Changes limits of a running container (`update`): like `apply`, but
    /// the device list is left as it is unless the update names devices.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => {
                if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
                    // Another attached program could only restrict further,
                    // and replacing the running one is not built: say so.
                    tracing::warn!(
                        cgroup = %self.path.display(),
                        "update: device rules are not changed on cgroup v2; the container keeps those it was created with"
                    );
                }
                v2::update(&self.dirs()[0], resources)
            }
            Hierarchy::V1 { .. } => v1::update(self, resources),
        }
    }

    /// The container's directory in the unified (v2) tree, if the host has
    /// one: the whole cgroup on v2, the controller-less part on a hybrid host.
    pub fn unified_dir(&self) -> Option<PathBuf> {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        match &self.hierarchy {
            Hierarchy::V2 { mount } => Some(mount.join(rel)),
            Hierarchy::V1 { unified, .. } => unified.as_ref().map(|u| u.join(rel)),
        }
    }

    /// Moves the calling process into the cgroup, in every hierarchy, except
    /// the unified tree when it was born there (`in_unified`).
    ///
    /// Why the process moves itself: when another process is moved, the
    /// kernel takes the global threadgroup rwsem for writing, which waits
    /// for an RCU grace period, 10 ms or more on an idle host. A thread
    /// that moves itself through a v1 `tasks` file needs no such lock. The
    /// caller must be single-threaded, so moving its thread moves it whole.
    pub fn join_self(&self, in_unified: bool) -> Result<(), CgroupError> {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        match &self.hierarchy {
            Hierarchy::V1 { mounts, unified } => {
                for m in mounts {
                    write_file(&m.mountpoint.join(rel).join("tasks"), "0")?;
                }
                if let (Some(u), false) = (unified, in_unified) {
                    write_file(&u.join(rel).join("cgroup.procs"), "0")?;
                }
            }
            Hierarchy::V2 { mount } if !in_unified => {
                write_file(&mount.join(rel).join("cgroup.procs"), "0")?;
            }
            Hierarchy::V2 { .. } => {}
        }
        Ok(())
    }

    /// Pids of every process in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dir = match &self.hierarchy {
            Hierarchy::V2 { .. } => self.dirs().remove(0),
            Hierarchy::V1 { .. } => self
                .v1_dir("pids")
                .or_else(|| self.v1_dir("memory"))
                .or_else(|| self.dirs().into_iter().next())
                .ok_or_else(|| {
                    CgroupError::Unsupported(
                        self.path.display().to_string(),
                        "no hierarchy is mounted".into(),
                    )
                })?,
        };
        let mut pids = Vec::new();
        collect_procs(&dir, &mut pids)?;
        pids.sort_unstable();
        Ok(pids)
    }

    /// Sends `signal` to every process in the cgroup. A frozen cgroup is
    /// thawed after a SIGKILL so the processes can die.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> Result<(), CgroupError> {
        for pid in self.pids()? {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
        if signal == nix::sys::signal::Signal::SIGKILL && self.is_frozen() {
            self.thaw()?;
        }
        Ok(())
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => v2::set_frozen(&self.dirs()[0], true),
            Hierarchy::V1 { .. } => v1::set_frozen(self, true),
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => v2::set_frozen(&self.dirs()[0], false),
            Hierarchy::V1 { .. } => v1::set_frozen(self, false),
        }
    }

    pub fn is_frozen(&self) -> bool {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => v2::is_frozen(&self.dirs()[0]),
            Hierarchy::V1 { .. } => v1::is_frozen(self),
        }
    }

    /// Resource usage, in the shape of runc's `events --stats` data.
    pub fn stats(&self) -> serde_json::Value {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => v2::stats(&self.dirs()[0]),
            Hierarchy::V1 { .. } => v1::stats(self),
        }
    }

    /// How many times the kernel's OOM killer has acted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => v2::oom_kills(&self.dirs()[0]),
            Hierarchy::V1 { .. } => v1::oom_kills(self),
        }
    }

    /// Removes the cgroup's directories, waiting for exiting processes to
    /// leave. Directories already gone are fine.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.dirs() {
            remove_tree(&dir, deadline)?;
        }
        Ok(())
    }
}

/// Removes a cgroup directory and any sub-cgroups the container made.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let mut pause = Duration::from_micros(200);
    let mut children_removed = false;
    loop {
        // Usually the directory holds only control files, which rmdir
        // takes with it: try that before listing anything.
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !children_removed => {
                // Sub-cgroups the container made go first.
                children_removed = true;
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(io_err("read cgroup", dir)(e)),
                };
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        remove_tree(&entry.path(), deadline)?;
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                // Processes still leaving.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Busy {
                    path: dir.to_path_buf(),
                    waited: Duration::from_secs(5),
                })
            }
            Err(e) => return Err(io_err("remove cgroup", dir)(e)),
        }
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", &dir.join("cgroup.procs"))(e)),
    };
    out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_procs(&entry.path(), out)?;
            }
        }
    }
    Ok(())
}

/// The whole device list of a container, in order: the config's rules, then
/// the defaults every container needs, then its device nodes (as runc does).
/// `with_defaults` is false for `update`, which only changes the config's.
pub(crate) fn device_rules(
    config: &[oci_spec::runtime::LinuxDeviceCgroup],
    devices: &[LinuxDevice],
    with_defaults: bool,
) -> Vec<devices_bpf::Rule> {
    let mut rules: Vec<devices_bpf::Rule> = config
        .iter()
        .map(|r| devices_bpf::Rule {
            allow: r.allow(),
            typ: r
                .typ()
                .map(|t| t.as_str().chars().next().unwrap_or('a'))
                .unwrap_or('a'),
            major: r.major().unwrap_or(-1),
            minor: r.minor().unwrap_or(-1),
            access: r.access().clone().unwrap_or_else(|| "rwm".into()),
        })
        .collect();
    if with_defaults {
        rules.extend(
            default_device_rules()
                .into_iter()
                .map(|(typ, major, minor, access)| devices_bpf::Rule {
                    allow: true,
                    typ,
                    major,
                    minor,
                    access: access.into(),
                }),
        );
        for d in devices {
            let typ = match d.typ().as_str().chars().next().unwrap_or('c') {
                'u' => 'c',
                'p' => continue,
                t => t,
            };
            rules.push(devices_bpf::Rule {
                allow: true,
                typ,
                major: d.major(),
                minor: d.minor(),
                access: "rwm".into(),
            });
        }
    }
    rules
}

/// The device rules every container gets besides the config's own, as runc
/// allows them: mknod of anything, and the standard character devices.
pub(crate) fn default_device_rules() -> Vec<(char, i64, i64, &'static str)> {
    vec![
        ('c', -1, -1, "m"),
        ('b', -1, -1, "m"),
        ('c', 1, 3, "rwm"),    // null
        ('c', 1, 5, "rwm"),    // zero
        ('c', 1, 7, "rwm"),    // full
        ('c', 1, 8, "rwm"),    // random
        ('c', 1, 9, "rwm"),    // urandom
        ('c', 5, 0, "rwm"),    // tty
        ('c', 5, 1, "rwm"),    // console
        ('c', 5, 2, "rwm"),    // ptmx
        ('c', 136, -1, "rwm"), // pts
        ('c', 10, 200, "rwm"), // net/tun
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_mountinfo() {
        let info = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory
";
        let Hierarchy::V1 { mounts, unified } = parse_mountinfo(info) else {
            panic!("expected v1")
        };
        assert_eq!(unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].controllers, vec!["name=systemd"]);
        assert_eq!(mounts[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            mounts[1].mountpoint,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn paths() {
        let own = Path::new("/user.slice");
        assert_eq!(
            resolve_path("", false, "c1", own).unwrap(),
            PathBuf::from("/berth/c1")
        );
        assert_eq!(
            resolve_path("/a/b", false, "c1", own).unwrap(),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            resolve_path("a/b", false, "c1", own).unwrap(),
            PathBuf::from("/user.slice/a/b")
        );
        assert!(resolve_path("/a/../../b", false, "c1", own).is_err());
        assert_eq!(
            resolve_path("system-berth.slice:docker:abc", true, "c1", own).unwrap(),
            PathBuf::from("/system.slice/system-berth.slice/docker-abc.scope")
        );
        assert_eq!(
            resolve_path("", true, "c1", own).unwrap(),
            PathBuf::from("/system.slice/berth-c1.scope")
        );
        assert!(resolve_path("nonsense", true, "c1", own).is_err());
    }

    #[test]
    fn zero_limits_are_unset() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "cpu": {"shares": 0, "quota": 50000, "period": 0},
            "blockIO": {"weight": 0},
            "memory": {"limit": 0, "reservation": 1024}
        }))
        .unwrap();
        let r = without_zero_limits(r);
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (None, Some(50000), None)
        );
        assert_eq!(r.block_io().clone().unwrap().weight(), None);
        let mem = r.memory().unwrap();
        assert_eq!((mem.limit(), mem.reservation()), (None, Some(1024)));
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
