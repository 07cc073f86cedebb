//! Garbage collection by reference.
//!
//! Mark: per namespace, the roots are its images, its unexpired leases, its
//! active snapshots and views, its containers (the content of the image
//! they name, while the name exists, and their snapshot), and content or
//! snapshots labelled `berth/gc.root`. From an image the mark follows index → manifests →
//! config and layers in the content store, and the config's diff ids to
//! the chain of snapshots the layers were unpacked into; from a snapshot,
//! its parents. Sweep: expired leases, then every record not marked, in one
//! transaction; then the files no record names any more: blobs no namespace
//! holds and snapshot directories no snapshot owns (which also clears what
//! a crash left half-written).
//!
//! `collect_now` takes the images' `gc_lock` exclusively, so no pull or
//! write is in the middle of making something reachable; `collect` expects
//! its caller to hold it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::containers::ContainerRecord;
use crate::content::{ContentError, Digest};
use crate::images::{
    document_kind, get_image, parse_config, parse_index, parse_manifest, ImageError, Images,
    MAX_DOCUMENT,
};
use crate::metadata::{
    now, ContentRecord, ImageRecord, LeaseRecord, MetadataError, Reader, SnapshotKind,
    SnapshotRecord, Table,
};
use crate::oci::{chain_ids, Kind};
use crate::snapshots::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The image a container names could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The collection's thread ended without an answer (it panicked).
    #[error("{0}")]
    Stopped(String),
}

/// The label that makes content or a snapshot a root by itself.
pub const ROOT_LABEL: &str = "berth/gc.root";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub leases: usize,
    pub content_records: usize,
    pub blobs: usize,
    pub snapshots: usize,
    pub snapshot_dirs: usize,
}

type Key = (String, String);

/// Collects garbage now, with every writer held off, off the async threads.
pub async fn collect_now(images: &Arc<Images>) -> Result<Stats, GcError> {
    let _gc = Arc::clone(&images.gc_lock).write_owned().await;
    let images = Arc::clone(images);
    let stats = tokio::task::spawn_blocking(move || collect(&images))
        .await
        .map_err(|e| GcError::Stopped(e.to_string()))
        .and_then(|r| r);
    crate::sys::trim_memory();
    stats
}

/// Collects garbage; the caller holds `gc_lock` exclusively.
pub fn collect(images: &Images) -> Result<Stats, GcError> {
    let t = now();
    let mut stats = Stats::default();
    let mut content: HashSet<Key> = HashSet::new();
    let mut snapshots: HashSet<Key> = HashSet::new();
    let mut expired: Vec<Key> = Vec::new();
    {
        let rx = images.meta.read()?;
        let records: Vec<(String, String, SnapshotRecord)> = rx.list_all(Table::Snapshots)?;
        let parents: HashMap<Key, Option<String>> = records
            .iter()
            .map(|(ns, name, r)| ((ns.clone(), name.clone()), r.parent.clone()))
            .collect();
        let mut snapshot_roots: Vec<Key> = records
            .iter()
            .filter(|(_, _, r)| {
                r.kind != SnapshotKind::Committed || r.labels.contains_key(ROOT_LABEL)
            })
            .map(|(ns, name, _)| (ns.clone(), name.clone()))
            .collect();
        let mut content_roots: Vec<(String, String, Option<String>)> = Vec::new();
        for (ns, _, image) in rx.list_all::<ImageRecord>(Table::Images)? {
            content_roots.push((ns, image.target.digest, Some(image.target.media_type)));
        }
        for (ns, id, c) in rx.list_all::<ContainerRecord>(Table::Containers)? {
            snapshot_roots.push((ns.clone(), c.snapshot_key));
            match get_image(&rx, &ns, &c.image) {
                Ok(image) => {
                    content_roots.push((ns, image.target.digest, Some(image.target.media_type)))
                }
                Err(ImageError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns, container = %id, error = %e, "image of a container not read");
                    return Err(e.into());
                }
            }
        }
        for (ns, digest, r) in rx.list_all::<ContentRecord>(Table::Content)? {
            if r.labels.contains_key(ROOT_LABEL) {
                content_roots.push((ns, digest, None));
            }
        }
        for (ns, id, lease) in rx.list_all::<LeaseRecord>(Table::Leases)? {
            if lease.expired(t) {
                expired.push((ns, id));
                continue;
            }
            for (kind, rid) in lease.resources {
                match kind.as_str() {
                    "content" => content_roots.push((ns.clone(), rid, None)),
                    "snapshots" => snapshot_roots.push((ns.clone(), rid)),
                    _ => {}
                }
            }
        }
        // Content, following documents to what they name.
        let mut queue = content_roots;
        // Digests reached without a media type (a lease's, a root label's),
        // whose kind was guessed from their bytes: an image config has a
        // `config` member and reads as a manifest. They are followed again
        // when a document names them with their media type.
        let mut guessed: HashSet<Key> = HashSet::new();
        while let Some((ns, digest, media_type)) = queue.pop() {
            let key = (ns.clone(), digest.clone());
            let first = content.insert(key.clone());
            let known = media_type.is_some();
            let follow_again = known && guessed.remove(&key);
            if !first && !follow_again {
                continue;
            }
            if !known {
                guessed.insert(key);
            }
            let kind = media_type.as_deref().map(Kind::of);
            if matches!(kind, Some(Kind::Layer(_))) {
                continue;
            }
            let Some(bytes) = read_small(images, &digest) else {
                continue;
            };
            let kind = match kind {
                Some(k) if k != Kind::Other => k,
                _ => document_kind(media_type.as_deref().unwrap_or(""), &bytes),
            };
            match kind {
                Kind::Index => {
                    if let Ok(index) = parse_index(&digest, &bytes) {
                        for d in index.manifests {
                            queue.push((ns.clone(), d.digest, Some(d.media_type)));
                        }
                    }
                }
                Kind::Manifest => {
                    if let Ok(m) = parse_manifest(&digest, &bytes) {
                        queue.push((ns.clone(), m.config.digest, Some(m.config.media_type)));
                        for l in m.layers {
                            queue.push((ns.clone(), l.digest, Some(l.media_type)));
                        }
                    }
                }
                Kind::Config => {
                    if let Ok(c) = parse_config(&digest, &bytes) {
                        if let Some(top) = chain_ids(&c.rootfs.diff_ids).pop() {
                            snapshot_roots.push((ns.clone(), top));
                        }
                    }
                }
                _ => {}
            }
        }
        // Snapshots, with their parents.
        for root in snapshot_roots {
            let mut next = Some(root);
            while let Some(key) = next.take() {
                let Some(parent) = parents.get(&key) else {
                    break;
                };
                if !snapshots.insert(key.clone()) {
                    break;
                }
                next = parent.clone().map(|p| (key.0.clone(), p));
            }
        }
    }

    let tx = images.meta.write()?;
    for (ns, id) in &expired {
        tx.delete(Table::Leases, ns, id)?;
        stats.leases += 1;
    }
    for (ns, digest, _) in tx.list_all::<ContentRecord>(Table::Content)? {
        if !content.contains(&(ns.clone(), digest.clone())) {
            tx.delete(Table::Content, &ns, &digest)?;
            stats.content_records += 1;
        }
    }
    for (ns, name, _) in tx.list_all::<SnapshotRecord>(Table::Snapshots)? {
        if !snapshots.contains(&(ns.clone(), name.clone())) {
            tx.delete(Table::Snapshots, &ns, &name)?;
            stats.snapshots += 1;
        }
    }
    let held: HashSet<String> = tx
        .list_all::<ContentRecord>(Table::Content)?
        .into_iter()
        .map(|(_, d, _)| d)
        .collect();
    let owned: HashSet<u64> = tx
        .list_all::<SnapshotRecord>(Table::Snapshots)?
        .into_iter()
        .map(|(_, _, r)| r.id)
        .collect();
    tx.commit()?;

    // The records are gone; now the files. A crash here leaves files no
    // record names, which the next collection removes.
    for info in images.content.list()? {
        if !held.contains(&info.digest.to_string()) {
            images.content.delete(&info.digest)?;
            stats.blobs += 1;
        }
    }
    for id in images.snapshots.storage_ids()? {
        if !owned.contains(&id) {
            images.snapshots.remove_storage(id)?;
            stats.snapshot_dirs += 1;
        }
    }
    if stats != Stats::default() {
        tracing::info!(?stats, "garbage collected");
    }
    Ok(stats)
}

fn read_small(images: &Images, digest: &str) -> Option<Vec<u8>> {
    let d: Digest = digest.parse().ok()?;
    let info = images.content.info(&d).ok()?;
    if info.size > MAX_DOCUMENT {
        return None;
    }
    images.read_document("document", digest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Labels;
    use crate::testing::temp_images;

    /// Stores `data` and has namespace `ns` hold it (under `lease`).
    fn blob(images: &Images, ns: &str, lease: Option<&str>, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        let mut w = images.content.writer(&format!("test/{d}")).unwrap();
        w.write(data).unwrap();
        w.commit(None, &d).unwrap();
        images.hold_content(ns, lease, &d.to_string()).unwrap();
        d
    }

    fn lease(images: &Images, ns: &str, id: &str, expire_seconds: u64) {
        let new = crate::leases::NewLease {
            id: Some(id.to_string()),
            expire_seconds,
            ..Default::default()
        };
        crate::leases::create(&images.meta, ns, new).unwrap();
    }

    #[tokio::test]
    async fn what_nothing_references_is_collected() {
        let (_dir, images) = temp_images();
        lease(&images, "a", "kept", 0);
        let kept = blob(&images, "a", Some("kept"), b"kept");
        let loose = blob(&images, "a", None, b"loose");
        let stats = collect_now(&images).await.unwrap();
        assert_eq!(stats.content_records, 1);
        assert_eq!(stats.blobs, 1);
        images.content.info(&kept).unwrap();
        assert!(images.content.info(&loose).is_err());
        let rx = images.meta.read().unwrap();
        assert!(!rx.exists(Table::Content, "a", &loose.to_string()).unwrap());
        assert!(rx.exists(Table::Content, "a", &kept.to_string()).unwrap());
        drop(rx);
        // Nothing more to do the second time.
        assert_eq!(collect_now(&images).await.unwrap(), Stats::default());
    }

    #[tokio::test]
    async fn an_expired_lease_goes_with_what_only_it_held() {
        let (_dir, images) = temp_images();
        lease(&images, "a", "l", 1);
        // The blob is held in two namespaces; a lease in b keeps it there.
        let d = blob(&images, "a", Some("l"), b"data");
        images.hold_content("b", None, &d.to_string()).unwrap();
        lease(&images, "b", "b-lease", 0);
        crate::leases::add_resource(
            &images.meta,
            "b",
            "b-lease",
            ("content".to_string(), d.to_string()),
        )
        .unwrap();
        let tx = images.meta.write().unwrap();
        let mut r: LeaseRecord = tx.get(Table::Leases, "a", "l").unwrap().unwrap();
        r.expires = Some(1);
        tx.put(Table::Leases, "a", "l", &r).unwrap();
        tx.commit().unwrap();
        let stats = collect_now(&images).await.unwrap();
        assert_eq!(stats.leases, 1);
        assert_eq!(stats.content_records, 1);
        assert_eq!(stats.blobs, 0);
        images.content.info(&d).unwrap();
    }

    /// A build's lease holds an image's config while the image names it:
    /// the config is followed as a config (to its layers' snapshots), not
    /// as the lease's document of unknown kind.
    #[tokio::test]
    async fn an_image_config_a_lease_also_holds_keeps_its_snapshots() {
        let (_dir, images) = temp_images();
        let s = &images.snapshots;
        let diff_id = format!("sha256:{}", "1".repeat(64));
        s.prepare(
            &images.meta,
            "a",
            "work",
            None,
            SnapshotKind::Active,
            Labels::new(),
        )
        .unwrap();
        let chain = crate::oci::chain_ids(std::slice::from_ref(&diff_id))
            .pop()
            .unwrap();
        s.commit(&images.meta, "a", &chain, "work", Labels::new())
            .unwrap();
        lease(&images, "a", "build", 0);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config_digest = blob(&images, "a", Some("build"), &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": [],
        }))
        .unwrap();
        let manifest_digest = blob(&images, "a", None, &manifest);
        let target = crate::oci::Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: manifest_digest.to_string(),
            size: manifest.len() as i64,
            urls: Vec::new(),
            annotations: Default::default(),
            platform: None,
        };
        images.save_image("a", "built:1", target, None).unwrap();
        let stats = collect_now(&images).await.unwrap();
        assert_eq!(stats.snapshots, 0, "{stats:?}");
        let rx = images.meta.read().unwrap();
        assert!(rx.exists(Table::Snapshots, "a", &chain).unwrap());
    }

    #[tokio::test]
    async fn unreferenced_committed_snapshots_and_their_directories_go() {
        let (_dir, images) = temp_images();
        let s = &images.snapshots;
        s.prepare(
            &images.meta,
            "a",
            "active",
            None,
            SnapshotKind::Active,
            Labels::new(),
        )
        .unwrap();
        s.prepare(
            &images.meta,
            "a",
            "work",
            None,
            SnapshotKind::Active,
            Labels::new(),
        )
        .unwrap();
        s.commit(&images.meta, "a", "layer", "work", Labels::new())
            .unwrap();
        assert_eq!(s.storage_ids().unwrap().len(), 2);
        let stats = collect_now(&images).await.unwrap();
        assert_eq!((stats.snapshots, stats.snapshot_dirs), (1, 1));
        let rx = images.meta.read().unwrap();
        assert!(rx.exists(Table::Snapshots, "a", "active").unwrap());
        assert!(!rx.exists(Table::Snapshots, "a", "layer").unwrap());
        assert_eq!(s.storage_ids().unwrap().len(), 1);
    }
}
