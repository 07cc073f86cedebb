//! Tar helpers of import and export: reading an archive's entries safely
//! (clean paths, links that stay inside, blob paths checked against their
//! digests) and writing entries with fixed owners, modes and times.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::path::{Component, Path};
use std::rc::Rc;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::*;

/// Bytes read from an archive entry at a time.
const CHUNK: usize = 1 << 16;

/// Counts the bytes the tar reader consumes, to tell an archive that ends
/// properly (with its zero blocks) from one cut at an entry boundary.
pub(super) struct Counting<R> {
    pub(super) inner: R,
    pub(super) count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Yields exactly `left` bytes or fails (a blob must not change size
/// under a tar header that promised it).
pub(super) struct Exact<R> {
    pub(super) inner: R,
    pub(super) left: u64,
    pub(super) digest: String,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "blob {} ended {} bytes early",
                self.digest, self.left
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the stream ends.
pub(super) fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub(super) fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

pub(super) fn is_zstd(head: &[u8]) -> bool {
    head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

/// An archive entry's path made relative and clean ("./a//b" → "a/b");
/// absolute paths and ".." are refused.
pub(super) fn clean_path(raw: &Path) -> Result<String, ImageError> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| {
                archive_error(format!("archive entry {raw:?}: the path is not UTF-8"))
            })?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(archive_error(format!(
                    "archive entry {raw:?}: absolute paths and \"..\" are not allowed"
                )))
            }
        }
    }
    Ok(parts.join("/"))
}

/// Where a link at `path` points, as a clean path in the archive: a
/// symbolic link's target is relative to its directory, a hard link's to
/// the archive's root.
pub(super) fn link_target(path: &str, target: &Path, symbolic: bool) -> Result<String, ImageError> {
    let mut parts: Vec<&str> = if symbolic {
        let mut p: Vec<&str> = path.split('/').collect();
        p.pop();
        p
    } else {
        Vec::new()
    };
    let escapes = || {
        archive_error(format!(
            "archive entry {path}: its link target {target:?} leaves the archive"
        ))
    };
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(escapes)?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop().ok_or_else(escapes)?;
            }
            Component::RootDir | Component::Prefix(_) => return Err(escapes()),
        }
    }
    Ok(parts.join("/"))
}

/// The digest a path under `blobs/` names, if it is a blob path.
pub(super) fn blob_path_digest(path: &str) -> Result<Option<Digest>, ImageError> {
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("blobs"), Some(alg), Some(hex), None) => {
            if alg != "sha256" {
                return Err(archive_error(format!(
                    "archive entry {path}: unsupported digest algorithm {alg:?} (berth stores sha256)"
                )));
            }
            format!("sha256:{hex}")
                .parse::<Digest>()
                .map(Some)
                .map_err(|_| {
                    archive_error(format!(
                        "archive entry {path}: {hex:?} is not a sha256 digest"
                    ))
                })
        }
        _ => Ok(None),
    }
}

/// `docker save` before Docker 25 writes, beside each `<id>/layer.tar`,
/// the layer's v1 metadata, which nothing reads any more.
pub(super) fn is_legacy_metadata(path: &str) -> bool {
    matches!(path.split_once('/'), Some((dir, file))
        if !dir.is_empty() && dir != "blobs" && (file == "json" || file == "VERSION"))
}

/// Reads exactly `size` bytes of an entry, handing each chunk to `sink`;
/// returns the digest of what was read and its first bytes.
pub(super) fn stream_entry(
    entry: &mut impl Read,
    path: &str,
    size: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), ImageError>,
) -> Result<(Digest, Vec<u8>), ImageError> {
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(4);
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(archive_error(format!(
                    "the archive is damaged or truncated in entry {path}: {e}"
                )))
            }
        };
        let chunk = &buf[..n];
        if head.len() < 4 {
            let take = (4 - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(chunk);
        sink(chunk)?;
        total += n as u64;
    }
    if total != size {
        return Err(archive_error(format!(
            "the archive is truncated: entry {path} has {total} of its {size} bytes"
        )));
    }
    Ok((Digest::from_sha256(&hasher.finalize()), head))
}

pub(super) fn check_blob_path(
    path: &str,
    expected: &Digest,
    actual: &Digest,
) -> Result<(), ImageError> {
    if actual != expected {
        return Err(archive_error(format!(
            "archive entry {path} holds {actual}, not the digest its path names"
        )));
    }
    Ok(())
}

pub(super) fn to_json(value: &impl Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

pub(super) fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

pub(super) fn append_file<W: Write>(
    out: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
    out.append_data(&mut h, path, bytes)
}

pub(super) fn append_dir<W: Write>(out: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    out.append_data(&mut h, path, io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_links_kept_inside() {
        assert_eq!(
            clean_path(Path::new("./blobs//sha256/x")).unwrap(),
            "blobs/sha256/x"
        );
        assert!(clean_path(Path::new("a/../../b")).is_err());
        assert_eq!(
            link_target("bbb/layer.tar", Path::new("../aaa/layer.tar"), true).unwrap(),
            "aaa/layer.tar"
        );
        assert_eq!(
            link_target("bbb/layer.tar", Path::new("aaa/layer.tar"), false).unwrap(),
            "aaa/layer.tar"
        );
        assert!(link_target("layer.tar", Path::new("../x"), true).is_err());
        assert!(link_target("a/b", Path::new("/etc/passwd"), true).is_err());
        assert!(blob_path_digest("blobs/sha512/abc").is_err());
        assert!(blob_path_digest("blobs/sha256/xyz").is_err());
        assert!(blob_path_digest("aaa/layer.tar").unwrap().is_none());
    }
}
