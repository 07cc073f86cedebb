//! The CRI's own records of its pod sandboxes and containers, kept durably
//! in the supervisor's metadata database (tables `cri_sandboxes` and
//! `cri_containers`, namespace [`NAMESPACE`], keyed by the id, which is the
//! id of the supervisor container behind it).
//!
//! The supervisor container holds what runs (image, snapshot, OCI spec);
//! these records hold what only the CRI knows: the config as kubelet gave
//! it (protobuf bytes, so every field survives a restart), times, the
//! network namespace and the CNI result, exit details and the log path. A
//! record is written in one durable transaction, so a `kill -9` leaves the
//! last state whole.
//!
//! [`IdLocks`] serialises the calls that change one sandbox or container
//! (a stop racing a remove).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::NAMESPACE;
use crate::metadata::{Metadata, MetadataError, Reader, Table, WriteTx};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("the stored {what} of {id:?} cannot be decoded: {reason}")]
    Decode {
        what: &'static str,
        id: String,
        reason: String,
    },
}

/// Protobuf bytes kept as base64 text in the JSON record.
mod proto_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// Whether a sandbox's pause process is meant to run. The live state is
/// this and the task's: a `Ready` sandbox whose pause died is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// Run and not stopped since.
    Ready,
    /// Stopped (its pause task gone, its network released).
    NotReady,
}

/// What the CRI set up for a sandbox's network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxNetwork {
    /// The network namespace, bind-mounted under the supervisor's state
    /// directory; `None` for a sandbox in the host's (`NODE`) or one whose
    /// namespace is released.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The CNI config list's name, the list itself and the result of its
    /// ADD, kept for the DEL (also after a crash, or a changed config
    /// directory); `None`: no CNI network attached.
    #[serde(default)]
    pub cni_network: Option<String>,
    #[serde(default)]
    pub cni_config: Option<serde_json::Value>,
    #[serde(default)]
    pub cni_result: Option<serde_json::Value>,
    /// The pod's first address and the others (without prefix lengths).
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub additional_ips: Vec<String>,
}

/// A pod sandbox as the CRI keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// `runtime.v1.PodSandboxConfig`, protobuf-encoded.
    #[serde(with = "proto_bytes")]
    pub config: Vec<u8>,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub state: SandboxState,
    #[serde(default)]
    pub runtime_handler: String,
    /// The image the pause process runs from, as stored.
    pub image: String,
    /// The pause process (0 once stopped).
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub network: SandboxNetwork,
    /// The sandbox's files (hostname, hosts, resolv.conf) that its
    /// containers mount.
    pub dir: PathBuf,
    /// The pod's /dev/shm (a tmpfs the CRI mounted), shared by its
    /// containers; `None` when the pod uses the host's IPC namespace.
    #[serde(default)]
    pub shm: Option<PathBuf>,
    /// The cgroup the pause process was put in (cgroupfs path).
    #[serde(default)]
    pub cgroup: String,
}

impl SandboxRecord {
    pub fn config(&self, id: &str) -> Result<berth_proto::cri::v1::PodSandboxConfig, StoreError> {
        berth_proto::cri::v1::PodSandboxConfig::decode(self.config.as_slice()).map_err(|e| {
            StoreError::Decode {
                what: "sandbox config",
                id: id.to_string(),
                reason: e.to_string(),
            }
        })
    }
}

/// A CRI container as the CRI keeps it (the containers part fills and
/// extends it; unknown fields default, so records stay readable).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub sandbox_id: String,
    /// `runtime.v1.ContainerConfig`, protobuf-encoded.
    #[serde(with = "proto_bytes")]
    pub config: Vec<u8>,
    /// The image as the config named it, and its id (`sha256:...`).
    #[serde(default)]
    pub image_ref: String,
    #[serde(default)]
    pub image_id: String,
    /// Nanoseconds since the epoch; 0: not yet.
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// The log file (the sandbox's log directory joined with the config's
    /// log path); `None`: no log.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
}

impl ContainerRecord {
    pub fn config(&self, id: &str) -> Result<berth_proto::cri::v1::ContainerConfig, StoreError> {
        berth_proto::cri::v1::ContainerConfig::decode(self.config.as_slice()).map_err(|e| {
            StoreError::Decode {
                what: "container config",
                id: id.to_string(),
                reason: e.to_string(),
            }
        })
    }
}

/// The CRI's records over the supervisor's metadata.
pub struct Store {
    meta: Arc<Metadata>,
}

impl Store {
    pub fn new(meta: Arc<Metadata>) -> Store {
        Store { meta }
    }

    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        Ok(self.meta.read()?.get(Table::CriSandboxes, NAMESPACE, id)?)
    }

    /// Every sandbox, by id.
    pub fn sandboxes(&self) -> Result<Vec<(String, SandboxRecord)>, StoreError> {
        Ok(self.meta.read()?.list(Table::CriSandboxes, NAMESPACE)?)
    }

    pub fn put_sandbox(&self, id: &str, record: &SandboxRecord) -> Result<(), StoreError> {
        let tx = self.meta.write()?;
        tx.ensure_namespace(NAMESPACE)?;
        tx.put(Table::CriSandboxes, NAMESPACE, id, record)?;
        tx.commit()?;
        Ok(())
    }

    /// Writes a sandbox's record in a transaction of the caller's (one
    /// commit with the supervisor container behind it).
    pub fn put_sandbox_in(
        tx: &WriteTx,
        id: &str,
        record: &SandboxRecord,
    ) -> Result<(), MetadataError> {
        tx.ensure_namespace(NAMESPACE)?;
        tx.put(Table::CriSandboxes, NAMESPACE, id, record)
    }

    /// Removes a sandbox's record in a transaction of the caller's.
    pub fn delete_sandbox_in(tx: &WriteTx, id: &str) -> Result<bool, MetadataError> {
        tx.delete(Table::CriSandboxes, NAMESPACE, id)
    }

    /// Writes a container's record in a transaction of the caller's.
    pub fn put_container_in(
        tx: &WriteTx,
        id: &str,
        record: &ContainerRecord,
    ) -> Result<(), MetadataError> {
        tx.ensure_namespace(NAMESPACE)?;
        tx.put(Table::CriContainers, NAMESPACE, id, record)
    }

    /// Removes a container's record in a transaction of the caller's.
    pub fn delete_container_in(tx: &WriteTx, id: &str) -> Result<bool, MetadataError> {
        tx.delete(Table::CriContainers, NAMESPACE, id)
    }

    /// Changes a sandbox's record in one transaction; the new record, or
    /// `None` when there is none.
    pub fn update_sandbox(
        &self,
        id: &str,
        change: impl FnOnce(&mut SandboxRecord),
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let tx = self.meta.write()?;
        let Some(mut record) = tx.get::<SandboxRecord>(Table::CriSandboxes, NAMESPACE, id)? else {
            return Ok(None);
        };
        change(&mut record);
        tx.put(Table::CriSandboxes, NAMESPACE, id, &record)?;
        tx.commit()?;
        Ok(Some(record))
    }

    /// Removes a sandbox's record; whether it was there.
    pub fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.meta.write()?;
        let removed = tx.delete(Table::CriSandboxes, NAMESPACE, id)?;
        tx.commit()?;
        Ok(removed)
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        Ok(self.meta.read()?.get(Table::CriContainers, NAMESPACE, id)?)
    }

    /// Every container, by id.
    pub fn containers(&self) -> Result<Vec<(String, ContainerRecord)>, StoreError> {
        Ok(self.meta.read()?.list(Table::CriContainers, NAMESPACE)?)
    }

    /// The containers of one sandbox, by id.
    pub fn containers_of(
        &self,
        sandbox: &str,
    ) -> Result<Vec<(String, ContainerRecord)>, StoreError> {
        let mut all = self.containers()?;
        all.retain(|(_, c)| c.sandbox_id == sandbox);
        Ok(all)
    }

    pub fn put_container(&self, id: &str, record: &ContainerRecord) -> Result<(), StoreError> {
        let tx = self.meta.write()?;
        tx.ensure_namespace(NAMESPACE)?;
        tx.put(Table::CriContainers, NAMESPACE, id, record)?;
        tx.commit()?;
        Ok(())
    }

    /// Changes a container's record in one transaction; the new record, or
    /// `None` when there is none.
    pub fn update_container(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<Option<ContainerRecord>, StoreError> {
        let tx = self.meta.write()?;
        let Some(mut record) = tx.get::<ContainerRecord>(Table::CriContainers, NAMESPACE, id)?
        else {
            return Ok(None);
        };
        change(&mut record);
        tx.put(Table::CriContainers, NAMESPACE, id, &record)?;
        tx.commit()?;
        Ok(Some(record))
    }

    /// Removes a container's record; whether it was there.
    pub fn delete_container(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.meta.write()?;
        let removed = tx.delete(Table::CriContainers, NAMESPACE, id)?;
        tx.commit()?;
        Ok(removed)
    }

    /// The full id a CRI caller's id stands for: itself when a record has
    /// it, else the one id it is a unique prefix of (as containerd
    /// resolves them); `None` for no record or an ambiguous prefix.
    pub fn resolve(&self, table: CriTable, wanted: &str) -> Result<Option<String>, StoreError> {
        if wanted.is_empty() {
            return Ok(None);
        }
        let rx = self.meta.read()?;
        let ids: Vec<String> = match table {
            CriTable::Sandboxes => rx
                .list::<serde_json::Value>(Table::CriSandboxes, NAMESPACE)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            CriTable::Containers => rx
                .list::<serde_json::Value>(Table::CriContainers, NAMESPACE)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        };
        if ids.iter().any(|id| id == wanted) {
            return Ok(Some(wanted.to_string()));
        }
        let mut matching = ids.into_iter().filter(|id| id.starts_with(wanted));
        Ok(match (matching.next(), matching.next()) {
            (Some(id), None) => Some(id),
            _ => None,
        })
    }
}

/// Which of the CRI's tables an id is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriTable {
    Sandboxes,
    Containers,
}

/// One async lock per id, so calls changing one sandbox or container run
/// one after the other.
#[derive(Default)]
pub struct IdLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl IdLocks {
    /// Waits for and holds the lock of `id`.
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for are dropped as new ones come.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(locks.entry(id.to_string()).or_default())
        };
        lock.lock_owned().await
    }
}

/// A new id: 64 lowercase hex digits from the kernel's random source.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `bytes`, which lives across the call.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::cri::v1 as cri;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open(&dir.path().join("meta.redb")).unwrap();
        (dir, Store::new(Arc::new(meta)))
    }

    fn sandbox(name: &str) -> SandboxRecord {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: "u".into(),
                namespace: "default".into(),
                attempt: 1,
            }),
            hostname: "h".into(),
            ..Default::default()
        };
        SandboxRecord {
            config: config.encode_to_vec(),
            created_at: 5,
            state: SandboxState::Ready,
            runtime_handler: String::new(),
            image: "registry.k8s.io/pause:3.10".into(),
            pid: 42,
            network: SandboxNetwork::default(),
            dir: PathBuf::from("/x"),
            shm: None,
            cgroup: String::new(),
        }
    }

    #[test]
    fn sandboxes_survive_reopen_with_their_config_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = Store::new(Arc::new(Metadata::open(&path).unwrap()));
            store.put_sandbox("abc", &sandbox("one")).unwrap();
            let changed = store
                .update_sandbox("abc", |r| {
                    r.state = SandboxState::NotReady;
                    r.network.ip = "10.1.0.2".into();
                })
                .unwrap()
                .unwrap();
            assert_eq!(changed.state, SandboxState::NotReady);
            assert!(store.update_sandbox("nope", |_| {}).unwrap().is_none());
        }
        let store = Store::new(Arc::new(Metadata::open(&path).unwrap()));
        let record = store.sandbox("abc").unwrap().unwrap();
        assert_eq!(record.state, SandboxState::NotReady);
        assert_eq!(record.network.ip, "10.1.0.2");
        let config = record.config("abc").unwrap();
        assert_eq!(config.metadata.unwrap().name, "one");
        assert_eq!(config.hostname, "h");
        assert!(store.delete_sandbox("abc").unwrap());
        assert!(!store.delete_sandbox("abc").unwrap());
        assert!(store.sandboxes().unwrap().is_empty());
    }

    #[test]
    fn containers_are_listed_per_sandbox() {
        let (_dir, store) = store();
        for (id, sandbox) in [("c1", "s1"), ("c2", "s2"), ("c3", "s1")] {
            let record = ContainerRecord {
                sandbox_id: sandbox.into(),
                created_at: 1,
                ..Default::default()
            };
            store.put_container(id, &record).unwrap();
        }
        let ids: Vec<String> = store
            .containers_of("s1")
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["c1", "c3"]);
        store
            .update_container("c2", |c| c.exit_code = 3)
            .unwrap()
            .unwrap();
        assert_eq!(store.container("c2").unwrap().unwrap().exit_code, 3);
        assert!(store.delete_container("c2").unwrap());
        assert!(store.container("c2").unwrap().is_none());
    }

    #[test]
    fn ids_resolve_in_full_or_by_a_unique_prefix() {
        let (_dir, store) = store();
        store.put_sandbox("abc1", &sandbox("a")).unwrap();
        store.put_sandbox("abd2", &sandbox("b")).unwrap();
        let r = |w: &str| store.resolve(CriTable::Sandboxes, w).unwrap();
        assert_eq!(r("abc1").as_deref(), Some("abc1"));
        assert_eq!(r("abd").as_deref(), Some("abd2"));
        assert_eq!(r("ab"), None);
        assert_eq!(r(""), None);
        assert_eq!(r("x"), None);
        assert_eq!(store.resolve(CriTable::Containers, "abc1").unwrap(), None);
    }

    #[test]
    fn new_ids_are_64_hex_and_differ() {
        let a = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, new_id().unwrap());
    }
}
