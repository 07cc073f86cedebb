//! The engine's database: one redb file under `<data-root>/engine`, holding
//! the Docker-level records a restart must keep (containers, volumes,
//! networks and their endpoints, the build cache). Every record is JSON under its id. A write
//! commits durably (fsync) before the client is told it succeeded, so a
//! `kill -9` at any moment loses nothing a client saw succeed.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("open the engine database {path}: {source}")]
    Open { path: PathBuf, source: redb::Error },
    #[error("engine database: {0}")]
    Db(#[from] redb::Error),
    #[error("engine database record {key:?} in {table} is corrupt: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("encode record {key:?} for {table}: {source}")]
    Encode {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> StateError {
                StateError::Db(e.into())
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

/// The kinds of record, a table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Containers,
    Volumes,
    /// The build cache: a step's key to the image it made.
    BuildCache,
    Networks,
    /// A container's place on a network, under `<container>/<network>`.
    Endpoints,
    /// An image made here (commit, build) to the image it was made on.
    ImageParents,
    /// The bridge device of a removed network, until the device is gone
    /// (it is deleted after `DELETE /networks` answers; a crash before
    /// that leaves it here for the next start to delete).
    RemovedBridges,
}

impl Table {
    const ALL: [Table; 7] = [
        Table::Containers,
        Table::Volumes,
        Table::BuildCache,
        Table::Networks,
        Table::Endpoints,
        Table::ImageParents,
        Table::RemovedBridges,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Containers => "containers",
            Table::Volumes => "volumes",
            Table::BuildCache => "build_cache",
            Table::Networks => "networks",
            Table::Endpoints => "endpoints",
            Table::ImageParents => "image_parents",
            Table::RemovedBridges => "removed_bridges",
        }
    }

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

/// The engine's database.
pub struct Store {
    db: redb::Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StateError> {
        let open = |source: redb::Error| StateError::Open {
            path: path.to_path_buf(),
            source,
        };
        let db = redb::Builder::new()
            .set_cache_size(1 << 20)
            .create(path)
            .map_err(|e| open(e.into()))?;
        let tx = db.begin_write().map_err(|e| open(e.into()))?;
        for table in Table::ALL {
            tx.open_table(table.def()).map_err(|e| open(e.into()))?;
        }
        tx.commit().map_err(|e| open(e.into()))?;
        Ok(Store { db })
    }

    /// Writes a record (replacing one with the same key), durably.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StateError::Encode {
            table: table.name(),
            key: key.to_string(),
            source,
        })?;
        let tx = self.db.begin_write()?;
        tx.open_table(table.def())?.insert(key, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// One record, if there is one by that key.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        let Some(value) = t.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|source| StateError::Corrupt {
                table: table.name(),
                key: key.to_string(),
                source,
            })
    }

    /// Writes a record without waiting for the disk: it is durable once a
    /// later durable write commits (the caller makes one before a client
    /// hears of it), and lost with a crash before that.
    pub fn put_deferred<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StateError::Encode {
            table: table.name(),
            key: key.to_string(),
            source,
        })?;
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::None)
            .map_err(|e| StateError::Db(e.into()))?;
        tx.open_table(table.def())?.insert(key, bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// [`Store::delete`] without waiting for the disk (see
    /// [`Store::put_deferred`]).
    pub fn delete_deferred(&self, table: Table, key: &str) -> Result<(), StateError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::None)
            .map_err(|e| StateError::Db(e.into()))?;
        tx.open_table(table.def())?.remove(key)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a record; removing none is not an error.
    pub fn delete(&self, table: Table, key: &str) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        tx.open_table(table.def())?.remove(key)?;
        tx.commit()?;
        Ok(())
    }

    /// Every record of a table, by key.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StateError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (key, value) = entry?;
            let key = key.value().to_string();
            let record =
                serde_json::from_slice(value.value()).map_err(|source| StateError::Corrupt {
                    table: table.name(),
                    key: key.clone(),
                    source,
                })?;
            out.push((key, record));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .put(Table::Containers, "a", &serde_json::json!({"x": 1}))
                .unwrap();
            store
                .put(Table::Containers, "b", &serde_json::json!({"x": 2}))
                .unwrap();
            store.delete(Table::Containers, "b").unwrap();
            store.delete(Table::Containers, "missing").unwrap();
        }
        let store = Store::open(&path).unwrap();
        let all: Vec<(String, serde_json::Value)> = store.list(Table::Containers).unwrap();
        assert_eq!(all, vec![("a".to_string(), serde_json::json!({"x": 1}))]);
    }
}
