//! A snapshot seen as a container's root filesystem: what it changed
//! against its parent (`docker diff`, [`changes`]), a tar of the whole
//! of it, its layers merged (`docker export`, [`mount_view`] then
//! [`write_tar`]), Docker's init layer, the mount points added to an
//! active snapshot before a container's goes on it ([`add_paths`]), and
//! the users its /etc/passwd names ([`resolve_user`]).
//!
//! The tar is read from a read-only overlay of the snapshot's own
//! directory over its parents' (a snapshot without parents is read where
//! it is, unmounted), mounted under `<state>/views/` for the time
//! of the export, whether or not a task runs on the snapshot, and
//! unmounted when the [`View`] is dropped, after an error too. The
//! container's own mounts (proc, binds) are not in it, as in Docker's.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::archive::{self, ArchiveError, Change, NewPath};
use crate::containers::{Accounts, ContainerError, ResolvedUser};
use crate::images::Images;
use crate::metadata::MetadataError;
use crate::metadata::SnapshotKind;
use crate::snapshots::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A user that does not parse or is not in the snapshot's accounts.
    #[error(transparent)]
    User(#[from] ContainerError),
    /// Reading the snapshot's files (or writing the tar) failed.
    #[error("snapshot {key:?}: {source}")]
    Archive { key: String, source: ArchiveError },
    #[error("invalid path {0:?}: want an absolute path without '.' or '..'")]
    InvalidPath(PathBuf),
    #[error("symlink {0:?} needs a target")]
    NoTarget(PathBuf),
    #[error("make mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: io::Error },
    #[error("mount a read-only view of snapshot {key:?} on {target}: {source}")]
    Mount {
        key: String,
        target: PathBuf,
        source: nix::Error,
    },
}

/// The directories of snapshot `key`, its own first, then its parents'.
fn layers(images: &Images, ns: &str, key: &str) -> Result<Vec<PathBuf>, RootfsError> {
    let rx = images.meta.read()?;
    let record = images.snapshots.get(&rx, ns, key)?;
    let mut dirs = vec![images.snapshots.fs(record.id)];
    dirs.extend(images.snapshots.lowers(&rx, ns, record.parent.as_deref())?);
    Ok(dirs)
}

/// What snapshot `key` changed against its parents, in `docker diff`'s
/// order and terms (see `archive::list_changes`).
pub fn changes(images: &Images, ns: &str, key: &str) -> Result<Vec<Change>, RootfsError> {
    let dirs = layers(images, ns, key)?;
    archive::list_changes(&dirs[0], &dirs[1..]).map_err(|source| RootfsError::Archive {
        key: key.to_string(),
        source,
    })
}

/// Adds `paths` to the active snapshot `key` where its parents have
/// nothing (see `archive::add_paths`); the paths added.
pub fn add_paths(
    images: &Images,
    ns: &str,
    key: &str,
    paths: &[(PathBuf, NewPath)],
) -> Result<Vec<PathBuf>, RootfsError> {
    if let Some((bad, _)) = paths.iter().find(|(p, _)| archive::path_names(p).is_none()) {
        return Err(RootfsError::InvalidPath(bad.clone()));
    }
    if let Some((bad, _)) = paths.iter().find(
        |(_, what)| matches!(what, NewPath::Symlink { target } if target.as_os_str().is_empty()),
    ) {
        return Err(RootfsError::NoTarget(bad.clone()));
    }
    {
        let rx = images.meta.read()?;
        if images.snapshots.get(&rx, ns, key)?.kind != SnapshotKind::Active {
            return Err(SnapshotError::NotActive(key.to_string()).into());
        }
    }
    let dirs = layers(images, ns, key)?;
    archive::add_paths(&dirs[0], &dirs[1..], paths).map_err(|source| RootfsError::Archive {
        key: key.to_string(),
        source,
    })
}

/// Resolves `user[:group]` against /etc/passwd and /etc/group as snapshot
/// `key` shows them (its own layer over its parents'), as Docker does for
/// a container's User and an exec's `-u`; empty means root (uid 0, with
/// the groups /etc/group gives root, as Docker's).
pub fn resolve_user(
    images: &Images,
    ns: &str,
    key: &str,
    user: &str,
) -> Result<ResolvedUser, RootfsError> {
    let dirs = layers(images, ns, key)?;
    let accounts = Accounts::read(&dirs)?;
    Ok(accounts.resolve(if user.is_empty() { "0" } else { user })?)
}

/// A snapshot's merged filesystem, read-only; unmounted when dropped.
#[derive(Debug)]
pub struct View {
    key: String,
    root: PathBuf,
    /// Whether `root` is a mount of ours (else the snapshot's directory).
    mounted: bool,
}

impl View {
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if let Err(e) = unmount(&self.root) {
            tracing::warn!(snapshot = %self.key, path = %self.root.display(), error = %e, "unmount a snapshot view");
        }
    }
}

fn unmount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        // Busy (a reader still in it): detached, gone when it leaves.
        Err(_) => umount2(target, MntFlags::MNT_DETACH)?,
    }
    fs::remove_dir(target)
}

/// Mount points are unique within the process; the pid keeps two
/// supervisors on one state directory apart.
static NEXT_VIEW: AtomicU64 = AtomicU64::new(0);

/// Mounts a read-only view of snapshot `key` (any kind) under `views`.
pub fn mount_view(images: &Images, views: &Path, ns: &str, key: &str) -> Result<View, RootfsError> {
    let dirs = layers(images, ns, key)?;
    if dirs.len() == 1 {
        return Ok(View {
            key: key.to_string(),
            root: dirs[0].clone(),
            mounted: false,
        });
    }
    let target = views.join(format!(
        "{}-{}",
        std::process::id(),
        NEXT_VIEW.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&target).map_err(|source| RootfsError::MountPoint {
        path: target.clone(),
        source,
    })?;
    let lowers: Vec<String> = dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    // No upper directory: overlay is read-only. index=off, as the
    // container's own mount has: a running container's upper directory
    // may be a lower here (overlay warns, and reads it fine).
    let options = format!("index=off,lowerdir={}", lowers.join(":"));
    let mounted = mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(options.as_str()),
    );
    if let Err(source) = mounted {
        let _ = fs::remove_dir(&target);
        return Err(RootfsError::Mount {
            key: key.to_string(),
            target,
            source,
        });
    }
    Ok(View {
        key: key.to_string(),
        root: target,
        mounted: true,
    })
}

/// Writes the view's files as an uncompressed tar into `out`, as
/// `docker export` does: every file, directory, link and device, with
/// owners, modes, times and xattrs (sockets skipped).
pub fn write_tar(view: &View, out: impl Write) -> Result<(), RootfsError> {
    archive::write_diff(view.root(), out).map_err(|source| RootfsError::Archive {
        key: view.key.clone(),
        source,
    })?;
    Ok(())
}

/// Unmounts and removes the views a previous supervisor left (it was
/// killed during an export).
pub fn remove_views(views: &Path) {
    let Ok(entries) = fs::read_dir(views) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(e) = unmount(&path) {
            tracing::warn!(path = %path.display(), error = %e, "remove a leftover snapshot view");
        }
    }
}

/// Cuts what is written into chunks of at most `size` bytes, each handed
/// to `send` (a stream to a client); the last one at `flush`.
pub struct ChunkWriter<F: FnMut(Vec<u8>) -> io::Result<()>> {
    buf: Vec<u8>,
    size: usize,
    send: F,
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> ChunkWriter<F> {
    pub fn new(size: usize, send: F) -> Self {
        ChunkWriter {
            buf: Vec::with_capacity(size),
            size: size.max(1),
            send,
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(self.size));
        (self.send)(chunk)
    }
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> Write for ChunkWriter<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.size {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_bounded_and_all_sent() {
        let mut got: Vec<Vec<u8>> = Vec::new();
        {
            let mut w = ChunkWriter::new(4, |c| {
                got.push(c);
                Ok(())
            });
            w.write_all(b"0123456789").unwrap();
            w.flush().unwrap();
            w.flush().unwrap();
        }
        assert_eq!(
            got,
            vec![b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]
        );
        let mut refused = ChunkWriter::new(2, |_| Err(io::Error::other("gone")));
        assert!(refused.write_all(b"abc").is_err());
    }

    #[test]
    fn views_of_a_stack_are_mounted_and_unmounted() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts overlayfs: run it as root"
        );
        let (dir, images) = crate::testing::temp_images();
        let meta = &images.meta;
        let snaps = &images.snapshots;
        use crate::metadata::SnapshotKind;
        snaps
            .prepare(
                meta,
                "ns",
                "base-a",
                None,
                SnapshotKind::Active,
                Default::default(),
            )
            .unwrap();
        let base = snaps.get(&meta.read().unwrap(), "ns", "base-a").unwrap();
        fs::write(snaps.fs(base.id).join("kept"), "k").unwrap();
        fs::write(snaps.fs(base.id).join("gone"), "g").unwrap();
        snaps
            .commit(meta, "ns", "base", "base-a", Default::default())
            .unwrap();
        snaps
            .prepare(
                meta,
                "ns",
                "c1",
                Some("base"),
                SnapshotKind::Active,
                Default::default(),
            )
            .unwrap();
        let c1 = snaps.get(&meta.read().unwrap(), "ns", "c1").unwrap();
        fs::write(snaps.fs(c1.id).join("new"), "n").unwrap();
        nix::sys::stat::mknod(
            &snaps.fs(c1.id).join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();

        let views = dir.path().join("views");
        let view = mount_view(&images, &views, "ns", "c1").unwrap();
        let root = view.root().to_path_buf();
        assert_eq!(fs::read_to_string(root.join("kept")).unwrap(), "k");
        assert!(!root.join("gone").exists());
        let mut tar = Vec::new();
        write_tar(&view, &mut tar).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec!["kept", "new"]);
        drop(view);
        assert!(!root.exists(), "the view's mount point is left");
        // Init layer paths go only where the parents have nothing.
        let added = add_paths(
            &images,
            "ns",
            "c1",
            &[
                (PathBuf::from("/kept"), NewPath::File),
                (PathBuf::from("/etc/hosts"), NewPath::File),
            ],
        )
        .unwrap();
        assert_eq!(added, vec![PathBuf::from("/etc/hosts")]);
        fs::remove_dir_all(snaps.fs(c1.id).join("etc")).unwrap();
        assert!(matches!(
            add_paths(&images, "ns", "base", &[]),
            Err(RootfsError::Snapshot(SnapshotError::NotActive(_)))
        ));
        assert!(matches!(
            add_paths(
                &images,
                "ns",
                "c1",
                &[(PathBuf::from("etc"), NewPath::File)]
            ),
            Err(RootfsError::InvalidPath(_))
        ));
        // Users come from the snapshot's own layer first.
        fs::create_dir_all(snaps.fs(c1.id).join("etc")).unwrap();
        fs::write(
            snaps.fs(c1.id).join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(snaps.fs(c1.id).join("etc/group"), "wheel:x:10:root,web\n").unwrap();
        let web = resolve_user(&images, "ns", "c1", "web").unwrap();
        assert_eq!((web.uid, web.gid, web.additional_gids), (33, 44, vec![10]));
        let root = resolve_user(&images, "ns", "c1", "").unwrap();
        assert_eq!((root.uid, root.gid, root.additional_gids), (0, 0, vec![10]));
        assert!(matches!(
            resolve_user(&images, "ns", "base", "web"),
            Err(RootfsError::User(ContainerError::UserNotFound { .. }))
        ));
        fs::remove_dir_all(snaps.fs(c1.id).join("etc")).unwrap();
        let listed: Vec<String> = changes(&images, "ns", "c1")
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect();
        assert_eq!(listed, vec!["D /gone", "A /new"]);
        // A snapshot without parents is read where it is.
        let base_view = mount_view(&images, &views, "ns", "base").unwrap();
        assert_eq!(base_view.root(), snaps.fs(base.id));
        assert!(matches!(
            mount_view(&images, &views, "ns", "missing"),
            Err(RootfsError::Snapshot(SnapshotError::NotFound(_)))
        ));
    }
}
