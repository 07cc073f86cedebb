//! The last steps of every container process before exec: limits, user
//! and groups, capabilities, no_new_privs, and finding the executable.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimit, PosixRlimitType, Process};

use crate::sys;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("exec: {path:?}: {source}")]
    Exec {
        path: String,
        source: std::io::Error,
    },
    #[error("set rlimit {kind}: {source}")]
    Rlimit { kind: String, source: nix::Error },
    #[error("set {what}: {source}")]
    Identity {
        what: &'static str,
        source: nix::Error,
    },
    #[error("capabilities: {0}")]
    Capabilities(String),
    /// What runc reports when the kernel refuses the capability sets
    /// (capset's EPERM), with what was refused.
    #[error("unable to apply caps: operation not permitted: {0}")]
    ApplyCaps(String),
    #[error("process.cwd {0} is outside the container's root")]
    CwdOutside(PathBuf),
    #[error("chdir to {path}: {source}")]
    Cwd { path: PathBuf, source: nix::Error },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("argument or environment holds a NUL byte: {0:?}")]
    Nul(String),
}

fn cstring(s: &str) -> Result<CString, ProcessError> {
    CString::new(s).map_err(|_| ProcessError::Nul(s.to_string()))
}

/// berth-dmz (dmz/dmz.c), built by build.rs: the trampoline through which
/// the container's program is exec'd (CVE-2019-5736).
static DMZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-dmz"));

/// Everything exec needs, worked out while errors can still be reported.
pub struct Prepared {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// The sealed memfd holding berth-dmz, when it is used.
    dmz: Option<std::os::fd::OwnedFd>,
}

/// The trampoline, sealed in a memfd, unless the host has SELinux and the
/// process a label: exec'ing a memfd would enter the container's domain on
/// the wrong file, and SELinux itself keeps container_t from writing the
/// runtime. If the kernel refuses executable memfds, say so and go on
/// without (the protection is lost, not the container).
fn make_dmz(process: &Process) -> Option<std::os::fd::OwnedFd> {
    let labelled = process
        .selinux_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty());
    if labelled && Path::new("/sys/fs/selinux/enforce").exists() {
        return None;
    }
    match sys::sealed_memfd(c"berth-dmz", DMZ) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(error = %e, "cannot make the sealed exec trampoline; exec'ing directly (no CVE-2019-5736 protection)");
            None
        }
    }
}

/// Builds argv and the environment (with PATH and HOME defaulted, as runc
/// does) and finds the executable in the container's PATH. Call it once the
/// process's root is the container's.
pub fn prepare(process: &Process) -> Result<Prepared, ProcessError> {
    let args = process.args().clone().unwrap_or_default();
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let has = |env: &Vec<String>, key: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    let program = args.first().cloned().unwrap_or_default();
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let path = find_executable(&program, &path_var, process.cwd())?;
    Ok(Prepared {
        path: cstring(&path)?,
        args: args.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        dmz: make_dmz(process),
    })
}

/// The home directory of `uid` in the container's /etc/passwd.
fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok()? == uid).then(|| f[5].to_string())
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// execvp's search: a name with a slash is used as it is (relative to the
/// process's cwd); otherwise the first executable match in PATH.
pub fn find_executable(program: &str, path_var: &str, cwd: &Path) -> Result<String, ProcessError> {
    if program.is_empty() {
        return Err(ProcessError::NotFound(program.into()));
    }
    if program.contains('/') {
        let full = if program.starts_with('/') {
            PathBuf::from(program)
        } else {
            cwd.join(program)
        };
        if is_executable(&full) {
            return Ok(program.to_string());
        }
        // As runc (Go's LookPath): a file that is there but is no executable
        // regular file is "permission denied", which Docker reports as 126.
        // Go's words, which Docker's clients look for (127 and 126).
        let source = if full.exists() {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied")
        } else {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("stat {program}: no such file or directory"),
            )
        };
        return Err(ProcessError::Exec {
            path: program.into(),
            source,
        });
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        let full = if candidate.is_absolute() {
            candidate.clone()
        } else {
            cwd.join(&candidate)
        };
        if is_executable(&full) {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    Err(ProcessError::NotFound(program.into()))
}

fn resource(kind: PosixRlimitType) -> Resource {
    match kind {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

pub fn set_rlimits(limits: &[PosixRlimit]) -> Result<(), ProcessError> {
    for l in limits {
        setrlimit(resource(l.typ()), l.soft(), l.hard()).map_err(|source| {
            ProcessError::Rlimit {
                kind: l.typ().to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

pub fn set_oom_score_adj(value: i32) -> Result<(), ProcessError> {
    let path = PathBuf::from("/proc/self/oom_score_adj");
    std::fs::write(&path, value.to_string()).map_err(|source| ProcessError::Write { path, source })
}

/// Converts the config's capability names to the kernel's, dropping those
/// this kernel does not know (with a warning, as runc does).
fn to_caps(
    set: Option<&Capabilities>,
    supported: &CapsHashSet,
) -> Result<CapsHashSet, ProcessError> {
    to_caps_quietly(set, supported).map(|(caps, unknown)| {
        for name in unknown {
            tracing::warn!(capability = %name, "capability not supported by this kernel, ignored");
        }
        caps
    })
}

/// `to_caps` without the warning: the capabilities, and the names this
/// kernel does not know.
fn to_caps_quietly(
    set: Option<&Capabilities>,
    supported: &CapsHashSet,
) -> Result<(CapsHashSet, Vec<String>), ProcessError> {
    let mut out = HashSet::new();
    let mut unknown = Vec::new();
    for cap in set.into_iter().flatten() {
        let name = format!("CAP_{cap}");
        let parsed: Cap = name
            .parse()
            .map_err(|_| ProcessError::Capabilities(format!("unknown capability {name}")))?;
        if supported.contains(&parsed) {
            out.insert(parsed);
        } else {
            unknown.push(name);
        }
    }
    Ok((out, unknown))
}

/// Refuses, before the container is created, capability sets that the
/// kernel's capset would refuse when they are applied after `start`, so
/// that `create` fails as runc's does (runc applies them before its init
/// reports ready): an inheritable capability outside the bounding set
/// (unless already inheritable), a permitted one the init does not hold,
/// an effective one that is not permitted. An effective or permitted
/// capability outside the bounding set is not refused (runc's capset
/// accepts it; the exec drops it).
pub fn check_capabilities(process: &Process) -> Result<(), ProcessError> {
    let Some(wanted) = process.capabilities().as_ref() else {
        return Ok(());
    };
    let supported = caps::runtime::thread_all_supported();
    let pick = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| {
        to_caps_quietly(f(wanted).as_ref(), &supported).map(|(caps, _)| caps)
    };
    let bounding = pick(LinuxCapabilities::bounding)?;
    let effective = pick(LinuxCapabilities::effective)?;
    let permitted = pick(LinuxCapabilities::permitted)?;
    let inheritable = pick(LinuxCapabilities::inheritable)?;
    let read = |set| caps::read(None, set).map_err(|e| ProcessError::Capabilities(e.to_string()));
    // The bounding set costs a probe per capability: read only when needed.
    let held_bounding = if inheritable.is_empty() {
        CapsHashSet::new()
    } else {
        read(CapSet::Bounding)?
    };
    let held_inheritable = read(CapSet::Inheritable)?;
    let held_permitted = read(CapSet::Permitted)?;
    let sorted = |set: &CapsHashSet| {
        let mut v: Vec<Cap> = set.iter().copied().collect();
        v.sort_by_key(|c| c.index());
        v
    };
    for cap in sorted(&inheritable) {
        let in_bounding = bounding.contains(&cap) && held_bounding.contains(&cap);
        if !in_bounding && !held_inheritable.contains(&cap) {
            return Err(ProcessError::ApplyCaps(format!(
                "inheritable capability {cap} is not in the bounding set"
            )));
        }
    }
    for cap in sorted(&permitted) {
        if !held_permitted.contains(&cap) {
            return Err(ProcessError::ApplyCaps(format!(
                "permitted capability {cap} is not held by the runtime"
            )));
        }
    }
    for cap in sorted(&effective) {
        if !permitted.contains(&cap) {
            return Err(ProcessError::ApplyCaps(format!(
                "effective capability {cap} is not in the permitted set"
            )));
        }
    }
    Ok(())
}

/// Switches to the process's user and groups and leaves it exactly the
/// capabilities the config gives, in the order the kernel requires: bounding
/// set while we still hold CAP_SETPCAP, then ids (keeping capabilities
/// across setuid), then inheritable, permitted, effective, ambient.
pub fn switch_user(process: &Process, setgroups_allowed: bool) -> Result<(), ProcessError> {
    let user = process.user();
    let wanted = process.capabilities().as_ref();
    let supported = caps::runtime::thread_all_supported();
    // A set the config leaves out is empty, as is every set when the
    // config has no capabilities at all.
    let pick = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| {
        to_caps(wanted.and_then(|w| f(w).as_ref()), &supported)
    };
    let bounding = pick(LinuxCapabilities::bounding)?;
    let effective = pick(LinuxCapabilities::effective)?;
    let permitted = pick(LinuxCapabilities::permitted)?;
    let inheritable = pick(LinuxCapabilities::inheritable)?;
    let ambient = pick(LinuxCapabilities::ambient)?;
    let caps_err = |e: caps::errors::CapsError| ProcessError::Capabilities(e.to_string());

    for cap in &supported {
        if !bounding.contains(cap) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(caps_err)?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|source| ProcessError::Identity {
        what: "keepcaps",
        source,
    })?;
    if setgroups_allowed {
        let groups: Vec<Gid> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(|source| ProcessError::Identity {
            what: "groups",
            source,
        })?;
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|source| ProcessError::Identity {
        what: "gid",
        source,
    })?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|source| ProcessError::Identity {
        what: "uid",
        source,
    })?;
    nix::sys::prctl::set_keepcaps(false).map_err(|source| ProcessError::Identity {
        what: "keepcaps",
        source,
    })?;

    caps::set(None, CapSet::Inheritable, &inheritable).map_err(caps_err)?;
    // Effective must stay within permitted at every step.
    let current_permitted = caps::read(None, CapSet::Permitted).map_err(caps_err)?;
    let interim: CapsHashSet = effective
        .intersection(&current_permitted)
        .copied()
        .collect();
    caps::set(None, CapSet::Effective, &interim).map_err(caps_err)?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(caps_err)?;
    caps::set(None, CapSet::Effective, &effective).map_err(caps_err)?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err)?;
    // The kernel raises an ambient capability only if it is both permitted
    // and inheritable. runc's own default config asks for ambient
    // capabilities without inheritable ones; like runc, go on rather than
    // fail the container, silently as runc (at debug level: every run of
    // that config would warn).
    let mut skipped: Vec<String> = ambient
        .iter()
        .filter(|c| !(permitted.contains(c) && inheritable.contains(c)))
        .map(|c| c.to_string())
        .collect();
    if !skipped.is_empty() {
        skipped.sort();
        tracing::debug!(
            capabilities = %skipped.join(","),
            "ambient capabilities not raised: they are not both permitted and inheritable"
        );
    }
    for cap in &ambient {
        if !(permitted.contains(cap) && inheritable.contains(cap)) {
            continue;
        }
        caps::raise(None, CapSet::Ambient, *cap).map_err(caps_err)?;
    }
    if let Some(mask) = user.umask() {
        sys::set_umask(mask);
    } else {
        sys::set_umask(0o022);
    }
    Ok(())
}

/// Changes to the process's working directory and checks that it is inside
/// the container's root: a cwd through a leaked descriptor
/// (/proc/self/fd/N, CVE-2024-21626) or a symlink out of the root is
/// "unreachable" from it, which getcwd reports as ENOENT or as a path
/// starting with "(unreachable)".
pub fn change_dir(cwd: &Path) -> Result<(), ProcessError> {
    nix::unistd::chdir(cwd).map_err(|source| ProcessError::Cwd {
        path: cwd.to_path_buf(),
        source,
    })?;
    match nix::unistd::getcwd() {
        Ok(now) if now.is_absolute() => Ok(()),
        _ => Err(ProcessError::CwdOutside(cwd.to_path_buf())),
    }
}

pub fn set_no_new_privileges() -> Result<(), ProcessError> {
    nix::sys::prctl::set_no_new_privs().map_err(|source| ProcessError::Identity {
        what: "no_new_privs",
        source,
    })
}

/// Closes (on exec) every descriptor the caller did not mean to pass on,
/// restores default signal handling, and execs. Returns only on failure.
pub fn exec(prepared: &Prepared, preserve_fds: u32) -> ProcessError {
    if let Err(source) = sys::cloexec_from(3 + preserve_fds) {
        return ProcessError::Exec {
            path: "close descriptors".into(),
            source,
        };
    }
    sys::reset_signals();
    let source = match &prepared.dmz {
        Some(dmz) => {
            let mut env = prepared.env.clone();
            let mut key = b"BERTH_DMZ_EXEC=".to_vec();
            key.extend_from_slice(prepared.path.as_bytes());
            match CString::new(key) {
                Ok(entry) => env.push(entry),
                Err(_) => return ProcessError::Nul(prepared.path.to_string_lossy().into_owned()),
            }
            use std::os::fd::AsFd;
            sys::exec_fd(dmz.as_fd(), &prepared.args, &env)
        }
        None => sys::exec(&prepared.path, &prepared.args, &prepared.env),
    };
    ProcessError::Exec {
        path: prepared.path.to_string_lossy().into_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        assert_eq!(
            find_executable("sh", "/nonexistent:/bin", Path::new("/")).unwrap(),
            "/bin/sh"
        );
        assert!(matches!(
            find_executable("no-such-binary-here", "/bin", Path::new("/")),
            Err(ProcessError::NotFound(_))
        ));
        assert_eq!(
            find_executable("/bin/sh", "", Path::new("/")).unwrap(),
            "/bin/sh"
        );
        let err = find_executable("/etc/passwd", "", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains("permission denied"), "{err}");
    }
}
