//! Which namespaces a container creates and which it joins.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

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
    fn joins_go_user_first_and_mount_last() {
        use LinuxNamespaceType::*;
        let mut all = [Mount, Cgroup, Time, Pid, Network, Uts, Ipc, User];
        all.sort_by_key(|t| join_rank(*t));
        assert_eq!(all, [User, Ipc, Uts, Network, Pid, Time, Cgroup, Mount]);
    }
}
