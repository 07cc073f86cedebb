//! Whiteouts: `dir/.wh.name` becomes an overlay whiteout (a 0/0 character
//! device) and `dir/.wh..wh..opq` the opaque xattr on `dir`.

use std::ffi::OsStr;
use std::io::{self};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::unistd::{fchownat, Gid, Uid};
use tracing::debug;

use crate::archive::{
    file_type, lstat_at, open_dir_at, ArchiveError, OPAQUE_MARKER, WHITEOUT_META_PREFIX,
    WHITEOUT_PREFIX,
};

use super::meta::{set_opaque, Meta};
use super::{top, write_err, Applier};

impl Applier<'_> {
    /// `dir/.wh.name` and `dir/.wh..wh..opq`.
    pub(super) fn apply_whiteout(
        &mut self,
        raw: &Path,
        parent: &Path,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        let name = name.as_bytes();
        if name == OPAQUE_MARKER {
            self.open_parent(parent, raw, true)?;
            return set_opaque(top(&self.root, &self.stack), parent);
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            debug!(path = %raw.display(), "whiteout metadata entry ignored");
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." {
            return Err(ArchiveError::BadHeader {
                path: raw.to_path_buf(),
                source: io::Error::other("whiteout names no entry"),
            });
        }
        if hidden == b".." {
            return Err(ArchiveError::Escapes {
                path: raw.to_path_buf(),
            });
        }
        let hidden = OsStr::from_bytes(hidden);
        let rel = parent.join(hidden);
        self.open_parent(parent, raw, true)?;
        let dir = top(&self.root, &self.stack);
        match lstat_at(dir, hidden) {
            Err(Errno::ENOENT) => {
                mknodat(dir, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| write_err(&rel, e))?;
                fchownat(
                    dir,
                    hidden,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| write_err(&rel, e))?;
                utimensat(
                    dir,
                    hidden,
                    &meta.mtime,
                    &meta.mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| write_err(&rel, e))
            }
            // The layer itself holds `name`: a whiteout only hides what the
            // layers below hold (image-spec, "Whiteouts"). A non-directory
            // in the upper already hides the lowers; a directory must stop
            // merging with them.
            Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                let fd = open_dir_at(dir, hidden).map_err(|e| write_err(&rel, e))?;
                set_opaque(fd.as_fd(), &rel)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(write_err(&rel, e)),
        }
    }
}
