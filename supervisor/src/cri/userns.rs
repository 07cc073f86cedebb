//! User namespaces for pods (Kubernetes' `hostUsers: false`), as
//! containerd 2.x makes them: a pod whose `userns_options` ask for mode
//! `POD` gets one user namespace with the given uid and gid mappings, made
//! by the pause process; every container of the pod joins it, and their
//! root filesystems get id-mapped lower layers (see `tasks::idmap`) so the
//! image's files appear owned by the mapped ids.
//!
//! The mappings are checked as containerd checks them: one line each,
//! a length of at least 1, both given in `POD` mode, none in `NODE` mode,
//! every other mode refused; and, as the id-mapped root filesystem
//! needs, container id 0 (root) mapped.

use berth_proto::cri::v1 as cri;
use serde_json::{json, Value};

/// One line of an id mapping: `length` ids from `container_id` inside
/// are `host_id`… on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMap {
    fn json(&self) -> Value {
        json!([{"containerID": self.container_id, "hostID": self.host_id, "size": self.length}])
    }
}

/// A pod's user namespace: its uid and gid mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUserns {
    pub uids: IdMap,
    pub gids: IdMap,
}

impl PodUserns {
    /// The host ids of the namespace's root (uid, gid): the owner the
    /// container's writable layer gets.
    pub fn root_on_host(&self) -> (u32, u32) {
        (self.uids.host_id, self.gids.host_id)
    }

    /// `linux.uidMappings` and `linux.gidMappings` of an OCI spec.
    pub fn add_to(&self, linux: &mut serde_json::Map<String, Value>) {
        linux.insert("uidMappings".into(), self.uids.json());
        linux.insert("gidMappings".into(), self.gids.json());
    }
}

fn one_mapping(what: &str, list: &[cri::IdMapping]) -> Result<Option<IdMap>, String> {
    match list {
        [] => Ok(None),
        [m] => {
            if m.length < 1 {
                return Err(format!(
                    "{what} mapping: invalid mapping length: {}",
                    m.length
                ));
            }
            if u64::from(m.host_id) + u64::from(m.length) > u64::from(u32::MAX) + 1
                || u64::from(m.container_id) + u64::from(m.length) > u64::from(u32::MAX) + 1
            {
                return Err(format!("{what} mapping: it overflows the id range"));
            }
            if m.container_id != 0 {
                return Err(format!(
                    "{what} mapping: container id 0 (root) must be mapped, the mapping starts at {}",
                    m.container_id
                ));
            }
            Ok(Some(IdMap {
                container_id: m.container_id,
                host_id: m.host_id,
                length: m.length,
            }))
        }
        more => Err(format!(
            "{what} mapping: only one mapping line supported, got {} mapping lines",
            more.len()
        )),
    }
}

/// The user namespace `options` ask for: `None` for the node's (no
/// options, or mode `NODE`), the mappings for `POD`; an error for bad
/// mappings or any other mode.
pub fn parse(options: Option<&cri::UserNamespace>) -> Result<Option<PodUserns>, String> {
    let Some(o) = options else { return Ok(None) };
    let uids = one_mapping("UID", &o.uids)?;
    let gids = one_mapping("GID", &o.gids)?;
    match cri::NamespaceMode::try_from(o.mode) {
        Ok(cri::NamespaceMode::Node) => {
            if uids.is_some() || gids.is_some() {
                return Err(format!(
                    "can't use user namespace mode \"NODE\" with mappings. Got {} UID mappings and {} GID mappings",
                    o.uids.len(),
                    o.gids.len()
                ));
            }
            Ok(None)
        }
        Ok(cri::NamespaceMode::Pod) => match (uids, gids) {
            (Some(uids), Some(gids)) => Ok(Some(PodUserns { uids, gids })),
            _ => Err(
                "can't use user namespace mode \"POD\" without UID and GID mappings".to_string(),
            ),
        },
        Ok(m) => Err(format!(
            "unsupported user namespace mode: {:?}",
            m.as_str_name()
        )),
        Err(_) => Err(format!("unknown user namespace mode {}", o.mode)),
    }
}

/// The id mapping of a container's root filesystem in a pod whose pause
/// process is `pause_pid`: the pause's user namespace, when the pod has
/// one of its own.
pub fn rootfs_idmap(
    pod: &cri::PodSandboxConfig,
    pause_pid: u32,
) -> Option<crate::tasks::idmap::RootfsIdmap> {
    let options = pod
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()?
        .userns_options
        .as_ref()?;
    // Checked when the pod ran.
    let userns = parse(Some(options)).ok()??;
    Some(crate::tasks::idmap::RootfsIdmap {
        userns: format!("/proc/{pause_pid}/ns/user").into(),
        root: userns.root_on_host(),
    })
}

/// Whether this host can run pods in user namespaces: the kernel has user
/// namespaces and id-mapped mounts of the layers of an overlay (Linux
/// 5.19 and later, as containerd's overlay snapshotter requires).
pub fn host_supports() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        std::path::Path::new("/proc/self/ns/user").exists() && kernel_at_least(&release, (5, 19))
    })
}

fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    fn userns(mode: cri::NamespaceMode, uids: Vec<cri::IdMapping>) -> cri::UserNamespace {
        cri::UserNamespace {
            mode: mode as i32,
            gids: uids.clone(),
            uids,
        }
    }

    #[test]
    fn pod_mode_with_one_mapping_is_taken() {
        let u = parse(Some(&userns(
            cri::NamespaceMode::Pod,
            vec![map(0, 100000, 65536)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(u.root_on_host(), (100000, 100000));
        let mut linux = serde_json::Map::new();
        u.add_to(&mut linux);
        assert_eq!(linux["uidMappings"][0]["hostID"], 100000);
        assert_eq!(linux["gidMappings"][0]["size"], 65536);
        assert_eq!(parse(None).unwrap(), None);
        assert_eq!(
            parse(Some(&userns(cri::NamespaceMode::Node, vec![]))).unwrap(),
            None
        );
    }

    #[test]
    fn bad_mappings_and_modes_are_refused() {
        let pod = cri::NamespaceMode::Pod;
        for (options, want) in [
            (
                userns(pod, vec![map(0, 1000, 10), map(10, 5000, 10)]),
                "only one mapping line",
            ),
            (userns(pod, vec![map(1, 1000, 100000)]), "container id 0"),
            (userns(pod, vec![map(0, 1000, 0)]), "invalid mapping length"),
            (userns(pod, vec![]), "without UID and GID mappings"),
            (
                userns(cri::NamespaceMode::Node, vec![map(0, 1000, 10)]),
                "with mappings",
            ),
            (
                userns(cri::NamespaceMode::Container, vec![]),
                "unsupported user namespace mode",
            ),
            (
                userns(cri::NamespaceMode::Target, vec![]),
                "unsupported user namespace mode",
            ),
            (
                userns(pod, vec![map(0, u32::MAX, 2)]),
                "overflows the id range",
            ),
        ] {
            let e = parse(Some(&options)).unwrap_err();
            assert!(e.contains(want), "{e} (want {want})");
        }
    }

    #[test]
    fn kernel_versions_compare() {
        assert!(kernel_at_least("6.18.44-fc-v1045", (5, 19)));
        assert!(kernel_at_least("5.19.0", (5, 19)));
        assert!(!kernel_at_least("5.15.0-91-generic", (5, 19)));
        assert!(!kernel_at_least("", (5, 19)));
    }
}
