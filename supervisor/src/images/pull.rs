//! Pull: resolve a reference, fetch its manifest and config, then download
//! every layer in parallel, each in one pass: the bytes from the network
//! are written to the content store's ingest and hashed, decompressed,
//! hashed again (the diff id) and untarred into a fresh snapshot directory
//! as they arrive. A layer becomes visible only once both digests match;
//! the snapshots are then recorded bottom-up in one transaction, and the
//! image record, which makes everything reachable, comes last.
//!
//! An interrupted pull keeps what it verified (its transfer lease holds it
//! for a day) and the ingest of a partial blob, which the next pull resumes
//! with a range request.
//!
//! The tasks here fetch; the blocking pass over a layer's bytes (store,
//! decompress, hash, untar) is in `layer`.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::layer::{layer_compression, store_and_unpack, Chunk, Unpacked};
use super::*;
use crate::archive;
use crate::metadata::{validate_namespace, SnapshotKind, SnapshotRecord};
use crate::oci::{chain_ids, Compression, ImageConfig};
use crate::registry::Credentials;

/// Layers fetched at once (Docker's default too).
const PARALLEL_LAYERS: usize = 3;

pub struct PullOptions {
    pub reference: String,
    pub platform: Option<Platform>,
    pub credentials: Option<Credentials>,
    pub unpack: bool,
}

/// One layer's outcome: the snapshot directory it was unpacked into, or a
/// request to unpack it again once the layers below are in place.
struct LayerDone {
    index: usize,
    id: Option<u64>,
    unpack_later: bool,
    /// Directories the unpack made up for want of the lower layers.
    implied: Vec<PathBuf>,
}

/// Everything a layer task needs, shared between the tasks.
struct Job {
    images: Arc<Images>,
    ns: String,
    lease: String,
    reference: Reference,
    credentials: Option<Credentials>,
    tracker: Arc<Tracker>,
}

impl Images {
    pub async fn pull(
        self: &Arc<Self>,
        ns: &str,
        opts: PullOptions,
        tracker: Arc<Tracker>,
    ) -> Result<ImageRecord, ImageError> {
        validate_namespace(ns)?;
        let reference = Reference::parse(&opts.reference)?;
        let platform = opts
            .platform
            .clone()
            .unwrap_or_else(|| self.platform.clone());
        let _gc = Arc::clone(&self.gc_lock).read_owned().await;
        let lease = self.create_transfer_lease(ns)?;
        let result = self
            .pull_under(ns, &reference, &platform, opts, tracker, &lease)
            .await;
        if result.is_err() {
            self.end_lease_if_empty(ns, &lease)?;
        }
        result
    }

    async fn pull_under(
        self: &Arc<Self>,
        ns: &str,
        reference: &Reference,
        platform: &Platform,
        opts: PullOptions,
        tracker: Arc<Tracker>,
        lease: &str,
    ) -> Result<ImageRecord, ImageError> {
        let (reference, platform, lease) = (reference.clone(), platform.clone(), lease.to_string());
        let creds = opts.credentials.as_ref();
        let name = reference.to_string();
        tracing::info!(namespace = ns, image = %name, "pull");

        tracker.set(&name, "index", State::Resolving, 0, 0);
        let (mut top, top_bytes) = self.registry.resolve(&reference, creds).await?;
        let top_kind = document_kind(&top.media_type, &top_bytes);
        if top.media_type.is_empty() {
            top.media_type = match top_kind {
                Kind::Index => oci::MEDIA_OCI_INDEX,
                _ => oci::MEDIA_OCI_MANIFEST,
            }
            .to_string();
        }
        self.store_bytes(&top.digest, &top_bytes)?;
        self.hold_content(ns, Some(&lease), &top.digest)?;
        tracker.set(&name, "index", State::Done, 0, 0);

        let (manifest_desc, manifest_bytes) = match top_kind {
            Kind::Index => {
                let index = parse_index(&top.digest, &top_bytes)?;
                let desc = select_manifest(&name, &index, &platform)?;
                let bytes = self
                    .fetch_document(ns, &lease, &reference, creds, "manifest", &desc, &tracker)
                    .await?;
                (desc, bytes)
            }
            Kind::Manifest => (top.clone(), top_bytes.to_vec()),
            _ => {
                return Err(ImageError::BadDocument {
                    what: "manifest",
                    digest: top.digest.clone(),
                    reason: format!("unsupported media type {:?}", top.media_type),
                })
            }
        };
        let manifest = parse_manifest(&manifest_desc.digest, &manifest_bytes)?;
        let config_bytes = self
            .fetch_document(
                ns,
                &lease,
                &reference,
                creds,
                "config",
                &manifest.config,
                &tracker,
            )
            .await?;
        let config = parse_config(&manifest.config.digest, &config_bytes)?;
        check_layers(&manifest.config.digest, &config, &manifest)?;
        let chain = chain_ids(&config.rootfs.diff_ids);

        for layer in &manifest.layers {
            tracker.set(
                &layer.digest,
                "layer",
                State::Waiting,
                0,
                layer.size.max(0) as u64,
            );
        }
        let job = Arc::new(Job {
            images: Arc::clone(self),
            ns: ns.to_string(),
            lease: lease.clone(),
            reference: reference.clone(),
            credentials: opts.credentials.clone(),
            tracker: Arc::clone(&tracker),
        });
        let limit = Arc::new(Semaphore::new(PARALLEL_LAYERS));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, layer) in manifest.layers.iter().enumerate() {
            let job = Arc::clone(&job);
            let limit = Arc::clone(&limit);
            let layer = layer.clone();
            let diff_id = config.rootfs.diff_ids[index].clone();
            let chain_id = chain[index].clone();
            let unpack = opts.unpack;
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                job.pull_layer(index, &layer, &diff_id, &chain_id, unpack)
                    .await
            });
        }
        let mut done = Vec::new();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(d)) => done.push(d),
                Ok(Err(e)) => {
                    // The first error is the one to report; the others
                    // are usually its echoes. Stop the rest.
                    if failure.is_none() {
                        failure = Some(e);
                        tasks.abort_all();
                    }
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => failure = failure.or(Some(ImageError::Internal(e.to_string()))),
            }
        }
        if let Some(e) = failure {
            for d in &done {
                if let Some(id) = d.id {
                    let _ = self.snapshots.remove_storage(id);
                }
            }
            return Err(e);
        }
        done.sort_by_key(|d| d.index);

        if opts.unpack {
            let images = Arc::clone(self);
            let ns2 = ns.to_string();
            let lease2 = lease.clone();
            let layers = manifest.layers.clone();
            let diff_ids = config.rootfs.diff_ids.clone();
            let tracker2 = Arc::clone(&tracker);
            tokio::task::spawn_blocking(move || {
                images.commit_layers(&ns2, &lease2, &layers, &diff_ids, &chain, done, &tracker2)
            })
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))??;
        }
        let record = self.save_image(ns, &name, top, Some(&lease))?;
        tracing::info!(namespace = ns, image = %name, digest = %record.target.digest, "pulled");
        Ok(record)
    }

    /// Fetches a manifest or config (unless the store has it), verified,
    /// and held by the namespace.
    #[allow(
        clippy::too_many_arguments,
        reason = "the namespace, lease, reference and credentials of the pull, and the document"
    )]
    async fn fetch_document(
        &self,
        ns: &str,
        lease: &str,
        reference: &Reference,
        creds: Option<&Credentials>,
        what: &'static str,
        desc: &Descriptor,
        tracker: &Tracker,
    ) -> Result<Vec<u8>, ImageError> {
        let size = desc.size.max(0) as u64;
        if size > MAX_DOCUMENT {
            return Err(ImageError::TooLarge {
                what,
                digest: desc.digest.clone(),
                size,
                max: MAX_DOCUMENT,
            });
        }
        let digest: Digest = desc.digest.parse()?;
        if self.content.info(&digest).is_ok() {
            tracker.set(&desc.digest, what, State::Exists, size, size);
            self.hold_content(ns, Some(lease), &desc.digest)?;
            return self.read_document(what, &desc.digest);
        }
        tracker.set(&desc.digest, what, State::Downloading, 0, size);
        let bytes = if what == "manifest" {
            self.registry
                .fetch_manifest(reference, &desc.digest, creds)
                .await?
                .to_vec()
        } else {
            let mut blob = self
                .registry
                .fetch_blob(reference, &desc.digest, 0, creds)
                .await?;
            let mut buf = Vec::with_capacity(size as usize);
            while let Some(chunk) = blob.body.next().await {
                buf.extend_from_slice(&chunk?);
                if buf.len() as u64 > size {
                    break;
                }
            }
            buf
        };
        if bytes.len() as u64 != size {
            return Err(ImageError::Content(ContentError::SizeMismatch {
                reference: desc.digest.clone(),
                expected: size,
                actual: bytes.len() as u64,
            }));
        }
        self.store_bytes(&desc.digest, &bytes)?;
        self.hold_content(ns, Some(lease), &desc.digest)?;
        tracker.set(&desc.digest, what, State::Done, size, size);
        Ok(bytes)
    }

    /// Records the unpacked layers as committed snapshots, bottom-up, in
    /// one transaction after one filesystem sync. A layer that could not be
    /// unpacked on its own (a hard link to a file in a layer below) is
    /// unpacked first, from its stored blob, on top of the layers below it.
    #[allow(
        clippy::too_many_arguments,
        reason = "the pull's namespace and lease, the image's layers, and what the downloads did"
    )]
    fn commit_layers(
        &self,
        ns: &str,
        lease: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
        chain: &[String],
        done: Vec<LayerDone>,
        tracker: &Tracker,
    ) -> Result<(), ImageError> {
        let mut ids: Vec<Option<u64>> = done.iter().map(|d| d.id).collect();
        let result =
            self.commit_layers_into(ns, lease, layers, diff_ids, chain, &done, &mut ids, tracker);
        if result.is_err() {
            for id in ids.iter().flatten() {
                let _ = self.snapshots.remove_storage(*id);
            }
        }
        result
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "commit_layers' arguments and the snapshot ids it fills in"
    )]
    fn commit_layers_into(
        &self,
        ns: &str,
        lease: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
        chain: &[String],
        done: &[LayerDone],
        ids: &mut [Option<u64>],
        tracker: &Tracker,
    ) -> Result<(), ImageError> {
        // The layer directories bottom-up: existing snapshots' or ours.
        // Unpacking happens here, before the transaction, since a write
        // transaction excludes every other (allocating ids takes one).
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(done.len());
        let mut existing = vec![false; done.len()];
        for (i, d) in done.iter().enumerate() {
            let found = {
                let rx = self.meta.read()?;
                rx.get::<SnapshotRecord>(Table::Snapshots, ns, &chain[i])?
            };
            if let Some(record) = found.filter(|r| r.kind == SnapshotKind::Committed) {
                // Unpacked before, or by a pull that raced this one.
                if let Some(id) = ids[i].take() {
                    let _ = self.snapshots.remove_storage(id);
                }
                existing[i] = true;
                dirs.push(self.snapshots.fs(record.id));
                continue;
            }
            if d.unpack_later || ids[i].is_none() {
                let id = self.snapshots.allocate(&self.meta)?;
                ids[i] = Some(id);
                tracker.state(&layers[i].digest, State::Unpacking);
                let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
                self.unpack_stored(&layers[i], &diff_ids[i], id, &lowers)?;
                tracker.state(&layers[i].digest, State::Done);
            } else if !d.implied.is_empty() && !dirs.is_empty() {
                // Unpacked in parallel, without the layers below: the
                // directories it made up take their attributes from below.
                let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
                let id = ids[i].unwrap_or_default();
                archive::inherit_implied_dirs(&self.snapshots.fs(id), &d.implied, &lowers)
                    .map_err(|source| ImageError::Unpack {
                        digest: layers[i].digest.clone(),
                        source,
                    })?;
            }
            let id = ids[i].unwrap_or_default();
            dirs.push(self.snapshots.fs(id));
        }
        if let Some(id) = ids.iter().flatten().next() {
            self.snapshots.sync(*id)?;
        }
        let tx = self.meta.write()?;
        let mut raced = Vec::new();
        for i in 0..done.len() {
            let parent = (i > 0).then(|| chain[i - 1].as_str());
            if let (false, Some(id)) = (existing[i], ids[i]) {
                let labels = Labels::from([("berth/diff-id".to_string(), diff_ids[i].clone())]);
                match self
                    .snapshots
                    .commit_extracted(&tx, ns, &chain[i], parent, id, labels)
                {
                    Ok(()) => {}
                    // Another pull or import of the same layer committed
                    // it since the check above: the same content, kept.
                    Err(SnapshotError::AlreadyExists(_)) => raced.push(id),
                    Err(e) => return Err(e.into()),
                }
            }
            tx.lease_add(ns, lease, ("snapshots".to_string(), chain[i].clone()))?;
        }
        tx.commit()?;
        for id in raced {
            let _ = self.snapshots.remove_storage(id);
        }
        Ok(())
    }

    /// Unpacks an image whose blobs are all in the content store (an
    /// import) into committed snapshots, bottom-up, reusing those that
    /// exist. The snapshots are added to `lease`.
    pub fn unpack_from_store(
        &self,
        ns: &str,
        lease: &str,
        manifest_digest: &str,
    ) -> Result<(), ImageError> {
        let manifest = parse_manifest(
            manifest_digest,
            &self.read_document("manifest", manifest_digest)?,
        )?;
        let config = parse_config(
            &manifest.config.digest,
            &self.read_document("config", &manifest.config.digest)?,
        )?;
        check_layers(&manifest.config.digest, &config, &manifest)?;
        let chain = chain_ids(&config.rootfs.diff_ids);
        let done = (0..manifest.layers.len())
            .map(|index| LayerDone {
                index,
                id: None,
                unpack_later: true,
                implied: Vec::new(),
            })
            .collect();
        let tracker = Tracker::new();
        self.commit_layers(
            ns,
            lease,
            &manifest.layers,
            &config.rootfs.diff_ids,
            &chain,
            done,
            &tracker,
        )
    }
}

impl Job {
    async fn pull_layer(
        &self,
        index: usize,
        layer: &Descriptor,
        diff_id: &str,
        chain_id: &str,
        unpack: bool,
    ) -> Result<LayerDone, ImageError> {
        let images = &self.images;
        let digest: Digest = layer.digest.parse()?;
        let size = layer.size.max(0) as u64;
        let have_blob = images.content.info(&digest).is_ok();
        let have_snapshot = unpack && {
            let rx = images.meta.read()?;
            rx.get::<SnapshotRecord>(Table::Snapshots, &self.ns, chain_id)?
                .is_some_and(|r| r.kind == SnapshotKind::Committed)
        };
        let mut done = LayerDone {
            index,
            id: None,
            unpack_later: false,
            implied: Vec::new(),
        };
        if have_blob && (!unpack || have_snapshot) {
            self.tracker
                .set(&layer.digest, "layer", State::Exists, size, size);
            images.hold_content(&self.ns, Some(&self.lease), &layer.digest)?;
            return Ok(done);
        }
        let compression = if unpack && !have_snapshot {
            Some(layer_compression(layer)?)
        } else {
            None
        };
        let id = match compression {
            Some(_) => Some(images.snapshots.allocate(&images.meta)?),
            None => None,
        };
        done.id = id;
        let result = if have_blob {
            self.tracker
                .set(&layer.digest, "layer", State::Unpacking, 0, size);
            let images = Arc::clone(images);
            let layer2 = layer.clone();
            let diff_id = diff_id.to_string();
            let id = id.unwrap_or_default();
            tokio::task::spawn_blocking(move || images.unpack_stored(&layer2, &diff_id, id, &[]))
                .await
                .map_err(|e| ImageError::Internal(e.to_string()))
                .and_then(|r| r)
                .map(Unpacked::Done)
        } else {
            self.download(layer, diff_id, compression, id).await
        };
        match result {
            Ok(Unpacked::Done(implied)) => done.implied = implied,
            Ok(Unpacked::Later) => {
                // Unpackable only on top of the layers below it.
                if let Some(id) = done.id.take() {
                    let _ = images.snapshots.remove_storage(id);
                }
                done.unpack_later = true;
            }
            Err(e) => {
                if let Some(id) = id {
                    let _ = images.snapshots.remove_storage(id);
                }
                return Err(e);
            }
        }
        images.hold_content(&self.ns, Some(&self.lease), &layer.digest)?;
        self.tracker.state(&layer.digest, State::Done);
        Ok(done)
    }

    /// Downloads a layer into the content store and, when `compression` is
    /// given, unpacks it into snapshot `id` in the same pass. Ok(false):
    /// the blob is stored but must be unpacked later, on its lower layers.
    async fn download(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        compression: Option<Compression>,
        id: Option<u64>,
    ) -> Result<Unpacked, ImageError> {
        let images = &self.images;
        let size = layer.size.max(0) as u64;
        let (offset_tx, offset_rx) = oneshot::channel::<u64>();
        let (chunks_tx, chunks_rx) = mpsc::channel::<Chunk>(16);
        let target = id.map(|id| images.snapshots.fs(id));
        let content = Arc::clone(&images.content);
        let tracker = Arc::clone(&self.tracker);
        let digest = layer.digest.clone();
        let diff_id = diff_id.to_string();
        let worker = tokio::task::spawn_blocking(move || {
            store_and_unpack(
                &content,
                &digest,
                size,
                compression.map(|c| (c, target.unwrap_or_default(), diff_id)),
                offset_tx,
                chunks_rx,
                &tracker,
            )
        });
        // The worker opens (or resumes) the ingest and says where its data
        // ends; the download starts there.
        let fetched = match offset_rx.await {
            Ok(offset) => self.forward(layer, offset, chunks_tx).await,
            Err(_) => Ok(()), // the worker ended early (the blob appeared)
        };
        let stored = worker
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))?;
        match (fetched, stored) {
            // The network's error explains the worker's broken stream.
            (Err(e), Err(_)) => Err(e),
            (_, stored) => stored,
        }
    }

    /// Streams the blob from the registry into the worker's channel.
    async fn forward(
        &self,
        layer: &Descriptor,
        offset: u64,
        chunks: mpsc::Sender<Chunk>,
    ) -> Result<(), ImageError> {
        let creds = self.credentials.as_ref();
        self.tracker.set(
            &layer.digest,
            "layer",
            State::Downloading,
            offset,
            layer.size.max(0) as u64,
        );
        let mut blob = match self
            .images
            .registry
            .fetch_blob(&self.reference, &layer.digest, offset, creds)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                let _ = chunks.send(Chunk::Failed(e.to_string())).await;
                return Err(e.into());
            }
        };
        if chunks.send(Chunk::Start(blob.offset)).await.is_err() {
            return Ok(());
        }
        while let Some(item) = blob.body.next().await {
            match item {
                Ok(data) => {
                    if chunks.send(Chunk::Data(data)).await.is_err() {
                        // The worker stopped (it failed and says why).
                        return Ok(());
                    }
                }
                Err(e) => {
                    let _ = chunks.send(Chunk::Failed(e.to_string())).await;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

fn check_layers(
    config_digest: &str,
    config: &ImageConfig,
    manifest: &Manifest,
) -> Result<(), ImageError> {
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::BadDocument {
            what: "config",
            digest: config_digest.to_string(),
            reason: format!(
                "lists {} diff ids for a manifest of {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    for d in &config.rootfs.diff_ids {
        d.parse::<Digest>()?;
    }
    for l in &manifest.layers {
        l.digest.parse::<Digest>()?;
    }
    Ok(())
}
