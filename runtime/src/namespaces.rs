//! Which namespaces a container creates and which it joins.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{Linux, LinuxNamespace, LinuxNamespaceType, LinuxTimeOffset};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("open namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("join {kind} namespace {path}: {source}")]
    Join {
        kind: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("create namespaces {flags:?}: {source}")]
    Unshare {
        flags: CloneFlags,
        source: nix::Error,
    },
    #[error("set time namespace offsets: {0}")]
    TimeOffsets(std::io::Error),
}

pub fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of the namespace under /proc/PID/ns/.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The order in which joins happen, for `create` (`Plan::join`) and `exec`
/// alike: the user namespace first (it grants the rights for the others),
/// the mount namespace last (it changes our root), the others between in a
/// fixed order. Sort with `sort_by_key(|t| join_rank(*t))`.
pub fn join_rank(typ: LinuxNamespaceType) -> u8 {
    match typ {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Ipc => 1,
        LinuxNamespaceType::Uts => 2,
        LinuxNamespaceType::Network => 3,
        LinuxNamespaceType::Pid => 4,
        LinuxNamespaceType::Time => 5,
        LinuxNamespaceType::Cgroup => 6,
        LinuxNamespaceType::Mount => 7,
    }
}

/// What to do about namespaces, decided from the config.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Namespaces to create.
    pub new: CloneFlags,
    /// Namespaces to join, in the order to join them.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl Plan {
    pub fn from_config(namespaces: &[LinuxNamespace]) -> Plan {
        let mut plan = Plan {
            new: CloneFlags::empty(),
            join: Vec::new(),
        };
        for ns in namespaces {
            match ns.path() {
                Some(path) => plan.join.push((ns.typ(), path.clone())),
                None => plan.new |= clone_flag(ns.typ()),
            }
        }
        plan.join.sort_by_key(|(t, _)| join_rank(*t));
        plan
    }

    pub fn creates(&self, typ: LinuxNamespaceType) -> bool {
        self.new.contains(clone_flag(typ))
    }

    pub fn joins(&self, typ: LinuxNamespaceType) -> Option<&Path> {
        self.join
            .iter()
            .find(|(t, _)| *t == typ)
            .map(|(_, p)| p.as_path())
    }

    /// Whether the container gets a mount namespace of its own at all.
    pub fn has(&self, typ: LinuxNamespaceType) -> bool {
        self.creates(typ) || self.joins(typ).is_some()
    }
}

pub fn open(path: &Path) -> Result<OwnedFd, NamespaceError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| NamespaceError::Open {
            path: path.to_path_buf(),
            source,
        })
}

pub fn join(typ: LinuxNamespaceType, fd: &OwnedFd, path: &Path) -> Result<(), NamespaceError> {
    nix::sched::setns(fd, clone_flag(typ)).map_err(|source| NamespaceError::Join {
        kind: proc_name(typ),
        path: path.to_path_buf(),
        source,
    })
}

pub fn unshare(flags: CloneFlags) -> Result<(), NamespaceError> {
    if flags.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(flags).map_err(|source| NamespaceError::Unshare { flags, source })
}

/// The clocks a time namespace offsets (time_namespaces(7)).
const TIME_CLOCKS: [&str; 2] = ["monotonic", "boottime"];

/// Makes a new time namespace for our children (unshare does not move the
/// caller), writes its offsets while nothing is inside (the kernel freezes
/// them once a process enters), then enters it ourselves: the init's exec
/// and everything it starts run in it. setns into a time namespace needs a
/// single-threaded caller, which the init is.
pub fn enter_new_time_namespace(
    offsets: &std::collections::HashMap<String, LinuxTimeOffset>,
) -> Result<(), NamespaceError> {
    let flag = clone_flag(LinuxNamespaceType::Time);
    unshare(flag)?;
    let text: String = TIME_CLOCKS
        .iter()
        .filter_map(|clock| offsets.get(*clock).map(|o| (clock, o)))
        .map(|(clock, o)| {
            format!(
                "{clock} {} {}\n",
                o.secs().unwrap_or(0),
                o.nanosecs().unwrap_or(0)
            )
        })
        .collect();
    if !text.is_empty() {
        std::fs::write("/proc/self/timens_offsets", text).map_err(NamespaceError::TimeOffsets)?;
    }
    let path = Path::new("/proc/self/ns/time_for_children");
    let fd = open(path)?;
    join(LinuxNamespaceType::Time, &fd, path)
}

/// runc's rules for `linux.timeOffsets`: only with a new time namespace
/// (not one joined by path), only the clocks a time namespace has, and
/// nanoseconds below a second.
pub fn check_time_offsets(linux: &Linux) -> Result<(), String> {
    let time_ns = linux
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == LinuxNamespaceType::Time);
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else {
        return Ok(());
    };
    match time_ns {
        None => {
            return Err(
                "time namespace offsets specified, but time namespace isn't enabled in the config"
                    .into(),
            )
        }
        Some(ns) if ns.path().is_some() => {
            return Err("time namespace enabled, but both namespace path and time offsets specified -- you may only provide one"
                .into())
        }
        Some(_) => {}
    }
    for (clock, offset) in offsets {
        if !TIME_CLOCKS.contains(&clock.as_str()) {
            return Err(format!(
                "timeOffsets clock {clock:?} is not one of monotonic, boottime"
            ));
        }
        if offset.nanosecs().unwrap_or(0) >= 1_000_000_000 {
            return Err(format!(
                "timeOffsets {clock}: nanosecs must be below 1000000000"
            ));
        }
    }
    Ok(())
}

/// The inode identifying a namespace file, to tell whether two are the same.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_orders_joins() {
        let ns: Vec<LinuxNamespace> = serde_json::from_value(serde_json::json!([
            {"type": "mount", "path": "/proc/1/ns/mnt"},
            {"type": "pid"},
            {"type": "network", "path": "/run/netns/x"},
            {"type": "user", "path": "/proc/1/ns/user"}
        ]))
        .unwrap();
        let plan = Plan::from_config(&ns);
        assert_eq!(plan.new, CloneFlags::CLONE_NEWPID);
        let order: Vec<_> = plan.join.iter().map(|(t, _)| proc_name(*t)).collect();
        assert_eq!(order, ["user", "net", "mnt"]);
    }

    #[test]
    fn time_offsets_follow_runc_rules() {
        let linux = |v: serde_json::Value| -> Linux { serde_json::from_value(v).unwrap() };
        let ok = linux(serde_json::json!({
            "namespaces": [{"type": "time"}],
            "timeOffsets": {"monotonic": {"secs": 86400, "nanosecs": 5}, "boottime": {"secs": -3}}
        }));
        assert!(check_time_offsets(&ok).is_ok());
        let no_ns = linux(serde_json::json!({"timeOffsets": {"monotonic": {"secs": 1}}}));
        assert!(check_time_offsets(&no_ns)
            .unwrap_err()
            .contains("isn't enabled"));
        let joined = linux(serde_json::json!({
            "namespaces": [{"type": "time", "path": "/proc/1/ns/time"}],
            "timeOffsets": {"monotonic": {"secs": 1}}
        }));
        assert!(check_time_offsets(&joined).is_err());
        let realtime = linux(serde_json::json!({
            "namespaces": [{"type": "time"}],
            "timeOffsets": {"realtime": {"secs": 1}}
        }));
        assert!(check_time_offsets(&realtime).is_err());
        // A time namespace without offsets is fine.
        let bare = linux(serde_json::json!({"namespaces": [{"type": "time"}]}));
        assert!(check_time_offsets(&bare).is_ok());
    }

    #[test]
    fn joins_go_user_first_and_mount_last() {
        use LinuxNamespaceType::*;
        let mut all = [Mount, Cgroup, Time, Pid, Network, Uts, Ipc, User];
        all.sort_by_key(|t| join_rank(*t));
        assert_eq!(all, [User, Ipc, Uts, Network, Pid, Time, Cgroup, Mount]);
    }
}
