//! An id-mapped root filesystem, for a container in a user namespace: the
//! lower layers of its overlay are id-mapped mounts (open_tree with
//! OPEN_TREE_CLONE, mount_setattr with MOUNT_ATTR_IDMAP and the user
//! namespace, move_mount onto a directory of the bundle), the overlay is
//! mounted on them and the copies detached again (the overlay keeps its
//! own), as containerd 2.x's mount code does for an overlay with `uidmap`
//! and `gidmap` options. The image's files, owned by 0 on disk, appear
//! owned by the namespace's root on the host and by 0 inside. The
//! writable layer is not mapped: what the container writes is owned by
//! its host ids there, and its top directory is given to the namespace's
//! root (containerd's overlay snapshotter chowns it likewise). A
//! snapshot that is a bind mount (no layers) is id-mapped whole.
//!
//! Needs Linux 5.19 or later (overlayfs on id-mapped layers) and a
//! filesystem that allows id-mapped mounts (ext4, xfs, btrfs, tmpfs …).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::bundle::BundleError;
use crate::snapshots::Mount;

/// The user namespace a root filesystem is id-mapped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsIdmap {
    /// A user namespace file (`/proc/<pid>/ns/user`).
    pub userns: PathBuf,
    /// The host ids of the namespace's root (uid, gid).
    pub root: (u32, u32),
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;

/// The kernel's `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A detached copy of the mount tree at `path`, id-mapped to `userns`.
fn idmapped_copy(path: &Path, userns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let cpath = cstring(path)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree reads the NUL-terminated path, alive for the call,
    // and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, cpath.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads the empty NUL-terminated path and `size`
    // bytes of `attr` (the kernel's layout, four u64), both alive.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Attaches the detached mount `tree` on `target`.
fn attach(tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let ctarget = cstring(target)?;
    // SAFETY: move_mount reads an empty and a NUL-terminated path, both
    // alive for the call, and takes a valid borrowed descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            ctarget.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn idmap_err(path: &Path, e: io::Error) -> BundleError {
    let hint = if e.raw_os_error() == Some(libc::EINVAL) {
        " (this kernel or filesystem cannot make id-mapped mounts)"
    } else {
        ""
    };
    BundleError::Io {
        what: "make an id-mapped mount of",
        path: path.to_path_buf(),
        source: io::Error::new(e.kind(), format!("{e}{hint}")),
    }
}

/// Mounts the snapshot's mount `m` on `target` with its layers id-mapped
/// to `idmap`'s user namespace; `scratch` (a new directory under the
/// bundle) holds the mapped layers until the overlay has them.
pub fn mount_idmapped(
    m: &Mount,
    target: &Path,
    scratch: &Path,
    idmap: &RootfsIdmap,
) -> Result<(), BundleError> {
    let userns = fs::File::open(&idmap.userns).map_err(|source| BundleError::Io {
        what: "open the user namespace",
        path: idmap.userns.clone(),
        source,
    })?;
    if m.kind == "bind" {
        let tree = idmapped_copy(Path::new(&m.source), userns.as_fd())
            .map_err(|e| idmap_err(Path::new(&m.source), e))?;
        attach(tree.as_fd(), target).map_err(|source| BundleError::Io {
            what: "attach the id-mapped root filesystem on",
            path: target.to_path_buf(),
            source,
        })?;
        if m.options.iter().any(|o| o == "ro") {
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(source) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
                let _ = umount2(target, MntFlags::MNT_DETACH);
                return Err(BundleError::Mount {
                    kind: m.kind.clone(),
                    target: target.to_path_buf(),
                    source,
                });
            }
        }
        return Ok(());
    }
    if m.kind != "overlay" {
        return Err(BundleError::InvalidSpec(format!(
            "a root filesystem of type {} cannot be id-mapped",
            m.kind
        )));
    }
    fs::create_dir(scratch).map_err(|source| BundleError::Io {
        what: "create",
        path: scratch.to_path_buf(),
        source,
    })?;
    let mut attached: Vec<PathBuf> = Vec::new();
    let result = mount_overlay(m, target, scratch, &userns, idmap, &mut attached);
    // The overlay holds its own copies of the layers: ours go either way.
    for dir in &attached {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(scratch);
    result
}

fn mount_overlay(
    m: &Mount,
    target: &Path,
    scratch: &Path,
    userns: &fs::File,
    idmap: &RootfsIdmap,
    attached: &mut Vec<PathBuf>,
) -> Result<(), BundleError> {
    let mut options = Vec::new();
    for o in &m.options {
        if let Some(lowers) = o.strip_prefix("lowerdir=") {
            let mut mapped = Vec::new();
            for (i, lower) in lowers.split(':').enumerate() {
                let dir = scratch.join(i.to_string());
                fs::create_dir(&dir).map_err(|source| BundleError::Io {
                    what: "create",
                    path: dir.clone(),
                    source,
                })?;
                let tree = idmapped_copy(Path::new(lower), userns.as_fd())
                    .map_err(|e| idmap_err(Path::new(lower), e))?;
                attach(tree.as_fd(), &dir).map_err(|source| BundleError::Io {
                    what: "attach an id-mapped layer on",
                    path: dir.clone(),
                    source,
                })?;
                attached.push(dir.clone());
                mapped.push(dir.to_string_lossy().into_owned());
            }
            options.push(format!("lowerdir={}", mapped.join(":")));
        } else {
            if let Some(upper) = o.strip_prefix("upperdir=") {
                give_to_root(Path::new(upper), idmap.root)?;
            }
            options.push(o.clone());
        }
    }
    let data = options.join(",");
    mount(
        Some(m.source.as_str()),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| BundleError::Mount {
        kind: format!("overlay on id-mapped layers; {}", m.kind),
        target: target.to_path_buf(),
        source,
    })
}

/// Gives the writable layer's top directory (the container's `/`) to the
/// namespace's root, when it is still the host's root's.
fn give_to_root(upper: &Path, (uid, gid): (u32, u32)) -> Result<(), BundleError> {
    let meta = fs::metadata(upper).map_err(|source| BundleError::Io {
        what: "stat",
        path: upper.to_path_buf(),
        source,
    })?;
    if meta.uid() == 0 && meta.gid() == 0 {
        std::os::unix::fs::chown(upper, Some(uid), Some(gid)).map_err(|source| {
            BundleError::Io {
                what: "chown the writable layer",
                path: upper.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Puts back the mounts' `uidMappings`/`gidMappings` (runtime-spec 1.2;
/// oci-spec's `Mount` has none) from the caller's spec `given` into its
/// normalized form `spec`, by index.
pub fn keep_mount_id_maps(given: &[u8], spec: String) -> Result<String, String> {
    if !given.windows(9).any(|w| w == b"Mappings\"") {
        return Ok(spec);
    }
    let given: serde_json::Value = serde_json::from_slice(given).map_err(|e| e.to_string())?;
    let mut out: serde_json::Value = serde_json::from_str(&spec).map_err(|e| e.to_string())?;
    let mounts = out["mounts"].as_array_mut().into_iter().flatten();
    for (g, m) in given["mounts"].as_array().into_iter().flatten().zip(mounts) {
        for key in ["uidMappings", "gidMappings"] {
            if let Some(v) = g.get(key) {
                m[key] = v.clone();
            }
        }
    }
    serde_json::to_string_pretty(&out).map_err(|e| e.to_string())
}

/// Whether a task's spec puts its process in a user namespace.
pub fn has_userns(spec: &serde_json::Value) -> bool {
    spec.pointer("/linux/namespaces")
        .and_then(|n| n.as_array())
        .is_some_and(|n| n.iter().any(|ns| ns["type"] == "user"))
}

/// Lets the root of a user namespace (an unmapped host id) reach `dir`'s
/// root filesystem: the runtime mounts it from inside the namespace, so
/// `dir` and every directory from `root` (the state directory) down to it
/// get the search bit for others (0711 at least), as containerd opens its
/// state directories to a user namespace. Nothing is listed or readable.
pub fn open_path_to(root: &Path, dir: &Path) -> Result<(), BundleError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(below) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut path = root.to_path_buf();
    let mut paths = vec![path.clone()];
    for part in below.components() {
        path.push(part);
        paths.push(path.clone());
    }
    for p in paths {
        let meta = fs::metadata(&p).map_err(|source| BundleError::Io {
            what: "stat",
            path: p.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o111)).map_err(
                |source| BundleError::Io {
                    what: "open for the user namespace",
                    path: p.clone(),
                    source,
                },
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_id_maps_survive_the_specs_normalization() {
        let given = br#"{"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"mounts":[
            {"destination":"/a","type":"bind","source":"/x","options":["rbind"]},
            {"destination":"/b","type":"bind","source":"/y","options":["rbind"],
             "uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],
             "gidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}]}"#;
        let text = crate::containers::parse_spec(given).unwrap();
        let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(spec["mounts"][0].get("uidMappings").is_none());
        assert_eq!(spec["mounts"][1]["uidMappings"][0]["hostID"], 100000);
        assert_eq!(spec["mounts"][1]["gidMappings"][0]["size"], 65536);
        assert!(has_userns(
            &serde_json::json!({"linux": {"namespaces": [{"type": "user"}]}})
        ));
        assert!(!has_userns(&spec));
    }

    #[test]
    fn the_path_to_a_bundle_gets_the_search_bit() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let dir = root.join("shims/k8s.io/abc");
        fs::create_dir_all(&dir).unwrap();
        for p in [tmp.path(), &root, &dir] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
        }
        open_path_to(&root, &dir).unwrap();
        for p in [root.clone(), root.join("shims"), dir.clone()] {
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o711, 0o711, "{} {mode:o}", p.display());
        }
        // Nothing outside the state directory is touched.
        assert_eq!(
            fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
