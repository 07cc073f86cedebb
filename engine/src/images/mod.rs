//! Images as Docker shows them: names resolved as Docker resolves them
//! (`busybox` is `docker.io/library/busybox:latest`; the supervisor
//! normalises names), an image's id is its config digest, and its config is
//! read from the content store.

use bytes::Bytes;
use serde::Deserialize;

use crate::backend::BackendError;
use crate::types::ContainerConfig;
use crate::Engine;

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("image {name}: no manifest for {platform}")]
    NoPlatform { name: String, platform: String },
    #[error("image {name}: invalid {what} {digest}: {source}")]
    InvalidDocument {
        name: String,
        what: &'static str,
        digest: String,
        source: serde_json::Error,
    },
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
}

/// The parts of an image config document (OCI or Docker) the engine reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImageConfigFile {
    pub architecture: String,
    pub os: String,
    pub created: Option<String>,
    pub author: Option<String>,
    pub config: ContainerConfig,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
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
}

/// The stored image named `reference`.
pub async fn resolve(engine: &Engine, reference: &str) -> Result<Image, ImageError> {
    let image = match engine.supervisor.get_image(reference).await {
        Ok(image) => image,
        Err(BackendError::NotFound(_)) | Err(BackendError::InvalidArgument(_)) => {
            return Err(ImageError::NotFound(reference.to_string()))
        }
        Err(e) => return Err(ImageError::Backend(e)),
    };
    let target = image.target.unwrap_or_default();
    let name = image.name;
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
