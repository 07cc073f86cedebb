//! A pod's network namespace, made by the CRI before the pause process
//! starts and bind-mounted on a file under the supervisor's state
//! directory (`<state>/cri/netns/<sandbox id>`), so it outlives the pause
//! process, the CNI plugins can be given its path, and a restarted
//! supervisor still finds it — as containerd pins its pods' namespaces.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("create {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("make or enter a network namespace: {0}")]
    Unshare(nix::Error),
    #[error("bring up lo in the new network namespace: {0}")]
    Loopback(io::Error),
    #[error("bind-mount the network namespace on {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("unmount the network namespace {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("the thread making the network namespace failed")]
    Thread,
}

/// Makes a new network namespace with `lo` up and pins it on `path` (a
/// new file). Nothing is left when it fails.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    pin_with(path, None)
}

/// Pins the network namespace of process `pid` (made with it, as a pod
/// in its own user namespace has) on `path` (a new file), with `lo` up.
/// Nothing is left when it fails.
pub fn pin(pid: u32, path: &Path) -> Result<(), NetnsError> {
    pin_with(path, Some(pid))
}

fn pin_with(path: &Path, pid: Option<u32>) -> Result<(), NetnsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| NetnsError::File {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|source| NetnsError::File {
            path: path.to_path_buf(),
            source,
        })?;
    let target = path.to_path_buf();
    // A thread of its own enters the namespace (unshare and setns affect
    // only the calling thread's network namespace) and ends with it pinned.
    let made = std::thread::spawn(move || -> Result<(), NetnsError> {
        match pid {
            None => nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?,
            Some(pid) => {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| {
                    NetnsError::Unshare(nix::Error::from_raw(e.raw_os_error().unwrap_or(0)))
                })?;
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
            }
        }
        loopback_up().map_err(NetnsError::Loopback)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetnsError::Mount {
            path: target.clone(),
            source,
        })
    })
    .join()
    .unwrap_or(Err(NetnsError::Thread));
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and removes a pinned namespace; a missing one is no error.
/// The kernel frees the namespace once nothing else holds it.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Unmount {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is a pinned network namespace (a mount of an nsfs file).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor this function just opened and owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, b) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *b as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming an interface, which
    // SIOCGIFFLAGS reads and fills; `raw` is an open socket.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_pinned_with_lo_up_and_removed() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test makes network namespaces: run it as root");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netns/one");
        create(&path).unwrap();
        assert!(is_pinned(&path));
        // A second namespace on the same path is refused, leaving the first.
        assert!(create(&path).is_err());
        assert!(is_pinned(&path));
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args([
                "cat",
                "/sys/class/net/lo/operstate",
                "/sys/class/net/lo/flags",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // lo's flags have IFF_UP (0x1).
        let flags = text.lines().nth(1).unwrap_or_default();
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & 1, 1, "{text}");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
