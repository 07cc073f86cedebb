//! The OCI runtime spec of a sandbox's pause process, made from the
//! PodSandboxConfig as containerd's CRI makes it: its own PID, IPC and UTS
//! namespaces unless the pod shares the node's, the network namespace the
//! CRI pinned, the pod's hostname, sysctls, cgroup parent, user and
//! privileges, a read-only root, and the pod's shared /dev/shm.

use std::collections::BTreeMap;
use std::path::Path;

use berth_proto::cri::v1 as cri;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::containers::ProcessConfig;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

fn invalid(what: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// How a pod shares the node's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespaceModes {
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// The pod's own user namespace (`userns_options` mode `POD`).
    pub userns: Option<crate::cri::userns::PodUserns>,
}

fn mode(what: &'static str, value: i32) -> Result<cri::NamespaceMode, SpecError> {
    cri::NamespaceMode::try_from(value)
        .map_err(|_| invalid(what, format!("unknown namespace mode {value}")))
}

/// The pod's namespace modes; an unknown mode, or one a pod cannot have
/// (`TARGET`), is refused.
pub fn namespace_modes(config: &cri::PodSandboxConfig) -> Result<NamespaceModes, SpecError> {
    let Some(options) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
    else {
        return Ok(NamespaceModes::default());
    };
    let network = mode("network namespace mode", options.network)?;
    let pid = mode("pid namespace mode", options.pid)?;
    let ipc = mode("ipc namespace mode", options.ipc)?;
    for (what, m) in [("network", network), ("pid", pid), ("ipc", ipc)] {
        if m == cri::NamespaceMode::Target {
            return Err(invalid(
                "namespace options",
                format!("a pod's {what} namespace mode cannot be TARGET"),
            ));
        }
    }
    let userns = crate::cri::userns::parse(options.userns_options.as_ref())
        .map_err(|e| invalid("user namespace options", e))?;
    if userns.is_some() && !crate::cri::userns::host_supports() {
        return Err(invalid(
            "user namespace options",
            "this kernel cannot id-map the layers of an overlay (Linux 5.19 or later is needed)",
        ));
    }
    Ok(NamespaceModes {
        host_network: network == cri::NamespaceMode::Node,
        host_pid: pid == cri::NamespaceMode::Node,
        host_ipc: ipc == cri::NamespaceMode::Node,
        userns,
    })
}

/// Checks a hostname the pod asks for (empty is allowed: the host's
/// network, or no name).
pub fn check_hostname(name: &str) -> Result<(), SpecError> {
    let ok = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "hostname",
            format!("{name:?}: want at most 64 characters of a-z, A-Z, 0-9, '-' or '.'"),
        ))
    }
}

/// What the pause process's spec is made from.
pub struct PauseSpec<'a> {
    pub id: &'a str,
    pub config: &'a cri::PodSandboxConfig,
    pub modes: NamespaceModes,
    /// The pause image's process config.
    pub image: &'a ProcessConfig,
    /// The pinned network namespace; `None` with the host's.
    pub netns: Option<&'a Path>,
    /// The pod's /dev/shm; `None`: the host's (host IPC).
    pub shm: Option<&'a Path>,
    /// The cgroup (cgroupfs path) the pause process goes in.
    pub cgroup: &'a str,
    /// The OOM score the pause process gets (already clamped).
    pub oom_score_adj: i32,
}

/// The user a pod's pause runs as: run-as user and group, else the
/// image's numeric `User`, else root.
fn pause_user(p: &PauseSpec<'_>) -> Result<(u32, u32, Vec<u32>), SpecError> {
    let security = p
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let id = |what: &'static str, v: i64| {
        u32::try_from(v).map_err(|_| invalid(what, format!("{v} is not a user or group id")))
    };
    let image_user = p.image.user.clone().unwrap_or_default();
    let (mut uid, mut gid) = (0, 0);
    if !image_user.is_empty() {
        let (u, g) = image_user
            .split_once(':')
            .unwrap_or((image_user.as_str(), ""));
        // The pause image names its user by number (a name would need
        // the image's /etc/passwd, which a pause image has none of).
        uid = u.parse().map_err(|_| {
            invalid(
                "pause image user",
                format!("{image_user:?}: give a numeric user"),
            )
        })?;
        if !g.is_empty() {
            gid = g.parse().map_err(|_| {
                invalid(
                    "pause image user",
                    format!("{image_user:?}: give a numeric group"),
                )
            })?;
        }
    }
    let mut groups = Vec::new();
    if let Some(s) = security {
        if let Some(u) = &s.run_as_user {
            uid = id("run_as_user", u.value)?;
            if s.run_as_group.is_none() && image_user.is_empty() {
                gid = 0;
            }
        }
        if let Some(g) = &s.run_as_group {
            if s.run_as_user.is_none() {
                return Err(invalid("run_as_group", "it is given without run_as_user"));
            }
            gid = id("run_as_group", g.value)?;
        }
        for g in &s.supplemental_groups {
            groups.push(id("supplemental_groups", *g)?);
        }
    }
    Ok((uid, gid, groups))
}

/// The pause process's seccomp profile: the pod's (`Localhost` or
/// `Unconfined` as given, the deprecated path forms too), else
/// `RuntimeDefault` (the pause process needs only a few signal and wait
/// calls); none for a privileged pod.
#[allow(deprecated, reason = "older kubelets send only seccomp_profile_path")]
fn pause_seccomp(
    security: &cri::LinuxSandboxSecurityContext,
    caps: &Value,
) -> Result<Option<Value>, SpecError> {
    let mut seccomp = security.seccomp.clone();
    if seccomp.is_none() && security.seccomp_profile_path.is_empty() {
        seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
    }
    let sc = cri::LinuxContainerSecurityContext {
        privileged: security.privileged,
        seccomp,
        seccomp_profile_path: security.seccomp_profile_path.clone(),
        ..Default::default()
    };
    let caps: Vec<String> = caps
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    crate::cri::container::security::seccomp_profile(
        &sc,
        &caps,
        &crate::cri::container::host::SystemHost,
    )
    .map_err(|e| invalid("seccomp profile", e.to_string()))
}

/// The pause process's spec, as JSON (the form containers store).
pub fn pause_spec(p: &PauseSpec<'_>) -> Result<Value, SpecError> {
    check_hostname(&p.config.hostname)?;
    let linux_config = p.config.linux.clone().unwrap_or_default();
    let security = linux_config.security_context.clone().unwrap_or_default();
    let privileged = security.privileged;
    let mut args = p.image.entrypoint.clone().unwrap_or_default();
    args.extend(p.image.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        args.push("/pause".to_string());
    }
    let mut env = p.image.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
    }
    let cwd = p
        .image
        .working_dir
        .clone()
        .filter(|w| w.starts_with('/'))
        .unwrap_or_else(|| "/".to_string());
    let (uid, gid, groups) = pause_user(p)?;

    let mut spec =
        serde_json::to_value(Spec::default()).map_err(|e| invalid("spec", e.to_string()))?;
    spec["process"]["args"] = json!(args);
    spec["process"]["env"] = json!(env);
    spec["process"]["cwd"] = json!(cwd);
    spec["process"]["terminal"] = json!(false);
    let mut user = json!({"uid": uid, "gid": gid});
    if !groups.is_empty() {
        user["additionalGids"] = json!(groups);
    }
    spec["process"]["user"] = user;
    spec["process"]["noNewPrivileges"] = json!(!privileged);
    spec["process"]["oomScoreAdj"] = json!(p.oom_score_adj);
    if privileged {
        // Every capability this supervisor can give (its bounding set),
        // as for a privileged container: asking for one it lacks (this VM
        // has no CAP_SYS_RESOURCE) would fail the pause's start.
        let all = crate::cri::container::security::every_capability(
            &crate::cri::container::host::SystemHost,
        );
        spec["process"]["capabilities"] = json!({
            "bounding": all, "effective": all, "permitted": all,
        });
    }
    spec["root"] = json!({"path": "rootfs", "readonly": true});
    if p.config.hostname.is_empty() {
        if let Some(o) = spec.as_object_mut() {
            o.remove("hostname");
        }
    } else {
        spec["hostname"] = json!(p.config.hostname);
    }

    // Mounts: the defaults, the pod's /dev/shm (a bind of the tmpfs the
    // CRI made, or the host's), /sys read-only unless privileged.
    let mut mounts: Vec<Value> = spec["mounts"].as_array().cloned().unwrap_or_default();
    mounts.retain(|m| m["destination"] != "/dev/shm");
    let shm = p
        .shm
        .map_or_else(|| "/dev/shm".into(), |s| s.display().to_string());
    mounts.push(json!({
        "destination": "/dev/shm", "type": "bind", "source": shm,
        "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
    }));
    if privileged {
        for m in &mut mounts {
            if m["destination"] == "/sys" {
                if let Some(options) = m["options"].as_array_mut() {
                    options.retain(|o| o != "ro");
                }
            }
        }
    }
    spec["mounts"] = json!(mounts);

    let mut namespaces = vec![json!({"type": "mount"})];
    if !p.modes.host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if !p.modes.host_ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    // The host's network goes with the host's name.
    if !p.modes.host_network {
        namespaces.push(json!({"type": "uts"}));
    }
    if let Some(userns) = &p.modes.userns {
        // The pod's user namespace; its network namespace is made with it
        // (and pinned by the CRI once the pause exists), so that it is
        // the pod's own: sysfs, net sysctls and CAP_NET_ADMIN work in it.
        namespaces.insert(0, json!({"type": "user"}));
        if !p.modes.host_network {
            namespaces.push(json!({"type": "network"}));
        }
        if let Some(linux) = spec["linux"].as_object_mut() {
            userns.add_to(linux);
        }
    } else if let Some(netns) = p.netns {
        namespaces.push(json!({"type": "network", "path": netns.display().to_string()}));
    }
    if crate::tasks::host_cgroup_version() == 2 {
        namespaces.push(json!({"type": "cgroup"}));
    }
    spec["linux"]["namespaces"] = json!(namespaces);
    spec["linux"]["cgroupsPath"] = json!(p.cgroup);
    let sysctls: BTreeMap<&String, &String> = linux_config.sysctls.iter().collect();
    spec["linux"]["sysctl"] = json!(sysctls);
    if let Some(profile) = pause_seccomp(&security, &spec["process"]["capabilities"]["bounding"])? {
        spec["linux"]["seccomp"] = profile;
    }
    if privileged {
        // The host's devices and no masked or read-only paths.
        if let Some(linux) = spec["linux"].as_object_mut() {
            linux.remove("maskedPaths");
            linux.remove("readonlyPaths");
        }
    }

    let metadata = p.config.metadata.clone().unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = p
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "sandbox"),
        ("io.kubernetes.cri.sandbox-id", p.id),
        ("io.kubernetes.cri.sandbox-name", &metadata.name),
        ("io.kubernetes.cri.sandbox-namespace", &metadata.namespace),
        ("io.kubernetes.cri.sandbox-uid", &metadata.uid),
        (
            "io.kubernetes.cri.sandbox-log-directory",
            &p.config.log_directory,
        ),
    ] {
        annotations.insert(k.to_string(), v.to_string());
    }
    spec["annotations"] = json!(annotations);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-1".into(),
            ..Default::default()
        }
    }

    fn with_options(network: i32, pid: i32, ipc: i32) -> cri::PodSandboxConfig {
        let mut c = config();
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network,
                    pid,
                    ipc,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    }

    fn spec_of(config: &cri::PodSandboxConfig, image: &ProcessConfig) -> Value {
        let modes = namespace_modes(config).unwrap();
        pause_spec(&PauseSpec {
            id: "abc",
            config,
            modes,
            image,
            netns: (!modes.host_network).then_some(Path::new("/run/x/netns/abc")),
            shm: (!modes.host_ipc).then_some(Path::new("/run/x/shm")),
            cgroup: "/kubepods/abc",
            oom_score_adj: -998,
        })
        .unwrap()
    }

    fn namespace_types(spec: &Value) -> Vec<String> {
        spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_pod_gets_its_own_namespaces_and_the_pinned_network() {
        let image = ProcessConfig {
            entrypoint: Some(vec!["/pause".into()]),
            user: Some("65535:65535".into()),
            ..Default::default()
        };
        let spec = spec_of(&config(), &image);
        let types = namespace_types(&spec);
        for t in ["mount", "pid", "ipc", "uts", "network"] {
            assert!(types.contains(&t.to_string()), "{types:?}");
        }
        let net = spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/run/x/netns/abc");
        assert_eq!(spec["hostname"], "web-1");
        assert_eq!(spec["process"]["args"], json!(["/pause"]));
        assert_eq!(spec["process"]["user"]["uid"], 65535);
        assert_eq!(spec["process"]["user"]["gid"], 65535);
        assert_eq!(spec["process"]["oomScoreAdj"], -998);
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["linux"]["cgroupsPath"], "/kubepods/abc");
        assert_eq!(
            spec["annotations"]["io.kubernetes.cri.container-type"],
            "sandbox"
        );
        let shm = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert_eq!(shm["source"], "/run/x/shm");
    }

    #[test]
    fn the_pause_gets_runtime_default_seccomp_unless_privileged_or_unconfined() {
        let image = ProcessConfig::default();
        let spec = spec_of(&config(), &image);
        let seccomp = &spec["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO", "{seccomp}");
        let allowed: Vec<&str> = seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| {
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|n| n.as_str())
            })
            .collect();
        // What berth's pause calls.
        for call in ["rt_sigprocmask", "rt_sigtimedwait", "wait4", "exit_group"] {
            assert!(allowed.contains(&call), "{call} not allowed");
        }
        // Not what it does not need and the default profile refuses.
        assert!(!allowed.contains(&"mount"));

        let mut c = config();
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(spec_of(&c, &image)["linux"].get("seccomp").is_none());
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(spec_of(&c, &image)["linux"].get("seccomp").is_none());
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "/nonexistent/profile.json".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let modes = namespace_modes(&c).unwrap();
        let err = pause_spec(&PauseSpec {
            id: "abc",
            config: &c,
            modes,
            image: &image,
            netns: None,
            shm: None,
            cgroup: "/berth/k8s.io/abc",
            oom_score_adj: 0,
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/profile.json"),
            "{err}"
        );
    }

    #[test]
    fn node_modes_share_the_hosts_namespaces() {
        let node = cri::NamespaceMode::Node as i32;
        let spec = spec_of(&with_options(node, node, node), &ProcessConfig::default());
        let types = namespace_types(&spec);
        assert!(!types.contains(&"network".to_string()));
        assert!(!types.contains(&"uts".to_string()));
        assert!(!types.contains(&"pid".to_string()));
        assert!(!types.contains(&"ipc".to_string()));
        assert_eq!(spec["process"]["args"], json!(["/pause"]));
        let shm = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert_eq!(shm["source"], "/dev/shm");
    }

    #[test]
    fn unknown_and_target_modes_are_refused() {
        let e = namespace_modes(&with_options(7, 0, 0)).unwrap_err();
        assert!(e.to_string().contains("unknown namespace mode 7"), "{e}");
        let target = cri::NamespaceMode::Target as i32;
        assert!(namespace_modes(&with_options(0, target, 0)).is_err());
        let container = cri::NamespaceMode::Container as i32;
        assert_eq!(
            namespace_modes(&with_options(0, container, 0)).unwrap(),
            NamespaceModes::default()
        );
    }

    #[test]
    fn a_pod_in_its_own_user_namespace_makes_it_with_its_network() {
        let mut c = with_options(0, 0, 0);
        let map = cri::IdMapping {
            host_id: 100000,
            container_id: 0,
            length: 65536,
        };
        if let Some(o) = c
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            o.userns_options = Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: vec![map],
                gids: vec![map],
            });
        }
        let spec = spec_of(&c, &ProcessConfig::default());
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(namespaces[0], json!({"type": "user"}));
        // Its own network namespace, made with it (pinned afterwards).
        let net = namespaces.iter().find(|n| n["type"] == "network").unwrap();
        assert!(net.get("path").is_none(), "{net}");
        let want = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        assert_eq!(spec["linux"]["uidMappings"], want);
        assert_eq!(spec["linux"]["gidMappings"], want);

        if let Some(o) = c
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            o.userns_options = Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Target as i32,
                ..Default::default()
            });
        }
        let e = namespace_modes(&c).unwrap_err();
        assert!(
            e.to_string().contains("unsupported user namespace mode"),
            "{e}"
        );
    }

    #[test]
    fn run_as_user_and_group_and_sysctls_apply() {
        let mut c = config();
        let mut linux = cri::LinuxPodSandboxConfig::default();
        linux
            .sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        linux.security_context = Some(cri::LinuxSandboxSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 2000 }),
            supplemental_groups: vec![3000],
            ..Default::default()
        });
        c.linux = Some(linux);
        let spec = spec_of(&c, &ProcessConfig::default());
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(spec["process"]["user"]["gid"], 2000);
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([3000]));
        assert_eq!(spec["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
    }

    #[test]
    fn bad_hostnames_and_groups_without_users_are_refused() {
        let mut c = config();
        c.hostname = "a b".into();
        assert!(namespace_modes(&c).is_ok());
        let image = ProcessConfig::default();
        let e = pause_spec(&PauseSpec {
            id: "x",
            config: &c,
            modes: NamespaceModes::default(),
            image: &image,
            netns: None,
            shm: None,
            cgroup: "/x",
            oom_score_adj: 0,
        })
        .unwrap_err();
        assert!(e.to_string().contains("hostname"), "{e}");
        let mut c = config();
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                run_as_group: Some(cri::Int64Value { value: 1 }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = pause_spec(&PauseSpec {
            id: "x",
            config: &c,
            modes: NamespaceModes::default(),
            image: &image,
            netns: None,
            shm: None,
            cgroup: "/x",
            oom_score_adj: 0,
        })
        .unwrap_err();
        assert!(e.to_string().contains("run_as_group"), "{e}");
    }
}
