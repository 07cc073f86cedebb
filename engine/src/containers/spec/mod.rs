//! A container's OCI runtime spec, built from its image config and Docker's
//! Config and HostConfig, the way dockerd builds it (moby's
//! `daemon/oci_linux.go` on `oci/defaults.go`).
//!
//! [`build`] is a pure function of a [`SpecInput`]: what it needs of the
//! machine (CPU count, kernel release, device nodes, whether a bind source
//! exists, a seccomp profile file) it asks a [`Host`], which
//! [`SystemHost`] answers from the real system and tests answer from a
//! table. The parts, by concern:
//! - [`process`]: the image config merged into the container's, args,
//!   env, working dir, user, rlimits, `--init`;
//! - [`mounts`]: the default mounts, binds, tmpfs, `--mount`, `/dev/shm`
//!   and the generated `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`;
//! - [`resources`]: the cgroup limits, with Docker's range checks;
//! - [`security`]: capabilities, privileged, `--security-opt`, masked and
//!   read-only paths; [`seccomp`]: profiles (Docker's default one is our
//!   data, `default_seccomp.json`);
//! - [`namespaces`]: namespaces, hostname and sysctls;
//! - [`devices`]: device nodes and the device cgroup rules.

pub mod devices;
mod host;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod resources;
pub mod seccomp;
pub mod security;

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::images::ImageConfigFile;
use crate::types::{ContainerConfig, HostConfig};

pub use host::{Host, HostDevice, SystemHost};
pub use process::{group_add_gids, merge_image_config};

/// The user the process runs as, resolved by the caller against the
/// container's `/etc/passwd` and `/etc/group` (the merged Config's `User`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The user's supplementary groups from `/etc/group`.
    pub additional_gids: Vec<u32>,
}

/// Host paths of the files the engine writes for the container; each one
/// is bind mounted at its place unless the container mounts something
/// there itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkFiles {
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
}

/// The pids of the running containers that `PidMode`, `IpcMode` and
/// `NetworkMode` name as `container:ID` (None: that container is not
/// running), resolved by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    pub pid: Option<u32>,
    pub ipc: Option<u32>,
    pub net: Option<u32>,
}

/// Everything a container's spec is built from.
#[derive(Clone, Copy, Debug)]
pub struct SpecInput<'a> {
    /// The container's full id (64 hex digits).
    pub id: &'a str,
    /// The Config as the client sent it (or as [`merge_image_config`]
    /// returned it: merging again changes nothing).
    pub config: &'a ContainerConfig,
    pub host_config: &'a HostConfig,
    pub image: &'a ImageConfigFile,
    pub user: &'a ResolvedUser,
    /// `HostConfig.GroupAdd` as gids (see [`group_add_gids`]).
    pub group_add: &'a [u32],
    pub files: &'a NetworkFiles,
    pub peers: &'a Peers,
    /// The init binary bind mounted at `/sbin/docker-init` for `--init`.
    pub init_path: Option<&'a std::path::Path>,
}

/// A built spec, and the bind sources of `-v` that do not exist yet: Docker
/// creates them (as directories) when the container starts, so the caller
/// does too; `--mount` refuses a missing source instead.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltSpec {
    pub spec: Value,
    pub missing_bind_sources: Vec<PathBuf>,
}

/// Why a spec cannot be built. The messages are dockerd's where a client
/// shows them (so some begin with a capital, as Docker's do); every variant
/// is the client's bad input (Docker's 400) except
/// [`SpecError::PeerNotRunning`] (409, as Docker answers for a container
/// that is not running). Unknown networks are refused at create, by
/// `crate::network`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("No command specified")]
    NoCommand,
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    WorkingDir(String),
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooLow,
    #[error("Minimum memory reservation allowed is 6MB")]
    MemoryReservationTooLow,
    #[error("Minimum memoryswap limit should be larger than memory limit, see usage")]
    SwapBelowMemory,
    #[error("You should always set the Memory limit when using Memoryswap limit, see usage")]
    SwapWithoutMemory,
    #[error("Minimum memory limit can not be less than memory reservation limit, see usage")]
    MemoryBelowReservation,
    #[error("Invalid value: {0}, valid memory swappiness range is 0-100")]
    Swappiness(i64),
    #[error("Conflicting options: Nano CPUs and CPU {0} cannot both be set")]
    NanoCpusConflict(&'static str),
    #[error("Range of CPUs is from 0.01 to {0}.00, as there are only {0} CPUs available")]
    NanoCpusRange(u32),
    #[error("shares: invalid argument")]
    CpuShares,
    #[error(
        "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
    )]
    CpuPeriod,
    #[error("CPU cfs quota can not be less than 1ms (i.e. 1000)")]
    CpuQuota,
    #[error("Invalid value {value} for cpuset {what}: invalid format: {value}")]
    CpusetFormat { what: &'static str, value: String },
    #[error("Requested CPUs are not available - requested {requested}, available: {available}")]
    CpusetUnavailable {
        requested: String,
        available: String,
    },
    #[error("Range of blkio weight is from 10 to 1000")]
    BlkioWeight,
    #[error("Invalid value {0}, range for oom score adj is [-1000, 1000]")]
    OomScoreAdj(i64),
    #[error("SHM size can not be less than 0")]
    ShmSize,
    #[error(
        "Invalid QoS settings: linux does not support Maximum IO Bandwidth or Maximum IO IOps"
    )]
    IoMaximum,
    #[error("unknown capability: {0:?}")]
    UnknownCapability(String),
    #[error("invalid --security-opt {n}: {opt:?}")]
    SecurityOpt { n: u8, opt: String },
    #[error("Decoding seccomp profile failed: {0}")]
    SeccompProfile(String),
    #[error("read seccomp profile {path}: {reason}")]
    SeccompFile { path: PathBuf, reason: String },
    #[error("invalid {what} mode: {mode}")]
    NamespaceMode { what: &'static str, mode: String },
    #[error("cannot join {what} of a non running container: {container}")]
    PeerNotRunning {
        what: &'static str,
        container: String,
    },
    #[error("sysctl '{0}' is not allowed")]
    SysctlNotAllowed(String),
    #[error("sysctl {sysctl:?} is not allowed in the host's {what} namespace")]
    SysctlHostNamespace { sysctl: String, what: &'static str },
    #[error("invalid ulimit type: {0}")]
    UlimitType(String),
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    UlimitRange { soft: i64, hard: i64 },
    #[error("invalid volume specification: '{0}'")]
    VolumeSpec(String),
    #[error("invalid mode: {0}")]
    VolumeMode(String),
    #[error("invalid mount config for type {kind:?}: {reason}")]
    MountConfig { kind: String, reason: String },
    #[error("named volumes are not supported yet: {0}")]
    VolumesUnsupported(String),
    #[error("Duplicate mount point: {0}")]
    DuplicateMount(String),
    #[error("invalid tmpfs option {0:?}")]
    TmpfsOption(String),
    #[error("error gathering device information while adding custom device {path:?}: {reason}")]
    Device { path: String, reason: String },
    #[error("invalid device cgroup rule format: '{0}'")]
    DeviceCgroupRule(String),
    #[error("Unable to find group {0}: no matching entries in group file")]
    GroupNotFound(String),
    #[error("--init needs an init binary and the engine has none")]
    NoInitBinary,
    #[error("conflicting options: hostname and the network mode")]
    HostnameWithNetworkMode,
}

/// The container's runtime spec: Docker's default spec with the Config,
/// HostConfig and image config applied, in moby's order (common options,
/// cgroups, resources, sysctls, devices, rlimits, namespaces, capabilities,
/// seccomp, mounts).
pub fn build(input: &SpecInput<'_>, host: &dyn Host) -> Result<BuiltSpec, SpecError> {
    let hc = input.host_config;
    let config = merge_image_config(input.config, &input.image.config)?;
    resources::check(hc, host)?;
    let modes = namespaces::Modes::parse(hc, host)?;
    if matches!(modes.net, namespaces::Share::Container(_)) && !input.config.hostname.is_empty() {
        return Err(SpecError::HostnameWithNetworkMode);
    }

    let mut spec = Map::new();
    spec.insert("ociVersion".into(), json!("1.0.2-dev"));
    spec.insert(
        "root".into(),
        json!({"path": "rootfs", "readonly": hc.readonly_rootfs}),
    );

    let hostname = namespaces::hostname(&config, input.id, &modes, host);
    let mut proc = process::process(input, &config, &hostname, &modes)?;
    let caps = security::capabilities(hc, host)?;
    proc.insert(
        "capabilities".into(),
        security::capabilities_json(&caps, input.user.uid),
    );
    let opts = security::SecurityOpts::parse(hc)?;
    proc.insert("noNewPrivileges".into(), json!(opts.no_new_privileges));
    proc.insert("oomScoreAdj".into(), json!(hc.oom_score_adj));

    let mut linux = Map::new();
    linux.insert("cgroupsPath".into(), json!(cgroups_path(hc, input.id)));
    let (devs, rules) = devices::devices(hc, host)?;
    let mut res = resources::resources(hc);
    res.insert("devices".into(), Value::Array(rules));
    linux.insert("resources".into(), Value::Object(res));
    linux.insert("devices".into(), Value::Array(devs));
    let mut sysctl = Map::new();
    // dockerd sets the domain name as a sysctl of the UTS namespace.
    if !config.domainname.is_empty() && !modes.uts_host {
        sysctl.insert("kernel.domainname".into(), json!(config.domainname));
    }
    sysctl.extend(namespaces::sysctls(hc, &modes, host)?);
    linux.insert("sysctl".into(), Value::Object(sysctl));
    linux.insert("namespaces".into(), namespaces::namespaces(&modes, input)?);
    if let Some(profile) = seccomp::for_container(&opts, hc.privileged, &caps, host)? {
        linux.insert("seccomp".into(), profile);
    }
    let (masked, readonly) = security::masked_and_readonly(hc);
    linux.insert("maskedPaths".into(), json!(masked));
    linux.insert("readonlyPaths".into(), json!(readonly));

    let mounts = mounts::mounts(input, &modes, host)?;
    if let Some(p) = &mounts.rootfs_propagation {
        linux.insert("rootfsPropagation".into(), json!(p));
    }
    if !hostname.is_empty() && !modes.uts_host {
        spec.insert("hostname".into(), json!(hostname));
    }
    spec.insert("process".into(), Value::Object(proc));
    spec.insert("mounts".into(), Value::Array(mounts.mounts));
    spec.insert("linux".into(), Value::Object(linux));
    if let Some(a) = hc.annotations.as_ref().filter(|a| !a.is_empty()) {
        spec.insert("annotations".into(), json!(a));
    }
    Ok(BuiltSpec {
        spec: Value::Object(spec),
        missing_bind_sources: mounts.missing_bind_sources,
    })
}

/// Checks everything [`build`] checks, for create: the containers that
/// `container:ID` modes name need not run yet (they must when the spec is
/// built at start).
pub fn check(input: &SpecInput<'_>, host: &dyn Host) -> Result<(), SpecError> {
    let running = Peers {
        pid: Some(1),
        ipc: Some(1),
        net: Some(1),
    };
    build(
        &SpecInput {
            peers: &running,
            ..*input
        },
        host,
    )
    .map(|_| ())
}

/// Where the runtime puts the container's cgroup: `CgroupParent/ID`, by
/// default below `/berth/<namespace>` where the supervisor puts the tasks
/// whose spec names none (as dockerd uses `/docker/ID`); a relative parent
/// stays relative (to the runtime's own cgroup), as with dockerd.
pub fn cgroups_path(hc: &HostConfig, id: &str) -> String {
    let parent = if hc.cgroup_parent.is_empty() {
        format!("/berth/{}", crate::NAMESPACE)
    } else {
        hc.cgroup_parent.trim_end_matches('/').to_string()
    };
    format!("{parent}/{id}")
}

#[cfg(test)]
mod tests;
