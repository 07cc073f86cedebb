//! Import and export of image archives: OCI image layout tarballs and
//! `docker save` tarballs, both read and written as streams.
//!
//! Import reads the tar once, in order (plain, gzip or zstd, sniffed from
//! the first bytes). Every regular file goes straight into the content
//! store as it is read: a file at `blobs/sha256/<hex>` is checked against
//! the digest its path names, any other file (a `docker save` layer tar or
//! config) is stored under the digest computed while writing it, and
//! remembered by its path. Only the small documents at the root
//! (`index.json`, `manifest.json`, `oci-layout`) are kept in memory. When
//! the stream has ended, the images are worked out from those documents:
//! every blob a manifest names must be present, a `docker save` entry gets
//! a Docker schema 2 manifest built for it, the requested platform is
//! unpacked if asked, and all the image records are written in one
//! transaction that also ends the import's lease. A failed import names no
//! image; its lease is dropped, so the next garbage collection takes what
//! it stored.
//!
//! How imported images are named, first rule that applies:
//! 1. the descriptor's `io.containerd.image.name` annotation;
//! 2. its `org.opencontainers.image.ref.name` when that is a full reference
//!    (it holds a '/', ':' or '@', as containerd decides);
//! 3. a `docker save` entry's `RepoTags` (also for a Docker 25+ archive's
//!    index.json entry that has no name of its own), one image per tag;
//! 4. a bare tag from `ref.name` goes on the repository of
//!    `ImportOptions::name` (its tag dropped), else on `import-<hex12>`;
//! 5. when the archive names nothing: `ImportOptions::name` if exactly one
//!    image is unnamed, else `<repository of the name>@sha256:<hex>` or,
//!    without a name, `import-<hex12>@sha256:<hex>`, hex12 being the first
//!    12 hex digits of the image's digest.
//!
//! Every name goes through `image_name`, so it is stored as a pull stores
//! it. Two different images under one name are refused.
//!
//! Export writes an OCI image layout: `oci-layout`, `index.json` (one entry
//! per name, annotated with the full name and the tag) and each blob the
//! images reach, once, in digest order, with fixed owners, modes and times,
//! so the same images always make the same bytes. The Docker format adds
//! `manifest.json` and `repositories` beside it, as Docker 25 and later
//! write them, which older `docker load` and `skopeo docker-archive:` read.
//!
//! The caller holds `gc_lock` shared for either, as for any write of blobs.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::content::Writer;
use crate::metadata::validate_namespace;

/// An uncompressed Docker layer (`oci` has the compressed ones).
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The annotation containerd (and Docker 25+) puts the full image name in.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// How many links a path may go through in an archive.
const MAX_LINKS: usize = 16;

/// How deep indexes may nest.
const MAX_DEPTH: usize = 4;

/// Bytes read from an archive entry at a time.
const CHUNK: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Oci,
    Docker,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Names images the archive leaves unnamed.
    pub name: Option<String>,
    pub platform: Option<Platform>,
    pub unpack: bool,
}

/// One entry of a `docker save` manifest.json.
#[derive(Debug, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Layout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

/// A file of the archive, as stored in the content store.
#[derive(Debug, Clone)]
struct Stored {
    digest: Digest,
    size: u64,
    /// Its first bytes, which say how a layer is compressed.
    head: Vec<u8>,
}

/// What an archive held, once read.
#[derive(Debug, Default)]
struct Contents {
    files: HashMap<String, Stored>,
    /// Symbolic and hard links: path → the path they name.
    links: HashMap<String, String>,
    index: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    layout: Option<Vec<u8>>,
}

impl Contents {
    fn resolve(&self, path: &str) -> Option<&Stored> {
        let mut path = path;
        for _ in 0..MAX_LINKS {
            if let Some(s) = self.files.get(path) {
                return Some(s);
            }
            path = self.links.get(path)?;
        }
        None
    }
}

/// An image found in an archive.
#[derive(Debug)]
struct Found {
    target: Descriptor,
    names: Vec<String>,
    /// (manifest digest, config digest) of each manifest the target reaches.
    manifests: Vec<(String, String)>,
}

/// A blob an export needs that the store does not have.
struct Missing {
    blob: String,
    named_by: String,
}

/// Counts the bytes the tar reader consumes, to tell an archive that ends
/// properly (with its zero blocks) from one cut at an entry boundary.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
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
struct Exact<R> {
    inner: R,
    left: u64,
    digest: String,
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

fn archive_error(message: impl Into<String>) -> ImageError {
    ImageError::Archive(message.into())
}

fn bad_file(path: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::BadDocument {
        what: "archive file",
        digest: path.to_string(),
        reason: e.to_string(),
    }
}

fn descriptor(media_type: &str, digest: String, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size: size as i64,
        urls: Vec::new(),
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// Reads until `buf` is full or the stream ends.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

fn is_zstd(head: &[u8]) -> bool {
    head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

/// An archive entry's path made relative and clean ("./a//b" → "a/b");
/// absolute paths and ".." are refused.
fn clean_path(raw: &Path) -> Result<String, ImageError> {
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
fn link_target(path: &str, target: &Path, symbolic: bool) -> Result<String, ImageError> {
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
fn blob_path_digest(path: &str) -> Result<Option<Digest>, ImageError> {
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
fn is_legacy_metadata(path: &str) -> bool {
    matches!(path.split_once('/'), Some((dir, file))
        if !dir.is_empty() && dir != "blobs" && (file == "json" || file == "VERSION"))
}

/// Reads exactly `size` bytes of an entry, handing each chunk to `sink`;
/// returns the digest of what was read and its first bytes.
fn stream_entry(
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

fn check_blob_path(path: &str, expected: &Digest, actual: &Digest) -> Result<(), ImageError> {
    if actual != expected {
        return Err(archive_error(format!(
            "archive entry {path} holds {actual}, not the digest its path names"
        )));
    }
    Ok(())
}

/// Splits a name into repository, tag and digest: the tag follows the last
/// ':' after the last '/', the digest follows '@'.
fn split_name(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

/// How Docker shows a name: without `docker.io/` and `library/`.
fn familiar(repository: &str) -> &str {
    match repository.strip_prefix("docker.io/") {
        Some(rest) => rest
            .strip_prefix("library/")
            .filter(|r| !r.contains('/'))
            .unwrap_or(rest),
        None => repository,
    }
}

/// The first 12 hex digits of a digest.
fn short_hex(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// Naming rules 1, 2 and 4 (see the module's documentation).
fn annotated_name(desc: &Descriptor, base: Option<&str>) -> Option<String> {
    if let Some(name) = desc
        .annotations
        .get(ANNOTATION_IMAGE_NAME)
        .filter(|n| !n.is_empty())
    {
        return Some(image_name(name));
    }
    let r = desc
        .annotations
        .get(oci::ANNOTATION_REF_NAME)
        .filter(|n| !n.is_empty())?;
    if r.contains(['/', ':', '@']) {
        return Some(image_name(r));
    }
    let repository = match base {
        Some(b) => split_name(b).0.to_string(),
        None => format!("import-{}", short_hex(&desc.digest)),
    };
    Some(image_name(&format!("{repository}:{r}")))
}

/// Naming rule 5 (see the module's documentation).
fn unnamed_name(digest: &str, base: Option<&str>, only_one: bool) -> String {
    match base {
        Some(b) if only_one => image_name(b),
        Some(b) => image_name(&format!("{}@{digest}", split_name(b).0)),
        None => image_name(&format!("import-{}@{digest}", short_hex(digest))),
    }
}

impl Images {
    /// Imports an OCI image layout or `docker save` archive, read once
    /// from `reader`; returns the images it named.
    pub fn import(
        &self,
        ns: &str,
        reader: impl Read,
        opts: ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        validate_namespace(ns)?;
        let lease = self.create_transfer_lease(ns)?;
        let result = self.import_leased(ns, &lease, reader, &opts);
        if result.is_err() {
            // Nothing names what was stored: let the next collection take
            // it rather than keep it for a day.
            let dropped = self.meta.write().and_then(|tx| {
                tx.delete(Table::Leases, ns, &lease)?;
                tx.commit()
            });
            if let Err(e) = dropped {
                tracing::warn!(namespace = ns, lease, error = %e, "drop the lease of a failed import");
            }
        }
        result
    }

    fn import_leased(
        &self,
        ns: &str,
        lease: &str,
        reader: impl Read,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let contents = self.read_archive(ns, lease, reader)?;
        let mut found = self.find_images(ns, lease, &contents, opts)?;

        // An unnamed entry for an image named elsewhere in the archive
        // (an image saved both by tag and by id) adds nothing.
        let named_targets: HashSet<String> = found
            .iter()
            .filter(|f| !f.names.is_empty())
            .map(|f| f.target.digest.clone())
            .collect();
        found.retain(|f| !f.names.is_empty() || !named_targets.contains(&f.target.digest));
        let unnamed = found.iter().filter(|f| f.names.is_empty()).count();
        for f in &mut found {
            if f.names.is_empty() {
                f.names.push(unnamed_name(
                    &f.target.digest,
                    opts.name.as_deref(),
                    unnamed == 1,
                ));
            }
        }
        let mut named: Vec<(String, Descriptor)> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for f in &found {
            for name in &f.names {
                match seen.get(name) {
                    Some(d) if *d == f.target.digest => {}
                    Some(d) => {
                        return Err(archive_error(format!(
                            "the archive names two images {name}: {d} and {}",
                            f.target.digest
                        )))
                    }
                    None => {
                        seen.insert(name.clone(), f.target.digest.clone());
                        named.push((name.clone(), f.target.clone()));
                    }
                }
            }
        }

        if opts.unpack {
            let platform = opts
                .platform
                .clone()
                .unwrap_or_else(|| self.platform.clone());
            let mut unpacked = HashSet::new();
            for f in &found {
                let manifest = self.platform_manifest(&f.names[0], &f.target, &platform)?;
                if let Err(ContentError::NotFound(_)) = self.content.info(&manifest.digest.parse()?)
                {
                    return Err(archive_error(format!(
                        "archive is missing the {platform} manifest {} of index {}",
                        manifest.digest, f.target.digest
                    )));
                }
                if unpacked.insert(manifest.digest.clone()) {
                    self.unpack_from_store(ns, lease, &manifest.digest)?;
                }
            }
        }

        // All names at once, and the lease ends with them.
        let tx = self.meta.write()?;
        tx.ensure_namespace(ns)?;
        let mut records = Vec::with_capacity(named.len());
        for (name, target) in named {
            records.push(put_image(&tx, ns, &name, target)?);
        }
        tx.delete(Table::Leases, ns, lease)?;
        tx.commit()?;
        for r in &records {
            tracing::info!(namespace = ns, image = %r.name, digest = %r.target.digest, "imported");
        }
        Ok(records)
    }

    /// Reads the whole archive: blobs and other files into the content
    /// store (held by `lease`), the root documents into memory.
    fn read_archive(
        &self,
        ns: &str,
        lease: &str,
        mut reader: impl Read,
    ) -> Result<Contents, ImageError> {
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut reader, &mut magic)
            .map_err(|e| archive_error(format!("read the archive: {e}")))?;
        if n == 0 {
            return Err(archive_error("the archive is empty"));
        }
        let head = io::Cursor::new(magic[..n].to_vec()).chain(reader);
        let decoded: Box<dyn Read + '_> = if is_gzip(&magic[..n]) {
            Box::new(flate2::read::MultiGzDecoder::new(head))
        } else if is_zstd(&magic[..n]) {
            Box::new(
                zstd::stream::read::Decoder::new(head)
                    .map_err(|e| archive_error(format!("read the zstd archive: {e}")))?,
            )
        } else {
            Box::new(head)
        };
        let count = Rc::new(Cell::new(0u64));
        let mut archive = tar::Archive::new(Counting {
            inner: decoded,
            count: Rc::clone(&count),
        });
        let mut contents = Contents::default();
        // Where the last entry's data (padded) ended, and its path.
        let mut last: Option<(u64, String)> = None;
        let entries = archive
            .entries()
            .map_err(|e| archive_error(format!("read the archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| match &last {
                None => {
                    let e = e.to_string();
                    // The tar reader quotes the bad header field: noise.
                    let why = if e.contains("cksum") || e.contains("checksum") {
                        "its first block is not a tar header"
                    } else {
                        e.as_str()
                    };
                    archive_error(format!("not a tar archive (plain, gzip or zstd): {why}"))
                }
                Some((_, path)) => archive_error(format!(
                    "the archive is damaged or truncated after entry {path}: {e}"
                )),
            })?;
            let raw = entry
                .path()
                .map_err(|e| archive_error(format!("read an archive entry's path: {e}")))?
                .into_owned();
            let path = clean_path(&raw)?;
            let size = entry.size();
            last = Some((
                entry.raw_file_position() + size.div_ceil(512) * 512,
                path.clone(),
            ));
            let kind = entry.header().entry_type();
            if path.is_empty() || kind.is_dir() {
                continue;
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| archive_error(format!("archive entry {path}: {e}")))?
                    .ok_or_else(|| archive_error(format!("archive entry {path}: empty link")))?;
                let resolved = link_target(&path, &target, kind.is_symlink())?;
                contents.links.insert(path, resolved);
                continue;
            }
            if !kind.is_file() {
                tracing::debug!(entry = %path, "skip an archive entry that is not a file");
                continue;
            }
            self.read_entry(ns, lease, &path, &mut entry, size, &mut contents)?;
        }
        match last {
            None => Err(archive_error("the archive holds no files")),
            // A tar ends with zero blocks; a stream cut between two
            // entries has none.
            Some((end, path)) if count.get() < end + 512 => Err(archive_error(format!(
                "the archive is truncated: it stops after entry {path} without the end-of-archive blocks"
            ))),
            Some(_) => Ok(contents),
        }
    }

    fn read_entry(
        &self,
        ns: &str,
        lease: &str,
        path: &str,
        entry: &mut impl Read,
        size: u64,
        contents: &mut Contents,
    ) -> Result<(), ImageError> {
        let slot = match path {
            "index.json" => Some(&mut contents.index),
            "manifest.json" => Some(&mut contents.manifest),
            "oci-layout" => Some(&mut contents.layout),
            // It says what manifest.json's RepoTags say.
            "repositories" => return Ok(()),
            _ => None,
        };
        if let Some(slot) = slot {
            if size > MAX_DOCUMENT {
                return Err(ImageError::TooLarge {
                    what: "archive file",
                    digest: path.to_string(),
                    size,
                    max: MAX_DOCUMENT,
                });
            }
            let mut buf = Vec::with_capacity(size as usize);
            stream_entry(entry, path, size, |chunk| {
                buf.extend_from_slice(chunk);
                Ok(())
            })?;
            *slot = Some(buf);
            return Ok(());
        }
        if is_legacy_metadata(path) {
            return Ok(());
        }
        let expected = blob_path_digest(path)?;
        let stored = self.store_entry(entry, path, size, expected.as_ref())?;
        self.hold_content(ns, Some(lease), &stored.digest.to_string())?;
        contents.files.insert(path.to_string(), stored);
        Ok(())
    }

    /// Streams an entry into the content store. With `expected` (a blob
    /// path's digest) the entry must have that digest; a blob the store has
    /// is only checked, not written again.
    fn store_entry(
        &self,
        entry: &mut impl Read,
        path: &str,
        size: u64,
        expected: Option<&Digest>,
    ) -> Result<Stored, ImageError> {
        if let Some(d) = expected {
            if self.content.info(d).is_ok() {
                let (digest, head) = stream_entry(entry, path, size, |_| Ok(()))?;
                check_blob_path(path, d, &digest)?;
                return Ok(Stored { digest, size, head });
            }
        }
        let reference = unique_id("import");
        let mut writer = self.content.writer(&reference)?;
        match write_entry(&mut writer, entry, path, size, expected) {
            Ok((digest, head)) => match writer.commit(Some(size), &digest) {
                Ok(_) | Err(ContentError::AlreadyExists(_)) => Ok(Stored { digest, size, head }),
                Err(e) => Err(e.into()),
            },
            Err(e) => {
                drop(writer);
                let _ = self.content.abort(&reference);
                Err(e)
            }
        }
    }

    /// The images an archive holds, with every blob they reach present and
    /// held by `lease`.
    fn find_images(
        &self,
        ns: &str,
        lease: &str,
        contents: &Contents,
        opts: &ImportOptions,
    ) -> Result<Vec<Found>, ImageError> {
        if contents.index.is_none() && contents.manifest.is_none() {
            return Err(archive_error(
                "the archive has neither index.json (an OCI image layout) nor manifest.json \
                 (a docker save from Docker 1.10 or later)",
            ));
        }
        if let Some(bytes) = &contents.layout {
            let layout: Layout =
                serde_json::from_slice(bytes).map_err(|e| bad_file("oci-layout", e))?;
            if !layout.version.starts_with("1.") {
                return Err(bad_file(
                    "oci-layout",
                    format!("unsupported image layout version {:?}", layout.version),
                ));
            }
        }
        let mut found = Vec::new();
        let mut held = BTreeSet::new();
        if let Some(bytes) = &contents.index {
            let index: Index =
                serde_json::from_slice(bytes).map_err(|e| bad_file("index.json", e))?;
            for desc in &index.manifests {
                let mut target = desc.clone();
                target.annotations.remove(ANNOTATION_IMAGE_NAME);
                target.annotations.remove(oci::ANNOTATION_REF_NAME);
                let (media_type, manifests) = self.check_tree(desc, "index.json", &mut held, 0)?;
                if target.media_type.is_empty() {
                    target.media_type = media_type;
                }
                found.push(Found {
                    target,
                    names: annotated_name(desc, opts.name.as_deref())
                        .into_iter()
                        .collect(),
                    manifests,
                });
            }
        }
        if let Some(bytes) = &contents.manifest {
            let entries: Vec<DockerEntry> =
                serde_json::from_slice(bytes).map_err(|e| bad_file("manifest.json", e))?;
            let from_index = found.len();
            for entry in &entries {
                let names: Vec<String> = entry
                    .repo_tags
                    .iter()
                    .flatten()
                    .filter(|t| !t.is_empty())
                    .map(|t| image_name(t))
                    .collect();
                let config = contents
                    .resolve(&clean_path(Path::new(&entry.config))?)
                    .ok_or_else(|| {
                        archive_error(format!(
                            "archive is missing config {} named by manifest.json",
                            entry.config
                        ))
                    })?;
                let config_digest = config.digest.to_string();
                // A Docker 25+ archive lists the image in index.json too.
                if let Some(f) = found[..from_index]
                    .iter_mut()
                    .find(|f| f.manifests.iter().any(|(_, c)| *c == config_digest))
                {
                    if f.names.is_empty() {
                        f.names = names;
                    }
                    continue;
                }
                found.push(self.docker_image(contents, entry, config, names, &mut held)?);
            }
        }
        if found.is_empty() {
            return Err(archive_error(
                "the archive holds no images: its index.json and manifest.json list none",
            ));
        }
        self.hold_all(ns, lease, &held)?;
        Ok(found)
    }

    /// Checks that `desc` and everything it reaches is in the store, with
    /// the sizes the documents say; returns the media type `desc` should
    /// have and the (manifest, config) digests it reaches. An index may
    /// leave out platforms, but not all of them.
    fn check_tree(
        &self,
        desc: &Descriptor,
        named_by: &str,
        held: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<(String, Vec<(String, String)>), ImageError> {
        self.check_present(desc, named_by)?;
        held.insert(desc.digest.clone());
        let bytes = self.read_document("manifest", &desc.digest)?;
        let kind = document_kind(&desc.media_type, &bytes);
        let media_type = own_media_type(&bytes).unwrap_or(match kind {
            Kind::Index => oci::MEDIA_OCI_INDEX,
            _ => oci::MEDIA_OCI_MANIFEST,
        });
        match kind {
            Kind::Index if depth < MAX_DEPTH => {
                let index = parse_index(&desc.digest, &bytes)?;
                let named_by = format!("index {}", desc.digest);
                let mut out = Vec::new();
                for child in &index.manifests {
                    if !self.has_blob(&child.digest) {
                        continue;
                    }
                    out.extend(self.check_tree(child, &named_by, held, depth + 1)?.1);
                }
                if out.is_empty() {
                    return Err(archive_error(format!(
                        "archive is missing every manifest of index {}",
                        desc.digest
                    )));
                }
                Ok((media_type.to_string(), out))
            }
            Kind::Manifest => {
                let manifest = parse_manifest(&desc.digest, &bytes)?;
                let named_by = format!("manifest {}", desc.digest);
                self.check_present(&manifest.config, &named_by)?;
                held.insert(manifest.config.digest.clone());
                for layer in &manifest.layers {
                    // Foreign layers are fetched from their URLs.
                    if !layer.urls.is_empty() && !self.has_blob(&layer.digest) {
                        continue;
                    }
                    self.check_present(layer, &named_by)?;
                    held.insert(layer.digest.clone());
                }
                Ok((
                    media_type.to_string(),
                    vec![(desc.digest.clone(), manifest.config.digest)],
                ))
            }
            Kind::Index => Err(ImageError::BadDocument {
                what: "index",
                digest: desc.digest.clone(),
                reason: format!("indexes nest more than {MAX_DEPTH} deep"),
            }),
            _ => Err(ImageError::BadDocument {
                what: "manifest",
                digest: desc.digest.clone(),
                reason: format!(
                    "media type {:?} is neither an image manifest nor an index",
                    desc.media_type
                ),
            }),
        }
    }

    fn has_blob(&self, digest: &str) -> bool {
        digest
            .parse::<Digest>()
            .is_ok_and(|d| self.content.info(&d).is_ok())
    }

    fn check_present(&self, desc: &Descriptor, named_by: &str) -> Result<(), ImageError> {
        let digest: Digest = desc.digest.parse().map_err(|_| ImageError::BadDocument {
            what: "descriptor",
            digest: desc.digest.clone(),
            reason: format!("in {named_by}: not a sha256 digest"),
        })?;
        match self.content.info(&digest) {
            Ok(info) if info.size as i64 == desc.size => Ok(()),
            Ok(info) => Err(archive_error(format!(
                "blob {} is {} bytes, but {named_by} says {}",
                desc.digest, info.size, desc.size
            ))),
            Err(ContentError::NotFound(_)) => Err(archive_error(format!(
                "archive is missing blob {} named by {named_by}",
                desc.digest
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Builds and stores the Docker schema 2 manifest of a `docker save`
    /// entry.
    fn docker_image(
        &self,
        contents: &Contents,
        entry: &DockerEntry,
        config: &Stored,
        names: Vec<String>,
        held: &mut BTreeSet<String>,
    ) -> Result<Found, ImageError> {
        let config_digest = config.digest.to_string();
        let image_config = parse_config(
            &config_digest,
            &self.read_document("config", &config_digest)?,
        )?;
        let diff_ids = &image_config.rootfs.diff_ids;
        if diff_ids.len() != entry.layers.len() {
            return Err(ImageError::BadDocument {
                what: "config",
                digest: config_digest,
                reason: format!(
                    "lists {} diff ids for the {} layers manifest.json names",
                    diff_ids.len(),
                    entry.layers.len()
                ),
            });
        }
        let mut layers = Vec::with_capacity(entry.layers.len());
        for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
            let file = contents
                .resolve(&clean_path(Path::new(path))?)
                .ok_or_else(|| {
                    archive_error(format!(
                        "archive is missing layer {path} named by manifest.json"
                    ))
                })?;
            let digest = file.digest.to_string();
            let media_type = if is_gzip(&file.head) {
                oci::MEDIA_DOCKER_LAYER_GZIP
            } else if is_zstd(&file.head) {
                oci::MEDIA_OCI_LAYER_ZSTD
            } else if file.head.starts_with(b"BZh")
                || file.head.starts_with(&[0xfd, b'7', b'z', b'X'])
            {
                return Err(archive_error(format!(
                    "layer {path} is bzip2- or xz-compressed, which berth does not unpack"
                )));
            } else {
                // An uncompressed tar is its own diff.
                if *diff_id != digest {
                    return Err(ImageError::DiffIdMismatch {
                        digest,
                        expected: diff_id.clone(),
                        actual: file.digest.to_string(),
                    });
                }
                MEDIA_DOCKER_LAYER
            };
            held.insert(digest.clone());
            layers.push(descriptor(media_type, digest, file.size));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_DOCKER_MANIFEST.to_string(),
            config: descriptor(oci::MEDIA_DOCKER_CONFIG, config_digest.clone(), config.size),
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::Internal(format!("encode a manifest: {e}")))?;
        let digest = Digest::of(&bytes).to_string();
        self.store_bytes(&digest, &bytes)?;
        held.insert(config_digest.clone());
        held.insert(digest.clone());
        Ok(Found {
            target: descriptor(
                oci::MEDIA_DOCKER_MANIFEST,
                digest.clone(),
                bytes.len() as u64,
            ),
            names,
            manifests: vec![(digest, config_digest)],
        })
    }

    /// `hold_content` for many blobs in one transaction.
    fn hold_all(
        &self,
        ns: &str,
        lease: &str,
        digests: &BTreeSet<String>,
    ) -> Result<(), ImageError> {
        let tx = self.meta.write()?;
        tx.ensure_namespace(ns)?;
        let t = now();
        for digest in digests {
            if !tx.exists(Table::Content, ns, digest)? {
                let record = ContentRecord {
                    labels: Labels::new(),
                    created: t,
                };
                tx.put(Table::Content, ns, digest, &record)?;
            }
            tx.lease_add(ns, lease, ("content".to_string(), digest.clone()))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The manifest of `target` for `platform`: the target itself, or the
    /// one its index lists for the platform.
    fn platform_manifest(
        &self,
        name: &str,
        target: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, ImageError> {
        let bytes = self.read_document("manifest", &target.digest)?;
        match document_kind(&target.media_type, &bytes) {
            Kind::Index => select_manifest(name, &parse_index(&target.digest, &bytes)?, platform),
            Kind::Manifest => Ok(target.clone()),
            _ => Err(ImageError::BadDocument {
                what: "manifest",
                digest: target.digest.clone(),
                reason: format!(
                    "media type {:?} is neither an image manifest nor an index",
                    target.media_type
                ),
            }),
        }
    }

    /// Writes the named images as an archive to `writer`.
    pub fn export(
        &self,
        ns: &str,
        names: &[String],
        format: ArchiveFormat,
        platform: Option<Platform>,
        writer: impl Write,
    ) -> Result<(), ImageError> {
        if names.is_empty() {
            return Err(archive_error("export: no image named"));
        }
        let mut index_entries = Vec::new();
        let mut docker: Vec<DockerEntry> = Vec::new();
        let mut docker_at: HashMap<String, usize> = HashMap::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut exported = HashSet::new();
        for name in names {
            let record = self.get(ns, name)?;
            if !exported.insert(record.name.clone()) {
                continue;
            }
            let (repository, tag, _) = split_name(&record.name);
            let target = match (format, &platform) {
                (ArchiveFormat::Oci, None) => record.target.clone(),
                (ArchiveFormat::Oci, Some(p)) => {
                    self.platform_manifest(&record.name, &record.target, p)?
                }
                (ArchiveFormat::Docker, p) => self.platform_manifest(
                    &record.name,
                    &record.target,
                    p.as_ref().unwrap_or(&self.platform),
                )?,
            };
            if let Some(m) = self.collect_blobs(&target, "the image", &mut blobs, 0)? {
                return Err(archive_error(format!(
                    "cannot export {}: blob {} named by {} is not in the content store",
                    record.name, m.blob, m.named_by
                )));
            }
            let mut entry = target.clone();
            entry
                .annotations
                .insert(ANNOTATION_IMAGE_NAME.to_string(), record.name.clone());
            if let Some(tag) = tag {
                entry
                    .annotations
                    .insert(oci::ANNOTATION_REF_NAME.to_string(), tag.to_string());
            }
            index_entries.push(entry);

            if format == ArchiveFormat::Docker {
                let at = match docker_at.get(&target.digest) {
                    Some(at) => *at,
                    None => {
                        let manifest = parse_manifest(
                            &target.digest,
                            &self.read_document("manifest", &target.digest)?,
                        )?;
                        let blob = |d: &str| format!("blobs/sha256/{}", hex_of(d));
                        docker.push(DockerEntry {
                            config: blob(&manifest.config.digest),
                            repo_tags: None,
                            layers: manifest.layers.iter().map(|l| blob(&l.digest)).collect(),
                        });
                        docker_at.insert(target.digest.clone(), docker.len() - 1);
                        docker.len() - 1
                    }
                };
                let digest_only = tag.is_none() && record.name.contains('@');
                if !digest_only {
                    let repository = familiar(repository).to_string();
                    let tag = tag.unwrap_or("latest").to_string();
                    let tags = docker[at].repo_tags.get_or_insert_with(Vec::new);
                    let repo_tag = format!("{repository}:{tag}");
                    if !tags.contains(&repo_tag) {
                        tags.push(repo_tag);
                    }
                    let config = hex_of(&docker[at].config).to_string();
                    repositories
                        .entry(repository)
                        .or_default()
                        .insert(tag, config);
                }
            }
        }

        let index = Index {
            schema_version: 2,
            media_type: oci::MEDIA_OCI_INDEX.to_string(),
            manifests: index_entries,
            annotations: BTreeMap::new(),
        };
        let mut out = tar::Builder::new(BufWriter::with_capacity(1 << 16, writer));
        let written = (|| -> io::Result<()> {
            append_file(&mut out, "oci-layout", OCI_LAYOUT)?;
            append_file(&mut out, "index.json", &to_json(&index)?)?;
            if format == ArchiveFormat::Docker {
                append_file(&mut out, "manifest.json", &to_json(&docker)?)?;
                append_file(&mut out, "repositories", &to_json(&repositories)?)?;
            }
            append_dir(&mut out, "blobs")?;
            append_dir(&mut out, "blobs/sha256")?;
            for (digest, size) in &blobs {
                let file = self
                    .content
                    .open_blob(digest, 0)
                    .map_err(io::Error::other)?;
                let mut header = header(tar::EntryType::Regular, *size, 0o644);
                out.append_data(
                    &mut header,
                    format!("blobs/sha256/{}", digest.hex()),
                    Exact {
                        inner: file,
                        left: *size,
                        digest: digest.to_string(),
                    },
                )?;
            }
            out.into_inner()?.flush()
        })();
        written.map_err(|e| archive_error(format!("write the archive: {e}")))?;
        tracing::info!(
            namespace = ns,
            images = names.len(),
            blobs = blobs.len(),
            "exported"
        );
        Ok(())
    }

    /// Adds `desc` and the blobs it reaches to `blobs`. From an index, the
    /// manifests the store has whole; Some when a needed blob is missing.
    fn collect_blobs(
        &self,
        desc: &Descriptor,
        named_by: &str,
        blobs: &mut BTreeMap<Digest, u64>,
        depth: usize,
    ) -> Result<Option<Missing>, ImageError> {
        let missing = |d: &Descriptor| Missing {
            blob: d.digest.clone(),
            named_by: named_by.to_string(),
        };
        let digest: Digest = desc.digest.parse()?;
        let bytes = match self.read_document("manifest", &desc.digest) {
            Ok(b) => b,
            Err(ImageError::Content(ContentError::NotFound(_))) => return Ok(Some(missing(desc))),
            Err(e) => return Err(e),
        };
        blobs.insert(digest, bytes.len() as u64);
        match document_kind(&desc.media_type, &bytes) {
            Kind::Index if depth < MAX_DEPTH => {
                let index = parse_index(&desc.digest, &bytes)?;
                let named_by = format!("index {}", desc.digest);
                let mut complete = 0;
                for child in &index.manifests {
                    let mut more = BTreeMap::new();
                    match self.collect_blobs(child, &named_by, &mut more, depth + 1)? {
                        None => {
                            blobs.extend(more);
                            complete += 1;
                        }
                        // A pull keeps one platform: export what is whole.
                        Some(m) => {
                            tracing::debug!(blob = %m.blob, named_by = %m.named_by, "leave out of export")
                        }
                    }
                }
                if complete == 0 {
                    return Err(archive_error(format!(
                        "no manifest of index {} is in the content store with all its blobs",
                        desc.digest
                    )));
                }
                Ok(None)
            }
            Kind::Manifest => {
                let manifest = parse_manifest(&desc.digest, &bytes)?;
                let named_by = format!("manifest {}", desc.digest);
                for (i, d) in std::iter::once(&manifest.config)
                    .chain(&manifest.layers)
                    .enumerate()
                {
                    let digest: Digest = d.digest.parse()?;
                    match self.content.info(&digest) {
                        Ok(info) => {
                            blobs.insert(digest, info.size);
                        }
                        // Foreign layers are fetched from their URLs.
                        Err(ContentError::NotFound(_)) if i > 0 && !d.urls.is_empty() => {}
                        Err(ContentError::NotFound(_)) => {
                            return Ok(Some(Missing {
                                blob: d.digest.clone(),
                                named_by,
                            }))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(None)
            }
            _ => Err(ImageError::BadDocument {
                what: "manifest",
                digest: desc.digest.clone(),
                reason: format!(
                    "media type {:?} is neither an image manifest nor an index (or nests too deep)",
                    desc.media_type
                ),
            }),
        }
    }
}

fn write_entry(
    writer: &mut Writer,
    entry: &mut impl Read,
    path: &str,
    size: u64,
    expected: Option<&Digest>,
) -> Result<(Digest, Vec<u8>), ImageError> {
    let (digest, head) = stream_entry(entry, path, size, |chunk| Ok(writer.write(chunk)?))?;
    if let Some(d) = expected {
        check_blob_path(path, d, &digest)?;
    }
    Ok((digest, head))
}

/// The `mediaType` a document gives itself.
fn own_media_type(bytes: &[u8]) -> Option<&'static str> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    [
        oci::MEDIA_OCI_INDEX,
        oci::MEDIA_OCI_MANIFEST,
        oci::MEDIA_DOCKER_LIST,
        oci::MEDIA_DOCKER_MANIFEST,
    ]
    .into_iter()
    .find(|m| *m == probe.media_type)
}

/// The hex of a digest or of a `blobs/sha256/<hex>` path.
fn hex_of(s: &str) -> &str {
    s.rsplit([':', '/']).next().unwrap_or(s)
}

fn to_json(value: &impl Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_file<W: Write>(out: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
    out.append_data(&mut h, path, bytes)
}

fn append_dir<W: Write>(out: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    out.append_data(&mut h, path, io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ContentStore;
    use crate::metadata::Metadata;
    use crate::snapshots::Snapshotter;

    const NAME: &str = "example.com/test/small:v1";

    fn temp_images() -> (tempfile::TempDir, Images) {
        let dir = tempfile::tempdir().unwrap();
        let images = Images {
            content: Arc::new(ContentStore::open(&dir.path().join("content")).unwrap()),
            meta: Arc::new(Metadata::open(&dir.path().join("meta.redb")).unwrap()),
            snapshots: Arc::new(Snapshotter::open(&dir.path().join("snapshots")).unwrap()),
            registry: crate::registry::Client::new(Default::default()).unwrap(),
            gc_lock: Arc::new(tokio::sync::RwLock::new(())),
            platform: Platform::host(),
        };
        (dir, images)
    }

    /// A layer tar holding `files`.
    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn sha(data: &[u8]) -> String {
        Digest::of(data).to_string()
    }

    fn config_json(platform: &Platform, diff_ids: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    /// Stores a blob and lets `ns` hold it.
    fn put(images: &Images, ns: &str, data: &[u8]) -> String {
        let digest = sha(data);
        images.store_bytes(&digest, data).unwrap();
        images.hold_content(ns, None, &digest).unwrap();
        digest
    }

    /// A one-layer image (gzip layer, OCI manifest) for `platform`, stored
    /// in `ns`; returns the manifest's descriptor.
    fn make_manifest(images: &Images, ns: &str, platform: &Platform, text: &[u8]) -> Descriptor {
        let tar = layer_tar(&[("hello.txt", text)]);
        let gz = gzip(&tar);
        let layer = put(images, ns, &gz);
        let config = config_json(platform, &[sha(&tar)]);
        let config_digest = put(images, ns, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": oci::MEDIA_OCI_LAYER_GZIP, "digest": layer, "size": gz.len()}],
        }))
        .unwrap();
        let digest = put(images, ns, &manifest);
        descriptor(oci::MEDIA_OCI_MANIFEST, digest, manifest.len() as u64)
    }

    fn make_image(images: &Images, ns: &str, name: &str) -> Descriptor {
        let desc = make_manifest(images, ns, &Platform::host(), b"hello from berth\n");
        images.save_image(ns, name, desc.clone(), None).unwrap();
        desc
    }

    fn export(images: &Images, ns: &str, names: &[&str], format: ArchiveFormat) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut out = Vec::new();
        images.export(ns, &names, format, None, &mut out).unwrap();
        out
    }

    /// path → bytes of every file in a tar, and the order of all entries.
    fn read_tar(bytes: &[u8]) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
        let mut files = BTreeMap::new();
        let mut order = Vec::new();
        let mut a = tar::Archive::new(bytes);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            assert_eq!(e.header().mtime().unwrap(), 0, "{path}");
            assert_eq!(e.header().uid().unwrap(), 0, "{path}");
            order.push(path.clone());
            if e.header().entry_type().is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                files.insert(path, data);
            }
        }
        (files, order)
    }

    /// A tar of `files` in order, written as given (no path checks).
    fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            let name = &mut h.as_gnu_mut().unwrap().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn no_unpack() -> ImportOptions {
        ImportOptions {
            unpack: false,
            ..Default::default()
        }
    }

    fn held(images: &Images, ns: &str, digest: &str) -> bool {
        let rx = images.meta.read().unwrap();
        rx.exists(Table::Content, ns, digest).unwrap()
    }

    fn leases(images: &Images, ns: &str) -> usize {
        let rx = images.meta.read().unwrap();
        rx.list::<serde_json::Value>(Table::Leases, ns)
            .unwrap()
            .len()
    }

    fn blobs_of(images: &Images, manifest: &str) -> Vec<String> {
        let m = parse_manifest(
            manifest,
            &images.read_document("manifest", manifest).unwrap(),
        )
        .unwrap();
        let mut out = vec![m.config.digest];
        out.extend(m.layers.into_iter().map(|l| l.digest));
        out
    }

    #[test]
    fn oci_export_then_import_keeps_digests() {
        let (_d, images) = temp_images();
        let target = make_image(&images, "default", NAME);
        let archive = export(&images, "default", &[NAME], ArchiveFormat::Oci);
        assert_eq!(
            archive,
            export(&images, "default", &[NAME], ArchiveFormat::Oci),
            "the same image makes the same bytes"
        );

        let (files, order) = read_tar(&archive);
        let mut blobs: Vec<String> = blobs_of(&images, &target.digest);
        blobs.push(target.digest.clone());
        blobs.sort();
        let mut want = vec![
            "oci-layout".to_string(),
            "index.json".to_string(),
            "blobs".to_string(),
            "blobs/sha256".to_string(),
        ];
        want.extend(blobs.iter().map(|d| format!("blobs/sha256/{}", hex_of(d))));
        assert_eq!(order, want);
        assert_eq!(files["oci-layout"], OCI_LAYOUT);
        let index: Index = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index.manifests.len(), 1);
        let entry = &index.manifests[0];
        assert_eq!(entry.digest, target.digest);
        assert_eq!(entry.annotations[ANNOTATION_IMAGE_NAME], NAME);
        assert_eq!(entry.annotations[oci::ANNOTATION_REF_NAME], "v1");
        for d in &blobs {
            let data = &files[&format!("blobs/sha256/{}", hex_of(d))];
            assert_eq!(&sha(data), d);
        }

        let records = images
            .import("other", archive.as_slice(), no_unpack())
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].name, NAME);
        assert_eq!(records[0].target.digest, target.digest);
        assert_eq!(records[0].target.media_type, oci::MEDIA_OCI_MANIFEST);
        assert!(records[0].target.annotations.is_empty());
        assert_eq!(
            images.get("other", NAME).unwrap().target.digest,
            target.digest
        );
        for d in &blobs {
            assert!(held(&images, "other", d), "{d} not held by the namespace");
        }
        assert_eq!(
            leases(&images, "other"),
            0,
            "the import's lease outlived it"
        );

        // A gzip-compressed archive, into a store that lacks the blobs.
        let (_d2, fresh) = temp_images();
        let records = fresh
            .import("default", gzip(&archive).as_slice(), no_unpack())
            .unwrap();
        assert_eq!(records[0].target.digest, target.digest);
        for d in &blobs {
            assert_eq!(
                fresh.read_document("blob", d).unwrap(),
                images.read_document("blob", d).unwrap()
            );
        }
    }

    #[test]
    fn docker_export_then_import_names_by_repo_tags() {
        let (_d, images) = temp_images();
        let target = make_image(&images, "default", NAME);
        images
            .save_image(
                "default",
                "docker.io/library/busybox:latest",
                target.clone(),
                None,
            )
            .unwrap();
        let archive = export(
            &images,
            "default",
            &[NAME, "docker.io/library/busybox:latest"],
            ArchiveFormat::Docker,
        );
        let (files, _) = read_tar(&archive);
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let layers = blobs_of(&images, &target.digest);
        assert_eq!(
            manifest,
            serde_json::json!([{
                "Config": format!("blobs/sha256/{}", hex_of(&layers[0])),
                "RepoTags": [NAME, "busybox:latest"],
                "Layers": [format!("blobs/sha256/{}", hex_of(&layers[1]))],
            }])
        );
        let repositories: serde_json::Value =
            serde_json::from_slice(&files["repositories"]).unwrap();
        assert_eq!(
            repositories,
            serde_json::json!({
                "busybox": {"latest": hex_of(&layers[0])},
                "example.com/test/small": {"v1": hex_of(&layers[0])},
            })
        );
        assert!(files.contains_key("index.json") && files.contains_key("oci-layout"));

        // As Docker 25+ writes it: the OCI half names the images.
        let records = images
            .import("other", archive.as_slice(), no_unpack())
            .unwrap();
        let names: BTreeSet<_> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from([NAME, "docker.io/library/busybox:latest"])
        );
        assert!(records.iter().all(|r| r.target.digest == target.digest));

        // As older docker and skopeo write it: manifest.json alone.
        let stripped: Vec<(&str, &[u8])> = files
            .iter()
            .filter(|(p, _)| *p != "index.json" && *p != "oci-layout")
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        let records = images
            .import("third", raw_tar(&stripped).as_slice(), no_unpack())
            .unwrap();
        let names: BTreeSet<_> = records.iter().map(|r| r.name.clone()).collect();
        assert_eq!(
            names,
            BTreeSet::from([image_name(NAME), image_name("busybox:latest")])
        );
        let built = &records[0].target;
        assert_eq!(built.media_type, oci::MEDIA_DOCKER_MANIFEST);
        let m = parse_manifest(
            &built.digest,
            &images.read_document("m", &built.digest).unwrap(),
        )
        .unwrap();
        assert_eq!(m.config.digest, layers[0]);
        assert_eq!(m.config.media_type, oci::MEDIA_DOCKER_CONFIG);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].digest, layers[1]);
        assert_eq!(m.layers[0].media_type, oci::MEDIA_DOCKER_LAYER_GZIP);
        for d in layers.iter().chain([&built.digest]) {
            assert!(held(&images, "third", d), "{d}");
        }
    }

    /// A `docker save` as Docker before 25 writes it: `<id>/layer.tar`
    /// (the second image's a symlink to the first's), `<hex>.json` configs.
    fn legacy_save(diff_id: Option<String>) -> (Vec<u8>, Vec<u8>) {
        let tar = layer_tar(&[("etc/motd", b"legacy\n")]);
        let diff = diff_id.unwrap_or_else(|| sha(&tar));
        let config = config_json(&Platform::host(), std::slice::from_ref(&diff));
        let config_name = format!("{}.json", hex_of(&sha(&config)));
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": config_name, "RepoTags": ["legacy:1", "legacy:latest"], "Layers": ["aaa/layer.tar"]},
            {"Config": config_name, "RepoTags": ["other:1"], "Layers": ["bbb/layer.tar"]},
            {"Config": config_name, "RepoTags": null, "Layers": ["aaa/layer.tar"]},
        ]))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir.clone(), "aaa/", io::empty())
            .unwrap();
        for (path, data) in [
            ("aaa/VERSION", b"1.0".as_slice()),
            ("aaa/json", b"{}".as_slice()),
            ("aaa/layer.tar", tar.as_slice()),
            (config_name.as_str(), config.as_slice()),
            ("repositories", br#"{"legacy":{"1":"aaa"}}"#.as_slice()),
            ("manifest.json", manifest.as_slice()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.append_data(&mut dir, "bbb/", io::empty()).unwrap();
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        b.append_link(&mut link, "bbb/layer.tar", "../aaa/layer.tar")
            .unwrap();
        (b.into_inner().unwrap(), tar)
    }

    #[test]
    fn legacy_docker_save_imports() {
        let (_d, images) = temp_images();
        let (archive, tar) = legacy_save(None);
        let records = images
            .import("default", gzip(&archive).as_slice(), no_unpack())
            .unwrap();
        let names: Vec<_> = records.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], image_name("legacy:1"));
        assert_eq!(names[1], image_name("legacy:latest"));
        // Through the symlink, the same layer: the same manifest. The
        // untagged entry of the same image adds no name.
        assert_eq!(names[2], image_name("other:1"));
        assert_eq!(records[0].target, records[2].target);
        let target = &records[0].target;
        let m = parse_manifest(
            &target.digest,
            &images.read_document("m", &target.digest).unwrap(),
        )
        .unwrap();
        assert_eq!(m.media_type, oci::MEDIA_DOCKER_MANIFEST);
        assert_eq!(m.layers[0].media_type, MEDIA_DOCKER_LAYER);
        assert_eq!(m.layers[0].digest, sha(&tar));
        assert_eq!(m.layers[0].size, tar.len() as i64);
        assert!(held(&images, "default", &m.layers[0].digest));
        assert!(held(&images, "default", &m.config.digest));
        // The v1 metadata files are not kept.
        assert!(images.content.info(&Digest::of(b"1.0")).is_err());
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        let (_d, images) = temp_images();
        let (archive, _) = legacy_save(Some(sha(b"something else")));
        let err = images
            .import("default", archive.as_slice(), no_unpack())
            .unwrap_err();
        assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
        assert!(images.list("default").unwrap().is_empty());
        assert_eq!(leases(&images, "default"), 0);
    }

    #[test]
    fn bad_archives_are_refused_and_name_nothing() {
        let (_d, images) = temp_images();
        make_image(&images, "source", NAME);
        let good = export(&images, "source", &[NAME], ArchiveFormat::Oci);
        let (files, _) = read_tar(&good);
        let index = files["index.json"].clone();

        let wrong = format!("blobs/sha256/{}", "0".repeat(64));
        let config = config_json(&Platform::host(), &[sha(b"layer")]);
        let missing_layer = serde_json::to_vec(&serde_json::json!([{
            "Config": "cfg.json", "RepoTags": ["x:1"], "Layers": ["nope/layer.tar"],
        }]))
        .unwrap();
        let absent = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": oci::MEDIA_OCI_MANIFEST,
                           "digest": format!("sha256:{}", "1".repeat(64)), "size": 3}],
        }))
        .unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "parent dir",
                raw_tar(&[("../x", b"x"), ("index.json", &index)]),
                "\"..\" are not allowed",
            ),
            (
                "absolute",
                raw_tar(&[("/etc/x", b"x")]),
                "\"..\" are not allowed",
            ),
            ("blob mismatch", raw_tar(&[(&wrong, b"not that")]), &wrong),
            ("cut in half", good[..good.len() / 2].to_vec(), "truncated"),
            ("cut in a header", good[..1024 + 100].to_vec(), "truncated"),
            (
                "no end blocks",
                good[..good.len() - 1024].to_vec(),
                "truncated",
            ),
            (
                "missing layer",
                raw_tar(&[("cfg.json", &config), ("manifest.json", &missing_layer)]),
                "archive is missing layer nope/layer.tar named by manifest.json",
            ),
            (
                "missing config",
                raw_tar(&[("manifest.json", &missing_layer)]),
                "archive is missing config cfg.json named by manifest.json",
            ),
            (
                "missing blob",
                raw_tar(&[("index.json", &absent)]),
                "archive is missing blob sha256:111",
            ),
            (
                "not a tar",
                b"this is not an archive at all".repeat(40),
                "not a tar archive (plain, gzip or zstd): its first block is not a tar header",
            ),
            (
                "not a gzip",
                vec![0x1f, 0x8b, 0, 1, 2, 3],
                "not a tar archive",
            ),
            ("empty", Vec::new(), "empty"),
            (
                "no documents",
                raw_tar(&[("hello", b"hi")]),
                "neither index.json",
            ),
            (
                "bad json",
                raw_tar(&[("index.json", b"{not json")]),
                "index.json",
            ),
            (
                "no images",
                raw_tar(&[("index.json", br#"{"schemaVersion":2,"manifests":[]}"#)]),
                "no images",
            ),
        ];
        for (what, archive, phrase) in cases {
            let err = images
                .import("default", archive.as_slice(), no_unpack())
                .expect_err(what)
                .to_string();
            assert!(
                err.contains(phrase),
                "{what}: {err:?} does not say {phrase:?}"
            );
            assert!(images.list("default").unwrap().is_empty(), "{what}");
            assert_eq!(leases(&images, "default"), 0, "{what}");
        }
        // Nothing of the mismatched blob became content.
        assert!(images.content.info(&Digest::of(b"not that")).is_err());
        assert!(
            images.content.statuses().unwrap().is_empty(),
            "ingests left"
        );
    }

    #[test]
    fn names_follow_the_documented_rules() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let with = |pairs: &[(&str, &str)]| {
            let mut d = descriptor(oci::MEDIA_OCI_MANIFEST, digest.clone(), 1);
            for (k, v) in pairs {
                d.annotations.insert(k.to_string(), v.to_string());
            }
            d
        };
        let full = with(&[
            (ANNOTATION_IMAGE_NAME, "r.io/a/b:c"),
            (oci::ANNOTATION_REF_NAME, "c"),
        ]);
        assert_eq!(
            annotated_name(&full, Some("x")),
            Some(image_name("r.io/a/b:c"))
        );
        let reference = with(&[(oci::ANNOTATION_REF_NAME, "r.io/a/b:c")]);
        assert_eq!(
            annotated_name(&reference, None),
            Some(image_name("r.io/a/b:c"))
        );
        let tag = with(&[(oci::ANNOTATION_REF_NAME, "v2")]);
        assert_eq!(
            annotated_name(&tag, Some("localhost:5000/me/app:old")),
            Some(image_name("localhost:5000/me/app:v2"))
        );
        assert_eq!(
            annotated_name(&tag, None),
            Some(image_name(
                "import-ababababab:v2"
                    .replace("ababababab", "abababababab")
                    .as_str()
            ))
        );
        assert_eq!(annotated_name(&with(&[]), Some("x")), None);
        assert_eq!(
            unnamed_name(&digest, Some("me/app:1"), true),
            image_name("me/app:1")
        );
        assert_eq!(
            unnamed_name(&digest, Some("me/app:1"), false),
            image_name(&format!("me/app@{digest}"))
        );
        assert_eq!(
            unnamed_name(&digest, None, true),
            image_name(&format!("import-abababababab@{digest}"))
        );
        assert_eq!(familiar("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar("docker.io/user/x"), "user/x");
        assert_eq!(familiar("quay.io/a/b"), "quay.io/a/b");
        assert_eq!(
            split_name("localhost:5000/a/b:t@sha256:x"),
            ("localhost:5000/a/b", Some("t"), Some("sha256:x"))
        );
        assert_eq!(
            split_name("localhost:5000/a"),
            ("localhost:5000/a", None, None)
        );
    }

    #[test]
    fn an_unnamed_image_takes_the_given_name() {
        let (_d, images) = temp_images();
        make_image(&images, "source", NAME);
        let archive = export(&images, "source", &[NAME], ArchiveFormat::Oci);
        let (files, order) = read_tar(&archive);
        let mut index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        index["manifests"][0]["annotations"] = serde_json::json!({});
        let index = serde_json::to_vec(&index).unwrap();
        let entries: Vec<(&str, &[u8])> = order
            .iter()
            .filter(|p| files.contains_key(*p))
            .map(|p| {
                let data = if p == "index.json" { &index } else { &files[p] };
                (p.as_str(), data.as_slice())
            })
            .collect();
        let opts = ImportOptions {
            name: Some("mine:2".into()),
            ..no_unpack()
        };
        let records = images
            .import("default", raw_tar(&entries).as_slice(), opts)
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].name, image_name("mine:2"));
    }

    #[test]
    fn an_index_exports_the_platforms_the_store_has() {
        let (_d, images) = temp_images();
        let host = make_manifest(&images, "default", &Platform::host(), b"host\n");
        let other_platform = Platform::parse("linux/s390x").unwrap();
        let mut host_entry = host.clone();
        host_entry.platform = Some(Platform::host());
        // A manifest the store lacks, as after a pull of one platform.
        let mut other = descriptor(
            oci::MEDIA_OCI_MANIFEST,
            format!("sha256:{}", "2".repeat(64)),
            10,
        );
        other.platform = Some(other_platform.clone());
        let index = serde_json::to_vec(&Index {
            schema_version: 2,
            media_type: oci::MEDIA_OCI_INDEX.to_string(),
            manifests: vec![other, host_entry],
            annotations: BTreeMap::new(),
        })
        .unwrap();
        let index_digest = put(&images, "default", &index);
        let target = descriptor(
            oci::MEDIA_OCI_INDEX,
            index_digest.clone(),
            index.len() as u64,
        );
        images.save_image("default", NAME, target, None).unwrap();

        let archive = export(&images, "default", &[NAME], ArchiveFormat::Oci);
        let (files, _) = read_tar(&archive);
        let listed: Index = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(listed.manifests[0].digest, index_digest);
        assert_eq!(
            files
                .keys()
                .filter(|p| p.starts_with("blobs/sha256/"))
                .count(),
            4
        );
        let records = images
            .import(
                "other",
                archive.as_slice(),
                ImportOptions {
                    platform: Some(other_platform.clone()),
                    ..no_unpack()
                },
            )
            .unwrap();
        assert_eq!(records[0].target.digest, index_digest);
        assert_eq!(records[0].target.media_type, oci::MEDIA_OCI_INDEX);

        // With a platform, the archive names that platform's manifest.
        let mut out = Vec::new();
        images
            .export(
                "default",
                &[NAME.to_string()],
                ArchiveFormat::Oci,
                Some(Platform::host()),
                &mut out,
            )
            .unwrap();
        let (files, _) = read_tar(&out);
        let listed: Index = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(listed.manifests[0].digest, host.digest);
        assert!(!files.contains_key(&format!("blobs/sha256/{}", hex_of(&index_digest))));
        let err = images
            .export(
                "default",
                &[NAME.to_string()],
                ArchiveFormat::Oci,
                Some(other_platform),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("is not in the content store"),
            "{err}"
        );

        // Docker archives hold the host's manifest.
        let archive = export(&images, "default", &[NAME], ArchiveFormat::Docker);
        let (files, _) = read_tar(&archive);
        let entries: Vec<DockerEntry> = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(
            entries[0].config,
            format!(
                "blobs/sha256/{}",
                hex_of(&blobs_of(&images, &host.digest)[0])
            )
        );
    }

    #[test]
    fn exporting_an_unknown_name_is_not_found() {
        let (_d, images) = temp_images();
        make_image(&images, "default", NAME);
        let mut out = Vec::new();
        let err = images
            .export(
                "default",
                &[NAME.to_string(), "nope:1".to_string()],
                ArchiveFormat::Oci,
                None,
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(err, ImageError::NotFound(_)), "{err}");
        assert!(out.is_empty(), "wrote before knowing every image");
    }

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
