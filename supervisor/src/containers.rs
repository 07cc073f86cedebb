//! Containers: records naming an image, the snapshot that is the root
//! filesystem, the runtime and the OCI runtime spec, kept per namespace in
//! the metadata (`Table::Containers`). Nothing runs here: tasks do that.
//!
//! Create prepares an active snapshot named after the id on the image's top
//! layer (unless given a snapshot key) and generates the spec from the image
//! config with the caller's overrides (unless given a whole spec). Any error
//! leaves nothing behind: the snapshot it prepared is removed again.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder, Process, Spec, User};
use serde::{Deserialize, Serialize};

use crate::images::{
    get_image, parse_config, parse_index, parse_manifest, select_manifest, ImageError, Images,
};
use crate::metadata::{now, Labels, MetadataError, Reader, SnapshotKind, Table};
use crate::oci::{chain_ids, Kind};
use crate::snapshots::SnapshotError;

/// The runtime a container gets when the caller names none.
pub const DEFAULT_RUNTIME: &str = "berth-runtime";

/// PATH when the image sets none (Docker's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The most arguments or environment entries a process may be given.
const MAX_ITEMS: usize = 4096;
/// The most bytes an argument, environment entry or path may have.
const MAX_ITEM_LEN: usize = 128 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid container id {0:?}: want 1-128 characters of a-z, A-Z, 0-9, '_', '.' or '-', starting with a letter or digit")]
    InvalidId(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("invalid {what}: {reason}")]
    InvalidOverride { what: &'static str, reason: String },
    #[error("invalid user {0:?}: want user[:group], each a name or a number")]
    InvalidUser(String),
    /// Docker's words, which its clients show.
    #[error("unable to find {what} {name}: no matching entries in {file} file")]
    UserNotFound {
        what: &'static str,
        name: String,
        file: &'static str,
    },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("image {image:?} has no layers to make a root filesystem from")]
    NoLayers { image: String },
    #[error("container {0:?} has a task: kill and delete the task first")]
    HasTask(String),
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl From<MetadataError> for ContainerError {
    fn from(e: MetadataError) -> ContainerError {
        ContainerError::Image(e.into())
    }
}

impl From<SnapshotError> for ContainerError {
    fn from(e: SnapshotError) -> ContainerError {
        ContainerError::Image(e.into())
    }
}

/// A container as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The image name, as stored.
    pub image: String,
    pub snapshot_key: String,
    /// Whether create prepared the snapshot (and delete removes it).
    #[serde(default)]
    pub prepared_snapshot: bool,
    pub runtime: String,
    /// The OCI runtime spec, JSON.
    pub spec: String,
    #[serde(default)]
    pub labels: Labels,
    pub created: u64,
    pub updated: u64,
}

/// The part of an image config that describes the process
/// (`config` in the OCI image config).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

impl ProcessConfig {
    /// Reads `config` from an image config document.
    pub fn from_image_config(bytes: &[u8]) -> Result<ProcessConfig, serde_json::Error> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            config: Option<ProcessConfig>,
        }
        Ok(serde_json::from_slice::<Doc>(bytes)?
            .config
            .unwrap_or_default())
    }
}

/// What the caller changes about the image's process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces Entrypoint and Cmd when not empty.
    pub args: Vec<String>,
    /// KEY=VALUE, merged over the image's Env.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub terminal: bool,
    pub hostname: Option<String>,
    /// Bytes of memory, swap included; `None`: no limit.
    pub memory_limit: Option<i64>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }
}

fn bad(what: &'static str, reason: impl Into<String>) -> ContainerError {
    ContainerError::InvalidOverride {
        what,
        reason: reason.into(),
    }
}

/// Checks a container id: Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}`.
pub fn validate_id(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidId(id.to_string()))
    }
}

fn check_strings(what: &'static str, items: &[String]) -> Result<(), ContainerError> {
    if items.len() > MAX_ITEMS {
        return Err(bad(
            what,
            format!("{} entries, more than the {MAX_ITEMS} allowed", items.len()),
        ));
    }
    for (i, s) in items.iter().enumerate() {
        if s.contains('\0') {
            return Err(bad(what, format!("entry {i} ({s:?}) contains a NUL byte")));
        }
        if s.len() > MAX_ITEM_LEN {
            return Err(bad(
                what,
                format!("entry {i} is {} bytes, more than {MAX_ITEM_LEN}", s.len()),
            ));
        }
    }
    Ok(())
}

fn check_env(what: &'static str, env: &[String]) -> Result<(), ContainerError> {
    check_strings(what, env)?;
    for e in env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(bad(what, format!("{e:?} is not KEY=VALUE"))),
        }
    }
    Ok(())
}

/// The most bytes of /etc/passwd or /etc/group read from an image.
const MAX_ACCOUNTS_FILE: u64 = 4 << 20;

/// An image's `/etc/passwd` and `/etc/group`, to resolve user and group
/// names the way Docker and runc do.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
}

/// The user a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (of a user named in /etc/group member lists).
    pub additional_gids: Vec<u32>,
}

impl Accounts {
    /// Reads them from an image's layer directories (topmost first);
    /// missing files are empty.
    pub fn read(lowers: &[PathBuf]) -> Result<Accounts, ContainerError> {
        let read = |rel: &str| -> Result<String, ContainerError> {
            let data = crate::archive::read_file_in_lowers(
                lowers,
                std::path::Path::new(rel),
                MAX_ACCOUNTS_FILE,
            )
            .map_err(|e| ContainerError::Image(ImageError::Internal(e.to_string())))?;
            Ok(String::from_utf8_lossy(&data.unwrap_or_default()).into_owned())
        };
        Ok(Accounts {
            passwd: read("etc/passwd")?,
            group: read("etc/group")?,
        })
    }

    /// `(name, uid, gid)` of each /etc/passwd entry.
    fn users(&self) -> impl Iterator<Item = (&str, u32, u32)> {
        self.passwd.lines().filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some((
                *f.first()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
    }

    /// `(name, gid, members)` of each /etc/group entry.
    fn groups(&self) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
        self.group.lines().filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f
                .get(3)
                .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
                .unwrap_or_default();
            Some((*f.first()?, f.get(2)?.parse().ok()?, members))
        })
    }

    /// Resolves `user[:group]`: numbers are taken as they are (a uid's
    /// group comes from /etc/passwd when it has the uid, else 0); names are
    /// looked up. Without a group, the user's supplementary groups are the
    /// /etc/group entries that list its name.
    pub fn resolve(&self, spec: &str) -> Result<ResolvedUser, ContainerError> {
        let invalid = || ContainerError::InvalidUser(spec.to_string());
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        };
        if !valid(user) || group.is_some_and(|g| !valid(g)) {
            return Err(invalid());
        }
        let entry = match user.parse::<u32>() {
            Ok(uid) => self.users().find(|u| u.1 == uid).or(Some(("", uid, 0))),
            Err(_) => self.users().find(|u| u.0 == user),
        };
        let Some((name, uid, mut gid)) = entry else {
            return Err(ContainerError::UserNotFound {
                what: "user",
                name: user.to_string(),
                file: "passwd",
            });
        };
        let mut additional_gids = Vec::new();
        match group {
            Some(g) => {
                gid = match g.parse::<u32>() {
                    Ok(gid) => gid,
                    Err(_) => self
                        .groups()
                        .find(|e| e.0 == g)
                        .map(|e| e.1)
                        .ok_or_else(|| ContainerError::UserNotFound {
                            what: "group",
                            name: g.to_string(),
                            file: "group",
                        })?,
                };
            }
            None if !name.is_empty() => {
                for (_, g, members) in self.groups() {
                    if g != gid && members.contains(&name) && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
            None => {}
        }
        Ok(ResolvedUser {
            uid,
            gid,
            additional_gids,
        })
    }
}

/// The runtime spec for the image's process with `overrides` applied, on
/// `Spec::default()` with the root filesystem at "rootfs".
pub fn generate_spec(
    image: &ProcessConfig,
    overrides: &Overrides,
    accounts: &Accounts,
) -> Result<Spec, ContainerError> {
    check_strings("args", &overrides.args)?;
    check_env("env", &overrides.env)?;
    let image_env = image.env.clone().unwrap_or_default();
    check_env("image Env", &image_env)?;

    let args = if overrides.args.is_empty() {
        let mut args = image.entrypoint.clone().unwrap_or_default();
        args.extend(image.cmd.clone().unwrap_or_default());
        check_strings("image Entrypoint and Cmd", &args)?;
        args
    } else {
        overrides.args.clone()
    };
    if args.is_empty() {
        return Err(bad(
            "args",
            "the image has no Entrypoint or Cmd: give the command to run",
        ));
    }

    // The image's Env, then the overrides: the same KEY is replaced in place.
    let mut env: Vec<String> = Vec::new();
    for entry in image_env.iter().chain(&overrides.env) {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        match env
            .iter_mut()
            .find(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
        {
            Some(slot) => *slot = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if overrides.terminal && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }

    let cwd = match &overrides.cwd {
        Some(c) => {
            check_path("cwd", c)?;
            c.clone()
        }
        None => match image.working_dir.as_deref() {
            Some(w) if !w.is_empty() => {
                check_path("image WorkingDir", w)?;
                w.to_string()
            }
            _ => "/".to_string(),
        },
    };

    let user_text = overrides
        .user
        .clone()
        .or_else(|| image.user.clone())
        .unwrap_or_default();
    let mut user = User::default();
    if !user_text.is_empty() {
        let resolved = accounts.resolve(&user_text)?;
        user.set_uid(resolved.uid);
        user.set_gid(resolved.gid);
        if !resolved.additional_gids.is_empty() {
            user.set_additional_gids(Some(resolved.additional_gids));
        }
    }

    if let Some(h) = &overrides.hostname {
        let ok = !h.is_empty()
            && h.len() <= 64
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        if !ok {
            return Err(bad(
                "hostname",
                format!("{h:?}: want 1-64 characters of a-z, A-Z, 0-9, '-' or '.'"),
            ));
        }
    }

    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_else(Process::default);
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(user);
    process.set_terminal(Some(overrides.terminal));
    spec.set_process(Some(process));
    if let Some(root) = spec.root_mut() {
        root.set_path(PathBuf::from("rootfs"));
    }
    // Spec::default() names the host "youki"; without one the container
    // keeps the host's name in its own UTS namespace.
    spec.set_hostname(overrides.hostname.clone());
    // Writable, as Docker and containerd give it.
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(false));
    }
    if let Some(limit) = overrides.memory_limit {
        // The kernel's smallest useful limit is a few pages; Docker's is 6 MiB.
        if limit < 1 << 20 {
            return Err(bad(
                "memory limit",
                format!("{limit} bytes: give at least 1 MiB"),
            ));
        }
        let memory = LinuxMemoryBuilder::default()
            .limit(limit)
            .swap(limit)
            .build()
            .map_err(|e| bad("memory limit", e.to_string()))?;
        let resources = LinuxResourcesBuilder::default()
            .memory(memory)
            .build()
            .map_err(|e| bad("memory limit", e.to_string()))?;
        if let Some(linux) = spec.linux_mut() {
            linux.set_resources(Some(resources));
        }
    }
    Ok(spec)
}

fn check_path(what: &'static str, path: &str) -> Result<(), ContainerError> {
    if !path.starts_with('/') {
        return Err(bad(what, format!("{path:?} is not an absolute path")));
    }
    if path.contains('\0') {
        return Err(bad(what, format!("{path:?} contains a NUL byte")));
    }
    if path.len() > 4096 {
        return Err(bad(what, "longer than 4096 bytes"));
    }
    Ok(())
}

/// Parses a whole spec a caller gives, as JSON text.
pub fn parse_spec(bytes: &[u8]) -> Result<String, ContainerError> {
    let spec: Spec =
        serde_json::from_slice(bytes).map_err(|e| ContainerError::InvalidSpec(e.to_string()))?;
    if spec.process().is_none() {
        return Err(ContainerError::InvalidSpec(
            "it has no process to run".to_string(),
        ));
    }
    // The mounts' id mappings, which oci-spec's `Mount` lacks, kept.
    crate::tasks::idmap::keep_mount_id_maps(bytes, spec_json(&spec)?)
        .map_err(ContainerError::InvalidSpec)
}

fn spec_json(spec: &Spec) -> Result<String, ContainerError> {
    serde_json::to_string_pretty(spec).map_err(|e| ContainerError::InvalidSpec(e.to_string()))
}

/// What a caller asks to create.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    pub id: String,
    pub image: String,
    /// Empty: prepare one named after the id.
    pub snapshot_key: String,
    pub labels: Labels,
    /// Empty: `DEFAULT_RUNTIME`.
    pub runtime: String,
    pub overrides: Overrides,
    /// A whole spec (JSON) instead of a generated one.
    pub spec: Option<Vec<u8>>,
}

/// What an image holds for the host: its process config and the chain id of
/// its top layer.
fn image_rootfs(
    images: &Images,
    name: &str,
    target: &crate::oci::Descriptor,
) -> Result<(ProcessConfig, String), ContainerError> {
    let mut desc = target.clone();
    if Kind::of(&desc.media_type) == Kind::Index {
        let bytes = images.read_document("index", &desc.digest)?;
        let index = parse_index(&desc.digest, &bytes)?;
        desc = select_manifest(name, &index, &images.platform)?;
    }
    let bytes = images.read_document("manifest", &desc.digest)?;
    let manifest = parse_manifest(&desc.digest, &bytes)?;
    let digest = manifest.config.digest;
    let bytes = images.read_document("config", &digest)?;
    let config = parse_config(&digest, &bytes)?;
    let process =
        ProcessConfig::from_image_config(&bytes).map_err(|e| ImageError::BadDocument {
            what: "config",
            digest: digest.clone(),
            reason: e.to_string(),
        })?;
    let top = chain_ids(&config.rootfs.diff_ids)
        .pop()
        .ok_or_else(|| ContainerError::NoLayers {
            image: name.to_string(),
        })?;
    Ok((process, top))
}

/// Creates a container; nothing is left behind when it fails.
pub fn create(
    images: &Images,
    ns: &str,
    new: NewContainer,
) -> Result<ContainerRecord, ContainerError> {
    create_with(images, ns, new, |_| Ok(()))
}

/// [`create`], with `also` writing records of the caller's own in the
/// same durable transaction (the CRI's record of what the container is
/// for): all of them or none, for one commit.
pub fn create_with(
    images: &Images,
    ns: &str,
    new: NewContainer,
    also: impl FnOnce(&crate::metadata::WriteTx) -> Result<(), MetadataError>,
) -> Result<ContainerRecord, ContainerError> {
    validate_id(&new.id)?;
    let runtime = if new.runtime.is_empty() {
        DEFAULT_RUNTIME.to_string()
    } else {
        new.runtime.clone()
    };
    check_strings("runtime", std::slice::from_ref(&runtime))?;
    let (image, exists) = {
        let rx = images.meta.read()?;
        let exists = rx.exists(Table::Containers, ns, &new.id)?;
        (get_image(&rx, ns, &new.image), exists)
    };
    if exists {
        return Err(ContainerError::AlreadyExists(new.id));
    }
    let image = image?;
    let (process, top) = image_rootfs(images, &image.name, &image.target)?;
    let spec = match &new.spec {
        Some(bytes) => {
            if !new.overrides.is_empty() {
                return Err(ContainerError::InvalidSpec(
                    "give either a whole spec or overrides, not both".to_string(),
                ));
            }
            parse_spec(bytes)?
        }
        None => {
            let mut overrides = new.overrides.clone();
            // The container's hostname is its id (cut to a host name's 63
            // bytes) unless one is given, as with Docker.
            if overrides.hostname.is_none() && !new.id.contains('_') {
                overrides.hostname = Some(new.id.chars().take(63).collect());
            }
            let user = overrides.user.as_ref().or(process.user.as_ref());
            // Names are resolved in the image's own files (its layers).
            let accounts = if user.is_some_and(|u| !u.is_empty()) {
                let lowers = {
                    let rx = images.meta.read()?;
                    images.snapshots.lowers(&rx, ns, Some(&top))?
                };
                Accounts::read(&lowers)?
            } else {
                Accounts::default()
            };
            spec_json(&generate_spec(&process, &overrides, &accounts)?)?
        }
    };

    // The snapshot and the record in one transaction: both or neither.
    let prepared = new.snapshot_key.is_empty();
    let t = now();
    let record = ContainerRecord {
        image: image.name,
        snapshot_key: if prepared {
            new.id.clone()
        } else {
            new.snapshot_key.clone()
        },
        prepared_snapshot: prepared,
        runtime,
        spec,
        labels: new.labels,
        created: t,
        updated: t,
    };
    let mut storage = None;
    let saved = (|| {
        let tx = images.meta.write()?;
        tx.ensure_namespace(ns)?;
        if tx.exists(Table::Containers, ns, &new.id)? {
            return Err(ContainerError::AlreadyExists(new.id.clone()));
        }
        if prepared {
            let snapshot = images.snapshots.prepare_in(
                &tx,
                ns,
                &new.id,
                Some(&top),
                SnapshotKind::Active,
                Labels::from([("berth/container".to_string(), new.id.clone())]),
            )?;
            storage = Some(snapshot.id);
        } else {
            images.snapshots.get(&tx, ns, &new.snapshot_key)?;
        }
        tx.put(Table::Containers, ns, &new.id, &record)?;
        also(&tx)?;
        tx.commit()?;
        Ok(())
    })();
    if let Err(e) = saved {
        if let Some(id) = storage {
            if let Err(re) = images.snapshots.remove_storage(id) {
                tracing::warn!(container = %new.id, error = %re, "snapshot of a failed create not removed");
            }
        }
        return Err(e);
    }
    tracing::info!(namespace = ns, container = %new.id, image = %record.image, "container created");
    Ok(record)
}

pub fn get(images: &Images, ns: &str, id: &str) -> Result<ContainerRecord, ContainerError> {
    let rx = images.meta.read()?;
    rx.get(Table::Containers, ns, id)?
        .ok_or_else(|| ContainerError::NotFound(id.to_string()))
}

/// What a list selects; empty selects everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// An image name as stored or as typed.
    pub image: String,
    /// (key, value): a label with that value, or with any value for none.
    pub labels: Vec<(String, Option<String>)>,
}

impl Filter {
    /// Parses label filters given as "KEY=VALUE" or "KEY".
    pub fn parse_labels(items: &[String]) -> Result<Vec<(String, Option<String>)>, ContainerError> {
        items
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Some(v.to_string()))),
                None if !s.is_empty() => Ok((s.clone(), None)),
                _ => Err(bad(
                    "label filter",
                    format!("{s:?} is not KEY=VALUE or KEY"),
                )),
            })
            .collect()
    }

    fn matches(&self, image: &str, r: &ContainerRecord) -> bool {
        (self.image.is_empty() || r.image == image)
            && self.labels.iter().all(|(k, v)| match (r.labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
    }
}

pub fn list(
    images: &Images,
    ns: &str,
    filter: &Filter,
) -> Result<Vec<(String, ContainerRecord)>, ContainerError> {
    let rx = images.meta.read()?;
    let image = if filter.image.is_empty() {
        String::new()
    } else {
        match get_image(&rx, ns, &filter.image) {
            Ok(r) => r.name,
            Err(ImageError::NotFound(_)) => crate::images::image_name(&filter.image),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(rx
        .list::<ContainerRecord>(Table::Containers, ns)?
        .into_iter()
        .filter(|(_, r)| filter.matches(&image, r))
        .collect())
}

/// A change to a container.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub set_labels: Labels,
    pub remove_labels: Vec<String>,
    pub spec: Option<Vec<u8>>,
}

pub fn update(
    images: &Images,
    ns: &str,
    id: &str,
    change: Update,
) -> Result<ContainerRecord, ContainerError> {
    let spec = change.spec.as_deref().map(parse_spec).transpose()?;
    let tx = images.meta.write()?;
    let mut record: ContainerRecord = tx
        .get(Table::Containers, ns, id)?
        .ok_or_else(|| ContainerError::NotFound(id.to_string()))?;
    for k in &change.remove_labels {
        record.labels.remove(k);
    }
    record.labels.extend(change.set_labels);
    if let Some(spec) = spec {
        record.spec = spec;
    }
    record.updated = now();
    tx.put(Table::Containers, ns, id, &record)?;
    tx.commit()?;
    Ok(record)
}

/// Removes a container and the snapshot it prepared. The caller collects
/// garbage afterwards (the image's layers may be unused now).
pub fn delete(images: &Images, ns: &str, id: &str) -> Result<ContainerRecord, ContainerError> {
    delete_with(images, ns, id, |_| Ok(()))
}

/// [`delete`], with `also` removing or writing records of the caller's
/// own in the same durable transaction.
pub fn delete_with(
    images: &Images,
    ns: &str,
    id: &str,
    also: impl FnOnce(&crate::metadata::WriteTx) -> Result<(), MetadataError>,
) -> Result<ContainerRecord, ContainerError> {
    // The record and the snapshot it prepared in one transaction; the
    // snapshot's directory after (a crash in between leaves an orphan the
    // collector removes).
    let tx = images.meta.write()?;
    let record: ContainerRecord = tx
        .get(Table::Containers, ns, id)?
        .ok_or_else(|| ContainerError::NotFound(id.to_string()))?;
    let storage = if record.prepared_snapshot {
        match images.snapshots.remove_in(&tx, ns, &record.snapshot_key) {
            Ok(id) => Some(id),
            Err(SnapshotError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    tx.delete(Table::Containers, ns, id)?;
    also(&tx)?;
    tx.commit()?;
    if let Some(storage) = storage {
        if let Err(e) = images.snapshots.remove_storage(storage) {
            tracing::warn!(container = id, error = %e, "snapshot directory not removed");
        }
    }
    tracing::info!(namespace = ns, container = id, "container deleted");
    Ok(record)
}

#[cfg(test)]
mod tests;
