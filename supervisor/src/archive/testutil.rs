//! Test helpers: layers built in memory, and trees read back from disk.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::sys::{get_xattr, list_xattrs, XattrTarget};

/// The archive tests chown, mknod and set trusted.* xattrs.
pub(super) fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the archive tests need root: they chown, create device nodes and set trusted.* xattrs"
    );
}

pub(super) const MTIME: u64 = 1_600_000_000;

/// A layer tar built in memory.
pub(super) struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

pub(super) fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

impl Layer {
    pub(super) fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// PAX records for the next entry.
    pub(super) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.builder
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    pub(super) fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.file_owned(path, data, mode, 0, 0, MTIME)
    }

    pub(super) fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        let mut h = header(EntryType::Regular, mode, uid, gid, mtime);
        h.set_size(data.len() as u64);
        self.builder.append_data(&mut h, path, data).unwrap();
        self
    }

    pub(super) fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.dir_owned(path, mode, 0, 0, MTIME)
    }

    pub(super) fn dir_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        let mut h = header(EntryType::Directory, mode, uid, gid, mtime);
        self.builder.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub(super) fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = header(EntryType::Symlink, 0o777, 0, 0, MTIME);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub(super) fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = header(EntryType::Link, 0o644, 0, 0, MTIME);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub(super) fn node(
        &mut self,
        path: &str,
        kind: EntryType,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Self {
        let mut h = header(kind, mode, 0, 0, MTIME);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.builder.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    /// An entry whose name and link name bytes go into the header as they
    /// are, bypassing the tar crate's checks (for hostile layers).
    pub(super) fn raw(
        &mut self,
        name: &[u8],
        kind: EntryType,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        let mut h = header(kind, 0o644, 0, 0, MTIME);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub(super) fn finish(&mut self) -> Vec<u8> {
        self.builder.finish().unwrap();
        self.builder.get_ref().clone()
    }
}

/// What a test compares of one path.
#[derive(Debug, PartialEq)]
pub(super) struct Node {
    pub(super) kind: u32,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: i64,
    pub(super) rdev: u64,
    pub(super) data: Option<Vec<u8>>,
    pub(super) link: Option<OsString>,
    pub(super) xattrs: BTreeMap<String, Vec<u8>>,
    /// For an inode with several links: the first path of it in the tree.
    pub(super) same_as: Option<PathBuf>,
}

pub(super) fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = fs::File::open(path.parent().unwrap()).unwrap();
    let name = path.file_name().unwrap();
    let target = XattrTarget::At(dir.as_fd(), name);
    list_xattrs(target)
        .unwrap()
        .into_iter()
        .map(|n| {
            let v = get_xattr(target, &n).unwrap().unwrap();
            (n.to_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Every path below `root` (not `root` itself).
pub(super) fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    walk(root, Path::new(""), &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<PathBuf, Node>,
    inodes: &mut BTreeMap<u64, PathBuf>,
) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let path = root.join(&child);
        let md = fs::symlink_metadata(&path).unwrap();
        let kind = md.mode() & libc::S_IFMT;
        let same_as = if kind != libc::S_IFDIR
            && md.nlink() > 1
            && !(kind == libc::S_IFCHR && md.rdev() == 0)
        {
            Some(
                inodes
                    .entry(md.ino())
                    .or_insert_with(|| child.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            child.clone(),
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                rdev: md.rdev(),
                data: (kind == libc::S_IFREG).then(|| fs::read(&path).unwrap()),
                link: (kind == libc::S_IFLNK)
                    .then(|| fs::read_link(&path).unwrap().into_os_string()),
                xattrs: xattrs_of(&path),
                same_as,
            },
        );
        if kind == libc::S_IFDIR {
            walk(root, &child, out, inodes);
        }
    }
}

/// Paths of a tree as strings, for short assertions.
pub(super) fn names(tree: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    tree.keys()
        .map(|p| String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned())
        .collect()
}
