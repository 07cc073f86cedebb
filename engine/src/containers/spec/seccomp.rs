//! Seccomp: Docker's profile format (rules that hold only for some
//! architectures, capabilities or kernels) turned into the spec's
//! `linux.seccomp` for one container. Docker's default profile is data of
//! ours, `default_seccomp.json`, in that format.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use super::security::SecurityOpts;
use super::{Host, SpecError};

/// The profile applied when `SecurityOpt` names none: Docker's default.
pub const DEFAULT_PROFILE: &str = include_str!("default_seccomp.json");

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Vec<String>,
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
    flags: Option<Vec<String>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ArchMap {
    architecture: String,
    sub_architectures: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Rule {
    name: String,
    names: Vec<String>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<Value>>,
    includes: Filter,
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Filter {
    arches: Vec<String>,
    caps: Vec<String>,
    min_kernel: Option<String>,
}

/// The machine's architecture in Docker's profile words ("amd64") and in
/// libseccomp's ("SCMP_ARCH_X86_64").
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "x86" => ("386", "SCMP_ARCH_X86"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        _ => ("", ""),
    }
}

/// `linux.seccomp` for a container with `caps` (its bounding set): none
/// when privileged or `seccomp=unconfined`; the profile `SecurityOpt`
/// gives (JSON, or a file's path); else Docker's default.
pub fn for_container(
    opts: &SecurityOpts,
    privileged: bool,
    caps: &[String],
    host: &dyn Host,
) -> Result<Option<Value>, SpecError> {
    let given = opts.seccomp.as_deref().unwrap_or("");
    if given == "unconfined" || privileged {
        return Ok(None);
    }
    let text = match given {
        "" | "builtin" => DEFAULT_PROFILE.to_string(),
        g if g.trim_start().starts_with('{') => g.to_string(),
        path => host
            .read_file(Path::new(path))
            .map_err(|e| SpecError::SeccompFile {
                path: path.into(),
                reason: e.to_string(),
            })?,
    };
    to_oci(&text, caps, host.kernel()).map(Some)
}

/// A profile in Docker's format for this machine's architecture, a
/// container with `caps` and a kernel of release `kernel`.
pub fn to_oci(text: &str, caps: &[String], kernel: (u32, u32)) -> Result<Value, SpecError> {
    let profile: Profile =
        serde_json::from_str(text).map_err(|e| SpecError::SeccompProfile(e.to_string()))?;
    let bad = |m: &str| SpecError::SeccompProfile(m.to_string());
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err(bad("both 'architectures' and 'archMap' are specified in the seccomp profile, use either 'architectures' or 'archMap'"));
    }
    let (arch, scmp_arch) = native_arch();
    let mut arches = profile.architectures.clone();
    for m in &profile.arch_map {
        if m.architecture == scmp_arch {
            arches.push(m.architecture.clone());
            arches.extend(m.sub_architectures.iter().cloned());
        }
    }
    let has_cap = |c: &String| caps.contains(c);
    let at_least = |v: &str| -> Result<bool, SpecError> {
        let mut parts = v.split('.');
        let mut num = || -> Result<u32, SpecError> {
            parts
                .next()
                .unwrap_or("0")
                .parse()
                .map_err(|_| SpecError::SeccompProfile(format!("invalid kernel version {v:?}")))
        };
        Ok(kernel >= (num()?, num()?))
    };
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        let mut names = rule.names.clone();
        if !rule.name.is_empty() {
            if !names.is_empty() {
                return Err(bad("'name' and 'names' were specified in the seccomp profile, use either 'name' or 'names'"));
            }
            names.push(rule.name.clone());
        }
        let (inc, exc) = (&rule.includes, &rule.excludes);
        let excluded = exc.arches.iter().any(|a| a == arch)
            || exc.caps.iter().any(has_cap)
            || match &exc.min_kernel {
                Some(v) => at_least(v)?,
                None => false,
            };
        let included = (inc.arches.is_empty() || inc.arches.iter().any(|a| a == arch))
            && inc.caps.iter().all(has_cap)
            && match &inc.min_kernel {
                Some(v) => at_least(v)?,
                None => true,
            };
        if excluded || !included {
            continue;
        }
        let mut out = json!({"names": names, "action": rule.action});
        if let Some(e) = rule.errno_ret {
            out["errnoRet"] = json!(e);
        }
        if let Some(args) = rule.args.as_ref().filter(|a| !a.is_empty()) {
            out["args"] = json!(args);
        }
        syscalls.push(out);
    }
    let mut out = json!({
        "defaultAction": profile.default_action,
        "architectures": arches,
        "syscalls": syscalls,
    });
    if let Some(e) = profile.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    if let Some(f) = profile.flags {
        out["flags"] = json!(f);
    }
    if let Some(p) = profile.listener_path {
        out["listenerPath"] = json!(p);
    }
    if let Some(m) = profile.listener_metadata {
        out["listenerMetadata"] = json!(m);
    }
    Ok(out)
}

/// The syscalls a profile lets through (without conditions), by action;
/// for tests and for comparing profiles.
pub fn allowed_syscalls(seccomp: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for rule in seccomp["syscalls"].as_array().into_iter().flatten() {
        if rule["action"] != "SCMP_ACT_ALLOW" {
            continue;
        }
        for name in rule["names"].as_array().into_iter().flatten() {
            if let Some(n) = name.as_str() {
                out.entry(n.to_string())
                    .or_default()
                    .push(rule.get("args").cloned().unwrap_or(Value::Null));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::security::DEFAULT_CAPABILITIES;
    use super::super::tests::FakeHost;
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn default_profile_depends_on_capabilities() {
        let plain = to_oci(DEFAULT_PROFILE, &defaults(), (5, 10)).unwrap();
        let allowed = allowed_syscalls(&plain);
        assert!(allowed.contains_key("read") && allowed.contains_key("chroot"));
        assert!(!allowed.contains_key("mount") && !allowed.contains_key("bpf"));
        assert!(allowed.contains_key("ptrace"), "kernel 5.10 >= 4.8");
        // clone is allowed only without namespace flags; clone3 gets ENOSYS.
        assert!(allowed["clone"].iter().all(|a| !a.is_null()));
        let clone3 = plain["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"] == json!(["clone3"]))
            .unwrap();
        assert_eq!(clone3["errnoRet"], 38);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                plain["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
            assert!(allowed.contains_key("arch_prctl"));
        }

        let mut admin = defaults();
        admin.push("CAP_SYS_ADMIN".into());
        let admin = allowed_syscalls(&to_oci(DEFAULT_PROFILE, &admin, (5, 10)).unwrap());
        assert!(admin.contains_key("mount") && admin.contains_key("setns"));
        assert!(
            admin["clone"].iter().any(Value::is_null),
            "clone unconditionally"
        );

        let old = allowed_syscalls(&to_oci(DEFAULT_PROFILE, &defaults(), (4, 4)).unwrap());
        assert!(!old.contains_key("ptrace"));
    }

    #[test]
    fn unconfined_privileged_custom_and_file_profiles() {
        let host = FakeHost::default();
        let caps = defaults();
        let opts = |s: Option<&str>| SecurityOpts {
            seccomp: s.map(String::from),
            ..Default::default()
        };
        assert!(for_container(&opts(None), false, &caps, &host)
            .unwrap()
            .is_some());
        assert!(
            for_container(&opts(Some("unconfined")), false, &caps, &host)
                .unwrap()
                .is_none()
        );
        assert!(for_container(&opts(None), true, &caps, &host)
            .unwrap()
            .is_none());
        let custom = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#;
        let p = for_container(&opts(Some(custom)), false, &caps, &host)
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
        );
        let p = for_container(&opts(Some("/profiles/allow.json")), false, &caps, &host)
            .unwrap()
            .unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        let err = for_container(&opts(Some("/nope.json")), false, &caps, &host).unwrap_err();
        assert!(matches!(err, SpecError::SeccompFile { .. }));
        let err = for_container(&opts(Some("{bad")), false, &caps, &host).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("Decoding seccomp profile failed: "));
        let both = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":[]}]}"#;
        assert!(to_oci(both, &caps, (5, 10)).is_err());
    }

    /// Our default profile lets through exactly what moby's does for
    /// Docker's default capabilities (moby's copy: `make deps`).
    #[test]
    fn default_profile_matches_mobys() {
        let path = std::env::var_os("BERTH_DOCKER_SECCOMP")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/fixtures/docker-default-seccomp.json")
            });
        let moby = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "read moby's default seccomp profile {}: {e}; run `make deps` to fetch it",
                path.display()
            )
        });
        for caps in [defaults(), vec![], {
            let mut c = defaults();
            c.extend(["CAP_SYS_ADMIN".to_string(), "CAP_SYS_PTRACE".to_string()]);
            c
        }] {
            let ours = to_oci(DEFAULT_PROFILE, &caps, (6, 1)).unwrap();
            let theirs = to_oci(&moby, &caps, (6, 1)).unwrap();
            assert_eq!(
                allowed_syscalls(&ours),
                allowed_syscalls(&theirs),
                "caps {caps:?}"
            );
            assert_eq!(ours, theirs);
        }
    }
}
