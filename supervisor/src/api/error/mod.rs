//! The one place domain errors become gRPC statuses: a `match` per error
//! enum, by variant (never by message text); the status carries the
//! error's message. `?` in a service turns any of these errors into its
//! status through the `From` impls here.

use tonic::{Code, Status};

use crate::blobs::BlobError;
use crate::containers::ContainerError;
use crate::content::ContentError;
use crate::events::EventError;
use crate::gc::GcError;
use crate::images::ImageError;
use crate::leases::LeaseError;
use crate::metadata::MetadataError;
use crate::namespaces::NamespaceError;
use crate::registry::RegistryError;
use crate::rootfs::RootfsError;
use crate::snapshots::SnapshotError;
use crate::tasks::bundle::BundleError;
use crate::tasks::TaskError;
use berth_shim::protocol::ErrorKind;

/// A request that does not decode (a missing field, an unknown enum value).
pub fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// A call without the namespace metadata.
pub fn missing_namespace() -> Status {
    Status::failed_precondition(format!(
        "namespace required: set the {} metadata",
        berth_proto::NAMESPACE_KEY
    ))
}

/// Blocking work that ended without an answer (it panicked).
pub fn stopped(e: tokio::task::JoinError) -> Status {
    Status::internal(e.to_string())
}

fn metadata_code(e: &MetadataError) -> Code {
    match e {
        MetadataError::InvalidNamespace(_) => Code::InvalidArgument,
        MetadataError::Open { .. } | MetadataError::Db(_) | MetadataError::Corrupt { .. } => {
            Code::Internal
        }
    }
}

fn content_code(e: &ContentError) -> Code {
    match e {
        ContentError::NotFound(_) => Code::NotFound,
        ContentError::AlreadyExists(_) => Code::AlreadyExists,
        ContentError::InvalidDigest(_) => Code::InvalidArgument,
        ContentError::Locked(_) => Code::FailedPrecondition,
        ContentError::SizeMismatch { .. } | ContentError::DigestMismatch { .. } => Code::DataLoss,
        ContentError::Io { .. } => Code::Internal,
    }
}

fn snapshot_code(e: &SnapshotError) -> Code {
    match e {
        SnapshotError::NotFound(_) => Code::NotFound,
        SnapshotError::AlreadyExists(_) => Code::AlreadyExists,
        SnapshotError::InvalidKey(_) => Code::InvalidArgument,
        SnapshotError::ParentNotCommitted(_)
        | SnapshotError::NotActive(_)
        | SnapshotError::HasChildren { .. } => Code::FailedPrecondition,
        SnapshotError::Metadata(m) => metadata_code(m),
        SnapshotError::Io { .. } => Code::Internal,
    }
}

fn rootfs_code(e: &RootfsError) -> Code {
    match e {
        RootfsError::Snapshot(s) => snapshot_code(s),
        RootfsError::Metadata(m) => metadata_code(m),
        RootfsError::InvalidPath(_) | RootfsError::NoTarget(_) => Code::InvalidArgument,
        RootfsError::User(c) => container_code(c),
        // The client went away, or the files could not be read.
        RootfsError::Archive { .. }
        | RootfsError::MountPoint { .. }
        | RootfsError::Mount { .. } => Code::Internal,
    }
}

fn registry_code(e: &RegistryError) -> Code {
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

fn image_code(e: &ImageError) -> Code {
    match e {
        ImageError::NotFound(_) | ImageError::NoMatchingPlatform { .. } => Code::NotFound,
        ImageError::Reference(_) | ImageError::InvalidPlatform(_) => Code::InvalidArgument,
        ImageError::Content(c) => content_code(c),
        ImageError::Metadata(m) => metadata_code(m),
        ImageError::Snapshot(s) => snapshot_code(s),
        ImageError::Registry(r) => registry_code(r),
        ImageError::DiffIdMismatch { .. } => Code::DataLoss,
        ImageError::Unpack { .. }
        | ImageError::BadDocument { .. }
        | ImageError::TooLarge { .. }
        | ImageError::UnsupportedLayer { .. }
        | ImageError::Archive(_) => Code::FailedPrecondition,
        ImageError::Io { .. } | ImageError::Internal(_) => Code::Internal,
    }
}

fn container_code(e: &ContainerError) -> Code {
    match e {
        ContainerError::InvalidId(_)
        | ContainerError::InvalidOverride { .. }
        | ContainerError::InvalidUser(_)
        | ContainerError::UserNotFound { .. }
        | ContainerError::InvalidSpec(_) => Code::InvalidArgument,
        ContainerError::AlreadyExists(_) => Code::AlreadyExists,
        ContainerError::NotFound(_) => Code::NotFound,
        ContainerError::NoLayers { .. } | ContainerError::HasTask(_) => Code::FailedPrecondition,
        ContainerError::Image(e) => image_code(e),
    }
}

fn namespace_code(e: &NamespaceError) -> Code {
    match e {
        NamespaceError::NotFound(_) => Code::NotFound,
        NamespaceError::AlreadyExists(_) => Code::AlreadyExists,
        NamespaceError::NotEmpty(_) => Code::FailedPrecondition,
        NamespaceError::Metadata(m) => metadata_code(m),
    }
}

fn lease_code(e: &LeaseError) -> Code {
    match e {
        LeaseError::NotFound(_) => Code::NotFound,
        LeaseError::AlreadyExists(_) => Code::AlreadyExists,
        LeaseError::InvalidId(_) | LeaseError::UnknownResourceType(_) => Code::InvalidArgument,
        LeaseError::InvalidDigest(c) => content_code(c),
        LeaseError::Metadata(m) => metadata_code(m),
    }
}

fn gc_code(e: &GcError) -> Code {
    match e {
        GcError::Image(i) => image_code(i),
        GcError::Metadata(m) => metadata_code(m),
        GcError::Content(c) => content_code(c),
        GcError::Snapshot(s) => snapshot_code(s),
        GcError::Stopped(_) => Code::Internal,
    }
}

fn blob_code(e: &BlobError) -> Code {
    match e {
        BlobError::NotHeld(_) => Code::NotFound,
        BlobError::MissingRef | BlobError::OtherRef { .. } | BlobError::Offset { .. } => {
            Code::InvalidArgument
        }
        BlobError::Read(_) => Code::Internal,
        BlobError::Content(c) => content_code(c),
        BlobError::Metadata(m) => metadata_code(m),
        BlobError::Hold(i) => image_code(i),
        BlobError::Gc(g) => gc_code(g),
    }
}

fn event_code(e: &EventError) -> Code {
    match e {
        EventError::InvalidTopic(_) | EventError::TooManyAttributes(_) => Code::InvalidArgument,
        EventError::Lagged { .. } => Code::ResourceExhausted,
        EventError::Stopping { .. } => Code::Unavailable,
        EventError::Metadata(m) => metadata_code(m),
    }
}

/// What a shim's refusal means, by the kind the shim gave it.
fn refusal_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Internal => Code::Internal,
    }
}

fn bundle_code(e: &BundleError) -> Code {
    match e {
        BundleError::InvalidSpec(_) => Code::InvalidArgument,
        BundleError::Io { .. }
        | BundleError::Mount { .. }
        | BundleError::Unmount { .. }
        | BundleError::Mounts(_) => Code::Internal,
    }
}

fn task_code(e: &TaskError) -> Code {
    match e {
        TaskError::NotFound(_) => Code::NotFound,
        TaskError::AlreadyExists(_) => Code::AlreadyExists,
        TaskError::WrongState { .. } => Code::FailedPrecondition,
        TaskError::Invalid { .. } | TaskError::RuntimeNotFound { .. } => Code::InvalidArgument,
        TaskError::Container(c) => container_code(c),
        TaskError::Bundle(b) => bundle_code(b),
        TaskError::ShimStart { .. } => Code::Internal,
        TaskError::Refused { kind, .. } => refusal_code(*kind),
        TaskError::Shim { .. } => Code::Unavailable,
    }
}

/// Image errors (and what they wrap) as statuses.
pub fn status(e: ImageError) -> Status {
    Status::new(image_code(&e), e.to_string())
}

/// Container errors as statuses.
pub fn container_status(e: ContainerError) -> Status {
    Status::new(container_code(&e), e.to_string())
}

/// Task errors as statuses.
pub fn task_status(e: TaskError) -> Status {
    Status::new(task_code(&e), e.to_string())
}

macro_rules! into_status {
    ($($error:ty => $code:ident),* $(,)?) => {$(
        impl From<$error> for Status {
            fn from(e: $error) -> Status {
                Status::new($code(&e), e.to_string())
            }
        }
    )*};
}

into_status!(
    MetadataError => metadata_code,
    ContentError => content_code,
    SnapshotError => snapshot_code,
    RootfsError => rootfs_code,
    ImageError => image_code,
    ContainerError => container_code,
    NamespaceError => namespace_code,
    LeaseError => lease_code,
    GcError => gc_code,
    BlobError => blob_code,
    EventError => event_code,
    TaskError => task_code,
);

#[cfg(test)]
mod tests;
