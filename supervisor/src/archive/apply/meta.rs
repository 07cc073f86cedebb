//! An entry's metadata: read from its header and PAX records (owner, mode,
//! times, xattrs), and set on what was written; overlayfs' opaque xattr.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat::{fchmod, futimens, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, Gid, Uid};
use tracing::{debug, warn};

use crate::archive::sys::{get_xattr, list_xattrs, set_xattr, XattrTarget};
use crate::archive::{ArchiveError, OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, PAX_XATTR_PREFIX};

use super::write_err;

/// Metadata of one entry, from its header and PAX records.
#[derive(Clone)]
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: TimeSpec,
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
}

/// Reads the metadata of `entry` (whose tar path is `path`).
pub(super) fn read_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
) -> Result<Meta, ArchiveError> {
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

/// Parses a PAX time (`seconds[.fraction]`, maybe negative).
pub(super) fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
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

/// Gives a regular file just written its owner, mode, xattrs and mtime.
pub(super) fn set_file_meta(file: &File, meta: &Meta, rel: &Path) -> Result<(), ArchiveError> {
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

/// Sets xattrs on `target`. Like containerd, an xattr the filesystem does
/// not support, or a `security.*` one it refuses, is skipped with a warning.
pub(super) fn set_xattrs(
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
pub(super) fn copy_xattrs(
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

pub(super) fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    matches!(get_xattr(XattrTarget::Fd(dir), OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

pub(super) fn set_opaque(dir: BorrowedFd<'_>, path: &Path) -> Result<(), ArchiveError> {
    set_xattr(XattrTarget::Fd(dir), OPAQUE_XATTR, b"y").map_err(|e| {
        write_err(
            path,
            io::Error::new(e.kind(), format!("set xattr {OPAQUE_XATTR:?}: {e}")),
        )
    })
}
