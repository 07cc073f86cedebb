//! File operations inside a container's root, by file descriptor only.
//! Every path is resolved by the kernel with `openat2(2)` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` against a descriptor of the
//! root, so `..` and symbolic links (absolute or relative, swapped in while
//! we work or not) stay inside it; a last element is then used with `*at`
//! calls relative to its parent's descriptor and never followed.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::paths;

/// Most symbolic links followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` (absolute in the container) inside `root`, symbolic links
/// followed inside it, the last one too unless `flags` has `O_NOFOLLOW`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(root, rel, how(flags))
}

/// Opens the directory `path` in `root` as an `O_PATH` descriptor.
pub fn open_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd, Errno> {
    open_in_root(root, path, OFlag::O_PATH | OFlag::O_DIRECTORY)
}

/// Opens `name` in the directory `dir`, never following a link.
pub fn open_child(dir: BorrowedFd<'_>, name: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` of `name` in `dir`.
pub fn lstat_child(dir: BorrowedFd<'_>, name: &str) -> Result<FileStat, Errno> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// The file type bits of a mode.
pub fn kind(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits())
}

pub fn is_dir(st: &FileStat) -> bool {
    kind(st.st_mode) == SFlag::S_IFDIR
}

/// The target of the symbolic link `name` in `dir`.
pub fn read_link(dir: BorrowedFd<'_>, name: &str) -> Result<Vec<u8>, Errno> {
    readlinkat(dir, name).map(|t| t.as_bytes().to_vec())
}

/// `path` (absolute, clean) with every symbolic link in it followed
/// inside the root, as Docker's `FollowSymlinkInScope`: a clean absolute
/// path without links, whose missing tail is kept as given. Each element
/// is looked at through `openat2` in the root, so the string names a
/// place inside it even if links change meanwhile; callers open it again
/// with [`open_in_root`], which keeps any later swap inside the root too.
pub fn follow_links(root: BorrowedFd<'_>, path: &str) -> Result<String, Errno> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut links = 0;
    let mut missing = false;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        if missing {
            done.push(part);
            continue;
        }
        let candidate = format!("/{}/{}", done.join("/"), part);
        let fd = match open_in_root(root, &candidate, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                missing = true;
                done.push(part);
                continue;
            }
            Err(e) => return Err(e),
        };
        let st = fstat(fd.as_fd())?;
        if kind(st.st_mode) != SFlag::S_IFLNK {
            done.push(part);
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Errno::ELOOP);
        }
        let target = readlinkat(fd.as_fd(), "")?;
        let target = target.as_bytes();
        if target.starts_with(b"/") {
            done.clear();
        }
        for p in String::from_utf8_lossy(target).split('/').rev() {
            if !p.is_empty() {
                todo.push(p.to_string());
            }
        }
    }
    Ok(paths::clean(&format!("/{}", done.join("/"))))
}

/// Removes `name` from `dir`, a directory with all it holds.
pub fn remove_all(dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let sub = open_child(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let children = list_dir(sub.as_fd())?;
    for child in children {
        remove_all(sub.as_fd(), &child)?;
    }
    match nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The names in a directory opened for reading, sorted, without `.` and
/// `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<String>, Errno> {
    let own = open_child(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut d = nix::dir::Dir::from_fd(own)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    names.sort();
    Ok(names)
}

/// A name for the `*at` calls: bytes as the tar gave them.
pub fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
