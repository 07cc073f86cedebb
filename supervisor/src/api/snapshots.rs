//! The Snapshots service: decodes, calls `crate::snapshots` (and `diff`,
//! and `rootfs` for changes and exports), encodes; a snapshot prepared
//! under a lease is added to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_proto::snapshots::v1 as snapshots_pb;
use berth_proto::types::v1 as types_pb;
use tonic::{Request, Response, Status};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{blocking, descriptor_pb, labels, lease, namespace, timestamp, BoxStream, Service};
use crate::archive::{Change, ChangeKind, NewPath};
use crate::diff;
use crate::images::ImageError;
use crate::metadata::SnapshotKind;
use crate::rootfs::{self, ChunkWriter};
use crate::snapshots::Mount;

/// Bytes per chunk of an export.
const EXPORT_CHUNK: usize = 1 << 20;

fn change_pb(c: Change) -> snapshots_pb::Change {
    let kind = match c.kind {
        ChangeKind::Modified => snapshots_pb::ChangeKind::ChangeModified,
        ChangeKind::Added => snapshots_pb::ChangeKind::ChangeAdded,
        ChangeKind::Deleted => snapshots_pb::ChangeKind::ChangeDeleted,
    };
    snapshots_pb::Change {
        path: c.path.to_string_lossy().into_owned(),
        kind: kind as i32,
    }
}

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
            Ok::<_, ImageError>(mounts)
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
        let rx = self.images.meta.read()?;
        let mounts = self.images.snapshots.mounts(&rx, &ns, &key)?;
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
        blocking(move || images.snapshots.remove(&images.meta, &ns, &key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<snapshots_pb::StatSnapshotRequest>,
    ) -> Result<Response<snapshots_pb::SnapshotInfo>, Status> {
        let ns = namespace(&req)?;
        let key = req.into_inner().key;
        let rx = self.images.meta.read()?;
        let r = self.images.snapshots.get(&rx, &ns, &key)?;
        Ok(Response::new(snapshot_info_pb(key, &r)))
    }

    async fn list(
        &self,
        req: Request<snapshots_pb::ListSnapshotsRequest>,
    ) -> Result<Response<snapshots_pb::ListSnapshotsResponse>, Status> {
        let ns = namespace(&req)?;
        let rx = self.images.meta.read()?;
        let list = self.images.snapshots.list(&rx, &ns)?;
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
            images.snapshots.usage(&rx, &ns, &key)
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

    async fn changes(
        &self,
        req: Request<snapshots_pb::ChangesRequest>,
    ) -> Result<Response<snapshots_pb::ChangesResponse>, Status> {
        let ns = namespace(&req)?;
        let key = req.into_inner().key;
        let images = Arc::clone(&self.images);
        let changes = blocking(move || rootfs::changes(&images, &ns, &key)).await?;
        Ok(Response::new(snapshots_pb::ChangesResponse {
            changes: changes.into_iter().map(change_pb).collect(),
        }))
    }

    async fn add_paths(
        &self,
        req: Request<snapshots_pb::AddPathsRequest>,
    ) -> Result<Response<snapshots_pb::AddPathsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let paths: Vec<(std::path::PathBuf, NewPath)> = r
            .paths
            .into_iter()
            .map(|p| {
                let what = match p.r#type() {
                    snapshots_pb::PathType::PathFile => NewPath::File,
                    snapshots_pb::PathType::PathDirectory => NewPath::Directory,
                    snapshots_pb::PathType::PathSymlink => NewPath::Symlink {
                        target: p.target.into(),
                    },
                };
                (p.path.into(), what)
            })
            .collect();
        let images = Arc::clone(&self.images);
        let added = blocking(move || rootfs::add_paths(&images, &ns, &r.key, &paths)).await?;
        Ok(Response::new(snapshots_pb::AddPathsResponse {
            added: added
                .into_iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        }))
    }

    async fn resolve_user(
        &self,
        req: Request<snapshots_pb::ResolveUserRequest>,
    ) -> Result<Response<snapshots_pb::ResolveUserResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let images = Arc::clone(&self.images);
        let user = blocking(move || rootfs::resolve_user(&images, &ns, &r.key, &r.user)).await?;
        Ok(Response::new(snapshots_pb::ResolveUserResponse {
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
        }))
    }

    type ExportStream = BoxStream<snapshots_pb::ExportChunk>;

    async fn export(
        &self,
        req: Request<snapshots_pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let ns = namespace(&req)?;
        let key = req.into_inner().key;
        let images = Arc::clone(&self.images);
        let views = self.tasks.views_dir();
        // Mounted before answering: a missing snapshot is the call's status.
        let view = blocking(move || rootfs::mount_view(&images, &views, &ns, &key)).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sink = ChunkWriter::new(EXPORT_CHUNK, |data| {
                tx.blocking_send(Ok(snapshots_pb::ExportChunk { data }))
                    .map_err(|_| std::io::Error::other("the client went away"))
            });
            if let Err(e) = rootfs::write_tar(&view, sink) {
                let _ = tx.blocking_send(Err(e.into()));
            }
            // Unmounted here, however the export ended.
            drop(view);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
