//! Capabilities (`CapAdd`, `CapDrop`, `Privileged`), `SecurityOpt`, and
//! the masked and read-only paths.

use serde_json::{json, Value};

use super::{Host, SpecError};
use crate::types::HostConfig;

/// Every capability by number, as the kernel numbers them (the `caps`
/// crate's table, which the runtime and the CRI use too).
pub fn all_capabilities() -> &'static [String] {
    static ALL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
        all.sort_by_key(|c| c.index());
        all.into_iter().map(|c| c.to_string()).collect()
    })
}

/// What a container gets without CapAdd or CapDrop: Docker's default set.
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

/// The capabilities this host's kernel knows.
fn known(host: &dyn Host) -> &'static [String] {
    let all = all_capabilities();
    &all[..(host.last_cap() as usize + 1).min(all.len())]
}

/// What "every capability" is (`--privileged`, `--cap-add ALL`): those the
/// kernel knows and the engine holds. dockerd asks for every one the
/// kernel knows, and fails to start the container where its own bounding
/// set lacks some (as in some sandboxes); we give what can be given.
fn every(host: &dyn Host) -> impl Iterator<Item = String> {
    let held = host.grantable_caps();
    known(host)
        .iter()
        .enumerate()
        .filter(move |(n, _)| held & (1u64 << n) != 0)
        .map(|(_, c)| c.to_string())
}

/// "net_admin", "CAP_NET_ADMIN" and "Net_Admin" are one capability;
/// "ALL" stays as it is.
fn normalize(caps: &[String], host: &dyn Host) -> Result<Vec<String>, SpecError> {
    caps.iter()
        .map(|c| {
            let up = c.to_ascii_uppercase();
            if up == "ALL" {
                return Ok(up);
            }
            let name = if up.starts_with("CAP_") {
                up
            } else {
                format!("CAP_{up}")
            };
            if known(host).contains(&name) {
                Ok(name)
            } else {
                Err(SpecError::UnknownCapability(name))
            }
        })
        .collect()
}

/// The container's capability set, as Docker computes it: every one when
/// privileged; else the defaults less CapDrop plus CapAdd, where "ALL" in
/// CapAdd means every one less CapDrop and "ALL" in CapDrop means only
/// CapAdd.
pub fn capabilities(hc: &HostConfig, host: &dyn Host) -> Result<Vec<String>, SpecError> {
    let all = || every(host);
    if hc.privileged {
        return Ok(all().collect());
    }
    let add = normalize(hc.cap_add.as_deref().unwrap_or_default(), host)?;
    let drop = normalize(hc.cap_drop.as_deref().unwrap_or_default(), host)?;
    let has = |set: &[String], c: &str| set.iter().any(|x| x == c);
    let mut caps: Vec<String> = if has(&add, "ALL") {
        all().filter(|c| !has(&drop, c)).collect()
    } else if has(&drop, "ALL") {
        add
    } else {
        let mut caps: Vec<String> = DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !has(&drop, c))
            .map(|c| c.to_string())
            .collect();
        caps.extend(add);
        caps
    };
    let mut seen = std::collections::HashSet::new();
    caps.retain(|c| seen.insert(c.clone()));
    Ok(caps)
}

/// `process.capabilities`: the set as bounding, effective and permitted
/// for root; only as the bounding set for another user, who gains them by
/// executing a file that has them (no inheritable ones since Docker
/// 20.10.14).
pub fn capabilities_json(caps: &[String], uid: u32) -> Value {
    if uid == 0 {
        json!({"bounding": caps, "effective": caps, "permitted": caps})
    } else {
        json!({"bounding": caps})
    }
}

/// What `SecurityOpt` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityOpts {
    pub no_new_privileges: bool,
    /// `seccomp=...`: "unconfined", "builtin", a profile's JSON (the docker
    /// CLI sends the file's content) or a path on the daemon's host.
    pub seccomp: Option<String>,
}

impl SecurityOpts {
    /// `no-new-privileges[:=true|false]`, `seccomp=...`; `label`,
    /// `apparmor` and `disable` are accepted and have no effect here.
    pub fn parse(hc: &HostConfig) -> Result<SecurityOpts, SpecError> {
        let mut out = SecurityOpts::default();
        for opt in hc.security_opt.iter().flatten() {
            if opt == "no-new-privileges" {
                out.no_new_privileges = true;
                continue;
            }
            if opt == "disable" {
                continue;
            }
            let split = if opt.contains('=') {
                opt.split_once('=')
            } else {
                opt.split_once(':')
            };
            let Some((k, v)) = split else {
                return Err(SpecError::SecurityOpt {
                    n: 1,
                    opt: opt.clone(),
                });
            };
            let bad = || SpecError::SecurityOpt {
                n: 2,
                opt: opt.clone(),
            };
            match k {
                "label" | "apparmor" => {}
                "seccomp" => out.seccomp = Some(v.to_string()),
                "no-new-privileges" => out.no_new_privileges = parse_bool(v).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }
}

/// Go's strconv.ParseBool.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The paths Docker hides from a container.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths Docker makes read-only in a container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `linux.maskedPaths` and `linux.readonlyPaths`: HostConfig's when it
/// gives them, else Docker's; none when privileged.
pub fn masked_and_readonly(hc: &HostConfig) -> (Vec<String>, Vec<String>) {
    if hc.privileged {
        return (Vec::new(), Vec::new());
    }
    let or = |given: &Option<Vec<String>>, default: &[&str]| {
        given
            .clone()
            .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
    };
    (
        or(&hc.masked_paths, MASKED_PATHS),
        or(&hc.readonly_paths, READONLY_PATHS),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::FakeHost;
    use super::*;

    fn caps(add: &[&str], drop: &[&str], privileged: bool) -> Result<Vec<String>, String> {
        let v = |x: &[&str]| Some(x.iter().map(|s| s.to_string()).collect());
        let hc = HostConfig {
            cap_add: v(add),
            cap_drop: v(drop),
            privileged,
            ..Default::default()
        };
        capabilities(&hc, &FakeHost::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn cap_add_and_drop_follow_docker() {
        assert_eq!(caps(&[], &[], false).unwrap(), DEFAULT_CAPABILITIES);
        let c = caps(
            &["net_admin", "CAP_SYS_PTRACE", "Sys_Time"],
            &["chown", "cap_kill"],
            false,
        )
        .unwrap();
        assert!(!c.contains(&"CAP_CHOWN".to_string()) && !c.contains(&"CAP_KILL".to_string()));
        assert_eq!(
            &c[c.len() - 3..],
            ["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"]
        );
        assert_eq!(caps(&["chown"], &["all"], false).unwrap(), ["CAP_CHOWN"]);
        let all_but = caps(&["ALL"], &["SYS_ADMIN"], false).unwrap();
        assert_eq!(all_but.len(), all_capabilities().len() - 1);
        assert!(!all_but.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(
            caps(&[], &[], true).unwrap().len(),
            all_capabilities().len()
        );
        assert_eq!(
            caps(&["foo"], &[], false).unwrap_err(),
            "unknown capability: \"CAP_FOO\""
        );
        assert!(caps(&[], &["cap_bogus"], false).is_err());
        let old_kernel = FakeHost {
            last_cap: 37,
            ..Default::default()
        };
        let hc = HostConfig {
            cap_add: Some(vec!["BPF".into()]),
            ..Default::default()
        };
        assert!(
            capabilities(&hc, &old_kernel).is_err(),
            "the kernel has no CAP_BPF"
        );
    }

    #[test]
    fn root_holds_the_capabilities_and_others_may_gain_them() {
        let caps = vec!["CAP_KILL".to_string()];
        assert_eq!(
            capabilities_json(&caps, 0),
            json!({"bounding": caps, "effective": caps, "permitted": caps})
        );
        assert_eq!(capabilities_json(&caps, 1000), json!({"bounding": caps}));
    }

    #[test]
    fn security_opts_parse_as_dockerd_does() {
        let parse = |opts: &[&str]| {
            let hc = HostConfig {
                security_opt: Some(opts.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            };
            SecurityOpts::parse(&hc).map_err(|e| e.to_string())
        };
        assert!(parse(&["no-new-privileges"]).unwrap().no_new_privileges);
        assert!(
            parse(&["no-new-privileges:true"])
                .unwrap()
                .no_new_privileges
        );
        assert!(
            !parse(&["no-new-privileges=false"])
                .unwrap()
                .no_new_privileges
        );
        let o = parse(&["seccomp=unconfined", "apparmor=unconfined", "label=disable"]).unwrap();
        assert_eq!(o.seccomp.as_deref(), Some("unconfined"));
        let o = parse(&[r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#]).unwrap();
        assert_eq!(
            o.seccomp.as_deref(),
            Some(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)
        );
        assert_eq!(
            parse(&["bogus"]).unwrap_err(),
            "invalid --security-opt 1: \"bogus\""
        );
        assert_eq!(
            parse(&["foo=bar"]).unwrap_err(),
            "invalid --security-opt 2: \"foo=bar\""
        );
        assert!(parse(&["no-new-privileges=maybe"]).is_err());
    }

    #[test]
    fn privileged_has_no_masked_paths() {
        let (m, r) = masked_and_readonly(&HostConfig::default());
        assert!(m.contains(&"/proc/kcore".to_string()) && r.contains(&"/proc/sys".to_string()));
        let p = HostConfig {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(masked_and_readonly(&p), (vec![], vec![]));
        let given = HostConfig {
            masked_paths: Some(vec!["/x".into()]),
            readonly_paths: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(
            masked_and_readonly(&given),
            (vec!["/x".to_string()], vec![])
        );
    }
}
