//! The engine's way to the supervisor: the [`Supervisor`] trait, one method
//! per gRPC call the engine makes, with the generated message types as its
//! data (plain structs, no transport in them). [`grpc::Grpc`] implements it
//! over `berth-client`; [`fake::Fake`] in memory, so the domain's logic is
//! unit-tested without root or a daemon.
//!
//! gRPC status codes become [`BackendError`] variants here, by code; the
//! domain matches on variants, never on message text.

use std::future::Future;
use std::pin::Pin;

use berth_proto::containers::v1 as containers;
use berth_proto::events::v1 as events;
use berth_proto::images::v1 as images;
use berth_proto::tasks::v1 as tasks;
use berth_proto::types::v1 as types;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub mod fake;
pub mod grpc;

tokio::task_local! {
    static LEASE: String;
}

/// Runs `f` with every supervisor call it makes (in this task) under
/// lease `id`: the blobs and snapshots it creates are not collected
/// before the lease goes (a build's, until its image names them).
pub async fn lease_scope<F: Future>(id: String, f: F) -> F::Output {
    LEASE.scope(id, f).await
}

/// The lease of the current task's [`lease_scope`], if any.
pub fn current_lease() -> Option<String> {
    LEASE.try_with(Clone::clone).ok()
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type Result<T> = std::result::Result<T, BackendError>;
/// A stream of messages from the supervisor, ended by the first error.
pub type Stream<T> = BoxStream<'static, Result<T>>;

/// A failed call to the supervisor, by the status code it answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A registry refused the credentials (or wants some).
    #[error("{0}")]
    Unauthorized(String),
    /// The supervisor cannot be reached, or something it depends on (a
    /// registry) cannot: the message says which.
    #[error("{0}")]
    Unavailable(String),
    #[error("supervisor: {0}")]
    Internal(String),
}

impl From<tonic::Status> for BackendError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::NotFound => BackendError::NotFound(message),
            tonic::Code::AlreadyExists => BackendError::AlreadyExists(message),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                BackendError::InvalidArgument(message)
            }
            tonic::Code::FailedPrecondition => BackendError::FailedPrecondition(message),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                BackendError::Unauthorized(message)
            }
            // A status with a source is the transport's own (the
            // supervisor's socket); one without came from the supervisor,
            // about what it could not reach, and says so itself.
            tonic::Code::Unavailable | tonic::Code::Cancelled => {
                if std::error::Error::source(&status).is_some() {
                    BackendError::Unavailable(format!("supervisor unavailable: {message}"))
                } else {
                    BackendError::Unavailable(message)
                }
            }
            _ => BackendError::Internal(message),
        }
    }
}

/// Input to a process through [`Supervisor::attach`].
#[derive(Debug)]
pub enum AttachInput {
    Data(Bytes),
    Close,
}

/// Output of a process: the stream (1 stdout, 2 stderr) and the bytes.
pub type AttachOutput = (u32, Bytes);

/// An attach session: a sender for the process's stdin (if asked for) and
/// its output until it exits.
pub struct Attached {
    pub input: Option<tokio::sync::mpsc::Sender<AttachInput>>,
    pub output: BoxStream<'static, Result<AttachOutput>>,
}

/// Options for a task's creation beyond the container's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskOptions {
    pub stdin: bool,
    /// Where the container's json-file log goes; `None`: the shim's default.
    pub log_path: Option<std::path::PathBuf>,
    /// Rotate the log past this size; 0: never.
    pub log_max_size: u64,
    /// Log files kept in all when rotating (0 counts as 1).
    pub log_max_files: u32,
    /// Docker's `none` log driver: output goes only to attached clients.
    pub no_log: bool,
}

/// Every call the engine makes to the supervisor, in its namespace.
pub trait Supervisor: Send + Sync + 'static {
    // Images and content.
    fn get_image(&self, name: &str) -> BoxFuture<'_, Result<images::Image>>;
    fn list_images(&self) -> BoxFuture<'_, Result<Vec<images::Image>>>;
    /// The whole blob with this digest from the content store.
    fn read_blob(&self, digest: &str) -> BoxFuture<'_, Result<Bytes>>;
    /// Starts a pull: its progress, the stored image in the last message.
    fn pull(&self, req: images::PullRequest)
        -> BoxFuture<'_, Result<Stream<images::PullResponse>>>;
    /// Starts a push: its progress, the manifest digest in the last message.
    fn push(&self, req: images::PushRequest)
        -> BoxFuture<'_, Result<Stream<images::PushResponse>>>;
    fn tag_image(&self, source: &str, target: &str) -> BoxFuture<'_, Result<images::Image>>;
    fn delete_image(&self, name: &str) -> BoxFuture<'_, Result<()>>;
    /// Imports an OCI layout or `docker save` tarball read from `data`.
    fn import_images(
        &self,
        options: images::ImportOptions,
        data: BoxStream<'static, Bytes>,
    ) -> BoxFuture<'_, Result<Vec<images::Image>>>;
    /// Writes the named images as a tarball in `format`.
    /// A `docker save` (or OCI) archive of the images `names` names; those
    /// also in `unnamed` are written without their names.
    fn export_images(
        &self,
        names: Vec<String>,
        unnamed: Vec<String>,
        format: images::ArchiveFormat,
    ) -> BoxFuture<'_, Result<Stream<Bytes>>>;
    /// Checks credentials against a registry (`host[:port]`).
    fn check_auth(&self, registry: &str, auth: images::RegistryAuth) -> BoxFuture<'_, Result<()>>;

    // Leases.
    /// Makes lease `id`, expiring after `expire_seconds` (0: never); the
    /// calls made in [`lease_scope`] add what they create to it.
    fn create_lease(&self, id: &str, expire_seconds: i64) -> BoxFuture<'_, Result<()>>;
    /// Deletes lease `id`; what only it kept is collected.
    fn delete_lease(&self, id: &str) -> BoxFuture<'_, Result<()>>;

    // Containers.
    fn create_container(
        &self,
        req: containers::CreateContainerRequest,
    ) -> BoxFuture<'_, Result<containers::Container>>;
    fn get_container(&self, id: &str) -> BoxFuture<'_, Result<containers::Container>>;
    /// Replaces the container's OCI spec (JSON), used at its next start.
    fn update_container_spec(&self, id: &str, spec: Vec<u8>) -> BoxFuture<'_, Result<()>>;
    fn delete_container(&self, id: &str) -> BoxFuture<'_, Result<()>>;
    fn list_containers(&self) -> BoxFuture<'_, Result<Vec<containers::Container>>>;

    // Tasks.
    fn create_task(&self, id: &str, opts: TaskOptions) -> BoxFuture<'_, Result<u32>>;
    /// Starts the init (`exec_id` empty) or an exec'd process; its pid.
    fn start(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<u32>>;
    fn get_task(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<tasks::Process>>;
    fn list_tasks(&self) -> BoxFuture<'_, Result<Vec<tasks::Process>>>;
    fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> BoxFuture<'_, Result<()>>;
    /// Deletes a stopped task: its exit.
    fn delete_task(&self, id: &str) -> BoxFuture<'_, Result<tasks::DeleteResponse>>;
    fn delete_process(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<()>>;
    fn exec(&self, req: tasks::ExecProcessRequest) -> BoxFuture<'_, Result<()>>;
    fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32)
        -> BoxFuture<'_, Result<()>>;
    fn close_stdin(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<()>>;
    fn pause(&self, id: &str) -> BoxFuture<'_, Result<()>>;
    fn resume(&self, id: &str) -> BoxFuture<'_, Result<()>>;
    fn list_pids(&self, id: &str) -> BoxFuture<'_, Result<Vec<u32>>>;
    /// Changes the task's resources (an OCI `linux.resources` object, JSON).
    fn update_task(&self, id: &str, resources: Vec<u8>) -> BoxFuture<'_, Result<()>>;
    fn stats(&self, id: &str) -> BoxFuture<'_, Result<tasks::StatsResponse>>;
    /// Returns when the process has exited: its status and time.
    fn wait(&self, id: &str, exec_id: &str) -> BoxFuture<'_, Result<tasks::WaitResponse>>;
    fn attach(&self, id: &str, exec_id: &str, stdin: bool) -> BoxFuture<'_, Result<Attached>>;

    // Snapshots.
    /// What a container's snapshot changed: (absolute path, Docker's kind:
    /// 0 modified, 1 added, 2 deleted).
    fn changes(&self, key: &str) -> BoxFuture<'_, Result<Vec<(String, i32)>>>;
    /// The bytes a snapshot's own layer holds.
    fn snapshot_usage(&self, key: &str) -> BoxFuture<'_, Result<i64>>;
    /// A tar of the snapshot's whole filesystem.
    fn export(&self, key: &str) -> BoxFuture<'_, Result<BoxStream<'static, Result<Bytes>>>>;
    /// `user[:group]` resolved in the snapshot's /etc/passwd and /etc/group:
    /// uid, gid and the user's other groups.
    fn resolve_user(&self, key: &str, user: &str) -> BoxFuture<'_, Result<(u32, u32, Vec<u32>)>>;

    // Builds: snapshots made and committed by the engine, blobs and images
    // it writes (containerd's way of building: Diff, Content.Write,
    // Images.Create).
    /// Stores a small blob (a config, a manifest); its digest.
    fn write_blob(&self, data: Bytes) -> BoxFuture<'_, Result<String>>;
    /// Names a manifest already stored with its config and layers.
    fn create_image(
        &self,
        name: &str,
        target: types::Descriptor,
    ) -> BoxFuture<'_, Result<images::Image>>;
    /// Prepares the active snapshot `key` on the committed `parent` (empty:
    /// an empty filesystem).
    fn prepare_snapshot(&self, key: &str, parent: &str) -> BoxFuture<'_, Result<()>>;
    /// How to mount the snapshot `key` (`Snapshots.Mounts`): a build's, or
    /// a container's (its filesystem, for copy-up into volumes and `docker cp`).
    fn snapshot_mounts(&self, key: &str) -> BoxFuture<'_, Result<Vec<types::Mount>>>;
    /// Commits the active snapshot `key` under `name`.
    fn commit_snapshot(&self, name: &str, key: &str) -> BoxFuture<'_, Result<()>>;
    fn remove_snapshot(&self, key: &str) -> BoxFuture<'_, Result<()>>;
    /// The changes of snapshot `key` against its parent as a layer blob
    /// (`media_type`, empty: gzip): its descriptor and diff id.
    fn diff_snapshot(
        &self,
        key: &str,
        media_type: &str,
    ) -> BoxFuture<'_, Result<(types::Descriptor, String)>>;

    // Events.
    /// The namespace's events on these topics (all when empty), after the
    /// sequence number given (kept ones first), then new ones.
    fn subscribe(
        &self,
        topics: Vec<String>,
        after: Option<u64>,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<events::Envelope>>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_supervisor_is_named_but_its_own_unavailable_answers_are_not() {
        let from_supervisor = tonic::Status::unavailable("registry-1.docker.io: dns error");
        assert_eq!(
            BackendError::from(from_supervisor).to_string(),
            "registry-1.docker.io: dns error"
        );
        let mut transport = tonic::Status::unavailable("error trying to connect");
        transport.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            BackendError::from(transport).to_string(),
            "supervisor unavailable: error trying to connect"
        );
    }
}
