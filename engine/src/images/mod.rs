//! Images as Docker shows them: names resolved as Docker resolves them
//! (`busybox` is `docker.io/library/busybox:latest`, an image id or a
//! unique prefix of one names an image too), an image's id is its config
//! digest, and its config is read from the content store.
//!
//! - [`names`]: familiar and normalised names, ids, Docker's globs.
//! - [`list`]: list with filters, inspect, history.
//! - [`remove`]: tag, untag and delete (with Docker's conflicts), prune.
//! - [`transfer`]: pull and push, as Docker's JSON progress messages.
//! - [`auth`]: registry credentials from clients, and the login check.
//! - [`archive`]: save, load, and import of a root file system tarball.

use std::collections::BTreeMap;

use berth_client::reference::ReferenceError;
use berth_proto::images::v1 as pb;
use bytes::Bytes;
use serde::Deserialize;

use crate::backend::BackendError;
use crate::types::ContainerConfig;
use crate::Engine;

pub mod archive;
pub mod auth;
pub mod list;
pub mod names;
pub mod remove;
pub mod transfer;

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    /// A push of a repository with no local tag.
    #[error("An image does not exist locally with the tag: {0}")]
    NoLocalTag(String),
    #[error("invalid reference format: {0}")]
    InvalidReference(#[from] ReferenceError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("image {name}: no manifest for {platform}")]
    NoPlatform { name: String, platform: String },
    #[error("image {name}: invalid {what} {digest}: {source}")]
    InvalidDocument {
        name: String,
        what: &'static str,
        digest: String,
        source: serde_json::Error,
    },
    /// A delete refused because of other names or containers.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The registry has no such repository or refuses access to it.
    #[error(
        "pull access denied for {repository}, repository does not exist or may require \
         'docker login': denied: {message}"
    )]
    PullAccessDenied { repository: String, message: String },
    #[error("manifest for {reference} not found: manifest unknown: manifest unknown")]
    ManifestUnknown { reference: String },
    /// A registry refused credentials (`/auth`, push).
    #[error("{0}")]
    Unauthorized(String),
    #[error("read request body: {0}")]
    ReadBody(String),
    #[error("image archive: {0}")]
    Archive(String),
    #[error(transparent)]
    Backend(BackendError),
}

/// A stored image, resolved for this host's platform.
#[derive(Clone, Debug)]
pub struct Image {
    /// The name the supervisor stores it under.
    pub name: String,
    /// Docker's image id: the config's digest.
    pub id: String,
    /// The digest of the manifest (or index) the name points at.
    pub target_digest: String,
    /// The image config document.
    pub config: ImageConfigFile,
    /// The layers of the platform's manifest, bottom first.
    pub layers: Vec<Layer>,
    /// The supervisor's record: size, times, labels.
    pub record: pb::Image,
}

/// A layer blob as the manifest describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Layer {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
}

/// The parts of an image config document (OCI or Docker) the engine reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImageConfigFile {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    pub created: Option<String>,
    pub author: Option<String>,
    pub comment: Option<String>,
    pub docker_version: Option<String>,
    pub container: Option<String>,
    pub container_config: Option<ContainerConfig>,
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    pub history: Vec<History>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// One step of an image's history, as its config records it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct History {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    pub empty_layer: bool,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Layer>,
}

/// An image found by a name or id, with every name it has.
#[derive(Clone, Debug)]
pub struct Found {
    pub image: Image,
    /// Every stored name whose image has this id.
    pub names: Vec<String>,
    /// Whether it was named by its id (or an id prefix) rather than a name.
    pub by_id: bool,
}

/// The stored image named `reference` (a name, an id or an id prefix).
pub async fn resolve(engine: &Engine, reference: &str) -> Result<Image, ImageError> {
    // By name: one record, without the names it shares its id with.
    if !names::is_full_id(reference) {
        if let Ok(normalized) = names::normalize(reference) {
            match engine.supervisor.get_image(&normalized).await {
                Ok(record) => return resolve_record(engine, record).await,
                Err(BackendError::NotFound(_)) | Err(BackendError::InvalidArgument(_)) => {}
                Err(e) => return Err(ImageError::Backend(e)),
            }
        }
    }
    Ok(lookup(engine, reference).await?.image)
}

/// Finds an image as Docker does: a full id, else a name, else a unique id
/// prefix.
pub async fn lookup(engine: &Engine, name: &str) -> Result<Found, ImageError> {
    // Named as Docker names it in the message: `nope:latest`.
    let shown = match names::normalize(name) {
        Ok(n) if !names::is_full_id(name) => names::familiar(&n),
        _ => name.to_string(),
    };
    let not_found = || ImageError::NotFound(shown.clone());
    if !names::is_full_id(name) {
        match names::normalize(name) {
            Ok(normalized) => match engine.supervisor.get_image(&normalized).await {
                Ok(record) => {
                    let image = resolve_record(engine, record).await?;
                    let names = names_of(engine, &image.id).await?;
                    return Ok(Found {
                        image,
                        names,
                        by_id: false,
                    });
                }
                Err(BackendError::NotFound(_)) | Err(BackendError::InvalidArgument(_)) => {}
                Err(e) => return Err(ImageError::Backend(e)),
            },
            Err(e) if names::id_prefix(name).is_none() => return Err(e.into()),
            Err(_) => {}
        }
    }
    let Some(hex) = names::id_prefix(name) else {
        return Err(not_found());
    };
    let mut matches: BTreeMap<String, (Image, Vec<String>)> = BTreeMap::new();
    for image in catalog(engine).await? {
        let id_hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
        if id_hex.starts_with(hex) {
            let entry = matches
                .entry(image.id.clone())
                .or_insert_with(|| (image.clone(), Vec::new()));
            entry.1.push(image.name.clone());
        }
    }
    if matches.len() != 1 {
        return Err(not_found());
    }
    let (_, (image, names)) = matches.into_iter().next().ok_or_else(not_found)?;
    Ok(Found {
        image,
        names,
        by_id: true,
    })
}

/// Every stored image, resolved (one entry per name); images that cannot
/// be resolved for this platform are left out.
pub async fn catalog(engine: &Engine) -> Result<Vec<Image>, ImageError> {
    let records = engine
        .supervisor
        .list_images()
        .await
        .map_err(ImageError::Backend)?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let name = record.name.clone();
        match resolve_record(engine, record).await {
            Ok(image) => out.push(image),
            Err(e) => tracing::debug!(image = %name, error = %e, "image left out of the list"),
        }
    }
    Ok(out)
}

/// The stored names of the image with this id.
async fn names_of(engine: &Engine, id: &str) -> Result<Vec<String>, ImageError> {
    Ok(catalog(engine)
        .await?
        .into_iter()
        .filter(|i| i.id == id)
        .map(|i| i.name)
        .collect())
}

/// Reads the manifest (this platform's, from an index) and config of a
/// stored image.
pub async fn resolve_record(engine: &Engine, record: pb::Image) -> Result<Image, ImageError> {
    let target = record.target.clone().unwrap_or_default();
    let name = record.name.clone();
    // Digests name immutable content: what a target resolved to once, it
    // resolves to for good.
    if let Some(hit) = resolved()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&target.digest)
        .cloned()
    {
        return Ok(Image {
            name,
            id: hit.0,
            target_digest: target.digest,
            config: hit.1,
            layers: hit.2,
            record,
        });
    }
    let image = read_record(engine, record).await?;
    let mut cache = resolved().lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= RESOLVED_MAX {
        cache.clear();
    }
    cache.insert(
        image.target_digest.clone(),
        (image.id.clone(), image.config.clone(), image.layers.clone()),
    );
    Ok(image)
}

/// Targets resolved kept at most (the cache starts over beyond).
const RESOLVED_MAX: usize = 1024;

type Resolved = (String, ImageConfigFile, Vec<Layer>);

/// Target digest → (config digest, config, layers), for this host's platform.
fn resolved() -> &'static std::sync::Mutex<std::collections::HashMap<String, Resolved>> {
    static CACHE: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Resolved>>,
    > = std::sync::LazyLock::new(Default::default);
    &CACHE
}

async fn read_record(engine: &Engine, record: pb::Image) -> Result<Image, ImageError> {
    let target = record.target.clone().unwrap_or_default();
    let name = record.name.clone();
    let mut digest = target.digest.clone();
    let mut media_type = target.media_type.clone();
    // An index: this host's manifest.
    for _ in 0..2 {
        let bytes = read(engine, &digest).await?;
        let doc: Document = parse(&name, "manifest", &digest, &bytes)?;
        let is_index = media_type == MEDIA_OCI_INDEX
            || media_type == MEDIA_DOCKER_LIST
            || doc.media_type == MEDIA_OCI_INDEX
            || doc.media_type == MEDIA_DOCKER_LIST
            || (!doc.manifests.is_empty() && doc.config.is_none());
        if !is_index {
            let config = doc.config.ok_or_else(|| ImageError::NoPlatform {
                name: name.clone(),
                platform: host_platform(),
            })?;
            let bytes = read(engine, &config.digest).await?;
            let file: ImageConfigFile = parse(&name, "config", &config.digest, &bytes)?;
            return Ok(Image {
                name,
                id: config.digest,
                target_digest: target.digest,
                config: file,
                layers: doc.layers,
                record,
            });
        }
        let arch = crate::go_arch();
        let chosen = doc
            .manifests
            .into_iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
            .ok_or_else(|| ImageError::NoPlatform {
                name: name.clone(),
                platform: host_platform(),
            })?;
        digest = chosen.digest;
        media_type = chosen.media_type;
    }
    Err(ImageError::NoPlatform {
        name,
        platform: host_platform(),
    })
}

fn host_platform() -> String {
    format!("linux/{}", crate::go_arch())
}

async fn read(engine: &Engine, digest: &str) -> Result<Bytes, ImageError> {
    engine
        .supervisor
        .read_blob(digest)
        .await
        .map_err(ImageError::Backend)
}

fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    what: &'static str,
    digest: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::InvalidDocument {
        name: name.to_string(),
        what,
        digest: digest.to_string(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests;
