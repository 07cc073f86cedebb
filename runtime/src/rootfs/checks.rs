//! The checks runc makes on a mount's destination before mounting anything
//! (libcontainer/rootfs_linux.go: `mountToRootfs` and `checkProcMount`),
//! with runc's words, so that tools which look for them find them.
//!
//! - procfs and sysfs go exactly where the config says, onto an ordinary
//!   directory: if the image made `/proc` (or `/sys`) a symlink, to itself or
//!   elsewhere, it is refused, never followed. A symlink where a mount point
//!   should be is the shape of the mount-redirection attacks
//!   (CVE-2019-19921, CVE-2023-27561).
//! - Nothing may be mounted over `/proc` but a procfs, nor inside it but the
//!   few files lxcfs emulates.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("filesystem {fstype:?} must be mounted on ordinary directory")]
    NotOrdinaryDirectory { fstype: String },
    #[error("{dest:?} cannot be mounted because it is not of type proc")]
    OverProcNotProc { dest: PathBuf },
    #[error("{dest:?} cannot be mounted because it is inside /proc")]
    InsideProc { dest: PathBuf },
    #[error("check mount destination {dest}: {source}")]
    Stat {
        dest: PathBuf,
        source: std::io::Error,
    },
}

/// Files under /proc that a container may have mounted over (lxcfs), as runc.
const VALID_PROC_MOUNTS: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
];

/// `path` made absolute and lexically clean (`.` and `..` folded, never
/// above `/`), without looking at the filesystem.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// For procfs and sysfs, before the destination is resolved: the path as
/// written, below `root`, must be an ordinary directory or not exist yet.
/// Its last component is never followed (an lstat, as runc).
pub fn check_special_fs(root: &Path, m: &Mount, fstype: &str) -> Result<(), DestinationError> {
    if !matches!(fstype, "proc" | "sysfs") {
        return Ok(());
    }
    let inside = clean(m.destination());
    check_proc_mount(&inside, fstype, false, None)?;
    let dest = root.join(inside.strip_prefix("/").unwrap_or(&inside));
    match std::fs::symlink_metadata(&dest) {
        Ok(meta) if !meta.is_dir() => Err(DestinationError::NotOrdinaryDirectory {
            fstype: fstype.to_string(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DestinationError::Stat { dest, source }),
    }
}

/// runc's `checkProcMount` for a destination `inside` the container (after
/// symlinks were resolved in the root): over `/proc` only a procfs (fresh,
/// or a bind of one), inside it only the files lxcfs emulates.
pub fn check_proc_mount(
    inside: &Path,
    fstype: &str,
    bind: bool,
    source: Option<&Path>,
) -> Result<(), DestinationError> {
    let inside = clean(inside);
    let Ok(rel) = inside.strip_prefix("/proc") else {
        return Ok(());
    };
    if rel.as_os_str().is_empty() {
        if bind {
            let is_proc = source
                .and_then(|s| nix::sys::statfs::statfs(s).ok())
                .is_some_and(|st| st.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
            if is_proc {
                return Ok(());
            }
        } else if fstype == "proc" {
            return Ok(());
        }
        return Err(DestinationError::OverProcNotProc { dest: inside });
    }
    if VALID_PROC_MOUNTS.iter().any(|v| Path::new(v) == inside) {
        return Ok(());
    }
    Err(DestinationError::InsideProc { dest: inside })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(dest: &str, typ: &str) -> Mount {
        serde_json::from_value(serde_json::json!({
            "destination": dest, "type": typ, "source": typ
        }))
        .unwrap()
    }

    #[test]
    fn symlinked_proc_and_sys_are_refused_with_runcs_words() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink("proc", root.join("proc")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", root.join("sys")).unwrap();
        let err = check_special_fs(root, &mount("/proc", "proc"), "proc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "filesystem \"proc\" must be mounted on ordinary directory"
        );
        let err = check_special_fs(root, &mount("/sys", "sysfs"), "sysfs").unwrap_err();
        assert_eq!(
            err.to_string(),
            "filesystem \"sysfs\" must be mounted on ordinary directory"
        );
        // A missing destination is made later; a directory is fine.
        std::fs::create_dir(root.join("dir")).unwrap();
        check_special_fs(root, &mount("/dir", "proc"), "proc").unwrap();
        check_special_fs(root, &mount("/missing", "sysfs"), "sysfs").unwrap();
        check_special_fs(root, &mount("/dir", "sysfs"), "sysfs").unwrap();
        // Other types are resolved in the root instead.
        check_special_fs(root, &mount("/sys", "tmpfs"), "tmpfs").unwrap();
    }

    #[test]
    fn only_procfs_over_proc_and_lxcfs_files_inside() {
        check_proc_mount(Path::new("/proc"), "proc", false, None).unwrap();
        check_proc_mount(Path::new("/proc/../proc/"), "proc", false, None).unwrap();
        let err = check_proc_mount(Path::new("/proc"), "tmpfs", false, None).unwrap_err();
        assert!(err.to_string().contains("is not of type proc"), "{err}");
        check_proc_mount(Path::new("/proc"), "none", true, Some(Path::new("/proc"))).unwrap();
        check_proc_mount(Path::new("/proc"), "none", true, Some(Path::new("/tmp"))).unwrap_err();
        check_proc_mount(Path::new("/proc/meminfo"), "none", true, None).unwrap();
        let err =
            check_proc_mount(Path::new("/proc/sys/kernel"), "tmpfs", false, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"/proc/sys/kernel\" cannot be mounted because it is inside /proc"
        );
        check_proc_mount(Path::new("/procfoo"), "tmpfs", false, None).unwrap();
        check_proc_mount(Path::new("/sys"), "sysfs", false, None).unwrap();
    }
}
