//! The gRPC services: each decodes a request, calls the domain, encodes the
//! answer. Errors become status codes here, in `status`, and nowhere else.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::content::v1 as content_pb;
use berth_proto::events::v1 as events_pb;
use berth_proto::images::v1 as images_pb;
use berth_proto::leases::v1 as leases_pb;
use berth_proto::namespaces::v1 as namespaces_pb;
use berth_proto::snapshots::v1 as snapshots_pb;
use berth_proto::types::v1 as types_pb;
use berth_proto::version::v1 as version_pb;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::containers::ContainerError;
use crate::content::{ContentError, Digest};
use crate::events::{topic_matches, Event, EventError, Exchange};
use crate::images::pull::PullOptions;
use crate::images::push::PushOptions;
use crate::images::transfer::{ArchiveFormat, ImportOptions};
use crate::images::{parse_platform, unique_id, ImageError, Images, State, Tracker};
use crate::metadata::{
    now, validate_namespace, ContentRecord, ImageRecord, LeaseRecord, MetadataError,
    NamespaceRecord, Reader, SnapshotKind, Table,
};
use crate::oci::Descriptor;
use crate::registry::{Credentials, RegistryError};
use crate::snapshots::{Mount, SnapshotError};
use crate::{diff, gc};

mod containers;
mod tasks;

pub use tasks::task_status;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The one place domain errors become gRPC status codes.
pub fn status(e: ImageError) -> Status {
    use tonic::Code;
    let code = match &e {
        ImageError::NotFound(_) => Code::NotFound,
        ImageError::Reference(_) | ImageError::InvalidPlatform(_) => Code::InvalidArgument,
        ImageError::NoMatchingPlatform { .. } => Code::NotFound,
        ImageError::Content(c) => match c {
            ContentError::NotFound(_) => Code::NotFound,
            ContentError::AlreadyExists(_) => Code::AlreadyExists,
            ContentError::InvalidDigest(_) => Code::InvalidArgument,
            ContentError::Locked(_) => Code::FailedPrecondition,
            ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => {
                Code::DataLoss
            }
            ContentError::Io { .. } => Code::Internal,
        },
        ImageError::Metadata(m) => match m {
            MetadataError::InvalidNamespace(_) => Code::InvalidArgument,
            _ => Code::Internal,
        },
        ImageError::Snapshot(s) => match s {
            SnapshotError::NotFound(_) => Code::NotFound,
            SnapshotError::AlreadyExists(_) => Code::AlreadyExists,
            SnapshotError::InvalidKey(_) => Code::InvalidArgument,
            SnapshotError::ParentNotCommitted(_)
            | SnapshotError::NotActive(_)
            | SnapshotError::HasChildren { .. } => Code::FailedPrecondition,
            SnapshotError::Metadata(MetadataError::InvalidNamespace(_)) => Code::InvalidArgument,
            SnapshotError::Metadata(_) | SnapshotError::Io { .. } => Code::Internal,
        },
        ImageError::Registry(r) => registry_code(r),
        ImageError::DiffIdMismatch { .. } => Code::DataLoss,
        ImageError::Unpack { .. }
        | ImageError::BadDocument { .. }
        | ImageError::TooLarge { .. }
        | ImageError::UnsupportedLayer { .. }
        | ImageError::Archive(_) => Code::FailedPrecondition,
        ImageError::Io { .. } | ImageError::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// Container errors as status codes (what is not about containers goes
/// through `status`).
pub fn container_status(e: ContainerError) -> Status {
    let msg = e.to_string();
    match e {
        ContainerError::InvalidId(_)
        | ContainerError::InvalidOverride { .. }
        | ContainerError::InvalidUser(_)
        | ContainerError::UserNotFound { .. }
        | ContainerError::InvalidSpec(_) => Status::invalid_argument(msg),
        ContainerError::AlreadyExists(_) => Status::already_exists(msg),
        ContainerError::NotFound(_) => Status::not_found(msg),
        ContainerError::NoLayers { .. } => Status::failed_precondition(msg),
        ContainerError::Image(e) => status(e),
    }
}

fn registry_code(e: &RegistryError) -> tonic::Code {
    use tonic::Code;
    match e {
        RegistryError::Reference(_) | RegistryError::InvalidDigest(_) => Code::InvalidArgument,
        RegistryError::NotFound { .. } => Code::NotFound,
        RegistryError::Unauthorized { .. } => Code::Unauthenticated,
        RegistryError::InsecureRefused { .. } => Code::PermissionDenied,
        RegistryError::DigestMismatch { .. } => Code::DataLoss,
        RegistryError::TooLarge { .. } | RegistryError::InvalidResponse { .. } => {
            Code::FailedPrecondition
        }
        RegistryError::Status { .. }
        | RegistryError::Transport { .. }
        | RegistryError::Stalled { .. } => Code::Unavailable,
        RegistryError::ReadConfig { .. }
        | RegistryError::InvalidConfig { .. }
        | RegistryError::BlobFileSize { .. }
        | RegistryError::ReadBlobFile { .. }
        | RegistryError::BuildClient(_) => Code::Internal,
    }
}

/// `?` on a domain result in a service: its error as a status.
trait OrStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T, E: Into<ImageError>> OrStatus<T> for Result<T, E> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(|e| status(e.into()))
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// The namespace a call is scoped to (gRPC metadata `berth-namespace`).
fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let ns = req
        .metadata()
        .get(berth_proto::NAMESPACE_KEY)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "namespace required: set the {} metadata",
                berth_proto::NAMESPACE_KEY
            ))
        })?
        .to_str()
        .map_err(|_| invalid("namespace is not ASCII"))?
        .to_string();
    validate_namespace(&ns).or_status()?;
    Ok(ns)
}

/// The lease a call adds what it creates to, if it names one that exists.
fn lease<T>(req: &Request<T>, images: &Images, ns: &str) -> Result<Option<String>, Status> {
    let Some(v) = req.metadata().get(berth_proto::LEASE_KEY) else {
        return Ok(None);
    };
    let id = v.to_str().map_err(|_| invalid("lease id is not ASCII"))?;
    let rx = images.meta.read().or_status()?;
    if !rx.exists(Table::Leases, ns, id).or_status()? {
        return Err(Status::not_found(format!("lease {id:?} not found")));
    }
    Ok(Some(id.to_string()))
}

fn timestamp(nanos: u64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

fn descriptor_pb(d: &Descriptor) -> types_pb::Descriptor {
    types_pb::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

fn labels(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn credentials(auth: Option<images_pb::RegistryAuth>) -> Option<Credentials> {
    let auth = auth?;
    if !auth.identity_token.is_empty() {
        return Some(Credentials::IdentityToken(auth.identity_token));
    }
    if auth.username.is_empty() && auth.password.is_empty() {
        return None;
    }
    Some(Credentials::Basic {
        username: auth.username,
        password: auth.password,
    })
}

/// Runs blocking domain work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)
}

/// Collects garbage now, with every writer held off.
pub async fn collect_garbage(images: &Arc<Images>) -> Result<gc::Stats, Status> {
    let _gc = Arc::clone(&images.gc_lock).write_owned().await;
    let images = Arc::clone(images);
    let stats = blocking(move || gc::collect(&images)).await;
    crate::sys::trim_memory();
    stats
}

#[derive(Clone)]
pub struct Service {
    pub images: Arc<Images>,
    pub events: Arc<Exchange>,
    pub tasks: Arc<crate::tasks::Tasks>,
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

// ---- Version ----

#[tonic::async_trait]
impl version_pb::version_server::Version for Service {
    async fn version(
        &self,
        _: Request<()>,
    ) -> Result<Response<version_pb::VersionResponse>, Status> {
        Ok(Response::new(version_pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("BERTH_REVISION").unwrap_or("").to_string(),
        }))
    }
}

// ---- Namespaces ----

fn namespace_pb(name: String, r: NamespaceRecord) -> namespaces_pb::Namespace {
    namespaces_pb::Namespace {
        name,
        labels: r.labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl namespaces_pb::namespaces_server::Namespaces for Service {
    async fn get(
        &self,
        req: Request<namespaces_pb::GetNamespaceRequest>,
    ) -> Result<Response<namespaces_pb::Namespace>, Status> {
        let name = req.into_inner().name;
        let rx = self.images.meta.read().or_status()?;
        let r: NamespaceRecord = rx
            .get(Table::Namespaces, "", &name)
            .or_status()?
            .ok_or_else(|| Status::not_found(format!("namespace {name:?} not found")))?;
        Ok(Response::new(namespace_pb(name, r)))
    }

    async fn list(
        &self,
        _: Request<namespaces_pb::ListNamespacesRequest>,
    ) -> Result<Response<namespaces_pb::ListNamespacesResponse>, Status> {
        let rx = self.images.meta.read().or_status()?;
        let list = rx
            .list::<NamespaceRecord>(Table::Namespaces, "")
            .or_status()?;
        Ok(Response::new(namespaces_pb::ListNamespacesResponse {
            namespaces: list.into_iter().map(|(n, r)| namespace_pb(n, r)).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<namespaces_pb::CreateNamespaceRequest>,
    ) -> Result<Response<namespaces_pb::Namespace>, Status> {
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| invalid("namespace missing"))?;
        validate_namespace(&ns.name).or_status()?;
        let tx = self.images.meta.write().or_status()?;
        if tx.exists(Table::Namespaces, "", &ns.name).or_status()? {
            return Err(Status::already_exists(format!(
                "namespace {:?} already exists",
                ns.name
            )));
        }
        let record = NamespaceRecord {
            labels: labels(ns.labels),
        };
        tx.put(Table::Namespaces, "", &ns.name, &record)
            .or_status()?;
        tx.commit().or_status()?;
        Ok(Response::new(namespace_pb(ns.name, record)))
    }

    async fn update(
        &self,
        req: Request<namespaces_pb::UpdateNamespaceRequest>,
    ) -> Result<Response<namespaces_pb::Namespace>, Status> {
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| invalid("namespace missing"))?;
        let tx = self.images.meta.write().or_status()?;
        if !tx.exists(Table::Namespaces, "", &ns.name).or_status()? {
            return Err(Status::not_found(format!(
                "namespace {:?} not found",
                ns.name
            )));
        }
        let record = NamespaceRecord {
            labels: labels(ns.labels),
        };
        tx.put(Table::Namespaces, "", &ns.name, &record)
            .or_status()?;
        tx.commit().or_status()?;
        Ok(Response::new(namespace_pb(ns.name, record)))
    }

    async fn delete(
        &self,
        req: Request<namespaces_pb::DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let tx = self.images.meta.write().or_status()?;
        if !tx.exists(Table::Namespaces, "", &name).or_status()? {
            return Err(Status::not_found(format!("namespace {name:?} not found")));
        }
        if tx.namespace_in_use(&name).or_status()? {
            return Err(Status::failed_precondition(format!(
                "namespace {name:?} is not empty: it holds images, content, snapshots or leases"
            )));
        }
        tx.delete(Table::Namespaces, "", &name).or_status()?;
        tx.commit().or_status()?;
        Ok(Response::new(()))
    }
}

// ---- Content ----

fn content_info_pb(digest: String, r: &ContentRecord, size: u64) -> content_pb::ContentInfo {
    content_pb::ContentInfo {
        digest,
        size: size as i64,
        created_at: timestamp(r.created),
        labels: r.labels.clone().into_iter().collect(),
    }
}

/// Checks that namespace `ns` holds blob `digest`.
fn held(images: &Images, ns: &str, digest: &str) -> Result<(Digest, ContentRecord), Status> {
    let d: Digest = digest.parse().map_err(|e: ContentError| status(e.into()))?;
    let rx = images.meta.read().or_status()?;
    let r: ContentRecord = rx
        .get(Table::Content, ns, digest)
        .or_status()?
        .ok_or_else(|| Status::not_found(format!("content {digest} not found")))?;
    Ok((d, r))
}

#[tonic::async_trait]
impl content_pb::content_server::Content for Service {
    async fn info(
        &self,
        req: Request<content_pb::InfoRequest>,
    ) -> Result<Response<content_pb::ContentInfo>, Status> {
        let ns = namespace(&req)?;
        let digest = req.into_inner().digest;
        let (d, r) = held(&self.images, &ns, &digest)?;
        let info = self.images.content.info(&d).or_status()?;
        Ok(Response::new(content_info_pb(digest, &r, info.size)))
    }

    async fn list(
        &self,
        req: Request<content_pb::ListContentRequest>,
    ) -> Result<Response<content_pb::ListContentResponse>, Status> {
        let ns = namespace(&req)?;
        let rx = self.images.meta.read().or_status()?;
        let mut out = Vec::new();
        for (digest, r) in rx.list::<ContentRecord>(Table::Content, &ns).or_status()? {
            let Ok(d) = digest.parse::<Digest>() else {
                continue;
            };
            if let Ok(info) = self.images.content.info(&d) {
                out.push(content_info_pb(digest, &r, info.size));
            }
        }
        Ok(Response::new(content_pb::ListContentResponse { info: out }))
    }

    async fn delete(
        &self,
        req: Request<content_pb::DeleteContentRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let digest = req.into_inner().digest;
        held(&self.images, &ns, &digest)?;
        {
            let _gc = Arc::clone(&self.images.gc_lock).write_owned().await;
            let tx = self.images.meta.write().or_status()?;
            tx.delete(Table::Content, &ns, &digest).or_status()?;
            tx.commit().or_status()?;
        }
        // Whatever still needs the blob (an image, a lease) marks it again.
        collect_garbage(&self.images).await?;
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<content_pb::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<content_pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let (d, _) = held(&self.images, &ns, &r.digest)?;
        if r.offset < 0 || r.size < 0 {
            return Err(invalid("offset and size must not be negative"));
        }
        let file = self
            .images
            .content
            .open_blob(&d, r.offset as u64)
            .or_status()?;
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
                        let msg = content_pb::ReadContentResponse { offset, data: buf };
                        offset += n as i64;
                        if tx.blocking_send(Ok(msg)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!("read blob: {e}"))));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_statuses(
        &self,
        req: Request<content_pb::ListStatusesRequest>,
    ) -> Result<Response<content_pb::ListStatusesResponse>, Status> {
        let ns = namespace(&req)?;
        let prefix = ingest_ref(&ns, "");
        let statuses = self.images.content.statuses().or_status()?;
        Ok(Response::new(content_pb::ListStatusesResponse {
            statuses: statuses
                .into_iter()
                .filter_map(|s| {
                    let r = s.reference.strip_prefix(&prefix)?.to_string();
                    Some(content_pb::Status {
                        r#ref: r,
                        offset: s.offset as i64,
                        updated_at: None,
                    })
                })
                .collect(),
        }))
    }

    async fn abort(&self, req: Request<content_pb::AbortRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = ingest_ref(&ns, &req.into_inner().r#ref);
        let content = Arc::clone(&self.images.content);
        when_unlocked(move || content.abort(&r)).await.or_status()?;
        Ok(Response::new(()))
    }

    type WriteStream = BoxStream<content_pb::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<content_pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req, &self.images, &ns)?;
        let mut input = req.into_inner();
        let images = Arc::clone(&self.images);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _gc = Arc::clone(&images.gc_lock).read_owned().await;
            let result = content_write(&images, &ns, lease.as_deref(), &mut input, &tx).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Runs `f` (off the async threads) until the ref it needs is free, for up
/// to 5 s: a client that dropped a write stream and comes straight back (to
/// resume or abort) finds its old writer still closing.
async fn when_unlocked<T: Send + 'static>(
    f: impl Fn() -> Result<T, ContentError> + Send + Sync + 'static,
) -> Result<T, ContentError> {
    let f = Arc::new(f);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let g = Arc::clone(&f);
        let result = tokio::task::spawn_blocking(move || g())
            .await
            .unwrap_or_else(|e| {
                Err(ContentError::Io {
                    action: "run the content task",
                    path: std::path::PathBuf::new(),
                    source: io::Error::other(e.to_string()),
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

/// A client's ingest ref, private to its namespace (a namespace name holds
/// no '/').
fn ingest_ref(ns: &str, reference: &str) -> String {
    format!("{ns}/{reference}")
}

async fn content_write(
    images: &Arc<Images>,
    ns: &str,
    lease: Option<&str>,
    input: &mut Streaming<content_pb::WriteContentRequest>,
    out: &mpsc::Sender<Result<content_pb::WriteContentResponse, Status>>,
) -> Result<(), Status> {
    use content_pb::WriteAction;
    let Some(first) = input.message().await? else {
        return Ok(());
    };
    if first.r#ref.is_empty() {
        return Err(invalid("write: ref required"));
    }
    let reference = first.r#ref.clone();
    let content = Arc::clone(&images.content);
    let r2 = ingest_ref(ns, &reference);
    let mut writer = when_unlocked(move || content.writer(&r2))
        .await
        .or_status()?;
    let mut total = 0i64;
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        if msg.r#ref != reference && !msg.r#ref.is_empty() {
            return Err(invalid(format!(
                "write: ref {:?} in a stream for {reference:?}",
                msg.r#ref
            )));
        }
        if msg.total > 0 {
            total = msg.total;
        }
        let action =
            WriteAction::try_from(msg.action).map_err(|_| invalid("write: unknown action"))?;
        match action {
            WriteAction::Stat => {}
            WriteAction::Write => {
                if msg.offset as u64 != writer.offset() {
                    if msg.offset == 0 {
                        writer.truncate().or_status()?;
                    } else {
                        return Err(invalid(format!(
                            "write: offset {} but {reference:?} holds {} bytes",
                            msg.offset,
                            writer.offset()
                        )));
                    }
                }
                writer.write(&msg.data).or_status()?;
            }
            WriteAction::Commit => {
                if !msg.data.is_empty() {
                    writer.write(&msg.data).or_status()?;
                }
                let expected: Digest = msg
                    .expected
                    .parse()
                    .map_err(|e: ContentError| status(e.into()))?;
                let size = (total > 0).then_some(total as u64);
                let offset = writer.offset();
                match writer.commit(size, &expected) {
                    Ok(_) | Err(ContentError::AlreadyExists(_)) => {}
                    Err(e) => return Err(status(e.into())),
                }
                images
                    .hold_content(ns, lease, &expected.to_string())
                    .map_err(status)?;
                let _ = out
                    .send(Ok(content_pb::WriteContentResponse {
                        action: action as i32,
                        offset: offset as i64,
                        total,
                        digest: expected.to_string(),
                    }))
                    .await;
                return Ok(());
            }
        }
        let reply = content_pb::WriteContentResponse {
            action: action as i32,
            offset: writer.offset() as i64,
            total,
            digest: String::new(),
        };
        if out.send(Ok(reply)).await.is_err() {
            return Ok(());
        }
        next = input.message().await?;
    }
    Ok(())
}

// ---- Images ----

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
        collect_garbage(&self.images).await?;
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
            let result = images
                .export(&ns, &r.names, format, platform, &mut sink)
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

// ---- Snapshots ----

fn mounts_pb(mounts: Vec<Mount>) -> snapshots_pb::MountsResponse {
    snapshots_pb::MountsResponse {
        mounts: mounts
            .into_iter()
            .map(|m| types_pb::Mount {
                r#type: m.kind,
                source: m.source,
                target: String::new(),
                options: m.options,
            })
            .collect(),
    }
}

fn snapshot_info_pb(
    name: String,
    r: &crate::metadata::SnapshotRecord,
) -> snapshots_pb::SnapshotInfo {
    let kind = match r.kind {
        SnapshotKind::View => snapshots_pb::Kind::View,
        SnapshotKind::Active => snapshots_pb::Kind::Active,
        SnapshotKind::Committed => snapshots_pb::Kind::Committed,
    };
    snapshots_pb::SnapshotInfo {
        name,
        parent: r.parent.clone().unwrap_or_default(),
        kind: kind as i32,
        labels: r.labels.clone().into_iter().collect(),
        created_at: timestamp(r.created),
        updated_at: timestamp(r.updated),
    }
}

impl Service {
    async fn prepare_snapshot(
        &self,
        ns: String,
        lease: Option<String>,
        key: String,
        parent: String,
        kind: SnapshotKind,
        labels: BTreeMap<String, String>,
    ) -> Result<snapshots_pb::MountsResponse, Status> {
        let _gc = Arc::clone(&self.images.gc_lock).read_owned().await;
        let images = Arc::clone(&self.images);
        let mounts = blocking(move || {
            let parent = (!parent.is_empty()).then_some(parent.as_str());
            let mounts = images
                .snapshots
                .prepare(&images.meta, &ns, &key, parent, kind, labels)?;
            if let Some(lease) = lease {
                let tx = images.meta.write()?;
                tx.lease_add(&ns, &lease, ("snapshots".to_string(), key.clone()))?;
                tx.commit()?;
            }
            Ok(mounts)
        })
        .await?;
        Ok(mounts_pb(mounts))
    }
}

#[tonic::async_trait]
impl snapshots_pb::snapshots_server::Snapshots for Service {
    async fn prepare(
        &self,
        req: Request<snapshots_pb::PrepareSnapshotRequest>,
    ) -> Result<Response<snapshots_pb::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req, &self.images, &ns)?;
        let r = req.into_inner();
        let m = self
            .prepare_snapshot(
                ns,
                lease,
                r.key,
                r.parent,
                SnapshotKind::Active,
                labels(r.labels),
            )
            .await?;
        Ok(Response::new(m))
    }

    async fn view(
        &self,
        req: Request<snapshots_pb::ViewSnapshotRequest>,
    ) -> Result<Response<snapshots_pb::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req, &self.images, &ns)?;
        let r = req.into_inner();
        let m = self
            .prepare_snapshot(
                ns,
                lease,
                r.key,
                r.parent,
                SnapshotKind::View,
                labels(r.labels),
            )
            .await?;
        Ok(Response::new(m))
    }

    async fn mounts(
        &self,
        req: Request<snapshots_pb::MountsRequest>,
    ) -> Result<Response<snapshots_pb::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let key = req.into_inner().key;
        let rx = self.images.meta.read().or_status()?;
        let mounts = self.images.snapshots.mounts(&rx, &ns, &key).or_status()?;
        Ok(Response::new(mounts_pb(mounts)))
    }

    async fn commit(
        &self,
        req: Request<snapshots_pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let images = Arc::clone(&self.images);
        blocking(move || {
            images
                .snapshots
                .commit(&images.meta, &ns, &r.name, &r.key, labels(r.labels))
                .map_err(Into::into)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<snapshots_pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let key = req.into_inner().key;
        let images = Arc::clone(&self.images);
        blocking(move || {
            images
                .snapshots
                .remove(&images.meta, &ns, &key)
                .map_err(Into::into)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<snapshots_pb::StatSnapshotRequest>,
    ) -> Result<Response<snapshots_pb::SnapshotInfo>, Status> {
        let ns = namespace(&req)?;
        let key = req.into_inner().key;
        let rx = self.images.meta.read().or_status()?;
        let r = self.images.snapshots.get(&rx, &ns, &key).or_status()?;
        Ok(Response::new(snapshot_info_pb(key, &r)))
    }

    async fn list(
        &self,
        req: Request<snapshots_pb::ListSnapshotsRequest>,
    ) -> Result<Response<snapshots_pb::ListSnapshotsResponse>, Status> {
        let ns = namespace(&req)?;
        let rx = self.images.meta.read().or_status()?;
        let list = self.images.snapshots.list(&rx, &ns).or_status()?;
        Ok(Response::new(snapshots_pb::ListSnapshotsResponse {
            info: list
                .into_iter()
                .map(|i| snapshot_info_pb(i.name, &i.record))
                .collect(),
        }))
    }

    async fn usage(
        &self,
        req: Request<snapshots_pb::UsageRequest>,
    ) -> Result<Response<snapshots_pb::UsageResponse>, Status> {
        let ns = namespace(&req)?;
        let key = req.into_inner().key;
        let images = Arc::clone(&self.images);
        let (size, inodes) = blocking(move || {
            let rx = images.meta.read()?;
            images.snapshots.usage(&rx, &ns, &key).map_err(Into::into)
        })
        .await?;
        Ok(Response::new(snapshots_pb::UsageResponse {
            size: size as i64,
            inodes: inodes as i64,
        }))
    }

    async fn diff(
        &self,
        req: Request<snapshots_pb::DiffRequest>,
    ) -> Result<Response<snapshots_pb::DiffResponse>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req, &self.images, &ns)?;
        let r = req.into_inner();
        let _gc = Arc::clone(&self.images.gc_lock).read_owned().await;
        let images = Arc::clone(&self.images);
        let (desc, diff_id) =
            blocking(move || diff::diff(&images, &ns, &r.key, &r.media_type, lease.as_deref()))
                .await?;
        Ok(Response::new(snapshots_pb::DiffResponse {
            diff: Some(descriptor_pb(&desc)),
            diff_id,
        }))
    }
}

// ---- Leases ----

fn lease_pb(id: String, r: &LeaseRecord) -> leases_pb::Lease {
    leases_pb::Lease {
        id,
        created_at: timestamp(r.created),
        labels: r.labels.clone().into_iter().collect(),
        expires_at: r.expires.and_then(timestamp),
    }
}

fn resource_key(r: Option<leases_pb::Resource>) -> Result<(String, String), Status> {
    let r = r.ok_or_else(|| invalid("resource missing"))?;
    match r.r#type.as_str() {
        "content" => {
            r.id.parse::<Digest>()
                .map_err(|e: ContentError| status(e.into()))?;
        }
        "snapshots" => {}
        other => {
            return Err(invalid(format!(
                "unknown resource type {other:?}: want \"content\" or \"snapshots\""
            )))
        }
    }
    Ok((r.r#type, r.id))
}

#[tonic::async_trait]
impl leases_pb::leases_server::Leases for Service {
    async fn create(
        &self,
        req: Request<leases_pb::CreateLeaseRequest>,
    ) -> Result<Response<leases_pb::Lease>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.expire_seconds < 0 {
            return Err(invalid("expire_seconds must not be negative"));
        }
        let id = if r.id.is_empty() {
            unique_id("lease")
        } else {
            r.id
        };
        if id.contains('\0') || id.len() > 256 {
            return Err(invalid("lease id: want 1-256 bytes without NUL"));
        }
        let t = now();
        let record = LeaseRecord {
            labels: labels(r.labels),
            created: t,
            expires: (r.expire_seconds > 0).then(|| t + r.expire_seconds as u64 * 1_000_000_000),
            resources: Default::default(),
        };
        let tx = self.images.meta.write().or_status()?;
        tx.ensure_namespace(&ns).or_status()?;
        if tx.exists(Table::Leases, &ns, &id).or_status()? {
            return Err(Status::already_exists(format!(
                "lease {id:?} already exists"
            )));
        }
        tx.put(Table::Leases, &ns, &id, &record).or_status()?;
        tx.commit().or_status()?;
        Ok(Response::new(lease_pb(id, &record)))
    }

    async fn delete(
        &self,
        req: Request<leases_pb::DeleteLeaseRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        {
            let tx = self.images.meta.write().or_status()?;
            if !tx.delete(Table::Leases, &ns, &id).or_status()? {
                return Err(Status::not_found(format!("lease {id:?} not found")));
            }
            tx.commit().or_status()?;
        }
        collect_garbage(&self.images).await?;
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<leases_pb::ListLeasesRequest>,
    ) -> Result<Response<leases_pb::ListLeasesResponse>, Status> {
        let ns = namespace(&req)?;
        let rx = self.images.meta.read().or_status()?;
        let list = rx.list::<LeaseRecord>(Table::Leases, &ns).or_status()?;
        Ok(Response::new(leases_pb::ListLeasesResponse {
            leases: list.into_iter().map(|(id, r)| lease_pb(id, &r)).collect(),
        }))
    }

    async fn add_resource(
        &self,
        req: Request<leases_pb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let resource = resource_key(r.resource)?;
        let tx = self.images.meta.write().or_status()?;
        if !tx.lease_add(&ns, &r.id, resource).or_status()? {
            return Err(Status::not_found(format!("lease {:?} not found", r.id)));
        }
        tx.commit().or_status()?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<leases_pb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let resource = resource_key(r.resource)?;
        {
            let tx = self.images.meta.write().or_status()?;
            let mut lease: LeaseRecord = tx
                .get(Table::Leases, &ns, &r.id)
                .or_status()?
                .ok_or_else(|| Status::not_found(format!("lease {:?} not found", r.id)))?;
            lease.resources.remove(&resource);
            tx.put(Table::Leases, &ns, &r.id, &lease).or_status()?;
            tx.commit().or_status()?;
        }
        collect_garbage(&self.images).await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<leases_pb::ListResourcesRequest>,
    ) -> Result<Response<leases_pb::ListResourcesResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        let rx = self.images.meta.read().or_status()?;
        let lease: LeaseRecord = rx
            .get(Table::Leases, &ns, &id)
            .or_status()?
            .ok_or_else(|| Status::not_found(format!("lease {id:?} not found")))?;
        Ok(Response::new(leases_pb::ListResourcesResponse {
            resources: lease
                .resources
                .into_iter()
                .map(|(kind, id)| leases_pb::Resource { id, r#type: kind })
                .collect(),
        }))
    }
}

// ---- Events ----

fn event_status(e: EventError) -> Status {
    match e {
        EventError::InvalidTopic(_) | EventError::TooManyAttributes(_) => invalid(e.to_string()),
        EventError::Metadata(m) => status(m.into()),
    }
}

fn envelope(e: &Event) -> events_pb::Envelope {
    events_pb::Envelope {
        sequence: e.sequence,
        timestamp: timestamp(e.time),
        namespace: e.namespace.clone(),
        topic: e.topic.clone(),
        attributes: e.attributes.clone().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl events_pb::events_server::Events for Service {
    async fn publish(
        &self,
        req: Request<events_pb::PublishRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let events = Arc::clone(&self.events);
        tokio::task::spawn_blocking(move || events.publish(&ns, &r.topic, labels(r.attributes)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(event_status)?;
        Ok(Response::new(()))
    }

    type SubscribeStream = BoxStream<events_pb::Envelope>;

    async fn subscribe(
        &self,
        req: Request<events_pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        // Live first, so nothing falls between the backlog and the stream.
        let mut live = self.events.subscribe();
        let backlog = if let Some(after) = r.after_sequence {
            let events = Arc::clone(&self.events);
            let ns2 = ns.clone();
            tokio::task::spawn_blocking(move || events.backlog(&ns2, after))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(event_status)?
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::channel(64);
        let filters = r.topics;
        let mut closing = self.events.closing();
        tokio::spawn(async move {
            let mut last = r.after_sequence.unwrap_or(0);
            for e in &backlog {
                last = e.sequence;
                if topic_matches(&filters, &e.topic) && tx.send(Ok(envelope(e))).await.is_err() {
                    return;
                }
            }
            loop {
                tokio::select! {
                    got = live.recv() => match got {
                        Ok(e) => {
                            if e.sequence <= last || e.namespace != ns {
                                continue;
                            }
                            last = e.sequence;
                            if topic_matches(&filters, &e.topic)
                                && tx.send(Ok(envelope(&e))).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx
                                .send(Err(Status::resource_exhausted(format!(
                                    "the subscriber fell behind after sequence {last}; \
                                     subscribe again with after_sequence {last}"
                                ))))
                                .await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                                        _ = tx.closed() => return,
                    _ = closing.changed() => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the supervisor is stopping; subscribe again with after_sequence {last}"
                            ))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
