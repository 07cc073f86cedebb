//! Device nodes of the container: the default set and the config's, made
//! in the new root unless /dev is bound from the host.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::{
    ensure_dir, ensure_file, io, mount_pinned, pin_mount_point, resolve_in_root, RootDir,
    RootfsError,
};

/// Whether the config bind-mounts the host's /dev (then nodes are not made).
pub fn binds_host_dev(mounts: &[Mount]) -> bool {
    mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    })
}

const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Creates the default device nodes and the config's, then the usual /dev
/// links. In a user namespace nodes cannot be made: the host's are bound.
pub fn create_devices(
    rootfs: &Path,
    devices: &[LinuxDevice],
    userns: bool,
    has_devpts: bool,
) -> Result<(), RootfsError> {
    let old = nix::sys::stat::umask(Mode::empty());
    let result = (|| {
        for (path, major, minor) in DEFAULT_DEVICES {
            if devices.iter().any(|d| d.path() == Path::new(path)) {
                continue;
            }
            make_node(
                rootfs,
                Path::new(path),
                SFlag::S_IFCHR,
                major,
                minor,
                0o666,
                0,
                0,
                userns,
            )?;
        }
        for d in devices {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                LinuxDeviceType::A => {
                    return Err(RootfsError::Suspicious {
                        path: d.path().clone(),
                        why: "device type 'a' cannot be created".into(),
                    })
                }
            };
            let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
            make_node(
                rootfs,
                d.path(),
                kind,
                d.major(),
                d.minor(),
                mode,
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
                userns,
            )?;
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    result?;
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    for (target, link) in links {
        let at = resolve_in_root(rootfs, Path::new(link))?;
        if at.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, &at).map_err(io("symlink", &at))?;
        }
    }
    if has_devpts {
        let ptmx = resolve_in_root(rootfs, Path::new("/dev/ptmx"))?;
        if ptmx.symlink_metadata().is_ok() {
            std::fs::remove_file(&ptmx).map_err(io("remove", &ptmx))?;
        }
        std::os::unix::fs::symlink("pts/ptmx", &ptmx).map_err(io("symlink", &ptmx))?;
    }
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "a device node's path, kind, numbers, mode and owner, and whether in a user namespace"
)]
fn make_node(
    rootfs: &Path,
    path: &Path,
    kind: SFlag,
    major: i64,
    minor: i64,
    mode: u32,
    uid: u32,
    gid: u32,
    userns: bool,
) -> Result<(), RootfsError> {
    let target = resolve_in_root(rootfs, path)?;
    if let Some(parent) = target.parent() {
        ensure_dir(parent)?;
    }
    let dev = makedev(major as u64, minor as u64);
    if let Ok(meta) = target.symlink_metadata() {
        let same = meta.rdev() == dev
            && ((kind == SFlag::S_IFCHR && meta.file_type().is_char_device())
                || (kind == SFlag::S_IFBLK && meta.file_type().is_block_device())
                || (kind == SFlag::S_IFIFO && meta.file_type().is_fifo()));
        if same {
            return Ok(());
        }
        std::fs::remove_file(&target).map_err(io("remove", &target))?;
    }
    if userns {
        ensure_file(&target)?;
        let (_pin, at) = pin_mount_point(&RootDir::open(rootfs)?, &target)?;
        return mount_pinned(Some(path), &at, &target, None, MsFlags::MS_BIND, None);
    }
    mknod(&target, kind, Mode::from_bits_truncate(mode), dev).map_err(|source| {
        RootfsError::Device {
            path: path.to_path_buf(),
            source,
        }
    })?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &target))?;
    nix::unistd::chown(&target, Some(uid.into()), Some(gid.into())).map_err(|source| {
        RootfsError::Device {
            path: path.to_path_buf(),
            source,
        }
    })
}
