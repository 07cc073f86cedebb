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

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::*;
use crate::archive;
use crate::content::Writer;
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

/// How a layer's unpack went.
enum Unpacked {
    /// Unpacked (or only stored); the directories it had to make up.
    Done(Vec<PathBuf>),
    /// Stored, but unpackable only on top of the layers below it.
    Later,
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
    #[allow(clippy::too_many_arguments)]
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
    #[allow(clippy::too_many_arguments)]
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

    #[allow(clippy::too_many_arguments)]
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
        for i in 0..done.len() {
            let parent = (i > 0).then(|| chain[i - 1].as_str());
            if let (false, Some(id)) = (existing[i], ids[i]) {
                let labels = Labels::from([("berth/diff-id".to_string(), diff_ids[i].clone())]);
                self.snapshots
                    .commit_extracted(&tx, ns, &chain[i], parent, id, labels)?;
            }
            tx.lease_add(ns, lease, ("snapshots".to_string(), chain[i].clone()))?;
        }
        tx.commit()?;
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

    /// Unpacks a layer from the content store into snapshot directory `id`.
    fn unpack_stored(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        id: u64,
        lowers: &[PathBuf],
    ) -> Result<Vec<PathBuf>, ImageError> {
        let compression = layer_compression(layer)?;
        let digest: Digest = layer.digest.parse()?;
        let file = self.content.open_blob(&digest, 0)?;
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let (actual, implied) = unpack(&mut reader, compression, &self.snapshots.fs(id), lowers)
            .map_err(|e| e.into_image_error(&layer.digest))?;
        check_diff_id(&layer.digest, diff_id, &actual)?;
        Ok(implied)
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

fn check_diff_id(digest: &str, expected: &str, actual: &Digest) -> Result<(), ImageError> {
    if actual.to_string() != expected {
        return Err(ImageError::DiffIdMismatch {
            digest: digest.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

pub fn layer_compression(layer: &Descriptor) -> Result<Compression, ImageError> {
    match Kind::of(&layer.media_type) {
        Kind::Layer(c) => Ok(c),
        _ => Err(ImageError::UnsupportedLayer {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        }),
    }
}

/// What the download task hands the worker.
enum Chunk {
    /// Where the registry's bytes start (0 if it ignored the range).
    Start(u64),
    Data(Bytes),
    Failed(String),
}

/// Reads the network's bytes from the channel, appending each to the
/// ingest (which hashes them) as it is read.
struct Tee<'a> {
    chunks: mpsc::Receiver<Chunk>,
    current: Bytes,
    writer: &'a mut Writer,
    size: u64,
    digest: &'a str,
    tracker: &'a Tracker,
    /// Why the network's stream broke, if it did: the ingest then stays
    /// for a resume instead of being checked.
    broken: Option<String>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                None if self.writer.offset() < self.size => {
                    let why = format!(
                        "the stream ended after {} of {} bytes",
                        self.writer.offset(),
                        self.size
                    );
                    self.broken = Some(why.clone());
                    return Err(io::Error::other(why));
                }
                None => return Ok(0),
                Some(Chunk::Data(d)) => self.current = d,
                Some(Chunk::Start(_)) => {}
                Some(Chunk::Failed(e)) => {
                    self.broken = Some(e.clone());
                    return Err(io::Error::other(e));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        let data = self.current.split_to(n);
        if self.writer.offset() + n as u64 > self.size {
            return Err(io::Error::other(format!(
                "the registry sent more than the {} bytes of {}",
                self.size, self.digest
            )));
        }
        self.writer.write(&data).map_err(io::Error::other)?;
        self.tracker.advance(self.digest, self.writer.offset());
        buf[..n].copy_from_slice(&data);
        Ok(n)
    }
}

/// The blocking half of a layer download: stores the bytes and, with
/// `unpack` = (compression, target directory, expected diff id), unpacks
/// them on the way. Ok(false) when the unpack needs the layers below.
fn store_and_unpack(
    content: &Arc<ContentStore>,
    digest: &str,
    size: u64,
    unpack_into: Option<(Compression, PathBuf, String)>,
    offset_tx: oneshot::Sender<u64>,
    mut chunks: mpsc::Receiver<Chunk>,
    tracker: &Tracker,
) -> Result<Unpacked, ImageError> {
    let expected: Digest = digest.parse()?;
    let mut writer = open_writer(content, &format!("layer-{digest}"))?;
    if content.info(&expected).is_ok() {
        // Another pull stored it while this one waited for the ingest.
        drop(writer);
        drop(offset_tx);
        return match unpack_into {
            None => Ok(Unpacked::Done(Vec::new())),
            Some((compression, target, diff_id)) => {
                let file = content.open_blob(&expected, 0)?;
                let (actual, implied) = unpack(io::BufReader::new(file), compression, &target, &[])
                    .map_err(|e| e.into_image_error(digest))?;
                check_diff_id(digest, &diff_id, &actual).map(|()| Unpacked::Done(implied))
            }
        };
    }
    let resumed = writer.offset();
    if resumed >= size && resumed > 0 {
        // More than the blob can hold: start over.
        writer.truncate()?;
    }
    let _ = offset_tx.send(writer.offset());
    // The first message says where the registry's bytes start.
    let start = match chunks.blocking_recv() {
        Some(Chunk::Start(s)) => s,
        Some(Chunk::Failed(e)) => return Err(ImageError::Archive(e)),
        Some(Chunk::Data(_)) | None => {
            return Err(ImageError::Internal(
                "blob stream ended before it began".into(),
            ))
        }
    };
    if start != writer.offset() {
        writer.truncate()?;
    }
    if writer.offset() > 0 {
        tracing::info!(digest, offset = writer.offset(), "resuming download");
    }
    let existing = writer.data_so_far()?.take(writer.offset());
    let mut tee = Tee {
        chunks,
        current: Bytes::new(),
        writer: &mut writer,
        size,
        digest,
        tracker,
        broken: None,
    };
    let outcome = match &unpack_into {
        None => io::copy(&mut tee, &mut io::sink())
            .map(|_| None)
            .map_err(UnpackError::Read),
        Some((compression, target, _)) => {
            let mut source = io::BufReader::with_capacity(1 << 18, existing.chain(&mut tee));
            let r = unpack(&mut source, *compression, target, &[]);
            // Whatever happened, the rest of the blob is read so that its
            // digest can be checked.
            let drained = io::copy(&mut source, &mut io::sink());
            match (r, drained) {
                (Ok(d), Ok(_)) => Ok(Some(d)),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(UnpackError::Read(e)),
            }
        }
    };
    // A broken stream is the network's fault: keep the ingest for a resume.
    if let Some(why) = tee.broken.take() {
        return Err(ImageError::Archive(format!("download {digest}: {why}")));
    }
    drop(tee);
    if let Err(UnpackError::Read(e)) = &outcome {
        return Err(ImageError::Archive(format!("download {digest}: {e}")));
    }
    // The blob is whole: it is valid content whether or not it unpacked.
    let committed = writer.commit(Some(size), &expected);
    match committed {
        Ok(_) | Err(ContentError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match (outcome, unpack_into) {
        (Ok(Some((actual, implied))), Some((_, _, diff_id))) => {
            check_diff_id(digest, &diff_id, &actual)?;
            Ok(Unpacked::Done(implied))
        }
        (Ok(_), _) => Ok(Unpacked::Done(Vec::new())),
        (Err(UnpackError::Apply(e)), _) if needs_lower_layers(&e) => Ok(Unpacked::Later),
        (Err(e), _) => Err(e.into_image_error(digest)),
    }
}

/// Opens the ingest for `reference`, waiting while another pull writes it.
fn open_writer(content: &Arc<ContentStore>, reference: &str) -> Result<Writer, ImageError> {
    loop {
        match content.writer(reference) {
            Err(ContentError::Locked(_)) => std::thread::sleep(Duration::from_millis(50)),
            other => return Ok(other?),
        }
    }
}

/// Whether an unpack failed only for want of the layers below (a hard link
/// to a file one of them holds).
fn needs_lower_layers(e: &archive::ArchiveError) -> bool {
    matches!(e, archive::ArchiveError::LinkTargetMissing { .. })
}

enum UnpackError {
    /// Reading the compressed stream failed (network or disk).
    Read(io::Error),
    /// The stream does not decompress.
    Decompress(io::Error),
    /// The tar could not be applied.
    Apply(archive::ArchiveError),
}

impl UnpackError {
    fn into_image_error(self, digest: &str) -> ImageError {
        match self {
            UnpackError::Read(e) => ImageError::Archive(format!("read layer {digest}: {e}")),
            UnpackError::Decompress(e) => {
                ImageError::Archive(format!("decompress layer {digest}: {e}"))
            }
            UnpackError::Apply(source) => ImageError::Unpack {
                digest: digest.to_string(),
                source,
            },
        }
    }
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    /// The first error of the inner reader, kept so the caller can tell a
    /// decompression failure from a tar one.
    error: Option<io::ErrorKind>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                self.error.get_or_insert(e.kind());
                Err(e)
            }
        }
    }
}

/// Decompresses `source`, untars it into `target`, and returns the digest
/// of the whole uncompressed stream (the diff id). Reads the tar to its end.
fn unpack<R: io::BufRead>(
    source: R,
    compression: Compression,
    target: &Path,
    lowers: &[PathBuf],
) -> Result<(Digest, Vec<PathBuf>), UnpackError> {
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(source).map_err(UnpackError::Decompress)?,
        ),
    };
    let mut tar = Hashing {
        inner: decoder,
        hasher: Sha256::new(),
        error: None,
    };
    let stats = match archive::apply_layer(&mut tar, target, lowers) {
        Ok(stats) => stats,
        Err(e) => {
            return Err(match tar.error.take() {
                Some(kind) => UnpackError::Decompress(io::Error::new(kind, e.to_string())),
                None => UnpackError::Apply(e),
            })
        }
    };
    // The diff id covers the tar's trailing blocks too.
    io::copy(&mut tar, &mut io::sink()).map_err(UnpackError::Decompress)?;
    Ok((
        Digest::from_sha256(&tar.hasher.finalize()),
        stats.implied_dirs,
    ))
}
