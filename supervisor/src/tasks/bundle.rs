//! A task's bundle: its directory under `<state>/shims/<ns>/<id>/` holds the
//! runtime spec (`config.json`), the root filesystem mount (`rootfs/`) and
//! everything the shim keeps (its socket, pid files, exit records, the
//! container's log).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::{json, Value};

use crate::snapshots::Mount;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("mount the root filesystem ({kind}) on {target}: {source}")]
    Mount {
        kind: String,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("unmount {target}: {source}")]
    Unmount { target: PathBuf, source: nix::Error },
    #[error("the snapshot gives {0} mounts; one is supported")]
    Mounts(usize),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What a task's spec needs beyond the container's: the root at
/// `rootfs` (writable, as Docker and containerd give it) and a cgroup of
/// its own when the spec names none. Returns the spec and whether the
/// process has a terminal.
pub fn task_spec(spec: &str, cgroup: &str) -> Result<(Value, bool), BundleError> {
    let mut spec: Value =
        serde_json::from_str(spec).map_err(|e| BundleError::InvalidSpec(e.to_string()))?;
    let Some(object) = spec.as_object_mut() else {
        return Err(BundleError::InvalidSpec("not a JSON object".into()));
    };
    let root = object.entry("root").or_insert_with(|| json!({}));
    if !root.is_object() {
        return Err(BundleError::InvalidSpec("root is not an object".into()));
    }
    root["path"] = json!("rootfs");
    let linux = object.entry("linux").or_insert_with(|| json!({}));
    let Some(linux) = linux.as_object_mut() else {
        return Err(BundleError::InvalidSpec("linux is not an object".into()));
    };
    let named = linux
        .get("cgroupsPath")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    if !named {
        linux.insert("cgroupsPath".into(), json!(cgroup));
    }
    let terminal = spec
        .pointer("/process/terminal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((spec, terminal))
}

/// Creates the bundle directory `dir` (its parent is made if needed; `dir`
/// itself must not exist) with `config.json` and an empty `rootfs/`.
pub fn write(dir: &Path, spec: &Value) -> Result<(), BundleError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    fs::create_dir(dir).map_err(io_err("create", dir))?;
    let config = dir.join("config.json");
    let bytes = serde_json::to_vec(spec).map_err(|e| BundleError::InvalidSpec(e.to_string()))?;
    fs::write(&config, bytes).map_err(io_err("write", &config))?;
    let rootfs = dir.join("rootfs");
    fs::create_dir(&rootfs).map_err(io_err("create", &rootfs))?;
    Ok(())
}

/// Mounts the snapshot's mount on `<dir>/rootfs`.
pub fn mount_rootfs(dir: &Path, mounts: &[Mount]) -> Result<(), BundleError> {
    let [m] = mounts else {
        return Err(BundleError::Mounts(mounts.len()));
    };
    let target = dir.join("rootfs");
    let fail = |source| BundleError::Mount {
        kind: m.kind.clone(),
        target: target.clone(),
        source,
    };
    if m.kind == "bind" {
        mount(
            Some(m.source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail)?;
        if m.options.iter().any(|o| o == "ro") {
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(e) = mount(None::<&str>, &target, None::<&str>, remount, None::<&str>) {
                let _ = umount2(&target, MntFlags::MNT_DETACH);
                return Err(fail(e));
            }
        }
    } else {
        let data = m.options.join(",");
        mount(
            Some(m.source.as_str()),
            &target,
            Some(m.kind.as_str()),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// Whether /proc/self/mountinfo lists `path` as a mount point.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(target) = path.to_str() else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| unescape_mountinfo(p) == target)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
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

/// Unmounts `<dir>/rootfs` if it is mounted (lazily when busy).
pub fn unmount_rootfs(dir: &Path) -> Result<(), BundleError> {
    let target = dir.join("rootfs");
    while is_mount_point(&target) {
        match umount2(&target, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::Error::EBUSY) => {
                umount2(&target, MntFlags::MNT_DETACH).map_err(|source| BundleError::Unmount {
                    target: target.clone(),
                    source,
                })?;
            }
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => break,
            Err(source) => return Err(BundleError::Unmount { target, source }),
        }
    }
    Ok(())
}

/// Unmounts the root filesystem and removes the bundle directory.
pub fn remove(dir: &Path) -> Result<(), BundleError> {
    unmount_rootfs(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BundleError::Io {
            what: "remove",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_specs_get_a_rootfs_and_a_cgroup() {
        let (spec, terminal) = task_spec(
            r#"{"process":{"terminal":true,"args":["sh"]}}"#,
            "/berth/ns/c1",
        )
        .unwrap();
        assert!(terminal);
        assert_eq!(spec["root"]["path"], "rootfs");
        assert_eq!(spec["linux"]["cgroupsPath"], "/berth/ns/c1");
        let (spec, terminal) = task_spec(
            r#"{"root":{"path":"/elsewhere","readonly":true},"linux":{"cgroupsPath":"/mine"}}"#,
            "/berth/ns/c1",
        )
        .unwrap();
        assert!(!terminal);
        assert_eq!(spec["root"]["path"], "rootfs");
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["linux"]["cgroupsPath"], "/mine");
        assert!(task_spec("[]", "/x").is_err());
        assert!(task_spec(r#"{"linux":3}"#, "/x").is_err());
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/x\\"), r"/x\\");
    }
}
