//! Mount options of the config: flags, propagation and filesystem data.

use nix::mount::MsFlags;

use super::attrs;
use super::RootfsError;
use crate::sys::mount::MountAttr;

/// Mount options split into what mount(2) takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
    /// Recursive attributes (`rro`, `rnosuid`, …) for mount_setattr.
    pub rec_attr: MountAttr,
    /// `idmap` (Some(false)) or `ridmap` (Some(true)).
    pub idmap: Option<bool>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            bind: false,
            recursive: false,
            rec_attr: MountAttr::default(),
            idmap: None,
        }
    }
}

/// Parses fstab-style options; unknown ones become filesystem data.
pub fn parse_options(options: &[String]) -> Result<MountOptions, RootfsError> {
    let mut out = MountOptions::default();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                out.bind = true;
                continue;
            }
            "rbind" => {
                out.bind = true;
                out.recursive = true;
                continue;
            }
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                out.propagation
                    .push(propagation_flags(p).unwrap_or(MsFlags::empty()));
                continue;
            }
            "nosymfollow" => (nosymfollow(), MsFlags::empty()),
            "symfollow" => (MsFlags::empty(), nosymfollow()),
            "idmap" | "ridmap" => {
                out.idmap = Some(opt == "ridmap");
                continue;
            }
            o @ "tmpcopyup" => return Err(RootfsError::UnsupportedOption(o.to_string())),
            other => {
                // A recursive attribute (`rro`, …), else filesystem data.
                match attrs::recursive_option(other) {
                    Some((clear, flag)) => attrs::add(&mut out.rec_attr, clear, flag),
                    None => out.data.push(other.to_string()),
                }
                continue;
            }
        };
        out.flags.insert(set);
        out.flags.remove(clear);
    }
    Ok(out)
}

/// MS_NOSYMFOLLOW (Linux 5.10), which nix does not name.
fn nosymfollow() -> MsFlags {
    MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW)
}

/// "rslave" → MS_SLAVE|MS_REC, and so on.
pub fn propagation_flags(name: &str) -> Option<MsFlags> {
    let (rec, base) = match name.strip_prefix('r') {
        Some(rest) if matches!(rest, "private" | "shared" | "slave" | "unbindable") => {
            (MsFlags::MS_REC, rest)
        }
        _ => (MsFlags::empty(), name),
    };
    let flag = match base {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(flag | rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn options() {
        let o = opts(&["nosuid", "noexec", "mode=755", "size=65536k", "ro", "rw"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        let o = opts(&["rbind", "rprivate", "ro"]);
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert!(parse_options(&["tmpcopyup".to_string()]).is_err());
        let o = opts(&["rbind", "ridmap", "nosymfollow"]);
        assert_eq!(o.idmap, Some(true));
        assert_eq!(o.flags, nosymfollow());
        assert_eq!(opts(&["idmap"]).idmap, Some(false));
    }

    #[test]
    fn recursive_attributes() {
        use crate::sys::mount::*;
        let o = opts(&["rro", "rnosuid", "rnoexec", "rnodev", "rnosymfollow"]);
        let set = MOUNT_ATTR_RDONLY
            | MOUNT_ATTR_NOSUID
            | MOUNT_ATTR_NOEXEC
            | MOUNT_ATTR_NODEV
            | MOUNT_ATTR_NOSYMFOLLOW;
        assert_eq!((o.rec_attr.attr_set, o.rec_attr.attr_clr), (set, 0));
        // A later option undoes an earlier one.
        let o = opts(&["rro", "rrw", "rsuid"]);
        assert_eq!(o.rec_attr.attr_set, 0);
        assert_eq!(o.rec_attr.attr_clr, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID);
        // Access times are one field: setting one clears the whole field.
        let o = opts(&["rnoatime"]);
        assert_eq!(o.rec_attr.attr_set, MOUNT_ATTR_NOATIME);
        assert_eq!(o.rec_attr.attr_clr, MOUNT_ATTR_ATIME_MASK);
        let o = opts(&["rnoatime", "rstrictatime"]);
        assert_eq!(o.rec_attr.attr_set, MOUNT_ATTR_STRICTATIME);
        let o = opts(&["rstrictatime", "ratime"]);
        assert_eq!(o.rec_attr.attr_set, MOUNT_ATTR_RELATIME);
        assert_eq!(o.rec_attr.attr_clr, MOUNT_ATTR_ATIME_MASK);
        // nodiratime is not part of the access-time field.
        let o = opts(&["rnodiratime"]);
        assert_eq!(
            (o.rec_attr.attr_set, o.rec_attr.attr_clr),
            (MOUNT_ATTR_NODIRATIME, 0)
        );
    }

    #[test]
    fn propagation() {
        assert_eq!(
            propagation_flags("rslave"),
            Some(MsFlags::MS_SLAVE | MsFlags::MS_REC)
        );
        assert_eq!(propagation_flags("shared"), Some(MsFlags::MS_SHARED));
        assert_eq!(propagation_flags("bogus"), None);
    }
}
