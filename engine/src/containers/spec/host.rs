//! What building a spec asks of the machine, behind [`Host`] so the
//! spec's rules are tested without root: [`SystemHost`] reads the real
//! system.

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

/// The machine a container's spec is built for.
pub trait Host {
    /// The CPUs the engine may use (its affinity), in order.
    fn cpus(&self) -> Vec<u32>;
    /// The kernel release as (major, minor).
    fn kernel(&self) -> (u32, u32);
    /// The highest capability number the kernel knows.
    fn last_cap(&self) -> u32;
    /// The capabilities the engine can give (its bounding set, bit N for
    /// capability N).
    fn grantable_caps(&self) -> u64;
    /// Whether cgroups are v2 (unified).
    fn cgroup_v2(&self) -> bool;
    /// Whether `/proc/sys/<name with . as />` exists.
    fn sysctl_exists(&self, name: &str) -> bool;
    /// The host's name (for `--network host`).
    fn hostname(&self) -> String;
    /// Whether a path exists (following symlinks), and is a directory.
    fn stat(&self, path: &Path) -> Option<bool>;
    /// The device node at `path` (following symlinks); `Ok(None)` when
    /// the path exists and is not a device.
    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>>;
    /// Every device node below the directory `dir`, recursively (for
    /// `--privileged`, `/dev` without its pts, shm and mqueue mounts).
    fn devices_under(&self, dir: &Path) -> Vec<(PathBuf, HostDevice)>;
    /// A file's content (a seccomp profile named by path).
    fn read_file(&self, path: &Path) -> io::Result<String>;
}

/// The machine berthd runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn cpus(&self) -> Vec<u32> {
        use nix::sched::{sched_getaffinity, CpuSet};
        let Ok(set) = sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            return (0..n as u32).collect();
        };
        (0..CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .map(|i| i as u32)
            .collect()
    }

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
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("CapBnd:"))?;
                u64::from_str_radix(line["CapBnd:".len()..].trim(), 16).ok()
            })
            .unwrap_or(u64::MAX)
    }

    fn cgroup_v2(&self) -> bool {
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    }

    fn sysctl_exists(&self, name: &str) -> bool {
        Path::new("/proc/sys").join(name.replace('.', "/")).exists()
    }

    fn hostname(&self) -> String {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn stat(&self, path: &Path) -> Option<bool> {
        std::fs::metadata(path).ok().map(|m| m.is_dir())
    }

    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>> {
        let meta = std::fs::metadata(path)?;
        Ok(device_of(&meta))
    }

    fn devices_under(&self, dir: &Path) -> Vec<(PathBuf, HostDevice)> {
        let mut found = Vec::new();
        walk_devices(dir, dir == Path::new("/dev"), &mut found);
        found
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
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
pub(crate) fn parse_release(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.1.0-18-amd64"), (6, 1));
        assert_eq!(parse_release("5.15.153.1-microsoft-standard-WSL2"), (5, 15));
        assert_eq!(parse_release(""), (0, 0));
    }

    #[test]
    fn the_system_host_answers_without_root() {
        let h = SystemHost;
        assert!(!h.cpus().is_empty());
        assert!(h.kernel() >= (3, 10));
        assert!(h.last_cap() >= 36);
        assert_ne!(h.grantable_caps(), 0);
        assert_eq!(h.stat(Path::new("/proc")), Some(true));
        assert_eq!(h.stat(Path::new("/no/such/path")), None);
        let null = h.device(Path::new("/dev/null")).unwrap().unwrap();
        assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
        assert_eq!(h.device(Path::new("/proc")).unwrap(), None);
        assert!(h.device(Path::new("/no/such/dev")).is_err());
    }
}
