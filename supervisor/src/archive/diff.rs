//! Writing the changes held in an overlayfs upper directory as a layer tar.
//!
//! The upper directory is walked through directory descriptors without
//! following symlinks, children in byte order, so the same directory always
//! gives the same tar. Headers are ustar; long names, long link targets and
//! xattrs go into one PAX record set before the entry they describe.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, major, minor, FileStat, Mode, SFlag};
use tar::{EntryType, Header};
use tracing::{debug, warn};

use super::sys::{get_xattr, list_xattrs, XattrTarget};
use super::{
    file_type, is_whiteout, lstat_at, open_dir_at, ArchiveError, DiffStats, OPAQUE_MARKER,
    OVERLAY_XATTR_PREFIX, PAX_XATTR_PREFIX, WHITEOUT_PREFIX,
};

/// File data moves in chunks of this size.
const COPY_BUFFER: usize = 1 << 20;
const BLOCK: usize = 512;
/// Name and link name fields of a ustar header.
const NAME_FIELD: usize = 100;

/// Writes the changes held in an overlayfs upper directory as an
/// uncompressed layer tar (OCI layer format, with .wh. whiteouts).
///
/// Entries come in byte order of their names, each directory before its
/// contents. Overlay whiteouts become `.wh.<name>` entries, opaque
/// directories get a `.wh..wh..opq` entry after their own. Files sharing an
/// inode are written once, then as hard links to the first path. Sockets are
/// skipped, as Docker does. An upper that uses overlay `redirect_dir` or
/// `metacopy` does not hold its changes by itself and is refused.
pub fn write_diff<W: std::io::Write>(
    upper: &std::path::Path,
    writer: W,
) -> Result<DiffStats, ArchiveError> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        upper,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::Open {
        path: upper.to_path_buf(),
        source: e.into(),
    })?;
    let mut differ = Differ {
        out: writer,
        links: HashMap::new(),
        buf: vec![0; COPY_BUFFER],
        stats: DiffStats::default(),
    };
    differ.walk(root.as_fd(), Path::new(""))?;
    // End of archive: two zero blocks.
    differ.write(&[0; 2 * BLOCK])?;
    differ
        .out
        .flush()
        .map_err(|source| ArchiveError::WriteLayer { source })?;
    debug!(
        upper = %upper.display(),
        entries = differ.stats.entries,
        bytes = differ.stats.bytes,
        "diff written"
    );
    Ok(differ.stats)
}

/// PAX records (key, value) of one entry.
type PaxRecords = Vec<(String, Vec<u8>)>;

struct Differ<W> {
    out: W,
    /// First path seen of each inode with more than one link.
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
    stats: DiffStats,
}

/// One tar entry to write.
struct Item<'a> {
    kind: EntryType,
    path: &'a [u8],
    stat: &'a FileStat,
    /// Mode bits to record instead of the stat's.
    mode: Option<u32>,
    link: Option<&'a [u8]>,
    /// PAX records besides path and linkpath.
    pax: PaxRecords,
    /// File content and its size.
    data: Option<(&'a mut File, u64)>,
}

fn read_err(path: &Path, e: impl Into<io::Error>) -> ArchiveError {
    ArchiveError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// The names in directory `dir`, in byte order.
pub(super) fn list_dir(dir: BorrowedFd<'_>, rel: &Path) -> Result<Vec<OsString>, ArchiveError> {
    let mut listing = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| read_err(rel, e))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| read_err(rel, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Appends one PAX record (`<len> <key>=<value>\n`, where len counts itself).
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl<W: Write> Differ<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.out
            .write_all(bytes)
            .map_err(|source| ArchiveError::WriteLayer { source })
    }

    fn pad(&mut self, len: u64) -> Result<(), ArchiveError> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.write(&[0; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// The xattrs of `target` as PAX records, and whether it is an opaque
    /// directory. Overlay's own xattrs are not part of a layer.
    fn xattrs(
        &self,
        target: XattrTarget<'_>,
        rel: &Path,
    ) -> Result<(PaxRecords, bool), ArchiveError> {
        let mut names = list_xattrs(target).map_err(|e| read_err(rel, e))?;
        names.sort();
        let mut records = Vec::new();
        let mut opaque = false;
        for name in names {
            let bytes = name.to_bytes();
            if let Some(overlay) = bytes.strip_prefix(OVERLAY_XATTR_PREFIX) {
                let feature = match overlay {
                    b"opaque" => {
                        let value = get_xattr(target, &name).map_err(|e| read_err(rel, e))?;
                        opaque = value.as_deref() == Some(b"y");
                        continue;
                    }
                    b"redirect" => "redirect_dir",
                    b"metacopy" => "metacopy",
                    _ => continue,
                };
                return Err(ArchiveError::OverlayFeature {
                    path: rel.to_path_buf(),
                    feature,
                });
            }
            let Ok(key) = name.to_str() else {
                return Err(read_err(
                    rel,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("xattr name {name:?} is not UTF-8"),
                    ),
                ));
            };
            if let Some(value) = get_xattr(target, &name).map_err(|e| read_err(rel, e))? {
                records.push((format!("{PAX_XATTR_PREFIX}{key}"), value));
            }
        }
        Ok((records, opaque))
    }

    /// If `stat` is an inode already written under another path, writes
    /// `path` as a hard link to it and returns true; else remembers `rel`.
    fn hard_link(
        &mut self,
        stat: &FileStat,
        rel: &Path,
        path: &[u8],
    ) -> Result<bool, ArchiveError> {
        if stat.st_nlink <= 1 {
            return Ok(false);
        }
        let key = (stat.st_dev, stat.st_ino);
        let Some(first) = self.links.get(&key).cloned() else {
            self.links.insert(key, rel.to_path_buf());
            return Ok(false);
        };
        self.emit(Item {
            kind: EntryType::Link,
            path,
            stat,
            mode: None,
            link: Some(first.as_os_str().as_bytes()),
            pax: Vec::new(),
            data: None,
        })?;
        Ok(true)
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> Result<(), ArchiveError> {
        for name in list_dir(dir, rel)? {
            let child = rel.join(&name);
            let path = child.as_os_str().as_bytes();
            let stat = match lstat_at(dir, name.as_os_str()) {
                Ok(st) => st,
                // Removed while we walk: it is not part of the diff.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(read_err(&child, e)),
            };
            let kind = file_type(&stat);
            if kind == SFlag::S_IFDIR {
                let fd = open_dir_at(dir, name.as_os_str()).map_err(|e| read_err(&child, e))?;
                let (pax, opaque) = self.xattrs(XattrTarget::Fd(fd.as_fd()), &child)?;
                let mut dir_path = path.to_vec();
                dir_path.push(b'/');
                self.emit(Item {
                    kind: EntryType::Directory,
                    path: &dir_path,
                    stat: &stat,
                    mode: None,
                    link: None,
                    pax,
                    data: None,
                })?;
                if opaque {
                    let mut marker = path.to_vec();
                    marker.push(b'/');
                    marker.extend_from_slice(OPAQUE_MARKER);
                    self.emit(Item {
                        kind: EntryType::Regular,
                        path: &marker,
                        stat: &stat,
                        mode: Some(0o644),
                        link: None,
                        pax: Vec::new(),
                        data: None,
                    })?;
                }
                self.walk(fd.as_fd(), &child)?;
            } else if kind == SFlag::S_IFREG {
                let fd = openat(
                    dir,
                    name.as_os_str(),
                    // O_NONBLOCK: should a fifo have replaced the file since
                    // the lstat, the open must not hang on it.
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| read_err(&child, e))?;
                let mut file = File::from(fd);
                let stat = fstat(&file).map_err(|e| read_err(&child, e))?;
                if file_type(&stat) != SFlag::S_IFREG {
                    return Err(read_err(
                        &child,
                        io::Error::other("changed type while the diff was written"),
                    ));
                }
                if self.hard_link(&stat, &child, path)? {
                    continue;
                }
                let (pax, _) = self.xattrs(XattrTarget::Fd(file.as_fd()), &child)?;
                let size = u64::try_from(stat.st_size).unwrap_or(0);
                self.emit(Item {
                    kind: EntryType::Regular,
                    path,
                    stat: &stat,
                    mode: None,
                    link: None,
                    pax,
                    data: Some((&mut file, size)),
                })?;
            } else if is_whiteout(&stat) {
                let mut whiteout = rel.as_os_str().as_bytes().to_vec();
                if !whiteout.is_empty() {
                    whiteout.push(b'/');
                }
                whiteout.extend_from_slice(WHITEOUT_PREFIX);
                whiteout.extend_from_slice(name.as_bytes());
                self.emit(Item {
                    kind: EntryType::Regular,
                    path: &whiteout,
                    stat: &stat,
                    mode: Some(0o644),
                    link: None,
                    pax: Vec::new(),
                    data: None,
                })?;
            } else if kind == SFlag::S_IFSOCK {
                warn!(path = %child.display(), "socket not written to the layer");
            } else {
                if self.hard_link(&stat, &child, path)? {
                    continue;
                }
                let (pax, _) = self.xattrs(XattrTarget::At(dir, name.as_os_str()), &child)?;
                let (entry_kind, target) = match kind {
                    SFlag::S_IFLNK => {
                        let target =
                            readlinkat(dir, name.as_os_str()).map_err(|e| read_err(&child, e))?;
                        (EntryType::Symlink, Some(target))
                    }
                    SFlag::S_IFCHR => (EntryType::Char, None),
                    SFlag::S_IFBLK => (EntryType::Block, None),
                    _ => (EntryType::Fifo, None),
                };
                self.emit(Item {
                    kind: entry_kind,
                    path,
                    stat: &stat,
                    mode: None,
                    link: target.as_deref().map(OsStr::as_bytes),
                    pax,
                    data: None,
                })?;
            }
        }
        Ok(())
    }

    /// Writes one entry: PAX records if needed, the header, the data.
    fn emit(&mut self, item: Item<'_>) -> Result<(), ArchiveError> {
        let st = item.stat;
        let rel = Path::new(OsStr::from_bytes(item.path));
        let bad = |e: io::Error| read_err(rel, e);
        let mut header = Header::new_ustar();
        header.set_entry_type(item.kind);
        header.set_mode(item.mode.unwrap_or(st.st_mode & 0o7777));
        header.set_uid(st.st_uid.into());
        header.set_gid(st.st_gid.into());
        header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        let size = item.data.as_ref().map_or(0, |(_, size)| *size);
        header.set_size(size);
        let (dev_major, dev_minor) = if matches!(item.kind, EntryType::Char | EntryType::Block) {
            (major(st.st_rdev), minor(st.st_rdev))
        } else {
            (0, 0)
        };
        let device =
            |n: u64| u32::try_from(n).map_err(|_| bad(io::Error::other("device number too large")));
        header.set_device_major(device(dev_major)?).map_err(bad)?;
        header.set_device_minor(device(dev_minor)?).map_err(bad)?;

        let mut pax = Vec::new();
        let old = header.as_old_mut();
        if item.path.len() > NAME_FIELD {
            pax_record(&mut pax, "path", item.path);
        }
        let n = item.path.len().min(NAME_FIELD);
        old.name[..n].copy_from_slice(&item.path[..n]);
        if let Some(link) = item.link {
            if link.len() > NAME_FIELD {
                pax_record(&mut pax, "linkpath", link);
            }
            let n = link.len().min(NAME_FIELD);
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
        for (key, value) in &item.pax {
            pax_record(&mut pax, key, value);
        }
        header.set_cksum();

        if !pax.is_empty() {
            let mut pax_header = Header::new_ustar();
            pax_header.set_entry_type(EntryType::XHeader);
            pax_header.set_mode(0o644);
            pax_header.set_size(pax.len() as u64);
            let name = b"PaxHeader";
            pax_header.as_old_mut().name[..name.len()].copy_from_slice(name);
            pax_header.set_cksum();
            self.write(pax_header.as_bytes())?;
            self.write(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.write(header.as_bytes())?;
        if let Some((file, size)) = item.data {
            self.copy_file(file, size, rel)?;
            self.pad(size)?;
            self.stats.bytes += size;
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Writes exactly `size` bytes of `file`: the header already promised
    /// them, so a file that shrank is an error.
    fn copy_file(&mut self, file: &mut File, size: u64, rel: &Path) -> Result<(), ArchiveError> {
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(read_err(
                        rel,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while being written to the layer",
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(rel, e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(|source| ArchiveError::WriteLayer { source })?;
            left -= n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::fs;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::Path;

    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use tar::EntryType;

    use super::super::sys::{set_xattr, XattrTarget};
    use super::super::testutil::{require_root, tree, Layer, MTIME};
    use super::super::{apply_layer, ArchiveError};
    use super::write_diff;

    fn set(path: &Path, name: &str, value: &[u8]) {
        let f = fs::File::open(path).unwrap();
        let name = CString::new(name).unwrap();
        set_xattr(XattrTarget::Fd(f.as_fd()), &name, value).unwrap();
    }

    fn diff(upper: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write_diff(upper, &mut out).unwrap();
        out
    }

    /// (path, type, link name, size, pax keys) of every entry.
    fn listing(tar: &[u8]) -> Vec<(String, EntryType, String, u64, Vec<String>)> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let h = e.header();
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let kind = h.entry_type();
            let size = h.size().unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap())
                .unwrap_or_default();
            let keys = match e.pax_extensions().unwrap() {
                Some(p) => p.map(|r| r.unwrap().key().unwrap().to_string()).collect(),
                None => Vec::new(),
            };
            out.push((path, kind, link, size, keys));
        }
        out
    }

    #[test]
    fn upper_changes_become_layer_entries() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path();
        fs::create_dir_all(upper.join("etc/opq")).unwrap();
        set(&upper.join("etc/opq"), "trusted.overlay.opaque", b"y");
        set(&upper.join("etc"), "trusted.overlay.impure", b"y");
        fs::write(upper.join("etc/opq/new"), b"new").unwrap();
        fs::write(upper.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
        set(&upper.join("etc/hosts"), "user.note", b"hi");
        set(&upper.join("etc/hosts"), "trusted.overlay.origin", b"xyz");
        fs::hard_link(upper.join("etc/hosts"), upper.join("etc/z-hosts")).unwrap();
        fs::hard_link(upper.join("etc/hosts"), upper.join("a-first")).unwrap();
        mknod(&upper.join("etc/gone"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        mknod(&upper.join("gone-too"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        mknod(
            &upper.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .unwrap();
        // mknod is subject to the umask.
        fs::set_permissions(upper.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
        mknod(
            &upper.join("fifo"),
            SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        symlink("etc/hosts", upper.join("link")).unwrap();
        let long = "l".repeat(150);
        fs::write(upper.join(&long), b"long").unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(upper.join("sock")).unwrap();

        let tar = diff(upper);
        let got = listing(&tar);
        let want: Vec<(&str, EntryType, &str, u64, Vec<&str>)> = vec![
            (
                "a-first",
                EntryType::Regular,
                "",
                20,
                vec!["SCHILY.xattr.user.note"],
            ),
            ("etc/", EntryType::Directory, "", 0, vec![]),
            ("etc/.wh.gone", EntryType::Regular, "", 0, vec![]),
            ("etc/hosts", EntryType::Link, "a-first", 0, vec![]),
            ("etc/opq/", EntryType::Directory, "", 0, vec![]),
            ("etc/opq/.wh..wh..opq", EntryType::Regular, "", 0, vec![]),
            ("etc/opq/new", EntryType::Regular, "", 3, vec![]),
            ("etc/z-hosts", EntryType::Link, "a-first", 0, vec![]),
            ("fifo", EntryType::Fifo, "", 0, vec![]),
            (".wh.gone-too", EntryType::Regular, "", 0, vec![]),
            ("link", EntryType::Symlink, "etc/hosts", 0, vec![]),
            (long.as_str(), EntryType::Regular, "", 4, vec!["path"]),
            ("null", EntryType::Char, "", 0, vec![]),
        ];
        let want: Vec<_> = want
            .into_iter()
            .map(|(p, k, l, s, keys)| {
                (
                    p.to_string(),
                    k,
                    l.to_string(),
                    s,
                    keys.into_iter().map(String::from).collect::<Vec<_>>(),
                )
            })
            .collect();
        // A whiteout takes the place of the name it hides.
        assert_eq!(got, want);
        let stats = write_diff(upper, std::io::sink()).unwrap();
        assert_eq!(stats.entries, 13);
        assert_eq!(stats.bytes, 20 + 3 + 4);

        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().unwrap() {
            let e = entry.unwrap();
            if e.path_bytes().as_ref() == b"null" {
                assert_eq!(e.header().device_major().unwrap(), Some(1));
                assert_eq!(e.header().device_minor().unwrap(), Some(3));
                assert_eq!(e.header().mode().unwrap(), 0o666);
            }
        }
    }

    #[test]
    fn overlay_redirects_are_refused() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("moved")).unwrap();
        set(
            &tmp.path().join("moved"),
            "trusted.overlay.redirect",
            b"/old",
        );
        let err = write_diff(tmp.path(), std::io::sink()).unwrap_err();
        assert!(matches!(err, ArchiveError::OverlayFeature { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            r#""moved" uses overlay redirect_dir, so the upper directory does not hold its changes"#
        );
    }

    #[test]
    fn diff_then_apply_round_trips() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let long_dir = format!("deep/{}", "d".repeat(120));
        let layer = Layer::new()
            .dir_owned("etc/", 0o750, 0, 42, 1_400_000_000)
            .file_owned("etc/passwd", b"root:x:0:0\n", 0o644, 0, 0, 1_500_000_000)
            .dir("tmp/", 0o1777)
            .file("usr/bin/sudo", b"#!sudo", 0o4755)
            .pax(&[
                ("SCHILY.xattr.user.origin", b"layer"),
                (
                    "SCHILY.xattr.security.capability",
                    &[
                        0x01, 0, 0, 0x02, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    ],
                ),
            ])
            .file_owned("usr/bin/ping", b"ping", 0o2755, 1000, 1000, MTIME)
            .hardlink("usr/bin/sudoedit", "usr/bin/sudo")
            .symlink("bin", "usr/bin")
            .node("dev/null", EntryType::Char, 1, 3, 0o666)
            .node("dev/sda", EntryType::Block, 8, 0, 0o660)
            .node("run/fifo", EntryType::Fifo, 0, 0, 0o600)
            .file(".wh.removed", b"", 0o644)
            .dir("var/", 0o755)
            .file("var/.wh.log", b"", 0o644)
            .dir("opt/", 0o755)
            .file("opt/.wh..wh..opq", b"", 0o644)
            .file("opt/app", b"app", 0o755)
            .file(&format!("{long_dir}/{}", "f".repeat(130)), b"long", 0o644)
            .symlink(&format!("{long_dir}/link"), &"t/".repeat(80))
            .finish();
        apply_layer(&layer[..], &a, &[]).unwrap();

        let first = diff(&a);
        apply_layer(&first[..], &b, &[]).unwrap();
        let (ta, tb) = (tree(&a), tree(&b));
        assert_eq!(ta.len(), tb.len());
        for (path, node) in &ta {
            assert_eq!(Some(node), tb.get(path), "{}", path.display());
        }
        assert_eq!(
            ta[Path::new("opt")]
                .xattrs
                .get("trusted.overlay.opaque")
                .map(Vec::as_slice),
            Some(&b"y"[..])
        );
        assert_eq!(ta[Path::new("removed")].rdev, 0);
        assert_eq!(
            ta[Path::new("usr/bin/sudoedit")].same_as.as_deref(),
            Some(Path::new("usr/bin/sudo"))
        );
        assert_eq!(fs::metadata(b.join("usr/bin/sudo")).unwrap().nlink(), 2);
        // The same tree gives the same bytes.
        assert_eq!(diff(&b), first);
    }
}
