//! The OCI runtime spec of a CRI container, built as containerd's CRI
//! plugin builds it (`container_create_linux.go` on containerd's default
//! spec): the container's `ContainerConfig`, its pod's `PodSandboxConfig`
//! and namespaces (joined through the pause process's `/proc/<pid>/ns/*`
//! or the pod's pinned network namespace), and the image's config.
//!
//! [`build`] is a pure function of a [`SpecInput`]; what it needs of the
//! machine (whether a mount source exists and how its mount propagates,
//! device nodes, capabilities, a seccomp profile file) it asks a
//! [`Host`]. The spec is JSON, ready for `containers::create`.

use std::collections::BTreeMap;
use std::path::Path;

use berth_proto::cri::v1 as cri;
use serde_json::{json, Map, Value};

use super::host::{Host, HostDevice};
use super::mounts::mounts;
use super::security::{capabilities, capabilities_json, seccomp_profile};
pub use super::security::{DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
use crate::containers::{Accounts, ContainerError, ProcessConfig};

/// PATH when the image sets none (containerd's default spec).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a container's spec cannot be built: the caller's bad input (the
/// CRI's InvalidArgument), but for [`SpecError::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified")]
    NoCommand,
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("user group {0} is specified without user")]
    GroupWithoutUser(i64),
    #[error(transparent)]
    User(#[from] ContainerError),
    #[error("host path {path:?} of mount {container_path:?}: {reason}")]
    MountSource {
        path: String,
        container_path: String,
        reason: String,
    },
    #[error("path {path:?} is mounted on {mount:?} but it is not a shared mount")]
    NotShared { path: String, mount: String },
    #[error("path {path:?} is mounted on {mount:?} but it is not a shared or slave mount")]
    NotSharedOrSlave { path: String, mount: String },
    #[error("device {path:?}: {reason}")]
    Device { path: String, reason: String },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("no privileged container allowed in sandbox")]
    PrivilegedNotAllowed,
    #[error("seccomp profile {profile:?}: {reason}")]
    Seccomp { profile: String, reason: String },
    #[error("{what} namespace mode {mode} is not supported")]
    NamespaceMode { what: &'static str, mode: i32 },
    #[error("{0}")]
    Internal(String),
}

/// What a container needs of its pod.
#[derive(Clone, Debug)]
pub struct Sandbox<'a> {
    pub id: &'a str,
    pub config: &'a cri::PodSandboxConfig,
    /// The pause process, whose namespaces the container joins.
    pub pid: u32,
    /// The pod's pinned network namespace, when it has one.
    pub netns: Option<&'a Path>,
    /// The pod's `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` and
    /// `/dev/shm` on the host, each bind mounted unless the container
    /// mounts something there itself.
    pub hostname_file: Option<&'a Path>,
    pub hosts_file: Option<&'a Path>,
    pub resolv_conf: Option<&'a Path>,
    pub shm: Option<&'a Path>,
}

/// What the container's image gives.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    pub name: &'a str,
    pub process: &'a ProcessConfig,
    /// The image's /etc/passwd and /etc/group.
    pub accounts: &'a Accounts,
}

/// Everything a container's spec is built from.
#[derive(Clone, Copy, Debug)]
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a Sandbox<'a>,
    pub image: Image<'a>,
    /// The pid of the container a `TARGET` pid namespace names.
    pub target_pid: Option<u32>,
}

fn invalid(what: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        what,
        reason: reason.into(),
    }
}

fn security(config: &cri::ContainerConfig) -> cri::LinuxContainerSecurityContext {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default()
}

fn sandbox_security(config: &cri::PodSandboxConfig) -> cri::LinuxSandboxSecurityContext {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default()
}

/// The container's namespace options: its own, else its pod's.
pub fn namespace_options(input: &SpecInput<'_>) -> cri::NamespaceOption {
    security(input.config)
        .namespace_options
        .or_else(|| sandbox_security(input.sandbox.config).namespace_options)
        .unwrap_or_default()
}

/// The container's runtime spec (JSON).
pub fn build(input: &SpecInput<'_>, host: &dyn Host) -> Result<Value, SpecError> {
    let config = input.config;
    let sc = security(config);
    if sc.privileged && !sandbox_security(input.sandbox.config).privileged {
        return Err(SpecError::PrivilegedNotAllowed);
    }
    let ns = namespace_options(input);
    let host_network = ns.network == cri::NamespaceMode::Node as i32;

    let caps = capabilities(&sc, host)?;
    let mut process = process(input, &sc, host_network, host)?;
    process.insert("capabilities".into(), capabilities_json(&caps));
    process.insert("noNewPrivileges".into(), json!(sc.no_new_privs));
    process.insert(
        "rlimits".into(),
        json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]),
    );
    let resources = config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    if resources.oom_score_adj != 0 {
        process.insert(
            "oomScoreAdj".into(),
            json!(oom_score_adj(resources.oom_score_adj, host)?),
        );
    }

    let mut linux = Map::new();
    linux.insert(
        "cgroupsPath".into(),
        json!(cgroups_path(input.sandbox.config, input.id)),
    );
    let (devices, rules) = devices(config, sc.privileged, host)?;
    let mut res = linux_resources(&resources)?;
    res.insert("devices".into(), Value::Array(rules));
    linux.insert("resources".into(), Value::Object(res));
    linux.insert("devices".into(), Value::Array(devices));
    linux.insert("namespaces".into(), namespaces(input, &ns, host)?);
    if let Some(userns) = pod_userns(input, &ns)? {
        userns.add_to(&mut linux);
    }
    let sysctls = input
        .sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    if !sysctls.is_empty() {
        linux.insert(
            "sysctl".into(),
            json!(sysctls.into_iter().collect::<BTreeMap<_, _>>()),
        );
    }
    if let Some(profile) = seccomp_profile(&sc, &caps, host)? {
        linux.insert("seccomp".into(), profile);
    }
    if !sc.privileged {
        let pick = |given: &[String], default: &[&str]| -> Vec<String> {
            if given.is_empty() {
                default.iter().map(|p| p.to_string()).collect()
            } else {
                given.to_vec()
            }
        };
        linux.insert(
            "maskedPaths".into(),
            json!(pick(&sc.masked_paths, DEFAULT_MASKED_PATHS)),
        );
        linux.insert(
            "readonlyPaths".into(),
            json!(pick(&sc.readonly_paths, DEFAULT_READONLY_PATHS)),
        );
    }
    let (mounts, rootfs_propagation) = mounts(input, &sc, &ns, host)?;
    if let Some(p) = rootfs_propagation {
        linux.insert("rootfsPropagation".into(), json!(p));
    }

    let mut spec = Map::new();
    spec.insert("ociVersion".into(), json!("1.0.2-dev"));
    spec.insert(
        "root".into(),
        json!({"path": "rootfs", "readonly": sc.readonly_rootfs}),
    );
    spec.insert("process".into(), Value::Object(process));
    spec.insert("mounts".into(), Value::Array(mounts));
    spec.insert("linux".into(), Value::Object(linux));
    spec.insert("annotations".into(), json!(annotations(input)));
    Ok(Value::Object(spec))
}

/// The annotations containerd gives a CRI container's spec.
fn annotations(input: &SpecInput<'_>) -> BTreeMap<String, String> {
    let meta = input.sandbox.config.metadata.clone().unwrap_or_default();
    let name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    BTreeMap::from([
        (
            "io.kubernetes.cri.container-type".into(),
            "container".into(),
        ),
        ("io.kubernetes.cri.container-name".into(), name),
        (
            "io.kubernetes.cri.image-name".into(),
            input.image.name.into(),
        ),
        (
            "io.kubernetes.cri.sandbox-id".into(),
            input.sandbox.id.into(),
        ),
        ("io.kubernetes.cri.sandbox-name".into(), meta.name),
        ("io.kubernetes.cri.sandbox-namespace".into(), meta.namespace),
        ("io.kubernetes.cri.sandbox-uid".into(), meta.uid),
    ])
}

/// `<pod cgroup parent>/<id>` (a relative parent taken from the root, as
/// the pod's own cgroup is); `/berth/k8s.io/<id>` without a parent.
pub fn cgroups_path(pod: &cri::PodSandboxConfig, id: &str) -> String {
    let parent = pod
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map(|p| format!("/{p}"))
        .unwrap_or_else(|| format!("/berth/{}", super::super::NAMESPACE));
    format!("{parent}/{id}")
}

/// The process: args, env, working dir, user, terminal.
fn process(
    input: &SpecInput<'_>,
    sc: &cri::LinuxContainerSecurityContext,
    host_network: bool,
    host: &dyn Host,
) -> Result<Map<String, Value>, SpecError> {
    let config = input.config;
    let image = input.image.process;
    let args = args(config, image)?;
    for a in &args {
        if a.contains('\0') {
            return Err(invalid("command", format!("{a:?} contains a NUL byte")));
        }
    }

    let hostname = if host_network {
        host.hostname()
    } else {
        input.sandbox.config.hostname.clone()
    };
    let mut env: Vec<String> = vec![DEFAULT_PATH.to_string()];
    let mut set = |entry: String| {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    };
    set(format!("HOSTNAME={hostname}"));
    for e in image.env.clone().unwrap_or_default() {
        set(e);
    }
    for kv in &config.envs {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(invalid(
                "environment variable",
                format!("{:?} is not a variable name", kv.key),
            ));
        }
        set(format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)));
    }
    if config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if env.iter().any(|e| e.contains('\0')) {
        return Err(invalid("environment", "a variable contains a NUL byte"));
    }

    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else {
        image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    if !cwd.starts_with('/') {
        return Err(invalid(
            "working directory",
            format!("{cwd:?} is not an absolute path"),
        ));
    }

    let user = user(sc, image, input.image.accounts)?;
    let mut p = Map::new();
    p.insert("terminal".into(), json!(config.tty));
    p.insert("user".into(), user);
    p.insert("args".into(), json!(args));
    p.insert("env".into(), json!(env));
    p.insert("cwd".into(), json!(cwd));
    Ok(p)
}

/// containerd's rule: `command` replaces the image's Entrypoint and `args`
/// its Cmd; with a command, the image's Cmd is not used.
pub fn args(
    config: &cri::ContainerConfig,
    image: &ProcessConfig,
) -> Result<Vec<String>, SpecError> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint.clone().unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(command)
}

/// The user: `run_as_username` or `run_as_user` (with `run_as_group`),
/// else the image's `User`, resolved in the image's /etc/passwd; its
/// groups in /etc/group and the supplemental groups are added.
fn user(
    sc: &cri::LinuxContainerSecurityContext,
    image: &ProcessConfig,
    accounts: &Accounts,
) -> Result<Value, SpecError> {
    let given = if !sc.run_as_username.is_empty() {
        Some(sc.run_as_username.clone())
    } else {
        sc.run_as_user.as_ref().map(|u| u.value.to_string())
    };
    if let Some(u) = &sc.run_as_user {
        if u.value < 0 || u.value > i64::from(u32::MAX) {
            return Err(invalid(
                "run_as_user",
                format!("{} is out of range", u.value),
            ));
        }
    }
    let group = match &sc.run_as_group {
        Some(g) if given.is_none() => return Err(SpecError::GroupWithoutUser(g.value)),
        Some(g) => Some(
            u32::try_from(g.value)
                .map_err(|_| invalid("run_as_group", format!("{} is out of range", g.value)))?,
        ),
        None => None,
    };
    let text = given
        .or_else(|| image.user.clone().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "0".into());
    // The user part decides the groups from /etc/group; a group given
    // with it only changes the primary group.
    let (user_part, group_part) = match text.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (text.clone(), None),
    };
    let resolved = accounts.resolve(&user_part)?;
    let mut gid = resolved.gid;
    if let Some(g) = group_part {
        gid = accounts.resolve(&format!("{user_part}:{g}"))?.gid;
    }
    if let Some(g) = group {
        gid = g;
    }
    let mut additional = resolved.additional_gids;
    for g in &sc.supplemental_groups {
        let g = u32::try_from(*g)
            .map_err(|_| invalid("supplemental group", format!("{g} is out of range")))?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    let mut user = json!({"uid": resolved.uid, "gid": gid});
    if !additional.is_empty() {
        user["additionalGids"] = json!(additional);
    }
    Ok(user)
}

/// The requested `oom_score_adj`, raised to what the supervisor may give
/// (containerd's `restrict_oom_score_adj`).
fn oom_score_adj(value: i64, host: &dyn Host) -> Result<i64, SpecError> {
    if !(-1000..=1000).contains(&value) {
        return Err(invalid(
            "oom_score_adj",
            format!("{value} is not in [-1000, 1000]"),
        ));
    }
    Ok(value.max(host.min_oom_score_adj()))
}

/// `linux.resources` (without devices) from the CRI's resources.
pub fn linux_resources(r: &cri::LinuxContainerResources) -> Result<Map<String, Value>, SpecError> {
    let mut out = Map::new();
    let mut cpu = Map::new();
    if r.cpu_shares != 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period != 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    if r.memory_limit_in_bytes < 0 {
        return Err(invalid(
            "memory limit",
            format!("{} is negative", r.memory_limit_in_bytes),
        ));
    }
    if r.memory_limit_in_bytes != 0 {
        let swap = if r.memory_swap_limit_in_bytes != 0 {
            r.memory_swap_limit_in_bytes
        } else {
            r.memory_limit_in_bytes
        };
        out.insert(
            "memory".into(),
            json!({"limit": r.memory_limit_in_bytes, "swap": swap}),
        );
    }
    if !r.hugepage_limits.is_empty() {
        let pages: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
        out.insert("hugepageLimits".into(), json!(pages));
    }
    if !r.unified.is_empty() {
        out.insert(
            "unified".into(),
            json!(r.unified.iter().collect::<BTreeMap<_, _>>()),
        );
    }
    Ok(out)
}

/// containerd's device rules: deny all, then the standard nodes.
fn default_rules() -> Vec<Value> {
    let allow = |kind: &str, major: i64, minor: i64, access: &str| {
        let mut rule = json!({"allow": true, "type": kind, "access": access});
        if major >= 0 {
            rule["major"] = json!(major);
        }
        if minor >= 0 {
            rule["minor"] = json!(minor);
        }
        rule
    };
    vec![
        json!({"allow": false, "access": "rwm"}),
        allow("c", -1, -1, "m"),
        allow("b", -1, -1, "m"),
        allow("c", 1, 3, "rwm"),
        allow("c", 1, 8, "rwm"),
        allow("c", 1, 7, "rwm"),
        allow("c", 5, 0, "rwm"),
        allow("c", 1, 5, "rwm"),
        allow("c", 1, 9, "rwm"),
        allow("c", 5, 1, "rwm"),
        allow("c", 136, -1, "rwm"),
        allow("c", 5, 2, "rwm"),
        allow("c", 10, 200, "rwm"),
    ]
}

fn device_json(path: &str, d: &HostDevice) -> Value {
    json!({"path": path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
           "fileMode": d.file_mode, "uid": d.uid, "gid": d.gid})
}

/// `linux.devices` and the device cgroup rules: every host device when
/// privileged, else the config's devices with their permissions.
fn devices(
    config: &cri::ContainerConfig,
    privileged: bool,
    host: &dyn Host,
) -> Result<(Vec<Value>, Vec<Value>), SpecError> {
    let mut devs = Vec::new();
    let mut rules = default_rules();
    if privileged {
        for (path, d) in host.host_devices() {
            devs.push(device_json(&path.to_string_lossy(), &d));
        }
        rules = vec![json!({"allow": true, "access": "rwm"})];
    }
    for d in &config.devices {
        let fail = |reason: String| SpecError::Device {
            path: d.host_path.clone(),
            reason,
        };
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !perms.chars().all(|c| "rwm".contains(c)) {
            return Err(fail(format!("invalid cgroup permissions {perms:?}")));
        }
        let target = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        if !target.starts_with('/') {
            return Err(fail(format!("container path {target:?} is not absolute")));
        }
        let node = match host.device(Path::new(&d.host_path)) {
            Ok(Some(node)) => node,
            Ok(None) => return Err(fail("not a device node".into())),
            Err(e) => return Err(fail(e.to_string())),
        };
        devs.push(device_json(target, &node));
        rules.push(json!({"allow": true, "type": node.kind.to_string(),
                          "major": node.major, "minor": node.minor, "access": perms}));
    }
    Ok((devs, rules))
}

/// `linux.namespaces`: the pod's network, IPC and UTS (and PID in `POD`
/// mode) joined, none of them in `NODE` mode; a mount namespace of its
/// own, and a cgroup namespace on cgroup v2.
fn namespaces(
    input: &SpecInput<'_>,
    ns: &cri::NamespaceOption,
    host: &dyn Host,
) -> Result<Value, SpecError> {
    use cri::NamespaceMode as Mode;
    let pid = input.sandbox.pid;
    let of = |p: u32, kind: &str| format!("/proc/{p}/ns/{kind}");
    let mode = |what: &'static str, m: i32| {
        Mode::try_from(m).map_err(|_| SpecError::NamespaceMode { what, mode: m })
    };
    let mut out = vec![json!({"type": "mount"})];
    match mode("network", ns.network)? {
        Mode::Node => {}
        Mode::Pod | Mode::Container | Mode::Target => {
            let path = match input.sandbox.netns {
                Some(p) => p.to_string_lossy().into_owned(),
                None => of(pid, "net"),
            };
            out.push(json!({"type": "network", "path": path}));
        }
    }
    match mode("ipc", ns.ipc)? {
        Mode::Node => {}
        _ => out.push(json!({"type": "ipc", "path": of(pid, "ipc")})),
    }
    // UTS follows the network: a pod in the host's network has its name.
    if ns.network != Mode::Node as i32 {
        out.push(json!({"type": "uts", "path": of(pid, "uts")}));
    }
    match mode("pid", ns.pid)? {
        Mode::Node => {}
        Mode::Pod => out.push(json!({"type": "pid", "path": of(pid, "pid")})),
        Mode::Container => out.push(json!({"type": "pid"})),
        Mode::Target => {
            let target = input.target_pid.ok_or_else(|| {
                invalid(
                    "pid namespace target",
                    format!("container {:?} is not running", ns.target_id),
                )
            })?;
            out.push(json!({"type": "pid", "path": of(target, "pid")}));
        }
    }
    if pod_userns(input, ns)?.is_some() {
        out.insert(0, json!({"type": "user", "path": of(pid, "user")}));
    }
    if host.cgroup_v2() {
        out.push(json!({"type": "cgroup"}));
    }
    Ok(Value::Array(out))
}

/// The pod's user namespace the container joins (mode `POD`), or `None`
/// (the node's). The container's options must name the pod's own: the
/// same mode and mappings (it cannot leave the pod's namespace, whose
/// network it shares, nor have other ids in it).
pub fn pod_userns(
    input: &SpecInput<'_>,
    ns: &cri::NamespaceOption,
) -> Result<Option<crate::cri::userns::PodUserns>, SpecError> {
    use crate::cri::userns::parse;
    let pod_options = sandbox_security(input.sandbox.config)
        .namespace_options
        .and_then(|o| o.userns_options);
    let pod = parse(pod_options.as_ref()).map_err(|e| invalid("pod user namespace", e))?;
    let Some(own) = &ns.userns_options else {
        return Ok(pod);
    };
    let mine = parse(Some(own)).map_err(|e| invalid("user namespace options", e))?;
    if mine != pod {
        return Err(invalid(
            "user namespace options",
            "they differ from the pod's: a container shares its pod's user namespace",
        ));
    }
    Ok(pod)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
