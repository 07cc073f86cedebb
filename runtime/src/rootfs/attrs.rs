//! Recursive mount attributes (runtime-spec 1.1: `rro`, `rnosuid`,
//! `rnoatime`, …): applied with mount_setattr(AT_RECURSIVE) to a mount and
//! every mount below it, which mount(2) cannot do (MS_REC only works for
//! binds and propagation).

use std::os::fd::AsFd;
use std::path::Path;

use crate::sys::mount::{self as sysmount, MountAttr};

use super::{pin_mount_point, RootDir, RootfsError};

/// The attribute a recursive option names, and whether it clears it (`rrw`
/// clears what `rro` sets). runc's table.
pub fn recursive_option(name: &str) -> Option<(bool, u64)> {
    use sysmount::*;
    let (clear, flag) = match name {
        "rro" => (false, MOUNT_ATTR_RDONLY),
        "rrw" => (true, MOUNT_ATTR_RDONLY),
        "rnosuid" => (false, MOUNT_ATTR_NOSUID),
        "rsuid" => (true, MOUNT_ATTR_NOSUID),
        "rnodev" => (false, MOUNT_ATTR_NODEV),
        "rdev" => (true, MOUNT_ATTR_NODEV),
        "rnoexec" => (false, MOUNT_ATTR_NOEXEC),
        "rexec" => (true, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (false, MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (true, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (false, MOUNT_ATTR_RELATIME),
        "rnorelatime" => (true, MOUNT_ATTR_RELATIME),
        "rnoatime" => (false, MOUNT_ATTR_NOATIME),
        "ratime" => (true, MOUNT_ATTR_NOATIME),
        "rstrictatime" => (false, MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => (true, MOUNT_ATTR_STRICTATIME),
        "rnosymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    };
    Some((clear, flag))
}

/// Every recursive option name, for `features`.
pub const RECURSIVE_OPTIONS: [&str; 18] = [
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnorelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
];

/// Adds one option to `attr`; a later option wins over an earlier one.
/// Access times are an enumeration in one field, not bits: any of them
/// clears the whole field (mount_setattr(2) requires it), and the clearing
/// ones (`ratime`, `rnorelatime`, …) leave the kernel's default, relatime.
pub fn add(attr: &mut MountAttr, clear: bool, flag: u64) {
    if flag & sysmount::MOUNT_ATTR_ATIME_MASK == flag {
        attr.attr_clr |= sysmount::MOUNT_ATTR_ATIME_MASK;
        attr.attr_set &= !sysmount::MOUNT_ATTR_ATIME_MASK;
        if !clear {
            attr.attr_set |= flag;
        }
    } else if clear {
        attr.attr_clr |= flag;
        attr.attr_set &= !flag;
    } else {
        attr.attr_set |= flag;
        attr.attr_clr &= !flag;
    }
}

/// Applies `attr` to the mount at `target` (just mounted) and everything
/// below it. Nothing to do when no recursive option was given.
pub fn apply(root: &RootDir, target: &Path, attr: &MountAttr) -> Result<(), RootfsError> {
    if attr.attr_set == 0 && attr.attr_clr == 0 {
        return Ok(());
    }
    // Opened after the mount, the descriptor names the new mount's root.
    let (fd, _) = pin_mount_point(root, target)?;
    sysmount::mount_setattr(fd.as_fd(), true, attr).map_err(|source| RootfsError::SetAttr {
        target: target.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recursive_option_is_known_and_in_features() {
        let features = crate::features();
        let listed: Vec<&str> = features["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for name in RECURSIVE_OPTIONS {
            assert!(recursive_option(name).is_some(), "{name}");
            assert!(listed.contains(&name), "{name} missing from features");
        }
        assert!(recursive_option("rbind").is_none());
    }
}
