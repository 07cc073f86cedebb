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
    let filled = (|| {
        let config = dir.join("config.json");
        let bytes =
            serde_json::to_vec(spec).map_err(|e| BundleError::InvalidSpec(e.to_string()))?;
        fs::write(&config, bytes).map_err(io_err("write", &config))?;
        let rootfs = dir.join("rootfs");
        fs::create_dir(&rootfs).map_err(io_err("create", &rootfs))
    })();
    if filled.is_err() {
        // Made here and holding nothing mounted yet.
        let _ = fs::remove_dir_all(dir);
    }
    filled
}

/// Mounts the snapshot's mount on `<dir>/rootfs`, its layers id-mapped
/// when `idmap` names a user namespace.
pub fn mount_rootfs(
    dir: &Path,
    mounts: &[Mount],
    idmap: Option<&super::idmap::RootfsIdmap>,
) -> Result<(), BundleError> {
    let [m] = mounts else {
        return Err(BundleError::Mounts(mounts.len()));
    };
    let target = dir.join("rootfs");
    if let Some(idmap) = idmap {
        return super::idmap::mount_idmapped(m, &target, &dir.join("idmapped-layers"), idmap);
    }
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
        let mounted = mount(
            Some(m.source.as_str()),
            &target,
            Some(m.kind.as_str()),
            MsFlags::empty(),
            Some(data.as_str()),
        );
        match mounted {
            // A kernel before 5.10 has no `volatile`: a plain overlay then.
            Err(nix::Error::EINVAL) if m.options.iter().any(|o| o == "volatile") => {
                let plain: Vec<&str> = m
                    .options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| *o != "volatile")
                    .collect();
                mount(
                    Some(m.source.as_str()),
                    &target,
                    Some(m.kind.as_str()),
                    MsFlags::empty(),
                    Some(plain.join(",").as_str()),
                )
                .map_err(fail)?;
            }
            other => other.map_err(fail)?,
        }
    }
    Ok(())
}

/// The mounts with overlayfs's `volatile` added to a writable overlay
/// (one with an upper directory); see `CreateOptions::volatile_rootfs`.
pub fn volatile(mut mounts: Vec<Mount>) -> Vec<Mount> {
    for m in &mut mounts {
        let writable = m.options.iter().any(|o| o.starts_with("upperdir="));
        if m.kind == "overlay" && writable && !m.options.iter().any(|o| o == "volatile") {
            m.options.push("volatile".to_string());
        }
    }
    mounts
}

/// Unmounts `<dir>/rootfs` until nothing is mounted there (lazily when
/// busy). The kernel says when it is not a mount point (EINVAL), whatever
/// path spelled it.
pub fn unmount_rootfs(dir: &Path) -> Result<(), BundleError> {
    let target = dir.join("rootfs");
    // A few mounts may be stacked there; more is not ours to undo.
    for _ in 0..8 {
        match umount2(&target, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::Error::EBUSY) => {
                umount2(&target, MntFlags::MNT_DETACH).map_err(|source| BundleError::Unmount {
                    target: target.clone(),
                    source,
                })?;
            }
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(source) => return Err(BundleError::Unmount { target, source }),
        }
    }
    Err(BundleError::Unmount {
        target,
        source: nix::Error::EBUSY,
    })
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
    fn only_writable_overlays_are_made_volatile() {
        let m = |kind: &str, options: &[&str]| Mount {
            kind: kind.into(),
            source: "overlay".into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        };
        let got = volatile(vec![m(
            "overlay",
            &["lowerdir=/l", "upperdir=/u", "workdir=/w"],
        )]);
        assert_eq!(got[0].options.last().map(String::as_str), Some("volatile"));
        let again = volatile(got.clone());
        assert_eq!(again[0].options, got[0].options);
        let ro = volatile(vec![m("overlay", &["lowerdir=/a:/b"])]);
        assert_eq!(ro[0].options, ["lowerdir=/a:/b"]);
        let bind = volatile(vec![m("bind", &["ro", "rbind"])]);
        assert_eq!(bind[0].options, ["ro", "rbind"]);
    }

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
    fn stacked_rootfs_mounts_are_all_unmounted() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (it mounts tmpfs)");
        }
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("b"), &serde_json::json!({})).unwrap();
        let bundle = dir.path().join("b");
        for _ in 0..2 {
            mount(
                Some("tmpfs"),
                &bundle.join("rootfs"),
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
        }
        remove(&bundle).unwrap();
        assert!(!bundle.exists());
        // Nothing mounted, nothing there: still fine.
        remove(&bundle).unwrap();
        // A bundle that exists is not made again.
        write(&bundle, &serde_json::json!({})).unwrap();
        assert!(write(&bundle, &serde_json::json!({})).is_err());
        assert!(bundle.join("config.json").exists());
        remove(&bundle).unwrap();
    }
}
