//! Docker's init layer: the empty files, directories and symlinks that a
//! container's mounts need (`/etc/hosts`, `/proc`, `/dev/pts`, …) added
//! to a snapshot's upper directory where its lower layers have nothing, so
//! the runtime does not make them in the container's own layer and
//! `docker diff` does not list them.
//!
//! A path is added only where every directory above it is a directory in
//! the merged view (the upper directory over the lowers) and nothing is at
//! the path itself; otherwise it is left alone, as Docker leaves it. A
//! directory above it that only the lowers have is made in the upper
//! directory with their mode, owner and times (as overlayfs copies one up);
//! one that no layer has is made 0755, root's. What is added is 0755 and
//! root's, as Docker makes it. The upper directory is walked through
//! directory descriptors, never following a symlink.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, symlinkat, Gid, Uid};

use super::changes::lookup;
use super::{file_type, lstat_at, open_dir_at, ArchiveError};

/// What to add at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewPath {
    File,
    Directory,
    Symlink { target: PathBuf },
}

fn write_err(path: &Path, e: impl Into<std::io::Error>) -> ArchiveError {
    ArchiveError::Write {
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

/// The names of an absolute path without `.` or `..`; `None` for any other.
pub fn path_names(path: &Path) -> Option<Vec<&OsStr>> {
    let mut names = Vec::new();
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return None;
    }
    for c in components {
        match c {
            Component::Normal(name) => names.push(name),
            _ => return None,
        }
    }
    (!names.is_empty()).then_some(names)
}

/// Adds each of `paths` (absolute, `.`- and `..`-free: see [`path_names`])
/// to `upper` where the merged view of `upper` over `lowers` (nearest
/// first) has nothing; returns the paths added.
pub fn add_paths(
    upper: &Path,
    lowers: &[PathBuf],
    paths: &[(PathBuf, NewPath)],
) -> Result<Vec<PathBuf>, ArchiveError> {
    let root = open_root(upper)?;
    let lower_roots = lowers
        .iter()
        .map(|l| open_root(l))
        .collect::<Result<Vec<_>, _>>()?;
    let mut added = Vec::new();
    // Directories copied up, with their lower stat: their times are set
    // once everything is in them.
    let mut copied: Vec<(OwnedFd, FileStat)> = Vec::new();
    for (path, what) in paths {
        let Some(names) = path_names(path) else {
            return Err(write_err(path, Errno::EINVAL));
        };
        if add_one(root.as_fd(), &lower_roots, path, &names, what, &mut copied)? {
            added.push(path.clone());
        }
    }
    // Deepest first does not matter: a directory's times change only when
    // an entry is made in it, and all are made by now.
    for (fd, st) in copied {
        let times = [
            TimeSpec::new(st.st_atime, st.st_atime_nsec),
            TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        ];
        futimens(&fd, &times[0], &times[1]).map_err(|e| write_err(upper, e))?;
    }
    Ok(added)
}

fn add_one(
    root: BorrowedFd<'_>,
    lower_roots: &[OwnedFd],
    path: &Path,
    names: &[&OsStr],
    what: &NewPath,
    copied: &mut Vec<(OwnedFd, FileStat)>,
) -> Result<bool, ArchiveError> {
    let Some((last, parents)) = names.split_last() else {
        return Ok(false);
    };
    let mut dir: Option<OwnedFd> = None;
    // The lower directories that make up the current one; `None` once no
    // lower layer has it.
    let mut below: Vec<OwnedFd> = lower_roots
        .iter()
        .map(|fd| fd.try_clone())
        .collect::<Result<_, _>>()
        .map_err(|e| write_err(path, e))?;
    for name in parents {
        let here = dir.as_ref().map_or(root, |d| d.as_fd());
        let lower = lookup(&below, name, path)?;
        let next = match lstat_at(here, *name) {
            Ok(st) if file_type(&st) == SFlag::S_IFDIR => {
                open_dir_at(here, *name).map_err(|e| write_err(path, e))?
            }
            // A file, a symlink or a whiteout above the path.
            Ok(_) => return Ok(false),
            Err(Errno::ENOENT) => match &lower {
                Some((st, _)) if file_type(st) != SFlag::S_IFDIR => return Ok(false),
                Some((st, _)) => {
                    let fd = make_dir(here, name, path, Some(st))?;
                    copied.push((fd.try_clone().map_err(|e| write_err(path, e))?, *st));
                    fd
                }
                None => make_dir(here, name, path, None)?,
            },
            Err(e) => return Err(write_err(path, e)),
        };
        below = lower.map(|(_, dirs)| dirs).unwrap_or_default();
        dir = Some(next);
    }
    let here = dir.as_ref().map_or(root, |d| d.as_fd());
    match lstat_at(here, *last) {
        Ok(_) => return Ok(false),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(write_err(path, e)),
    }
    if lookup(&below, last, path)?.is_some() {
        return Ok(false);
    }
    match what {
        NewPath::Directory => drop(make_dir(here, last, path, None)?),
        NewPath::File => {
            let fd = openat(
                here,
                *last,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o755),
            )
            .map_err(|e| write_err(path, e))?;
            fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(|e| write_err(path, e))?;
            fchown(&fd, Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))
                .map_err(|e| write_err(path, e))?;
        }
        NewPath::Symlink { target } => {
            symlinkat(target.as_path(), here, *last).map_err(|e| write_err(path, e))?
        }
    }
    Ok(true)
}

/// Makes directory `name` in `dir` with the mode and owner of `like` (a
/// lower layer's), else 0755 and root's; opened.
fn make_dir(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    like: Option<&FileStat>,
) -> Result<OwnedFd, ArchiveError> {
    let (mode, uid, gid) = like.map_or((0o755, 0, 0), |st| {
        (st.st_mode & 0o7777, st.st_uid, st.st_gid)
    });
    mkdirat(dir, name, Mode::from_bits_truncate(0o700)).map_err(|e| write_err(path, e))?;
    let fd = open_dir_at(dir, name).map_err(|e| write_err(path, e))?;
    fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| write_err(path, e))?;
    fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| write_err(path, e))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    use super::super::changes::{list_changes, Change};
    use super::super::testutil::require_root;
    use super::*;

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect()
    }

    #[test]
    fn paths_are_added_where_the_image_has_nothing() {
        require_root();
        let t = tempfile::tempdir().unwrap();
        let (upper, lower) = (t.path().join("u"), t.path().join("l"));
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::create_dir_all(&upper).unwrap();
        fs::write(lower.join("etc/hostname"), "image\n").unwrap();
        symlink("usr/bin", lower.join("bin")).unwrap();
        fs::set_permissions(lower.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(lower.join("etc"), Some(5), Some(6)).unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        fs::File::open(lower.join("etc"))
            .unwrap()
            .set_modified(old)
            .unwrap();

        let file = |p: &str| (PathBuf::from(p), NewPath::File);
        let dir = |p: &str| (PathBuf::from(p), NewPath::Directory);
        let paths = vec![
            file("/etc/hosts"),
            file("/etc/hostname"),
            dir("/proc"),
            dir("/dev/pts"),
            file("/bin/x"),
            file("/.dockerenv"),
            (
                PathBuf::from("/etc/mtab"),
                NewPath::Symlink {
                    target: "/proc/mounts".into(),
                },
            ),
        ];
        let added = add_paths(&upper, std::slice::from_ref(&lower), &paths).unwrap();
        let added: Vec<String> = added.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            added,
            vec![
                "/etc/hosts",
                "/proc",
                "/dev/pts",
                "/.dockerenv",
                "/etc/mtab"
            ]
        );
        // etc was copied up as it is below: mode, owner, times.
        let etc = fs::metadata(upper.join("etc")).unwrap();
        assert_eq!((etc.mode() & 0o7777, etc.uid(), etc.gid()), (0o750, 5, 6));
        assert_eq!(etc.modified().unwrap(), old);
        let hosts = fs::metadata(upper.join("etc/hosts")).unwrap();
        assert_eq!((hosts.mode() & 0o7777, hosts.len()), (0o755, 0));
        assert_eq!(
            fs::read_link(upper.join("etc/mtab")).unwrap(),
            PathBuf::from("/proc/mounts")
        );
        assert!(!upper.join("etc/hostname").exists());
        assert!(!upper.join("bin").exists(), "went through a symlink");
        assert!(fs::metadata(upper.join("dev/pts")).unwrap().is_dir());
        // Once more: all there, nothing added.
        assert!(add_paths(&upper, std::slice::from_ref(&lower), &paths)
            .unwrap()
            .is_empty());
        // As a layer over the image, it changes only what was added.
        assert_eq!(
            names(&list_changes(&upper, &[lower]).unwrap()),
            vec![
                "A /.dockerenv",
                "A /dev",
                "A /dev/pts",
                "C /etc",
                "A /etc/hosts",
                "A /etc/mtab",
                "A /proc"
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn only_clean_absolute_paths() {
        assert!(path_names(Path::new("/etc/hosts")).is_some());
        for bad in ["etc/hosts", "/", "/etc/../x", ""] {
            assert!(path_names(Path::new(bad)).is_none(), "{bad}");
        }
    }
}
