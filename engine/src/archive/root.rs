//! A container's root as the container sees it, with its volumes and bind
//! mounts, held as a directory descriptor for the length of one copy.
//!
//! A running (or paused) container's root is `/proc/<pid>/root` of its
//! init process, opened once. A created or stopped one has no mounts, so
//! its snapshot (from the supervisor's `Snapshots.Mounts`) and the bind
//! mounts of its OCI spec are mounted by a thread of ours in a mount
//! namespace of its own on an empty directory under the engine's exec root:
//! the host never sees them, and when the copy ends the thread ends, its
//! namespace goes, and the kernel takes every mount with it, on errors too.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use serde_json::Value;

use super::{fs, paths, ArchiveError};
use crate::containers::Container;
use crate::Engine;

/// A mount of the container other than its root: where, and whether it is
/// writable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    pub destination: String,
    pub writable: bool,
}

/// An open container root.
pub struct ContainerRoot {
    fd: OwnedFd,
    /// The container's bind mounts (volumes), from its spec.
    pub mounts: Vec<MountPoint>,
    pub readonly_rootfs: bool,
    /// Ends the private namespace of a stopped container's mounts when
    /// dropped.
    _namespace: Option<PrivateMounts>,
}

impl ContainerRoot {
    /// A root on a plain directory, for tests.
    #[cfg(test)]
    pub fn from_fd(fd: OwnedFd, mounts: Vec<MountPoint>, readonly_rootfs: bool) -> ContainerRoot {
        ContainerRoot {
            fd,
            mounts,
            readonly_rootfs,
            _namespace: None,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether writing at `path` (absolute, clean) is refused: the mount
    /// holding it is read-only. `Err` names the read-only volume; `Ok(true)`
    /// when the root filesystem is read-only.
    pub fn read_only_at(&self, path: &str) -> Result<bool, String> {
        let holding = self
            .mounts
            .iter()
            .filter(|m| path == m.destination || path.starts_with(&format!("{}/", m.destination)))
            .max_by_key(|m| m.destination.len());
        match holding {
            Some(m) if !m.writable => Err(m.destination.clone()),
            Some(_) => Ok(false),
            None => Ok(self.readonly_rootfs),
        }
    }
}

/// Paths under these are the runtime's own mounts, not the container's
/// volumes, and are not mounted for a stopped container.
const RUNTIME_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The bind mounts of an OCI spec: destination, source, read-only.
fn bind_mounts(spec: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let options: Vec<&str> = m["options"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let is_bind = m["type"].as_str() == Some("bind")
            || options.iter().any(|o| *o == "bind" || *o == "rbind");
        if !is_bind {
            continue;
        }
        let dest = paths::clean(m["destination"].as_str().unwrap_or_default());
        if RUNTIME_DIRS
            .iter()
            .any(|d| dest == *d || dest.starts_with(&format!("{d}/")))
        {
            continue;
        }
        let source = m["source"].as_str().unwrap_or_default().to_string();
        out.push((dest, source, options.contains(&"ro")));
    }
    out
}

/// Opens the root of `c`, running or not.
pub async fn open(engine: &Engine, c: &Container) -> Result<ContainerRoot, ArchiveError> {
    let backend = |what: &str| {
        let what = format!("{what} of {}", c.id);
        move |source| ArchiveError::Backend { what, source }
    };
    let sc = engine
        .supervisor
        .get_container(&c.id)
        .await
        .map_err(backend("container"))?;
    let spec: Value = serde_json::from_slice(&sc.spec).unwrap_or(Value::Null);
    let binds = bind_mounts(&spec);
    let mounts = binds
        .iter()
        .map(|(d, _, ro)| MountPoint {
            destination: d.clone(),
            writable: !ro,
        })
        .collect();
    let record = c.record();
    let readonly_rootfs = record.host_config.readonly_rootfs;
    if record.state.status.is_running() && record.state.pid > 0 {
        let proc_root = format!("/proc/{}/root", record.state.pid);
        let opened = nix::fcntl::open(
            proc_root.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        // The pid was the container's when we opened it only if the
        // container still runs with it now; else it has stopped meanwhile
        // and its snapshot is mounted below.
        let now = c.record().state;
        if let (Ok(fd), true) = (
            opened,
            now.status.is_running() && now.pid == record.state.pid,
        ) {
            return Ok(ContainerRoot {
                fd,
                mounts,
                readonly_rootfs,
                _namespace: None,
            });
        }
    }
    let snapshot = engine
        .supervisor
        .snapshot_mounts(&sc.snapshot_key)
        .await
        .map_err(backend("snapshot mounts"))?;
    let [rootfs] = snapshot.as_slice() else {
        return Err(ArchiveError::Snapshot(format!(
            "{} mounts for the snapshot of {}, want 1",
            snapshot.len(),
            c.id
        )));
    };
    let rootfs = rootfs.clone();
    let dir = engine.paths.exec_root.join("archive").join(format!(
        "{}-{}",
        &c.id[..12.min(c.id.len())],
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|source| ArchiveError::Io {
        what: "create mount point",
        source,
    })?;
    let (namespace, fd) =
        tokio::task::spawn_blocking(move || PrivateMounts::new(dir, rootfs, binds))
            .await
            .map_err(|e| ArchiveError::Snapshot(format!("mount thread: {e}")))??;
    Ok(ContainerRoot {
        fd,
        mounts,
        readonly_rootfs,
        _namespace: Some(namespace),
    })
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A thread in a mount namespace of its own holding a stopped container's
/// mounts; dropping it ends the thread, and with it the mounts.
struct PrivateMounts {
    dir: PathBuf,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PrivateMounts {
    fn new(
        dir: PathBuf,
        rootfs: berth_proto::types::v1::Mount,
        binds: Vec<(String, String, bool)>,
    ) -> Result<(PrivateMounts, OwnedFd), ArchiveError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let target = dir.clone();
        let thread = std::thread::Builder::new()
            .name("archive-mounts".into())
            .spawn(move || {
                let result = mount_all(&target, &rootfs, &binds);
                let ok = result.is_ok();
                let _ = ready_tx.send(result);
                if ok {
                    // Wait for the copy to end: the sender is dropped then.
                    let _ = stop_rx.recv();
                }
            })
            .map_err(|source| ArchiveError::Io {
                what: "start mount thread",
                source,
            })?;
        let mut holder = PrivateMounts {
            dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(fd)) => Ok((holder, fd)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                holder.stop.take();
                Err(ArchiveError::Snapshot("mount thread ended".into()))
            }
        }
    }
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// In the calling thread: a new mount namespace, private, with the
/// snapshot on `target` and the binds over it; the root's descriptor.
fn mount_all(
    target: &std::path::Path,
    rootfs: &berth_proto::types::v1::Mount,
    binds: &[(String, String, bool)],
) -> Result<OwnedFd, ArchiveError> {
    let fail = |what: &'static str| move |source: Errno| ArchiveError::Mount { what, source };
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).map_err(fail("unshare"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("make mounts private"))?;
    if rootfs.r#type == "bind" {
        mount(
            Some(rootfs.source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail("bind the snapshot"))?;
    } else {
        let data = rootfs.options.join(",");
        mount(
            Some(rootfs.source.as_str()),
            target,
            Some(rootfs.r#type.as_str()),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(fail("mount the snapshot"))?;
    }
    let root = nix::fcntl::open(
        target,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open the snapshot"))?;
    for (dest, source, ro) in binds {
        let source_is_dir = std::fs::metadata(source)
            .map(|m| m.is_dir())
            .unwrap_or(true);
        make_mount_point(root.as_fd(), dest, source_is_dir).map_err(fail("make a mount point"))?;
        let at = fs::open_in_root(root.as_fd(), dest, OFlag::O_PATH)
            .map_err(fail("open a mount point"))?;
        mount(
            Some(source.as_str()),
            fd_path(&at).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail("bind a volume"))?;
        if *ro {
            // The mount just made, through a path that crosses into it.
            let on = fs::open_in_root(root.as_fd(), dest, OFlag::O_PATH)
                .map_err(fail("open a volume"))?;
            mount(
                None::<&str>,
                fd_path(&on).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(fail("make a volume read-only"))?;
        }
    }
    Ok(root)
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Makes the missing directories of `dest` in the root, and its last
/// element (a directory, or an empty file for a file's bind), as the
/// runtime does at start.
fn make_mount_point(root: BorrowedFd<'_>, dest: &str, dir: bool) -> Result<(), Errno> {
    let Some((parent, name)) = paths::parent_and_name(dest) else {
        return Ok(());
    };
    match fs::open_in_root(root, dest, OFlag::O_PATH) {
        Ok(_) => return Ok(()),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    make_mount_point(root, parent, true)?;
    let p = fs::open_dir(root, parent)?;
    let made = if dir {
        nix::sys::stat::mkdirat(p.as_fd(), name, Mode::from_bits_truncate(0o755))
    } else {
        fs::open_child(
            p.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
        )
        .map(drop)
    };
    match made {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binds_are_the_volumes() {
        let spec = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": []},
            {"destination": "/dev/shm", "type": "bind", "source": "/x/shm", "options": ["rbind"]},
            {"destination": "/data", "type": "bind", "source": "/h/d", "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/h/hosts", "options": ["rbind", "rw"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []},
        ]});
        assert_eq!(
            bind_mounts(&spec),
            vec![
                ("/data".to_string(), "/h/d".to_string(), true),
                ("/etc/hosts".to_string(), "/h/hosts".to_string(), false),
            ]
        );
    }
}
