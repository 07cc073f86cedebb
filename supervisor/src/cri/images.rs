//! CRI images over the supervisor's image records in [`super::NAMESPACE`].
//!
//! A CRI image is what containerd's CRI calls one: the image config's
//! digest is its id, and every record whose manifest (for this host's
//! platform) has that config is one of its names. Names that are tags are
//! its `repo_tags`; each record's repository with the digest it was pulled
//! by is one of its `repo_digests`. An image is found by a name (normalised
//! as kubelet does: `busybox` is `docker.io/library/busybox:latest`), by
//! `repository@digest`, or by its id (`sha256:<hex>` or the bare hex).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;

use crate::images::pull::PullOptions;
use crate::images::{
    document_kind, parse_index, parse_manifest, select_manifest, ImageError, Images, Tracker,
};
use crate::metadata::ImageRecord;
use crate::oci::{chain_ids, Kind};
use crate::reference::{Reference, ReferenceError};
use crate::registry::Credentials;

use super::NAMESPACE;

#[derive(Debug, thiserror::Error)]
pub enum CriImageError {
    #[error("image reference is empty")]
    EmptyReference,
    #[error("invalid image reference {reference:?}: {source}")]
    InvalidReference {
        reference: String,
        source: Box<ReferenceError>,
    },
    #[error("pull {reference}: {source}")]
    Pull {
        reference: String,
        source: Box<ImageError>,
    },
    #[error("{0}")]
    Store(Box<ImageError>),
    #[error("auth config: {0}")]
    InvalidAuth(String),
    #[error("read image {name}: {reason}")]
    BadImage { name: String, reason: String },
    #[error("measure {path}: {source}")]
    Usage {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<ImageError> for CriImageError {
    fn from(e: ImageError) -> CriImageError {
        CriImageError::Store(Box::new(e))
    }
}

/// One CRI image: its id and every name pointing at it.
#[derive(Debug, Clone, PartialEq)]
pub struct CriImage {
    /// `sha256:<hex>` of the config.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Bytes of manifest, config and layers (compressed), as containerd
    /// counts them.
    pub size: u64,
    /// The config's `User`: a numeric user (`1000`, `1000:1000`) is `uid`,
    /// a name is `username`.
    pub uid: Option<i64>,
    pub username: String,
    /// The config's chain id of its layers.
    pub chain_id: String,
    /// The whole image config, as JSON.
    pub config: serde_json::Value,
}

/// Normalises a reference as kubelet expects: registry and repository in
/// full, `latest` when neither tag nor digest is given.
pub fn normalise(reference: &str) -> Result<Reference, CriImageError> {
    if reference.is_empty() {
        return Err(CriImageError::EmptyReference);
    }
    let mut r = Reference::parse(reference).map_err(|source| CriImageError::InvalidReference {
        reference: reference.to_string(),
        source: Box::new(source),
    })?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".to_string());
    }
    Ok(r)
}

/// The user an image config names: `(uid, username)`.
fn image_user(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

/// The config descriptor's digest and bytes of a record, for this host's
/// platform.
fn config_of(images: &Images, record: &ImageRecord) -> Result<(String, Vec<u8>), CriImageError> {
    let bad = |reason: String| CriImageError::BadImage {
        name: record.name.clone(),
        reason,
    };
    let target = &record.target;
    let bytes = images.read_document("manifest", &target.digest)?;
    let manifest_desc = match document_kind(&target.media_type, &bytes) {
        Kind::Index => select_manifest(
            &record.name,
            &parse_index(&target.digest, &bytes)?,
            &images.platform,
        )?,
        Kind::Manifest => target.clone(),
        _ => {
            return Err(bad(format!(
                "unsupported media type {:?}",
                target.media_type
            )))
        }
    };
    let manifest_bytes = if manifest_desc.digest == target.digest {
        bytes
    } else {
        images.read_document("manifest", &manifest_desc.digest)?
    };
    let manifest = parse_manifest(&manifest_desc.digest, &manifest_bytes)?;
    let config = images.read_document("config", &manifest.config.digest)?;
    Ok((manifest.config.digest, config))
}

/// Every CRI image, keyed by id. Records whose content is missing or
/// unreadable (an image of another platform only) are left out.
pub fn list(images: &Images) -> Result<BTreeMap<String, CriImage>, CriImageError> {
    let mut out: BTreeMap<String, CriImage> = BTreeMap::new();
    let mut records = images.list(NAMESPACE)?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    for record in records {
        let (id, config_bytes) = match config_of(images, &record) {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(image = %record.name, error = %e, "not a CRI image");
                continue;
            }
        };
        let image = match out.get_mut(&id) {
            Some(image) => image,
            None => {
                let config: serde_json::Value =
                    serde_json::from_slice(&config_bytes).map_err(|e| CriImageError::BadImage {
                        name: record.name.clone(),
                        reason: format!("config {id} is not JSON: {e}"),
                    })?;
                let user = config
                    .pointer("/config/User")
                    .and_then(|u| u.as_str())
                    .unwrap_or_default();
                let (uid, username) = image_user(user);
                let diff_ids: Vec<String> = config
                    .pointer("/rootfs/diff_ids")
                    .and_then(|d| d.as_array())
                    .map(|d| {
                        d.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let image = CriImage {
                    id: id.clone(),
                    repo_tags: Vec::new(),
                    repo_digests: Vec::new(),
                    size: images.size(&record),
                    uid,
                    username,
                    chain_id: chain_ids(&diff_ids).pop().unwrap_or_default(),
                    config,
                };
                out.entry(id.clone()).or_insert(image)
            }
        };
        if let Ok(r) = Reference::parse(&record.name) {
            if r.tag.is_some() && r.digest.is_none() {
                image.repo_tags.push(record.name.clone());
            }
            let by_digest = format!("{}@{}", r.name(), record.target.digest);
            if !image.repo_digests.contains(&by_digest) {
                image.repo_digests.push(by_digest);
            }
        }
    }
    Ok(out)
}

/// Finds the image a name, `repository@digest`, id, or unique prefix of
/// an id's hex (as `crictl images` shows them) stands for; names first, as
/// containerd looks.
pub fn find(images: &Images, wanted: &str) -> Result<Option<CriImage>, CriImageError> {
    let all = list(images)?;
    let id = if wanted.starts_with("sha256:") {
        wanted.to_string()
    } else {
        format!("sha256:{wanted}")
    };
    if let Some(image) = all.get(&id) {
        return Ok(Some(image.clone()));
    }
    let by_name = match normalise(wanted) {
        Ok(reference) => {
            let name = reference.to_string();
            all.values()
                .find(|i| i.repo_tags.contains(&name) || i.repo_digests.contains(&name))
                .cloned()
        }
        Err(_) => None,
    };
    if by_name.is_some() {
        return Ok(by_name);
    }
    let hex = wanted.strip_prefix("sha256:").unwrap_or(wanted);
    if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matching = all.values().filter(|i| {
            i.id.strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(hex))
        });
        // An ambiguous prefix finds nothing.
        if let (Some(image), None) = (matching.next(), matching.next()) {
            return Ok(Some(image.clone()));
        }
        return Ok(None);
    }
    // Neither an id nor a name: the reference's own error.
    normalise(wanted).map(|_| None)
}

/// A CRI AuthConfig's fields.
#[derive(Default)]
pub struct AuthFields<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub auth: &'a str,
    pub server_address: &'a str,
    pub identity_token: &'a str,
    pub registry_token: &'a str,
}

/// Turns a CRI AuthConfig for a pull from `registry` into registry
/// credentials: an identity token, or a username and password given as
/// such or as base64 `auth`. An AuthConfig whose `server_address` names
/// another registry gives none, as in containerd.
pub fn credentials(
    registry: &str,
    a: &AuthFields<'_>,
) -> Result<Option<Credentials>, CriImageError> {
    let AuthFields {
        username,
        password,
        auth,
        server_address,
        identity_token,
        registry_token,
    } = *a;
    if !server_address.is_empty()
        && berth_client::docker_config::normalise_host(server_address)
            != berth_client::docker_config::normalise_host(registry)
    {
        return Ok(None);
    }
    if !registry_token.is_empty() {
        return Err(CriImageError::InvalidAuth(
            "registry_token is not supported; give username and password, auth or identity_token"
                .into(),
        ));
    }
    if !identity_token.is_empty() {
        return Ok(Some(Credentials::IdentityToken(identity_token.to_string())));
    }
    if !auth.is_empty() {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| CriImageError::InvalidAuth(format!("auth is not base64: {e}")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| CriImageError::InvalidAuth("auth is not UTF-8".into()))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| CriImageError::InvalidAuth("auth is not user:password".into()))?;
        return Ok(Some(Credentials::Basic {
            username: user.to_string(),
            password: pass.to_string(),
        }));
    }
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::Basic {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// Pulls and unpacks an image into the CRI's namespace; its id.
pub async fn pull(
    images: &Arc<Images>,
    reference: &Reference,
    credentials: Option<Credentials>,
) -> Result<(ImageRecord, String), CriImageError> {
    let name = reference.to_string();
    let opts = PullOptions {
        reference: name.clone(),
        platform: None,
        credentials,
        unpack: true,
    };
    let record = images
        .pull(NAMESPACE, opts, Arc::new(Tracker::new()))
        .await
        .map_err(|source| CriImageError::Pull {
            reference: name,
            source: Box::new(source),
        })?;
    let (id, _) = config_of(images, &record)?;
    Ok((record, id))
}

/// Removes every name of the image `wanted` stands for; the names removed
/// (none for an unknown image, which is no error, as in containerd). The
/// caller collects garbage afterwards.
pub fn remove(images: &Images, wanted: &str) -> Result<Vec<ImageRecord>, CriImageError> {
    let Some(image) = find(images, wanted)? else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for record in images.list(NAMESPACE)? {
        let same = config_of(images, &record).is_ok_and(|(id, _)| id == image.id);
        if same {
            match images.delete(NAMESPACE, &record.name) {
                Ok(r) => removed.push(r),
                // Removed meanwhile by another call.
                Err(ImageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(removed)
}

/// Bytes and inodes used under a directory (blocks allocated, each inode
/// counted once), as containerd's snapshotter usage counts them.
pub fn usage(dir: &Path) -> Result<(u64, u64), CriImageError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CriImageError::Usage { path, source }
    };
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Removed while walking.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(&path)(e)),
        };
        if seen.insert((meta.dev(), meta.ino())) {
            bytes += meta.blocks() * 512;
            inodes += 1;
        }
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(&path)(e)),
            };
            for entry in entries {
                stack.push(entry.map_err(err(&path))?.path());
            }
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalised_as_kubelet_expects() {
        let n = |s: &str| normalise(s).unwrap().to_string();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        let pinned = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&pinned),
            format!("docker.io/library/busybox@sha256:{}", "a".repeat(64))
        );
        assert!(matches!(normalise(""), Err(CriImageError::EmptyReference)));
        assert!(normalise("UPPER/case:1").is_err() || normalise("a b").is_err());
    }

    #[test]
    fn users_are_uids_or_names() {
        assert_eq!(image_user(""), (None, String::new()));
        assert_eq!(image_user("1002"), (Some(1002), String::new()));
        assert_eq!(image_user("1002:1003"), (Some(1002), String::new()));
        assert_eq!(image_user("www-data"), (None, "www-data".to_string()));
        assert_eq!(image_user("nobody:nogroup"), (None, "nobody".to_string()));
    }

    #[test]
    fn auth_configs_become_credentials() {
        let basic = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        let creds = |a: AuthFields<'_>| credentials("docker.io", &a);
        assert_eq!(creds(AuthFields::default()).unwrap(), None);
        let user = AuthFields {
            username: "u",
            password: "p",
            ..Default::default()
        };
        assert_eq!(creds(user).unwrap(), Some(basic("u", "p")));
        // base64("ann:s3:cret")
        let auth = AuthFields {
            auth: "YW5uOnMzOmNyZXQ=",
            ..Default::default()
        };
        assert_eq!(creds(auth).unwrap(), Some(basic("ann", "s3:cret")));
        let token = AuthFields {
            username: "u",
            identity_token: "tok",
            ..Default::default()
        };
        assert_eq!(
            creds(token).unwrap(),
            Some(Credentials::IdentityToken("tok".into()))
        );
        // For Docker Hub by any of its names; for another registry, none.
        for (server, given) in [("https://index.docker.io/v1/", true), ("quay.io", false)] {
            let a = AuthFields {
                username: "u",
                password: "p",
                server_address: server,
                ..Default::default()
            };
            assert_eq!(creds(a).unwrap().is_some(), given, "{server}");
        }
        let bad = AuthFields {
            auth: "%%%",
            ..Default::default()
        };
        assert!(creds(bad).is_err());
        let bearer = AuthFields {
            registry_token: "t",
            ..Default::default()
        };
        assert!(creds(bearer).is_err());
    }

    #[test]
    fn usage_counts_blocks_and_inodes_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let (bytes, inodes) = usage(dir.path()).unwrap();
        assert_eq!(inodes, 3);
        assert!(bytes >= 10_000, "{bytes}");
    }
}
