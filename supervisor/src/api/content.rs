//! The Content service: decodes, calls `crate::blobs` (a namespace's blobs
//! and its write sessions), encodes.

use std::io::{self, Read};
use std::sync::Arc;

use berth_proto::content::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::invalid;
use super::{lease, namespace, timestamp, BoxStream, Service};
use crate::blobs::{self, BlobError, Step, WriteAction, WriteMessage, WriteSession, WriteStatus};
use crate::images::Images;
use crate::metadata::ContentRecord;

fn content_info_pb(digest: String, r: &ContentRecord, size: u64) -> pb::ContentInfo {
    pb::ContentInfo {
        digest,
        size: size as i64,
        created_at: timestamp(r.created),
        labels: r.labels.clone().into_iter().collect(),
    }
}

fn write_message(msg: pb::WriteContentRequest) -> Result<WriteMessage, Status> {
    let action = match pb::WriteAction::try_from(msg.action) {
        Ok(pb::WriteAction::Stat) => WriteAction::Stat,
        Ok(pb::WriteAction::Write) => WriteAction::Write,
        Ok(pb::WriteAction::Commit) => WriteAction::Commit,
        Err(_) => return Err(invalid("write: unknown action")),
    };
    Ok(WriteMessage {
        reference: msg.r#ref,
        action,
        offset: msg.offset,
        total: msg.total,
        data: msg.data,
        expected: msg.expected,
    })
}

fn write_reply(action: WriteAction, s: WriteStatus) -> pb::WriteContentResponse {
    let action = match action {
        WriteAction::Stat => pb::WriteAction::Stat,
        WriteAction::Write => pb::WriteAction::Write,
        WriteAction::Commit => pb::WriteAction::Commit,
    };
    pb::WriteContentResponse {
        action: action as i32,
        offset: s.offset as i64,
        total: s.total,
        digest: s.digest.unwrap_or_default(),
    }
}

/// Runs one write stream: a session on the first message's ref, fed until
/// it commits, the client stops, or a message is refused.
async fn write_stream(
    images: &Arc<Images>,
    ns: &str,
    lease: Option<String>,
    input: &mut Streaming<pb::WriteContentRequest>,
    out: &mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let Some(first) = input.message().await? else {
        return Ok(());
    };
    let mut session = WriteSession::open(images, ns, lease, &first.r#ref).await?;
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        let msg = write_message(msg)?;
        let action = msg.action;
        match session.apply(msg)? {
            Step::Continue(s, status) => {
                session = *s;
                if out.send(Ok(write_reply(action, status))).await.is_err() {
                    return Ok(());
                }
            }
            Step::Committed(status) => {
                let _ = out.send(Ok(write_reply(action, status))).await;
                return Ok(());
            }
        }
        next = input.message().await?;
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::content_server::Content for Service {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::ContentInfo>, Status> {
        let ns = namespace(&req)?;
        let digest = req.into_inner().digest;
        let (r, size) = blobs::info(&self.images, &ns, &digest)?;
        Ok(Response::new(content_info_pb(digest, &r, size)))
    }

    async fn list(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<pb::ListContentResponse>, Status> {
        let ns = namespace(&req)?;
        let list = blobs::list(&self.images, &ns)?;
        Ok(Response::new(pb::ListContentResponse {
            info: list
                .into_iter()
                .map(|(digest, r, size)| content_info_pb(digest, &r, size))
                .collect(),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        blobs::remove(&self.images, &ns, &req.into_inner().digest).await?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<pb::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let (d, _) = blobs::held(&self.images, &ns, &r.digest)?;
        if r.offset < 0 || r.size < 0 {
            return Err(invalid("offset and size must not be negative"));
        }
        let file = blobs::open(&self.images, &d, r.offset as u64)?;
        let (tx, rx) = mpsc::channel(4);
        let mut offset = r.offset;
        let mut left = if r.size == 0 { u64::MAX } else { r.size as u64 };
        tokio::task::spawn_blocking(move || {
            let mut file = io::BufReader::new(file);
            while left > 0 {
                let mut buf = vec![0u8; (1 << 20).min(left) as usize];
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        left -= n as u64;
                        let msg = pb::ReadContentResponse { offset, data: buf };
                        offset += n as i64;
                        if tx.blocking_send(Ok(msg)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(BlobError::Read(e).into()));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_statuses(
        &self,
        req: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let ns = namespace(&req)?;
        let statuses = blobs::statuses(&self.images, &ns)?;
        Ok(Response::new(pb::ListStatusesResponse {
            statuses: statuses
                .into_iter()
                .map(|(r, offset)| pb::Status {
                    r#ref: r,
                    offset: offset as i64,
                    updated_at: None,
                })
                .collect(),
        }))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        blobs::abort(&self.images, &ns, &req.into_inner().r#ref).await?;
        Ok(Response::new(()))
    }

    type WriteStream = BoxStream<pb::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req, &self.images, &ns)?;
        let mut input = req.into_inner();
        let images = Arc::clone(&self.images);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _gc = Arc::clone(&images.gc_lock).read_owned().await;
            if let Err(e) = write_stream(&images, &ns, lease, &mut input, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
