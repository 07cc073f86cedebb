//! Applying a layer tar into the upper directory of an overlayfs snapshot.
//!
//! Every write goes through a descriptor of the entry's parent directory,
//! reached from the root one component at a time with
//! `O_DIRECTORY | O_NOFOLLOW`: a symlink met on the way is an error, never
//! followed, so no entry lands outside the root. The chain of open parents is
//! kept between entries; tars list entries depth first, so most entries reuse
//! their predecessor's parent without a single lookup.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat,
    Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tar::EntryType;
use tracing::{debug, warn};

use super::sys::{get_xattr, list_xattrs, set_xattr, XattrTarget};
use super::{
    file_type, is_whiteout, lstat_at, open_dir_at, remove_all_at, ApplyStats, ArchiveError,
    OPAQUE_MARKER, OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, PAX_XATTR_PREFIX, WHITEOUT_META_PREFIX,
    WHITEOUT_PREFIX,
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
/// Threads writing small files, besides the one reading the layer.
const FILE_WRITERS: usize = 2;

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
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
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

/// Metadata of one entry, from its header and PAX records.
#[derive(Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// The lower layers, opened when first needed.
struct Lowers<'a> {
    paths: &'a [PathBuf],
    fds: Vec<Option<OwnedFd>>,
    /// Directories made without a lower to copy attributes from.
    implied: Vec<PathBuf>,
}

/// An object found in a lower layer: its parent directory and its stat.
struct Found {
    dir: OwnedFd,
    stat: FileStat,
    lower: usize,
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

/// Regular files up to this size are read into memory and written by the
/// pool; larger ones by the reading thread.
const POOL_FILE_MAX: u64 = 256 << 10;
/// Files queued for the pool at most (so at most 4 MiB held in memory).
const POOL_QUEUE: usize = 16;

/// One small regular file for the pool to write.
struct FileJob {
    dir: OwnedFd,
    name: OsString,
    rel: PathBuf,
    data: Vec<u8>,
    meta: Meta,
}

/// Creating an inode is what unpacking a layer of many small files spends
/// its time on, and it is kernel work that scales with threads (on the ext4
/// hosts measured, one thread creates ~1,500 files a second; two, nearly
/// twice that). So regular files are written by a few threads while the
/// reading thread goes on with the stream, directories and links. Order
/// still holds where it matters: an entry whose path (or a parent of it)
/// is still queued, every hard link, and the end of the layer wait for the
/// queue to drain.
struct Pool {
    tx: Option<std::sync::mpsc::SyncSender<FileJob>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Jobs queued and not yet written.
    state: std::sync::Arc<(std::sync::Mutex<PoolState>, std::sync::Condvar)>,
    /// Paths queued since the queue last drained, and their parents.
    queued: std::collections::HashSet<PathBuf>,
    queued_parents: std::collections::HashSet<PathBuf>,
}

#[derive(Default)]
struct PoolState {
    pending: usize,
    error: Option<ArchiveError>,
}

impl Pool {
    fn new(threads: usize) -> Pool {
        let (tx, rx) = std::sync::mpsc::sync_channel::<FileJob>(POOL_QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let state = std::sync::Arc::new((
            std::sync::Mutex::new(PoolState::default()),
            std::sync::Condvar::new(),
        ));
        let workers = (0..threads)
            .map(|_| {
                let rx = std::sync::Arc::clone(&rx);
                let state = std::sync::Arc::clone(&state);
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let result = write_small_file(&job);
                    let (lock, done) = &*state;
                    if let Ok(mut st) = lock.lock() {
                        st.pending -= 1;
                        if let Err(e) = result {
                            st.error.get_or_insert(e);
                        }
                        done.notify_all();
                    }
                })
            })
            .collect();
        Pool {
            tx: Some(tx),
            workers,
            state,
            queued: Default::default(),
            queued_parents: Default::default(),
        }
    }

    fn submit(&mut self, job: FileJob) -> Result<(), ArchiveError> {
        for parent in job.rel.ancestors().skip(1) {
            if !self.queued_parents.insert(parent.to_path_buf()) {
                break;
            }
        }
        self.queued.insert(job.rel.clone());
        if let Ok(mut st) = self.state.0.lock() {
            if let Some(e) = st.error.take() {
                return Err(e);
            }
            st.pending += 1;
        }
        let rel = job.rel.clone();
        match &self.tx {
            Some(tx) if tx.send(job).is_ok() => Ok(()),
            _ => Err(write_err(
                &rel,
                io::Error::other("file writer threads are gone"),
            )),
        }
    }

    /// Waits until every queued file is written; the first error, if any.
    fn drain(&mut self) -> Result<(), ArchiveError> {
        self.queued.clear();
        self.queued_parents.clear();
        let (lock, done) = &*self.state;
        let Ok(mut st) = lock.lock() else {
            return Err(write_err(
                Path::new(""),
                io::Error::other("file writer panicked"),
            ));
        };
        while st.pending > 0 {
            st = match done.wait(st) {
                Ok(st) => st,
                Err(_) => {
                    return Err(write_err(
                        Path::new(""),
                        io::Error::other("file writer panicked"),
                    ))
                }
            };
        }
        match st.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drains the queue first if `rel` or a parent of it is queued, or if
    /// an entry that is not a directory would replace a directory holding
    /// queued files.
    fn order_before(&mut self, rel: &Path, is_dir: bool) -> Result<(), ArchiveError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        if rel.ancestors().any(|a| self.queued.contains(a))
            || (!is_dir && self.queued_parents.contains(rel))
        {
            self.drain()?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// What `write_file` does for a file already read into memory.
fn write_small_file(job: &FileJob) -> Result<(), ArchiveError> {
    let rel = &job.rel;
    let mut file = create_file(job.dir.as_fd(), &job.name).map_err(|e| write_err(rel, e))?;
    file.write_all(&job.data).map_err(|e| write_err(rel, e))?;
    set_file_meta(&file, &job.meta, rel)
}

/// Gives a regular file just written its owner, mode, xattrs and mtime.
fn set_file_meta(file: &File, meta: &Meta, rel: &Path) -> Result<(), ArchiveError> {
    let fail = |e: Errno| write_err(rel, e);
    // chown clears setuid/setgid and file capabilities: mode and xattrs
    // come after it.
    fchown(
        file,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .map_err(fail)?;
    fchmod(file, Mode::from_bits_truncate(meta.mode)).map_err(fail)?;
    set_xattrs(XattrTarget::Fd(file.as_fd()), &meta.xattrs, rel)?;
    futimens(file, &meta.mtime, &meta.mtime).map_err(fail)
}

/// Why a directory could not be opened on the way down a path.
enum StepError {
    Missing,
    Symlink,
    NotDir,
    Io(Errno),
    Archive(ArchiveError),
}

impl StepError {
    /// The error for entry `path` whose parent `dir` could not be opened.
    fn into_archive(self, path: &Path, dir: &Path) -> ArchiveError {
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

/// Parses a PAX time (`seconds[.fraction]`, maybe negative).
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(value).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(match (neg, nanos) {
        (false, n) => TimeSpec::new(secs, n),
        (true, 0) => TimeSpec::new(-secs, 0),
        (true, n) => TimeSpec::new(-secs - 1, 1_000_000_000 - n),
    })
}

/// Reads the metadata of `entry` (whose tar path is `path`).
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<Meta, ArchiveError> {
    let bad = |source: io::Error| ArchiveError::BadHeader {
        path: path.to_path_buf(),
        source,
    };
    let header = entry.header();
    let mode = header.mode().map_err(bad)? & 0o7777;
    let uid = header.uid().map_err(bad)?;
    let uid =
        u32::try_from(uid).map_err(|_| bad(io::Error::other(format!("uid {uid} too large"))))?;
    let gid = header.gid().map_err(bad)?;
    let gid =
        u32::try_from(gid).map_err(|_| bad(io::Error::other(format!("gid {gid} too large"))))?;
    let mtime = header.mtime().map_err(bad)?;
    let mut mtime = TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    let mut xattrs = Vec::new();
    if let Some(records) = entry.pax_extensions().map_err(bad)? {
        for record in records {
            let record = record.map_err(bad)?;
            let key = record.key_bytes();
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX.as_bytes()) {
                if name.starts_with(OVERLAY_XATTR_PREFIX) {
                    debug!(path = %path.display(), "overlay xattr in layer ignored");
                    continue;
                }
                let name = CString::new(name)
                    .map_err(|_| bad(io::Error::other("xattr name holds a NUL byte")))?;
                xattrs.push((name, record.value_bytes().to_vec()));
            } else if key == b"mtime" {
                if let Some(t) = parse_pax_time(record.value_bytes()) {
                    mtime = t;
                }
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
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

fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<File> {
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

/// Sets xattrs on `target`. Like containerd, an xattr the filesystem does
/// not support, or a `security.*` one it refuses, is skipped with a warning.
fn set_xattrs(
    target: XattrTarget<'_>,
    xattrs: &[(CString, Vec<u8>)],
    path: &Path,
) -> Result<(), ArchiveError> {
    for (name, value) in xattrs {
        if let Err(e) = set_xattr(target, name, value) {
            let errno = e.raw_os_error();
            if errno == Some(libc::ENOTSUP)
                || (errno == Some(libc::EPERM) && name.to_bytes().starts_with(b"security."))
            {
                warn!(path = %path.display(), xattr = ?name, error = %e, "xattr ignored");
                continue;
            }
            return Err(write_err(
                path,
                io::Error::new(e.kind(), format!("set xattr {name:?}: {e}")),
            ));
        }
    }
    Ok(())
}

/// Copies the xattrs of `from` to `to`, except overlayfs' own.
fn copy_xattrs(
    from: XattrTarget<'_>,
    to: XattrTarget<'_>,
    from_path: &Path,
    to_path: &Path,
) -> Result<(), ArchiveError> {
    let read = |source: io::Error| ArchiveError::Read {
        path: from_path.to_path_buf(),
        source,
    };
    let mut xattrs = Vec::new();
    for name in list_xattrs(from).map_err(read)? {
        if name.to_bytes().starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        if let Some(value) = get_xattr(from, &name).map_err(read)? {
            xattrs.push((name, value));
        }
    }
    set_xattrs(to, &xattrs, to_path)
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    matches!(get_xattr(XattrTarget::Fd(dir), OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

fn set_opaque(dir: BorrowedFd<'_>, path: &Path) -> Result<(), ArchiveError> {
    set_xattr(XattrTarget::Fd(dir), OPAQUE_XATTR, b"y").map_err(|e| {
        write_err(
            path,
            io::Error::new(e.kind(), format!("set xattr {OPAQUE_XATTR:?}: {e}")),
        )
    })
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

impl Lowers<'_> {
    fn root(&mut self, i: usize) -> Result<BorrowedFd<'_>, ArchiveError> {
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
    fn find(&mut self, rel: &Path) -> Result<Option<Found>, ArchiveError> {
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

/// Opens directory `name` in `parent` (`rel` is its path in the root). If
/// it is missing, or a whiteout, and `lowers` are given, creates it.
fn open_child(
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

    /// `dir/.wh.name` and `dir/.wh..wh..opq`.
    fn apply_whiteout(
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

    fn write_dir(&mut self, rel: &Path, name: &OsStr, meta: &Meta) -> Result<(), ArchiveError> {
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

    #[allow(clippy::too_many_arguments)]
    fn write_file<R: Read>(
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

    fn write_symlink(
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

    fn write_node(
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
    fn finish_node(
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
    fn write_link(
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
    fn link_target_dir(
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

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{Cursor, Read};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::Path;

    use tar::EntryType;

    use super::super::testutil::{names, require_root, tree, xattrs_of, Layer, MTIME};
    use super::{apply_layer, normalize, parse_pax_time, ArchiveError};

    /// A file capability granting cap_net_bind_service (vfs_cap_data v2).
    const CAP_NET_BIND: [u8; 20] = [
        0x01, 0, 0, 0x02, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn apply(tar: &[u8], root: &Path) -> Result<super::ApplyStats, ArchiveError> {
        apply_layer(tar, root, &[])
    }

    #[test]
    fn files_are_read_through_the_layers() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let (base, mid, top) = (
            tmp.path().join("1"),
            tmp.path().join("2"),
            tmp.path().join("3"),
        );
        for d in [&base, &mid, &top] {
            fs::create_dir(d).unwrap();
        }
        let tar = Layer::new()
            .dir("etc/", 0o755)
            .file("etc/passwd", b"root:x:0:0\n", 0o644)
            .file("etc/group", b"root:x:0:\n", 0o644)
            .finish();
        apply(&tar, &base).unwrap();
        let tar = Layer::new()
            .dir("etc/", 0o755)
            .file("etc/passwd", b"app:x:7:7\n", 0o644)
            .file("etc/.wh.group", b"", 0o644)
            .symlink("etc/hosts", "/etc/passwd")
            .finish();
        apply_layer(&tar[..], &mid, std::slice::from_ref(&base)).unwrap();
        let read = |lowers: &[std::path::PathBuf], rel: &str| {
            super::read_file_in_lowers(lowers, Path::new(rel), 4).unwrap()
        };
        let all = [top.clone(), mid.clone(), base.clone()];
        // The nearest layer wins, up to the limit; a whiteout hides; a
        // symlink is not followed.
        assert_eq!(read(&all, "etc/passwd").as_deref(), Some(&b"app:"[..]));
        assert_eq!(read(&all, "etc/group"), None);
        assert_eq!(read(&all, "etc/hosts"), None);
        assert_eq!(read(&all, "etc/missing"), None);
        assert_eq!(
            read(std::slice::from_ref(&base), "etc/group").as_deref(),
            Some(&b"root"[..])
        );
    }

    #[test]
    fn every_entry_type_lands_with_its_metadata() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let tar = Layer::new()
            .dir_owned("etc/", 0o750, 0, 42, 1_400_000_000)
            .file_owned("etc/passwd", b"root:x:0:0\n", 0o644, 0, 0, 1_500_000_000)
            .dir("tmp/", 0o1777)
            .file("usr/bin/sudo", b"#!sudo", 0o4755)
            .file_owned("usr/bin/tool", b"tool", 0o6711, 1000, 1001, MTIME)
            .pax(&[
                ("SCHILY.xattr.user.origin", b"layer"),
                ("SCHILY.xattr.security.capability", &CAP_NET_BIND),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ])
            .file_owned("usr/bin/ping", b"ping", 0o755, 1000, 1000, MTIME)
            .symlink("bin", "usr/bin")
            .hardlink("usr/bin/sudoedit", "usr/bin/sudo")
            .node("dev/null", EntryType::Char, 1, 3, 0o666)
            .node("dev/loop0", EntryType::Block, 7, 0, 0o660)
            .node("run/fifo", EntryType::Fifo, 0, 0, 0o600)
            .finish();
        let stats = apply(&tar, root).unwrap();
        assert_eq!(stats.entries, 11);
        assert_eq!(stats.bytes, 11 + 6 + 4 + 4);
        // Before anything reads the file.
        let atime = fs::metadata(root.join("etc/passwd")).unwrap().atime();
        assert_eq!(atime, 1_500_000_000);

        let t = tree(root);
        assert_eq!(
            names(&t),
            [
                "bin",
                "dev",
                "dev/loop0",
                "dev/null",
                "etc",
                "etc/passwd",
                "run",
                "run/fifo",
                "tmp",
                "usr",
                "usr/bin",
                "usr/bin/ping",
                "usr/bin/sudo",
                "usr/bin/sudoedit",
                "usr/bin/tool",
            ]
        );
        let etc = &t[Path::new("etc")];
        assert_eq!((etc.mode, etc.uid, etc.gid), (0o750, 0, 42));
        // Set after its child was written.
        assert_eq!(etc.mtime, 1_400_000_000);
        let passwd = &t[Path::new("etc/passwd")];
        assert_eq!(passwd.data.as_deref(), Some(&b"root:x:0:0\n"[..]));
        assert_eq!((passwd.mode, passwd.mtime), (0o644, 1_500_000_000));
        assert_eq!(t[Path::new("tmp")].mode, 0o1777);
        assert_eq!(t[Path::new("usr/bin/sudo")].mode, 0o4755);
        let tool = &t[Path::new("usr/bin/tool")];
        assert_eq!((tool.mode, tool.uid, tool.gid), (0o6711, 1000, 1001));

        let ping = &t[Path::new("usr/bin/ping")];
        assert_eq!((ping.uid, ping.gid), (1000, 1000));
        assert_eq!(
            ping.xattrs.get("user.origin").map(Vec::as_slice),
            Some(&b"layer"[..])
        );
        assert_eq!(
            ping.xattrs.get("security.capability").map(Vec::as_slice),
            Some(&CAP_NET_BIND[..])
        );
        assert!(!ping.xattrs.contains_key("trusted.overlay.opaque"));

        let bin = &t[Path::new("bin")];
        assert_eq!(bin.link.as_deref(), Some(std::ffi::OsStr::new("usr/bin")));
        assert_eq!(bin.mtime, MTIME as i64);

        let sudo = fs::metadata(root.join("usr/bin/sudo")).unwrap();
        let sudoedit = fs::metadata(root.join("usr/bin/sudoedit")).unwrap();
        assert_eq!(sudo.ino(), sudoedit.ino());
        assert_eq!(sudo.nlink(), 2);

        let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lp = fs::symlink_metadata(root.join("dev/loop0")).unwrap();
        assert!(lp.file_type().is_block_device());
        assert_eq!(lp.rdev(), nix::sys::stat::makedev(7, 0));
        let fifo = fs::symlink_metadata(root.join("run/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o600);

        // Parents the tar does not list: 0755, root.
        let usr = &t[Path::new("usr")];
        assert_eq!((usr.mode, usr.uid, usr.gid), (0o755, 0, 0));
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let tar = Layer::new()
            .file_owned(".wh.gone", b"", 0o644, 7, 8, 1_234_567_890)
            .dir("dir/", 0o755)
            .file("dir/.wh.x", b"", 0o644)
            .dir("opq/", 0o755)
            .file("opq/.wh..wh..opq", b"", 0o644)
            .file("opq/keep", b"kept", 0o644)
            .file("implicit/.wh..wh..opq", b"", 0o644)
            .dir(".wh..wh.plnk/", 0o700)
            .file(".wh..wh.plnk/123", b"aufs", 0o644)
            // Whiteout first, then a directory of the same layer: the new
            // directory must not merge with the lower one.
            .file(".wh.replaced", b"", 0o644)
            .dir("replaced/", 0o755)
            .file("replaced/new", b"new", 0o644)
            // Directory first, then its whiteout: the layer's own entries
            // stay (image-spec), the lower ones are hidden.
            .dir("later/", 0o755)
            .file("later/mine", b"mine", 0o644)
            .file(".wh.later", b"", 0o644)
            // A file of the layer is not hidden by the layer's whiteout.
            .file("f", b"f", 0o644)
            .file(".wh.f", b"", 0o644)
            .finish();
        apply(&tar, root).unwrap();

        let gone = fs::symlink_metadata(root.join("gone")).unwrap();
        assert!(gone.file_type().is_char_device());
        assert_eq!(gone.rdev(), 0);
        assert_eq!(
            (gone.uid(), gone.gid(), gone.mtime()),
            (7, 8, 1_234_567_890)
        );
        let x = fs::symlink_metadata(root.join("dir/x")).unwrap();
        assert!(x.file_type().is_char_device() && x.rdev() == 0);
        assert!(!root.join("dir/.wh.x").exists());

        let opaque = |p: &str| {
            xattrs_of(&root.join(p))
                .get("trusted.overlay.opaque")
                .cloned()
        };
        assert_eq!(opaque("opq").as_deref(), Some(&b"y"[..]));
        assert_eq!(fs::read(root.join("opq/keep")).unwrap(), b"kept");
        assert!(!root.join("opq/.wh..wh..opq").exists());
        assert_eq!(opaque("implicit").as_deref(), Some(&b"y"[..]));
        assert_eq!(opaque("dir"), None);
        assert_eq!(opaque("replaced").as_deref(), Some(&b"y"[..]));
        assert_eq!(fs::read(root.join("replaced/new")).unwrap(), b"new");
        assert_eq!(opaque("later").as_deref(), Some(&b"y"[..]));
        assert_eq!(fs::read(root.join("later/mine")).unwrap(), b"mine");
        assert_eq!(fs::read(root.join("f")).unwrap(), b"f");
        assert!(!root.join(".wh..wh.plnk").exists());
    }

    #[test]
    fn long_names_and_link_targets() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = format!("long/{}", "d".repeat(150));
        let file = format!("{dir}/{}", "f".repeat(200));
        let target = format!("/{}/{}", "t".repeat(120), "u".repeat(60));
        let pax_file = format!("pax/{}", "p".repeat(180));
        let mut layer = Layer::new();
        layer
            .file(&file, b"gnu long name", 0o644)
            .symlink(&format!("{dir}/link"), &target)
            .hardlink(&format!("{dir}/hard"), &file)
            .pax(&[("path", pax_file.as_bytes())])
            .raw(b"pax/truncated", EntryType::Regular, b"", b"pax long name")
            .pax(&[("linkpath", pax_file.as_bytes())])
            .raw(b"pax/hard", EntryType::Link, b"truncated", b"");
        apply(&layer.finish(), root).unwrap();

        assert_eq!(fs::read(root.join(&file)).unwrap(), b"gnu long name");
        assert_eq!(
            fs::read_link(root.join(&dir).join("link")).unwrap(),
            Path::new(&target)
        );
        assert_eq!(fs::metadata(root.join(&file)).unwrap().nlink(), 2);
        assert_eq!(fs::read(root.join(&pax_file)).unwrap(), b"pax long name");
        assert_eq!(
            fs::metadata(root.join("pax/hard")).unwrap().ino(),
            fs::metadata(root.join(&pax_file)).unwrap().ino()
        );
        assert!(!root.join("pax/truncated").exists());
    }

    #[test]
    fn hard_link_to_a_lower_file_copies_it_up() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let far = tmp.path().join("far");
        let root = tmp.path().join("root");
        for d in [&lower, &far, &root] {
            fs::create_dir(d).unwrap();
        }
        // The lower as a layer of its own.
        let lower_tar = Layer::new()
            .dir_owned("usr/", 0o750, 5, 6, 1_300_000_000)
            .dir("usr/lib/", 0o755)
            .pax(&[("SCHILY.xattr.user.x", b"1")])
            .file_owned(
                "usr/lib/libfoo.so",
                b"ELF",
                0o755,
                1000,
                1000,
                1_200_000_000,
            )
            .symlink("usr/lib/libfoo.so.1", "libfoo.so")
            .file(".wh.deleted", b"", 0o644)
            .finish();
        apply(&lower_tar, &lower).unwrap();
        let far_tar = Layer::new()
            .file("deleted", b"old", 0o644)
            .file("farfile", b"far", 0o600)
            .finish();
        apply(&far_tar, &far).unwrap();

        let tar = Layer::new()
            .hardlink("usr/lib/libbar.so", "usr/lib/libfoo.so")
            .hardlink("usr/lib/libbar.so.1", "usr/lib/libfoo.so.1")
            .hardlink("farlink", "farfile")
            .finish();
        apply_layer(&tar[..], &root, &[lower.clone(), far.clone()]).unwrap();

        let t = tree(&root);
        let foo = &t[Path::new("usr/lib/libfoo.so")];
        assert_eq!(foo.data.as_deref(), Some(&b"ELF"[..]));
        assert_eq!(
            (foo.mode, foo.uid, foo.gid, foo.mtime),
            (0o755, 1000, 1000, 1_200_000_000)
        );
        assert_eq!(foo.xattrs.get("user.x").map(Vec::as_slice), Some(&b"1"[..]));
        let bar = fs::metadata(root.join("usr/lib/libbar.so")).unwrap();
        assert_eq!(
            bar.ino(),
            fs::metadata(root.join("usr/lib/libfoo.so")).unwrap().ino()
        );
        assert_eq!(bar.nlink(), 2);
        // A hard link to a symlink links the symlink.
        let l = fs::symlink_metadata(root.join("usr/lib/libbar.so.1")).unwrap();
        assert!(l.file_type().is_symlink());
        assert_eq!(l.nlink(), 2);
        // The parents got the lower's attributes.
        let usr = &t[Path::new("usr")];
        assert_eq!((usr.mode, usr.uid, usr.gid), (0o750, 5, 6));
        assert_eq!(fs::read(root.join("farlink")).unwrap(), b"far");
        // The lowers are untouched.
        assert_eq!(
            fs::metadata(lower.join("usr/lib/libfoo.so"))
                .unwrap()
                .nlink(),
            1
        );
        assert!(!far.join("farlink").exists());

        // Deleted by the nearer lower: not there to link to.
        let tar = Layer::new().hardlink("d", "deleted").finish();
        let root2 = tmp.path().join("root2");
        fs::create_dir(&root2).unwrap();
        let err = apply_layer(&tar[..], &root2, &[lower, far]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"layer entry "d": link target "deleted" does not exist in the layer or below it"#
        );
    }

    #[test]
    fn paths_leaving_the_root_are_refused() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        for (name, msg) in [
            (
                &b"../etc/passwd"[..],
                r#"layer entry "../etc/passwd" escapes the root"#,
            ),
            (b"/../../x", r#"layer entry "/../../x" escapes the root"#),
            (b"a/../../x", r#"layer entry "a/../../x" escapes the root"#),
            (b"./../x", r#"layer entry "./../x" escapes the root"#),
        ] {
            let tar = Layer::new()
                .raw(name, EntryType::Regular, b"", b"x")
                .finish();
            let err = apply(&tar, &root).unwrap_err();
            assert_eq!(err.to_string(), msg);
        }
        assert!(!tmp.path().join("x").exists());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);

        // Absolute and dotted paths that stay inside are fine.
        let tar = Layer::new()
            .raw(b"/etc/hosts", EntryType::Regular, b"", b"h")
            .raw(b"./a/../b", EntryType::Regular, b"", b"b")
            .finish();
        apply(&tar, &root).unwrap();
        assert_eq!(fs::read(root.join("etc/hosts")).unwrap(), b"h");
        assert_eq!(fs::read(root.join("b")).unwrap(), b"b");
    }

    #[test]
    fn writes_through_symlinks_are_refused() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"safe").unwrap();
        let root = tmp.path().join("a/b/root");
        fs::create_dir_all(&root).unwrap();
        let evil = outside.to_str().unwrap();

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                Layer::new()
                    .symlink("evil", evil)
                    .file("evil/file", b"x", 0o644)
                    .finish(),
                r#"layer entry "evil/file": parent "evil" is a symlink, refusing to write through it"#,
            ),
            (
                Layer::new()
                    .symlink("up", "../../..")
                    .file("up/pwned", b"x", 0o644)
                    .finish(),
                r#"layer entry "up/pwned": parent "up" is a symlink, refusing to write through it"#,
            ),
            (
                Layer::new()
                    .symlink("evil", evil)
                    .file("evil/.wh.victim", b"", 0o644)
                    .finish(),
                r#"layer entry "evil/.wh.victim": parent "evil" is a symlink, refusing to write through it"#,
            ),
            (
                Layer::new()
                    .symlink("evil", evil)
                    .file("evil/.wh..wh..opq", b"", 0o644)
                    .finish(),
                r#"layer entry "evil/.wh..wh..opq": parent "evil" is a symlink, refusing to write through it"#,
            ),
            (
                Layer::new()
                    .symlink("evil", evil)
                    .dir("evil/sub/", 0o755)
                    .finish(),
                r#"layer entry "evil/sub/": parent "evil" is a symlink, refusing to write through it"#,
            ),
            (
                Layer::new()
                    .symlink("evil", evil)
                    .hardlink("x", "evil/victim")
                    .finish(),
                r#"layer entry "x": link target "evil/victim" goes through symlink "evil""#,
            ),
            (
                Layer::new()
                    .raw(b"x", EntryType::Link, b"../outside/victim", b"")
                    .finish(),
                r#"layer entry "x": link target "../outside/victim" escapes the root"#,
            ),
            (
                Layer::new()
                    .raw(b"x", EntryType::Link, b"../outside", b"")
                    .finish(),
                r#"layer entry "x": link target "../outside" escapes the root"#,
            ),
        ];
        for (tar, msg) in cases {
            let root = tempfile::tempdir_in(tmp.path().join("a/b")).unwrap();
            let err = apply(&tar, root.path()).unwrap_err();
            assert_eq!(err.to_string(), msg);
        }
        let left: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["victim"]);
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe");
        assert_eq!(fs::metadata(outside.join("victim")).unwrap().nlink(), 1);
        assert!(super::super::testutil::xattrs_of(&outside).is_empty());
        assert!(!tmp.path().join("pwned").exists());
        assert!(!tmp.path().join("a/pwned").exists());

        // Replacing a symlink by a file or directory does not follow it.
        let tar = Layer::new()
            .symlink("s", evil)
            .file("s", b"file", 0o644)
            .symlink("t", evil)
            .dir("t/", 0o755)
            .finish();
        apply(&tar, &root).unwrap();
        assert_eq!(fs::read(root.join("s")).unwrap(), b"file");
        assert!(fs::symlink_metadata(root.join("t")).unwrap().is_dir());
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe");
    }

    #[test]
    fn existing_entries_are_replaced_or_merged() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let tar = Layer::new()
            .file("a", b"file", 0o644)
            .dir("a/", 0o700)
            .dir("b/", 0o755)
            .file("b/c", b"c", 0o644)
            .file("b", b"now a file", 0o600)
            .file("d", b"d", 0o644)
            .symlink("d", "elsewhere")
            .dir("m/", 0o755)
            .file("m/child", b"child", 0o644)
            .dir_owned("m/", 0o711, 3, 4, 1_111_111_111)
            .file("h", b"h", 0o644)
            .hardlink("h2", "h")
            .file("h2", b"h2", 0o644)
            .finish();
        apply(&tar, root).unwrap();
        let t = tree(root);
        assert_eq!(t[Path::new("a")].kind, libc::S_IFDIR);
        assert_eq!(t[Path::new("a")].mode, 0o700);
        assert_eq!(t[Path::new("b")].data.as_deref(), Some(&b"now a file"[..]));
        assert_eq!(
            t[Path::new("d")].link.as_deref(),
            Some(std::ffi::OsStr::new("elsewhere"))
        );
        let m = &t[Path::new("m")];
        assert_eq!(
            (m.mode, m.uid, m.gid, m.mtime),
            (0o711, 3, 4, 1_111_111_111)
        );
        assert_eq!(t[Path::new("m/child")].data.as_deref(), Some(&b"child"[..]));
        assert_eq!(t[Path::new("h")].data.as_deref(), Some(&b"h"[..]));
        assert_eq!(t[Path::new("h2")].data.as_deref(), Some(&b"h2"[..]));
        assert_eq!(fs::metadata(root.join("h")).unwrap().nlink(), 1);
    }

    #[test]
    fn broken_streams_are_errors() {
        require_root();
        let tar = Layer::new()
            .dir("d/", 0o755)
            .file("d/f", &[7u8; 3000], 0o644)
            .file("d/g", b"g", 0o644)
            .finish();
        let data_end = tar.len() - 1024;
        // A cut between entries is a shorter layer (no end-of-archive
        // marker, as umoci writes them); any other cut fails, none panics.
        let boundaries = [0, 512, 512 + 512 + 3072, data_end];
        for cut in (0..data_end)
            .step_by(97)
            .chain([0, 512, 1024, data_end - 1, data_end])
        {
            let tmp = tempfile::tempdir().unwrap();
            let result = apply(&tar[..cut], tmp.path());
            if boundaries.contains(&cut) {
                assert!(result.is_ok(), "cut at {cut}: {result:?}");
            } else {
                let err = result.unwrap_err();
                assert!(
                    err.to_string().starts_with("read layer: "),
                    "cut at {cut}: {err}"
                );
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let err = apply(&tar[..512 + 1000], tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"read layer: entry "d/f" ends before its 3000 bytes of data"#
        );
        // Half a header is a cut, not an end.
        let err = apply(&tar[..100], tempfile::tempdir().unwrap().path()).unwrap_err();
        assert!(err.to_string().starts_with("read layer: "), "{err}");
        // A corrupt header.
        let mut bad = tar.clone();
        bad[3] ^= 0x55;
        let err = apply(&bad, tempfile::tempdir().unwrap().path()).unwrap_err();
        assert!(matches!(err, ArchiveError::ReadLayer { .. }), "{err}");
        // An unknown entry type.
        let odd = Layer::new()
            .raw(b"vol", EntryType::new(b'V'), b"", b"")
            .finish();
        let err = apply(&odd, tempfile::tempdir().unwrap().path()).unwrap_err();
        assert_eq!(err.to_string(), r#"unsupported entry type 'V' for "vol""#);
    }

    #[test]
    fn reading_stops_at_the_end_of_archive_marker() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let tar = Layer::new().file("f", b"f", 0o644).finish();
        let mut stream = tar.clone();
        stream.extend_from_slice(b"TRAILER");
        let mut cursor = Cursor::new(stream);
        apply_layer(&mut cursor, tmp.path(), &[]).unwrap();
        let mut rest = Vec::new();
        cursor.read_to_end(&mut rest).unwrap();
        assert!(rest.ends_with(b"TRAILER"));
        assert!(rest[..rest.len() - 7].iter().all(|b| *b == 0));
        assert!(rest.len() > 7);
    }

    #[test]
    fn path_and_time_parsing() {
        assert_eq!(
            normalize(Path::new("/a/./b/../c/")).unwrap(),
            Path::new("a/c")
        );
        assert_eq!(normalize(Path::new("./")).unwrap(), Path::new(""));
        assert!(normalize(Path::new("a/../..")).is_none());
        let t = parse_pax_time(b"1700000000.25").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 250_000_000));
        let t = parse_pax_time(b"-1.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 500_000_000));
        assert!(parse_pax_time(b"x").is_none());
    }
}
