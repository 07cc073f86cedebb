//! The container's mounts: Docker's defaults (`/proc`, `/dev`, `/dev/pts`,
//! `/sys`, the cgroup tree read-only, `/dev/mqueue`, `/dev/shm` of
//! `ShmSize`), the init binary, then the container's own, shallowest first:
//! `Binds` (`-v`), `Mounts` (`--mount` bind and tmpfs), `Tmpfs`, the shared
//! `/dev/shm` of `--ipc host|container:ID`, and the engine's
//! `/etc/resolv.conf`, `/etc/hostname` and `/etc/hosts`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::namespaces::{Modes, Share};
use super::process::{wants_init, INIT_PATH};
use super::resources::DEFAULT_SHM_SIZE;
use super::{Host, SpecError, SpecInput};
use crate::types::{HostConfig, Mount};

/// The mounts, and what goes with them.
#[derive(Debug, Default, PartialEq)]
pub struct Mounts {
    pub mounts: Vec<Value>,
    /// `-v` sources that do not exist yet (created as directories).
    pub missing_bind_sources: Vec<PathBuf>,
    /// `linux.rootfsPropagation`, when a bind asks for shared or slave.
    pub rootfs_propagation: Option<String>,
}

/// A mount the container asks for.
#[derive(Clone, Debug, PartialEq)]
struct UserMount {
    destination: String,
    source: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Bind {
        writable: bool,
        propagation: String,
        recursive: bool,
    },
    Tmpfs {
        data: String,
    },
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Docker's default mounts, `/dev/shm` sized (or left out for `--ipc none`).
fn default_mounts(hc: &HostConfig, modes: &Modes) -> Vec<Value> {
    let m = |dest: &str, kind: &str, src: &str, opts: &[&str]| json!({"destination": dest, "type": kind, "source": src, "options": opts});
    let shm_size = if hc.shm_size > 0 {
        hc.shm_size
    } else {
        DEFAULT_SHM_SIZE
    };
    let mut out = vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        m(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        m(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
    ];
    if !modes.ipc_none {
        let size = format!("size={shm_size}");
        out.push(m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &size],
        ));
    }
    out
}

/// The spec's mounts for the container.
pub fn mounts(input: &SpecInput<'_>, modes: &Modes, host: &dyn Host) -> Result<Mounts, SpecError> {
    let hc = input.host_config;
    let mut out = Mounts::default();
    let mut user = Vec::new();
    for raw in hc.binds.iter().flatten() {
        let m = parse_bind(raw)?;
        if host.stat(Path::new(&m.source)).is_none() {
            out.missing_bind_sources.push(PathBuf::from(&m.source));
        }
        push_unique(&mut user, m)?;
    }
    // In dockerd's order before sorting: binds, the engine's files, a
    // shared /dev/shm, then tmpfs mounts (`--tmpfs`, then `--mount`).
    let mut tmpfs = Vec::new();
    for m in hc.mounts.iter().flatten() {
        let m = from_api_mount(m, host)?;
        if user
            .iter()
            .chain(&tmpfs)
            .any(|u: &UserMount| u.destination == m.destination)
        {
            return Err(SpecError::DuplicateMount(m.destination));
        }
        match m.kind {
            Kind::Tmpfs { .. } => tmpfs.push(m),
            Kind::Bind { .. } => user.push(m),
        }
    }
    let mut flag_tmpfs = Vec::new();
    for (dest, data) in hc.tmpfs.iter().flatten() {
        let destination = check_destination("tmpfs", dest)?;
        merge_tmpfs_options(&tmpfs_options(data))?;
        if user
            .iter()
            .chain(&tmpfs)
            .any(|u| u.destination == destination)
        {
            return Err(SpecError::DuplicateMount(destination));
        }
        flag_tmpfs.push(UserMount {
            destination,
            source: "tmpfs".into(),
            kind: Kind::Tmpfs { data: data.clone() },
        });
    }
    flag_tmpfs.append(&mut tmpfs);
    let tmpfs = flag_tmpfs;
    let bind = |source: String, destination: &str, writable: bool| UserMount {
        destination: destination.into(),
        source,
        kind: Kind::Bind {
            writable,
            propagation: "rprivate".into(),
            recursive: true,
        },
    };
    let files = [
        (&input.files.resolv_conf, "/etc/resolv.conf"),
        (&input.files.hostname, "/etc/hostname"),
        (&input.files.hosts, "/etc/hosts"),
    ];
    for (path, dest) in files {
        if let Some(p) = path {
            if !user.iter().chain(&tmpfs).any(|m| m.destination == dest) {
                user.push(bind(p.display().to_string(), dest, !hc.readonly_rootfs));
            }
        }
    }
    let shm = match &modes.ipc {
        Share::Host => Some("/dev/shm".to_string()),
        Share::Container(c) => {
            let pid = input.peers.ipc.ok_or_else(|| SpecError::PeerNotRunning {
                what: "IPC",
                container: c.clone(),
            })?;
            Some(format!("/proc/{pid}/root/dev/shm"))
        }
        Share::Private => None,
    };
    if let Some(src) = shm {
        if !user
            .iter()
            .chain(&tmpfs)
            .any(|m| m.destination == "/dev/shm")
        {
            user.push(bind(src, "/dev/shm", true));
        }
    }
    user.extend(tmpfs);
    user.sort_by_key(|m| m.destination.split('/').count());

    let user_dest = |d: &str| user.iter().any(|m| m.destination == d);
    let dev_mounted = user_dest("/dev");
    let mut specs: Vec<Value> = default_mounts(hc, modes)
        .into_iter()
        .filter(|m| {
            let d = m["destination"].as_str().unwrap_or_default();
            !(user_dest(d) || (dev_mounted && d.starts_with("/dev/")))
        })
        .collect();
    if wants_init(hc, modes) {
        if let Some(init) = input.init_path {
            specs.push(
                json!({"destination": INIT_PATH, "type": "bind", "source": init,
                              "options": ["bind", "ro"]}),
            );
        }
    }
    let defaults = specs.len();
    for m in &user {
        specs.push(mount_json(m, &mut out.rootfs_propagation)?);
    }
    for (i, m) in specs.iter_mut().enumerate() {
        let dest = m["destination"].as_str().unwrap_or_default().to_string();
        let cgroup = m["type"] == "cgroup";
        let Some(opts) = m["options"].as_array_mut() else {
            continue;
        };
        let exempt = ["/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"];
        if hc.readonly_rootfs
            && i < defaults
            && !exempt.contains(&dest.as_str())
            && !opts.contains(&json!("ro"))
        {
            opts.push(json!("ro"));
        }
        if hc.privileged && (dest == "/sys" || cgroup) {
            opts.retain(|o| o != "ro");
        }
    }
    out.mounts = specs;
    Ok(out)
}

fn push_unique(user: &mut Vec<UserMount>, m: UserMount) -> Result<(), SpecError> {
    if user.iter().any(|u| u.destination == m.destination) {
        return Err(SpecError::DuplicateMount(m.destination));
    }
    user.push(m);
    Ok(())
}

fn mount_json(m: &UserMount, rootfs: &mut Option<String>) -> Result<Value, SpecError> {
    match &m.kind {
        Kind::Tmpfs { data } => {
            let mut opts: Vec<String> = ["noexec", "nosuid", "nodev", "rprivate"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            opts.extend(tmpfs_options(data));
            Ok(
                json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs",
                      "options": merge_tmpfs_options(&opts)?}),
            )
        }
        Kind::Bind {
            writable,
            propagation,
            recursive,
        } => {
            let mut opts = vec![if *recursive { "rbind" } else { "bind" }];
            if !writable {
                opts.push("ro");
            }
            opts.push(propagation);
            let current = rootfs.as_deref().unwrap_or("");
            match propagation.as_str() {
                "shared" | "rshared" if !current.ends_with("shared") => {
                    *rootfs = Some("shared".into());
                }
                "slave" | "rslave" if current.is_empty() => *rootfs = Some("rslave".into()),
                _ => {}
            }
            Ok(
                json!({"destination": m.destination, "type": "bind", "source": m.source,
                      "options": opts}),
            )
        }
    }
}

/// A lexically clean absolute path, as Go's filepath.Clean makes it.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn check_destination(kind: &str, dest: &str) -> Result<String, SpecError> {
    let fail = |reason: String| SpecError::MountConfig {
        kind: kind.into(),
        reason,
    };
    if dest.is_empty() {
        return Err(fail("field Target must not be empty".into()));
    }
    if !dest.starts_with('/') {
        return Err(fail(format!(
            "invalid mount path: '{dest}' mount path must be absolute"
        )));
    }
    let clean = clean(dest);
    if clean == "/" {
        return Err(fail("destination can't be '/'".into()));
    }
    Ok(clean)
}

/// `-v SRC:DST[:OPTS]` with a host path for SRC.
fn parse_bind(raw: &str) -> Result<UserMount, SpecError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (src, dst, mode) = match parts[..] {
        [_] => return Err(SpecError::VolumesUnsupported(raw.into())),
        [s, d] => (s, d, ""),
        [s, d, m] => (s, d, m),
        _ => return Err(SpecError::VolumeSpec(raw.into())),
    };
    if src.is_empty() || dst.is_empty() {
        return Err(SpecError::VolumeSpec(raw.into()));
    }
    if !src.starts_with('/') {
        return Err(SpecError::VolumesUnsupported(src.into()));
    }
    let destination = check_destination("bind", dst)?;
    let (mut rw, mut label, mut propagation, mut copy) = (None, false, None, false);
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        let dup = match m {
            "rw" | "ro" => rw.replace(m == "rw").is_some(),
            "z" | "Z" => std::mem::replace(&mut label, true),
            "nocopy" => std::mem::replace(&mut copy, true),
            p if PROPAGATIONS.contains(&p) => propagation.replace(p).is_some(),
            _ => true,
        };
        if dup {
            return Err(SpecError::VolumeMode(mode.into()));
        }
    }
    Ok(UserMount {
        destination,
        source: clean(src),
        kind: Kind::Bind {
            writable: rw.unwrap_or(true),
            propagation: propagation.unwrap_or("rprivate").into(),
            recursive: true,
        },
    })
}

/// One entry of `HostConfig.Mounts`: bind (its source must exist) or tmpfs.
fn from_api_mount(m: &Mount, host: &dyn Host) -> Result<UserMount, SpecError> {
    let fail = |reason: String| SpecError::MountConfig {
        kind: m.kind.clone(),
        reason,
    };
    match m.kind.as_str() {
        "bind" => {
            let destination = check_destination("bind", &m.target)?;
            if m.source.is_empty() {
                return Err(fail("field Source must not be empty".into()));
            }
            if m.volume_options.is_some() {
                return Err(fail("field VolumeOptions must not be specified".into()));
            }
            if m.tmpfs_options.is_some() {
                return Err(fail("field TmpfsOptions must not be specified".into()));
            }
            if !m.source.starts_with('/') {
                let s = &m.source;
                return Err(fail(format!(
                    "invalid mount path: '{s}' mount path must be absolute"
                )));
            }
            let opts = m.bind_options.as_ref();
            let propagation = opts
                .and_then(|o| o.get("Propagation"))
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .unwrap_or("rprivate");
            if !PROPAGATIONS.contains(&propagation) {
                return Err(fail(format!("invalid propagation mode: {propagation}")));
            }
            let non_recursive = opts
                .and_then(|o| o.get("NonRecursive"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if host.stat(Path::new(&m.source)).is_none() {
                let s = &m.source;
                return Err(fail(format!("bind source path does not exist: {s}")));
            }
            Ok(UserMount {
                destination,
                source: clean(&m.source),
                kind: Kind::Bind {
                    writable: !m.read_only,
                    propagation: propagation.into(),
                    recursive: !non_recursive,
                },
            })
        }
        "tmpfs" => {
            let destination = check_destination("tmpfs", &m.target)?;
            if !m.source.is_empty() {
                return Err(fail("field Source must not be specified".into()));
            }
            if m.bind_options.is_some() {
                return Err(fail("field BindOptions must not be specified".into()));
            }
            let data = tmpfs_data(m);
            merge_tmpfs_options(&tmpfs_options(&data))?;
            Ok(UserMount {
                destination,
                source: "tmpfs".into(),
                kind: Kind::Tmpfs { data },
            })
        }
        "volume" => Err(SpecError::VolumesUnsupported(m.source.clone())),
        _ => Err(fail("mount type unknown".into())),
    }
}

/// `--mount type=tmpfs`'s options as tmpfs data: "ro", the mode in octal,
/// the size with the largest unit that divides it.
fn tmpfs_data(m: &Mount) -> String {
    let mut opts = Vec::new();
    if m.read_only {
        opts.push("ro".to_string());
    }
    let t = m.tmpfs_options.as_ref();
    if let Some(mode) = t.and_then(|t| t.mode).filter(|m| *m != 0) {
        opts.push(format!("mode={mode:o}"));
    }
    if let Some(size) = t.and_then(|t| t.size_bytes).filter(|s| *s != 0) {
        let unit = [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)]
            .into_iter()
            .find(|(_, d)| size % d == 0);
        opts.push(match unit {
            Some((u, d)) => format!("size={}{u}", size / d),
            None => format!("size={size}"),
        });
    }
    for o in t.and_then(|t| t.options.as_ref()).into_iter().flatten() {
        opts.push(o.join("="));
    }
    opts.join(",")
}

fn tmpfs_options(data: &str) -> Vec<String> {
    data.split(',')
        .filter(|o| !o.is_empty())
        .map(String::from)
        .collect()
}

/// The mount flag an option sets (options that undo each other share one).
fn option_flag(option: &str) -> Option<libc::c_ulong> {
    use libc::*;
    Some(match option {
        "ro" | "rw" => MS_RDONLY,
        "suid" | "nosuid" => MS_NOSUID,
        "dev" | "nodev" => MS_NODEV,
        "exec" | "noexec" => MS_NOEXEC,
        "sync" | "async" => MS_SYNCHRONOUS,
        "dirsync" => MS_DIRSYNC,
        "remount" => MS_REMOUNT,
        "mand" | "nomand" => MS_MANDLOCK,
        "atime" | "noatime" => MS_NOATIME,
        "diratime" | "nodiratime" => MS_NODIRATIME,
        "bind" => MS_BIND,
        "rbind" => MS_BIND | MS_REC,
        "unbindable" => MS_UNBINDABLE,
        "runbindable" => MS_UNBINDABLE | MS_REC,
        "private" => MS_PRIVATE,
        "rprivate" => MS_PRIVATE | MS_REC,
        "shared" => MS_SHARED,
        "rshared" => MS_SHARED | MS_REC,
        "slave" => MS_SLAVE,
        "rslave" => MS_SLAVE | MS_REC,
        "relatime" | "norelatime" => MS_RELATIME,
        "strictatime" | "nostrictatime" => MS_STRICTATIME,
        _ => return None,
    })
}

/// Tmpfs options with later ones winning, as Docker merges them: one of
/// each flag pair ("exec" undoes "noexec"), one of each data key.
pub fn merge_tmpfs_options(options: &[String]) -> Result<Vec<String>, SpecError> {
    let data_keys = [
        "size",
        "mode",
        "uid",
        "gid",
        "nr_inodes",
        "nr_blocks",
        "mpol",
    ];
    let mut flags: libc::c_ulong = 0;
    let mut keys: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for option in options.iter().rev() {
        if option == "defaults" {
            continue;
        }
        if let Some(f) = option_flag(option) {
            if f & flags == 0 {
                flags |= f;
                out.push(option.clone());
            }
            continue;
        }
        match option.split_once('=') {
            Some((k, _)) if data_keys.contains(&k) => {
                if !keys.contains(&k) {
                    keys.push(k);
                    out.push(option.clone());
                }
            }
            _ => return Err(SpecError::TmpfsOption(option.clone())),
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
