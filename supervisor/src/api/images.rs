//! The Images service: decodes, calls `crate::images` (pull, push, import,
//! export, names), encodes; streams transfer progress; publishes
//! `/images/<create|update|delete>`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::images::v1 as images_pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::{invalid, status};
use super::{blocking, descriptor_pb, namespace, timestamp, BoxStream, Service};
use crate::gc;
use crate::images::pull::PullOptions;
use crate::images::push::PushOptions;
use crate::images::transfer::{ArchiveFormat, ImportOptions};
use crate::images::{parse_platform, ImageError, State, Tracker};
use crate::metadata::ImageRecord;
use crate::registry::Credentials;

/// A request's registry auth as the registry client takes it (the same
/// rule as a docker config entry's: identity token, else user and password).
fn credentials(auth: Option<images_pb::RegistryAuth>) -> Option<Credentials> {
    auth.map(berth_client::AuthEntry::from)?.credentials()
}

impl Service {
    /// Publishes `/images/<what>` for an image. An event that cannot be
    /// recorded is logged; the call it reports on has succeeded.
    fn image_event(&self, ns: &str, what: &str, r: &ImageRecord) {
        let topic = format!("/images/{what}");
        let attributes = BTreeMap::from([
            ("name".to_string(), r.name.clone()),
            ("digest".to_string(), r.target.digest.clone()),
        ]);
        self.events.enqueue(ns, &topic, attributes, None);
    }

    /// `create` for a new record, `update` for one that named something
    /// before.
    async fn image_saved(&self, ns: &str, r: &ImageRecord) {
        let what = if r.created == r.updated {
            "create"
        } else {
            "update"
        };
        self.image_event(ns, what, r);
    }

    fn image_pb(&self, r: &ImageRecord) -> images_pb::Image {
        images_pb::Image {
            name: r.name.clone(),
            target: Some(descriptor_pb(&r.target)),
            labels: r.labels.clone().into_iter().collect(),
            created_at: timestamp(r.created),
            updated_at: timestamp(r.updated),
            size: self.images.size(r) as i64,
        }
    }
}

fn progress_pb(p: &crate::images::Progress) -> images_pb::Progress {
    use images_pb::ProgressState as S;
    let state = match p.state {
        State::Waiting => S::Waiting,
        State::Resolving => S::Resolving,
        State::Downloading => S::Downloading,
        State::Uploading => S::Uploading,
        State::Unpacking => S::Unpacking,

        State::Exists => S::Exists,
        State::Done => S::Done,
    };
    images_pb::Progress {
        digest: p.digest.clone(),
        kind: p.kind.to_string(),
        state: state as i32,
        offset: p.offset as i64,
        total: p.total as i64,
    }
}

/// Runs a transfer, streaming its progress every 100 ms (when it changed)
/// and its result last. A client that goes away cancels the transfer.
fn stream_transfer<T, R, F, M>(work: F, tracker: Arc<Tracker>, make: M) -> BoxStream<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: std::future::Future<Output = Result<T, ImageError>> + Send + 'static,
    M: Fn(Vec<images_pb::Progress>, Option<T>) -> R + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut work = std::pin::pin!(work);
        let mut last = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    let now: Vec<_> = tracker.snapshot().iter().map(progress_pb).collect();
                    if now != last {
                        if tx.send(Ok(make(now.clone(), None))).await.is_err() {
                            return;
                        }
                        last = now;
                    }
                }
                _ = tx.closed() => return,
            }
        };
        let msg = match result {
            Ok(v) => Ok(make(
                tracker.snapshot().iter().map(progress_pb).collect(),
                Some(v),
            )),
            Err(e) => Err(status(e)),
        };
        let _ = tx.send(msg).await;
        crate::sys::trim_memory();
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl images_pb::images_server::Images for Service {
    type PullStream = BoxStream<images_pb::PullResponse>;

    async fn pull(
        &self,
        req: Request<images_pb::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(invalid("pull: reference required"));
        }
        let opts = PullOptions {
            reference: r.reference,
            platform: parse_platform(&r.platform).map_err(status)?,
            credentials: credentials(r.auth),
            unpack: !r.no_unpack,
        };
        let tracker = Arc::new(Tracker::new());
        let images = Arc::clone(&self.images);
        let svc = self.clone();
        let t2 = Arc::clone(&tracker);
        let work = async move {
            let record = images.pull(&ns, opts, t2).await?;
            svc.image_saved(&ns, &record).await;
            Ok(svc.image_pb(&record))
        };
        Ok(Response::new(stream_transfer(
            work,
            tracker,
            |progress, image| images_pb::PullResponse { progress, image },
        )))
    }

    type PushStream = BoxStream<images_pb::PushResponse>;

    async fn push(
        &self,
        req: Request<images_pb::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let opts = PushOptions {
            name: r.name,
            reference: (!r.reference.is_empty()).then_some(r.reference),
            credentials: credentials(r.auth),
            platform: parse_platform(&r.platform).map_err(status)?,
        };
        let tracker = Arc::new(Tracker::new());
        let images = Arc::clone(&self.images);
        let t2 = Arc::clone(&tracker);
        let work = async move { images.push(&ns, opts, t2).await };
        Ok(Response::new(stream_transfer(
            work,
            tracker,
            |progress, digest| images_pb::PushResponse {
                progress,
                digest: digest.unwrap_or_default(),
            },
        )))
    }

    async fn get(
        &self,
        req: Request<images_pb::GetImageRequest>,
    ) -> Result<Response<images_pb::Image>, Status> {
        let ns = namespace(&req)?;
        let record = self
            .images
            .get(&ns, &req.into_inner().name)
            .map_err(status)?;
        Ok(Response::new(self.image_pb(&record)))
    }

    async fn list(
        &self,
        req: Request<images_pb::ListImagesRequest>,
    ) -> Result<Response<images_pb::ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let list = self.images.list(&ns).map_err(status)?;
        Ok(Response::new(images_pb::ListImagesResponse {
            images: list.iter().map(|r| self.image_pb(r)).collect(),
        }))
    }

    async fn tag(
        &self,
        req: Request<images_pb::TagImageRequest>,
    ) -> Result<Response<images_pb::Image>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let record = {
            let _gc = Arc::clone(&self.images.gc_lock).read_owned().await;
            self.images.tag(&ns, &r.source, &r.target).map_err(status)?
        };
        self.image_saved(&ns, &record).await;
        Ok(Response::new(self.image_pb(&record)))
    }

    async fn create(
        &self,
        req: Request<images_pb::CreateImageRequest>,
    ) -> Result<Response<images_pb::Image>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let target = r
            .target
            .ok_or_else(|| invalid("create: a target descriptor is required"))?;
        let target = crate::oci::Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: target.size,
            urls: Vec::new(),
            annotations: target.annotations.into_iter().collect(),
            platform: None,
        };
        let record = {
            let _gc = Arc::clone(&self.images.gc_lock).read_owned().await;
            let images = Arc::clone(&self.images);
            let ns = ns.clone();
            blocking(move || images.create(&ns, &r.name, target)).await?
        };
        self.image_saved(&ns, &record).await;
        Ok(Response::new(self.image_pb(&record)))
    }

    async fn delete(
        &self,
        req: Request<images_pb::DeleteImageRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let record = self
            .images
            .delete(&ns, &req.into_inner().name)
            .map_err(status)?;
        self.image_event(&ns, "delete", &record);
        gc::collect_now(&self.images).await?;
        Ok(Response::new(()))
    }

    async fn import(
        &self,
        req: Request<Streaming<images_pb::ImportRequest>>,
    ) -> Result<Response<images_pb::ImportResponse>, Status> {
        let ns = namespace(&req)?;
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| invalid("import: empty stream"))?;
        let o = first.options.unwrap_or_default();
        let opts = ImportOptions {
            name: (!o.name.is_empty()).then_some(o.name),
            platform: parse_platform(&o.platform).map_err(status)?,
            unpack: !o.no_unpack,
        };
        let (tx, rx) = mpsc::channel::<Result<Vec<u8>, String>>(8);
        if !first.data.is_empty() {
            let _ = tx.send(Ok(first.data)).await;
        }
        tokio::spawn(async move {
            loop {
                match input.message().await {
                    Ok(Some(m)) => {
                        if tx.send(Ok(m.data)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e.message().to_string())).await;
                        break;
                    }
                }
            }
        });
        let _gc = Arc::clone(&self.images.gc_lock).read_owned().await;
        let images = Arc::clone(&self.images);
        let ns2 = ns.clone();
        let records = blocking(move || {
            let reader = ChannelReader {
                rx,
                current: Vec::new(),
                pos: 0,
            };
            images.import(&ns, reader, opts)
        })
        .await?;
        crate::sys::trim_memory();
        for r in &records {
            self.image_saved(&ns2, r).await;
        }
        Ok(Response::new(images_pb::ImportResponse {
            images: records.iter().map(|r| self.image_pb(r)).collect(),
        }))
    }

    type ExportStream = BoxStream<images_pb::ExportResponse>;

    async fn export(
        &self,
        req: Request<images_pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.names.is_empty() {
            return Err(invalid("export: no image named"));
        }
        let format = match images_pb::ArchiveFormat::try_from(r.format) {
            Ok(images_pb::ArchiveFormat::Oci) => ArchiveFormat::Oci,
            Ok(images_pb::ArchiveFormat::Docker) => ArchiveFormat::Docker,
            Err(_) => return Err(invalid("export: unknown format")),
        };
        let platform = parse_platform(&r.platform).map_err(status)?;
        // Fail before streaming when a name is unknown.
        for name in &r.names {
            self.images.get(&ns, name).map_err(status)?;
        }
        let (tx, rx) = mpsc::channel(4);
        let images = Arc::clone(&self.images);
        let gc = Arc::clone(&self.images.gc_lock).read_owned().await;
        tokio::task::spawn_blocking(move || {
            let _gc = gc;
            let mut sink = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            let unnamed: std::collections::HashSet<String> = r.unnamed.iter().cloned().collect();
            let result = images
                .export_unnamed(&ns, &r.names, &unnamed, format, platform, &mut sink)
                .and_then(|()| {
                    sink.flush_now()
                        .map_err(|e| ImageError::Archive(format!("export: {e}")))
                });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(status(e)));
            }
            crate::sys::trim_memory();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    async fn check_auth(
        &self,
        req: Request<images_pb::CheckAuthRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        if r.registry.is_empty() {
            return Err(invalid("check auth: registry required"));
        }
        self.images
            .registry
            .check_auth(&r.registry, credentials(r.auth).as_ref())
            .await
            .map_err(|e| status(ImageError::from(e)))?;
        Ok(Response::new(()))
    }
}

/// Reads the bytes a client streams, from a blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(data)) => {
                    self.current = data;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(io::Error::other(format!("client stream: {e}"))),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Streams what is written, in 1 MiB messages, from a blocking thread.
struct ChannelWriter {
    tx: mpsc::Sender<Result<images_pb::ExportResponse, Status>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn flush_now(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(Ok(images_pb::ExportResponse { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush_now()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
