//! Writing a tar of a file or directory found in a container's root, by
//! descriptors only: each directory is opened from its parent with
//! `O_NOFOLLOW`, so a link swapped in during the walk is archived as a
//! link, never followed.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, SFlag};
use tar::{EntryType, Header};

use super::{fs, paths};

/// Writes the resource `name` of directory `dir` (or `dir` itself when
/// `name` is `None`) into `out` as a tar whose entries start with `rebase`.
pub fn write_tar<W: Write>(
    dir: BorrowedFd<'_>,
    name: Option<&str>,
    rebase: &str,
    out: W,
) -> io::Result<W> {
    let mut w = Walker {
        builder: tar::Builder::new(out),
        rebase: rebase.to_string(),
        links: HashMap::new(),
    };
    match name {
        Some(name) => {
            let st = fs::lstat_child(dir, name).map_err(io::Error::from)?;
            w.entry(dir, name, "", &st)?;
        }
        None => {
            let own = fs::open_child(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            let st = nix::sys::stat::fstat(own.as_fd()).map_err(io::Error::from)?;
            w.header_only("", &st, EntryType::Directory, None)?;
            w.children(own.as_fd(), "")?;
        }
    }
    w.builder.into_inner()
}

struct Walker<W: Write> {
    builder: tar::Builder<W>,
    rebase: String,
    /// The first entry name of each inode with more than one link.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> Walker<W> {
    fn header(&self, st: &FileStat, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    fn header_only(
        &mut self,
        rel: &str,
        st: &FileStat,
        kind: EntryType,
        link: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut h = self.header(st, kind);
        let name = paths::entry_name(&self.rebase, rel, kind == EntryType::Directory);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let dev = st.st_rdev;
            h.set_device_major(nix::sys::stat::major(dev) as u32)?;
            h.set_device_minor(nix::sys::stat::minor(dev) as u32)?;
        }
        append_named(&mut self.builder, h, name.as_bytes(), link, io::empty())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        st: &FileStat,
    ) -> io::Result<()> {
        let kind = fs::kind(st.st_mode);
        let archived = paths::entry_name(&self.rebase, rel, kind == SFlag::S_IFDIR);
        if kind != SFlag::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                return self.header_only(rel, st, EntryType::Link, Some(first.as_bytes()));
            }
            self.links.insert(key, archived);
        }
        match kind {
            SFlag::S_IFDIR => {
                let sub = fs::open_child(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
                self.header_only(rel, st, EntryType::Directory, None)?;
                self.children(sub.as_fd(), rel)
            }
            SFlag::S_IFREG => {
                let file = fs::open_child(dir, name, OFlag::O_RDONLY)?;
                // Docker keeps a file's capabilities.
                if let Ok(Some(caps)) = super::sys::fgetxattr(file.as_fd(), CAPABILITY) {
                    let record = pax_record(&format!("SCHILY.xattr.{CAPABILITY}"), &caps);
                    let mut h = Header::new_ustar();
                    h.set_entry_type(EntryType::XHeader);
                    h.set_mode(0o644);
                    h.set_size(record.len() as u64);
                    append_named(
                        &mut self.builder,
                        h,
                        b"././@PaxHeader",
                        None,
                        record.as_slice(),
                    )?;
                }
                let file = std::fs::File::from(file);
                let mut h = self.header(st, EntryType::Regular);
                h.set_size(st.st_size.max(0) as u64);
                let name = paths::entry_name(&self.rebase, rel, false);
                // Exactly the size in the header, even if the file changes.
                let reader = io::Read::take(
                    io::BufReader::with_capacity(256 << 10, file),
                    st.st_size.max(0) as u64,
                );
                let mut reader = Padded {
                    inner: reader,
                    left: st.st_size.max(0) as u64,
                };
                append_named(&mut self.builder, h, name.as_bytes(), None, &mut reader)
            }
            SFlag::S_IFLNK => {
                let target = fs::read_link(dir, name).map_err(io::Error::from)?;
                self.header_only(rel, st, EntryType::Symlink, Some(&target))
            }
            SFlag::S_IFCHR => self.header_only(rel, st, EntryType::Char, None),
            SFlag::S_IFBLK => self.header_only(rel, st, EntryType::Block, None),
            SFlag::S_IFIFO => self.header_only(rel, st, EntryType::Fifo, None),
            // Docker leaves sockets out.
            _ => Ok(()),
        }
    }

    fn children(&mut self, dir: BorrowedFd<'_>, rel: &str) -> io::Result<()> {
        for child in fs::list_dir(dir).map_err(io::Error::from)? {
            let st = match fs::lstat_child(dir, &child) {
                Ok(st) => st,
                // Gone since listed.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let child_rel = if rel.is_empty() {
                child.clone()
            } else {
                format!("{rel}/{child}")
            };
            self.entry(dir, &child, &child_rel, &st)?;
        }
        Ok(())
    }
}

const CAPABILITY: &str = "security.capability";

/// One PAX record: `LEN KEY=VALUE\n`, LEN counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Appends an entry named exactly `name` (the tar crate would drop a
/// leading `./`, which Docker's clients rely on), long names and link
/// targets in GNU extension entries.
fn append_named<W: Write>(
    builder: &mut tar::Builder<W>,
    mut h: Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl io::Read,
) -> io::Result<()> {
    const FIELD: usize = 100;
    let mut long = |kind: EntryType, value: &[u8]| -> io::Result<()> {
        let mut l = Header::new_gnu();
        l.set_entry_type(kind);
        l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        l.set_mode(0o644);
        l.set_size(value.len() as u64 + 1);
        l.set_cksum();
        builder.append(&l, io::Read::chain(value, &[0u8][..]))
    };
    if name.len() > FIELD {
        long(EntryType::GNULongName, name)?;
    }
    if let Some(target) = link {
        if target.len() > FIELD {
            long(EntryType::GNULongLink, target)?;
        }
        let field = &mut h.as_old_mut().linkname;
        let n = target.len().min(FIELD);
        field[..n].copy_from_slice(&target[..n]);
    }
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(FIELD);
    field[..n].copy_from_slice(&name[..n]);
    h.set_cksum();
    builder.append(&h, data)
}

/// A reader that gives exactly `left` bytes: zeros after an early end (a
/// file that shrank while archived), so the archive stays well formed.
struct Padded<R> {
    inner: R,
    left: u64,
}

impl<R: io::Read> io::Read for Padded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        let n = if n == 0 {
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_record("k", b"v");
        assert_eq!(r, b"6 k=v\n");
        let long = vec![b'x'; 95];
        let r = pax_record("k", &long);
        assert_eq!(r.len().to_string(), String::from_utf8_lossy(&r[..3]));
    }
}
