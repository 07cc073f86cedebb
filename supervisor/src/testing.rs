//! Helpers for unit tests: stores in a temporary directory.

use std::sync::Arc;

use crate::content::ContentStore;
use crate::images::Images;
use crate::metadata::Metadata;
use crate::oci::Platform;
use crate::snapshots::Snapshotter;

/// Empty stores under a temporary directory (kept while the guard lives).
pub fn temp_images() -> (tempfile::TempDir, Arc<Images>) {
    let dir = tempfile::tempdir().unwrap();
    let images = Images {
        content: Arc::new(ContentStore::open(&dir.path().join("content")).unwrap()),
        meta: Arc::new(Metadata::open(&dir.path().join("meta.redb")).unwrap()),
        snapshots: Arc::new(Snapshotter::open(&dir.path().join("snapshots")).unwrap()),
        registry: crate::registry::Client::new(Default::default()).unwrap(),
        gc_lock: Arc::new(tokio::sync::RwLock::new(())),
        platform: Platform::host(),
    };
    (dir, Arc::new(images))
}
