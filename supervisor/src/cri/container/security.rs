//! The security parts of a CRI container's spec: capabilities
//! (containerd's defaults, `ALL`, add and drop), seccomp profiles, and
//! the paths masked or made read-only.

use berth_proto::cri::v1 as cri;
use serde_json::{json, Value};
use std::path::Path;

use super::host::Host;
use super::seccomp;
use super::spec::SpecError;

/// containerd's default capabilities.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The paths containerd masks in an unprivileged container.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// The paths containerd makes read-only in an unprivileged container.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Every capability the kernel knows and the supervisor holds, by number
/// (the `caps` crate's table, which the runtime uses too).
pub fn every_capability(host: &dyn Host) -> Vec<String> {
    let last = host.last_cap();
    let held = host.grantable_caps();
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.into_iter()
        .filter(|c| u32::from(c.index()) <= last && held & (1u64 << c.index()) != 0)
        .map(|c| c.to_string())
        .collect()
}

/// The capability set as containerd computes it: every one when
/// privileged; else the defaults, with `ALL` in add making every one and
/// `ALL` in drop none, then the named ones added, then dropped.
pub fn capabilities(
    sc: &cri::LinuxContainerSecurityContext,
    host: &dyn Host,
) -> Result<Vec<String>, SpecError> {
    if sc.privileged {
        return Ok(every_capability(host));
    }
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let Some(given) = &sc.capabilities else {
        return Ok(caps);
    };
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    if given.add_capabilities.iter().any(is_all) {
        caps = every_capability(host);
    }
    if given.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    let name = |c: &String| -> Result<String, SpecError> {
        let up = c.to_ascii_uppercase();
        let up = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if up.parse::<caps::Capability>().is_ok() {
            Ok(up)
        } else {
            Err(SpecError::UnknownCapability(c.clone()))
        }
    };
    for c in given.add_capabilities.iter().filter(|c| !is_all(c)) {
        let c = name(c)?;
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    for c in given.drop_capabilities.iter().filter(|c| !is_all(c)) {
        let c = name(c)?;
        caps.retain(|have| *have != c);
    }
    Ok(caps)
}

pub fn capabilities_json(caps: &[String]) -> Value {
    json!({"bounding": caps, "effective": caps, "permitted": caps})
}

/// `linux.seccomp`: none when privileged or unconfined (containerd's
/// default without a profile); Docker's default for `RuntimeDefault`;
/// the file `localhost_ref` names for `Localhost`.
#[allow(deprecated, reason = "older kubelets send only seccomp_profile_path")]
pub fn seccomp_profile(
    sc: &cri::LinuxContainerSecurityContext,
    caps: &[String],
    host: &dyn Host,
) -> Result<Option<Value>, SpecError> {
    use cri::security_profile::ProfileType;
    if sc.privileged {
        return Ok(None);
    }
    // The deprecated path field: "runtime/default", "unconfined",
    // "localhost/<path>".
    let (kind, path) = match &sc.seccomp {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => (ProfileType::RuntimeDefault, String::new()),
            Ok(ProfileType::Unconfined) => (ProfileType::Unconfined, String::new()),
            Ok(ProfileType::Localhost) => (ProfileType::Localhost, p.localhost_ref.clone()),
            Err(_) => {
                return Err(SpecError::Seccomp {
                    profile: p.profile_type.to_string(),
                    reason: "unknown profile type".into(),
                })
            }
        },
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => (ProfileType::Unconfined, String::new()),
            "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new()),
            p => match p.strip_prefix("localhost/") {
                Some(path) => (ProfileType::Localhost, path.to_string()),
                None => {
                    return Err(SpecError::Seccomp {
                        profile: p.to_string(),
                        reason: "unknown seccomp profile".into(),
                    })
                }
            },
        },
    };
    let fail = |profile: &str, reason: String| SpecError::Seccomp {
        profile: profile.to_string(),
        reason,
    };
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => seccomp::runtime_default(caps, host.kernel())
            .map(Some)
            .map_err(|e| SpecError::Internal(e.to_string())),
        ProfileType::Localhost => {
            if !path.starts_with('/') {
                return Err(fail(&path, "localhost_ref is not an absolute path".into()));
            }
            let text = host
                .read_file(Path::new(&path))
                .map_err(|e| fail(&path, e.to_string()))?;
            seccomp::localhost(&text)
                .map(Some)
                .map_err(|e| fail(&path, e.to_string()))
        }
    }
}
