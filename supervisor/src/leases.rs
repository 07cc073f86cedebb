//! Leases: named holds on content and snapshots, so work in progress (a
//! client's writes, a transfer's pieces) is not collected before something
//! else references it. A lease may expire; the collector removes expired
//! leases and then whatever only they held (see `gc`).
//!
//! Removing a lease or one of its resources does not collect by itself:
//! the caller runs the collector afterwards (`gc::collect_now`).

use crate::content::{ContentError, Digest};
use crate::images::unique_id;
use crate::metadata::{now, Labels, LeaseRecord, Metadata, MetadataError, Reader, Resource, Table};

/// The longest lease id, in bytes.
const MAX_ID: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {0:?} not found")]
    NotFound(String),
    #[error("lease {0:?} already exists")]
    AlreadyExists(String),
    #[error("lease id: want 1-256 bytes without NUL")]
    InvalidId(String),
    #[error("unknown resource type {0:?}: want \"content\" or \"snapshots\"")]
    UnknownResourceType(String),
    #[error(transparent)]
    InvalidDigest(ContentError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// What a new lease is made of.
#[derive(Debug, Default)]
pub struct NewLease {
    /// None: a fresh unique id.
    pub id: Option<String>,
    pub labels: Labels,
    /// Seconds until it expires; 0: never.
    pub expire_seconds: u64,
}

/// A resource a lease can hold, checked: ("content", digest) or
/// ("snapshots", key).
pub fn resource(kind: &str, id: &str) -> Result<Resource, LeaseError> {
    match kind {
        "content" => {
            id.parse::<Digest>().map_err(LeaseError::InvalidDigest)?;
        }
        "snapshots" => {}
        other => return Err(LeaseError::UnknownResourceType(other.to_string())),
    }
    Ok((kind.to_string(), id.to_string()))
}

/// Checks that lease `id` exists in `ns` (a call that names a lease adds
/// what it creates to it).
pub fn check_exists(meta: &Metadata, ns: &str, id: &str) -> Result<(), LeaseError> {
    let rx = meta.read()?;
    if !rx.exists(Table::Leases, ns, id)? {
        return Err(LeaseError::NotFound(id.to_string()));
    }
    Ok(())
}

pub fn create(
    meta: &Metadata,
    ns: &str,
    new: NewLease,
) -> Result<(String, LeaseRecord), LeaseError> {
    let id = new.id.unwrap_or_else(|| unique_id("lease"));
    if id.is_empty() || id.contains('\0') || id.len() > MAX_ID {
        return Err(LeaseError::InvalidId(id));
    }
    let t = now();
    let record = LeaseRecord {
        labels: new.labels,
        created: t,
        expires: (new.expire_seconds > 0).then(|| t + new.expire_seconds * 1_000_000_000),
        resources: Default::default(),
    };
    let tx = meta.write()?;
    tx.ensure_namespace(ns)?;
    if tx.exists(Table::Leases, ns, &id)? {
        return Err(LeaseError::AlreadyExists(id));
    }
    tx.put(Table::Leases, ns, &id, &record)?;
    tx.commit()?;
    Ok((id, record))
}

/// Removes a lease (what it held is collected by the next collection).
pub fn delete(meta: &Metadata, ns: &str, id: &str) -> Result<(), LeaseError> {
    let tx = meta.write()?;
    if !tx.delete(Table::Leases, ns, id)? {
        return Err(LeaseError::NotFound(id.to_string()));
    }
    tx.commit()?;
    Ok(())
}

/// The leases of a namespace, by id.
pub fn list(meta: &Metadata, ns: &str) -> Result<Vec<(String, LeaseRecord)>, LeaseError> {
    let rx = meta.read()?;
    Ok(rx.list(Table::Leases, ns)?)
}

pub fn add_resource(
    meta: &Metadata,
    ns: &str,
    id: &str,
    resource: Resource,
) -> Result<(), LeaseError> {
    let tx = meta.write()?;
    if !tx.lease_add(ns, id, resource)? {
        return Err(LeaseError::NotFound(id.to_string()));
    }
    tx.commit()?;
    Ok(())
}

pub fn delete_resource(
    meta: &Metadata,
    ns: &str,
    id: &str,
    resource: &Resource,
) -> Result<(), LeaseError> {
    let tx = meta.write()?;
    let mut lease: LeaseRecord = tx
        .get(Table::Leases, ns, id)?
        .ok_or_else(|| LeaseError::NotFound(id.to_string()))?;
    lease.resources.remove(resource);
    tx.put(Table::Leases, ns, id, &lease)?;
    tx.commit()?;
    Ok(())
}

/// The resources a lease holds, in order.
pub fn resources(meta: &Metadata, ns: &str, id: &str) -> Result<Vec<Resource>, LeaseError> {
    let rx = meta.read()?;
    let lease: LeaseRecord = rx
        .get(Table::Leases, ns, id)?
        .ok_or_else(|| LeaseError::NotFound(id.to_string()))?;
    Ok(lease.resources.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn open() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open(&dir.path().join("meta.redb")).unwrap();
        (dir, meta)
    }

    fn named(id: &str) -> NewLease {
        NewLease {
            id: Some(id.to_string()),
            ..NewLease::default()
        }
    }

    #[test]
    fn leases_are_created_listed_and_deleted_per_namespace() {
        let (_dir, meta) = open();
        let (id, record) = create(&meta, "a", named("l1")).unwrap();
        assert_eq!(id, "l1");
        assert_eq!(record.expires, None);
        let (fresh, _) = create(&meta, "a", NewLease::default()).unwrap();
        assert!(fresh.starts_with("lease-"), "{fresh}");
        create(&meta, "b", named("l1")).unwrap();
        assert!(matches!(
            create(&meta, "a", named("l1")),
            Err(LeaseError::AlreadyExists(i)) if i == "l1"
        ));
        assert_eq!(list(&meta, "a").unwrap().len(), 2);
        check_exists(&meta, "a", "l1").unwrap();
        delete(&meta, "a", "l1").unwrap();
        assert!(matches!(
            check_exists(&meta, "a", "l1"),
            Err(LeaseError::NotFound(_))
        ));
        assert!(matches!(
            delete(&meta, "a", "l1"),
            Err(LeaseError::NotFound(_))
        ));
        check_exists(&meta, "b", "l1").unwrap();
    }

    #[test]
    fn an_expiring_lease_records_when() {
        let (_dir, meta) = open();
        let new = NewLease {
            expire_seconds: 60,
            ..named("l")
        };
        let (_, r) = create(&meta, "a", new).unwrap();
        assert_eq!(r.expires, Some(r.created + 60_000_000_000));
        assert!(!r.expired(r.created));
        assert!(r.expired(r.created + 60_000_000_000));
    }

    #[test]
    fn bad_ids_and_resources_are_refused() {
        let (_dir, meta) = open();
        for bad in ["", "a\0b", &"x".repeat(257)] {
            assert!(
                matches!(
                    create(&meta, "a", named(bad)),
                    Err(LeaseError::InvalidId(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            resource("blobs", "x"),
            Err(LeaseError::UnknownResourceType(t)) if t == "blobs"
        ));
        assert!(matches!(
            resource("content", "sha256:nothex"),
            Err(LeaseError::InvalidDigest(ContentError::InvalidDigest(_)))
        ));
        resource("content", DIGEST).unwrap();
        resource("snapshots", "any key").unwrap();
    }

    #[test]
    fn resources_are_added_and_removed() {
        let (_dir, meta) = open();
        create(&meta, "a", named("l")).unwrap();
        let c = resource("content", DIGEST).unwrap();
        let s = resource("snapshots", "k").unwrap();
        add_resource(&meta, "a", "l", c.clone()).unwrap();
        add_resource(&meta, "a", "l", s.clone()).unwrap();
        add_resource(&meta, "a", "l", s.clone()).unwrap();
        assert_eq!(resources(&meta, "a", "l").unwrap(), [c.clone(), s.clone()]);
        delete_resource(&meta, "a", "l", &s).unwrap();
        assert_eq!(
            resources(&meta, "a", "l").unwrap(),
            std::slice::from_ref(&c)
        );
        assert!(matches!(
            add_resource(&meta, "a", "missing", c.clone()),
            Err(LeaseError::NotFound(_))
        ));
        assert!(matches!(
            delete_resource(&meta, "a", "missing", &c),
            Err(LeaseError::NotFound(_))
        ));
        assert!(matches!(
            resources(&meta, "b", "l"),
            Err(LeaseError::NotFound(_))
        ));
    }
}
