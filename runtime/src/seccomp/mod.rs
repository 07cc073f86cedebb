//! Seccomp: the config's `linux.seccomp` compiled to one BPF program.
//!
//! seccompiler compiles a filter with a single match action, while an OCI
//! profile gives each syscall rule its own action. So the rules are grouped
//! by action, in the order they first appear; each group is compiled by
//! seccompiler with a sentinel mismatch action, and every "return sentinel"
//! is then rewritten into a jump to the next group. The last instruction
//! returns the profile's default action. The result behaves like
//! libseccomp's: the first group whose rule matches decides.
//!
//! The filter is installed with seccomp(2) directly rather than through
//! seccompiler's `apply_filter`, which always sets no_new_privs: a config
//! may ask for seccomp without it (Docker's default does), and may set
//! filter flags.

pub mod notify;
mod syscalls;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: unknown syscall {0:?}")]
    UnknownSyscall(String),
    #[error("seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath: listenerPath is not set")]
    NoListenerPath,
    #[error("seccomp: SCMP_ACT_NOTIFY cannot be used as default action")]
    NotifyDefault,
    #[error("seccomp: SCMP_ACT_NOTIFY cannot be used for the write syscall")]
    NotifyWrite,
    #[error("seccomp: send the notify listener to {path}: {message}")]
    Listener { path: PathBuf, message: String },
    #[error("seccomp: errnoRet {0} is out of range (1-4095)")]
    Errno(u32),
    #[error("seccomp: syscall {name}: argument index {index} is out of range (0-5)")]
    ArgIndex { name: String, index: usize },
    #[error("seccomp: syscall {name}: {message}")]
    Rule { name: String, message: String },
    #[error("seccomp: the filter has {0} instructions, more than the kernel's 4096")]
    TooLarge(usize),
    #[error("seccomp: this architecture is not supported")]
    Arch,
    #[error("seccomp: install filter: {0}")]
    Install(std::io::Error),
}

/// The rules of one action, keyed by syscall number; `unconditional` marks
/// syscalls that match whatever their arguments.
struct Group {
    action: SeccompAction,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    unconditional: BTreeMap<i64, bool>,
}

/// A compiled filter and the flags to install it with.
pub struct Filter {
    program: Vec<sock_filter>,
    flags: libc::c_ulong,
    /// Where the notify listener goes, when a rule has SCMP_ACT_NOTIFY.
    listener: Option<notify::Listener>,
}

#[cfg(target_arch = "x86_64")]
const ARCH: Option<TargetArch> = Some(TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<TargetArch> = Some(TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<TargetArch> = None;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod syscalls_fallback {
    pub fn number(_: &str) -> Option<i64> {
        None
    }
}

fn syscall_number(name: &str) -> Option<i64> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return syscalls::number(name);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return syscalls_fallback::number(name);
}

/// Errno value the sentinel returns; a profile cannot use it since errnoRet
/// is limited to real errno values (below 4096).
const SENTINEL_ERRNO: u32 = 0xffff;
/// seccompiler has no SCMP_ACT_NOTIFY: the notify group is compiled with
/// this errno as its match action, and its returns rewritten to
/// SECCOMP_RET_USER_NOTIF.
const NOTIFY_ERRNO: u32 = 0xfffe;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
const BPF_MAXINSNS: usize = 4096;

fn errno_of(errno: Option<u32>, default: u32) -> Result<u32, SeccompError> {
    let value = errno.unwrap_or(default);
    if value == 0 || value >= 4096 {
        return Err(SeccompError::Errno(value));
    }
    Ok(value)
}

/// The kernel action for an OCI action.
fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    default_errno: Option<u32>,
) -> Result<SeccompAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno_of(errno.or(default_errno), libc::EPERM as u32)?)
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => {
            SeccompAction::Trace(errno.or(default_errno).unwrap_or(0))
        }
        LinuxSeccompAction::ScmpActNotify => SeccompAction::Errno(NOTIFY_ERRNO),
    })
}

fn condition(
    name: &str,
    arg: &oci_spec::runtime::LinuxSeccompArg,
) -> Result<SeccompCondition, SeccompError> {
    let index = arg.index();
    if index > 5 {
        return Err(SeccompError::ArgIndex {
            name: name.into(),
            index,
        });
    }
    // OCI (libseccomp) compares whole 64-bit values; for SCMP_CMP_MASKED_EQ
    // `value` is the mask and `valueTwo` the value to compare against.
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    SeccompCondition::new(index as u8, SeccompCmpArgLen::Qword, op, value).map_err(|e| {
        SeccompError::Rule {
            name: name.into(),
            message: e.to_string(),
        }
    })
}

/// Checks a profile and compiles it, without installing anything: bad
/// profiles fail at `create`, before any process exists.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let arch = ARCH.ok_or(SeccompError::Arch)?;
    let listener = notify::check(profile)?;
    let default_errno = profile.default_errno_ret();
    let default = action(profile.default_action(), None, default_errno)?;

    // Group the rules by action, in order of first appearance.
    let mut groups: Vec<Group> = Vec::new();
    for sc in profile.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret(), default_errno)?;
        let pos = match groups.iter().position(|g| g.action == act) {
            Some(p) => p,
            None => {
                groups.push(Group {
                    action: act.clone(),
                    rules: BTreeMap::new(),
                    unconditional: BTreeMap::new(),
                });
                groups.len() - 1
            }
        };
        let Group {
            rules,
            unconditional,
            ..
        } = &mut groups[pos];
        for name in sc.names() {
            let Some(nr) = syscall_number(name) else {
                if syscalls::KNOWN.binary_search(&name.as_str()).is_ok() {
                    // A syscall of another architecture or ABI (x86's
                    // _llseek, say): nothing to filter here, as libseccomp.
                    tracing::debug!(syscall = %name, "seccomp: syscall does not exist on this architecture, skipped");
                    continue;
                }
                return Err(SeccompError::UnknownSyscall(name.clone()));
            };
            let per_name: Vec<SeccompCondition> = sc
                .args()
                .iter()
                .flatten()
                .map(|arg| condition(name, arg))
                .collect::<Result<_, _>>()?;
            if per_name.is_empty() {
                // An unconditional rule matches every call; other rules for
                // the same syscall in this group add nothing.
                unconditional.insert(nr, true);
                rules.insert(nr, Vec::new());
            } else if !unconditional.get(&nr).copied().unwrap_or(false) {
                let rule = SeccompRule::new(per_name).map_err(|e| SeccompError::Rule {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
                rules.entry(nr).or_default().push(rule);
            }
        }
    }

    let sentinel = SeccompAction::Errno(SENTINEL_ERRNO);
    let sentinel_ret = SECCOMP_RET_ERRNO | SENTINEL_ERRNO;
    let notify_ret = SECCOMP_RET_ERRNO | NOTIFY_ERRNO;
    let mut chunks: Vec<Vec<sock_filter>> = Vec::new();
    for Group {
        action: act, rules, ..
    } in groups
    {
        if rules.is_empty() || act == default {
            // Rules whose action is the default change nothing.
            continue;
        }
        let filter = SeccompFilter::new(rules, sentinel.clone(), act, arch).map_err(|e| {
            SeccompError::Rule {
                name: "(filter)".into(),
                message: e.to_string(),
            }
        })?;
        let program: BpfProgram =
            filter
                .try_into()
                .map_err(|e: seccompiler::BackendError| SeccompError::Rule {
                    name: "(filter)".into(),
                    message: e.to_string(),
                })?;
        chunks.push(program);
    }
    let total: usize = chunks.iter().map(Vec::len).sum::<usize>() + 1;
    if total > BPF_MAXINSNS {
        return Err(SeccompError::TooLarge(total));
    }
    let mut program = Vec::with_capacity(total);
    for chunk in chunks {
        let next = program.len() + chunk.len();
        for insn in chunk {
            let at = program.len();
            if insn.code == BPF_RET_K && insn.k == sentinel_ret {
                program.push(sock_filter {
                    code: BPF_JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: (next - at - 1) as u32,
                });
            } else if insn.code == BPF_RET_K && insn.k == notify_ret {
                program.push(sock_filter {
                    k: SECCOMP_RET_USER_NOTIF,
                    ..insn
                });
            } else {
                program.push(insn);
            }
        }
    }
    program.push(sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: u32::from(default),
    });

    let mut flags: libc::c_ulong = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
        };
    }
    if listener.is_some() {
        // The kernel refuses TSYNC with a listener; the runtime is
        // single-threaded, so it adds nothing.
        flags &= !libc::SECCOMP_FILTER_FLAG_TSYNC;
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    }
    Ok(Filter {
        program,
        flags,
        listener,
    })
}

impl Filter {
    /// Installs the filter on the calling thread. Without no_new_privs this
    /// needs CAP_SYS_ADMIN, so the init installs it before dropping
    /// capabilities in that case.
    pub fn install(&self) -> Result<(), SeccompError> {
        self.install_listening().map(drop)
    }

    /// Installs the filter; returns its notify listener when it has one.
    pub fn install_listening(&self) -> Result<Option<OwnedFd>, SeccompError> {
        crate::sys::install_seccomp(&self.program, self.flags).map_err(SeccompError::Install)
    }

    /// Where the notify listener goes, when the profile notifies.
    pub fn listener(&self) -> Option<&notify::Listener> {
        self.listener.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn groups_chain_into_one_program() {
        let f = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["_llseek"], "action": "SCMP_ACT_ALLOW"}
            ]
        })))
        .unwrap();
        assert!(f.program.len() > 10);
        // No sentinel survives, and the program ends in the default action.
        let sentinel = SECCOMP_RET_ERRNO | SENTINEL_ERRNO;
        assert!(f
            .program
            .iter()
            .all(|i| !(i.code == BPF_RET_K && i.k == sentinel)));
        assert_eq!(
            f.program.last().unwrap().k,
            SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
    }

    #[test]
    fn unknown_syscall_is_an_error() {
        let err = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]
        })))
        .err()
        .unwrap();
        assert!(err.to_string().contains("no_such_syscall"));
    }

    #[test]
    fn notify_becomes_user_notif_with_a_listener() {
        let err = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })))
        .err()
        .unwrap();
        assert!(err.to_string().contains("listenerPath is not set"), "{err}");
        let f = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "hello",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}
            ]
        })))
        .unwrap();
        let notifies = f
            .program
            .iter()
            .filter(|i| i.code == BPF_RET_K && i.k == SECCOMP_RET_USER_NOTIF)
            .count();
        assert!(notifies >= 1, "no SECCOMP_RET_USER_NOTIF in the program");
        assert!(f
            .program
            .iter()
            .all(|i| !(i.code == BPF_RET_K && i.k == SECCOMP_RET_ERRNO | NOTIFY_ERRNO)));
        assert_ne!(f.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, 0);
        let l = f.listener().unwrap();
        assert_eq!(l.path, PathBuf::from("/run/agent.sock"));
        assert_eq!(l.metadata, "hello");
        // A listener without notify rules: nothing to send (as runc).
        let f = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]
        })))
        .unwrap();
        assert!(f.listener().is_none());
        assert_eq!(f.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, 0);
    }

    #[test]
    fn notify_refusals_use_runcs_words() {
        for (p, words) in [
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/a"}),
                "SCMP_ACT_NOTIFY cannot be used as default action",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
                    "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}),
                "SCMP_ACT_NOTIFY cannot be used for the write syscall",
            ),
        ] {
            let err = compile(&profile(p)).err().unwrap();
            assert!(err.to_string().contains(words), "{err}");
        }
    }

    #[test]
    fn bad_errno_is_refused() {
        assert!(compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]
        })))
        .is_err());
    }
}
