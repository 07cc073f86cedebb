//! A namespace's blobs: which blobs it holds (its records over the shared
//! content store), and client writes of new ones.
//!
//! A write is a session on an ingest ref, private to the namespace: the
//! client streams `Write`s at increasing offsets, may `Stat` to learn how
//! far the store got, and ends with a `Commit` naming the digest it
//! expects. A dropped session keeps its data, so the client can resume it
//! (or abort it) under the same ref; the store lets one writer hold a ref
//! at a time. A committed blob is held by the namespace (and the call's
//! lease, if it names one).

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use crate::content::{ContentError, Digest, Writer};
use crate::gc::{self, GcError};
use crate::images::{ImageError, Images};
use crate::metadata::{ContentRecord, MetadataError, Reader, Table};

/// How long a session waits for its ref's previous writer to close.
const UNLOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The namespace does not hold the blob (whether or not the store has it).
    #[error("content {0} not found")]
    NotHeld(String),
    #[error("write: ref required")]
    MissingRef,
    #[error("write: ref {got:?} in a stream for {want:?}")]
    OtherRef { got: String, want: String },
    #[error("write: offset {offset} but {reference:?} holds {held} bytes")]
    Offset {
        offset: i64,
        reference: String,
        held: u64,
    },
    /// Reading a held blob for a client failed midway.
    #[error("read blob: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// Recording the committed blob as held.
    #[error(transparent)]
    Hold(#[from] ImageError),
    #[error(transparent)]
    Gc(#[from] GcError),
}

/// A client's ingest ref, private to its namespace (a namespace name holds
/// no '/').
fn ingest_ref(ns: &str, reference: &str) -> String {
    format!("{ns}/{reference}")
}

/// Checks that namespace `ns` holds blob `digest`.
pub fn held(images: &Images, ns: &str, digest: &str) -> Result<(Digest, ContentRecord), BlobError> {
    let d: Digest = digest.parse()?;
    let rx = images.meta.read()?;
    let r: ContentRecord = rx
        .get(Table::Content, ns, digest)?
        .ok_or_else(|| BlobError::NotHeld(digest.to_string()))?;
    Ok((d, r))
}

/// A held blob's record and size.
pub fn info(images: &Images, ns: &str, digest: &str) -> Result<(ContentRecord, u64), BlobError> {
    let (d, r) = held(images, ns, digest)?;
    let info = images.content.info(&d)?;
    Ok((r, info.size))
}

/// The blobs `ns` holds that the store has: (digest, record, size).
pub fn list(images: &Images, ns: &str) -> Result<Vec<(String, ContentRecord, u64)>, BlobError> {
    let rx = images.meta.read()?;
    let mut out = Vec::new();
    for (digest, r) in rx.list::<ContentRecord>(Table::Content, ns)? {
        let Ok(d) = digest.parse::<Digest>() else {
            continue;
        };
        if let Ok(info) = images.content.info(&d) {
            out.push((digest, r, info.size));
        }
    }
    Ok(out)
}

/// Opens a held blob at `offset`.
pub fn open(images: &Images, digest: &Digest, offset: u64) -> Result<File, BlobError> {
    Ok(images.content.open_blob(digest, offset)?)
}

/// Drops the namespace's hold on a blob, then collects: the bytes go
/// once no namespace holds them.
pub async fn remove(images: &Arc<Images>, ns: &str, digest: &str) -> Result<(), BlobError> {
    held(images, ns, digest)?;
    {
        let _gc = Arc::clone(&images.gc_lock).write_owned().await;
        let tx = images.meta.write()?;
        tx.delete(Table::Content, ns, digest)?;
        tx.commit()?;
    }
    gc::collect_now(images).await?;
    Ok(())
}

/// The namespace's writes in progress or interrupted: (ref, bytes so far).
pub fn statuses(images: &Images, ns: &str) -> Result<Vec<(String, u64)>, BlobError> {
    let prefix = ingest_ref(ns, "");
    Ok(images
        .content
        .statuses()?
        .into_iter()
        .filter_map(|s| Some((s.reference.strip_prefix(&prefix)?.to_string(), s.offset)))
        .collect())
}

/// Drops an interrupted write (waiting for a writer still closing).
pub async fn abort(images: &Images, ns: &str, reference: &str) -> Result<(), BlobError> {
    let r = ingest_ref(ns, reference);
    let content = Arc::clone(&images.content);
    when_unlocked(move || content.abort(&r)).await?;
    Ok(())
}

/// Runs `f` (off the async threads) until the ref it needs is free, for up
/// to 5 s: a client that dropped a write stream and comes straight back (to
/// resume or abort) finds its old writer still closing.
async fn when_unlocked<T: Send + 'static>(
    f: impl Fn() -> Result<T, ContentError> + Send + Sync + 'static,
) -> Result<T, ContentError> {
    let f = Arc::new(f);
    let deadline = tokio::time::Instant::now() + UNLOCK_WAIT;
    loop {
        let g = Arc::clone(&f);
        let result = tokio::task::spawn_blocking(move || g())
            .await
            .unwrap_or_else(|e| {
                Err(ContentError::Io {
                    action: "run the content task",
                    path: std::path::PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        match result {
            Err(ContentError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// What a message of a write session asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAction {
    /// Only report how far the write got.
    Stat,
    /// Append `data` at `offset` (0 starts over).
    Write,
    /// Append `data`, then check and publish the blob as `expected`.
    Commit,
}

/// One message of a write session.
#[derive(Debug, Clone)]
pub struct WriteMessage {
    /// Empty, or the session's ref.
    pub reference: String,
    pub action: WriteAction,
    pub offset: i64,
    /// The blob's whole size, when the client knows it (> 0).
    pub total: i64,
    pub data: Vec<u8>,
    /// The digest a commit expects.
    pub expected: String,
}

/// Where a session is after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteStatus {
    pub offset: u64,
    pub total: i64,
    /// The blob's digest, once committed.
    pub digest: Option<String>,
}

/// The session goes on, or is over.
pub enum Step {
    Continue(Box<WriteSession>, WriteStatus),
    Committed(WriteStatus),
}

/// A client's write of one blob under one ref.
pub struct WriteSession {
    images: Arc<Images>,
    ns: String,
    lease: Option<String>,
    reference: String,
    writer: Writer,
    total: i64,
}

impl WriteSession {
    /// Takes the ref (resuming what an earlier session left), waiting up
    /// to 5 s for an earlier writer of it to close.
    pub async fn open(
        images: &Arc<Images>,
        ns: &str,
        lease: Option<String>,
        reference: &str,
    ) -> Result<WriteSession, BlobError> {
        if reference.is_empty() {
            return Err(BlobError::MissingRef);
        }
        let content = Arc::clone(&images.content);
        let r = ingest_ref(ns, reference);
        let writer = when_unlocked(move || content.writer(&r)).await?;
        Ok(WriteSession {
            images: Arc::clone(images),
            ns: ns.to_string(),
            lease,
            reference: reference.to_string(),
            writer,
            total: 0,
        })
    }

    /// The bytes written so far.
    pub fn offset(&self) -> u64 {
        self.writer.offset()
    }

    /// Applies one message.
    pub fn apply(mut self, msg: WriteMessage) -> Result<Step, BlobError> {
        if msg.reference != self.reference && !msg.reference.is_empty() {
            return Err(BlobError::OtherRef {
                got: msg.reference,
                want: self.reference,
            });
        }
        if msg.total > 0 {
            self.total = msg.total;
        }
        match msg.action {
            WriteAction::Stat => {}
            WriteAction::Write => {
                if msg.offset as u64 != self.writer.offset() {
                    if msg.offset == 0 {
                        self.writer.truncate()?;
                    } else {
                        return Err(BlobError::Offset {
                            offset: msg.offset,
                            reference: self.reference,
                            held: self.writer.offset(),
                        });
                    }
                }
                self.writer.write(&msg.data)?;
            }
            WriteAction::Commit => return self.commit(msg),
        }
        let status = WriteStatus {
            offset: self.writer.offset(),
            total: self.total,
            digest: None,
        };
        Ok(Step::Continue(Box::new(self), status))
    }

    fn commit(mut self, msg: WriteMessage) -> Result<Step, BlobError> {
        if !msg.data.is_empty() {
            self.writer.write(&msg.data)?;
        }
        let expected: Digest = msg.expected.parse()?;
        let size = (self.total > 0).then_some(self.total as u64);
        let offset = self.writer.offset();
        match self.writer.commit(size, &expected) {
            Ok(_) | Err(ContentError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let digest = expected.to_string();
        self.images
            .hold_content(&self.ns, self.lease.as_deref(), &digest)?;
        Ok(Step::Committed(WriteStatus {
            offset,
            total: self.total,
            digest: Some(digest),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_images;

    fn msg(action: WriteAction, offset: i64, data: &[u8]) -> WriteMessage {
        WriteMessage {
            reference: String::new(),
            action,
            offset,
            total: 0,
            data: data.to_vec(),
            expected: String::new(),
        }
    }

    fn commit(data: &[u8], expected: &Digest) -> WriteMessage {
        WriteMessage {
            expected: expected.to_string(),
            ..msg(WriteAction::Commit, 0, data)
        }
    }

    fn go_on(step: Step) -> (WriteSession, WriteStatus) {
        match step {
            Step::Continue(s, st) => (*s, st),
            Step::Committed(_) => panic!("committed too early"),
        }
    }

    #[tokio::test]
    async fn a_written_blob_is_committed_and_held_by_its_namespace() {
        let (_dir, images) = temp_images();
        let d = Digest::of(b"hello world");
        let s = WriteSession::open(&images, "a", None, "r1").await.unwrap();
        let (s, st) = go_on(s.apply(msg(WriteAction::Write, 0, b"hello ")).unwrap());
        assert_eq!(st.offset, 6);
        let (s, st) = go_on(s.apply(msg(WriteAction::Stat, 0, b"")).unwrap());
        assert_eq!((st.offset, st.digest), (6, None));
        let Step::Committed(st) = s.apply(commit(b"world", &d)).unwrap() else {
            panic!("not committed");
        };
        assert_eq!(st.offset, 11);
        assert_eq!(st.digest.as_deref(), Some(d.to_string().as_str()));
        let (_, size) = info(&images, "a", &d.to_string()).unwrap();
        assert_eq!(size, 11);
        assert!(matches!(
            info(&images, "b", &d.to_string()),
            Err(BlobError::NotHeld(_))
        ));
        assert_eq!(list(&images, "a").unwrap().len(), 1);
        assert!(statuses(&images, "a").unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_session_resumes_or_is_aborted() {
        let (_dir, images) = temp_images();
        let s = WriteSession::open(&images, "a", None, "r").await.unwrap();
        let (s, _) = go_on(s.apply(msg(WriteAction::Write, 0, b"abc")).unwrap());
        drop(s);
        assert_eq!(statuses(&images, "a").unwrap(), [("r".to_string(), 3)]);
        assert!(statuses(&images, "b").unwrap().is_empty());
        let s = WriteSession::open(&images, "a", None, "r").await.unwrap();
        assert_eq!(s.offset(), 3);
        let e = s.apply(msg(WriteAction::Write, 1, b"x")).err().unwrap();
        assert_eq!(e.to_string(), "write: offset 1 but \"r\" holds 3 bytes");
        // Offset 0 starts over.
        let s = WriteSession::open(&images, "a", None, "r").await.unwrap();
        let (s, st) = go_on(s.apply(msg(WriteAction::Write, 0, b"z")).unwrap());
        assert_eq!(st.offset, 1);
        drop(s);
        abort(&images, "a", "r").await.unwrap();
        assert!(statuses(&images, "a").unwrap().is_empty());
        assert!(matches!(
            abort(&images, "a", "r").await,
            Err(BlobError::Content(ContentError::NotFound(_)))
        ));
    }

    #[tokio::test]
    async fn bad_messages_are_refused() {
        let (_dir, images) = temp_images();
        assert!(matches!(
            WriteSession::open(&images, "a", None, "").await,
            Err(BlobError::MissingRef)
        ));
        let s = WriteSession::open(&images, "a", None, "r").await.unwrap();
        let other = WriteMessage {
            reference: "q".to_string(),
            ..msg(WriteAction::Stat, 0, b"")
        };
        assert!(matches!(
            s.apply(other),
            Err(BlobError::OtherRef { got, want }) if got == "q" && want == "r"
        ));
        let s = WriteSession::open(&images, "a", None, "r").await.unwrap();
        let e = s
            .apply(commit(b"abc", &Digest::of(b"other")))
            .err()
            .unwrap();
        assert!(matches!(
            e,
            BlobError::Content(ContentError::DigestMismatch { .. })
        ));
        let s = WriteSession::open(&images, "a", None, "r2").await.unwrap();
        let bad = WriteMessage {
            expected: "sha256:bad".to_string(),
            ..msg(WriteAction::Commit, 0, b"")
        };
        assert!(matches!(
            s.apply(bad),
            Err(BlobError::Content(ContentError::InvalidDigest(_)))
        ));
    }

    #[tokio::test]
    async fn a_removed_blob_is_collected_and_a_leased_one_kept() {
        let (_dir, images) = temp_images();
        let (lease, _) = crate::leases::create(&images.meta, "a", Default::default()).unwrap();
        let keep = Digest::of(b"keep");
        let drop_ = Digest::of(b"drop");
        for (d, data, lease) in [(&keep, b"keep", Some(lease)), (&drop_, b"drop", None)] {
            let s = WriteSession::open(&images, "a", lease, &d.to_string())
                .await
                .unwrap();
            assert!(matches!(
                s.apply(commit(data, d)).unwrap(),
                Step::Committed(_)
            ));
        }
        remove(&images, "a", &drop_.to_string()).await.unwrap();
        assert!(images.content.info(&drop_).is_err());
        assert!(matches!(
            remove(&images, "a", &drop_.to_string()).await,
            Err(BlobError::NotHeld(_))
        ));
        // The collection that removed the other one kept this.
        info(&images, "a", &keep.to_string()).unwrap();
    }
}
