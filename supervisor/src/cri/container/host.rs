//! What building a CRI container's spec asks of the machine, behind
//! [`Host`] so the spec's rules are unit-tested without root:
//! [`SystemHost`] reads the real system.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A device node on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// 'c' or 'b'.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    /// The permission bits of the node.
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// How mounts propagate at a mount point (its mountinfo optional fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Shared,
    Slave,
    Private,
}

/// The machine a container's spec is built for.
pub trait Host {
    /// The kernel release as (major, minor).
    fn kernel(&self) -> (u32, u32);
    /// The highest capability number the kernel knows.
    fn last_cap(&self) -> u32;
    /// The capabilities the supervisor can give (its bounding set, bit N
    /// for capability N).
    fn grantable_caps(&self) -> u64;
    /// Whether cgroups are v2 (unified).
    fn cgroup_v2(&self) -> bool;
    /// The host's name (for a pod in the host's network).
    fn hostname(&self) -> String;
    /// The path with its symlinks resolved; an error when it does not
    /// exist.
    fn resolve(&self, path: &Path) -> io::Result<PathBuf>;
    /// The mount point a (resolved) path lives on and its propagation.
    fn mount_of(&self, path: &Path) -> io::Result<(PathBuf, Propagation)>;
    /// The device node at `path` (following symlinks); `Ok(None)` when
    /// the path exists and is not a device.
    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>>;
    /// Every device node of the host's `/dev` (for privileged containers).
    fn host_devices(&self) -> Vec<(PathBuf, HostDevice)>;
    /// A file's content (a seccomp profile).
    fn read_file(&self, path: &Path) -> io::Result<String>;
    /// The lowest `oom_score_adj` a container can be given: the
    /// supervisor's own without CAP_SYS_RESOURCE (the kernel refuses to
    /// lower it), else -1000.
    fn min_oom_score_adj(&self) -> i64;
}

/// The machine the supervisor runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

/// CAP_SYS_RESOURCE's number.
const CAP_SYS_RESOURCE: u32 = 24;

fn status_mask(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    u64::from_str_radix(line[field.len()..].trim(), 16).ok()
}

impl Host for SystemHost {
    fn kernel(&self) -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        parse_release(&release)
    }

    fn last_cap(&self) -> u32 {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    }

    fn grantable_caps(&self) -> u64 {
        status_mask("CapBnd:").unwrap_or(u64::MAX)
    }

    fn cgroup_v2(&self) -> bool {
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    }

    fn hostname(&self) -> String {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn mount_of(&self, path: &Path) -> io::Result<(PathBuf, Propagation)> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        mount_of(&info, path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no mount holds {}", path.display()),
            )
        })
    }

    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>> {
        let meta = std::fs::metadata(path)?;
        Ok(device_of(&meta))
    }

    fn host_devices(&self) -> Vec<(PathBuf, HostDevice)> {
        let mut found = Vec::new();
        walk_devices(Path::new("/dev"), true, &mut found);
        found
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn min_oom_score_adj(&self) -> i64 {
        let effective = status_mask("CapEff:").unwrap_or(0);
        if effective & (1 << CAP_SYS_RESOURCE) != 0 {
            return -1000;
        }
        std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The deepest mount of `mountinfo` that holds `path`, and its
/// propagation (`shared:N` makes it shared, else `master:N` a slave).
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<(PathBuf, Propagation)> {
    let mut best: Option<(PathBuf, Propagation)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if !path.starts_with(&point) {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let mut propagation = Propagation::Private;
        for f in optional {
            if f.starts_with("shared:") {
                propagation = Propagation::Shared;
            } else if f.starts_with("master:") && propagation != Propagation::Shared {
                propagation = Propagation::Slave;
            }
        }
        // Later lines are mounted over earlier ones at the same point.
        if best
            .as_ref()
            .is_none_or(|(b, _)| point.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((point, propagation));
        }
    }
    best
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
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

fn device_of(meta: &std::fs::Metadata) -> Option<HostDevice> {
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// As runc lists the host's devices: symlinks are not followed, and below
/// `/dev` the directories the container mounts itself are skipped, and
/// `/dev/console`.
fn walk_devices(dir: &Path, is_dev: bool, found: &mut Vec<(PathBuf, HostDevice)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if meta.is_dir() {
            let skipped = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
            if !(is_dev && skipped.contains(&name.as_ref())) {
                walk_devices(&path, false, found);
            }
            continue;
        }
        if is_dev && name == "console" {
            continue;
        }
        if let Some(d) = device_of(&meta) {
            found.push((path, d));
        }
    }
}

/// "6.1.0-18-amd64" -> (6, 1).
fn parse_release(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_the_deepest_mount_and_its_propagation() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:5 / /mnt/a rw shared:5 master:2 - tmpfs tmpfs rw
31 22 0:6 / /mnt/b rw master:3 - tmpfs tmpfs rw
32 22 0:7 / /mnt/c rw - tmpfs tmpfs rw
33 22 0:8 / /mnt/with\\040space rw - tmpfs tmpfs rw";
        let at = |p: &str| mount_of(info, Path::new(p)).unwrap();
        assert_eq!(at("/etc"), (PathBuf::from("/"), Propagation::Shared));
        assert_eq!(
            at("/mnt/a/x"),
            (PathBuf::from("/mnt/a"), Propagation::Shared)
        );
        assert_eq!(at("/mnt/b"), (PathBuf::from("/mnt/b"), Propagation::Slave));
        assert_eq!(
            at("/mnt/c/d"),
            (PathBuf::from("/mnt/c"), Propagation::Private)
        );
        assert_eq!(at("/mnt/cc"), (PathBuf::from("/"), Propagation::Shared));
        assert_eq!(at("/mnt/with space/f").0, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn the_system_host_answers() {
        let h = SystemHost;
        assert!(h.kernel() >= (3, 10));
        assert!(h.last_cap() >= 36);
        assert_ne!(h.grantable_caps(), 0);
        let null = h.device(Path::new("/dev/null")).unwrap().unwrap();
        assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
        assert_eq!(h.device(Path::new("/proc")).unwrap(), None);
        assert!(h.resolve(Path::new("/no/such/path")).is_err());
        assert!(h.mount_of(Path::new("/proc/self")).is_ok());
        assert!((-1000..=1000).contains(&h.min_oom_score_adj()));
        assert_eq!(parse_release("6.1.0-18-amd64"), (6, 1));
    }
}
