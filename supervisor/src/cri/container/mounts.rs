//! The mounts of a CRI container's spec: containerd's defaults, the
//! container's binds (with propagation, checked against the host's
//! mounts), and the pod's files and `/dev/shm`.

use std::path::Path;

use berth_proto::cri::v1 as cri;
use serde_json::{json, Value};

use super::host::{Host, Propagation};
use super::spec::{SpecError, SpecInput};

fn invalid(what: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// A bind mount of the CRI's kind, checked against the host.
fn bind_mount(
    m: &cri::Mount,
    host: &dyn Host,
    propagation: &mut Option<&'static str>,
) -> Result<Value, SpecError> {
    use cri::MountPropagation as P;
    let fail = |reason: String| SpecError::MountSource {
        path: m.host_path.clone(),
        container_path: m.container_path.clone(),
        reason,
    };
    if !m.container_path.starts_with('/') {
        return Err(invalid(
            "mount",
            format!("container path {:?} is not absolute", m.container_path),
        ));
    }
    if m.image.is_some() {
        return Err(invalid(
            "mount",
            format!("image volume {:?} was not prepared", m.container_path),
        ));
    }
    if !m.host_path.starts_with('/') {
        return Err(fail("not an absolute path".into()));
    }
    let source = host
        .resolve(Path::new(&m.host_path))
        .map_err(|e| fail(e.to_string()))?;
    let mut options = vec!["rbind".to_string()];
    let kind = P::try_from(m.propagation).map_err(|_| {
        invalid(
            "mount propagation",
            format!("{} of {:?}", m.propagation, m.container_path),
        )
    })?;
    match kind {
        P::PropagationPrivate => options.push("rprivate".into()),
        P::PropagationHostToContainer | P::PropagationBidirectional => {
            let (mount, how) = host.mount_of(&source).map_err(|e| fail(e.to_string()))?;
            let path = source.to_string_lossy().into_owned();
            let mount = mount.to_string_lossy().into_owned();
            if kind == P::PropagationBidirectional {
                if how != Propagation::Shared {
                    return Err(SpecError::NotShared { path, mount });
                }
                options.push("rshared".into());
                *propagation = Some("rshared");
            } else {
                if how == Propagation::Private {
                    return Err(SpecError::NotSharedOrSlave { path, mount });
                }
                options.push("rslave".into());
                if propagation.is_none() {
                    *propagation = Some("rslave");
                }
            }
        }
    }
    options.push(if m.readonly { "ro" } else { "rw" }.into());
    if m.recursive_read_only {
        if !m.readonly {
            return Err(invalid(
                "mount",
                format!("recursive read-only {:?} needs readonly", m.container_path),
            ));
        }
        options.push("rro".into());
    }
    let mut mount = json!({"destination": m.container_path, "type": "bind",
                           "source": source, "options": options});
    // An id-mapped mount when kubelet asks for one (the runtime makes it
    // with mount_setattr MOUNT_ATTR_IDMAP), both lists or neither.
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        if m.uid_mappings.is_empty() || m.gid_mappings.is_empty() {
            return Err(invalid(
                "mount",
                format!(
                    "{:?} has uid or gid mappings alone: give both",
                    m.container_path
                ),
            ));
        }
        let list = |maps: &[cri::IdMapping]| -> Value {
            maps.iter()
                .map(|i| json!({"containerID": i.container_id, "hostID": i.host_id, "size": i.length}))
                .collect()
        };
        mount["uidMappings"] = list(&m.uid_mappings);
        mount["gidMappings"] = list(&m.gid_mappings);
    }
    Ok(mount)
}

/// The mounts: containerd's defaults (less those the container replaces),
/// then the container's in path order, then the pod's files and
/// `/dev/shm` where the container mounts nothing; and the root's
/// propagation when a mount needs it.
pub fn mounts(
    input: &SpecInput<'_>,
    sc: &cri::LinuxContainerSecurityContext,
    ns: &cri::NamespaceOption,
    host: &dyn Host,
) -> Result<(Vec<Value>, Option<&'static str>), SpecError> {
    let config = input.config;
    let sys_ro = if sc.privileged { "rw" } else { "ro" };
    let defaults = [
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_ro]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro]}),
    ];
    let given: Vec<&str> = config
        .mounts
        .iter()
        .map(|m| m.container_path.trim_end_matches('/'))
        .collect();
    let replaced = |dest: &str| {
        given
            .iter()
            .any(|g| *g == dest || (*g == "/dev" && dest.starts_with("/dev/")))
    };
    let mut out: Vec<Value> = defaults
        .into_iter()
        .filter(|m| !replaced(m["destination"].as_str().unwrap_or("")))
        .collect();

    let mut extra: Vec<cri::Mount> = Vec::new();
    let pod_file = |dest: &str, path: Option<&Path>, readonly: bool| {
        path.filter(|_| !replaced(dest)).map(|p| cri::Mount {
            container_path: dest.into(),
            host_path: p.to_string_lossy().into_owned(),
            readonly,
            ..Default::default()
        })
    };
    let sb = input.sandbox;
    extra.extend(pod_file(
        "/etc/hostname",
        sb.hostname_file,
        sc.readonly_rootfs,
    ));
    extra.extend(pod_file("/etc/hosts", sb.hosts_file, sc.readonly_rootfs));
    extra.extend(pod_file(
        "/etc/resolv.conf",
        sb.resolv_conf,
        sc.readonly_rootfs,
    ));
    let shm = if ns.ipc == cri::NamespaceMode::Node as i32 {
        Some(Path::new("/dev/shm"))
    } else {
        sb.shm
    };
    match pod_file("/dev/shm", shm, false) {
        Some(m) => extra.push(m),
        None if !replaced("/dev/shm") => out.push(
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        ),
        None => {}
    }

    // Parents before children: by the number of path components.
    let mut ordered: Vec<&cri::Mount> = config.mounts.iter().collect();
    ordered.sort_by_key(|m| Path::new(&m.container_path).components().count());
    let mut propagation = None;
    for m in ordered.into_iter().chain(extra.iter()) {
        out.push(bind_mount(m, host, &mut propagation)?);
    }
    Ok((out, propagation))
}
