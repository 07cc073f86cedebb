//! The build context: the tar archive a client sends with `POST /build`
//! (plain, gzip, bzip2, xz or zstd, told apart by their first bytes),
//! unpacked as it streams in into a private directory that is removed when
//! the build ends, however it ends ([`ContextDir`]'s drop).
//!
//! Nothing is written outside that directory: entries with an absolute
//! path or a `..` are refused, an entry is never written through a
//! symbolic link (its parents must be real directories), hard links must
//! point at a regular file of the archive. Symbolic links are kept as they
//! are; reading through them later goes through [`resolve_in_scope`],
//! which keeps every link inside the context as Docker does.
//!
//! [`pack`] is the client's half: a directory packed as such a tar, with
//! `.dockerignore` applied.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

pub mod digests;
pub mod pack;

/// The most symbolic links one resolution follows.
const MAX_LINKS: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("the build context is not a tar archive: {0}")]
    NotTar(io::Error),
    #[error("read the build context: {0}")]
    Read(io::Error),
    #[error("build context entry {0:?}: the path leaves the context")]
    Outside(String),
    #[error("build context entry {path:?}: hard link to {target:?}, not a file of the context")]
    BadHardLink { path: String, target: String },
    #[error("build context: {what} {path}: {source}")]
    Write {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("build context: too many levels of symbolic links at {0:?}")]
    SymlinkLoop(String),
}

/// The compression of a stream, by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps a reader in the decompressor its first bytes call for.
pub fn decompressed<'a, R: Read + 'a>(mut reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = Vec::with_capacity(6);
    (&mut reader).take(6).read_to_end(&mut head)?;
    let kind = Compression::detect(&head);
    wrap(kind, io::Cursor::new(head).chain(reader))
}

fn wrap<'a, R: Read + 'a>(kind: Compression, reader: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(reader, true)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

/// A build's unpacked context, removed on drop.
#[derive(Debug)]
pub struct ContextDir {
    root: PathBuf,
}

impl ContextDir {
    /// Makes the (empty, private) directory of one build under `parent`.
    pub fn create(parent: &Path, id: &str) -> Result<ContextDir, ContextError> {
        let write = |what, path: &Path, source| ContextError::Write {
            what,
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(parent).map_err(|e| write("create", parent, e))?;
        let root = parent.join(id);
        fs::create_dir(&root).map_err(|e| write("create", &root, e))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(|e| write("chmod", &root, e))?;
        Ok(ContextDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Unpacks a (possibly compressed) tar stream into the directory.
    pub fn unpack(&self, reader: impl Read) -> Result<(), ContextError> {
        let started = std::time::Instant::now();
        let reader = decompressed(reader).map_err(ContextError::Read)?;
        let result = unpack_tar(reader, &self.root);
        tracing::debug!(
            dir = %self.root.display(),
            ms = started.elapsed().as_millis() as u64,
            "build context unpacked and hashed"
        );
        result
    }
}

impl Drop for ContextDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.root.display(), error = %e, "remove build context");
            }
        }
    }
}

/// Extracts a (possibly compressed) tar archive into `dest` with the same
/// rules as a context: no entry outside `dest`, nothing written through a
/// symbolic link (ADD of a local archive).
pub fn unpack_archive(reader: impl Read, dest: &Path) -> Result<(), ContextError> {
    let reader = decompressed(reader).map_err(ContextError::Read)?;
    unpack_tar(reader, dest)
}

/// A tar entry's path made relative and checked: no root, no `..`.
fn entry_path(raw: &Path) -> Result<Option<PathBuf>, ContextError> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(ContextError::Outside(raw.display().to_string()))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Makes sure every parent of `rel` under `root` is a real directory
/// (creating the missing ones), so nothing is written through a link.
fn prepare_parents(root: &Path, rel: &Path) -> Result<(), ContextError> {
    let mut dir = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for component in parent.components() {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(ContextError::Outside(rel.display().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|source| ContextError::Write {
                    what: "create",
                    path: dir.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(ContextError::Write {
                    what: "inspect",
                    path: dir.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Removes what is at `path` (a later entry replaces an earlier one), but
/// never a directory that a directory entry would merge into.
fn clear(path: &Path, keep_dir: bool) -> Result<(), ContextError> {
    let remove = |result: io::Result<()>| {
        result.map_err(|source| ContextError::Write {
            what: "replace",
            path: path.to_path_buf(),
            source,
        })
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && keep_dir => Ok(()),
        Ok(meta) if meta.is_dir() => remove(fs::remove_dir_all(path)),
        Ok(_) => remove(fs::remove_file(path)),
        Err(_) => Ok(()),
    }
}

/// Files larger than this are hashed on a thread of their own as they are
/// unpacked.
const BACKGROUND_HASH: u64 = 4 << 20;

/// Reads from `from` until `buf` is full or the input ends; how much.
fn fill(from: &mut impl Read, buf: &mut [u8]) -> Result<usize, ContextError> {
    let mut filled = 0;
    while filled < buf.len() {
        match from.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ContextError::Read(e)),
        }
    }
    Ok(filled)
}

/// Copies a large entry into `file` while a [`digests::BackgroundHasher`]
/// hashes it; its digest and the file.
fn copy_hashed_aside(
    from: &mut impl Read,
    mut file: fs::File,
    path: &Path,
) -> Result<([u8; 32], fs::File), ContextError> {
    let write = |source| ContextError::Write {
        what: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut hasher = digests::BackgroundHasher::start(1 << 20).map_err(write)?;
    loop {
        let mut buf = hasher.buffer();
        let filled = fill(from, &mut buf)?;
        if filled == 0 {
            break;
        }
        file.write_all(&buf[..filled]).map_err(write)?;
        buf.truncate(filled);
        hasher.hash(buf).map_err(write)?;
    }
    Ok((hasher.finish().map_err(write)?, file))
}

/// Copies `from` into `to` in writes of up to `buf`'s size: the body
/// arrives in chunks of a few KiB, and a write (and a hash update) per
/// chunk costs more than the copy itself for a large file.
fn copy_large(
    from: &mut impl Read,
    to: &mut impl Write,
    buf: &mut [u8],
    path: &Path,
) -> Result<(), ContextError> {
    loop {
        let filled = fill(from, buf)?;
        if filled == 0 {
            return Ok(());
        }
        to.write_all(&buf[..filled])
            .map_err(|source| ContextError::Write {
                what: "write",
                path: path.to_path_buf(),
                source,
            })?;
    }
}

fn unpack_tar(reader: impl Read, root: &Path) -> Result<(), ContextError> {
    let mut archive = tar::Archive::new(reader);
    let mut buf = vec![0u8; 1 << 20];
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let entries = archive.entries().map_err(ContextError::NotTar)?;
    for (index, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| {
            if index == 0 {
                ContextError::NotTar(e)
            } else {
                ContextError::Read(e)
            }
        })?;
        let raw = entry.path().map_err(ContextError::Read)?.into_owned();
        let Some(rel) = entry_path(&raw)? else {
            continue;
        };
        prepare_parents(root, &rel)?;
        let path = root.join(&rel);
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        let write = |what, source| ContextError::Write {
            what,
            path: path.clone(),
            source,
        };
        match kind {
            tar::EntryType::Directory => {
                clear(&path, true)?;
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(|e| write("create", e))?;
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| write("chmod", e))?;
                dir_times.push((path.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&path, false)?;
                let file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| write("create", e))?;
                // Hashed as it is written: a COPY of it then finds its
                // digest instead of reading it again (`digests`); a large
                // file on a thread of its own, meanwhile.
                let (digest, file) = if entry.header().size().unwrap_or(0) > BACKGROUND_HASH {
                    copy_hashed_aside(&mut entry, file, &path)?
                } else {
                    let mut writer = digests::HashingWriter::new(file);
                    copy_large(&mut entry, &mut writer, &mut buf, &path)?;
                    writer.digest()
                };
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| write("chmod", e))?;
                file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
                    .map_err(|e| write("set the time of", e))?;
                if let Ok(meta) = file.metadata() {
                    digests::remember(&meta, digest);
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ContextError::Read)?
                    .ok_or_else(|| ContextError::Outside(raw.display().to_string()))?;
                clear(&path, false)?;
                symlink(&target, &path).map_err(|e| write("create", e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ContextError::Read)?
                    .ok_or_else(|| ContextError::Outside(raw.display().to_string()))?;
                let bad = || ContextError::BadHardLink {
                    path: raw.display().to_string(),
                    target: target.display().to_string(),
                };
                let target_rel = entry_path(&target)?.ok_or_else(bad)?;
                let source = root.join(&target_rel);
                // The target must be a regular file reached through real
                // directories only.
                let mut probe = root.to_path_buf();
                for component in target_rel.parent().into_iter().flat_map(Path::components) {
                    probe.push(component);
                    if !fs::symlink_metadata(&probe).is_ok_and(|m| m.is_dir()) {
                        return Err(bad());
                    }
                }
                if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
                    return Err(bad());
                }
                clear(&path, false)?;
                fs::hard_link(&source, &path).map_err(|e| write("link", e))?;
            }
            // Devices, fifos and the like have no place in a build context.
            _ => {}
        }
    }
    // Directories last: writing into them changed their times.
    for (dir, mtime) in dir_times.iter().rev() {
        if let Ok(handle) = fs::File::open(dir) {
            let _ = handle.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(*mtime));
        }
    }
    Ok(())
}

/// `path` (relative to `root`) with every symbolic link resolved inside
/// `root`: an absolute target is taken from `root`, and `..` never climbs
/// above it, as Docker resolves paths in a context or a container's root.
/// The last element is resolved too when `follow_last` is set.
pub fn resolve_in_scope(
    root: &Path,
    path: &str,
    follow_last: bool,
) -> Result<PathBuf, ContextError> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&part);
        let is_last = pending.is_empty();
        let link = match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() && (follow_last || !is_last) => {
                fs::read_link(&candidate).ok()
            }
            _ => None,
        };
        match link {
            None => resolved.push(part),
            Some(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ContextError::SymlinkLoop(path.to_string()));
                }
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved);
    Ok(out)
}

#[cfg(test)]
mod tests;
