//! The content store: blobs addressed by their digest.
//!
//! A blob is written under `ingest/<ref>/` (the ref hashed, so any string
//! is a safe name), synced, and checked against the size and digest the
//! writer expects; only then is it renamed into `blobs/sha256/<hex>` and the
//! directory synced. A crash at any point leaves either nothing or a whole,
//! verified blob; an interrupted write resumes where its data ends.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("invalid digest {0:?}: want sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    #[error("content {0} not found")]
    NotFound(String),
    #[error("content {0} already exists")]
    AlreadyExists(String),
    #[error("ref {0:?} is being written by another writer")]
    Locked(String),
    #[error("content for ref {reference:?} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        reference: String,
        expected: u64,
        actual: u64,
    },
    #[error("content for ref {reference:?} has digest {actual}, expected {expected}")]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContentError {
    let path = path.to_path_buf();
    move |source| ContentError::Io {
        action,
        path,
        source,
    }
}

/// A sha256 content digest, `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// The digest whose sha256 sum is `sum`.
    pub fn from_sha256(sum: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(sum),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::str::FromStr for Digest {
    type Err = ContentError;

    fn from_str(s: &str) -> Result<Digest, ContentError> {
        let hex = s
            .strip_prefix("sha256:")
            .filter(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .ok_or_else(|| ContentError::InvalidDigest(s.to_string()))?;
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// What the store knows of a blob.
#[derive(Debug, Clone)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
    pub created: SystemTime,
}

/// A write in progress (or interrupted), by ref.
#[derive(Debug, Clone)]
pub struct Status {
    pub reference: String,
    pub offset: u64,
}

/// The content store rooted at a directory (`<supervisor root>/content`).
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
    /// Refs with a live writer: one writer per ref at a time.
    active: Mutex<HashSet<String>>,
}

fn sync_dir(path: &Path) -> Result<(), ContentError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", path))
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        for dir in [&blobs, &ingest] {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        Ok(ContentStore {
            blobs,
            ingest,
            active: Mutex::new(HashSet::new()),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.ingest
            .join(hex::encode(Sha256::digest(reference.as_bytes())))
    }

    pub fn info(&self, digest: &Digest) -> Result<Info, ContentError> {
        let path = self.blob_path(digest);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(digest.to_string()))
            }
            Err(e) => return Err(io("stat", &path)(e)),
        };
        Ok(Info {
            digest: digest.clone(),
            size: meta.len(),
            created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Every committed blob (writes in progress are not content yet).
    pub fn list(&self) -> Result<Vec<Info>, ContentError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.blobs).map_err(io("list", &self.blobs))? {
            let entry = entry.map_err(io("list", &self.blobs))?;
            let name = entry.file_name();
            let Ok(digest) = format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() else {
                continue;
            };
            out.push(self.info(&digest)?);
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Opens a blob for reading, positioned at `offset`.
    pub fn open_blob(&self, digest: &Digest, offset: u64) -> Result<File, ContentError> {
        let path = self.blob_path(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContentError::NotFound(digest.to_string()))
            }
            Err(e) => return Err(io("open", &path)(e)),
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(io("seek", &path))?;
        Ok(file)
    }

    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.blobs),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(digest.to_string()))
            }
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Writes in progress or interrupted, with how far each got.
    pub fn statuses(&self) -> Result<Vec<Status>, ContentError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.ingest).map_err(io("list", &self.ingest))? {
            let dir = entry.map_err(io("list", &self.ingest))?.path();
            let Ok(reference) = std::fs::read_to_string(dir.join("ref")) else {
                continue;
            };
            let offset = std::fs::metadata(dir.join("data"))
                .map(|m| m.len())
                .unwrap_or(0);
            out.push(Status { reference, offset });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Drops an interrupted write.
    pub fn abort(&self, reference: &str) -> Result<(), ContentError> {
        if self
            .active
            .lock()
            .map(|a| a.contains(reference))
            .unwrap_or(true)
        {
            return Err(ContentError::Locked(reference.to_string()));
        }
        let dir = self.ingest_dir(reference);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(reference.to_string()))
            }
            Err(e) => Err(io("remove", &dir)(e)),
        }
    }

    /// A writer for `reference`, resuming a write it interrupted: its data
    /// so far is hashed again, and `offset()` says where to go on.
    pub fn writer(self: &Arc<Self>, reference: &str) -> Result<Writer, ContentError> {
        {
            let mut active = self
                .active
                .lock()
                .map_err(|_| ContentError::Locked(reference.to_string()))?;
            if !active.insert(reference.to_string()) {
                return Err(ContentError::Locked(reference.to_string()));
            }
        }
        let unlock = |e| {
            if let Ok(mut active) = self.active.lock() {
                active.remove(reference);
            }
            e
        };
        let dir = self.ingest_dir(reference);
        std::fs::create_dir_all(&dir)
            .map_err(io("create", &dir))
            .map_err(unlock)?;
        std::fs::write(dir.join("ref"), reference)
            .map_err(io("write", &dir))
            .map_err(unlock)?;
        let data = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&data)
            .map_err(io("open", &data))
            .map_err(unlock)?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(io("read", &data))
                .map_err(unlock)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(Writer {
            store: Arc::clone(self),
            reference: reference.to_string(),
            dir,
            file,
            hasher,
            offset,
        })
    }
}

/// One write into the store; see `ContentStore::writer`. Dropping it without
/// `commit` keeps the data for a later resume.
pub struct Writer {
    store: Arc<ContentStore>,
    reference: String,
    dir: PathBuf,
    file: File,
    hasher: Sha256,
    offset: u64,
}

impl Writer {
    /// The data written so far, to read again from its start.
    pub fn data_so_far(&self) -> Result<File, ContentError> {
        let data = self.dir.join("data");
        File::open(&data).map_err(io("open", &data))
    }

    /// Throws away the data written so far (a source that cannot resume).
    pub fn truncate(&mut self) -> Result<(), ContentError> {
        self.file.set_len(0).map_err(io("truncate", &self.dir))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Bytes written so far (where a resumed write goes on).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ContentError> {
        self.file.write_all(data).map_err(io("write", &self.dir))?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(())
    }

    /// The digest of what was written so far (the blob's, once complete).
    pub fn digest(&self) -> Digest {
        Digest {
            hex: hex::encode(self.hasher.clone().finalize()),
        }
    }

    /// Verifies and publishes the blob. On a size or digest mismatch the
    /// data is discarded and nothing becomes visible.
    pub fn commit(self, size: Option<u64>, expected: &Digest) -> Result<Info, ContentError> {
        let data = self.dir.join("data");
        self.file.sync_all().map_err(io("sync", &data))?;
        let discard = |e: ContentError| {
            let _ = std::fs::remove_dir_all(&self.dir);
            e
        };
        if let Some(size) = size {
            if size != self.offset {
                return Err(discard(ContentError::SizeMismatch {
                    reference: self.reference.clone(),
                    expected: size,
                    actual: self.offset,
                }));
            }
        }
        let actual = Digest {
            hex: hex::encode(self.hasher.clone().finalize()),
        };
        if &actual != expected {
            return Err(discard(ContentError::DigestMismatch {
                reference: self.reference.clone(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            }));
        }
        let target = self.store.blob_path(expected);
        if target.exists() {
            return Err(discard(ContentError::AlreadyExists(expected.to_string())));
        }
        std::fs::rename(&data, &target).map_err(io("rename", &target))?;
        sync_dir(&self.store.blobs)?;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.store.info(expected)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(mut active) = self.store.active.lock() {
            active.remove(&self.reference);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<ContentStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ContentStore::open(&dir.path().join("content")).unwrap());
        (dir, store)
    }

    #[test]
    fn commit_publishes_exact_bytes() {
        let (_d, s) = store();
        let data = b"hello, berth";
        let digest = Digest::of(data);
        let mut w = s.writer("layer-1").unwrap();
        w.write(&data[..5]).unwrap();
        w.write(&data[5..]).unwrap();
        let info = w.commit(Some(data.len() as u64), &digest).unwrap();
        assert_eq!(info.size, data.len() as u64);
        let mut got = Vec::new();
        s.open_blob(&digest, 0)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, data);
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(s.statuses().unwrap().is_empty(), "ingest left behind");
    }

    #[test]
    fn wrong_digest_or_size_leaves_nothing() {
        let (_d, s) = store();
        let mut w = s.writer("bad").unwrap();
        w.write(b"tampered").unwrap();
        let err = w.commit(None, &Digest::of(b"original")).unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        let mut w = s.writer("short").unwrap();
        w.write(b"abc").unwrap();
        let err = w.commit(Some(4), &Digest::of(b"abc")).unwrap_err();
        assert!(matches!(err, ContentError::SizeMismatch { .. }), "{err}");
        assert!(s.list().unwrap().is_empty());
        assert!(s.statuses().unwrap().is_empty());
    }

    #[test]
    fn interrupted_write_resumes() {
        let (_d, s) = store();
        let data = vec![7u8; 200_000];
        let digest = Digest::of(&data);
        {
            let mut w = s.writer("big").unwrap();
            w.write(&data[..123_456]).unwrap();
        }
        assert_eq!(s.statuses().unwrap()[0].offset, 123_456);
        let mut w = s.writer("big").unwrap();
        assert_eq!(w.offset(), 123_456);
        w.write(&data[123_456..]).unwrap();
        w.commit(Some(data.len() as u64), &digest).unwrap();
        assert_eq!(s.info(&digest).unwrap().size, 200_000);
    }

    #[test]
    fn one_writer_per_ref() {
        let (_d, s) = store();
        let _w = s.writer("r").unwrap();
        assert!(matches!(s.writer("r"), Err(ContentError::Locked(_))));
        assert!(matches!(s.abort("r"), Err(ContentError::Locked(_))));
    }

    #[test]
    fn existing_blob_is_already_exists() {
        let (_d, s) = store();
        let digest = Digest::of(b"x");
        let mut w = s.writer("a").unwrap();
        w.write(b"x").unwrap();
        w.commit(None, &digest).unwrap();
        let mut w = s.writer("b").unwrap();
        w.write(b"x").unwrap();
        assert!(matches!(
            w.commit(None, &digest),
            Err(ContentError::AlreadyExists(_))
        ));
        assert!(s.statuses().unwrap().is_empty());
    }

    #[test]
    fn delete_and_missing() {
        let (_d, s) = store();
        let digest = Digest::of(b"y");
        assert!(matches!(s.info(&digest), Err(ContentError::NotFound(_))));
        let mut w = s.writer("y").unwrap();
        w.write(b"y").unwrap();
        w.commit(None, &digest).unwrap();
        s.delete(&digest).unwrap();
        assert!(matches!(s.delete(&digest), Err(ContentError::NotFound(_))));
    }

    #[test]
    fn digests_are_checked() {
        for bad in [
            "",
            "sha256:",
            "sha256:xyz",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let ok: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(ok, Digest::of(b""));
    }
}
