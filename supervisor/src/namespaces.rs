//! Namespaces: the records of the names that scope every other object.
//!
//! A namespace springs into being when a call first uses it
//! (`WriteTx::ensure_namespace`); these are the explicit operations of the
//! Namespaces service. A namespace is deleted only when it holds nothing.

use crate::metadata::{
    validate_namespace, Labels, Metadata, MetadataError, NamespaceRecord, Reader, Table,
};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {0:?} not found")]
    NotFound(String),
    #[error("namespace {0:?} already exists")]
    AlreadyExists(String),
    #[error("namespace {0:?} is not empty: it holds images, content, snapshots or leases")]
    NotEmpty(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

pub fn get(meta: &Metadata, name: &str) -> Result<NamespaceRecord, NamespaceError> {
    let rx = meta.read()?;
    rx.get(Table::Namespaces, "", name)?
        .ok_or_else(|| NamespaceError::NotFound(name.to_string()))
}

/// Every namespace, by name.
pub fn list(meta: &Metadata) -> Result<Vec<(String, NamespaceRecord)>, NamespaceError> {
    let rx = meta.read()?;
    Ok(rx.list(Table::Namespaces, "")?)
}

/// Records a new namespace with a valid name.
pub fn create(
    meta: &Metadata,
    name: &str,
    labels: Labels,
) -> Result<NamespaceRecord, NamespaceError> {
    validate_namespace(name)?;
    let tx = meta.write()?;
    if tx.exists(Table::Namespaces, "", name)? {
        return Err(NamespaceError::AlreadyExists(name.to_string()));
    }
    let record = NamespaceRecord { labels };
    tx.put(Table::Namespaces, "", name, &record)?;
    tx.commit()?;
    Ok(record)
}

/// Replaces the labels of an existing namespace.
pub fn update(
    meta: &Metadata,
    name: &str,
    labels: Labels,
) -> Result<NamespaceRecord, NamespaceError> {
    let tx = meta.write()?;
    if !tx.exists(Table::Namespaces, "", name)? {
        return Err(NamespaceError::NotFound(name.to_string()));
    }
    let record = NamespaceRecord { labels };
    tx.put(Table::Namespaces, "", name, &record)?;
    tx.commit()?;
    Ok(record)
}

/// Removes a namespace that holds nothing.
pub fn delete(meta: &Metadata, name: &str) -> Result<(), NamespaceError> {
    let tx = meta.write()?;
    if !tx.exists(Table::Namespaces, "", name)? {
        return Err(NamespaceError::NotFound(name.to_string()));
    }
    if tx.namespace_in_use(name)? {
        return Err(NamespaceError::NotEmpty(name.to_string()));
    }
    tx.delete(Table::Namespaces, "", name)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::LeaseRecord;

    fn open() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open(&dir.path().join("meta.redb")).unwrap();
        (dir, meta)
    }

    fn labels(k: &str, v: &str) -> Labels {
        Labels::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn namespaces_are_created_updated_listed_and_deleted() {
        let (_dir, meta) = open();
        create(&meta, "a", labels("x", "1")).unwrap();
        create(&meta, "b", Labels::new()).unwrap();
        assert!(matches!(
            create(&meta, "a", Labels::new()),
            Err(NamespaceError::AlreadyExists(n)) if n == "a"
        ));
        assert_eq!(get(&meta, "a").unwrap().labels, labels("x", "1"));
        update(&meta, "a", labels("y", "2")).unwrap();
        assert_eq!(get(&meta, "a").unwrap().labels, labels("y", "2"));
        let names: Vec<String> = list(&meta).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        delete(&meta, "a").unwrap();
        assert!(matches!(get(&meta, "a"), Err(NamespaceError::NotFound(_))));
    }

    #[test]
    fn refusals_leave_nothing_changed() {
        let (_dir, meta) = open();
        assert!(matches!(
            create(&meta, "Bad/Name", Labels::new()),
            Err(NamespaceError::Metadata(MetadataError::InvalidNamespace(_)))
        ));
        assert!(matches!(
            update(&meta, "missing", Labels::new()),
            Err(NamespaceError::NotFound(_))
        ));
        assert!(matches!(
            delete(&meta, "missing"),
            Err(NamespaceError::NotFound(_))
        ));
        assert!(list(&meta).unwrap().is_empty());
    }

    #[test]
    fn a_namespace_that_holds_something_is_not_deleted() {
        let (_dir, meta) = open();
        create(&meta, "a", Labels::new()).unwrap();
        let tx = meta.write().unwrap();
        tx.put(Table::Leases, "a", "l", &LeaseRecord::default())
            .unwrap();
        tx.commit().unwrap();
        let e = delete(&meta, "a").unwrap_err();
        assert!(matches!(&e, NamespaceError::NotEmpty(n) if n == "a"));
        assert_eq!(
            e.to_string(),
            "namespace \"a\" is not empty: it holds images, content, snapshots or leases"
        );
        get(&meta, "a").unwrap();
    }
}
