//! Writing to a registry: blob uploads (monolithic or chunked) and manifests.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, Url};
use tokio::sync::watch;

use super::Capability;
use super::{
    check_digest, sha256_digest, shown, Client, Credentials, Endpoint, RegistryError, Target,
};
use crate::oci::Descriptor;
use crate::reference::{is_valid_digest, is_valid_tag, Reference};

/// How much of the file one read hands to the connection.
const READ_CHUNK: u64 = 256 << 10;

/// The part of an upload that a request carries.
struct Span {
    start: u64,
    end: u64,
}

/// A read error of the blob file, kept aside: reqwest only reports that
/// the body failed.
type ReadFailure = Arc<Mutex<Option<io::Error>>>;

impl Client {
    /// Uploads the blob `desc` describes, read from `file`: monolithic
    /// (`chunk_size` None: POST, then one PUT with the body) or chunked
    /// (POST, PATCH each chunk with its Content-Range, then PUT `?digest=`).
    /// `progress` is called with the number of bytes sent so far. The
    /// registry checks the digest; the file must be `desc.size` bytes.
    pub async fn push_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        file: File,
        chunk_size: Option<u64>,
        creds: Option<&Credentials>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        check_digest(&desc.digest)?;
        let read_error = |source| RegistryError::ReadBlobFile {
            digest: desc.digest.clone(),
            source,
        };
        let actual = file.metadata().map_err(read_error)?.len();
        let size = u64::try_from(desc.size).unwrap_or(u64::MAX);
        if actual != size {
            return Err(RegistryError::BlobFileSize {
                digest: desc.digest.clone(),
                expected: size,
                actual,
            });
        }
        let t = self.target(r, Capability::Push, creds)?;

        let path = format!("/v2/{}/blobs/uploads/", r.repository);
        let response = self
            .send(
                &t,
                &Endpoint::Path(path),
                &|c, url| c.post(url).header(CONTENT_LENGTH, 0),
                true,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response).await);
        }
        let mut location = location_of(&response)?;

        let upload = Upload {
            client: self,
            target: &t,
            file: Arc::new(file),
            digest: &desc.digest,
            sent: Arc::new(watch::channel(0).0),
            failure: Arc::new(Mutex::new(None)),
            progress,
        };
        match chunk_size.filter(|&n| n > 0) {
            None => {
                let mut url = location;
                url.query_pairs_mut().append_pair("digest", &desc.digest);
                let span = Span {
                    start: 0,
                    end: size,
                };
                let response = upload.send(Method::PUT, url, span, false).await?;
                if !response.status().is_success() {
                    return Err(self.status_error(response).await);
                }
            }
            Some(chunk) => {
                let mut start = 0;
                while start < size {
                    let end = start.saturating_add(chunk).min(size);
                    let span = Span { start, end };
                    let response = upload
                        .send(Method::PATCH, location.clone(), span, true)
                        .await?;
                    if !response.status().is_success() {
                        return Err(self.status_error(response).await);
                    }
                    // Each response names where the next chunk goes.
                    if response.headers().contains_key(LOCATION) {
                        location = location_of(&response)?;
                    }
                    start = end;
                }
                let mut url = location;
                url.query_pairs_mut().append_pair("digest", &desc.digest);
                let response = self
                    .send(
                        &t,
                        &Endpoint::Url(url),
                        &|c, url| c.put(url).header(CONTENT_LENGTH, 0),
                        true,
                    )
                    .await?;
                if !response.status().is_success() {
                    return Err(self.status_error(response).await);
                }
            }
        }
        progress(size);
        Ok(())
    }

    /// Stores a manifest under a tag or digest, with `media_type` as its
    /// Content-Type. Pushing by digest checks the bytes hash to it.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        bytes: Bytes,
        creds: Option<&Credentials>,
    ) -> Result<(), RegistryError> {
        if is_valid_digest(tag_or_digest) {
            let actual = sha256_digest(&bytes);
            if actual != tag_or_digest {
                return Err(RegistryError::DigestMismatch {
                    expected: tag_or_digest.to_string(),
                    actual,
                });
            }
        } else if !is_valid_tag(tag_or_digest) {
            return Err(RegistryError::Reference(
                crate::reference::ReferenceError::InvalidTag {
                    reference: format!("{}:{tag_or_digest}", r.name()),
                    tag: tag_or_digest.to_string(),
                },
            ));
        }
        let t = self.target(r, Capability::Push, creds)?;
        let path = format!("/v2/{}/manifests/{tag_or_digest}", r.repository);
        let response = self
            .send(
                &t,
                &Endpoint::Path(path),
                &|c, url| {
                    c.put(url)
                        .header(CONTENT_TYPE, media_type)
                        .body(bytes.clone())
                },
                true,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response).await);
        }
        Ok(())
    }
}

/// The Location of an upload, resolved against the URL that answered.
fn location_of(response: &Response) -> Result<Url, RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidResponse {
        url: shown(response.url()),
        reason,
    };
    let value = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| invalid("upload response has no Location".to_string()))?;
    let value = value
        .to_str()
        .map_err(|_| invalid("upload Location is not ASCII".to_string()))?;
    response
        .url()
        .join(value)
        .map_err(|e| invalid(format!("upload Location {value:?} is not a URL: {e}")))
}

/// One blob upload in progress.
struct Upload<'a> {
    client: &'a Client,
    target: &'a Target<'a>,
    file: Arc<File>,
    digest: &'a str,
    /// The file offset handed to the connection so far.
    sent: Arc<watch::Sender<u64>>,
    failure: ReadFailure,
    progress: &'a (dyn Fn(u64) + Send + Sync),
}

impl Upload<'_> {
    /// Sends `span` of the file to `url`, reporting progress meanwhile. The
    /// body is made anew for each attempt (an auth retry re-reads the file).
    async fn send(
        &self,
        method: Method,
        url: Url,
        span: Span,
        content_range: bool,
    ) -> Result<Response, RegistryError> {
        let Span { start, end } = span;
        let build = |c: &reqwest::Client, url: Url| {
            let body = file_stream(
                self.file.clone(),
                start,
                end,
                self.sent.clone(),
                self.failure.clone(),
            );
            let request = c
                .request(method.clone(), url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, end - start)
                .body(reqwest::Body::wrap_stream(body));
            if content_range && end > start {
                request.header(CONTENT_RANGE, format!("{start}-{}", end - 1))
            } else {
                request
            }
        };
        let result = with_progress(
            self.client
                .send(self.target, &Endpoint::Url(url), &build, false),
            self.sent.subscribe(),
            self.progress,
        )
        .await;
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(source) = failure {
            return Err(RegistryError::ReadBlobFile {
                digest: self.digest.to_string(),
                source,
            });
        }
        let response = result?;
        (self.progress)(end);
        Ok(response)
    }
}

/// Awaits `fut`, passing each new value of `sent` to `progress` meanwhile.
async fn with_progress<T>(
    fut: impl Future<Output = T>,
    mut sent: watch::Receiver<u64>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> T {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            changed = sent.changed() => match changed {
                Ok(()) => {
                    let value = *sent.borrow_and_update();
                    progress(value);
                }
                Err(_) => return fut.await,
            },
        }
    }
}

/// Bytes `start..end` of a file, read off the async threads.
fn file_stream(
    file: Arc<File>,
    start: u64,
    end: u64,
    sent: Arc<watch::Sender<u64>>,
    failure: ReadFailure,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::try_unfold(start, move |pos| {
        let file = file.clone();
        let sent = sent.clone();
        let failure = failure.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let len = READ_CHUNK.min(end - pos);
            let read = tokio::task::spawn_blocking(move || read_exact_at(&file, pos, len))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(format!("file reader task: {e}"))));
            match read {
                Ok(buf) => {
                    sent.send_replace(pos + len);
                    Ok(Some((Bytes::from(buf), pos + len)))
                }
                Err(e) => {
                    let kept = io::Error::new(e.kind(), e.to_string());
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(kept);
                    Err(e)
                }
            }
        }
    })
}

fn read_exact_at(file: &File, pos: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ends at {} bytes", pos + filled as u64),
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt as _;
    use std::io::Write as _;

    #[tokio::test]
    async fn file_streams_read_their_span_and_report_progress() {
        let mut tmp = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(READ_CHUNK as usize * 2 + 77))
            .map(|i| i as u8)
            .collect();
        tmp.write_all(&data).unwrap();
        let file = Arc::new(tmp);
        let sent = Arc::new(watch::channel(0).0);
        let failure = ReadFailure::default();
        let start = 5;
        let end = data.len() as u64 - 3;
        let chunks: Vec<Bytes> =
            file_stream(file.clone(), start, end, sent.clone(), failure.clone())
                .try_collect()
                .await
                .unwrap();
        let got: Vec<u8> = chunks.concat();
        assert_eq!(got, &data[start as usize..end as usize]);
        assert_eq!(*sent.borrow(), end);

        // Past the end of the file: an error, recorded for the caller.
        let err = file_stream(file, 0, data.len() as u64 + 10, sent, failure.clone())
            .try_collect::<Vec<Bytes>>()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(failure.lock().unwrap().is_some());
    }
}
