//! Volumes: Docker's `local` driver. A volume is a record in the engine's
//! database (name, labels, driver options, creation time) and a directory,
//! `<data-root>/engine/volumes/<name>/_data`, that containers bind mount.
//! A volume with driver options (`type=tmpfs`, `o=bind` with `device=`,
//! any other `type`/`device`) has that mounted on its `_data` while a
//! container that uses it runs (see [`local`]).
//!
//! Which containers use which volume is kept here ([`Volumes::claim`],
//! [`Volumes::release`]), from the containers' mount points
//! ([`mounts::MountPoint`], in each container's record): a volume in use
//! cannot be removed or pruned. [`mounts`] turns a container's `-v`,
//! `--mount`, `--volumes-from` and its image's `VOLUME`s into mount points,
//! copies the image's content into new volumes, and mounts and unmounts
//! volumes as containers start and stop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::events::{Events, Kind};
use crate::state::{StateError, Store, Table};

mod copy;
pub mod local;
pub mod mounts;

/// The label Docker puts on the volumes it makes for `-v /path` and an
/// image's `VOLUME`s.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// The only driver.
pub const LOCAL: &str = "local";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// A create refused: why, after the name, as dockerd words it.
    #[error("create {name}: {source}")]
    Create {
        name: String,
        source: Box<VolumeError>,
    },
    #[error("volume name is too short, names should be at least two alphanumeric characters")]
    NameTooShort,
    #[error("{0:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error("error looking up volume plugin {0}: plugin {0:?} not found")]
    UnknownDriver(String),
    #[error("{0}")]
    InvalidOption(String),
    #[error("remove {name}: volume is in use - [{}]", ids.join(", "))]
    InUse { name: String, ids: Vec<String> },
    #[error("invalid filter '{0}'")]
    InvalidFilter(String),
    #[error("failed to mount local volume: {0}")]
    Mount(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

pub type Result<T> = std::result::Result<T, VolumeError>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io { what, path, source }
}

/// What the engine keeps of a volume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The driver options as given (`type`, `device`, `o`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub created_at: SystemTime,
}

impl VolumeRecord {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

/// What `POST /volumes/create` asks for.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateOptions {
    pub name: String,
    pub driver: String,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// Every volume of the engine, and who uses them.
pub struct Volumes {
    store: Arc<Store>,
    root: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_name: BTreeMap<String, VolumeRecord>,
    /// Container id to the volumes its mount points name (containers being
    /// created included).
    claims: BTreeMap<String, BTreeSet<String>>,
    /// Volume to the running containers that have it mounted (for the
    /// volumes whose driver options mount something on `_data`).
    active: BTreeMap<String, BTreeSet<String>>,
}

impl Volumes {
    /// The volumes recorded in `store`, their directories under `root`,
    /// claimed by the containers given as (id, volume names).
    pub fn load(
        store: Arc<Store>,
        root: PathBuf,
        claims: impl IntoIterator<Item = (String, BTreeSet<String>)>,
    ) -> Result<Volumes> {
        let mut inner = Inner::default();
        for (name, record) in store.list::<VolumeRecord>(Table::Volumes)? {
            inner.by_name.insert(name, record);
        }
        inner.claims = claims.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        Ok(Volumes {
            store,
            root,
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned index is still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `<root>/<name>`: the volume's own directory.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `<root>/<name>/_data`: what containers mount, Docker's Mountpoint.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir(name).join("_data")
    }

    pub fn get(&self, name: &str) -> Result<VolumeRecord> {
        self.lock()
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// Creates a volume, or returns the one of that name (as Docker does);
    /// whether it was made now. Emits `create` for a new one.
    pub fn create(&self, events: &Events, opts: CreateOptions) -> Result<(VolumeRecord, bool)> {
        self.create_for(events, opts, None)
    }

    /// [`Volumes::create`], the volume claimed for `container` at once (so
    /// no prune or remove can take it before the container records it).
    pub fn create_for(
        &self,
        events: &Events,
        mut opts: CreateOptions,
        container: Option<&str>,
    ) -> Result<(VolumeRecord, bool)> {
        if opts.name.is_empty() {
            // A volume made without a name is anonymous, whoever asks for
            // it (as dockerd has it since prune spares named volumes).
            opts.name = crate::names::new_id();
            opts.labels
                .get_or_insert_with(Default::default)
                .insert(ANONYMOUS_LABEL.into(), String::new());
        }
        let name = opts.name.clone();
        self.create_checked(events, opts, container)
            .map_err(|source| VolumeError::Create {
                name,
                source: Box::new(source),
            })
    }

    fn create_checked(
        &self,
        events: &Events,
        opts: CreateOptions,
        container: Option<&str>,
    ) -> Result<(VolumeRecord, bool)> {
        validate_name(&opts.name)?;
        let name = opts.name.clone();
        let driver = match opts.driver.as_str() {
            "" | LOCAL => LOCAL.to_string(),
            other => return Err(VolumeError::UnknownDriver(other.to_string())),
        };
        let options = opts.driver_opts.unwrap_or_default();
        local::validate_options(&options)?;
        let mut inner = self.lock();
        let claim = |inner: &mut Inner| {
            if let Some(id) = container {
                let claims = inner.claims.entry(id.to_string()).or_default();
                claims.insert(name.clone());
            }
        };
        if let Some(existing) = inner.by_name.get(&name).cloned() {
            claim(&mut inner);
            return Ok((existing, false));
        }
        let record = VolumeRecord {
            name: name.clone(),
            driver,
            labels: opts.labels.unwrap_or_default(),
            options,
            created_at: SystemTime::now(),
        };
        let data = self.mountpoint(&name);
        std::fs::create_dir_all(&data).map_err(io("create volume directory", &data))?;
        if let Err(e) = self.store.put(Table::Volumes, &name, &record) {
            let _ = std::fs::remove_dir_all(self.dir(&name));
            return Err(e.into());
        }
        inner.by_name.insert(name.clone(), record.clone());
        claim(&mut inner);
        drop(inner);
        tracing::info!(volume = %name, "volume created");
        events.emit(Kind::Volume, "create", &name, driver_attr(&record));
        Ok((record, true))
    }

    /// The containers that use a volume.
    pub fn users(&self, name: &str) -> Vec<String> {
        self.lock()
            .claims
            .iter()
            .filter(|(_, vols)| vols.contains(name))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Records that a container uses these volumes too (each must exist).
    pub fn claim(&self, container: &str, names: BTreeSet<String>) -> Result<()> {
        let mut inner = self.lock();
        if let Some(missing) = names.iter().find(|n| !inner.by_name.contains_key(*n)) {
            return Err(VolumeError::NotFound(missing.clone()));
        }
        if !names.is_empty() {
            inner
                .claims
                .entry(container.to_string())
                .or_default()
                .extend(names);
        }
        Ok(())
    }

    /// Forgets a container's use of volumes; the volumes it used.
    pub fn release(&self, container: &str) -> BTreeSet<String> {
        self.lock().claims.remove(container).unwrap_or_default()
    }

    /// Removes a volume no container uses. `force` makes a missing volume
    /// no error.
    pub fn remove(&self, events: &Events, name: &str, force: bool) -> Result<()> {
        let mut inner = self.lock();
        let Some(record) = inner.by_name.get(name).cloned() else {
            if force {
                return Ok(());
            }
            return Err(VolumeError::NotFound(name.to_string()));
        };
        let ids: Vec<String> = inner
            .claims
            .iter()
            .filter(|(_, vols)| vols.contains(name))
            .map(|(id, _)| id.clone())
            .collect();
        if !ids.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                ids,
            });
        }
        // A mount left by a crash goes first, so only our own files go.
        local::unmount(&self.mountpoint(name));
        self.store.delete(Table::Volumes, name)?;
        inner.by_name.remove(name);
        inner.active.remove(name);
        drop(inner);
        let dir = self.dir(name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(volume = %name, error = %e, "remove the volume's directory");
            }
        }
        tracing::info!(volume = %name, "volume removed");
        events.emit(Kind::Volume, "destroy", name, driver_attr(&record));
        Ok(())
    }

    /// Every volume, by name.
    pub fn all(&self) -> Vec<VolumeRecord> {
        self.lock().by_name.values().cloned().collect()
    }

    /// The volumes the filters select (dangling, name, label, driver).
    pub fn list(&self, filters: &Filters) -> Result<Vec<VolumeRecord>> {
        check_filters(filters, &["dangling", "name", "label", "driver"])?;
        let dangling = match filters.get("dangling") {
            None => None,
            Some(v) => Some(parse_bool_filter("dangling", v)?),
        };
        let out = self
            .all()
            .into_iter()
            .filter(|v| {
                dangling.is_none_or(|d| d == self.users(&v.name).is_empty())
                    && filters
                        .get("name")
                        .is_none_or(|names| names.iter().any(|n| v.name.contains(n.as_str())))
                    && filters.get("driver").is_none_or(|d| d.contains(&v.driver))
                    && labels_match(&v.labels, filters)
            })
            .collect();
        Ok(out)
    }

    /// Removes the unused volumes the filters select: anonymous ones only
    /// unless `all` is true (Docker's API 1.42 and later); their names and
    /// the bytes freed.
    pub fn prune(&self, events: &Events, filters: &Filters) -> Result<(Vec<String>, u64)> {
        check_filters(filters, &["all", "label", "label!"])?;
        let all = match filters.get("all") {
            None => false,
            Some(v) => parse_bool_filter("all", v)?,
        };
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for v in self.all() {
            if (!all && !v.anonymous()) || !labels_match(&v.labels, filters) {
                continue;
            }
            if !self.users(&v.name).is_empty() {
                continue;
            }
            let size = local::size(&self.mountpoint(&v.name));
            match self.remove(events, &v.name, false) {
                Ok(()) => {
                    deleted.push(v.name.clone());
                    reclaimed += size;
                }
                Err(VolumeError::InUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        events.emit(
            Kind::Volume,
            "prune",
            "",
            BTreeMap::from([("reclaimed".to_string(), reclaimed.to_string())]),
        );
        Ok((deleted, reclaimed))
    }

    /// Docker's Volume object; `usage` adds `UsageData` (`system df`).
    pub fn to_json(&self, v: &VolumeRecord, usage: bool) -> Value {
        let mut out = json!({
            "CreatedAt": humantime::format_rfc3339_seconds(v.created_at).to_string(),
            "Driver": v.driver,
            "Labels": v.labels,
            "Mountpoint": self.mountpoint(&v.name),
            "Name": v.name,
            "Options": (!v.options.is_empty()).then_some(&v.options),
            "Scope": "local",
        });
        if usage {
            out["UsageData"] = json!({
                "Size": local::size(&self.mountpoint(&v.name)),
                "RefCount": self.users(&v.name).len(),
            });
        }
        out
    }

    /// Notes that a running container has a volume mounted; mounts the
    /// volume's driver options on its `_data` for its first user.
    pub fn activate(&self, name: &str, container: &str) -> Result<()> {
        let record = self.get(name)?;
        let mut inner = self.lock();
        let users = inner.active.entry(name.to_string()).or_default();
        if users.is_empty() && !record.options.is_empty() {
            local::mount(&record.options, &self.mountpoint(name))?;
        }
        users.insert(container.to_string());
        Ok(())
    }

    /// Undoes [`Volumes::activate`]: the last user unmounts.
    pub fn deactivate(&self, name: &str, container: &str) {
        let mut inner = self.lock();
        let Some(users) = inner.active.get_mut(name) else {
            return;
        };
        if !users.remove(container) || !users.is_empty() {
            return;
        }
        inner.active.remove(name);
        let mounted = inner
            .by_name
            .get(name)
            .is_some_and(|v| !v.options.is_empty());
        drop(inner);
        if mounted {
            local::unmount(&self.mountpoint(name));
        }
    }
}

fn driver_attr(v: &VolumeRecord) -> BTreeMap<String, String> {
    BTreeMap::from([("driver".to_string(), v.driver.clone())])
}

/// `filters` as Docker sends them.
pub type Filters = BTreeMap<String, BTreeSet<String>>;

fn check_filters(filters: &Filters, known: &[&str]) -> Result<()> {
    match filters.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(VolumeError::InvalidFilter(k.clone())),
        None => Ok(()),
    }
}

fn parse_bool_filter(key: &str, values: &BTreeSet<String>) -> Result<bool> {
    let mut out = None;
    for v in values {
        let b = match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(VolumeError::InvalidOption(format!(
                    "invalid filter '{key}={v}'"
                )))
            }
        };
        out = Some(b);
    }
    Ok(out.unwrap_or(true))
}

/// `label=k`, `label=k=v` must all match; `label!=k`, `label!=k=v` must not.
fn labels_match(labels: &BTreeMap<String, String>, filters: &Filters) -> bool {
    let has = |want: &str| match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(want),
    };
    filters
        .get("label")
        .is_none_or(|w| w.iter().all(|x| has(x)))
        && filters
            .get("label!")
            .is_none_or(|w| !w.iter().any(|x| has(x)))
}

/// Docker's rule for a local volume's name.
pub fn validate_name(name: &str) -> Result<()> {
    if name.len() < 2 {
        return Err(VolumeError::NameTooShort);
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok {
        return Err(VolumeError::InvalidName(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
