//! Overlayfs snapshots.
//!
//! Each snapshot owns a directory `snapshots/<id>/` holding `fs/` (its upper
//! directory: for a committed snapshot, the layer) and `work/` (overlayfs's
//! work directory). The records in the metadata database say which
//! directories exist for which namespace, under which key, with which
//! parent; a directory no record names is a leftover of a crash and is
//! removed by the garbage collector.
//!
//! The supervisor never mounts a snapshot itself: it hands out the mounts
//! (bind for a snapshot without parents, overlay otherwise) for whoever runs
//! the container, as containerd does.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::metadata::{
    now, Labels, Metadata, MetadataError, Reader, SnapshotKind, SnapshotRecord, Table, WriteTx,
};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("parent snapshot {0:?} is not committed")]
    ParentNotCommitted(String),
    #[error("snapshot {0:?} is not active")]
    NotActive(String),
    #[error("snapshot {key:?} is the parent of {child:?}")]
    HasChildren { key: String, child: String },
    #[error("invalid snapshot key {0:?}: want 1-4096 bytes without NUL")]
    InvalidKey(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// A mount that, performed in order, assembles a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// A snapshot as the API shows it.
#[derive(Debug, Clone)]
pub struct Info {
    pub name: String,
    pub record: SnapshotRecord,
}

pub fn validate_key(key: &str) -> Result<(), SnapshotError> {
    if key.is_empty() || key.len() > 4096 || key.contains('\0') {
        return Err(SnapshotError::InvalidKey(key.to_string()));
    }
    Ok(())
}

pub struct Snapshotter {
    root: PathBuf,
}

/// Checks that `key` is free and `parent`, if any, is committed.
fn check_new(tx: &WriteTx, ns: &str, key: &str, parent: Option<&str>) -> Result<(), SnapshotError> {
    if tx.exists(Table::Snapshots, ns, key)? {
        return Err(SnapshotError::AlreadyExists(key.to_string()));
    }
    if let Some(parent) = parent {
        let p: SnapshotRecord = tx
            .get(Table::Snapshots, ns, parent)?
            .ok_or_else(|| SnapshotError::NotFound(parent.to_string()))?;
        if p.kind != SnapshotKind::Committed {
            return Err(SnapshotError::ParentNotCommitted(parent.to_string()));
        }
    }
    Ok(())
}

impl Snapshotter {
    pub fn open(root: &Path) -> Result<Snapshotter, SnapshotError> {
        fs::create_dir_all(root).map_err(io_err("create", root))?;
        Ok(Snapshotter {
            root: root.to_path_buf(),
        })
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// The upper directory of snapshot `id`: the layer, once committed.
    pub fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn work(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }

    /// Hands out a new, empty snapshot directory. Until a record names it,
    /// it is invisible (and removed by the collector after a crash).
    pub fn allocate(&self, meta: &Metadata) -> Result<u64, SnapshotError> {
        let tx = meta.write()?;
        let id = tx.next_id("snapshots")?;
        tx.commit()?;
        self.make_storage(id)?;
        Ok(id)
    }

    /// Makes the empty `fs` and `work` directories of snapshot `id`.
    fn make_storage(&self, id: u64) -> Result<(), SnapshotError> {
        let dir = self.dir(id);
        // A directory left by a crash under this id holds nothing of value.
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        }
        for sub in [self.fs(id), self.work(id)] {
            fs::create_dir_all(&sub).map_err(io_err("create", &sub))?;
        }
        Ok(())
    }

    /// Removes a snapshot directory (after its record is gone).
    pub fn remove_storage(&self, id: u64) -> Result<(), SnapshotError> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &dir)(e)),
            _ => Ok(()),
        }
    }

    /// The ids of the snapshot directories on disk.
    pub fn storage_ids(&self) -> Result<Vec<u64>, SnapshotError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err("read", &self.root))? {
            let entry = entry.map_err(io_err("read", &self.root))?;
            if let Some(id) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Flushes a snapshot's files to disk before a record names it.
    pub fn sync(&self, id: u64) -> Result<(), SnapshotError> {
        let fs_dir = self.fs(id);
        let dir = fs::File::open(&fs_dir).map_err(io_err("open", &fs_dir))?;
        nix::unistd::syncfs(&dir).map_err(|e| io_err("sync", &fs_dir)(e.into()))
    }

    /// The upper directories of `parent` and its ancestors, nearest first.
    pub fn lowers(
        &self,
        rx: &impl Reader,
        ns: &str,
        parent: Option<&str>,
    ) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut out = Vec::new();
        let mut next = parent.map(str::to_string);
        while let Some(name) = next {
            let record: SnapshotRecord = rx
                .get(Table::Snapshots, ns, &name)?
                .ok_or_else(|| SnapshotError::NotFound(name.clone()))?;
            out.push(self.fs(record.id));
            next = record.parent;
        }
        Ok(out)
    }

    /// Creates an active snapshot (or a view) on `parent`.
    pub fn prepare(
        &self,
        meta: &Metadata,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        kind: SnapshotKind,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let tx = meta.write()?;
        let record = self.prepare_in(&tx, ns, key, parent, kind, labels)?;
        let made = (|| {
            let mounts = self.mounts_of(&tx, ns, &record)?;
            tx.commit()?;
            Ok(mounts)
        })();
        if made.is_err() {
            let _ = self.remove_storage(record.id);
        }
        made
    }

    /// `prepare` inside the caller's transaction: the directories are made
    /// and the record put; the caller commits, or removes the storage of
    /// the record returned when it does not.
    pub fn prepare_in(
        &self,
        tx: &WriteTx,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        kind: SnapshotKind,
        labels: Labels,
    ) -> Result<SnapshotRecord, SnapshotError> {
        validate_key(key)?;
        if let Some(parent) = parent {
            validate_key(parent)?;
        }
        tx.ensure_namespace(ns)?;
        check_new(tx, ns, key, parent)?;
        let id = tx.next_id("snapshots")?;
        self.make_storage(id)?;
        let t = now();
        let record = SnapshotRecord {
            id,
            kind,
            parent: parent.map(str::to_string),
            labels,
            created: t,
            updated: t,
        };
        if let Err(e) = tx.put(Table::Snapshots, ns, key, &record) {
            let _ = self.remove_storage(id);
            return Err(e.into());
        }
        Ok(record)
    }

    /// Records a directory filled outside any snapshot (a layer unpacked
    /// during a pull) as the committed snapshot `name` on `parent`.
    pub fn commit_extracted(
        &self,
        tx: &WriteTx,
        ns: &str,
        name: &str,
        parent: Option<&str>,
        id: u64,
        labels: Labels,
    ) -> Result<(), SnapshotError> {
        check_new(tx, ns, name, parent)?;
        let t = now();
        let record = SnapshotRecord {
            id,
            kind: SnapshotKind::Committed,
            parent: parent.map(str::to_string),
            labels,
            created: t,
            updated: t,
        };
        tx.put(Table::Snapshots, ns, name, &record)?;
        Ok(())
    }

    pub fn get(
        &self,
        rx: &impl Reader,
        ns: &str,
        key: &str,
    ) -> Result<SnapshotRecord, SnapshotError> {
        rx.get(Table::Snapshots, ns, key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    pub fn mounts(
        &self,
        rx: &impl Reader,
        ns: &str,
        key: &str,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let record = self.get(rx, ns, key)?;
        if record.kind == SnapshotKind::Committed {
            return Err(SnapshotError::NotActive(key.to_string()));
        }
        self.mounts_of(rx, ns, &record)
    }

    fn mounts_of(
        &self,
        rx: &impl Reader,
        ns: &str,
        record: &SnapshotRecord,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let lowers = self.lowers(rx, ns, record.parent.as_deref())?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let bind = |source: &Path, mode: &str| Mount {
            kind: "bind".to_string(),
            source: path(source),
            options: vec![mode.to_string(), "rbind".to_string()],
        };
        let lowerdir = || {
            let dirs: Vec<String> = lowers.iter().map(|p| path(p)).collect();
            format!("lowerdir={}", dirs.join(":"))
        };
        Ok(vec![match (record.kind, lowers.len()) {
            (SnapshotKind::View, 0) => bind(&self.fs(record.id), "ro"),
            (SnapshotKind::View, 1) => bind(&lowers[0], "ro"),
            (SnapshotKind::View, _) => Mount {
                kind: "overlay".to_string(),
                source: "overlay".to_string(),
                options: vec!["index=off".to_string(), lowerdir()],
            },
            (_, 0) => bind(&self.fs(record.id), "rw"),
            _ => Mount {
                kind: "overlay".to_string(),
                source: "overlay".to_string(),
                options: vec![
                    "index=off".to_string(),
                    format!("workdir={}", path(&self.work(record.id))),
                    format!("upperdir={}", path(&self.fs(record.id))),
                    lowerdir(),
                ],
            },
        }])
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`.
    pub fn commit(
        &self,
        meta: &Metadata,
        ns: &str,
        name: &str,
        key: &str,
        labels: Labels,
    ) -> Result<(), SnapshotError> {
        validate_key(name)?;
        let tx = meta.write()?;
        let mut record = self.get(&tx, ns, key)?;
        if record.kind != SnapshotKind::Active {
            return Err(SnapshotError::NotActive(key.to_string()));
        }
        if tx.exists(Table::Snapshots, ns, name)? {
            return Err(SnapshotError::AlreadyExists(name.to_string()));
        }
        self.sync(record.id)?;
        record.kind = SnapshotKind::Committed;
        record.labels.extend(labels);
        record.updated = now();
        tx.delete(Table::Snapshots, ns, key)?;
        tx.put(Table::Snapshots, ns, name, &record)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a snapshot that is no other's parent.
    pub fn remove(&self, meta: &Metadata, ns: &str, key: &str) -> Result<(), SnapshotError> {
        let tx = meta.write()?;
        let id = self.remove_in(&tx, ns, key)?;
        tx.commit()?;
        // The record is gone: a crash before the directory follows leaves
        // an orphan the collector removes.
        self.remove_storage(id)
    }

    /// `remove` inside the caller's transaction: deletes the record and
    /// returns the id whose storage the caller removes once committed.
    pub fn remove_in(&self, tx: &WriteTx, ns: &str, key: &str) -> Result<u64, SnapshotError> {
        let record = self.get(tx, ns, key)?;
        for (child, r) in tx.list::<SnapshotRecord>(Table::Snapshots, ns)? {
            if r.parent.as_deref() == Some(key) {
                return Err(SnapshotError::HasChildren {
                    key: key.to_string(),
                    child,
                });
            }
        }
        tx.delete(Table::Snapshots, ns, key)?;
        Ok(record.id)
    }

    pub fn list(&self, rx: &impl Reader, ns: &str) -> Result<Vec<Info>, SnapshotError> {
        Ok(rx
            .list::<SnapshotRecord>(Table::Snapshots, ns)?
            .into_iter()
            .map(|(name, record)| Info { name, record })
            .collect())
    }

    /// Disk use of the snapshot's own layer: bytes in blocks, and inodes
    /// (hard links counted once).
    pub fn usage(
        &self,
        rx: &impl Reader,
        ns: &str,
        key: &str,
    ) -> Result<(u64, u64), SnapshotError> {
        let record = self.get(rx, ns, key)?;
        let mut seen = HashSet::new();
        let mut size = 0;
        let mut stack = vec![self.fs(record.id)];
        while let Some(dir) = stack.pop() {
            let md = fs::symlink_metadata(&dir).map_err(io_err("stat", &dir))?;
            if seen.insert((md.dev(), md.ino())) {
                size += md.blocks() * 512;
            }
            for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
                let entry = entry.map_err(io_err("read", &dir))?;
                let path = entry.path();
                let md = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
                if md.is_dir() {
                    stack.push(path);
                } else if seen.insert((md.dev(), md.ino())) {
                    size += md.blocks() * 512;
                }
            }
        }
        Ok((size, seen.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Metadata, Snapshotter) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open(&dir.path().join("meta.redb")).unwrap();
        let snaps = Snapshotter::open(&dir.path().join("snapshots")).unwrap();
        (dir, meta, snaps)
    }

    #[test]
    fn prepare_commit_and_stack() {
        let (_dir, meta, snaps) = setup();
        let m = snaps
            .prepare(
                &meta,
                "ns",
                "base-active",
                None,
                SnapshotKind::Active,
                Labels::new(),
            )
            .unwrap();
        assert_eq!(m[0].kind, "bind");
        assert!(m[0].options.contains(&"rw".to_string()));
        let upper = PathBuf::from(&m[0].source);
        fs::write(upper.join("file"), "x").unwrap();
        snaps
            .commit(&meta, "ns", "base", "base-active", Labels::new())
            .unwrap();
        let m = snaps
            .prepare(
                &meta,
                "ns",
                "top",
                Some("base"),
                SnapshotKind::Active,
                Labels::new(),
            )
            .unwrap();
        assert_eq!(m[0].kind, "overlay");
        assert!(m[0].options.iter().any(|o| o.starts_with("upperdir=")));
        assert!(m[0]
            .options
            .contains(&format!("lowerdir={}", upper.display())));
        // A view of one committed layer is a read-only bind of it.
        let v = snaps
            .prepare(
                &meta,
                "ns",
                "v",
                Some("base"),
                SnapshotKind::View,
                Labels::new(),
            )
            .unwrap();
        assert_eq!(v[0].source, upper.to_string_lossy());
        assert!(v[0].options.contains(&"ro".to_string()));
        // Other namespaces see none of it.
        assert!(matches!(
            snaps.prepare(
                &meta,
                "other",
                "x",
                Some("base"),
                SnapshotKind::Active,
                Labels::new()
            ),
            Err(SnapshotError::NotFound(_))
        ));
        assert!(matches!(
            snaps.remove(&meta, "ns", "base"),
            Err(SnapshotError::HasChildren { .. })
        ));
        assert!(matches!(
            snaps.prepare(
                &meta,
                "ns",
                "top",
                None,
                SnapshotKind::Active,
                Labels::new()
            ),
            Err(SnapshotError::AlreadyExists(_))
        ));
        let (size, inodes) = snaps.usage(&meta.read().unwrap(), "ns", "base").unwrap();
        assert!(size > 0 && inodes == 2, "{size} {inodes}");
        snaps.remove(&meta, "ns", "top").unwrap();
        snaps.remove(&meta, "ns", "v").unwrap();
        snaps.remove(&meta, "ns", "base").unwrap();
        assert!(snaps.storage_ids().unwrap().is_empty());
    }

    #[test]
    fn an_active_parent_is_refused() {
        let (_dir, meta, snaps) = setup();
        snaps
            .prepare(&meta, "ns", "a", None, SnapshotKind::Active, Labels::new())
            .unwrap();
        assert!(matches!(
            snaps.prepare(
                &meta,
                "ns",
                "b",
                Some("a"),
                SnapshotKind::Active,
                Labels::new()
            ),
            Err(SnapshotError::ParentNotCommitted(_))
        ));
        // The refused snapshot's directory is gone again.
        assert_eq!(snaps.storage_ids().unwrap().len(), 1);
    }
}
