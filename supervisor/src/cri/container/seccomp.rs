//! Seccomp for CRI containers: `RuntimeDefault` is Docker's default
//! profile (the engine's data file, `default_seccomp.json`, in Docker's
//! format, turned into the OCI form for this machine, the container's
//! capabilities and the kernel); `Localhost` profiles are OCI
//! `linux.seccomp` documents, as containerd reads them.

use serde::Deserialize;
use serde_json::{json, Value};

/// Docker's default profile, shared with the engine.
const DEFAULT_PROFILE: &str =
    include_str!("../../../../engine/src/containers/spec/default_seccomp.json");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SeccompError(String);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
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

/// The machine's architecture in Docker's profile words and libseccomp's.
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

fn kernel_at_least(kernel: (u32, u32), v: &str) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let want = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    kernel >= want
}

/// `linux.seccomp` of the default profile for a container with `caps`
/// (its bounding set, `CAP_*` names) on a kernel of release `kernel`.
pub fn runtime_default(caps: &[String], kernel: (u32, u32)) -> Result<Value, SeccompError> {
    let profile: Profile = serde_json::from_str(DEFAULT_PROFILE)
        .map_err(|e| SeccompError(format!("the default seccomp profile: {e}")))?;
    let (arch, scmp_arch) = native_arch();
    let mut arches = Vec::new();
    for m in profile
        .arch_map
        .iter()
        .filter(|m| m.architecture == scmp_arch)
    {
        arches.push(m.architecture.clone());
        arches.extend(m.sub_architectures.iter().cloned());
    }
    let has_cap = |c: &String| caps.contains(c);
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        let (inc, exc) = (&rule.includes, &rule.excludes);
        let excluded = exc.arches.iter().any(|a| a == arch)
            || exc.caps.iter().any(has_cap)
            || exc
                .min_kernel
                .as_deref()
                .is_some_and(|v| kernel_at_least(kernel, v));
        let included = (inc.arches.is_empty() || inc.arches.iter().any(|a| a == arch))
            && inc.caps.iter().all(has_cap)
            && inc
                .min_kernel
                .as_deref()
                .is_none_or(|v| kernel_at_least(kernel, v));
        if excluded || !included {
            continue;
        }
        let mut out = json!({"names": rule.names, "action": rule.action});
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
    Ok(out)
}

/// A `Localhost` profile: an OCI `linux.seccomp` object.
pub fn localhost(text: &str) -> Result<Value, SeccompError> {
    let value: Value = serde_json::from_str(text).map_err(|e| SeccompError(e.to_string()))?;
    let action = value.get("defaultAction").and_then(Value::as_str);
    if !value.is_object() || action.is_none_or(str::is_empty) {
        return Err(SeccompError(
            "not an OCI seccomp profile: it has no defaultAction".into(),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_default_profile_depends_on_capabilities_and_kernel() {
        let caps = vec!["CAP_CHOWN".to_string()];
        let p = runtime_default(&caps, (6, 1)).unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let names = allowed(&p);
        assert!(names.contains(&"read".to_string()));
        assert!(!names.contains(&"mount".to_string()));
        assert!(names.contains(&"ptrace".to_string()));
        let admin = runtime_default(&["CAP_SYS_ADMIN".to_string()], (6, 1)).unwrap();
        assert!(allowed(&admin).contains(&"mount".to_string()));
        let old = runtime_default(&caps, (4, 4)).unwrap();
        assert!(!allowed(&old).contains(&"ptrace".to_string()));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p["architectures"][0], "SCMP_ARCH_X86_64");
        }
    }

    #[test]
    fn localhost_profiles_are_oci_documents() {
        let p = localhost(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#).unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(localhost("{").is_err());
        assert!(localhost("{}").unwrap_err().0.contains("defaultAction"));
    }
}
