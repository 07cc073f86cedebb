//! Content digests of files the builder has read or written, remembered by
//! what identifies a file's content without reading it: device, inode,
//! size, and the modification and change times to the nanosecond. A COPY
//! source is hashed twice per step otherwise (once for the cache key, once
//! for the history line), and a 100 MB file takes a noticeable part of a
//! rebuild to hash; the context's files are hashed as they stream in
//! ([`HashingWriter`]), so a COPY of them never reads them for its key.
//!
//! Any write to a file changes its change time (the kernel sets it on
//! every write, chmod, chown and utimes, and nothing can set it back), so
//! a changed file is never taken for the file it was. The table is
//! process-wide and bounded: when full it starts again empty.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::{mpsc, Mutex, OnceLock};

use sha2::{Digest as _, Sha256};

/// At most this many files are remembered (about 5 MB).
const MAX_ENTRIES: usize = 65_536;

/// What identifies a file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(meta: &fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

fn table() -> &'static Mutex<HashMap<FileKey, [u8; 32]>> {
    static TABLE: OnceLock<Mutex<HashMap<FileKey, [u8; 32]>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Remembers the sha256 of the regular file `meta` describes (read after
/// its last write and metadata change).
pub fn remember(meta: &fs::Metadata, digest: [u8; 32]) {
    if !meta.is_file() {
        return;
    }
    let Ok(mut table) = table().lock() else {
        return;
    };
    if table.len() >= MAX_ENTRIES {
        table.clear();
    }
    table.insert(FileKey::of(meta), digest);
}

pub(super) fn known(meta: &fs::Metadata) -> Option<[u8; 32]> {
    table().lock().ok()?.get(&FileKey::of(meta)).copied()
}

/// The sha256 of the contents of the regular file at `path`, described by
/// `meta` (its `symlink_metadata` or, through links, its `metadata`):
/// remembered, or read and then remembered.
pub fn file_digest(path: &std::path::Path, meta: &fs::Metadata) -> io::Result<[u8; 32]> {
    if let Some(digest) = known(meta) {
        return Ok(digest);
    }
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    // Remembered under the times read after the reading: a write while it
    // was read changed them, and the stale digest is then never found.
    let after = file.metadata()?;
    if FileKey::of(&after) == FileKey::of(meta) {
        remember(&after, digest);
    }
    Ok(digest)
}

/// Hashes, on a thread of its own, the pieces of a large file given to it,
/// so the hashing overlaps with the writing (the unpacker would otherwise
/// do both in turn). Its buffers go round: at most three exist.
pub struct BackgroundHasher {
    full: Option<mpsc::SyncSender<Vec<u8>>>,
    empty: mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<[u8; 32]>>,
    buffers: usize,
    size: usize,
}

impl BackgroundHasher {
    /// Starts the hashing thread; pieces are at most `size` bytes.
    pub fn start(size: usize) -> io::Result<BackgroundHasher> {
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("context-hash".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for piece in full_rx {
                    hasher.update(&piece);
                    // The unpacker may have finished: a lost buffer is fine.
                    let _ = empty_tx.send(piece);
                }
                <[u8; 32]>::from(hasher.finalize())
            })?;
        Ok(BackgroundHasher {
            full: Some(full_tx),
            empty: empty_rx,
            thread: Some(thread),
            buffers: 0,
            size,
        })
    }

    /// A buffer of `size` bytes to fill.
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut buf = match self.empty.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.buffers < 3 => {
                self.buffers += 1;
                Vec::new()
            }
            Err(_) => self.empty.recv().unwrap_or_default(),
        };
        buf.resize(self.size, 0);
        buf
    }

    /// Hashes `piece` (all its bytes) after the ones given before.
    pub fn hash(&mut self, piece: Vec<u8>) -> io::Result<()> {
        let sent = self.full.as_ref().map(|full| full.send(piece));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(io::Error::other("the hashing thread stopped")),
        }
    }

    /// The digest of every piece given.
    pub fn finish(mut self) -> io::Result<[u8; 32]> {
        drop(self.full.take());
        self.thread
            .take()
            .ok_or_else(|| io::Error::other("the hashing thread is gone"))?
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))
    }
}

/// Hashes what is written through it (a context file as it is unpacked).
pub struct HashingWriter<W> {
    pub inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn digest(self) -> ([u8; 32], W) {
        (self.hasher.finalize().into(), self.inner)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn a_file_is_hashed_once_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(file_digest(&path, &meta).unwrap(), sha(b"hello"));
        assert_eq!(known(&meta), Some(sha(b"hello")));
    }

    #[test]
    fn a_rewritten_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"one").unwrap();
        let meta = fs::metadata(&path).unwrap();
        file_digest(&path, &meta).unwrap();
        // Same size, time put back: the change time still moved.
        let mtime = meta.modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, b"two").unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(file_digest(&path, &meta).unwrap(), sha(b"two"));
    }

    #[test]
    fn the_background_hasher_hashes_every_piece_in_order() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut hasher = BackgroundHasher::start(1 << 20).unwrap();
        for part in data.chunks(700_000) {
            let mut buf = hasher.buffer();
            assert_eq!(buf.len(), 1 << 20);
            buf[..part.len()].copy_from_slice(part);
            buf.truncate(part.len());
            hasher.hash(buf).unwrap();
        }
        assert_eq!(hasher.finish().unwrap(), sha(&data));
    }

    #[test]
    fn what_is_written_through_the_writer_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut writer = HashingWriter::new(fs::File::create(&path).unwrap());
        writer.write_all(b"streamed").unwrap();
        let (digest, file) = writer.digest();
        remember(&file.metadata().unwrap(), digest);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(known(&meta), Some(sha(b"streamed")));
        assert_eq!(file_digest(&path, &meta).unwrap(), sha(b"streamed"));
    }
}
