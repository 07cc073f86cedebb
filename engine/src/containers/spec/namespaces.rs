//! Namespaces (`NetworkMode`, `PidMode`, `IpcMode`, `UTSMode`,
//! `CgroupnsMode`), the hostname, and sysctls with the namespace rules
//! that let a container set them.

use serde_json::{json, Map, Value};

use super::{Host, SpecError, SpecInput};
use crate::types::{ContainerConfig, HostConfig};

/// Whose namespace a container uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Share {
    /// A new one of its own.
    Private,
    /// The host's.
    Host,
    /// The one of the container with this id or name.
    Container(String),
}

/// The container's namespace modes, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modes {
    pub net: Share,
    pub pid: Share,
    pub ipc: Share,
    /// `IpcMode` "none": a private namespace without `/dev/shm`.
    pub ipc_none: bool,
    pub uts_host: bool,
    pub cgroupns_private: bool,
}

fn container_of(mode: &str) -> Option<&str> {
    mode.strip_prefix("container:").filter(|c| !c.is_empty())
}

impl Modes {
    /// Docker's modes, with its defaults: a private IPC namespace, and a
    /// private cgroup namespace on cgroup v2 (the host's on v1). A network
    /// mode naming a network (`default`, `bridge`, a user's) is a private
    /// namespace, as `none` is; that the network exists is checked by
    /// `crate::network` at create.
    pub fn parse(hc: &HostConfig, host: &dyn Host) -> Result<Modes, SpecError> {
        let bad = |what, mode: &str| SpecError::NamespaceMode {
            what,
            mode: mode.to_string(),
        };
        let net = match hc.network_mode.as_str() {
            "host" => Share::Host,
            m => match container_of(m) {
                Some(c) => Share::Container(c.into()),
                None if m.starts_with("container:") => return Err(bad("network", m)),
                None => Share::Private,
            },
        };
        let pid = match hc.pid_mode.as_str() {
            "" => Share::Private,
            "host" => Share::Host,
            m => Share::Container(container_of(m).ok_or_else(|| bad("PID", m))?.into()),
        };
        let mut ipc_none = false;
        let ipc = match hc.ipc_mode.as_str() {
            "" | "private" | "shareable" => Share::Private,
            "none" => {
                ipc_none = true;
                Share::Private
            }
            "host" => Share::Host,
            m => Share::Container(container_of(m).ok_or_else(|| bad("IPC", m))?.into()),
        };
        let uts_host = match hc.uts_mode.as_str() {
            "" => false,
            "host" => true,
            m => return Err(bad("UTS", m)),
        };
        let cgroupns_private = match hc.cgroupns_mode.as_str() {
            "" => host.cgroup_v2(),
            "private" => true,
            "host" => false,
            m => return Err(bad("cgroup namespace", m)),
        };
        Ok(Modes {
            net,
            pid,
            ipc,
            ipc_none,
            uts_host,
            cgroupns_private,
        })
    }

    pub fn pid_private(&self) -> bool {
        self.pid == Share::Private
    }
}

/// The container's hostname: the Config's, the host's with `--network
/// host`, else the first 12 digits of its id.
pub fn hostname(config: &ContainerConfig, id: &str, modes: &Modes, host: &dyn Host) -> String {
    if !config.hostname.is_empty() {
        config.hostname.clone()
    } else if modes.net == Share::Host || modes.uts_host {
        host.hostname()
    } else {
        id.chars().take(12).collect()
    }
}

/// The spec's `linux.namespaces`, in Docker's order.
pub fn namespaces(modes: &Modes, input: &SpecInput<'_>) -> Result<Value, SpecError> {
    let joined = |what: &'static str, kind: &str, share: &Share, pid: Option<u32>| {
        Ok::<_, SpecError>(match share {
            Share::Private => Some(json!({"type": kind})),
            Share::Host => None,
            Share::Container(c) => {
                let pid = pid.ok_or_else(|| SpecError::PeerNotRunning {
                    what,
                    container: c.clone(),
                })?;
                Some(json!({"type": kind, "path": format!("/proc/{pid}/ns/{}", ns_file(kind))}))
            }
        })
    };
    let mut out = vec![json!({"type": "mount"})];
    out.extend(joined("network", "network", &modes.net, input.peers.net)?);
    if !modes.uts_host {
        out.push(json!({"type": "uts"}));
    }
    out.extend(joined("PID", "pid", &modes.pid, input.peers.pid)?);
    out.extend(joined("IPC", "ipc", &modes.ipc, input.peers.ipc)?);
    if modes.cgroupns_private {
        out.push(json!({"type": "cgroup"}));
    }
    Ok(Value::Array(out))
}

fn ns_file(kind: &str) -> &str {
    match kind {
        "network" => "net",
        k => k,
    }
}

/// The IPC sysctls a container may set in an IPC namespace of its own.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// `linux.sysctl`: Docker's defaults for a network namespace of the
/// container's own (ping sockets for every group, ports below 1024
/// without CAP_NET_BIND_SERVICE) where the kernel has them, then
/// `HostConfig.Sysctls`, each one namespaced and in a namespace the
/// container does not share with the host.
pub fn sysctls(
    hc: &HostConfig,
    modes: &Modes,
    host: &dyn Host,
) -> Result<Map<String, Value>, SpecError> {
    let mut out = Map::new();
    if modes.net == Share::Private {
        if host.sysctl_exists("net.ipv4.ping_group_range") {
            out.insert("net.ipv4.ping_group_range".into(), json!("0 2147483647"));
        }
        if host.sysctl_exists("net.ipv4.ip_unprivileged_port_start") {
            out.insert("net.ipv4.ip_unprivileged_port_start".into(), json!("0"));
        }
    }
    for (name, value) in hc.sysctls.iter().flatten() {
        let ipc = IPC_SYSCTLS.contains(&name.as_str()) || name.starts_with("fs.mqueue.");
        if ipc {
            if modes.ipc == Share::Host {
                return Err(SpecError::SysctlHostNamespace {
                    sysctl: name.clone(),
                    what: "ipc",
                });
            }
        } else if name.starts_with("net.") {
            if modes.net == Share::Host {
                return Err(SpecError::SysctlHostNamespace {
                    sysctl: name.clone(),
                    what: "network",
                });
            }
        } else {
            return Err(SpecError::SysctlNotAllowed(name.clone()));
        }
        out.insert(name.clone(), json!(value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Case, FakeHost};
    use super::*;

    fn hc(f: impl FnOnce(&mut HostConfig)) -> HostConfig {
        let mut h = HostConfig::default();
        f(&mut h);
        h
    }

    #[test]
    fn modes_take_dockers_values_and_refuse_others() {
        let host = FakeHost::default();
        let m = Modes::parse(&HostConfig::default(), &host).unwrap();
        assert_eq!(
            (m.net, m.pid, m.ipc),
            (Share::Private, Share::Private, Share::Private)
        );
        assert!(
            m.cgroupns_private,
            "cgroup v2 gives a private cgroup namespace"
        );
        let m = Modes::parse(
            &hc(|h| {
                h.network_mode = "container:abc".into();
                h.pid_mode = "host".into();
                h.ipc_mode = "none".into();
                h.uts_mode = "host".into();
                h.cgroupns_mode = "host".into();
            }),
            &host,
        )
        .unwrap();
        assert_eq!(m.net, Share::Container("abc".into()));
        assert_eq!(m.pid, Share::Host);
        assert!(m.ipc_none && m.uts_host && !m.cgroupns_private);
        let table: &[Case] = &[
            (|h| h.pid_mode = "bogus".into(), "invalid PID mode: bogus"),
            (
                |h| h.ipc_mode = "container:".into(),
                "invalid IPC mode: container:",
            ),
            (
                |h| h.uts_mode = "private".into(),
                "invalid UTS mode: private",
            ),
            (
                |h| h.cgroupns_mode = "x".into(),
                "invalid cgroup namespace mode: x",
            ),
        ];
        for (set, want) in table {
            let err = Modes::parse(&hc(set), &host).unwrap_err();
            assert_eq!(err.to_string(), *want);
        }
    }

    #[test]
    fn hostname_defaults_to_the_short_id_or_the_hosts() {
        let host = FakeHost::default();
        let id = "0123456789abcdef0123";
        let private = Modes::parse(&HostConfig::default(), &host).unwrap();
        let c = ContainerConfig::default();
        assert_eq!(hostname(&c, id, &private, &host), "0123456789ab");
        let on_host = Modes::parse(&hc(|h| h.network_mode = "host".into()), &host).unwrap();
        assert_eq!(hostname(&c, id, &on_host, &host), "thehost");
        let named = ContainerConfig {
            hostname: "web".into(),
            ..Default::default()
        };
        assert_eq!(hostname(&named, id, &on_host, &host), "web");
    }

    #[test]
    fn sysctls_need_a_namespace_of_the_containers_own() {
        let host = FakeHost::default();
        let with = |net: &str, ipc: &str, name: &str| {
            let h = hc(|h| {
                h.network_mode = net.into();
                h.ipc_mode = ipc.into();
                h.sysctls = Some([(name.to_string(), "1".to_string())].into());
            });
            let modes = Modes::parse(&h, &host).unwrap();
            sysctls(&h, &modes, &host).map_err(|e| e.to_string())
        };
        let ok = with("none", "", "net.ipv4.ip_forward").unwrap();
        assert_eq!(ok["net.ipv4.ip_forward"], "1");
        assert_eq!(ok["net.ipv4.ping_group_range"], "0 2147483647");
        assert_eq!(ok["net.ipv4.ip_unprivileged_port_start"], "0");
        assert!(with("", "", "kernel.shmmax").is_ok());
        assert!(with("", "", "fs.mqueue.msg_max").is_ok());
        assert_eq!(
            with("host", "", "net.core.somaxconn").unwrap_err(),
            "sysctl \"net.core.somaxconn\" is not allowed in the host's network namespace"
        );
        assert_eq!(
            with("", "host", "kernel.sem").unwrap_err(),
            "sysctl \"kernel.sem\" is not allowed in the host's ipc namespace"
        );
        assert_eq!(
            with("", "", "kernel.panic").unwrap_err(),
            "sysctl 'kernel.panic' is not allowed"
        );
        let on_host = with("host", "", "kernel.sem").unwrap();
        assert!(!on_host.contains_key("net.ipv4.ping_group_range"));
    }
}
