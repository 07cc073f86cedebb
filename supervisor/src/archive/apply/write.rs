//! Writing one entry of the layer into the root: directories, regular
//! files, symbolic and hard links, devices and fifos.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use tracing::debug;

use crate::archive::sys::XattrTarget;
use crate::archive::{file_type, is_whiteout, lstat_at, open_dir_at, remove_all_at, ArchiveError};

use super::lowers::{Found, StepError};
use super::meta::{copy_xattrs, set_file_meta, set_opaque, set_xattrs, Meta};
use super::pool::{FileJob, POOL_FILE_MAX};
use super::{normalize, top, write_err, Applier};

impl Applier<'_> {
    pub(super) fn write_dir(
        &mut self,
        rel: &Path,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        let dir = top(&self.root, &self.stack);
        let fail = |e: Errno| write_err(rel, e);
        let mut opaque = false;
        match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let st = lstat_at(dir, name).map_err(fail)?;
                if file_type(&st) != SFlag::S_IFDIR {
                    // Over a whiteout the directory hides what it hid.
                    opaque = is_whiteout(&st);
                    remove_all_at(dir, name).map_err(fail)?;
                    mkdirat(dir, name, Mode::from_bits_truncate(0o700)).map_err(fail)?;
                }
            }
            Err(e) => return Err(fail(e)),
        }
        let fd = open_dir_at(dir, name).map_err(fail)?;
        fchown(
            &fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(fail)?;
        fchmod(&fd, Mode::from_bits_truncate(meta.mode)).map_err(fail)?;
        set_xattrs(XattrTarget::Fd(fd.as_fd()), &meta.xattrs, rel)?;
        if opaque {
            set_opaque(fd.as_fd(), rel)?;
        }
        self.dir_times.insert(rel.to_path_buf(), meta.mtime);
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one entry's reader, paths, name, metadata and stream state"
    )]
    pub(super) fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &Path,
        rel: &Path,
        name: &OsStr,
        meta: &Meta,
        sparse: bool,
        eof: &Cell<bool>,
    ) -> Result<(), ArchiveError> {
        let size = entry.size();
        if !sparse && size <= POOL_FILE_MAX {
            let mut data = Vec::with_capacity(size as usize);
            let read = entry.read_to_end(&mut data);
            if eof.get() || read.is_err() || data.len() as u64 != size {
                return match read {
                    Err(source) if !eof.get() => Err(ArchiveError::ReadLayer { source }),
                    _ => Err(ArchiveError::TruncatedEntry {
                        path: raw.to_path_buf(),
                        size,
                    }),
                };
            }
            self.stats.bytes += size;
            let dir = top(&self.root, &self.stack)
                .try_clone_to_owned()
                .map_err(|e| write_err(rel, e))?;
            return self.pool.submit(FileJob {
                dir,
                name: name.to_os_string(),
                rel: rel.to_path_buf(),
                data,
                meta: meta.clone(),
            });
        }
        let dir = top(&self.root, &self.stack);
        let fail = |e: Errno| write_err(rel, e);
        let mut file = create_file(dir, name).map_err(fail)?;
        let written = match copy_data(entry, &mut file, &mut self.buf) {
            Ok(n) => n,
            Err(CopyError::Read(source)) if eof.get() => {
                debug!(error = %source, "layer ends inside an entry");
                return Err(ArchiveError::TruncatedEntry {
                    path: raw.to_path_buf(),
                    size,
                });
            }
            Err(CopyError::Read(source)) => return Err(ArchiveError::ReadLayer { source }),
            Err(CopyError::Write(source)) => return Err(write_err(rel, source)),
        };
        if eof.get() || (!sparse && written != size) {
            return Err(ArchiveError::TruncatedEntry {
                path: raw.to_path_buf(),
                size,
            });
        }
        self.stats.bytes += written;
        set_file_meta(&file, meta, rel)
    }

    pub(super) fn write_symlink(
        &mut self,
        rel: &Path,
        name: &OsStr,
        target: &OsStr,
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        let dir = top(&self.root, &self.stack);
        let fail = |e: Errno| write_err(rel, e);
        replacing(dir, name, || symlinkat(target, dir, name)).map_err(fail)?;
        self.finish_node(rel, name, meta, None)
    }

    pub(super) fn write_node(
        &mut self,
        rel: &Path,
        name: &OsStr,
        kind: SFlag,
        dev: libc::dev_t,
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        let dir = top(&self.root, &self.stack);
        replacing(dir, name, || mknodat(dir, name, kind, Mode::empty(), dev))
            .map_err(|e| write_err(rel, e))?;
        self.finish_node(rel, name, meta, Some(meta.mode))
    }

    /// Owner, mode (`None` for a symlink), xattrs and times of a node that
    /// cannot be opened (symlink, device, fifo) in the top directory.
    pub(super) fn finish_node(
        &self,
        rel: &Path,
        name: &OsStr,
        meta: &Meta,
        mode: Option<u32>,
    ) -> Result<(), ArchiveError> {
        let dir = top(&self.root, &self.stack);
        let fail = |e: Errno| write_err(rel, e);
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(fail)?;
        if let Some(mode) = mode {
            // Not a symlink: it was created just above by this thread.
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(fail)?;
        }
        set_xattrs(XattrTarget::At(dir, name), &meta.xattrs, rel)?;
        utimensat(
            dir,
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(fail)
    }

    /// A hard link `rel` to `target` (as written in the tar).
    pub(super) fn write_link(
        &mut self,
        raw: &Path,
        rel: &Path,
        name: &OsStr,
        target_raw: &Path,
    ) -> Result<(), ArchiveError> {
        let escapes = || ArchiveError::LinkEscapes {
            path: raw.to_path_buf(),
            target: target_raw.to_path_buf(),
        };
        let target = normalize(target_raw).ok_or_else(escapes)?;
        let Some(target_name) = target.file_name().map(OsStr::to_os_string) else {
            return Err(ArchiveError::LinkToDirectory {
                path: raw.to_path_buf(),
                target: target_raw.to_path_buf(),
            });
        };
        if target == rel {
            // A link to itself: fine if it is there.
            let dir = top(&self.root, &self.stack);
            return match lstat_at(dir, name) {
                Ok(_) => Ok(()),
                Err(_) => Err(ArchiveError::LinkTargetMissing {
                    path: raw.to_path_buf(),
                    target: target_raw.to_path_buf(),
                }),
            };
        }
        let target_dir = self.link_target_dir(raw, target_raw, &target, &target_name)?;
        let dir = top(&self.root, &self.stack);
        replacing(dir, name, || {
            linkat(
                &target_dir,
                target_name.as_os_str(),
                dir,
                name,
                AtFlags::empty(),
            )
        })
        .map_err(|e| write_err(rel, e))
    }

    /// The directory in the root holding the hard link target `target`,
    /// after copying the target up from a lower if only a lower has it.
    pub(super) fn link_target_dir(
        &mut self,
        raw: &Path,
        target_raw: &Path,
        target: &Path,
        target_name: &OsStr,
    ) -> Result<OwnedFd, ArchiveError> {
        let missing = || ArchiveError::LinkTargetMissing {
            path: raw.to_path_buf(),
            target: target_raw.to_path_buf(),
        };
        let is_dir = || ArchiveError::LinkToDirectory {
            path: raw.to_path_buf(),
            target: target_raw.to_path_buf(),
        };
        let parent = target.parent().unwrap_or(Path::new(""));

        // In the root, without creating anything.
        match self.walk_from_root(parent, None) {
            Ok(dir) => match lstat_at(&dir, target_name) {
                Ok(st) if is_whiteout(&st) => return Err(missing()),
                Ok(st) if file_type(&st) == SFlag::S_IFDIR => return Err(is_dir()),
                Ok(_) => return Ok(dir),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(write_err(target, e)),
            },
            Err((StepError::Missing, _)) => {}
            // A whiteout or a file on the way: nothing below shows.
            Err((StepError::NotDir, _)) => return Err(missing()),
            Err((StepError::Symlink, at)) => {
                return Err(ArchiveError::LinkThroughSymlink {
                    path: raw.to_path_buf(),
                    target: target_raw.to_path_buf(),
                    parent: at,
                })
            }
            Err((StepError::Io(e), at)) => return Err(write_err(&at, e)),
            Err((StepError::Archive(e), _)) => return Err(e),
        }

        // In a lower: copy it up, then link to the copy.
        let found = self.lowers.find(target)?.ok_or_else(missing)?;
        if file_type(&found.stat) == SFlag::S_IFDIR {
            return Err(is_dir());
        }
        let dir = self
            .walk_from_root(parent, Some(()))
            .map_err(|(e, at)| e.into_archive(raw, &at))?;
        let lower_path = self.lowers.paths[found.lower].join(target);
        copy_up(&found, target_name, &lower_path, &dir, target)?;
        debug!(target = %target.display(), "hard link target copied up from a lower layer");
        Ok(dir)
    }
}

/// Runs `make`; if `name` already exists in `dir`, removes it (and what is
/// below it) and runs `make` once more.
fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mut make: impl FnMut() -> nix::Result<T>,
) -> nix::Result<T> {
    match make() {
        Err(Errno::EEXIST) => {
            remove_all_at(dir, name)?;
            make()
        }
        other => other,
    }
}

pub(super) fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<File> {
    let fd = replacing(dir, name, || {
        openat(
            dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
    })?;
    Ok(File::from(fd))
}

/// How the data of one file failed to copy.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `src` to its end into `dst` in chunks of `buf.len()`.
fn copy_data(src: &mut impl Read, dst: &mut impl Write, buf: &mut [u8]) -> Result<u64, CopyError> {
    let mut total = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        dst.write_all(&buf[..filled]).map_err(CopyError::Write)?;
        total += filled as u64;
        if filled < buf.len() {
            return Ok(total);
        }
    }
}

/// Copies the non-directory `found` (named `name` in a lower, at host path
/// `from`) into `dir` of the root (at `rel`), with its owner, mode, xattrs
/// and times.
fn copy_up(
    found: &Found,
    name: &OsStr,
    from: &Path,
    dir: &OwnedFd,
    rel: &Path,
) -> Result<(), ArchiveError> {
    let st = &found.stat;
    let read = |e: Errno| ArchiveError::Read {
        path: from.to_path_buf(),
        source: e.into(),
    };
    let fail = |e: Errno| write_err(rel, e);
    let dir = dir.as_fd();
    let uid = Some(Uid::from_raw(st.st_uid));
    let gid = Some(Gid::from_raw(st.st_gid));
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    let kind = file_type(st);
    if kind == SFlag::S_IFREG {
        let src = openat(
            &found.dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(read)?;
        let mut src = File::from(src);
        let mut dst = create_file(dir, name).map_err(fail)?;
        io::copy(&mut src, &mut dst).map_err(|e| write_err(rel, e))?;
        fchown(&dst, uid, gid).map_err(fail)?;
        fchmod(&dst, mode).map_err(fail)?;
        copy_xattrs(
            XattrTarget::Fd(src.as_fd()),
            XattrTarget::Fd(dst.as_fd()),
            from,
            rel,
        )?;
        return futimens(&dst, &mtime, &mtime).map_err(fail);
    }
    if kind == SFlag::S_IFLNK {
        let target = readlinkat(&found.dir, name).map_err(read)?;
        replacing(dir, name, || symlinkat(target.as_os_str(), dir, name)).map_err(fail)?;
    } else if matches!(kind, SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO) {
        replacing(dir, name, || {
            mknodat(dir, name, kind, Mode::empty(), st.st_rdev)
        })
        .map_err(fail)?;
    } else {
        return Err(ArchiveError::UnsupportedEntry {
            kind: "socket".to_string(),
            path: rel.to_path_buf(),
        });
    }
    fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(fail)?;
    if kind != SFlag::S_IFLNK {
        fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink).map_err(fail)?;
    }
    copy_xattrs(
        XattrTarget::At(found.dir.as_fd(), name),
        XattrTarget::At(dir, name),
        from,
        rel,
    )?;
    utimensat(dir, name, &mtime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(fail)
}
