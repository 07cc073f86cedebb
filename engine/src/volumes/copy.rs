//! Copy-up: the image's content at a volume's destination copied into the
//! new, empty volume, owners, modes, times, symlinks, device nodes and hard
//! links kept, as Docker does. The image is read through a read-only mount
//! of what the supervisor's `Snapshots.Mounts` returns for the container's
//! snapshot (its layers, without its writable upper directory), made on a
//! scratch directory of the engine's and unmounted after.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use berth_proto::types::v1::Mount;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use super::{io, Result, VolumeError};

/// Whether `dir` is a directory with nothing in it.
pub fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Mounts the snapshot read-only on `scratch`, copies each destination's
/// content into its volume directory, unmounts.
pub fn from_snapshot(
    mounts: &[Mount],
    scratch: &Path,
    targets: &[(String, PathBuf)],
) -> Result<()> {
    std::fs::create_dir_all(scratch).map_err(io("create directory", scratch))?;
    let mounted = mount_read_only(mounts, scratch);
    let result = mounted.and_then(|()| {
        for (dest, data) in targets {
            copy_destination(scratch, dest, data)?;
        }
        Ok(())
    });
    let _ = nix::mount::umount2(scratch, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(scratch);
    result
}

/// The snapshot's layers mounted read-only: an overlay of its lower
/// directories (its upper one, holding only what the container wrote,
/// on top), or a bind of its single directory.
fn mount_read_only(mounts: &[Mount], target: &Path) -> Result<()> {
    let fail = |e: nix::Error| VolumeError::Mount(format!("mount the image for copy-up: {e}"));
    let Some(m) = mounts.first() else {
        return Err(VolumeError::Mount(
            "the container's snapshot has no mounts to read the image from".into(),
        ));
    };
    let mut layers: Vec<String> = Vec::new();
    for opt in &m.options {
        if let Some(upper) = opt.strip_prefix("upperdir=") {
            layers.insert(0, upper.to_string());
        } else if let Some(lower) = opt.strip_prefix("lowerdir=") {
            layers.extend(lower.split(':').map(String::from));
        }
    }
    if m.r#type == "overlay" && layers.len() >= 2 {
        let data = format!("lowerdir={}", layers.join(":"));
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(data.as_str()),
        )
        .map_err(fail)
    } else {
        let source = layers.first().cloned().unwrap_or_else(|| m.source.clone());
        nix::mount::mount(
            Some(source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail)?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        nix::mount::mount(None::<&str>, target, None::<&str>, ro, None::<&str>).map_err(fail)
    }
}

/// Copies `<root><dest>` into `data` when it is a directory reached without
/// a symlink (a symlink could lead out of the image).
fn copy_destination(root: &Path, dest: &str, data: &Path) -> Result<()> {
    let mut src = root.to_path_buf();
    for c in Path::new(dest).components() {
        if let Component::Normal(part) = c {
            src.push(part);
            match src.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                _ => return Ok(()),
            }
        }
    }
    let meta = src.symlink_metadata().map_err(io("stat", &src))?;
    let mut links = HashMap::new();
    copy_tree(&src, data, &mut links)?;
    set_owner_mode_times(data, &meta)
}

fn copy_tree(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(src).map_err(io("read directory", src))?;
    for entry in entries {
        let entry = entry.map_err(io("read directory", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = from.symlink_metadata().map_err(io("stat", &from))?;
        let kind = meta.file_type();
        if !kind.is_dir() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, &to).map_err(io("link", &to))?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        if kind.is_dir() {
            std::fs::create_dir(&to).map_err(io("create directory", &to))?;
            copy_tree(&from, &to, links)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(io("read link", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io("create symlink", &to))?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to).map_err(io("copy", &to))?;
        } else {
            let sflag = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            let mode = Mode::from_bits_truncate(meta.mode() & 0o7777);
            nix::sys::stat::mknod(&to, sflag, mode, meta.rdev())
                .map_err(|e| io("create node", &to)(e.into()))?;
        }
        set_owner_mode_times(&to, &meta)?;
    }
    Ok(())
}

fn set_owner_mode_times(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(io("change owner", path))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io("change mode", path))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io("set times", path)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_copy_with_links_and_modes() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir(s.join("d")).unwrap();
        std::fs::write(s.join("d/f"), b"hello").unwrap();
        std::fs::set_permissions(s.join("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(s.join("d/f"), s.join("g")).unwrap();
        std::os::unix::fs::symlink("d/f", s.join("l")).unwrap();
        let mut links = HashMap::new();
        copy_tree(s, dst.path(), &mut links).unwrap();
        let d = dst.path();
        assert_eq!(std::fs::read(d.join("d/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::metadata(d.join("d/f")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::metadata(d.join("g")).unwrap().ino(),
            std::fs::metadata(d.join("d/f")).unwrap().ino()
        );
        assert_eq!(std::fs::read_link(d.join("l")).unwrap(), Path::new("d/f"));
        assert!(!is_empty_dir(d));
    }

    #[test]
    fn symlinked_destinations_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("data")).unwrap();
        copy_destination(root.path(), "/data", data.path()).unwrap();
        assert!(is_empty_dir(data.path()));
    }
}
