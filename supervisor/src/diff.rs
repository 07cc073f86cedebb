//! Diff: a snapshot's changes against its parent, as a layer blob.
//!
//! An overlayfs upper directory is exactly those changes, so the layer is
//! that directory written as a tar (whiteouts and opaque directories turned
//! back into `.wh.` entries), compressed, and hashed twice on the way into
//! the content store: the blob's digest and the diff id.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::archive;
use crate::content::{ContentError, Digest, Writer};
use crate::images::{unique_id, ImageError, Images};
use crate::oci::{self, Compression, Descriptor, Kind};

/// Hashes what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Adapts the content store's writer to `io::Write`.
struct ContentSink<'a>(&'a mut Writer);

impl Write for ContentSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the changes of snapshot `key` as a layer of `media_type` (empty:
/// gzip) into the content store, held by `ns` and `lease`. Returns the
/// layer's descriptor and its diff id.
pub fn diff(
    images: &Images,
    ns: &str,
    key: &str,
    media_type: &str,
    lease: Option<&str>,
) -> Result<(Descriptor, String), ImageError> {
    let media_type = if media_type.is_empty() {
        oci::MEDIA_OCI_LAYER_GZIP
    } else {
        media_type
    };
    let compression = match Kind::of(media_type) {
        Kind::Layer(c) => c,
        _ => {
            return Err(ImageError::UnsupportedLayer {
                digest: key.to_string(),
                media_type: media_type.to_string(),
            })
        }
    };
    let record = images.snapshots.get(&images.meta.read()?, ns, key)?;
    let upper = images.snapshots.fs(record.id);
    let mut writer = images.content.writer(&unique_id("diff"))?;
    writer.truncate()?;
    let archive_err = |e: io::Error| ImageError::Archive(format!("diff snapshot {key}: {e}"));
    let (digest, diff_id) = if compression == Compression::None {
        // The blob is the tar: the content writer's own hash is both the
        // digest and the diff id, one pass over the data instead of three.
        archive::write_diff(&upper, ContentSink(&mut writer)).map_err(|source| {
            ImageError::Unpack {
                digest: key.to_string(),
                source,
            }
        })?;
        let digest = writer.digest();
        (digest.clone(), digest)
    } else {
        let mut blob = HashingWriter {
            inner: ContentSink(&mut writer),
            hasher: Sha256::new(),
        };
        let tar_sum = match compression {
            Compression::None => tar_into(&upper, &mut blob, key)?,
            Compression::Gzip => {
                let mut gz =
                    flate2::write::GzEncoder::new(&mut blob, flate2::Compression::default());
                let sum = tar_into(&upper, &mut gz, key)?;
                gz.finish().map_err(archive_err)?;
                sum
            }
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(&mut blob, 3).map_err(archive_err)?;
                let sum = tar_into(&upper, &mut z, key)?;
                z.finish().map_err(archive_err)?;
                sum
            }
        };
        (
            Digest::from_sha256(&blob.hasher.finalize()),
            Digest::from_sha256(&tar_sum),
        )
    };
    let size = writer.offset();
    match writer.commit(Some(size), &digest) {
        Ok(_) | Err(ContentError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    images.hold_content(ns, lease, &digest.to_string())?;
    let desc = Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: size as i64,
        urls: Vec::new(),
        annotations: Default::default(),
        platform: None,
    };
    Ok((desc, diff_id.to_string()))
}

/// Writes the tar of `upper` into `out`, returning the tar's sha256.
fn tar_into<W: Write>(upper: &std::path::Path, out: W, key: &str) -> Result<Vec<u8>, ImageError> {
    let mut tar = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
    };
    archive::write_diff(upper, &mut tar).map_err(|source| ImageError::Unpack {
        digest: key.to_string(),
        source,
    })?;
    tar.flush()
        .map_err(|e| ImageError::Archive(format!("diff snapshot {key}: {e}")))?;
    Ok(tar.hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::metadata::SnapshotKind;

    /// A snapshot holding `files`, and the blob of its diff as `media_type`.
    fn diffed(media_type: &str, files: &[(&str, &[u8])]) -> (Descriptor, String, Vec<u8>) {
        let (_dir, images) = crate::testing::temp_images();
        images
            .snapshots
            .prepare(
                &images.meta,
                "ns",
                "work",
                None,
                SnapshotKind::Active,
                Default::default(),
            )
            .unwrap();
        let record = images
            .snapshots
            .get(&images.meta.read().unwrap(), "ns", "work")
            .unwrap();
        for (name, data) in files {
            fs::write(images.snapshots.fs(record.id).join(name), data).unwrap();
        }
        let (desc, diff_id) = diff(&images, "ns", "work", media_type, None).unwrap();
        let mut blob = Vec::new();
        let mut file = images
            .content
            .open_blob(&desc.digest.parse().unwrap(), 0)
            .unwrap();
        io::Read::read_to_end(&mut file, &mut blob).unwrap();
        (desc, diff_id, blob)
    }

    fn sha(data: &[u8]) -> String {
        Digest::of(data).to_string()
    }

    #[test]
    fn an_uncompressed_layer_is_the_tar_and_its_digest_the_diff_id() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let (desc, diff_id, blob) = diffed(oci::MEDIA_OCI_LAYER, &[("big", &big), ("small", b"s")]);
        assert_eq!(desc.media_type, oci::MEDIA_OCI_LAYER);
        assert_eq!(desc.size as usize, blob.len());
        assert_eq!(desc.digest, sha(&blob));
        assert_eq!(diff_id, desc.digest);
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(blob.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            io::Read::read_to_end(&mut entry, &mut data).unwrap();
            if name.trim_start_matches("./") == "big" {
                assert!(data == big, "the big file's contents differ");
            }
            names.push(name.trim_start_matches("./").to_string());
        }
        names.sort();
        assert_eq!(names, ["big", "small"]);
    }

    #[test]
    fn a_gzip_layer_has_the_diff_id_of_its_tar() {
        let (desc, diff_id, blob) = diffed("", &[("f", b"data")]);
        assert_eq!(desc.media_type, oci::MEDIA_OCI_LAYER_GZIP);
        assert_eq!(desc.digest, sha(&blob));
        let mut tar = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(blob.as_slice()), &mut tar)
            .unwrap();
        assert_eq!(diff_id, sha(&tar));
        assert_ne!(diff_id, desc.digest);
    }
}
