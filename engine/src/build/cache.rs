//! The build cache, in the engine's database so it survives a restart: a
//! step's key ([`super::image::cache_key`]: the parent image's id, its run
//! config, and what the step does with the values its variables took and,
//! for COPY and ADD, the hash of its sources) to the image the step made
//! (its config document and its layers). A hit is used only while the
//! layers' snapshot is still there (an image deleted since may have taken
//! it with it). It also keeps the parent of each image made here (commit,
//! build), which image inspect shows as `Parent`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::images::Layer;
use crate::state::{StateError, Store, Table};

/// What a step made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The image config document after the step.
    pub config: Value,
    /// The layers: media type, digest, size.
    pub layers: Vec<(String, String, i64)>,
}

impl Entry {
    pub fn layers(&self) -> Vec<Layer> {
        self.layers
            .iter()
            .map(|(media_type, digest, size)| Layer {
                media_type: media_type.clone(),
                digest: digest.clone(),
                size: *size,
            })
            .collect()
    }

    pub fn from_layers(config: Value, layers: &[Layer]) -> Entry {
        Entry {
            config,
            layers: layers
                .iter()
                .map(|l| (l.media_type.clone(), l.digest.clone(), l.size))
                .collect(),
        }
    }
}

/// The cache over the engine's store.
pub struct BuildCache {
    store: Arc<Store>,
}

impl BuildCache {
    pub fn new(store: Arc<Store>) -> BuildCache {
        BuildCache { store }
    }

    pub fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        self.store.get(Table::BuildCache, key)
    }

    pub fn put(&self, key: &str, entry: &Entry) -> Result<(), StateError> {
        self.store.put(Table::BuildCache, key, entry)
    }

    /// Records that image `child` was made on image `parent` (Docker's
    /// `Parent` of a committed or built image).
    pub fn set_parent(&self, child: &str, parent: &str) -> Result<(), StateError> {
        self.store
            .put(Table::ImageParents, child, &parent.to_string())
    }

    /// The image `child` was made on, if it was made here.
    pub fn parent(&self, child: &str) -> Result<Option<String>, StateError> {
        self.store.get(Table::ImageParents, child)
    }

    /// Forgets every entry; how many there were.
    pub fn prune(&self) -> Result<usize, StateError> {
        let all: Vec<(String, Value)> = self.store.list(Table::BuildCache)?;
        for (key, _) in &all {
            self.store.delete(Table::BuildCache, key)?;
        }
        Ok(all.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.redb");
        let entry = Entry {
            config: serde_json::json!({"config": {"Env": ["A=1"]}}),
            layers: vec![("m".into(), "sha256:a".into(), 3)],
        };
        {
            let cache = BuildCache::new(Arc::new(Store::open(&path).unwrap()));
            assert_eq!(cache.get("k").unwrap(), None);
            cache.put("k", &entry).unwrap();
        }
        let cache = BuildCache::new(Arc::new(Store::open(&path).unwrap()));
        assert_eq!(cache.get("k").unwrap(), Some(entry.clone()));
        assert_eq!(cache.get("k").unwrap().unwrap().layers()[0].size, 3);
        assert_eq!(cache.prune().unwrap(), 1);
        cache.set_parent("sha256:b", "sha256:a").unwrap();
        assert_eq!(
            cache.parent("sha256:b").unwrap().as_deref(),
            Some("sha256:a")
        );
        assert_eq!(cache.parent("sha256:a").unwrap(), None);
        assert_eq!(cache.get("k").unwrap(), None);
    }
}
