//! One layer's bytes, stored and unpacked in a single pass: the blocking
//! half of a pull's layer download (the network's chunks appended to the
//! content store's ingest, decompressed, hashed for the diff id and untarred
//! as they arrive), and the unpack of a layer already in the store.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::archive;
use crate::content::Writer;
use crate::oci::Compression;

impl Images {
    /// Unpacks a layer from the content store into snapshot directory `id`.
    pub(super) fn unpack_stored(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        id: u64,
        lowers: &[PathBuf],
    ) -> Result<Vec<PathBuf>, ImageError> {
        let compression = layer_compression(layer)?;
        let digest: Digest = layer.digest.parse()?;
        let file = self.content.open_blob(&digest, 0)?;
        let mut reader = io::BufReader::with_capacity(1 << 20, file);
        let (actual, implied) = unpack(&mut reader, compression, &self.snapshots.fs(id), lowers)
            .map_err(|e| e.into_image_error(&layer.digest))?;
        check_diff_id(&layer.digest, diff_id, &actual)?;
        Ok(implied)
    }
}

/// How a layer's unpack went.
pub(super) enum Unpacked {
    /// Unpacked (or only stored); the directories it had to make up.
    Done(Vec<PathBuf>),
    /// Stored, but unpackable only on top of the layers below it.
    Later,
}

fn check_diff_id(digest: &str, expected: &str, actual: &Digest) -> Result<(), ImageError> {
    if actual.to_string() != expected {
        return Err(ImageError::DiffIdMismatch {
            digest: digest.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

pub(super) fn layer_compression(layer: &Descriptor) -> Result<Compression, ImageError> {
    match Kind::of(&layer.media_type) {
        Kind::Layer(c) => Ok(c),
        _ => Err(ImageError::UnsupportedLayer {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        }),
    }
}

/// What the download task hands the worker.
pub(super) enum Chunk {
    /// Where the registry's bytes start (0 if it ignored the range).
    Start(u64),
    Data(Bytes),
    Failed(String),
}

/// Reads the network's bytes from the channel, appending each to the
/// ingest (which hashes them) as it is read.
struct Tee<'a> {
    chunks: mpsc::Receiver<Chunk>,
    current: Bytes,
    writer: &'a mut Writer,
    size: u64,
    digest: &'a str,
    tracker: &'a Tracker,
    /// Why the network's stream broke, if it did: the ingest then stays
    /// for a resume instead of being checked.
    broken: Option<String>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                None if self.writer.offset() < self.size => {
                    let why = format!(
                        "the stream ended after {} of {} bytes",
                        self.writer.offset(),
                        self.size
                    );
                    self.broken = Some(why.clone());
                    return Err(io::Error::other(why));
                }
                None => return Ok(0),
                Some(Chunk::Data(d)) => self.current = d,
                Some(Chunk::Start(_)) => {}
                Some(Chunk::Failed(e)) => {
                    self.broken = Some(e.clone());
                    return Err(io::Error::other(e));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        let data = self.current.split_to(n);
        if self.writer.offset() + n as u64 > self.size {
            return Err(io::Error::other(format!(
                "the registry sent more than the {} bytes of {}",
                self.size, self.digest
            )));
        }
        self.writer.write(&data).map_err(io::Error::other)?;
        self.tracker.advance(self.digest, self.writer.offset());
        buf[..n].copy_from_slice(&data);
        Ok(n)
    }
}

/// The blocking half of a layer download: stores the bytes and, with
/// `unpack` = (compression, target directory, expected diff id), unpacks
/// them on the way. Ok(false) when the unpack needs the layers below.
pub(super) fn store_and_unpack(
    content: &Arc<ContentStore>,
    digest: &str,
    size: u64,
    unpack_into: Option<(Compression, PathBuf, String)>,
    offset_tx: oneshot::Sender<u64>,
    mut chunks: mpsc::Receiver<Chunk>,
    tracker: &Tracker,
) -> Result<Unpacked, ImageError> {
    let expected: Digest = digest.parse()?;
    let mut writer = open_writer(content, &format!("layer-{digest}"))?;
    if content.info(&expected).is_ok() {
        // Another pull stored it while this one waited for the ingest.
        drop(writer);
        drop(offset_tx);
        return match unpack_into {
            None => Ok(Unpacked::Done(Vec::new())),
            Some((compression, target, diff_id)) => {
                let file = content.open_blob(&expected, 0)?;
                let (actual, implied) = unpack(io::BufReader::new(file), compression, &target, &[])
                    .map_err(|e| e.into_image_error(digest))?;
                check_diff_id(digest, &diff_id, &actual).map(|()| Unpacked::Done(implied))
            }
        };
    }
    let resumed = writer.offset();
    if resumed >= size && resumed > 0 {
        // More than the blob can hold: start over.
        writer.truncate()?;
    }
    let _ = offset_tx.send(writer.offset());
    // The first message says where the registry's bytes start.
    let start = match chunks.blocking_recv() {
        Some(Chunk::Start(s)) => s,
        Some(Chunk::Failed(e)) => return Err(ImageError::Archive(e)),
        Some(Chunk::Data(_)) | None => {
            return Err(ImageError::Internal(
                "blob stream ended before it began".into(),
            ))
        }
    };
    if start != writer.offset() {
        writer.truncate()?;
    }
    if writer.offset() > 0 {
        tracing::info!(digest, offset = writer.offset(), "resuming download");
    }
    let existing = writer.data_so_far()?.take(writer.offset());
    let mut tee = Tee {
        chunks,
        current: Bytes::new(),
        writer: &mut writer,
        size,
        digest,
        tracker,
        broken: None,
    };
    let outcome = match &unpack_into {
        None => io::copy(&mut tee, &mut io::sink())
            .map(|_| None)
            .map_err(UnpackError::Read),
        Some((compression, target, _)) => {
            let mut source = io::BufReader::with_capacity(1 << 18, existing.chain(&mut tee));
            let r = unpack(&mut source, *compression, target, &[]);
            // Whatever happened, the rest of the blob is read so that its
            // digest can be checked.
            let drained = io::copy(&mut source, &mut io::sink());
            match (r, drained) {
                (Ok(d), Ok(_)) => Ok(Some(d)),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(UnpackError::Read(e)),
            }
        }
    };
    // A broken stream is the network's fault: keep the ingest for a resume.
    if let Some(why) = tee.broken.take() {
        return Err(ImageError::Archive(format!("download {digest}: {why}")));
    }
    drop(tee);
    if let Err(UnpackError::Read(e)) = &outcome {
        return Err(ImageError::Archive(format!("download {digest}: {e}")));
    }
    // The blob is whole: it is valid content whether or not it unpacked.
    let committed = writer.commit(Some(size), &expected);
    match committed {
        Ok(_) | Err(ContentError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match (outcome, unpack_into) {
        (Ok(Some((actual, implied))), Some((_, _, diff_id))) => {
            check_diff_id(digest, &diff_id, &actual)?;
            Ok(Unpacked::Done(implied))
        }
        (Ok(_), _) => Ok(Unpacked::Done(Vec::new())),
        (Err(UnpackError::Apply(e)), _) if needs_lower_layers(&e) => Ok(Unpacked::Later),
        (Err(e), _) => Err(e.into_image_error(digest)),
    }
}

/// Opens the ingest for `reference`, waiting while another pull writes it.
fn open_writer(content: &Arc<ContentStore>, reference: &str) -> Result<Writer, ImageError> {
    loop {
        match content.writer(reference) {
            Err(ContentError::Locked(_)) => std::thread::sleep(Duration::from_millis(50)),
            other => return Ok(other?),
        }
    }
}

/// Whether an unpack failed only for want of the layers below (a hard link
/// to a file one of them holds).
fn needs_lower_layers(e: &archive::ArchiveError) -> bool {
    matches!(e, archive::ArchiveError::LinkTargetMissing { .. })
}

enum UnpackError {
    /// Reading the compressed stream failed (network or disk).
    Read(io::Error),
    /// The stream does not decompress.
    Decompress(io::Error),
    /// The tar could not be applied.
    Apply(archive::ArchiveError),
}

impl UnpackError {
    pub(super) fn into_image_error(self, digest: &str) -> ImageError {
        match self {
            UnpackError::Read(e) => ImageError::Archive(format!("read layer {digest}: {e}")),
            UnpackError::Decompress(e) => {
                ImageError::Archive(format!("decompress layer {digest}: {e}"))
            }
            UnpackError::Apply(source) => ImageError::Unpack {
                digest: digest.to_string(),
                source,
            },
        }
    }
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    /// The first error of the inner reader, kept so the caller can tell a
    /// decompression failure from a tar one.
    error: Option<io::ErrorKind>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                self.error.get_or_insert(e.kind());
                Err(e)
            }
        }
    }
}

/// Decompresses `source`, untars it into `target`, and returns the digest
/// of the whole uncompressed stream (the diff id). Reads the tar to its end.
fn unpack<R: io::BufRead>(
    source: R,
    compression: Compression,
    target: &Path,
    lowers: &[PathBuf],
) -> Result<(Digest, Vec<PathBuf>), UnpackError> {
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(source).map_err(UnpackError::Decompress)?,
        ),
    };
    let mut tar = Hashing {
        inner: decoder,
        hasher: Sha256::new(),
        error: None,
    };
    let stats = match archive::apply_layer(&mut tar, target, lowers) {
        Ok(stats) => stats,
        Err(e) => {
            return Err(match tar.error.take() {
                Some(kind) => UnpackError::Decompress(io::Error::new(kind, e.to_string())),
                None => UnpackError::Apply(e),
            })
        }
    };
    // The diff id covers the tar's trailing blocks too.
    io::copy(&mut tar, &mut io::sink()).map_err(UnpackError::Decompress)?;
    Ok((
        Digest::from_sha256(&tar.hasher.finalize()),
        stats.implied_dirs,
    ))
}
