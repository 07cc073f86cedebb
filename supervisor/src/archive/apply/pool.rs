//! The threads that write a layer's small regular files while the reading
//! thread goes on with the stream.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::archive::ArchiveError;

use super::meta::{set_file_meta, Meta};
use super::write::create_file;
use super::write_err;

/// Threads writing small files, besides the one reading the layer.
pub(super) const FILE_WRITERS: usize = 2;

/// Regular files up to this size are read into memory and written by the
/// pool; larger ones by the reading thread.
pub(super) const POOL_FILE_MAX: u64 = 256 << 10;

/// Files queued for the pool at most (so at most 4 MiB held in memory).
pub(super) const POOL_QUEUE: usize = 16;

/// One small regular file for the pool to write.
pub(super) struct FileJob {
    pub(super) dir: OwnedFd,
    pub(super) name: OsString,
    pub(super) rel: PathBuf,
    pub(super) data: Vec<u8>,
    pub(super) meta: Meta,
}

/// Creating an inode is what unpacking a layer of many small files spends
/// its time on, and it is kernel work that scales with threads (on the ext4
/// hosts measured, one thread creates ~1,500 files a second; two, nearly
/// twice that). So regular files are written by a few threads while the
/// reading thread goes on with the stream, directories and links. Order
/// still holds where it matters: an entry whose path (or a parent of it)
/// is still queued, every hard link, and the end of the layer wait for the
/// queue to drain.
pub(super) struct Pool {
    tx: Option<std::sync::mpsc::SyncSender<FileJob>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Jobs queued and not yet written.
    state: std::sync::Arc<(std::sync::Mutex<PoolState>, std::sync::Condvar)>,
    /// Paths queued since the queue last drained, and their parents.
    queued: std::collections::HashSet<PathBuf>,
    queued_parents: std::collections::HashSet<PathBuf>,
}

#[derive(Default)]
struct PoolState {
    pending: usize,
    error: Option<ArchiveError>,
}

impl Pool {
    pub(super) fn new(threads: usize) -> Pool {
        let (tx, rx) = std::sync::mpsc::sync_channel::<FileJob>(POOL_QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let state = std::sync::Arc::new((
            std::sync::Mutex::new(PoolState::default()),
            std::sync::Condvar::new(),
        ));
        let workers = (0..threads)
            .map(|_| {
                let rx = std::sync::Arc::clone(&rx);
                let state = std::sync::Arc::clone(&state);
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let result = write_small_file(&job);
                    let (lock, done) = &*state;
                    if let Ok(mut st) = lock.lock() {
                        st.pending -= 1;
                        if let Err(e) = result {
                            st.error.get_or_insert(e);
                        }
                        done.notify_all();
                    }
                })
            })
            .collect();
        Pool {
            tx: Some(tx),
            workers,
            state,
            queued: Default::default(),
            queued_parents: Default::default(),
        }
    }

    pub(super) fn submit(&mut self, job: FileJob) -> Result<(), ArchiveError> {
        for parent in job.rel.ancestors().skip(1) {
            if !self.queued_parents.insert(parent.to_path_buf()) {
                break;
            }
        }
        self.queued.insert(job.rel.clone());
        if let Ok(mut st) = self.state.0.lock() {
            if let Some(e) = st.error.take() {
                return Err(e);
            }
            st.pending += 1;
        }
        let rel = job.rel.clone();
        match &self.tx {
            Some(tx) if tx.send(job).is_ok() => Ok(()),
            _ => Err(write_err(
                &rel,
                io::Error::other("file writer threads are gone"),
            )),
        }
    }

    /// Waits until every queued file is written; the first error, if any.
    pub(super) fn drain(&mut self) -> Result<(), ArchiveError> {
        self.queued.clear();
        self.queued_parents.clear();
        let (lock, done) = &*self.state;
        let Ok(mut st) = lock.lock() else {
            return Err(write_err(
                Path::new(""),
                io::Error::other("file writer panicked"),
            ));
        };
        while st.pending > 0 {
            st = match done.wait(st) {
                Ok(st) => st,
                Err(_) => {
                    return Err(write_err(
                        Path::new(""),
                        io::Error::other("file writer panicked"),
                    ))
                }
            };
        }
        match st.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drains the queue first if `rel` or a parent of it is queued, or if
    /// an entry that is not a directory would replace a directory holding
    /// queued files.
    pub(super) fn order_before(&mut self, rel: &Path, is_dir: bool) -> Result<(), ArchiveError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        if rel.ancestors().any(|a| self.queued.contains(a))
            || (!is_dir && self.queued_parents.contains(rel))
        {
            self.drain()?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// What `write_file` does for a file already read into memory.
fn write_small_file(job: &FileJob) -> Result<(), ArchiveError> {
    let rel = &job.rel;
    let mut file = create_file(job.dir.as_fd(), &job.name).map_err(|e| write_err(rel, e))?;
    file.write_all(&job.data).map_err(|e| write_err(rel, e))?;
    set_file_meta(&file, &job.meta, rel)
}
