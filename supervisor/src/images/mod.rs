//! Images: names pointing at a manifest or index in the content store, and
//! the flows that fill the store: pull and push against registries, import
//! and export of archives.

mod layer;
pub mod progress;
pub mod pull;
pub mod push;
pub mod transfer;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::RwLock;

use crate::archive::ArchiveError;
use crate::content::{ContentError, ContentStore, Digest};
use crate::metadata::{
    now, ContentRecord, ImageRecord, Labels, LeaseRecord, Metadata, MetadataError, Reader, Table,
    WriteTx,
};
use crate::oci::{self, Descriptor, Index, Kind, Manifest, Platform};
use crate::reference::{Reference, ReferenceError};
use crate::registry::{Client, RegistryError};
use crate::snapshots::{SnapshotError, Snapshotter};

pub use progress::{Progress, State, Tracker};

/// The most a manifest, index or config may weigh: they are read whole.
pub const MAX_DOCUMENT: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid reference: {0}")]
    Reference(#[from] ReferenceError),
    #[error("invalid platform {0:?}: want os/arch[/variant]")]
    InvalidPlatform(String),
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("unpack layer {digest}: {source}")]
    Unpack {
        digest: String,
        source: ArchiveError,
    },
    #[error("layer {digest} unpacks to {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("{what} {digest}: {reason}")]
    BadDocument {
        what: &'static str,
        digest: String,
        reason: String,
    },
    #[error("{what} {digest} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        what: &'static str,
        digest: String,
        size: u64,
        max: u64,
    },
    #[error("layer {digest}: unsupported media type {media_type:?}")]
    UnsupportedLayer { digest: String, media_type: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Archive(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The image half of the supervisor: what the Images, Content, Snapshots and
/// Leases services act on.
pub struct Images {
    pub content: Arc<ContentStore>,
    pub meta: Arc<Metadata>,
    pub snapshots: Arc<Snapshotter>,
    pub registry: Client,
    /// Held shared by everything that writes blobs, snapshots or records
    /// that are not yet reachable from an image; held exclusively by the
    /// garbage collector, so it never sweeps work in progress.
    pub gc_lock: Arc<RwLock<()>>,
    pub platform: Platform,
}

/// The name an image is stored under: the normalised reference when the
/// name parses as one, else the name as given.
pub fn image_name(name: &str) -> String {
    match Reference::parse(name) {
        Ok(r) => r.to_string(),
        Err(_) => name.to_string(),
    }
}

pub fn parse_platform(platform: &str) -> Result<Option<Platform>, ImageError> {
    if platform.is_empty() {
        return Ok(None);
    }
    Platform::parse(platform)
        .map(Some)
        .ok_or_else(|| ImageError::InvalidPlatform(platform.to_string()))
}

pub fn parse_manifest(digest: &str, bytes: &[u8]) -> Result<Manifest, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::BadDocument {
        what: "manifest",
        digest: digest.to_string(),
        reason: e.to_string(),
    })
}

pub fn parse_index(digest: &str, bytes: &[u8]) -> Result<Index, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::BadDocument {
        what: "index",
        digest: digest.to_string(),
        reason: e.to_string(),
    })
}

pub fn parse_config(digest: &str, bytes: &[u8]) -> Result<oci::ImageConfig, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::BadDocument {
        what: "config",
        digest: digest.to_string(),
        reason: e.to_string(),
    })
}

/// What a manifest-like document is, from its media type or, when a
/// registry or archive leaves that out, from its shape.
pub fn document_kind(media_type: &str, bytes: &[u8]) -> Kind {
    match Kind::of(media_type) {
        Kind::Other => {
            #[derive(serde::Deserialize)]
            struct Probe {
                #[serde(rename = "mediaType", default)]
                media_type: String,
                manifests: Option<serde_json::Value>,
                config: Option<serde_json::Value>,
            }
            match serde_json::from_slice::<Probe>(bytes) {
                Ok(p) if !p.media_type.is_empty() && Kind::of(&p.media_type) != Kind::Other => {
                    Kind::of(&p.media_type)
                }
                Ok(p) if p.manifests.is_some() => Kind::Index,
                Ok(p) if p.config.is_some() => Kind::Manifest,
                _ => Kind::Other,
            }
        }
        kind => kind,
    }
}

/// Picks the manifest for `platform` from an index.
pub fn select_manifest(
    reference: &str,
    index: &Index,
    platform: &Platform,
) -> Result<Descriptor, ImageError> {
    let found = index.manifests.iter().find(|d| {
        Kind::of(&d.media_type) != Kind::Index
            && d.platform.as_ref().is_some_and(|p| platform.matches(p))
    });
    match found {
        Some(d) => Ok(d.clone()),
        None => Err(ImageError::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: platform.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A name for a lease or ingest that no other will have.
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}-{:x}-{}",
        now(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Images {
    /// Reads a small blob (manifest, index or config) whole.
    pub fn read_document(&self, what: &'static str, digest: &str) -> Result<Vec<u8>, ImageError> {
        let d: Digest = digest.parse()?;
        let info = self.content.info(&d)?;
        if info.size > MAX_DOCUMENT {
            return Err(ImageError::TooLarge {
                what,
                digest: digest.to_string(),
                size: info.size,
                max: MAX_DOCUMENT,
            });
        }
        let mut buf = Vec::with_capacity(info.size as usize);
        let mut file = self.content.open_blob(&d, 0)?;
        file.read_to_end(&mut buf)
            .map_err(|source| ImageError::Io {
                action: "read",
                path: PathBuf::from(digest),
                source,
            })?;
        Ok(buf)
    }

    /// Stores bytes already in memory (checked against `digest`), unless the
    /// store has them.
    pub fn store_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let d: Digest = digest.parse()?;
        if self.content.info(&d).is_ok() {
            return Ok(());
        }
        let mut w = self.content.writer(&unique_id("bytes"))?;
        w.truncate()?;
        w.write(bytes)?;
        match w.commit(Some(bytes.len() as u64), &d) {
            Ok(_) | Err(ContentError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that namespace `ns` holds blob `digest`, and adds it to the
    /// lease, in one transaction.
    pub fn hold_content(
        &self,
        ns: &str,
        lease: Option<&str>,
        digest: &str,
    ) -> Result<(), ImageError> {
        self.hold_contents(ns, lease, &[digest])
    }

    /// [`Self::hold_content`] for several blobs in one transaction (one
    /// disk sync instead of one per blob).
    pub fn hold_contents(
        &self,
        ns: &str,
        lease: Option<&str>,
        digests: &[&str],
    ) -> Result<(), ImageError> {
        let tx = self.meta.write()?;
        tx.ensure_namespace(ns)?;
        for digest in digests {
            if !tx.exists(Table::Content, ns, digest)? {
                let record = ContentRecord {
                    labels: Labels::new(),
                    created: now(),
                };
                tx.put(Table::Content, ns, digest, &record)?;
            }
            if let Some(lease) = lease {
                tx.lease_add(ns, lease, ("content".to_string(), digest.to_string()))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A lease that keeps a transfer's pieces until the image names them,
    /// and lasts a day if the transfer never finishes (so a retry reuses
    /// them).
    pub fn create_transfer_lease(&self, ns: &str) -> Result<String, ImageError> {
        let id = unique_id("transfer");
        let tx = self.meta.write()?;
        tx.ensure_namespace(ns)?;
        let t = now();
        let record = LeaseRecord {
            labels: Labels::from([("berth/transfer".to_string(), "1".to_string())]),
            created: t,
            expires: Some(t + 24 * 3600 * 1_000_000_000),
            resources: Default::default(),
        };
        tx.put(Table::Leases, ns, &id, &record)?;
        tx.commit()?;
        Ok(id)
    }

    /// Deletes a transfer's lease if it kept nothing (the transfer failed
    /// before storing anything worth resuming from).
    pub fn end_lease_if_empty(&self, ns: &str, lease: &str) -> Result<(), ImageError> {
        let tx = self.meta.write()?;
        if let Some(r) = tx.get::<LeaseRecord>(Table::Leases, ns, lease)? {
            if r.resources.is_empty() {
                tx.delete(Table::Leases, ns, lease)?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    pub fn get(&self, ns: &str, name: &str) -> Result<ImageRecord, ImageError> {
        let rx = self.meta.read()?;
        get_image(&rx, ns, name)
    }

    pub fn list(&self, ns: &str) -> Result<Vec<ImageRecord>, ImageError> {
        let rx = self.meta.read()?;
        Ok(rx
            .list::<ImageRecord>(Table::Images, ns)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Gives the image `source` the name `target` (replacing what `target`
    /// named before).
    pub fn tag(&self, ns: &str, source: &str, target: &str) -> Result<ImageRecord, ImageError> {
        let target = Reference::parse(target)?.to_string();
        let tx = self.meta.write()?;
        let src = get_image(&tx, ns, source)?;
        let t = now();
        let created = tx
            .get::<ImageRecord>(Table::Images, ns, &target)?
            .map_or(t, |r| r.created);
        let record = ImageRecord {
            name: target.clone(),
            target: src.target,
            labels: src.labels,
            created,
            updated: t,
        };
        tx.put(Table::Images, ns, &target, &record)?;
        tx.commit()?;
        Ok(record)
    }

    /// Removes an image's name; the record removed. The caller collects
    /// garbage afterwards.
    pub fn delete(&self, ns: &str, name: &str) -> Result<ImageRecord, ImageError> {
        let tx = self.meta.write()?;
        let record = get_image(&tx, ns, name)?;
        tx.delete(Table::Images, ns, &record.name)?;
        tx.commit()?;
        Ok(record)
    }

    /// Bytes of what the image holds for this host's platform: the
    /// manifest, its config and its layers (as far as they are present).
    pub fn size(&self, record: &ImageRecord) -> u64 {
        let mut total = record.target.size.max(0) as u64;
        let mut desc = record.target.clone();
        if Kind::of(&desc.media_type) == Kind::Index {
            let Ok(bytes) = self.read_document("index", &desc.digest) else {
                return total;
            };
            let Ok(index) = parse_index(&desc.digest, &bytes) else {
                return total;
            };
            let Ok(d) = select_manifest(&record.name, &index, &self.platform) else {
                return total;
            };
            total += d.size.max(0) as u64;
            desc = d;
        }
        if let Ok(bytes) = self.read_document("manifest", &desc.digest) {
            if let Ok(m) = parse_manifest(&desc.digest, &bytes) {
                total += m.config.size.max(0) as u64;
                total += m.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>();
            }
        }
        total
    }

    /// Writes the image record and ends the transfer's lease, in one
    /// transaction: from then on the image keeps what the lease kept.
    pub fn save_image(
        &self,
        ns: &str,
        name: &str,
        target: Descriptor,
        lease: Option<&str>,
    ) -> Result<ImageRecord, ImageError> {
        let tx = self.meta.write()?;
        tx.ensure_namespace(ns)?;
        let record = put_image(&tx, ns, name, target)?;
        if let Some(lease) = lease {
            tx.delete(Table::Leases, ns, lease)?;
        }
        tx.commit()?;
        Ok(record)
    }
}

fn put_image(
    tx: &WriteTx,
    ns: &str,
    name: &str,
    target: Descriptor,
) -> Result<ImageRecord, ImageError> {
    let t = now();
    let old = tx.get::<ImageRecord>(Table::Images, ns, name)?;
    let record = ImageRecord {
        name: name.to_string(),
        target,
        labels: old.as_ref().map(|r| r.labels.clone()).unwrap_or_default(),
        created: old.map_or(t, |r| r.created),
        updated: t,
    };
    tx.put(Table::Images, ns, name, &record)?;
    Ok(record)
}

/// Finds an image by its name as stored or as a user types it ("busybox").
pub fn get_image(rx: &impl Reader, ns: &str, name: &str) -> Result<ImageRecord, ImageError> {
    if let Some(r) = rx.get(Table::Images, ns, name)? {
        return Ok(r);
    }
    let normal = image_name(name);
    rx.get(Table::Images, ns, &normal)?
        .ok_or_else(|| ImageError::NotFound(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_kinds_come_from_shape_when_untyped() {
        assert_eq!(document_kind("", br#"{"manifests": []}"#), Kind::Index);
        assert_eq!(
            document_kind("", br#"{"config": {}, "layers": []}"#),
            Kind::Manifest
        );
        assert_eq!(
            document_kind(
                "application/octet-stream",
                br#"{"mediaType": "application/vnd.oci.image.index.v1+json"}"#
            ),
            Kind::Index
        );
        assert_eq!(document_kind("", b"not json"), Kind::Other);
    }

    #[test]
    fn platform_selection_names_what_there_is() {
        let index: Index = serde_json::from_str(
            r#"{"schemaVersion": 2, "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:a", "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:b", "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}}]}"#,
        )
        .unwrap();
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            select_manifest("x", &index, &amd).unwrap().digest,
            "sha256:b"
        );
        let err = select_manifest("x", &index, &Platform::parse("linux/s390x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
    }
}
