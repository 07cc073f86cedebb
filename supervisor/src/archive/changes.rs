//! The changes an overlayfs upper directory makes to its lower layers, as
//! `docker diff` lists them: each path added (`A`), changed (`C`) or
//! deleted (`D`).
//!
//! The rules are Docker's for its overlay2 driver:
//! - an overlay whiteout is a deleted path, and so is an opaque directory
//!   (its old contents are gone; what it holds now is listed as added);
//! - any other path of the upper directory is added when no lower layer
//!   shows it, else changed, except a directory whose size, mode and
//!   modification time are those of the directory below: it was only
//!   copied up on the way to a change inside it, and is not listed;
//! - a path added or deleted lists its parent directory as changed, once,
//!   before it (the root never).
//!
//! Paths come depth first, each directory before what is in it, names in
//! byte order. Unlike Docker, the lower layers are read as overlayfs reads
//! them: a whiteout or an opaque directory in a nearer layer hides what is
//! below, and no symlink is followed, in any layer.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::diff::list_dir;
use super::sys::{get_xattr, XattrTarget};
use super::{file_type, is_whiteout, lstat_at, open_dir_at, ArchiveError, OPAQUE_XATTR};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

impl ChangeKind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute inside the container (`/etc/hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

fn read_err(path: &Path, e: impl Into<std::io::Error>) -> ArchiveError {
    ArchiveError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn open_root(path: &Path) -> Result<OwnedFd, ArchiveError> {
    openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// The changes `upper` makes to `lowers` (nearest first), as `docker diff`
/// lists them (see the module documentation).
pub fn list_changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, ArchiveError> {
    let root = open_root(upper)?;
    let lower_roots = lowers
        .iter()
        .map(|l| open_root(l))
        .collect::<Result<Vec<_>, _>>()?;
    let mut walk = Walk {
        changes: Vec::new(),
        changed_dirs: HashSet::new(),
    };
    walk.dir(root.as_fd(), &lower_roots, Path::new("/"))?;
    Ok(walk.changes)
}

struct Walk {
    changes: Vec<Change>,
    /// Directories listed (or seen changed) so far.
    changed_dirs: HashSet<PathBuf>,
}

/// Whether `fd`, a directory, is an overlay opaque directory.
fn is_opaque(fd: BorrowedFd<'_>, path: &Path) -> Result<bool, ArchiveError> {
    let value = get_xattr(XattrTarget::Fd(fd), OPAQUE_XATTR).map_err(|e| read_err(path, e))?;
    Ok(value.as_deref() == Some(b"y"))
}

/// Looks `name` up in the directories that make up its parent in the lower
/// layers (nearest first), as overlayfs does: the first layer holding it
/// decides, a whiteout there means it does not exist. Returns its stat and,
/// when it is a directory, the directories that make it up below.
pub(super) fn lookup(
    dirs: &[OwnedFd],
    name: &OsStr,
    path: &Path,
) -> Result<Option<(FileStat, Vec<OwnedFd>)>, ArchiveError> {
    let mut found: Option<FileStat> = None;
    let mut merged = Vec::new();
    for dir in dirs {
        let st = match lstat_at(dir, name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(read_err(path, e)),
        };
        let is_dir = file_type(&st) == SFlag::S_IFDIR;
        if found.is_none() {
            if is_whiteout(&st) {
                return Ok(None);
            }
            found = Some(st);
        }
        // Only directories merge; anything else (a whiteout too) ends it.
        if !is_dir {
            break;
        }
        let fd = open_dir_at(dir, name).map_err(|e| read_err(path, e))?;
        let opaque = is_opaque(fd.as_fd(), path)?;
        merged.push(fd);
        if opaque {
            break;
        }
    }
    Ok(found.map(|st| (st, merged)))
}

/// Same times as Go compares them for Docker: seconds equal, and
/// nanoseconds equal or either of them zero (a file system without them).
fn same_time(a: &FileStat, b: &FileStat) -> bool {
    a.st_mtime == b.st_mtime
        && (a.st_mtime_nsec == b.st_mtime_nsec || a.st_mtime_nsec == 0 || b.st_mtime_nsec == 0)
}

impl Walk {
    fn dir(
        &mut self,
        upper: BorrowedFd<'_>,
        lowers: &[OwnedFd],
        rel: &Path,
    ) -> Result<(), ArchiveError> {
        // Where this directory's entries begin: its own line, when an added
        // or deleted entry calls for one, goes there, before them all.
        let start = self.changes.len();
        for name in list_dir(upper, rel)? {
            let path = rel.join(&name);
            let st = match lstat_at(upper, name.as_os_str()) {
                Ok(st) => st,
                // Removed while we walk.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(read_err(&path, e)),
            };
            let is_dir = file_type(&st) == SFlag::S_IFDIR;
            let dir_fd = match is_dir {
                true => match open_dir_at(upper, name.as_os_str()) {
                    Ok(fd) => Some(fd),
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(read_err(&path, e)),
                },
                false => None,
            };
            let opaque = match &dir_fd {
                Some(fd) => is_opaque(fd.as_fd(), &path)?,
                None => false,
            };
            let below = lookup(lowers, name.as_os_str(), &path)?;
            let kind = if is_whiteout(&st) || opaque {
                Some(ChangeKind::Deleted)
            } else {
                match &below {
                    None => Some(ChangeKind::Added),
                    Some((lower, _))
                        if is_dir
                            && file_type(lower) == SFlag::S_IFDIR
                            && st.st_size == lower.st_size
                            && st.st_mode == lower.st_mode
                            && same_time(&st, lower) =>
                    {
                        None
                    }
                    Some(_) => Some(ChangeKind::Modified),
                }
            };
            if let Some(kind) = kind {
                if is_dir {
                    self.changed_dirs.insert(path.clone());
                }
                if matches!(kind, ChangeKind::Added | ChangeKind::Deleted)
                    && rel != Path::new("/")
                    && self.changed_dirs.insert(rel.to_path_buf())
                {
                    self.changes.insert(
                        start,
                        Change {
                            path: rel.to_path_buf(),
                            kind: ChangeKind::Modified,
                        },
                    );
                }
                self.changes.push(Change {
                    path: path.clone(),
                    kind,
                });
            }
            if let Some(fd) = dir_fd {
                let below_dirs = match below {
                    Some((_, dirs)) if !opaque => dirs,
                    _ => Vec::new(),
                };
                self.dir(fd.as_fd(), &below_dirs, &path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
