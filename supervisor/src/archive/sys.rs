//! Extended attributes through libc: nix has no safe wrapper for them.
//!
//! An xattr is addressed either through an open file descriptor (the `f*`
//! calls) or, for objects that cannot be opened for I/O (symlinks, device
//! nodes, fifos), as a name inside an open directory. The latter goes through
//! `/proc/self/fd/<dir>/<name>` with the `l*` calls: the kernel resolves the
//! directory from the descriptor and never follows `name` if it is a symlink,
//! so no path outside the directory is ever looked up.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

/// Where an extended attribute lives.
#[derive(Clone, Copy)]
pub(super) enum XattrTarget<'a> {
    /// The file open as this descriptor (not an `O_PATH` descriptor).
    Fd(BorrowedFd<'a>),
    /// The entry `name` inside the directory open as the descriptor; a
    /// symlink is not followed.
    At(BorrowedFd<'a>, &'a OsStr),
}

impl XattrTarget<'_> {
    fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<CString> {
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.as_bytes());
        CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    }
}

fn check(ret: libc::ssize_t) -> io::Result<usize> {
    // A negative return is the only failure; anything else fits in usize.
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Lists the attribute names of `target`. A filesystem without xattr
/// support has none.
pub(super) fn list_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<CString>> {
    let path = match target {
        XattrTarget::Fd(_) => None,
        XattrTarget::At(dir, name) => Some(XattrTarget::proc_path(dir, name)?),
    };
    let raw = |buf: &mut [u8]| -> io::Result<usize> {
        let ptr = buf.as_mut_ptr().cast::<libc::c_char>();
        match (&target, &path) {
            (XattrTarget::Fd(fd), _) => {
                // SAFETY: `ptr` points to `buf.len()` writable bytes (or is a
                // dangling pointer with length 0, which the kernel does not
                // touch); the descriptor is borrowed, so it stays open.
                check(unsafe { libc::flistxattr(fd.as_raw_fd(), ptr, buf.len()) })
            }
            (_, Some(path)) => {
                // SAFETY: `path` is a NUL-terminated string that outlives the
                // call; `ptr` points to `buf.len()` writable bytes.
                check(unsafe { libc::llistxattr(path.as_ptr(), ptr, buf.len()) })
            }
            (XattrTarget::At(..), None) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    };
    let mut buf = Vec::new();
    loop {
        let want = match raw(&mut []) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if want == 0 {
            return Ok(Vec::new());
        }
        buf.resize(want, 0);
        match raw(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                break;
            }
            // The list grew between the two calls: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| CString::new(n).ok())
        .collect())
}

/// Reads attribute `name` of `target`; `None` when it is not set.
pub(super) fn get_xattr(target: XattrTarget<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let path = match target {
        XattrTarget::At(dir, entry) => Some(XattrTarget::proc_path(dir, entry)?),
        XattrTarget::Fd(_) => None,
    };
    let raw = |buf: &mut [u8]| -> io::Result<usize> {
        let ptr = buf.as_mut_ptr().cast::<libc::c_void>();
        match (&target, &path) {
            (XattrTarget::Fd(fd), _) => {
                // SAFETY: `name` is NUL-terminated; `ptr` points to
                // `buf.len()` writable bytes; the descriptor is borrowed.
                check(unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, buf.len()) })
            }
            (_, Some(path)) => {
                // SAFETY: `path` and `name` are NUL-terminated strings that
                // outlive the call; `ptr` points to `buf.len()` writable bytes.
                check(unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), ptr, buf.len()) })
            }
            (XattrTarget::At(..), None) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    };
    let mut buf = Vec::new();
    loop {
        let want = match raw(&mut []) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        buf.resize(want, 0);
        if want == 0 {
            return Ok(Some(buf));
        }
        match raw(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Sets attribute `name` of `target` to `value`, creating or replacing it.
pub(super) fn set_xattr(target: XattrTarget<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    let ptr = value.as_ptr().cast::<libc::c_void>();
    let ret = match target {
        XattrTarget::Fd(fd) => {
            // SAFETY: `name` is NUL-terminated; `ptr` points to
            // `value.len()` readable bytes; the descriptor is borrowed.
            unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, value.len(), 0) }
        }
        XattrTarget::At(dir, entry) => {
            let path = XattrTarget::proc_path(dir, entry)?;
            // SAFETY: `path` and `name` are NUL-terminated strings that
            // outlive the call; `ptr` points to `value.len()` readable bytes.
            unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), ptr, value.len(), 0) }
        }
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
