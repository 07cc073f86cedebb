//! Push: blobs first (skipping those the registry has), up to three at a
//! time, each monolithic or, when large, in chunks; then the manifests by
//! digest, and last the top document under the tag.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::*;
use crate::registry::Credentials;

/// Blobs at least this big go up in chunks of this size.
const CHUNK: u64 = 8 << 20;
const PARALLEL_BLOBS: usize = 3;

pub struct PushOptions {
    pub name: String,
    /// Where to push; none means the image's own name.
    pub reference: Option<String>,
    pub credentials: Option<Credentials>,
    pub platform: Option<Platform>,
}

impl Images {
    /// Pushes an image; returns the digest now under the tag.
    pub async fn push(
        self: &Arc<Self>,
        ns: &str,
        opts: PushOptions,
        tracker: Arc<Tracker>,
    ) -> Result<String, ImageError> {
        let record = self.get(ns, &opts.name)?;
        let remote = Reference::parse(opts.reference.as_deref().unwrap_or(&record.name))?;
        // Nothing the push reads may be collected under it.
        let _gc = Arc::clone(&self.gc_lock).read_owned().await;
        let top = record.target.clone();
        let mut manifests = Vec::new();
        let mut top_to_push = Some(top.clone());
        if Kind::of(&top.media_type) == Kind::Index {
            let index = parse_index(&top.digest, &self.read_document("index", &top.digest)?)?;
            let all_present = index.manifests.iter().all(|d| {
                d.digest
                    .parse::<Digest>()
                    .is_ok_and(|dg| self.content.info(&dg).is_ok())
            });
            if opts.platform.is_none() && all_present {
                manifests = index.manifests.clone();
            } else {
                // A pull keeps one platform of an index: push that one
                // manifest under the tag.
                let platform = opts
                    .platform
                    .clone()
                    .unwrap_or_else(|| self.platform.clone());
                manifests.push(select_manifest(&record.name, &index, &platform)?);
                top_to_push = None;
            }
        } else {
            manifests.push(top.clone());
        }
        let tag = remote
            .digest
            .clone()
            .or_else(|| remote.tag.clone())
            .unwrap_or_else(|| "latest".to_string());
        let creds = opts.credentials.as_ref();
        let mut pushed_top = None;
        for desc in &manifests {
            let bytes = self.read_document("manifest", &desc.digest)?;
            let manifest = parse_manifest(&desc.digest, &bytes)?;
            let mut blobs = vec![(manifest.config.clone(), "config")];
            blobs.extend(manifest.layers.iter().map(|l| (l.clone(), "layer")));
            self.push_blobs(&remote, blobs, &opts.credentials, &tracker)
                .await?;
            let under = if top_to_push.is_none() {
                tag.as_str()
            } else {
                desc.digest.as_str()
            };
            let size = bytes.len() as u64;
            tracker.set(&desc.digest, "manifest", State::Uploading, 0, size);
            self.registry
                .push_manifest(&remote, under, &desc.media_type, bytes.into(), creds)
                .await?;
            tracker.set(&desc.digest, "manifest", State::Done, size, size);
            if top_to_push.is_none() {
                pushed_top = Some(desc.digest.clone());
            }
        }
        if let Some(top) = top_to_push {
            let bytes = self.read_document("manifest", &top.digest)?;
            let size = bytes.len() as u64;
            let kind = if Kind::of(&top.media_type) == Kind::Index {
                "index"
            } else {
                "manifest"
            };
            tracker.set(&top.digest, kind, State::Uploading, 0, size);
            self.registry
                .push_manifest(&remote, &tag, &top.media_type, bytes.into(), creds)
                .await?;
            tracker.set(&top.digest, kind, State::Done, size, size);
            pushed_top = Some(top.digest);
        }
        let digest = pushed_top.unwrap_or_default();
        tracing::info!(namespace = ns, image = %record.name, to = %remote, %digest, "pushed");
        Ok(digest)
    }

    async fn push_blobs(
        self: &Arc<Self>,
        remote: &Reference,
        blobs: Vec<(Descriptor, &'static str)>,
        credentials: &Option<Credentials>,
        tracker: &Arc<Tracker>,
    ) -> Result<(), ImageError> {
        let limit = Arc::new(Semaphore::new(PARALLEL_BLOBS));
        let mut tasks = tokio::task::JoinSet::new();
        for (desc, kind) in blobs {
            let size = desc.size.max(0) as u64;
            tracker.set(&desc.digest, kind, State::Waiting, 0, size);
            let images = Arc::clone(self);
            let remote = remote.clone();
            let creds = credentials.clone();
            let tracker = Arc::clone(tracker);
            let limit = Arc::clone(&limit);
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let creds = creds.as_ref();
                if images
                    .registry
                    .blob_exists(&remote, &desc.digest, creds)
                    .await?
                {
                    tracker.set(&desc.digest, kind, State::Exists, size, size);
                    return Ok(());
                }
                let digest: Digest = desc.digest.parse()?;
                let file = images.content.open_blob(&digest, 0)?;
                tracker.set(&desc.digest, kind, State::Uploading, 0, size);
                let progress = {
                    let tracker = Arc::clone(&tracker);
                    let digest = desc.digest.clone();
                    move |sent: u64| tracker.advance(&digest, sent)
                };
                let chunk = (size >= CHUNK).then_some(CHUNK);
                images
                    .registry
                    .push_blob(&remote, &desc, file, chunk, creds, &progress)
                    .await?;
                tracker.set(&desc.digest, kind, State::Done, size, size);
                Ok::<(), ImageError>(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| ImageError::Internal(e.to_string()))??;
        }
        Ok(())
    }
}
