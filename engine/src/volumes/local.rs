//! The `local` driver's options, as Docker's takes them: `type` (a file
//! system type, `tmpfs`, or `none` for a bind), `device` (what is
//! mounted), `o` (mount(8)-style options: flags such as `bind`, `ro`,
//! `nosuid`, the rest passed as data, `size=64m`). With options, the volume
//! is mounted on its `_data` with mount(2) when its first container starts
//! and unmounted when its last one stops; without, `_data` is a plain
//! directory. Also: a directory's size as `system df` counts it.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::{Result, VolumeError};

const KEYS: [&str; 4] = ["type", "device", "o", "size"];

/// What each option needs besides itself (Docker's `mandatoryOpts`).
const NEEDS: [(&str, &[&str]); 3] = [
    ("device", &["type"]),
    ("type", &["device"]),
    ("o", &["device", "type"]),
];

/// Checks driver options before anything is made.
pub fn validate_options(opts: &BTreeMap<String, String>) -> Result<()> {
    for key in opts.keys() {
        if !KEYS.contains(&key.as_str()) {
            return Err(VolumeError::InvalidOption(format!(
                "invalid option: {key:?}"
            )));
        }
    }
    if opts.contains_key("size") {
        return Err(VolumeError::InvalidOption(
            "quota size requested but no quota support".into(),
        ));
    }
    for (key, needs) in NEEDS {
        if opts.contains_key(key) {
            if let Some(missing) = needs.iter().find(|n| !opts.contains_key(**n)) {
                return Err(VolumeError::InvalidOption(format!(
                    "missing required option: {missing:?}"
                )));
            }
        }
    }
    if opts.is_empty() {
        return Ok(());
    }
    let (flags, _) = parse_o(opts.get("o").map(String::as_str).unwrap_or(""));
    let device = opts.get("device").map(String::as_str).unwrap_or("");
    if flags.contains(MsFlags::MS_BIND) {
        if !device.starts_with('/') {
            return Err(VolumeError::InvalidOption(format!(
                "invalid option: device {device:?} of a bind mount must be an absolute path"
            )));
        }
        if !Path::new(device).exists() {
            return Err(VolumeError::InvalidOption(format!(
                "invalid option: device {device:?} of a bind mount does not exist"
            )));
        }
    }
    Ok(())
}

/// The flags and the data of an `o` option, as mount(8) splits them.
fn parse_o(o: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in o.split(',').filter(|s| !s.is_empty()) {
        let (set, clear) = match opt {
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

/// Mounts the volume's device on `target` (its `_data`).
pub fn mount(opts: &BTreeMap<String, String>, target: &Path) -> Result<()> {
    let device = opts.get("device").map(String::as_str).unwrap_or("");
    let kind = opts.get("type").map(String::as_str).unwrap_or("");
    let (flags, data) = parse_o(opts.get("o").map(String::as_str).unwrap_or(""));
    let fail = |e: nix::Error| {
        VolumeError::Mount(format!(
            "mount {device}:{}, flags: {:#x}, data: {data}: {e}",
            target.display(),
            flags.bits()
        ))
    };
    let bind = flags.contains(MsFlags::MS_BIND);
    let fstype = (!bind && !kind.is_empty() && kind != "none").then_some(kind);
    let data_opt = (!data.is_empty()).then_some(data.as_str());
    nix::mount::mount(Some(device), target, fstype, flags, data_opt).map_err(fail)?;
    // A bind ignores MS_RDONLY until it is remounted.
    if bind && flags.contains(MsFlags::MS_RDONLY) {
        let remount = flags | MsFlags::MS_REMOUNT;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, data_opt) {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(fail(e));
        }
    }
    Ok(())
}

/// Unmounts whatever is mounted on `target` (nothing is no error).
pub fn unmount(target: &Path) {
    loop {
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return,
            Err(e) => {
                tracing::warn!(path = %target.display(), error = %e, "unmount a volume");
                return;
            }
        }
    }
}

/// The bytes of the files under `dir` (each hard-linked file once), as
/// Docker's `system df` counts a volume.
pub fn size(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_as_docker_checks_them() {
        validate_options(&opts(&[])).unwrap();
        validate_options(&opts(&[
            ("type", "tmpfs"),
            ("device", "tmpfs"),
            ("o", "size=64m"),
        ]))
        .unwrap();
        validate_options(&opts(&[
            ("type", "none"),
            ("device", "/tmp"),
            ("o", "bind"),
        ]))
        .unwrap();
        let err = |o: &[(&str, &str)]| validate_options(&opts(o)).unwrap_err().to_string();
        assert_eq!(err(&[("foo", "bar")]), "invalid option: \"foo\"");
        assert_eq!(
            err(&[("type", "tmpfs")]),
            "missing required option: \"device\""
        );
        assert_eq!(
            err(&[("o", "size=1m"), ("device", "tmpfs")]),
            "missing required option: \"type\""
        );
        assert!(
            err(&[("type", "none"), ("device", "/no/such/dir"), ("o", "bind")])
                .contains("does not exist")
        );
        assert!(err(&[("type", "none"), ("device", "rel"), ("o", "bind")]).contains("absolute"));
    }

    #[test]
    fn o_splits_into_flags_and_data() {
        let (flags, data) = parse_o("rbind,ro,size=64m,nosuid,uid=1000");
        assert!(flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert!(flags.contains(MsFlags::MS_NOSUID));
        assert_eq!(data, "size=64m,uid=1000");
        let (flags, _) = parse_o("ro,rw");
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn sizes_count_files_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), vec![0u8; 24]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("d/a2")).unwrap();
        assert_eq!(size(dir.path()), 1024);
    }
}
