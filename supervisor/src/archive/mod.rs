//! Layer archives: apply a layer tar into a snapshot directory, and turn a snapshot's changes into a layer tar
//! (or into the list `docker diff` prints, [`list_changes`]); add Docker's init layer paths to one
//! ([`add_paths`]).
//!
//! Layers follow the OCI image-spec changeset format (`image-layout/layer.md`):
//! a tar of added and changed entries, where `dir/.wh.name` deletes `name`
//! from the layers below and `dir/.wh..wh..opq` hides everything below in
//! `dir`. berth stores layers as overlayfs upper directories, so on the way in
//! ([`apply_layer`]) whiteouts become overlay whiteouts (a 0/0 character
//! device, or the `trusted.overlay.opaque` xattr on a directory), and on the
//! way out ([`write_diff`]) they become `.wh.` entries again.
//!
//! Every path of a layer is resolved inside the snapshot directory through
//! open directory descriptors, one component at a time and never following a
//! symlink, so no entry can write outside the directory, whatever `..`
//! components or symlinks the layer holds.

mod apply;
mod changes;
mod diff;
mod init_layer;
mod sys;

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

pub use apply::{apply_layer, inherit_implied_dirs, read_file_in_lowers};
pub use changes::{list_changes, Change, ChangeKind};
pub use diff::write_diff;
pub use init_layer::{add_paths, path_names, NewPath};

/// What [`apply_layer`] did.
#[derive(Debug, Default, Clone)]
pub struct ApplyStats {
    /// Entries of the tar processed (extension headers not counted).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Directories the tar did not list and no lower held, made 0755 and
    /// root's: when the layer was applied without its lowers, pass them to
    /// [`inherit_implied_dirs`] once the lowers are known.
    pub implied_dirs: Vec<PathBuf>,
}

/// What [`write_diff`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiffStats {
    /// Entries written to the tar (extension headers not counted).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Errors of applying and writing layer archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("read layer: {source}")]
    ReadLayer { source: io::Error },
    #[error("read layer: the stream ends inside a header")]
    Truncated,
    #[error("read layer: entry {path:?} ends before its {size} bytes of data")]
    TruncatedEntry { path: PathBuf, size: u64 },
    #[error("layer entry {path:?}: bad header: {source}")]
    BadHeader { path: PathBuf, source: io::Error },
    #[error("layer entry {path:?} escapes the root")]
    Escapes { path: PathBuf },
    #[error("layer entry {path:?}: link target {target:?} escapes the root")]
    LinkEscapes { path: PathBuf, target: PathBuf },
    #[error("layer entry {path:?}: link target {target:?} goes through symlink {parent:?}")]
    LinkThroughSymlink {
        path: PathBuf,
        target: PathBuf,
        parent: PathBuf,
    },
    #[error(
        "layer entry {path:?}: link target {target:?} does not exist in the layer or below it"
    )]
    LinkTargetMissing { path: PathBuf, target: PathBuf },
    #[error("layer entry {path:?}: link target {target:?} is a directory")]
    LinkToDirectory { path: PathBuf, target: PathBuf },
    #[error("layer entry {path:?} has no link target")]
    NoLinkTarget { path: PathBuf },
    #[error("layer entry {path:?}: parent {parent:?} is a symlink, refusing to write through it")]
    ThroughSymlink { path: PathBuf, parent: PathBuf },
    #[error("layer entry {path:?}: parent {parent:?} is not a directory")]
    NotADirectory { path: PathBuf, parent: PathBuf },
    #[error("unsupported entry type {kind} for {path:?}")]
    UnsupportedEntry { kind: String, path: PathBuf },
    #[error("write {path:?}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("open {path:?}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("read {path:?}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("write layer: {source}")]
    WriteLayer { source: io::Error },
    #[error("{path:?} uses overlay {feature}, so the upper directory does not hold its changes")]
    OverlayFeature {
        path: PathBuf,
        feature: &'static str,
    },
}

/// Prefix of whiteout names in a layer.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of whiteout metadata names (opaque marker, aufs hard link dirs).
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// Name of the opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// xattrs of this prefix belong to overlayfs: never read from or written to a layer.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
/// PAX record prefix of an xattr.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// An overlayfs whiteout is a character device with device number 0/0.
fn is_whiteout(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// Opens `name` in `dir` as a directory without following a symlink.
fn open_dir_at<Fd: AsFd, P: ?Sized + nix::NixPath>(dir: Fd, name: &P) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` of `name` in `dir`.
fn lstat_at<Fd: AsFd, P: ?Sized + nix::NixPath>(dir: Fd, name: &P) -> nix::Result<FileStat> {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Removes `name` from `dir`, and everything below it if it is a directory,
/// never following a symlink. A missing `name` is not an error.
fn remove_all_at<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<()> {
    let dir = dir.as_fd();
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(nix::errno::Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let child = open_dir_at(dir, name)?;
    let mut names = Vec::new();
    let mut listing = nix::dir::Dir::openat(
        &child,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for entry in listing.iter() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    for n in &names {
        remove_all_at(&child, n)?;
    }
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod testutil;
