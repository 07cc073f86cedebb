//! The snapshot's lower layers as overlayfs shows them, and the directories
//! an entry needs that the layer does not list: opened one component at a
//! time, and made with the attributes of the same directory below.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, mkdirat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::archive::sys::XattrTarget;
use crate::archive::{file_type, is_whiteout, lstat_at, open_dir_at, ArchiveError};

use super::meta::{copy_xattrs, is_opaque, set_opaque};
use super::{write_err, DirTimes};

/// The lower layers, opened when first needed.
pub(super) struct Lowers<'a> {
    pub(super) paths: &'a [PathBuf],
    pub(super) fds: Vec<Option<OwnedFd>>,
    /// Directories made without a lower to copy attributes from.
    pub(super) implied: Vec<PathBuf>,
}

/// An object found in a lower layer: its parent directory and its stat.
pub(super) struct Found {
    pub(super) dir: OwnedFd,
    pub(super) stat: FileStat,
    pub(super) lower: usize,
}

impl Lowers<'_> {
    pub(super) fn root(&mut self, i: usize) -> Result<BorrowedFd<'_>, ArchiveError> {
        let path = &self.paths[i];
        if self.fds[i].is_none() {
            let fd = openat(
                nix::fcntl::AT_FDCWD,
                path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ArchiveError::Open {
                path: path.clone(),
                source: e.into(),
            })?;
            self.fds[i] = Some(fd);
        }
        match &self.fds[i] {
            Some(fd) => Ok(fd.as_fd()),
            // Filled just above.
            None => Err(ArchiveError::Open {
                path: path.clone(),
                source: Errno::EBADF.into(),
            }),
        }
    }

    /// Finds `rel` in the lowers as overlayfs would show it: the nearest
    /// lower that has it wins; a whiteout, or a non-directory on the way,
    /// hides it; an opaque directory on the way hides the lowers below.
    pub(super) fn find(&mut self, rel: &Path) -> Result<Option<Found>, ArchiveError> {
        let Some(name) = rel.file_name() else {
            return Ok(None);
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        for i in 0..self.paths.len() {
            let lower_path = self.paths[i].clone();
            let read = |e: Errno| ArchiveError::Read {
                path: lower_path.join(rel),
                source: e.into(),
            };
            let root = self.root(i)?;
            let mut last_layer = is_opaque(root);
            let mut dir = root.try_clone_to_owned().map_err(|e| ArchiveError::Read {
                path: lower_path.clone(),
                source: e,
            })?;
            let mut present = true;
            for comp in parent.iter() {
                match open_dir_at(&dir, comp) {
                    Ok(fd) => {
                        last_layer |= is_opaque(fd.as_fd());
                        dir = fd;
                    }
                    Err(Errno::ENOENT) => {
                        present = false;
                        break;
                    }
                    Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(None),
                    Err(e) => return Err(read(e)),
                }
            }
            if present {
                match lstat_at(&dir, name) {
                    Ok(st) if is_whiteout(&st) => return Ok(None),
                    Ok(stat) => {
                        return Ok(Some(Found {
                            dir,
                            stat,
                            lower: i,
                        }))
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(read(e)),
                }
            }
            if last_layer {
                return Ok(None);
            }
        }
        Ok(None)
    }
}

/// Why a directory could not be opened on the way down a path.
pub(super) enum StepError {
    Missing,
    Symlink,
    NotDir,
    Io(Errno),
    Archive(ArchiveError),
}

impl StepError {
    /// The error for entry `path` whose parent `dir` could not be opened.
    pub(super) fn into_archive(self, path: &Path, dir: &Path) -> ArchiveError {
        match self {
            StepError::Missing => write_err(dir, Errno::ENOENT),
            StepError::Symlink => ArchiveError::ThroughSymlink {
                path: path.to_path_buf(),
                parent: dir.to_path_buf(),
            },
            StepError::NotDir => ArchiveError::NotADirectory {
                path: path.to_path_buf(),
                parent: dir.to_path_buf(),
            },
            StepError::Io(e) => write_err(dir, e),
            StepError::Archive(e) => e,
        }
    }
}

/// Opens directory `name` in `parent` (`rel` is its path in the root). If
/// it is missing, or a whiteout, and `lowers` are given, creates it.
pub(super) fn open_child(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
    create: Option<(&mut Lowers<'_>, &mut DirTimes)>,
) -> Result<OwnedFd, StepError> {
    match open_dir_at(parent, name) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) => match create {
            Some((lowers, times)) => make_parent_dir(parent, name, rel, lowers, times, false),
            None => Err(StepError::Missing),
        },
        Err(Errno::ELOOP | Errno::ENOTDIR) => match lstat_at(parent, name) {
            Ok(st) if file_type(&st) == SFlag::S_IFLNK => Err(StepError::Symlink),
            Ok(st) if is_whiteout(&st) => match create {
                Some((lowers, times)) => {
                    // A directory over a whiteout hides what the whiteout
                    // hid: overlayfs makes it opaque, and so do we.
                    unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(StepError::Io)?;
                    make_parent_dir(parent, name, rel, lowers, times, true)
                }
                None => Err(StepError::NotDir),
            },
            Ok(_) => Err(StepError::NotDir),
            Err(Errno::ENOENT) => Err(StepError::Missing),
            Err(e) => Err(StepError::Io(e)),
        },
        Err(e) => Err(StepError::Io(e)),
    }
}

/// Creates a directory the tar did not list: with the attributes of the
/// same directory in the nearest lower, else 0755 owned by root.
fn make_parent_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
    lowers: &mut Lowers<'_>,
    times: &mut DirTimes,
    opaque: bool,
) -> Result<OwnedFd, StepError> {
    match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(StepError::Io(e)),
    }
    let fd = open_dir_at(parent, name).map_err(StepError::Io)?;
    let lower = lowers.find(rel).map_err(StepError::Archive)?;
    match lower {
        Some(found) if file_type(&found.stat) == SFlag::S_IFDIR => {
            let st = &found.stat;
            fchown(
                &fd,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(StepError::Io)?;
            fchmod(&fd, Mode::from_bits_truncate(st.st_mode & 0o7777)).map_err(StepError::Io)?;
            let lower_dir = open_dir_at(&found.dir, name).map_err(StepError::Io)?;
            copy_xattrs(
                XattrTarget::Fd(lower_dir.as_fd()),
                XattrTarget::Fd(fd.as_fd()),
                &lowers.paths[found.lower].join(rel),
                rel,
            )
            .map_err(StepError::Archive)?;
            times.insert(
                rel.to_path_buf(),
                TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            );
        }
        _ => {
            fchown(&fd, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).map_err(StepError::Io)?;
            fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(StepError::Io)?;
            lowers.implied.push(rel.to_path_buf());
        }
    }
    if opaque {
        set_opaque(fd.as_fd(), rel).map_err(StepError::Archive)?;
    }
    Ok(fd)
}
