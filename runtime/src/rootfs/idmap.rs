//! Id-mapped bind mounts (runtime-spec 1.2: the `idmap` and `ridmap` mount
//! options and a mount's `uidMappings`/`gidMappings`), made the way runc 1.2
//! and crun make them: open_tree(OPEN_TREE_CLONE) copies the source, a user
//! namespace holding the mapping is made for it, mount_setattr
//! (MOUNT_ATTR_IDMAP) attaches that mapping, and the init attaches the copy
//! with move_mount.
//!
//! The runtime makes the copies before it clones the init: setting an
//! idmapping needs CAP_SYS_ADMIN over the filesystem's user namespace (the
//! host's), which an init in a new user namespace no longer has. The init
//! inherits the descriptors (close-on-exec) and attaches each in its turn.
//!
//! oci-spec 0.8.4's `Mount` has no `uidMappings`/`gidMappings`: they are read
//! from the same bytes of config.json as the spec (`parse_mount_id_maps`),
//! one entry per mount.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType, Spec};

use super::{
    ensure_dir, ensure_file, io, locked_flags, parse_options, pin_mount_point, RootDir, RootfsError,
};
use crate::sys::{self, mount as sysmount};

/// A mount's own id mappings, as config.json gives them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountIdMaps {
    #[serde(default)]
    pub uid_mappings: Option<Vec<LinuxIdMapping>>,
    #[serde(default)]
    pub gid_mappings: Option<Vec<LinuxIdMapping>>,
}

impl MountIdMaps {
    fn given(&self) -> bool {
        self.uid_mappings.is_some() || self.gid_mappings.is_some()
    }
}

#[derive(serde::Deserialize)]
struct RawConfig {
    #[serde(default)]
    mounts: Option<Vec<MountIdMaps>>,
}

/// The id mappings of every mount of config.json, in order (empty entries
/// for mounts without any).
pub fn parse_mount_id_maps(config: &[u8]) -> Result<Vec<MountIdMaps>, String> {
    // Most configs name no mappings at all: no second parse for them.
    if !config.windows(9).any(|w| w == b"Mappings\"") {
        return Ok(Vec::new());
    }
    let raw: RawConfig = serde_json::from_slice(config).map_err(|e| e.to_string())?;
    Ok(raw.mounts.unwrap_or_default())
}

/// Checks each mount's id mapping against runc's rules: only bind mounts,
/// both uid and gid mappings (given, or the container's user namespace's
/// for `idmap` alone), each list well formed.
pub fn check_mount_id_maps(spec: &Spec, maps: &[MountIdMaps]) -> Result<(), String> {
    let has_userns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let none = MountIdMaps::default();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let maps = maps.get(i).unwrap_or(&none);
        let opts =
            parse_options(m.options().as_deref().unwrap_or(&[])).map_err(|e| e.to_string())?;
        if opts.idmap.is_none() && !maps.given() {
            continue;
        }
        let dest = m.destination().display();
        if !(opts.bind || m.typ().as_deref() == Some("bind")) {
            return Err(format!(
                "mount {dest}: id-mapped mounts are only supported for bind mounts"
            ));
        }
        if maps.given() {
            if maps.uid_mappings.as_ref().is_none_or(|v| v.is_empty())
                || maps.gid_mappings.as_ref().is_none_or(|v| v.is_empty())
            {
                return Err(format!(
                    "mount {dest}: id-mapped mounts must have both uid and gid mappings specified"
                ));
            }
            for (name, list) in [
                ("uidMappings", &maps.uid_mappings),
                ("gidMappings", &maps.gid_mappings),
            ] {
                check_mappings(list.as_deref().unwrap_or(&[]))
                    .map_err(|why| format!("mount {dest}: {name} {why}"))?;
            }
        } else if !has_userns {
            return Err(format!(
                "mount {dest}: id-mapped mounts must have both uid and gid mappings specified \
                 (or the container a user namespace whose mappings they take)"
            ));
        }
    }
    Ok(())
}

fn check_mappings(list: &[LinuxIdMapping]) -> Result<(), &'static str> {
    if list.len() > 340 {
        return Err("has more than 340 entries");
    }
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for m in list {
        if m.size() == 0 {
            return Err("has an entry of size 0");
        }
        let start = u64::from(m.container_id());
        let end = start + u64::from(m.size());
        let limit = u64::from(u32::MAX) + 1;
        if end > limit || u64::from(m.host_id()) + u64::from(m.size()) > limit {
            return Err("has an entry that overflows the id range");
        }
        if ranges.iter().any(|(s, e)| start < *e && *s < end) {
            return Err("has overlapping entries");
        }
        ranges.push((start, end));
    }
    Ok(())
}

/// The detached copies of the config's idmapped mounts (id-mapped), and
/// of every bind mount of a container in a user namespace, by mount index.
#[derive(Default)]
pub struct MountSources {
    trees: Vec<Option<OwnedFd>>,
}

impl MountSources {
    /// The copy for mount `index`, if it has one.
    pub fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.trees.get(index)?.as_ref().map(|fd| fd.as_fd())
    }

    /// Makes the copies (none, and no work, without idmapped mounts or a
    /// user namespace).
    pub fn open(spec: &Spec, maps: &[MountIdMaps]) -> Result<MountSources, RootfsError> {
        let mut trees = Vec::new();
        let default_linux;
        let linux = match spec.linux() {
            Some(linux) => linux,
            None => {
                default_linux = Linux::default();
                &default_linux
            }
        };
        let userns = linux
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == LinuxNamespaceType::User);
        let has_userns = userns.is_some();
        let userns_path = userns.and_then(|n| n.path().clone());
        for (i, m) in spec.mounts().iter().flatten().enumerate() {
            let given = maps.get(i).filter(|m| m.given());
            let opts = parse_options(m.options().as_deref().unwrap_or(&[]))?;
            let bind = opts.bind || m.typ().as_deref() == Some("bind");
            if opts.idmap.is_none() && given.is_none() {
                // In a user namespace, the init may not reach a bind's
                // source (a directory its root cannot search): as runc
                // opens mount sources before, we copy the tree here.
                if has_userns && bind {
                    let source = m.source().clone().unwrap_or_default();
                    let tree = sysmount::open_tree_clone(&source, opts.recursive)
                        .map_err(io("open_tree(OPEN_TREE_CLONE)", &source))?;
                    trees.resize_with(i + 1, || None);
                    trees[i] = Some(tree);
                }
                continue;
            }
            trees.resize_with(i + 1, || None);
            let source = m.source().clone().unwrap_or_default();
            let userns = match (given, &userns_path) {
                (Some(g), _) => userns_with_maps(
                    g.uid_mappings.as_deref().unwrap_or(&[]),
                    g.gid_mappings.as_deref().unwrap_or(&[]),
                ),
                (None, Some(path)) => std::fs::File::open(path).map(OwnedFd::from),
                (None, None) => userns_with_maps(
                    linux.uid_mappings().as_deref().unwrap_or(&[]),
                    linux.gid_mappings().as_deref().unwrap_or(&[]),
                ),
            }
            .map_err(io("make the user namespace for the id mapping of", &source))?;
            let tree = sysmount::open_tree_clone(&source, opts.recursive)
                .map_err(io("open_tree(OPEN_TREE_CLONE)", &source))?;
            let attr = sysmount::MountAttr {
                attr_set: sysmount::MOUNT_ATTR_IDMAP,
                userns_fd: userns.as_raw_fd() as u64,
                ..Default::default()
            };
            // `ridmap` maps every mount of an rbind; `idmap` only its top.
            sysmount::mount_setattr(tree.as_fd(), opts.idmap == Some(true), &attr).map_err(
                |err| RootfsError::IdMap {
                    hint: if err.raw_os_error() == Some(libc::EINVAL) {
                        " (does its filesystem support id-mapped mounts?)"
                    } else {
                        ""
                    },
                    path: source.clone(),
                    source: err,
                },
            )?;
            trees[i] = Some(tree);
        }
        Ok(MountSources { trees })
    }
}

/// A user namespace holding the mappings: a child is cloned into a new one,
/// its maps written, the namespace opened, and the child released (it only
/// waits on a pipe, and exits when we close it).
fn userns_with_maps(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> std::io::Result<OwnedFd> {
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (forked, _) = sys::clone_process(libc::CLONE_NEWUSER as libc::c_ulong, None)?;
    let pid = match forked {
        sys::Forked::Child => {
            drop(tx);
            let mut byte = [0u8; 1];
            let _ = std::fs::File::from(rx).read(&mut byte);
            sys::exit_now(0)
        }
        sys::Forked::Parent(pid) => pid,
    };
    drop(rx);
    let result = (|| {
        for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
            let text: String = maps
                .iter()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect();
            std::fs::write(format!("/proc/{pid}/{file}"), text)?;
        }
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from)
    })();
    drop(tx);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// Attaches the id-mapped copy `tree` of `source` at `target` (inside the
/// root), then applies the mount's other flags and propagation as a bind.
pub(super) fn attach(
    root: &RootDir,
    tree: BorrowedFd<'_>,
    source: &Path,
    target: &Path,
    opts: &super::MountOptions,
) -> Result<(), RootfsError> {
    // The copy itself says what it is: the source's path may be out of
    // reach here (see MountSources::open).
    let meta = nix::sys::stat::fstat(tree)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        .map_err(io("bind mount source", source))?;
    if meta.st_mode & libc::S_IFMT == libc::S_IFDIR {
        ensure_dir(target)?;
    } else {
        ensure_file(target)?;
    }
    let (pin, _) = pin_mount_point(root, target)?;
    sysmount::move_mount(tree, pin.as_fd())
        .map_err(io("move_mount the id-mapped copy onto", target))?;
    drop(pin);
    let extra = opts.flags & !(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked_flags(target);
        super::do_mount(None, target, None, flags, None)?;
    }
    for p in &opts.propagation {
        super::do_mount(None, target, None, *p, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: serde_json::Value, userns: bool) -> (Spec, Vec<MountIdMaps>) {
        let mut ns = vec![serde_json::json!({"type": "mount"})];
        if userns {
            ns.push(serde_json::json!({"type": "user"}));
        }
        let config = serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "mounts": mounts,
            "linux": {"namespaces": ns}
        });
        let bytes = serde_json::to_vec(&config).unwrap();
        let spec: Spec = serde_json::from_slice(&bytes).unwrap();
        let maps = parse_mount_id_maps(&bytes).unwrap();
        (spec, maps)
    }

    #[test]
    fn reads_mappings_beside_the_spec() {
        let (spec, maps) = spec(
            serde_json::json!([
                {"destination": "/a", "type": "bind", "source": "/tmp", "options": ["bind"]},
                {"destination": "/b", "type": "bind", "source": "/tmp", "options": ["rbind", "ridmap"],
                 "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                 "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}
            ]),
            false,
        );
        assert_eq!(maps.len(), 2);
        assert!(!maps[0].given());
        let uid = maps[1].uid_mappings.as_ref().unwrap();
        assert_eq!(
            (uid[0].container_id(), uid[0].host_id(), uid[0].size()),
            (0, 1000, 1)
        );
        assert!(check_mount_id_maps(&spec, &maps).is_ok());
    }

    #[test]
    fn refuses_what_runc_refuses() {
        let one = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        // Not a bind mount.
        let (s, m) = spec(
            serde_json::json!([{"destination": "/t", "type": "tmpfs", "source": "tmpfs",
                                "options": ["idmap"], "uidMappings": one, "gidMappings": one}]),
            false,
        );
        let err = check_mount_id_maps(&s, &m).unwrap_err();
        assert!(err.contains("only supported for bind"), "{err}");
        // Only uid mappings.
        let (s, m) = spec(
            serde_json::json!([{"destination": "/t", "source": "/tmp", "options": ["bind"],
                                "uidMappings": one}]),
            false,
        );
        let err = check_mount_id_maps(&s, &m).unwrap_err();
        assert!(err.contains("both uid and gid"), "{err}");
        // idmap alone, without a user namespace to take mappings from.
        let idmap_alone = serde_json::json!([{"destination": "/t", "source": "/tmp", "options": ["bind", "idmap"]}]);
        let (s, m) = spec(idmap_alone.clone(), false);
        assert!(check_mount_id_maps(&s, &m).is_err());
        let (s, m) = spec(idmap_alone, true);
        assert!(check_mount_id_maps(&s, &m).is_ok());
        // A size-0 entry.
        let zero = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 0}]);
        let (s, m) = spec(
            serde_json::json!([{"destination": "/t", "source": "/tmp", "options": ["bind"],
                                "uidMappings": zero, "gidMappings": zero}]),
            false,
        );
        let err = check_mount_id_maps(&s, &m).unwrap_err();
        assert!(err.contains("size 0"), "{err}");
    }
}
