//! [`Supervisor`] over gRPC, with `berth-client`: the supervisor's socket,
//! the engine's namespace.

use berth_client::trace::{self, Layer};
use berth_client::Client;
use berth_proto::containers::v1 as containers;
use berth_proto::content::v1 as content;
use berth_proto::events::v1 as events;
use berth_proto::images::v1 as images;
use berth_proto::snapshots::v1 as snapshots;
use berth_proto::tasks::v1 as tasks;
use berth_proto::types::v1 as types;
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    AttachInput, Attached, BackendError, BoxFuture, Result, Stream, Supervisor, TaskOptions,
};

/// The supervisor at the other end of a gRPC channel.
#[derive(Clone)]
pub struct Grpc {
    client: Client,
}

impl Grpc {
    pub fn new(client: Client) -> Grpc {
        Grpc { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client for a call: under the lease of the task's scope
    /// ([`super::lease_scope`]), if any.
    fn leased(&self) -> Client {
        super::current_lease()
            .and_then(|id| self.client.with_lease(&id).ok())
            .unwrap_or_else(|| self.client.clone())
    }
}

fn process_ids(id: &str, exec_id: &str) -> (String, String) {
    (id.to_string(), exec_id.to_string())
}

impl Supervisor for Grpc {
    fn create_lease(&self, id: &str, expire_seconds: i64) -> BoxFuture<'_, Result<()>> {
        let req = berth_proto::leases::v1::CreateLeaseRequest {
            id: id.to_string(),
            labels: Default::default(),
            expire_seconds,
        };
        Box::pin(async move {
            self.client.leases().create(req).await?;
            Ok(())
        })
    }

    fn delete_lease(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        let req = berth_proto::leases::v1::DeleteLeaseRequest { id: id.to_string() };
        Box::pin(async move {
            self.client.leases().delete(req).await?;
            Ok(())
        })
    }

    fn get_image(&self, name: &str) -> BoxFuture<'_, Result<images::Image>> {
        let req = images::GetImageRequest {
            name: name.to_string(),
        };
        Box::pin(async move {
            let _span = trace::span(Layer::Engine, "gRPC Images/Get");
            Ok(self.leased().images().get(req).await?.into_inner())
        })
    }

    fn list_images(&self) -> BoxFuture<'_, Result<Vec<images::Image>>> {
        Box::pin(async move {
            let resp = self
                .leased()
                .images()
                .list(images::ListImagesRequest {})
                .await?;
            Ok(resp.into_inner().images)
        })
    }

    fn read_blob(&self, digest: &str) -> BoxFuture<'_, Result<Bytes>> {
        let req = content::ReadContentRequest {
            digest: digest.to_string(),
            ..Default::default()
        };
        Box::pin(async move {
            let mut stream = self.leased().content().read(req).await?.into_inner();
            let mut buf = BytesMut::new();
            while let Some(chunk) = stream.message().await? {
                buf.extend_from_slice(&chunk.data);
            }
            Ok(buf.freeze())
        })
    }

    fn pull(
        &self,
        req: images::PullRequest,
    ) -> BoxFuture<'_, Result<Stream<images::PullResponse>>> {
        Box::pin(async move {
            let stream = self.leased().images().pull(req).await?.into_inner();
            Ok(stream.map_err(BackendError::from).boxed())
        })
    }

    fn push(
        &self,
        req: images::PushRequest,
    ) -> BoxFuture<'_, Result<Stream<images::PushResponse>>> {
        Box::pin(async move {
            let stream = self.leased().images().push(req).await?.into_inner();
            Ok(stream.map_err(BackendError::from).boxed())
        })
    }

    fn tag_image(&self, source: &str, target: &str) -> BoxFuture<'_, Result<images::Image>> {
        let req = images::TagImageRequest {
            source: source.to_string(),
            target: target.to_string(),
        };
        Box::pin(async move { Ok(self.leased().images().tag(req).await?.into_inner()) })
    }

    fn delete_image(&self, name: &str) -> BoxFuture<'_, Result<()>> {
        let req = images::DeleteImageRequest {
            name: name.to_string(),
        };
        Box::pin(async move {
            self.leased().images().delete(req).await?;
            Ok(())
        })
    }

    fn import_images(
        &self,
        options: images::ImportOptions,
        data: BoxStream<'static, Bytes>,
    ) -> BoxFuture<'_, Result<Vec<images::Image>>> {
        let first = images::ImportRequest {
            options: Some(options),
            data: Vec::new(),
        };
        // Forwarded through a channel: tonic's streaming request wants a
        // stream it can hold across threads.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let mut data = data;
            while let Some(chunk) = data.next().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let rest = ReceiverStream::new(rx).map(|chunk| images::ImportRequest {
            options: None,
            data: chunk.to_vec(),
        });
        let requests = futures_util::stream::iter([first]).chain(rest);
        Box::pin(async move {
            let resp = self.leased().images().import(requests).await?;
            Ok(resp.into_inner().images)
        })
    }

    fn export_images(
        &self,
        names: Vec<String>,
        unnamed: Vec<String>,
        format: images::ArchiveFormat,
    ) -> BoxFuture<'_, Result<Stream<Bytes>>> {
        let req = images::ExportRequest {
            names,
            format: format as i32,
            platform: String::new(),
            unnamed,
        };
        Box::pin(async move {
            let stream = self.leased().images().export(req).await?.into_inner();
            Ok(stream
                .map_ok(|m| Bytes::from(m.data))
                .map_err(BackendError::from)
                .boxed())
        })
    }

    fn check_auth(&self, registry: &str, auth: images::RegistryAuth) -> BoxFuture<'_, Result<()>> {
        let req = images::CheckAuthRequest {
            registry: registry.to_string(),
            auth: Some(auth),
        };
        Box::pin(async move {
            self.leased().images().check_auth(req).await?;
            Ok(())
        })
    }

    fn create_container(
        &self,
        req: containers::CreateContainerRequest,
    ) -> BoxFuture<'_, Result<containers::Container>> {
        Box::pin(async move {
            let _span = trace::span(Layer::Engine, "gRPC Containers/Create");
            let resp = self
                .leased()
                .containers()
                .create(trace::request(req))
                .await?;
            trace::absorb(resp.metadata());
            Ok(resp.into_inner())
        })
    }

    fn get_container(&self, id: &str) -> BoxFuture<'_, Result<containers::Container>> {
        let req = containers::GetContainerRequest { id: id.to_string() };
        Box::pin(async move { Ok(self.leased().containers().get(req).await?.into_inner()) })
    }

    fn update_container_spec(&self, id: &str, spec: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        let req = containers::UpdateContainerRequest {
            id: id.to_string(),
            spec,
            ..Default::default()
        };
        Box::pin(async move {
            self.leased().containers().update(req).await?;
            Ok(())
        })
    }

    fn delete_container(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        let req = containers::DeleteContainerRequest { id: id.to_string() };
        Box::pin(async move {
            self.leased().containers().delete(req).await?;
            Ok(())
        })
    }

    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<containers::Container>>> {
        Box::pin(async move {
            let req = containers::ListContainersRequest::default();
            Ok(self
                .leased()
                .containers()
                .list(req)
                .await?
                .into_inner()
                .containers)
        })
    }

    fn create_task(&self, id: &str, opts: TaskOptions) -> BoxFuture<'_, Result<u32>> {
        let req = tasks::CreateTaskRequest {
            container_id: id.to_string(),
            stdin: opts.stdin,
            log_max_size: opts.log_max_size,
            log_path: opts
                .log_path
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            log_max_files: opts.log_max_files,
            no_log: opts.no_log,
        };
        Box::pin(async move {
            let _span = trace::span(Layer::Engine, "gRPC Tasks/Create");
            let resp = self.leased().tasks().create(trace::request(req)).await?;
            trace::absorb(resp.metadata());
            Ok(resp.into_inner().pid)
        })
    }

    fn start(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<u32>> {
        let (container_id, exec_id) = process_ids(id, exec_id);
        let req = tasks::StartRequest {
            container_id,
            exec_id,
        };
        Box::pin(async move {
            let _span = trace::span(Layer::Engine, "gRPC Tasks/Start");
            let resp = self.leased().tasks().start(trace::request(req)).await?;
            trace::absorb(resp.metadata());
            Ok(resp.into_inner().pid)
        })
    }

    fn get_task(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<tasks::Process>> {
        let (container_id, exec_id) = process_ids(id, exec_id);
        let req = tasks::GetRequest {
            container_id,
            exec_id,
        };
        Box::pin(async move {
            let resp = self.leased().tasks().get(req).await?.into_inner();
            resp.process
                .ok_or_else(|| BackendError::Internal("task without a process".into()))
        })
    }

    fn list_tasks(&self) -> BoxFuture<'_, Result<Vec<tasks::Process>>> {
        Box::pin(async move {
            let resp = self
                .leased()
                .tasks()
                .list(tasks::ListTasksRequest {})
                .await?;
            Ok(resp.into_inner().tasks)
        })
    }

    fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> BoxFuture<'_, Result<()>> {
        let (container_id, exec_id) = process_ids(id, exec_id);
        let req = tasks::KillRequest {
            container_id,
            exec_id,
            signal,
            all,
        };
        Box::pin(async move {
            self.leased().tasks().kill(req).await?;
            Ok(())
        })
    }

    fn delete_task(&self, id: &str) -> BoxFuture<'_, Result<tasks::DeleteResponse>> {
        let req = tasks::DeleteTaskRequest {
            container_id: id.to_string(),
        };
        Box::pin(async move { Ok(self.leased().tasks().delete(req).await?.into_inner()) })
    }

    fn delete_process(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<()>> {
        let (container_id, exec_id) = process_ids(id, exec_id);
        let req = tasks::DeleteProcessRequest {
            container_id,
            exec_id,
        };
        Box::pin(async move {
            self.leased().tasks().delete_process(req).await?;
            Ok(())
        })
    }

    fn exec(&self, req: tasks::ExecProcessRequest) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.leased().tasks().exec(req).await?;
            Ok(())
        })
    }

    fn resize(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> BoxFuture<'_, Result<()>> {
        let (container_id, exec_id) = process_ids(id, exec_id);
        let req = tasks::ResizePtyRequest {
            container_id,
            exec_id,
            width,
            height,
        };
        Box::pin(async move {
            self.leased().tasks().resize_pty(req).await?;
            Ok(())
        })
    }

    fn close_stdin(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<()>> {
        let (container_id, exec_id) = process_ids(id, exec_id);
        let req = tasks::CloseIoRequest {
            container_id,
            exec_id,
            stdin: true,
        };
        Box::pin(async move {
            self.leased().tasks().close_io(req).await?;
            Ok(())
        })
    }

    fn pause(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        let req = tasks::PauseRequest {
            container_id: id.to_string(),
        };
        Box::pin(async move {
            self.leased().tasks().pause(req).await?;
            Ok(())
        })
    }

    fn resume(&self, id: &str) -> BoxFuture<'_, Result<()>> {
        let req = tasks::ResumeRequest {
            container_id: id.to_string(),
        };
        Box::pin(async move {
            self.leased().tasks().resume(req).await?;
            Ok(())
        })
    }

    fn list_pids(&self, id: &str) -> BoxFuture<'_, Result<Vec<u32>>> {
        let req = tasks::ListPidsRequest {
            container_id: id.to_string(),
        };
        Box::pin(async move {
            Ok(self
                .leased()
                .tasks()
                .list_pids(req)
                .await?
                .into_inner()
                .pids)
        })
    }

    fn update_task(&self, id: &str, resources: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        let req = tasks::UpdateTaskRequest {
            container_id: id.to_string(),
            resources,
        };
        Box::pin(async move {
            self.leased().tasks().update(req).await?;
            Ok(())
        })
    }

    fn stats(&self, id: &str) -> BoxFuture<'_, Result<tasks::StatsResponse>> {
        let req = tasks::StatsRequest {
            container_id: id.to_string(),
        };
        Box::pin(async move { Ok(self.leased().tasks().stats(req).await?.into_inner()) })
    }

    fn wait(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<tasks::WaitResponse>> {
        let (container_id, exec_id) = process_ids(id, exec_id);
        let req = tasks::WaitRequest {
            container_id,
            exec_id,
        };
        Box::pin(async move { Ok(self.leased().tasks().wait(req).await?.into_inner()) })
    }

    fn attach(&self, id: &str, exec_id: &str, stdin: bool) -> BoxFuture<'_, Result<Attached>> {
        let first = tasks::AttachRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin,
            ..Default::default()
        };
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<AttachInput>(16);
            let rest = ReceiverStream::new(rx).map(|input| match input {
                AttachInput::Data(data) => tasks::AttachRequest {
                    data: data.to_vec(),
                    ..Default::default()
                },
                AttachInput::Close => tasks::AttachRequest {
                    close_stdin: true,
                    ..Default::default()
                },
            });
            let requests = futures_util::stream::iter([first]).chain(rest);
            let output = self.leased().tasks().attach(requests).await?.into_inner();
            let output = output
                .map_ok(|resp| (resp.stream, Bytes::from(resp.data)))
                .map_err(BackendError::from)
                .boxed();
            Ok(Attached {
                input: stdin.then_some(tx),
                output,
            })
        })
    }

    fn write_blob(&self, data: Bytes) -> BoxFuture<'_, Result<String>> {
        use sha2::Digest as _;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
        let req = content::WriteContentRequest {
            action: content::WriteAction::Commit as i32,
            r#ref: format!("build-{digest}"),
            total: data.len() as i64,
            expected: digest.clone(),
            offset: 0,
            data: data.to_vec(),
            labels: Default::default(),
        };
        Box::pin(async move {
            let requests = futures_util::stream::iter([req]);
            let mut replies = self.leased().content().write(requests).await?.into_inner();
            match replies.message().await? {
                Some(reply) if reply.digest == digest => Ok(digest),
                Some(reply) => Err(BackendError::Internal(format!(
                    "content write of {digest} committed {}",
                    reply.digest
                ))),
                None => Err(BackendError::Internal(format!(
                    "content write of {digest}: no answer"
                ))),
            }
        })
    }

    fn create_image(
        &self,
        name: &str,
        target: types::Descriptor,
    ) -> BoxFuture<'_, Result<images::Image>> {
        let req = images::CreateImageRequest {
            name: name.to_string(),
            target: Some(target),
        };
        Box::pin(async move { Ok(self.leased().images().create(req).await?.into_inner()) })
    }

    fn prepare_snapshot(&self, key: &str, parent: &str) -> BoxFuture<'_, Result<()>> {
        let req = snapshots::PrepareSnapshotRequest {
            key: key.to_string(),
            parent: parent.to_string(),
            labels: Default::default(),
        };
        Box::pin(async move {
            self.leased().snapshots().prepare(req).await?;
            Ok(())
        })
    }

    fn snapshot_mounts(&self, key: &str) -> BoxFuture<'_, Result<Vec<types::Mount>>> {
        let req = snapshots::MountsRequest {
            key: key.to_string(),
        };
        Box::pin(async move {
            Ok(self
                .leased()
                .snapshots()
                .mounts(req)
                .await?
                .into_inner()
                .mounts)
        })
    }

    fn commit_snapshot(&self, name: &str, key: &str) -> BoxFuture<'_, Result<()>> {
        let req = snapshots::CommitSnapshotRequest {
            name: name.to_string(),
            key: key.to_string(),
            labels: Default::default(),
        };
        Box::pin(async move {
            self.leased().snapshots().commit(req).await?;
            Ok(())
        })
    }

    fn remove_snapshot(&self, key: &str) -> BoxFuture<'_, Result<()>> {
        let req = snapshots::RemoveSnapshotRequest {
            key: key.to_string(),
        };
        Box::pin(async move {
            self.leased().snapshots().remove(req).await?;
            Ok(())
        })
    }

    fn diff_snapshot(
        &self,
        key: &str,
        media_type: &str,
    ) -> BoxFuture<'_, Result<(types::Descriptor, String)>> {
        let req = snapshots::DiffRequest {
            key: key.to_string(),
            media_type: media_type.to_string(),
            labels: Default::default(),
        };
        Box::pin(async move {
            let resp = self.leased().snapshots().diff(req).await?.into_inner();
            let diff = resp
                .diff
                .ok_or_else(|| BackendError::Internal("diff: no descriptor".to_string()))?;
            Ok((diff, resp.diff_id))
        })
    }

    fn changes(&self, key: &str) -> BoxFuture<'_, Result<Vec<(String, i32)>>> {
        let req = snapshots::ChangesRequest {
            key: key.to_string(),
        };
        Box::pin(async move {
            let resp = self.leased().snapshots().changes(req).await?.into_inner();
            Ok(resp.changes.into_iter().map(|c| (c.path, c.kind)).collect())
        })
    }

    fn snapshot_usage(&self, key: &str) -> BoxFuture<'_, Result<i64>> {
        let req = snapshots::UsageRequest {
            key: key.to_string(),
        };
        Box::pin(async move {
            Ok(self
                .leased()
                .snapshots()
                .usage(req)
                .await?
                .into_inner()
                .size)
        })
    }

    fn export(&self, key: &str) -> BoxFuture<'_, Result<BoxStream<'static, Result<Bytes>>>> {
        let req = snapshots::ExportRequest {
            key: key.to_string(),
        };
        Box::pin(async move {
            let stream = self.leased().snapshots().export(req).await?.into_inner();
            Ok(stream
                .map_ok(|c| Bytes::from(c.data))
                .map_err(BackendError::from)
                .boxed())
        })
    }

    fn resolve_user(&self, key: &str, user: &str) -> BoxFuture<'_, Result<(u32, u32, Vec<u32>)>> {
        let req = snapshots::ResolveUserRequest {
            key: key.to_string(),
            user: user.to_string(),
        };
        Box::pin(async move {
            let r = self
                .leased()
                .snapshots()
                .resolve_user(req)
                .await?
                .into_inner();
            Ok((r.uid, r.gid, r.additional_gids))
        })
    }

    fn subscribe(
        &self,
        topics: Vec<String>,
        after: Option<u64>,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<events::Envelope>>>> {
        let req = events::SubscribeRequest {
            topics,
            after_sequence: after,
        };
        Box::pin(async move {
            let stream = self.leased().events().subscribe(req).await?.into_inner();
            Ok(stream.map_err(BackendError::from).boxed())
        })
    }
}
