//! The supervisor's metadata: one redb database holding namespaces, images,
//! the content each namespace holds, snapshots, leases and containers.
//!
//! Every record is JSON under a key `<namespace>\0<name>`, so the records of a
//! namespace are one key range. A write transaction commits durably (fsync)
//! or not at all, which is what makes a `kill -9` at any moment safe: the
//! files a record names (blobs, snapshot directories) are complete before
//! the record is written, and files no record names are swept at start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::oci::Descriptor;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("open metadata database {path}: {source}")]
    Open { path: PathBuf, source: redb::Error },
    #[error("metadata database: {0}")]
    Db(#[from] redb::Error),
    #[error("metadata record {key:?} in {table} is corrupt: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("invalid namespace {0:?}: want 1-76 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")]
    InvalidNamespace(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for MetadataError {
            fn from(e: $t) -> MetadataError {
                MetadataError::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The kinds of record, one table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Namespaces,
    Images,
    Content,
    Snapshots,
    Leases,
    /// Containers, keyed by id (see `containers`).
    Containers,
    /// Keyed by sequence number, in no namespace (see `events`).
    Events,
    /// The CRI's pod sandboxes and containers, keyed by id (see
    /// `cri::store`).
    CriSandboxes,
    CriContainers,
}

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }

    fn name(self) -> &'static str {
        match self {
            Table::Namespaces => "namespaces",
            Table::Images => "images",
            Table::Content => "content",
            Table::Snapshots => "snapshots",
            Table::Leases => "leases",
            Table::Containers => "containers",
            Table::Events => "events",
            Table::CriSandboxes => "cri_sandboxes",
            Table::CriContainers => "cri_containers",
        }
    }

    const ALL: [Table; 9] = [
        Table::Namespaces,
        Table::Images,
        Table::Content,
        Table::Snapshots,
        Table::Leases,
        Table::Containers,
        Table::Events,
        Table::CriSandboxes,
        Table::CriContainers,
    ];
}

const COUNTERS: TableDefinition<'static, &'static str, u64> = TableDefinition::new("counters");

/// Nanoseconds since the epoch, as records store times.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: Descriptor,
    #[serde(default)]
    pub labels: Labels,
    pub created: u64,
    pub updated: u64,
}

/// A blob held by a namespace (the bytes are shared, in the content store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContentRecord {
    #[serde(default)]
    pub labels: Labels,
    pub created: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    View,
    Active,
    Committed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The directory under the snapshotter's root: `snapshots/<id>/`.
    pub id: u64,
    pub kind: SnapshotKind,
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    pub created: u64,
    pub updated: u64,
}

/// A resource a lease keeps: ("content", digest) or ("snapshots", key).
pub type Resource = (String, String);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseRecord {
    #[serde(default)]
    pub labels: Labels,
    pub created: u64,
    /// Nanoseconds since the epoch; none lasts until deleted.
    pub expires: Option<u64>,
    #[serde(default)]
    pub resources: BTreeSet<Resource>,
}

impl LeaseRecord {
    pub fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Checks a namespace name (containerd's rule: a DNS-label-like name).
pub fn validate_namespace(ns: &str) -> Result<(), MetadataError> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns.as_bytes()[0].is_ascii_alphanumeric()
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(MetadataError::InvalidNamespace(ns.to_string()))
    }
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}\0{name}")
}

fn split_key(k: &str) -> (&str, &str) {
    k.split_once('\0').unwrap_or(("", k))
}

fn decode<T: DeserializeOwned>(table: Table, k: &str, v: &[u8]) -> Result<T, MetadataError> {
    serde_json::from_slice(v).map_err(|source| MetadataError::Corrupt {
        table: table.name(),
        key: k.replace('\0', "/"),
        source,
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain records (strings, numbers, maps with string
    // keys) cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub struct Metadata {
    db: redb::Database,
}

impl Metadata {
    pub fn open(path: &Path) -> Result<Metadata, MetadataError> {
        let open = |source: redb::Error| MetadataError::Open {
            path: path.to_path_buf(),
            source,
        };
        // A small page cache: the database is small and the supervisor's
        // idle memory matters more than its metadata read speed.
        let db = redb::Builder::new()
            .set_cache_size(1 << 20)
            .create(path)
            .map_err(|e| open(e.into()))?;
        let tx = db.begin_write().map_err(|e| open(e.into()))?;
        for table in Table::ALL {
            tx.open_table(table.def()).map_err(|e| open(e.into()))?;
        }
        tx.open_table(COUNTERS).map_err(|e| open(e.into()))?;
        tx.commit().map_err(|e| open(e.into()))?;
        Ok(Metadata { db })
    }

    pub fn write(&self) -> Result<WriteTx, MetadataError> {
        Ok(WriteTx {
            tx: self.db.begin_write()?,
        })
    }

    pub fn read(&self) -> Result<ReadTx, MetadataError> {
        Ok(ReadTx {
            tx: self.db.begin_read()?,
        })
    }
}

/// Reads shared by read and write transactions.
pub trait Reader {
    fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        ns: &str,
        name: &str,
    ) -> Result<Option<T>, MetadataError>;

    /// The records of one namespace, by name.
    fn list<T: DeserializeOwned>(
        &self,
        table: Table,
        ns: &str,
    ) -> Result<Vec<(String, T)>, MetadataError>;

    /// Every record of a table: (namespace, name, record).
    fn list_all<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, String, T)>, MetadataError>;

    fn exists(&self, table: Table, ns: &str, name: &str) -> Result<bool, MetadataError> {
        Ok(self.get::<serde_json::Value>(table, ns, name)?.is_some())
    }

    /// Whether a namespace holds anything at all.
    fn namespace_in_use(&self, ns: &str) -> Result<bool, MetadataError> {
        for table in [
            Table::Images,
            Table::Content,
            Table::Snapshots,
            Table::Leases,
            Table::Containers,
            Table::CriSandboxes,
            Table::CriContainers,
        ] {
            if !self.list::<serde_json::Value>(table, ns)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

macro_rules! impl_reader {
    ($ty:ty) => {
        impl Reader for $ty {
            fn get<T: DeserializeOwned>(
                &self,
                table: Table,
                ns: &str,
                name: &str,
            ) -> Result<Option<T>, MetadataError> {
                let t = self.tx.open_table(table.def())?;
                let k = key(ns, name);
                let found = match t.get(k.as_str())? {
                    Some(v) => Some(decode(table, &k, v.value())?),
                    None => None,
                };
                Ok(found)
            }

            fn list<T: DeserializeOwned>(
                &self,
                table: Table,
                ns: &str,
            ) -> Result<Vec<(String, T)>, MetadataError> {
                let t = self.tx.open_table(table.def())?;
                let start = format!("{ns}\0");
                let end = format!("{ns}\u{1}");
                let mut out = Vec::new();
                for item in t.range(start.as_str()..end.as_str())? {
                    let (k, v) = item?;
                    let k = k.value();
                    out.push((split_key(k).1.to_string(), decode(table, k, v.value())?));
                }
                Ok(out)
            }

            fn list_all<T: DeserializeOwned>(
                &self,
                table: Table,
            ) -> Result<Vec<(String, String, T)>, MetadataError> {
                let t = self.tx.open_table(table.def())?;
                let mut out = Vec::new();
                for item in t.iter()? {
                    let (k, v) = item?;
                    let k = k.value();
                    let (ns, name) = split_key(k);
                    out.push((
                        ns.to_string(),
                        name.to_string(),
                        decode(table, k, v.value())?,
                    ));
                }
                Ok(out)
            }
        }
    };
}

pub struct ReadTx {
    tx: redb::ReadTransaction,
}

pub struct WriteTx {
    tx: redb::WriteTransaction,
}

impl_reader!(ReadTx);
impl_reader!(WriteTx);

impl WriteTx {
    pub fn put<T: Serialize>(
        &self,
        table: Table,
        ns: &str,
        name: &str,
        record: &T,
    ) -> Result<(), MetadataError> {
        let mut t = self.tx.open_table(table.def())?;
        t.insert(key(ns, name).as_str(), encode(record).as_slice())?;
        Ok(())
    }

    /// Removes a record; whether it was there.
    pub fn delete(&self, table: Table, ns: &str, name: &str) -> Result<bool, MetadataError> {
        let mut t = self.tx.open_table(table.def())?;
        let removed = t.remove(key(ns, name).as_str())?.is_some();
        Ok(removed)
    }

    /// Records the namespace if it is new (namespaces spring into being
    /// when a call first uses them).
    pub fn ensure_namespace(&self, ns: &str) -> Result<(), MetadataError> {
        validate_namespace(ns)?;
        if !self.exists(Table::Namespaces, "", ns)? {
            self.put(Table::Namespaces, "", ns, &NamespaceRecord::default())?;
        }
        Ok(())
    }

    /// A number never handed out before (snapshot directory names).
    pub fn next_id(&self, counter: &str) -> Result<u64, MetadataError> {
        let mut t = self.tx.open_table(COUNTERS)?;
        let next = t.get(counter)?.map(|v| v.value()).unwrap_or(0) + 1;
        t.insert(counter, next)?;
        Ok(next)
    }

    /// Adds a resource to a lease, if the lease exists; whether it did.
    pub fn lease_add(
        &self,
        ns: &str,
        lease: &str,
        resource: Resource,
    ) -> Result<bool, MetadataError> {
        let Some(mut record) = self.get::<LeaseRecord>(Table::Leases, ns, lease)? else {
            return Ok(false);
        };
        if record.resources.insert(resource) {
            self.put(Table::Leases, ns, lease, &record)?;
        }
        Ok(true)
    }

    pub fn commit(self) -> Result<(), MetadataError> {
        self.tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_scoped_by_namespace_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let meta = Metadata::open(&path).unwrap();
            let tx = meta.write().unwrap();
            tx.ensure_namespace("a").unwrap();
            tx.put(Table::Content, "a", "sha256:1", &ContentRecord::default())
                .unwrap();
            tx.put(Table::Content, "ab", "sha256:2", &ContentRecord::default())
                .unwrap();
            assert_eq!(tx.next_id("snapshots").unwrap(), 1);
            tx.commit().unwrap();
            // An uncommitted transaction leaves nothing.
            let tx = meta.write().unwrap();
            tx.put(Table::Content, "a", "sha256:3", &ContentRecord::default())
                .unwrap();
            drop(tx);
        }
        let meta = Metadata::open(&path).unwrap();
        let rx = meta.read().unwrap();
        let a: Vec<(String, ContentRecord)> = rx.list(Table::Content, "a").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, "sha256:1");
        assert_eq!(
            rx.list_all::<ContentRecord>(Table::Content).unwrap().len(),
            2
        );
        assert!(rx.exists(Table::Namespaces, "", "a").unwrap());
        drop(rx);
        let tx = meta.write().unwrap();
        assert_eq!(tx.next_id("snapshots").unwrap(), 2);
        assert!(tx.delete(Table::Content, "a", "sha256:1").unwrap());
        assert!(!tx.delete(Table::Content, "a", "sha256:1").unwrap());
    }

    #[test]
    fn namespace_names_are_checked() {
        for good in ["default", "k8s.io", "a-b_c", "0"] {
            validate_namespace(good).unwrap();
        }
        for bad in ["", "A", "-a", "a/b", "a\0b", &"x".repeat(77)] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
    }
}
