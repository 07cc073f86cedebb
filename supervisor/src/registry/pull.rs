//! Reading from a registry: manifests by tag or digest, blobs (from an
//! offset), and whether a blob exists.

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Response, StatusCode};

use super::Capability;
use super::{
    check_digest, sha256_digest, shown, BlobStream, Client, Credentials, Endpoint, RegistryError,
    MANIFEST_LIMIT,
};
use crate::oci::{
    Descriptor, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::reference::Reference;

/// Every manifest media type we can read, indexes first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// `name:tag` or `name@digest`, for messages.
fn display_ref(r: &Reference, tag_or_digest: &str) -> String {
    if tag_or_digest.contains(':') {
        format!("{}@{tag_or_digest}", r.name())
    } else {
        format!("{}:{tag_or_digest}", r.name())
    }
}

impl Client {
    /// Fetches the manifest (or index) `r` names, by its digest if it has
    /// one, else its tag. The descriptor's media type is the registry's
    /// Content-Type, its digest the sha256 of the bytes; when `r` has a
    /// digest the bytes must match it.
    pub async fn resolve(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<(Descriptor, Bytes), RegistryError> {
        let wanted = r.tag_or_digest();
        let (media_type, bytes) = self.get_manifest(r, wanted, creds).await?;
        let digest = sha256_digest(&bytes);
        if let Some(expected) = &r.digest {
            if *expected != digest {
                return Err(RegistryError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let descriptor = Descriptor {
            media_type,
            digest,
            size: bytes.len() as i64,
            urls: Vec::new(),
            annotations: Default::default(),
            platform: None,
        };
        Ok((descriptor, bytes))
    }

    /// Fetches a manifest by digest from `r`'s repository, checked against
    /// the digest.
    pub async fn fetch_manifest(
        &self,
        r: &Reference,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<Bytes, RegistryError> {
        check_digest(digest)?;
        let (_, bytes) = self.get_manifest(r, digest, creds).await?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    async fn get_manifest(
        &self,
        r: &Reference,
        tag_or_digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<(String, Bytes), RegistryError> {
        // A tag is resolved; a digest is content, pulled.
        let need = if tag_or_digest.contains(':') {
            Capability::Pull
        } else {
            Capability::Resolve
        };
        let targets = self.targets(r, need, creds)?;
        let last = targets.len() - 1;
        for (i, t) in targets.iter().enumerate() {
            match self.get_manifest_at(t, tag_or_digest).await {
                Err(e) if i < last => self.next_host(t, &e),
                result => return result,
            }
        }
        unreachable!("targets is never empty")
    }

    async fn get_manifest_at(
        &self,
        t: &super::Target<'_>,
        tag_or_digest: &str,
    ) -> Result<(String, Bytes), RegistryError> {
        let r = t.reference;
        let path = format!("/v2/{}/manifests/{tag_or_digest}", r.repository);
        let response = self
            .send(
                t,
                &Endpoint::Path(path),
                &|c, url| c.get(url).header(ACCEPT, MANIFEST_ACCEPT),
                true,
            )
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    what: "manifest",
                    reference: display_ref(r, tag_or_digest),
                })
            }
            _ => return Err(self.status_error(response).await),
        }
        let content_type = media_type_of(&response);
        let bytes = self.read_body(response, MANIFEST_LIMIT, "manifest").await?;
        let media_type = match content_type {
            Some(m) if is_manifest_type(&m) => m,
            // Some registries say application/json: ask the document.
            other => document_media_type(&bytes).or(other).unwrap_or_default(),
        };
        Ok((media_type, bytes))
    }

    /// Fetches a blob from `offset` on (a Range request when `offset > 0`).
    /// The body starts at the returned `offset`: the requested one, or 0
    /// when the registry ignored the range. Asking from the end of a blob
    /// gives an empty body at that offset.
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        digest: &str,
        offset: u64,
        creds: Option<&Credentials>,
    ) -> Result<BlobStream, RegistryError> {
        check_digest(digest)?;
        let targets = self.targets(r, Capability::Pull, creds)?;
        let last = targets.len() - 1;
        for (i, t) in targets.iter().enumerate() {
            match self.fetch_blob_at(t, digest, offset).await {
                Err(e) if i < last => self.next_host(t, &e),
                result => return result,
            }
        }
        unreachable!("targets is never empty")
    }

    async fn fetch_blob_at(
        &self,
        t: &super::Target<'_>,
        digest: &str,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        let r = t.reference;
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let response = self
            .send(
                t,
                &Endpoint::Path(path),
                &|c, url| {
                    let request = c.get(url);
                    if offset > 0 {
                        request.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        request
                    }
                },
                true,
            )
            .await?;
        let url = shown(response.url());
        let invalid = |reason: String| RegistryError::InvalidResponse {
            url: url.clone(),
            reason,
        };
        match response.status() {
            StatusCode::OK => {
                let total = response.content_length();
                Ok(BlobStream {
                    offset: 0,
                    total,
                    body: self.body_stream(response),
                })
            }
            StatusCode::PARTIAL_CONTENT => {
                let header = header_str(&response, CONTENT_RANGE);
                let (start, total) = header
                    .as_deref()
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        invalid(format!(
                            "partial content with Content-Range {header:?}, want bytes <start>-<end>/<total>"
                        ))
                    })?;
                if start != offset {
                    return Err(invalid(format!(
                        "asked for bytes from {offset}, got bytes from {start}"
                    )));
                }
                Ok(BlobStream {
                    offset: start,
                    total,
                    body: self.body_stream(response),
                })
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // "bytes */<size>": nothing left when we are at the end.
                let total = header_str(&response, CONTENT_RANGE).and_then(|h| {
                    h.strip_prefix("bytes */")
                        .and_then(|n| n.parse::<u64>().ok())
                });
                match total {
                    Some(total) if total == offset => Ok(BlobStream {
                        offset,
                        total: Some(total),
                        body: Box::pin(futures_util::stream::empty()),
                    }),
                    _ => Err(self.status_error(response).await),
                }
            }
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                what: "blob",
                reference: display_ref(r, digest),
            }),
            _ => Err(self.status_error(response).await),
        }
    }

    /// Whether `r`'s repository has a blob (HEAD request).
    pub async fn blob_exists(
        &self,
        r: &Reference,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<bool, RegistryError> {
        check_digest(digest)?;
        // Asked before a push: of the host the push goes to.
        let t = self.target(r, Capability::Push, creds)?;
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let response = self
            .send(&t, &Endpoint::Path(path), &|c, url| c.head(url), true)
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(response).await),
        }
    }

    /// Checks credentials as `docker login` does: `GET /v2/` on `registry`
    /// (`host[:port]`), answering its challenge with `creds` (a token is
    /// asked for no scope). A refusal is [`RegistryError::Unauthorized`].
    pub async fn check_auth(
        &self,
        registry: &str,
        creds: Option<&Credentials>,
    ) -> Result<(), RegistryError> {
        let r = Reference {
            registry: registry.to_string(),
            repository: "library/login".to_string(),
            tag: None,
            digest: None,
        };
        r.validate()?;
        let t = super::Target {
            reference: &r,
            host: r.api_host().to_string(),
            scheme: None,
            scope: String::new(),
            creds: creds.cloned(),
        };
        let response = self
            .send(
                &t,
                &Endpoint::Path("/v2/".to_string()),
                &|c, url| c.get(url),
                true,
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(response).await)
        }
    }
}

fn header_str(response: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The Content-Type without parameters.
fn media_type_of(response: &Response) -> Option<String> {
    header_str(response, CONTENT_TYPE)
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
        .filter(|v| !v.is_empty())
}

fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_OCI_INDEX | MEDIA_OCI_MANIFEST | MEDIA_DOCKER_LIST | MEDIA_DOCKER_MANIFEST
    ) || media_type.starts_with("application/vnd.")
}

/// The `mediaType` field of a JSON document, if it has one.
fn document_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Doc>(bytes)
        .ok()?
        .media_type
        .filter(|m| !m.is_empty())
}

/// `bytes <start>-<end>/<total|*>` → (start, total).
fn parse_content_range(header: &str) -> Option<(u64, Option<u64>)> {
    let rest = header.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse::<u64>().ok().filter(|&n| n > end)?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 5-4/100"), None);
        assert_eq!(parse_content_range("bytes 5-200/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn accept_names_every_manifest_type() {
        for m in [
            MEDIA_OCI_INDEX,
            MEDIA_OCI_MANIFEST,
            MEDIA_DOCKER_LIST,
            MEDIA_DOCKER_MANIFEST,
        ] {
            assert!(MANIFEST_ACCEPT.contains(m), "{m}");
        }
    }

    #[test]
    fn media_type_falls_back_to_the_document() {
        assert_eq!(
            document_media_type(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            )
            .as_deref(),
            Some(MEDIA_OCI_INDEX)
        );
        assert_eq!(document_media_type(br#"{"schemaVersion":2}"#), None);
        assert_eq!(document_media_type(b"nope"), None);
    }
}
