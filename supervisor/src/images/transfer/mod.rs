//! Import and export of image archives: OCI image layout tarballs and
//! `docker save` tarballs, both read and written as streams.
//!
//! - `import` reads an archive once, in order, into the content store and
//!   names the images it holds;
//! - `export` writes named images as an OCI image layout, with Docker's
//!   `manifest.json` beside it if asked;
//! - `naming` holds the rules that name imported images;
//! - `tarball` the tar helpers both directions share: path checks,
//!   streaming an entry, fixed headers.
//!
//! The caller holds `gc_lock` shared for either, as for any write of blobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

mod create;
mod export;
mod import;
mod naming;
mod tarball;
#[cfg(test)]
mod tests;

/// An uncompressed Docker layer (`oci` has the compressed ones).
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The annotation containerd (and Docker 25+) puts the full image name in.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// How deep indexes may nest.
const MAX_DEPTH: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Oci,
    Docker,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Names images the archive leaves unnamed.
    pub name: Option<String>,
    pub platform: Option<Platform>,
    pub unpack: bool,
}

/// One entry of a `docker save` manifest.json.
#[derive(Debug, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn archive_error(message: impl Into<String>) -> ImageError {
    ImageError::Archive(message.into())
}

fn descriptor(media_type: &str, digest: String, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size: size as i64,
        urls: Vec::new(),
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// The hex of a digest or of a `blobs/sha256/<hex>` path.
fn hex_of(s: &str) -> &str {
    s.rsplit([':', '/']).next().unwrap_or(s)
}

impl Images {
    /// The manifest of `target` for `platform`: the target itself, or the
    /// one its index lists for the platform.
    fn platform_manifest(
        &self,
        name: &str,
        target: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, ImageError> {
        let bytes = self.read_document("manifest", &target.digest)?;
        match document_kind(&target.media_type, &bytes) {
            Kind::Index => select_manifest(name, &parse_index(&target.digest, &bytes)?, platform),
            Kind::Manifest => Ok(target.clone()),
            _ => Err(ImageError::BadDocument {
                what: "manifest",
                digest: target.digest.clone(),
                reason: format!(
                    "media type {:?} is neither an image manifest nor an index",
                    target.media_type
                ),
            }),
        }
    }
}
