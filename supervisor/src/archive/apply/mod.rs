//! Applying a layer tar into the upper directory of an overlayfs snapshot.
//!
//! Every write goes through a descriptor of the entry's parent directory,
//! reached from the root one component at a time with
//! `O_DIRECTORY | O_NOFOLLOW`: a symlink met on the way is an error, never
//! followed, so no entry lands outside the root. The chain of open parents is
//! kept between entries; tars list entries depth first, so most entries reuse
//! their predecessor's parent without a single lookup.
//!
//! This module reads the stream and sends each entry where it goes:
//! `write` writes directories, files, links and nodes; `whiteout` turns
//! `.wh.` entries into overlay whiteouts; `meta` reads an entry's owner,
//! mode, times and xattrs and sets them; `lowers` looks through the lower
//! layers and makes the directories a layer implies; `pool` writes small
//! files on other threads.

mod lowers;
mod meta;
mod pool;
#[cfg(test)]
mod tests;
mod whiteout;
mod write;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, futimens, makedev, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, Gid, Uid};
use tar::EntryType;
use tracing::debug;

use self::lowers::{open_child, Lowers, StepError};
use self::meta::{copy_xattrs, read_meta};
use self::pool::{Pool, FILE_WRITERS};
use crate::archive::sys::XattrTarget;
use crate::archive::{
    file_type, open_dir_at, ApplyStats, ArchiveError, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX,
};

/// File data moves in chunks of this size.
const COPY_BUFFER: usize = 1 << 20;

/// Applies a layer tar (already decompressed) into `root`, the upper directory
/// of a new overlayfs snapshot (normally empty). `lowers` are the snapshot's
/// parent layer directories, nearest first (used only to resolve hard links
/// whose target lives in a lower layer: copy the file up into root, then link).
///
/// Directories the tar needs but does not list are created with the mode,
/// owner, xattrs and times of the same directory in the nearest lower that
/// has it, else mode 0755 owned by root (as containerd does). A whiteout
/// hides only what the lowers hold: an entry of the same layer stays (a
/// directory of the layer becomes opaque instead), as the image-spec says.
///
/// Reading stops at the end-of-archive marker; whatever follows is left in
/// `reader`. Headers are read 512 bytes at a time, so `reader` should be
/// buffered. Nothing is synced: the caller syncs the filesystem once. On
/// error `root` holds part of the layer and is to be discarded.
pub fn apply_layer<R: std::io::Read>(
    reader: R,
    root: &std::path::Path,
    lowers: &[std::path::PathBuf],
) -> Result<ApplyStats, ArchiveError> {
    let root_fd = openat(
        nix::fcntl::AT_FDCWD,
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::Open {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let eof = Rc::new(Cell::new(false));
    let mut archive = tar::Archive::new(EofTracker {
        inner: reader,
        eof: Rc::clone(&eof),
    });
    let mut applier = Applier {
        root: root_fd,
        stack: Vec::new(),
        lowers: Lowers {
            paths: lowers,
            fds: lowers.iter().map(|_| None).collect(),
            implied: Vec::new(),
        },
        dir_times: BTreeMap::new(),
        buf: vec![0; COPY_BUFFER],
        stats: ApplyStats::default(),
        pool: Pool::new(FILE_WRITERS),
    };
    let read_error = |source: io::Error| {
        if eof.get() {
            ArchiveError::Truncated
        } else {
            ArchiveError::ReadLayer { source }
        }
    };
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        applier.apply_entry(&mut entry, &eof)?;
    }
    // A stream that ends cleanly between two entries, without the zero
    // blocks, is a complete layer: umoci writes layers that way, and GNU tar,
    // Go's archive/tar, Docker and containerd all accept them. A cut inside
    // a header or an entry's data is an error above, and a layer cut short
    // on the way here fails its digest check.
    applier.finish()?;
    applier.stats.implied_dirs = std::mem::take(&mut applier.lowers.implied);
    debug!(
        root = %root.display(),
        entries = applier.stats.entries,
        bytes = applier.stats.bytes,
        "layer applied"
    );
    Ok(applier.stats)
}

/// Reads the regular file `rel` (relative, e.g. `etc/passwd`) as the
/// overlay of `lowers` (topmost first) shows it, up to `limit` bytes; `None`
/// when it is absent, whited out, or not a regular file (a symlink is not
/// followed).
pub fn read_file_in_lowers(
    lowers: &[PathBuf],
    rel: &Path,
    limit: u64,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    let mut l = Lowers {
        paths: lowers,
        fds: lowers.iter().map(|_| None).collect(),
        implied: Vec::new(),
    };
    let Some(found) = l.find(rel)? else {
        return Ok(None);
    };
    if file_type(&found.stat) != SFlag::S_IFREG {
        return Ok(None);
    }
    let path = lowers[found.lower].join(rel);
    let Some(name) = rel.file_name() else {
        return Ok(None);
    };
    let fd = openat(
        &found.dir,
        name,
        // O_NONBLOCK: a fifo swapped in since the lstat (a running
        // container's layer) must not hang the open.
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::Read {
        path: path.clone(),
        source: e.into(),
    })?;
    let mut data = Vec::new();
    File::from(fd)
        .take(limit)
        .read_to_end(&mut data)
        .map_err(|source| ArchiveError::Read { path, source })?;
    Ok(Some(data))
}

/// Gives each directory of `dirs` (paths inside `root` that a layer applied
/// without its lowers had to make up) the owner, mode, xattrs and mtime of
/// the same directory in the nearest of `lowers`, as `apply_layer` does when
/// it has them; a pull unpacks layers in parallel, before their lowers
/// exist. Paths are walked without following symlinks; a path that is no
/// longer a directory in `root`, or that no lower holds, is left alone.
pub fn inherit_implied_dirs(
    root: &Path,
    dirs: &[PathBuf],
    lowers: &[PathBuf],
) -> Result<(), ArchiveError> {
    let mut l = Lowers {
        paths: lowers,
        fds: lowers.iter().map(|_| None).collect(),
        implied: Vec::new(),
    };
    let open_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: nix::Error| ArchiveError::Open {
            path,
            source: e.into(),
        }
    };
    for rel in dirs {
        let Some(found) = l.find(rel)? else {
            continue;
        };
        if file_type(&found.stat) != SFlag::S_IFDIR {
            continue;
        }
        let mut fd = open_dir_at(nix::fcntl::AT_FDCWD, root).map_err(open_err(root))?;
        let mut ok = true;
        for comp in rel.iter() {
            match open_dir_at(&fd, comp) {
                Ok(next) => fd = next,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let st = &found.stat;
        let write = |e: nix::Error| ArchiveError::Write {
            path: rel.clone(),
            source: e.into(),
        };
        fchown(
            &fd,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(write)?;
        fchmod(&fd, Mode::from_bits_truncate(st.st_mode & 0o7777)).map_err(write)?;
        if let Some(name) = rel.file_name() {
            let lower_dir = open_dir_at(&found.dir, name).map_err(open_err(rel))?;
            copy_xattrs(
                XattrTarget::Fd(lower_dir.as_fd()),
                XattrTarget::Fd(fd.as_fd()),
                &l.paths[found.lower].join(rel),
                rel,
            )?;
        }
        let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
        futimens(&fd, &mtime, &mtime).map_err(write)?;
    }
    Ok(())
}

/// Notes when the layer stream reaches its end.
struct EofTracker<R> {
    inner: R,
    eof: Rc<Cell<bool>>,
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        Ok(n)
    }
}

type DirTimes = BTreeMap<PathBuf, TimeSpec>;

struct Applier<'a> {
    root: OwnedFd,
    /// The open directories from the root down to the last entry's parent.
    stack: Vec<(OsString, OwnedFd)>,
    lowers: Lowers<'a>,
    /// Directory times, set once every entry is written.
    dir_times: DirTimes,
    buf: Vec<u8>,
    stats: ApplyStats,
    /// Writes small regular files on other threads.
    pool: Pool,
}

impl Applier<'_> {
    /// Makes the top of the stack the directory `parent` (a normalised path
    /// in the root), opening, or with `create` making, what is missing.
    fn open_parent(
        &mut self,
        parent: &Path,
        entry: &Path,
        create: bool,
    ) -> Result<(), ArchiveError> {
        let common = self
            .stack
            .iter()
            .zip(parent.iter())
            .take_while(|((open, _), want)| open.as_os_str() == *want)
            .count();
        self.stack.truncate(common);
        if common == parent.iter().count() {
            return Ok(());
        }
        let mut rel: PathBuf = parent.iter().take(common).collect();
        for comp in parent.iter().skip(common) {
            rel.push(comp);
            let at = top(&self.root, &self.stack);
            let ctx = create.then_some((&mut self.lowers, &mut self.dir_times));
            let fd = open_child(at, comp, &rel, ctx).map_err(|e| e.into_archive(entry, &rel))?;
            self.stack.push((comp.to_owned(), fd));
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        eof: &Cell<bool>,
    ) -> Result<(), ArchiveError> {
        self.stats.entries += 1;
        let raw = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
        let mut kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            debug!(path = %raw.display(), "global PAX header ignored");
            return Ok(());
        }
        // Old tars mark directories with a trailing slash only.
        if kind == EntryType::Regular && raw.as_os_str().as_bytes().ends_with(b"/") {
            kind = EntryType::Directory;
        }
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {}
            other => {
                return Err(ArchiveError::UnsupportedEntry {
                    kind: format!("{:?}", other.as_byte() as char),
                    path: raw,
                })
            }
        }
        let rel = normalize(&raw).ok_or_else(|| ArchiveError::Escapes { path: raw.clone() })?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            debug!(path = %raw.display(), "layer entry for the root itself ignored");
            return Ok(());
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let meta = read_meta(entry, &raw)?;

        // Whiteout metadata directories (aufs' `.wh..wh.plnk`) and what
        // they hold are not part of the filesystem.
        if parent
            .iter()
            .any(|c| c.as_bytes().starts_with(WHITEOUT_META_PREFIX))
        {
            debug!(path = %raw.display(), "entry inside whiteout metadata ignored");
            return Ok(());
        }
        // A whiteout acts on the path it names, in the same directory.
        let acts_on = if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            parent.join(OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]))
        } else {
            rel.clone()
        };
        let is_dir = kind == EntryType::Directory && !name.as_bytes().starts_with(WHITEOUT_PREFIX);
        self.pool.order_before(&acts_on, is_dir)?;
        if kind == EntryType::Link {
            // Its target may be a file still queued.
            self.pool.drain()?;
        }
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.apply_whiteout(&raw, &parent, &name, &meta);
        }

        self.open_parent(&parent, &raw, true)?;
        match kind {
            EntryType::Directory => self.write_dir(&rel, &name, &meta),
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ArchiveError::NoLinkTarget { path: raw.clone() })?;
                self.write_symlink(&rel, &name, OsStr::from_bytes(&target), &meta)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ArchiveError::NoLinkTarget { path: raw.clone() })?;
                let target = PathBuf::from(OsStr::from_bytes(&target));
                self.write_link(&raw, &rel, &name, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let header = entry.header();
                let bad = |source| ArchiveError::BadHeader {
                    path: raw.clone(),
                    source,
                };
                let (sflag, dev) = if kind == EntryType::Fifo {
                    (SFlag::S_IFIFO, 0)
                } else {
                    let major = header.device_major().map_err(bad)?.unwrap_or(0);
                    let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
                    let sflag = if kind == EntryType::Char {
                        SFlag::S_IFCHR
                    } else {
                        SFlag::S_IFBLK
                    };
                    (sflag, makedev(major.into(), minor.into()))
                };
                self.write_node(&rel, &name, sflag, dev, &meta)
            }
            _ => {
                let sparse = kind == EntryType::GNUSparse;
                self.write_file(entry, &raw, &rel, &name, &meta, sparse, eof)
            }
        }
    }

    /// Opens the directory `rel` walking from the root, creating what is
    /// missing if `create` is given. The error carries the path reached.
    fn walk_from_root(
        &mut self,
        rel: &Path,
        create: Option<()>,
    ) -> Result<OwnedFd, (StepError, PathBuf)> {
        let mut dir = self
            .root
            .try_clone()
            .map_err(|e| (StepError::Io(io_errno(&e)), PathBuf::new()))?;
        let mut at = PathBuf::new();
        for comp in rel.iter() {
            at.push(comp);
            let ctx = create.map(|()| (&mut self.lowers, &mut self.dir_times));
            dir = open_child(dir.as_fd(), comp, &at, ctx).map_err(|e| (e, at.clone()))?;
        }
        Ok(dir)
    }

    /// Sets the times of the directories the layer listed, now that nothing
    /// is written into them any more.
    fn finish(&mut self) -> Result<(), ArchiveError> {
        self.pool.drain()?;
        self.stack.clear();
        let times = std::mem::take(&mut self.dir_times);
        for (rel, mtime) in &times {
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                continue;
            };
            // Replaced or removed by a later entry: nothing to set.
            if self.open_parent(parent, rel, false).is_err() {
                continue;
            }
            let dir = top(&self.root, &self.stack);
            match open_dir_at(dir, name) {
                Ok(fd) => futimens(&fd, mtime, mtime).map_err(|e| write_err(rel, e))?,
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {}
                Err(e) => return Err(write_err(rel, e)),
            }
        }
        Ok(())
    }
}

fn write_err(path: &Path, e: impl Into<io::Error>) -> ArchiveError {
    ArchiveError::Write {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn top<'s>(root: &'s OwnedFd, stack: &'s [(OsString, OwnedFd)]) -> BorrowedFd<'s> {
    stack.last().map_or(root.as_fd(), |(_, fd)| fd.as_fd())
}

/// Normalises a path of the tar: leading `/` and `.` components go, `..`
/// removes the component before it. `None` if `..` would leave the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
        }
    }
    Some(out)
}

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
