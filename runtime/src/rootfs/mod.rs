//! The container's root filesystem: mounts from the config, device nodes,
//! pivot_root, masked and read-only paths.
//!
//! Mount options are parsed in `options`, device nodes made in `devices`,
//! recursive mount attributes applied in `attrs`, id-mapped mounts made in
//! `idmap`; runc's checks of mount destinations are in `checks`.

mod attrs;
mod checks;
mod devices;
pub mod host_ns;
pub mod idmap;
mod options;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::makedev;
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;

use crate::cgroups::{Cgroup, Hierarchy};

pub use self::attrs::RECURSIVE_OPTIONS;
pub use self::devices::{binds_host_dev, create_devices};
pub use self::idmap::MountSources;
pub use self::options::{parse_options, propagation_flags, MountOptions};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("resolve {path} in the container root: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },
    #[error("mount option {0:?} is not supported")]
    UnsupportedOption(String),
    #[error("pivot_root to {root}: {source}")]
    Pivot { root: PathBuf, source: nix::Error },
    #[error("create device {path}: {source}")]
    Device { path: PathBuf, source: nix::Error },
    #[error("{path} is not what it should be: {why}")]
    Suspicious { path: PathBuf, why: String },
    #[error("set recursive mount attributes on {target}: {source}")]
    SetAttr {
        target: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to set MOUNT_ATTR_IDMAP on {path}: {source}{hint}")]
    IdMap {
        path: PathBuf,
        hint: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Destination(#[from] checks::DestinationError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io {
        action,
        path,
        source,
    }
}

fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    mount(source, target, fstype, flags, data).map_err(|e| RootfsError::Mount {
        what: fstype
            .map(str::to_string)
            .or_else(|| source.map(|s| s.display().to_string()))
            .unwrap_or_else(|| format!("{flags:?}")),
        target: target.to_path_buf(),
        source: e,
    })
}

/// Resolves `path` inside `root` the way the container will see it:
/// symlinks are followed relative to `root`, and `..` never climbs above
/// it, so a hostile image cannot point a mount at the host.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, RootfsError> {
    let mut pending: VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(RootfsError::SymlinkLoop {
                        path: path.to_path_buf(),
                    });
                }
                let target = std::fs::read_link(&candidate).map_err(io("read link", &candidate))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push_front(p.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Flags of the mount at `path` that a bind remount must keep: inside a user
/// namespace the kernel refuses to drop them.
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// The mount point `target` (a path below `root`), opened by the kernel
/// inside `root` (see `sys::open_in_root`), and the /proc/self/fd path that
/// names it: mounting onto that path mounts on exactly what was resolved,
/// even if the tree changed since `resolve_in_root` walked it.
fn pin_mount_point(root: &RootDir, target: &Path) -> Result<(OwnedFd, PathBuf), RootfsError> {
    use std::os::fd::{AsFd, AsRawFd};
    let rel = target
        .strip_prefix(&root.path)
        .map_err(|_| RootfsError::Suspicious {
            path: target.to_path_buf(),
            why: format!("not below the container root {}", root.path.display()),
        })?;
    let fd = crate::sys::open_in_root(root.fd.as_fd(), rel)
        .map_err(io("open mount point in the container root", target))?;
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok((fd, proc_path))
}

/// Mounts onto a pinned mount point `at`, naming `shown` (the path the
/// config means) in errors.
fn mount_pinned(
    source: Option<&Path>,
    at: &Path,
    shown: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    do_mount(source, at, fstype, flags, data).map_err(|e| match e {
        RootfsError::Mount { what, source, .. } => RootfsError::Mount {
            what,
            target: shown.to_path_buf(),
            source,
        },
        other => other,
    })
}

fn ensure_dir(path: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(path).map_err(io("create directory", path))
}

fn ensure_file(path: &Path) -> Result<(), RootfsError> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(io("create mount point", path))
}

/// The container's root: its path and a descriptor open on it, under which
/// mount points are resolved.
pub struct RootDir {
    pub path: PathBuf,
    fd: OwnedFd,
}

impl RootDir {
    pub fn open(path: &Path) -> Result<RootDir, RootfsError> {
        Ok(RootDir {
            path: path.to_path_buf(),
            fd: open_dir(path)?,
        })
    }
}

/// What the mounts need to know about the container beyond the mount list.
pub struct MountContext<'a> {
    pub rootfs: &'a RootDir,
    pub cgroup: Option<&'a Cgroup>,
    pub cgroupns: bool,
    pub userns: bool,
    pub netns: bool,
    pub ipcns: bool,
    /// The id-mapped copies made by the runtime, by mount index.
    pub sources: &'a MountSources,
}

/// Sets the propagation of our (new) mount tree and makes the rootfs a
/// mount point of its own, as pivot_root requires.
pub fn prepare_root(rootfs: &Path, propagation: Option<&str>) -> Result<(), RootfsError> {
    let flags = match propagation {
        Some(p) if !p.is_empty() => {
            propagation_flags(p).ok_or_else(|| RootfsError::UnsupportedOption(p.to_string()))?
        }
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    do_mount(None, Path::new("/"), None, flags, None)?;
    if flags.contains(MsFlags::MS_SHARED) {
        make_parent_private(rootfs)?;
    }
    do_mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// pivot_root refuses a new root that is, or whose parent mount is,
/// shared; the rootfs's bind onto itself copies the propagation of the
/// mount the rootfs is on. So that mount (the rootfs itself when it is a
/// mount point, as a snapshot's overlay is) is made private, only in our
/// mount namespace, as runc's rootfsParentMountPrivate does.
fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    let best = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(crate::cgroups::unescape_mountinfo(m)))
        .filter(|m| rootfs.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"));
    do_mount(None, &best, None, MsFlags::MS_PRIVATE, None)
}

/// Performs mount `index` of the config (the caller keeps their order),
/// then applies its recursive attributes.
pub fn mount_one(ctx: &MountContext<'_>, index: usize, m: &Mount) -> Result<(), RootfsError> {
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let typ = m.typ().as_deref().unwrap_or("none");
    // runc's checks, procfs and sysfs on the path as written (never
    // following a symlink there), the others where the path resolves.
    checks::check_special_fs(&ctx.rootfs.path, m, typ)?;
    let target = resolve_in_root(&ctx.rootfs.path, m.destination())?;
    if let Ok(inside) = target.strip_prefix(&ctx.rootfs.path) {
        let bind = opts.bind || typ == "bind";
        checks::check_proc_mount(
            &Path::new("/").join(inside),
            typ,
            bind,
            m.source().as_deref(),
        )?;
    }
    if let Some(tree) = ctx.sources.get(index) {
        let source = m.source().clone().unwrap_or_default();
        idmap::attach(ctx.rootfs, tree, &source, &target, &opts)?;
    } else {
        mount_at(ctx, m, &opts, &target)?;
    }
    attrs::apply(ctx.rootfs, &target, &opts.rec_attr)
}

fn mount_at(
    ctx: &MountContext<'_>,
    m: &Mount,
    opts: &MountOptions,
    target: &Path,
) -> Result<(), RootfsError> {
    // The body below predates the split: it owns its options and target.
    let target = target.to_path_buf();
    let opts = opts.clone();
    let typ = m.typ().as_deref().unwrap_or("none");
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if opts.bind || typ == "bind" {
        let source = m.source().clone().unwrap_or_default();
        return bind_mount(ctx.rootfs, &source, &target, &opts);
    }
    match typ {
        "cgroup" | "cgroup2" => return mount_cgroup(ctx, &target, &opts),
        "sysfs" if ctx.userns && !ctx.netns => {
            // sysfs cannot be mounted in a user namespace without a network
            // namespace of its own: show the host's, read-only, as runc does.
            let mut o = MountOptions {
                recursive: true,
                bind: true,
                ..opts
            };
            o.flags |= MsFlags::MS_RDONLY;
            return bind_mount(ctx.rootfs, Path::new("/sys"), &target, &o);
        }
        "mqueue" if ctx.userns && !ctx.ipcns => {
            let o = MountOptions {
                recursive: true,
                bind: true,
                ..opts
            };
            return bind_mount(ctx.rootfs, Path::new("/dev/mqueue"), &target, &o);
        }
        _ => {}
    }
    ensure_dir(&target)?;
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    let (_pin, at) = pin_mount_point(ctx.rootfs, &target)?;
    if typ == "proc" {
        check_proc_target(&at, &target)?;
    }
    mount_pinned(Some(&source), &at, &target, Some(typ), flags, data)?;
    for p in &opts.propagation {
        do_mount(None, &target, None, *p, None)?;
    }
    Ok(())
}

fn bind_mount(
    root: &RootDir,
    source: &Path,
    target: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let meta = std::fs::metadata(source).map_err(io("bind mount source", source))?;
    if meta.is_dir() {
        ensure_dir(target)?;
    } else {
        ensure_file(target)?;
    }
    let mut flags = MsFlags::MS_BIND;
    if opts.recursive {
        flags |= MsFlags::MS_REC;
    }
    let (pin, at) = pin_mount_point(root, target)?;
    mount_pinned(Some(source), &at, target, None, flags, None)?;
    drop(pin);
    let extra = opts.flags & !(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked_flags(target);
        do_mount(None, target, None, flags, None)?;
    }
    for p in &opts.propagation {
        do_mount(None, target, None, *p, None)?;
    }
    Ok(())
}

/// A cgroup filesystem in the container, showing the container's cgroup.
/// On v1 it is a tmpfs with one directory per hierarchy, each a bind of the
/// container's directory in that hierarchy; on v2 a cgroup2 mount when the
/// container has its own cgroup namespace, else a bind of its directory.
fn mount_cgroup(
    ctx: &MountContext<'_>,
    target: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let Some(cgroup) = ctx.cgroup else {
        return Ok(());
    };
    ensure_dir(target)?;
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    let bind_opts = MountOptions {
        flags,
        bind: true,
        recursive: true,
        ..MountOptions::default()
    };
    match cgroup.hierarchy() {
        Hierarchy::V2 { .. } if ctx.cgroupns => do_mount(
            Some(Path::new("cgroup2")),
            target,
            Some("cgroup2"),
            flags,
            None,
        ),
        Hierarchy::V2 { .. } => bind_mount(ctx.rootfs, &cgroup.dirs()[0], target, &bind_opts),
        Hierarchy::V1 { mounts, .. } => {
            let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            do_mount(
                Some(Path::new("tmpfs")),
                target,
                Some("tmpfs"),
                tmpfs_flags,
                Some("mode=755"),
            )?;
            let rel = cgroup.path().strip_prefix("/").unwrap_or(cgroup.path());
            for m in mounts {
                let Some(name) = m.mountpoint.file_name() else {
                    continue;
                };
                let sub = target.join(name);
                bind_mount(ctx.rootfs, &m.mountpoint.join(rel), &sub, &bind_opts)?;
                let name = name.to_string_lossy();
                if name.contains(',') {
                    for ctrl in name.split(',') {
                        let link = target.join(ctrl);
                        if link.symlink_metadata().is_err() {
                            std::os::unix::fs::symlink(&*name, &link)
                                .map_err(io("symlink", &link))?;
                        }
                    }
                }
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                do_mount(
                    None,
                    target,
                    None,
                    MsFlags::MS_REMOUNT | tmpfs_flags | MsFlags::MS_RDONLY,
                    Some("mode=755"),
                )?;
            }
            Ok(())
        }
    }
}

/// procfs may only be mounted on a real directory of the rootfs: not a
/// symlink (it would have been followed), not something already mounted
/// over by the image's tricks. `at` is the pinned mount point.
fn check_proc_target(at: &Path, target: &Path) -> Result<(), RootfsError> {
    let meta = std::fs::symlink_metadata(at.canonicalize().unwrap_or_else(|_| at.to_path_buf()))
        .map_err(io("stat proc mount point", target))?;
    if !meta.is_dir() {
        return Err(RootfsError::Suspicious {
            path: target.to_path_buf(),
            why: "the proc mount point is not a directory".into(),
        });
    }
    Ok(())
}

/// After pivot: /proc must be procfs before anything is written or masked
/// through it (a fake /proc in the image would take the writes instead).
pub fn check_proc_is_procfs() -> Result<(), RootfsError> {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let proc = Path::new("/proc");
    let st = nix::sys::statfs::statfs(proc).map_err(|e| RootfsError::Io {
        action: "statfs",
        path: proc.into(),
        source: e.into(),
    })?;
    if st.filesystem_type().0 as i64 != PROC_SUPER_MAGIC {
        return Err(RootfsError::Suspicious {
            path: proc.into(),
            why: "it is not a procfs mount".into(),
        });
    }
    Ok(())
}

fn open_dir(path: &Path) -> Result<OwnedFd, RootfsError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map(OwnedFd::from)
        .map_err(io("open", path))
}

/// Makes `rootfs` our root with pivot_root(".", ".") and detaches the old
/// root, so no path leads back to the host.
pub fn pivot_root(rootfs: &Path) -> Result<(), RootfsError> {
    let pivot_err = |source| RootfsError::Pivot {
        root: rootfs.to_path_buf(),
        source,
    };
    let old_root = open_dir(Path::new("/"))?;
    let new_root = open_dir(rootfs)?;
    nix::unistd::fchdir(&new_root).map_err(pivot_err)?;
    nix::unistd::pivot_root(".", ".").map_err(pivot_err)?;
    nix::unistd::fchdir(&old_root).map_err(pivot_err)?;
    // The old root must not propagate its unmount to the host.
    do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(pivot_err)?;
    nix::unistd::chdir("/").map_err(pivot_err)
}

/// `--no-pivot`: move the rootfs over / and chroot into it.
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Pivot {
        root: rootfs.to_path_buf(),
        source,
    };
    nix::unistd::chdir(rootfs).map_err(err)?;
    do_mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
    nix::unistd::chroot(".").map_err(err)?;
    nix::unistd::chdir("/").map_err(err)
}

/// After pivot: hides each path (an empty read-only tmpfs over a
/// directory, /dev/null over a file). Missing paths are skipped.
pub fn mask_paths(paths: &[String]) -> Result<(), RootfsError> {
    let null = Path::new("/dev/null");
    let meta = std::fs::metadata(null).map_err(io("stat", null))?;
    if !meta.file_type().is_char_device() || meta.rdev() != makedev(1, 3) {
        return Err(RootfsError::Suspicious {
            path: null.into(),
            why: "not the 1:3 character device".into(),
        });
    }
    for p in paths {
        let path = crate::spec::in_container_root(p);
        let path = path.as_path();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_dir() {
            do_mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
        } else {
            do_mount(Some(null), path, None, MsFlags::MS_BIND, None)?;
        }
    }
    Ok(())
}

/// After pivot: makes each path read-only. Missing paths are skipped.
pub fn readonly_paths(paths: &[String]) -> Result<(), RootfsError> {
    for p in paths {
        let path = crate::spec::in_container_root(p);
        let path = path.as_path();
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        do_mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC
            | locked_flags(path);
        do_mount(None, path, None, flags, None)?;
    }
    Ok(())
}

/// After pivot: makes / read-only (`root.readonly`).
pub fn readonly_root() -> Result<(), RootfsError> {
    let root = Path::new("/");
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(root);
    do_mount(None, root, None, flags, None)
}

/// After pivot: sets sysctls through the container's /proc/sys.
pub fn set_sysctls<'a>(
    entries: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), RootfsError> {
    for (key, value) in entries {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(io("write sysctl", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/rel/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert!(matches!(
            resolve_in_root(root, Path::new("/loop/x")),
            Err(RootfsError::SymlinkLoop { .. })
        ));
    }
}
