//! Import of image archives.
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

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use serde::Deserialize;

use super::naming::{annotated_name, unnamed_name};
use super::tarball::{
    blob_path_digest, check_blob_path, clean_path, is_gzip, is_legacy_metadata, is_zstd,
    link_target, read_up_to, stream_entry, Counting,
};
use super::*;
use crate::content::Writer;
use crate::metadata::validate_namespace;

/// How many links a path may go through in an archive.
const MAX_LINKS: usize = 16;

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

fn bad_file(path: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::BadDocument {
        what: "archive file",
        digest: path.to_string(),
        reason: e.to_string(),
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
