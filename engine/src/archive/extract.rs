//! Extracting a tar into a directory of a container's root, by descriptors
//! only. An entry's name is joined to the extraction directory and cleaned
//! first (`..` stops at the container's root, as in Docker's chrooted
//! untar; an entry that lands outside the extraction directory refuses the
//! archive); its parent is opened with `openat2` and
//! `RESOLVE_IN_ROOT` in the container's root, so a link in the way (in
//! the archive, in the container, or swapped in meanwhile) can lead only
//! to places inside it; its last element is made with `*at` calls from
//! that descriptor and never followed.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{
    fchmodat, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, Gid, Uid};
use tar::EntryType;

use super::{fs, paths, ArchiveError};

/// How an archive is extracted.
#[derive(Clone, Debug, Default)]
pub struct ExtractOptions {
    /// Refuse to replace a directory by a non-directory and the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// Owner of every file made, instead of the archive's.
    pub owner: Option<(u32, u32)>,
}

/// Directories whose times are set at the end (making their entries
/// changes them): path and mtime.
type DirTimes = Vec<(String, i64)>;

/// Extracts the tar `input` into `dest` (absolute, clean, no links) of
/// `root`.
pub fn extract(
    root: BorrowedFd<'_>,
    dest: &str,
    input: impl Read,
    opts: &ExtractOptions,
) -> Result<(), ArchiveError> {
    let mut archive = tar::Archive::new(input);
    let mut dir_times: DirTimes = Vec::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut parents = ParentCache::default();
    let entries = archive.entries().map_err(ArchiveError::ReadArchive)?;
    for entry in entries {
        let mut entry = entry.map_err(ArchiveError::ReadArchive)?;
        let raw = entry.path_bytes().into_owned();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let path = paths::entry_path(dest, &raw).ok_or_else(|| ArchiveError::Breakout {
            entry: raw.clone(),
            dest: dest.to_string(),
        })?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        if path == dest {
            // The extraction directory itself.
            continue;
        }
        let Some((parent_path, name)) = paths::parent_and_name(&path) else {
            continue;
        };
        let parent = parents.get(root, parent_path)?;
        one_entry(
            root,
            dest,
            parent.as_fd(),
            &path,
            name,
            &mut entry,
            opts,
            &mut dir_times,
            &mut buf,
        )?;
        if kind == EntryType::Directory {
            parents.forget(&path);
        }
    }
    for (path, mtime) in dir_times.into_iter().rev() {
        let Some((parent_path, name)) = paths::parent_and_name(&path) else {
            continue;
        };
        if let Ok(parent) = fs::open_dir(root, parent_path) {
            let t = TimeSpec::new(mtime, 0);
            let _ = utimensat(
                parent.as_fd(),
                name,
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            );
        }
    }
    Ok(())
}

/// The descriptor of the last parent directory used, as archives list a
/// directory's entries together.
#[derive(Default)]
struct ParentCache {
    last: Option<(String, OwnedFd)>,
}

impl ParentCache {
    fn get(&mut self, root: BorrowedFd<'_>, path: &str) -> Result<BorrowedFd<'_>, ArchiveError> {
        let cached = self.last.as_ref().is_some_and(|(p, _)| p == path);
        if !cached {
            let fd = open_or_make_dir(root, path)?;
            self.last = Some((path.to_string(), fd));
        }
        match &self.last {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(ArchiveError::Create {
                path: path.to_string(),
                source: Errno::ENOENT,
            }),
        }
    }

    /// Drops a cached directory that an entry may have replaced.
    fn forget(&mut self, path: &str) {
        if self.last.as_ref().is_some_and(|(p, _)| p == path) {
            self.last = None;
        }
    }
}

/// Opens the directory `path` in the root, making it and its missing
/// parents (0755) as Docker's untar does.
fn open_or_make_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd, ArchiveError> {
    let err = |source| ArchiveError::Create {
        path: path.to_string(),
        source,
    };
    match fs::open_dir(root, path) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(err(e)),
    }
    let Some((parent, name)) = paths::parent_and_name(path) else {
        return Err(err(Errno::ENOENT));
    };
    let p = open_or_make_dir(root, parent)?;
    match mkdirat(p.as_fd(), name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(err(e)),
    }
    fs::open_dir(root, path).map_err(err)
}

#[expect(clippy::too_many_arguments, reason = "one entry's whole context")]
fn one_entry<R: Read>(
    root: BorrowedFd<'_>,
    dest: &str,
    parent: BorrowedFd<'_>,
    path: &str,
    name: &str,
    entry: &mut tar::Entry<'_, R>,
    opts: &ExtractOptions,
    dir_times: &mut DirTimes,
    buf: &mut [u8],
) -> Result<(), ArchiveError> {
    let err = |source| ArchiveError::Create {
        path: path.to_string(),
        source,
    };
    let header = entry.header().clone();
    let kind = header.entry_type();
    let is_dir = kind == EntryType::Directory;
    let mode = Mode::from_bits_truncate(header.mode().map_err(ArchiveError::ReadArchive)? & 0o7777);
    match fs::lstat_child(parent, name) {
        Ok(existing) => {
            let existing_dir = fs::is_dir(&existing);
            if opts.no_overwrite_dir_non_dir && existing_dir && !is_dir {
                return Err(ArchiveError::DirNonDir(format!(
                    "cannot overwrite directory \"{path}\" with non-directory \"{path}\""
                )));
            }
            if opts.no_overwrite_dir_non_dir && !existing_dir && is_dir {
                return Err(ArchiveError::DirNonDir(format!(
                    "cannot overwrite non-directory \"{path}\" with directory \"{path}\""
                )));
            }
            if !(existing_dir && is_dir) {
                fs::remove_all(parent, name).map_err(err)?;
            }
        }
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(err(e)),
    }
    match kind {
        EntryType::Directory => match mkdirat(parent, name, mode) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err(e)),
        },
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            let fd = fs::open_child(
                parent,
                name,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
            )
            .map_err(err)?;
            // The pax records are read with the header, before the data.
            let xattrs = entry_xattrs(entry);
            let mut file = std::fs::File::from(fd);
            copy(entry, &mut file, buf).map_err(|source| ArchiveError::Write {
                path: path.to_string(),
                source,
            })?;
            // A regular file's metadata through its own descriptor: fewer
            // calls than by name, and no name to follow.
            let (uid, gid) = owner(&header, opts);
            nix::unistd::fchown(&file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(err)?;
            nix::sys::stat::fchmod(&file, mode).map_err(err)?;
            for (attr, value) in xattrs {
                let _ = super::sys::fsetxattr(file.as_fd(), &attr, &value);
            }
            let t = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
            nix::sys::stat::futimens(&file, &t, &t).map_err(err)?;
            return Ok(());
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            symlinkat(fs::os(&target), parent, name).map_err(err)?;
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let target_path =
                paths::entry_path(dest, &target).ok_or_else(|| ArchiveError::Breakout {
                    entry: format!("{} -> {target}", entry_name(entry)),
                    dest: dest.to_string(),
                })?;
            let Some((tp, tn)) = paths::parent_and_name(&target_path) else {
                return Err(err(Errno::EPERM));
            };
            let tdir = fs::open_dir(root, tp).map_err(err)?;
            linkat(tdir.as_fd(), tn, parent, name, nix::fcntl::AtFlags::empty()).map_err(err)?;
            // A link shares its target's inode: nothing more to set.
            return Ok(());
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let sflag = match kind {
                EntryType::Char => SFlag::S_IFCHR,
                EntryType::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
            mknodat(parent, name, sflag, mode, dev).map_err(err)?;
        }
        other => {
            return Err(ArchiveError::UnknownEntry {
                entry: entry_name(entry),
                kind: format!("{other:?}"),
            })
        }
    }
    let (uid, gid) = owner(&header, opts);
    fchownat(
        parent,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(err)?;
    let mtime = header.mtime().unwrap_or(0) as i64;
    if kind == EntryType::Symlink {
        let t = TimeSpec::new(mtime, 0);
        let _ = utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink);
        return Ok(());
    }
    // After the owner: chown clears the set-id bits.
    fchmodat(parent, name, mode, FchmodatFlags::NoFollowSymlink)
        .or_else(|e| match e {
            // Kernels without fchmodat2 refuse NoFollow; the entry is no link.
            Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL => {
                fchmodat(parent, name, mode, FchmodatFlags::FollowSymlink)
            }
            e => Err(e),
        })
        .map_err(err)?;
    if kind == EntryType::Directory {
        for (attr, value) in entry_xattrs(entry) {
            let _ = set_xattr(parent, name, &attr, &value);
        }
    }
    if is_dir {
        dir_times.push((path.to_string(), mtime));
    } else {
        let t = TimeSpec::new(mtime, 0);
        utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(err)?;
    }
    Ok(())
}

/// The owner a made file gets: the container's user with `copyUIDGID`,
/// else the archive's.
fn owner(header: &tar::Header, opts: &ExtractOptions) -> (u32, u32) {
    match opts.owner {
        Some(owner) => owner,
        None => (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        ),
    }
}

/// The extended attributes an entry's pax records carry.
fn entry_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.flatten()
        .filter_map(|ext| {
            let attr = ext.key_bytes().strip_prefix(b"SCHILY.xattr.")?;
            Some((attr.to_vec(), ext.value_bytes().to_vec()))
        })
        .collect()
}

/// Bytes moved at a time from the archive into a file.
const COPY_BUFFER: usize = 256 << 10;

fn copy(from: &mut impl Read, to: &mut impl io::Write, buf: &mut [u8]) -> io::Result<()> {
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&entry.path_bytes()).into_owned()
}

/// Sets an extended attribute on `name` in `dir` (not a link), through a
/// descriptor of the file.
fn set_xattr(dir: BorrowedFd<'_>, name: &str, attr: &[u8], value: &[u8]) -> Result<(), Errno> {
    let fd = fs::open_child(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    super::sys::fsetxattr(fd.as_fd(), attr, value)
}
