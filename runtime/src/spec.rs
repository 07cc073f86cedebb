//! Reading, checking and generating the bundle's `config.json`.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// What is wrong with a bundle or its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config.json: {0}")]
    Invalid(String),
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("file {0} exists, remove it first")]
    Exists(PathBuf),
}

/// Loads `<bundle>/config.json` and checks what the runtime relies on.
pub fn load_spec(bundle: &Path) -> Result<Spec, SpecError> {
    load_spec_and_mount_id_maps(bundle).map(|(spec, _)| spec)
}

/// `load_spec`, plus each mount's `uidMappings`/`gidMappings`, which
/// oci-spec's `Mount` does not carry: read from the same bytes, checked
/// with the spec (see `rootfs::idmap`).
pub fn load_spec_and_mount_id_maps(
    bundle: &Path,
) -> Result<(Spec, Vec<crate::rootfs::idmap::MountIdMaps>), SpecError> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let spec: Spec = crate::sched::parse_with_sched_flags(&data, "/process/scheduler/flags")
        .map_err(|e| SpecError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
    validate_spec(&spec)?;
    let maps =
        crate::rootfs::idmap::parse_mount_id_maps(&data).map_err(|message| SpecError::Parse {
            path: path.clone(),
            message,
        })?;
    crate::rootfs::idmap::check_mount_id_maps(&spec, &maps).map_err(SpecError::Invalid)?;
    Ok((spec, maps))
}

/// The container's root filesystem, made absolute against the bundle.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf, SpecError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SpecError::Invalid("root is missing".into()))?;
    let path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| SpecError::Invalid(format!("root.path {}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Err(SpecError::Invalid(format!(
            "root.path {} is not a directory",
            path.display()
        )));
    }
    Ok(path)
}

/// The most mounts a config may list. Mounting is quadratic in the number of
/// mounts stacked in one namespace (4,000 take a second, 100,000 many
/// minutes), and no real container needs thousands.
pub const MAX_MOUNTS: usize = 4096;

/// The kernel's limit on one argument or environment string (MAX_ARG_STRLEN):
/// exec would fail with E2BIG on a longer one.
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The kernel's limit on a host or domain name (__NEW_UTS_LEN).
const MAX_UTS_NAME: usize = 64;

/// Checks the parts of a spec that a malformed or hostile config could get
/// wrong in ways serde does not catch.
pub fn validate_spec(spec: &Spec) -> Result<(), SpecError> {
    let invalid = |m: String| Err(SpecError::Invalid(m));
    if !spec.version().starts_with("1.") {
        return invalid(format!(
            "ociVersion {:?} is not a 1.x runtime-spec version",
            spec.version()
        ));
    }
    if spec.root().is_none() {
        return invalid("root is missing".into());
    }
    if let Some(process) = spec.process() {
        check_process(process)?;
    }
    crate::sched::validate(spec).map_err(|e| SpecError::Invalid(e.to_string()))?;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    if mounts.len() > MAX_MOUNTS {
        return invalid(format!(
            "{} mounts listed, more than the {MAX_MOUNTS} this runtime accepts",
            mounts.len()
        ));
    }
    for mount in mounts {
        check_container_path("mount destination", mount.destination())?;
        crate::rootfs::parse_options(mount.options().as_deref().unwrap_or(&[])).map_err(|e| {
            SpecError::Invalid(format!("mount {}: {e}", mount.destination().display()))
        })?;
    }
    check_hooks(spec)?;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let has_ns = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    let Some(linux) = spec.linux() else {
        return check_uts_names(spec, &has_ns);
    };
    if let Some(p) = linux
        .rootfs_propagation()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        if crate::rootfs::propagation_flags(p).is_none() {
            return invalid(format!("rootfsPropagation {p:?} is not a propagation mode"));
        }
    }
    let mut seen = HashSet::new();
    for ns in linux.namespaces().iter().flatten() {
        if !seen.insert(ns.typ()) {
            return invalid(format!("namespace {:?} is listed twice", ns.typ()));
        }
        if let Some(path) = ns.path() {
            if !path.is_absolute() {
                return invalid(format!("namespace path {} is not absolute", path.display()));
            }
        }
    }
    crate::namespaces::check_time_offsets(linux).map_err(SpecError::Invalid)?;
    crate::netdev::check_net_devices(linux).map_err(SpecError::Invalid)?;
    check_uts_names(spec, &has_ns)?;
    let has_userns = seen.contains(&LinuxNamespaceType::User);
    for (name, maps) in [
        ("uidMappings", linux.uid_mappings()),
        ("gidMappings", linux.gid_mappings()),
    ] {
        let Some(maps) = maps else { continue };
        if !maps.is_empty() && !has_userns {
            return invalid(format!("{name} given without a user namespace"));
        }
        if maps.len() > 340 {
            return invalid(format!("{name} has more than 340 entries"));
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for m in maps {
            if m.size() == 0 {
                return invalid(format!("{name} entry with size 0"));
            }
            let start = u64::from(m.container_id());
            let end = start + u64::from(m.size());
            if end > u64::from(u32::MAX) + 1
                || u64::from(m.host_id()) + u64::from(m.size()) > u64::from(u32::MAX) + 1
            {
                return invalid(format!("{name} entry overflows the id range"));
            }
            if ranges.iter().any(|(s, e)| start < *e && *s < end) {
                return invalid(format!("{name} entries overlap"));
            }
            ranges.push((start, end));
        }
    }
    if has_userns
        && linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
        && linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
    {
        return invalid("a new user namespace needs uidMappings and gidMappings".into());
    }
    for dev in linux.devices().iter().flatten() {
        check_container_path("device path", dev.path())?;
        if dev.typ() == oci_spec::runtime::LinuxDeviceType::A {
            return invalid(format!(
                "device {} has type 'a', which names no device node",
                dev.path().display()
            ));
        }
    }
    let mut restricted = linux
        .masked_paths()
        .iter()
        .flatten()
        .chain(linux.readonly_paths().iter().flatten())
        .peekable();
    if restricted.peek().is_some() && !seen.contains(&LinuxNamespaceType::Mount) {
        // runc's refusal, word for word: the masks would land on the host.
        return invalid("unable to restrict sys entries without a private MNT namespace".into());
    }
    for path in restricted {
        // A relative path means the same path from the container's root,
        // as runc resolves it (from / after pivot_root).
        check_container_path("masked or read-only path", &in_container_root(path))?;
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            if key.is_empty() || key.contains('/') && key.contains("..") || key.contains('\0') {
                return invalid(format!("sysctl {key:?} is not a valid name"));
            }
            check_sysctl_namespace(key, &has_ns)?;
        }
    }
    Ok(())
}

/// A sysctl is written through the container's /proc/sys, so it must belong
/// to a namespace the container has of its own; any other would change the
/// host. The rules are runc's.
fn check_sysctl_namespace(
    key: &str,
    has_ns: &dyn Fn(LinuxNamespaceType) -> bool,
) -> Result<(), SpecError> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let name = key.replace('/', ".");
    let (needs, what) = if IPC.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
        (LinuxNamespaceType::Ipc, "an IPC")
    } else if name.starts_with("net.") {
        (LinuxNamespaceType::Network, "a network")
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        (LinuxNamespaceType::Uts, "a UTS")
    } else {
        return Err(SpecError::Invalid(format!(
            "sysctl {key:?} is not in a separate kernel namespace: setting it would change the host"
        )));
    };
    if !has_ns(needs) {
        return Err(SpecError::Invalid(format!(
            "sysctl {key:?} needs {what} namespace, which the config does not have"
        )));
    }
    Ok(())
}

/// A host or domain name needs a UTS namespace (new or joined) and must
/// fit the kernel's limit.
fn check_uts_names(
    spec: &Spec,
    has_ns: &dyn Fn(LinuxNamespaceType) -> bool,
) -> Result<(), SpecError> {
    for (what, name) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        let Some(name) = name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        if !has_ns(LinuxNamespaceType::Uts) {
            return Err(SpecError::Invalid(format!(
                "{what} is set but there is no UTS namespace"
            )));
        }
        if name.len() > MAX_UTS_NAME || name.contains('\0') {
            return Err(SpecError::Invalid(format!(
                "{what} is not a valid name of at most {MAX_UTS_NAME} bytes"
            )));
        }
    }
    Ok(())
}

/// Hook paths are absolute (the runtime does not search its own PATH) and a
/// timeout, when given, is positive.
fn check_hooks(spec: &Spec) -> Result<(), SpecError> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    #[allow(
        deprecated,
        reason = "prestart hooks are deprecated in the spec, and still checked"
    )]
    let stages = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    for (stage, list) in stages {
        for hook in list.iter().flatten() {
            if !hook.path().is_absolute() {
                return Err(SpecError::Invalid(format!(
                    "{stage} hook path {} is not absolute",
                    hook.path().display()
                )));
            }
            if hook.timeout().is_some_and(|t| t <= 0) {
                return Err(SpecError::Invalid(format!(
                    "{stage} hook {} has a timeout of {}s; it must be positive",
                    hook.path().display(),
                    hook.timeout().unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

fn check_process(process: &oci_spec::runtime::Process) -> Result<(), SpecError> {
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(SpecError::Invalid(format!(
                "process.oomScoreAdj {adj} is outside -1000..1000"
            )));
        }
    }
    if !process.cwd().is_absolute() {
        return Err(SpecError::Invalid(format!(
            "process.cwd {} is not absolute",
            process.cwd().display()
        )));
    }
    check_container_path("process.cwd", process.cwd())?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::Invalid("process.args must not be empty".into()));
    }
    for (i, arg) in process.args().iter().flatten().enumerate() {
        if arg.contains('\0') {
            return Err(SpecError::Invalid(format!(
                "process.args[{i}] contains a NUL byte"
            )));
        }
    }
    for (what, list) in [("args", process.args()), ("env", process.env())] {
        if let Some((i, s)) = list
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, s)| s.len() > MAX_ARG_STRLEN)
        {
            return Err(SpecError::Invalid(format!(
                "process.{what}[{i}] is {} bytes; exec takes at most {MAX_ARG_STRLEN}",
                s.len()
            )));
        }
    }
    for entry in process.env().iter().flatten() {
        if !entry.contains('=') || entry.contains('\0') {
            return Err(SpecError::Invalid(format!(
                "process.env entry {entry:?} is not KEY=value"
            )));
        }
    }
    Ok(())
}

/// A masked or read-only path as the container sees it: relative paths are
/// taken from the container's root, as runc takes them (from its working
/// directory, `/` after pivot_root).
pub fn in_container_root(path: &str) -> PathBuf {
    Path::new("/").join(path)
}

/// A path inside the container must be absolute and must not climb out of
/// the root with `..`. (Symlinks are resolved inside the root at mount time.)
pub fn check_container_path(what: &str, path: &Path) -> Result<(), SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::Invalid(format!(
            "{what} {} is not absolute",
            path.display()
        )));
    }
    let mut depth: i64 = 0;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(SpecError::Invalid(format!(
                        "{what} {} escapes the container root",
                        path.display()
                    )));
                }
            }
            _ => {}
        }
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(SpecError::Invalid(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

/// How far `dry_run` got with a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    /// Not a config.json at all (malformed JSON, wrong types).
    Unparsable,
    /// Parsed, but `validate_spec` refused it.
    Invalid,
    /// Valid, and every step that reads it went through.
    Valid,
}

/// What `create` does with config.json before it makes anything, minus the
/// file system: parse, validate, then the steps that only read the config
/// (namespace plan, propagation, cgroup paths, seccomp compilation, mount
/// options, the JSON the state record keeps). The fuzz target and its stable
/// smoke test run this; none of it may panic, whatever the bytes.
pub fn dry_run(data: &[u8]) -> DryRun {
    let Ok(spec) = serde_json::from_slice::<Spec>(data) else {
        return DryRun::Unparsable;
    };
    if validate_spec(&spec).is_err() {
        return DryRun::Invalid;
    }
    // Each mount's own id mappings, read beside the spec as `create` does.
    let maps_ok = crate::rootfs::idmap::parse_mount_id_maps(data)
        .is_ok_and(|m| crate::rootfs::idmap::check_mount_id_maps(&spec, &m).is_ok());
    if !maps_ok {
        return DryRun::Invalid;
    }
    if let Some(linux) = spec.linux() {
        let _ = crate::namespaces::Plan::from_config(linux.namespaces().as_deref().unwrap_or(&[]));
        if let Some(p) = linux.rootfs_propagation() {
            let _ = crate::rootfs::propagation_flags(p);
        }
        let path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = crate::cgroups::resolve_path(&path, false, "dry-run", Path::new("/"));
        let _ = crate::cgroups::resolve_path(&path, true, "dry-run", Path::new("/"));
        if let Some(profile) = linux.seccomp() {
            let _ = crate::seccomp::compile(profile);
        }
    }
    for mount in spec.mounts().iter().flatten() {
        let _ = crate::rootfs::parse_options(mount.options().as_deref().unwrap_or(&[]));
    }
    let _ = serde_json::to_vec(&spec);
    DryRun::Valid
}

/// The default configuration written by `spec`, like runc's: a busybox-style
/// shell with a terminal, a read-only root and the usual namespaces.
pub fn default_spec(rootless: bool, uid: u32, gid: u32) -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut spec = serde_json::json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi", "/sys/devices/virtual/powercap"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    if rootless {
        let linux = &mut spec["linux"];
        linux["namespaces"] = serde_json::json!([
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
            {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}
        ]);
        linux["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        linux.as_object_mut().map(|l| l.remove("resources"));
        let mounts = spec["mounts"].as_array_mut();
        if let Some(mounts) = mounts {
            mounts.retain(|m| m["type"] != "cgroup");
            for m in mounts.iter_mut() {
                if m["type"] == "sysfs" {
                    *m = serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys",
                        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
                }
                if m["type"] == "devpts" {
                    if let Some(opts) = m["options"].as_array_mut() {
                        opts.retain(|o| o != "gid=5");
                    }
                }
            }
        }
    }
    spec
}

/// Writes the default `config.json` into `bundle`, refusing to overwrite.
pub fn write_default_spec(bundle: &Path, rootless: bool) -> Result<(), SpecError> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(SpecError::Exists(path));
    }
    let spec = default_spec(
        rootless,
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let mut text =
        serde_json::to_string_pretty(&spec).map_err(|e| SpecError::Invalid(e.to_string()))?;
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| SpecError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> Result<Spec, String> {
        let spec: Spec = serde_json::from_value(value).map_err(|e| e.to_string())?;
        validate_spec(&spec).map_err(|e| e.to_string())?;
        Ok(spec)
    }

    #[test]
    fn default_spec_is_valid() {
        parse(default_spec(false, 0, 0)).unwrap();
        parse(default_spec(true, 1000, 1000)).unwrap();
    }

    #[test]
    fn escaping_mount_is_rejected() {
        let mut v = default_spec(false, 0, 0);
        v["mounts"][0]["destination"] = "/../../etc/x".into();
        let err = parse(v).unwrap_err();
        assert!(err.contains("escapes the container root"), "{err}");
    }

    #[test]
    fn relative_mount_is_rejected() {
        let mut v = default_spec(false, 0, 0);
        v["mounts"][0]["destination"] = "proc".into();
        assert!(parse(v).unwrap_err().contains("not absolute"));
    }

    #[test]
    fn duplicate_namespace_is_rejected() {
        let mut v = default_spec(false, 0, 0);
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
        assert!(parse(v).unwrap_err().contains("listed twice"));
    }

    #[test]
    fn unknown_namespace_is_rejected() {
        let mut v = default_spec(false, 0, 0);
        v["linux"]["namespaces"] = serde_json::json!([{"type": "bogus"}]);
        assert!(parse(v).unwrap_err().contains("bogus"));
    }

    #[test]
    fn overlapping_id_maps_are_rejected() {
        let mut v = default_spec(true, 1000, 1000);
        v["linux"]["uidMappings"] = serde_json::json!([
            {"containerID": 0, "hostID": 100000, "size": 100},
            {"containerID": 50, "hostID": 200000, "size": 100}
        ]);
        assert!(parse(v).unwrap_err().contains("overlap"));
    }

    #[test]
    fn empty_args_are_rejected() {
        let mut v = default_spec(false, 0, 0);
        v["process"]["args"] = serde_json::json!([]);
        assert!(parse(v).unwrap_err().contains("args"));
    }

    #[test]
    fn sysctls_need_their_namespace() {
        let with = |key: &str, namespaces: serde_json::Value| {
            let mut v = default_spec(false, 0, 0);
            v["linux"]["namespaces"] = namespaces;
            v["hostname"] = serde_json::Value::Null;
            v["linux"]["sysctl"] = serde_json::json!({ key: "1" });
            parse(v)
        };
        let all = serde_json::json!([{"type": "mount"}, {"type": "network"}, {"type": "ipc"}]);
        let none = serde_json::json!([{"type": "mount"}]);
        with("net.ipv4.ip_forward", all.clone()).unwrap();
        with("net/ipv4/ip_forward", all.clone()).unwrap();
        with("kernel.shmmax", all.clone()).unwrap();
        with("fs.mqueue.msg_max", all.clone()).unwrap();
        let err = with("net.ipv4.ip_forward", none.clone()).unwrap_err();
        assert!(err.contains("network namespace"), "{err}");
        assert!(with("kernel.shmmax", none).unwrap_err().contains("IPC"));
        let err = with("vm.overcommit_memory", all.clone()).unwrap_err();
        assert!(err.contains("change the host"), "{err}");
        assert!(with("net.ipv4/../../kernel/core_pattern", all).is_err());
    }

    #[test]
    fn hostname_needs_uts_namespace_and_fits() {
        let mut v = default_spec(false, 0, 0);
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
        assert!(parse(v.clone()).unwrap_err().contains("UTS namespace"));
        v["hostname"] = "".into();
        parse(v.clone()).unwrap();
        v["domainname"] = "example.org".into();
        assert!(parse(v).unwrap_err().contains("domainname"));
        let mut v = default_spec(false, 0, 0);
        v["hostname"] = "h".repeat(65).into();
        assert!(parse(v).unwrap_err().contains("at most 64 bytes"));
    }

    #[test]
    fn hooks_are_absolute_with_positive_timeouts() {
        let mut v = default_spec(false, 0, 0);
        v["hooks"] = serde_json::json!({"createRuntime": [{"path": "true"}]});
        assert!(parse(v.clone()).unwrap_err().contains("not absolute"));
        v["hooks"] = serde_json::json!({"poststop": [{"path": "/bin/true", "timeout": 0}]});
        assert!(parse(v.clone()).unwrap_err().contains("timeout"));
        v["hooks"] = serde_json::json!({"poststop": [{"path": "/bin/true", "timeout": 5}]});
        parse(v).unwrap();
    }

    #[test]
    fn oversized_and_unmakeable_things_are_rejected() {
        let mut v = default_spec(false, 0, 0);
        v["process"]["args"] = serde_json::json!(["sh", "x".repeat(MAX_ARG_STRLEN + 1)]);
        assert!(parse(v).unwrap_err().contains("process.args[1]"));
        let mut v = default_spec(false, 0, 0);
        v["process"]["env"] = serde_json::json!([format!("A={}", "x".repeat(MAX_ARG_STRLEN))]);
        assert!(parse(v).unwrap_err().contains("process.env[0]"));
        let mut v = default_spec(false, 0, 0);
        v["process"]["args"] = serde_json::json!(["sh\u{0}"]);
        assert!(parse(v).unwrap_err().contains("NUL"));
        let mut v = default_spec(false, 0, 0);
        let tmpfs = serde_json::json!({"destination": "/tmp", "type": "tmpfs"});
        v["mounts"] = serde_json::Value::Array(vec![tmpfs; MAX_MOUNTS + 1]);
        assert!(parse(v).unwrap_err().contains("mounts listed"));
        let mut v = default_spec(false, 0, 0);
        v["linux"]["devices"] =
            serde_json::json!([{"path": "/dev/x", "type": "a", "major": 1, "minor": 3}]);
        assert!(parse(v).unwrap_err().contains("type 'a'"));
    }

    #[test]
    fn masked_and_readonly_paths_as_runc_takes_them() {
        let mut v = default_spec(false, 0, 0);
        v["linux"]["maskedPaths"] = serde_json::json!(["proc/kcore", "/proc/keys"]);
        v["linux"]["readonlyPaths"] = serde_json::json!(["proc/sys"]);
        parse(v.clone()).unwrap();
        assert_eq!(in_container_root("proc/sys"), Path::new("/proc/sys"));
        assert_eq!(in_container_root("/proc/sys"), Path::new("/proc/sys"));
        v["linux"]["readonlyPaths"] = serde_json::json!(["../../etc"]);
        assert!(parse(v.clone()).unwrap_err().contains("escapes"));
        let mut v = default_spec(false, 0, 0);
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "uts"}]);
        let err = parse(v.clone()).unwrap_err();
        assert!(
            err.contains("unable to restrict sys entries without a private MNT namespace"),
            "{err}"
        );
        v["linux"]["maskedPaths"] = serde_json::json!([]);
        v["linux"]["readonlyPaths"] = serde_json::json!([]);
        parse(v).unwrap();
    }

    #[test]
    fn container_paths() {
        assert!(check_container_path("x", Path::new("/a/../b")).is_ok());
        assert!(check_container_path("x", Path::new("/a/../../b")).is_err());
        assert!(check_container_path("x", Path::new("a")).is_err());
    }
}
