//! The table tests of the error mapping: every variant of every error
//! enum, its code and its message.

use std::io;
use std::path::PathBuf;

use super::*;
use crate::archive::ArchiveError;
use crate::reference::ReferenceError;

fn io_error() -> io::Error {
    io::Error::other("disk on fire")
}

fn db() -> MetadataError {
    MetadataError::Db(redb::Error::DatabaseAlreadyOpen)
}

fn reqwest_error() -> reqwest::Error {
    reqwest::Client::new().get("not a url").build().unwrap_err()
}

fn bad_ns() -> MetadataError {
    MetadataError::InvalidNamespace("A".into())
}

fn metadata_cases() -> Vec<(MetadataError, Code)> {
    vec![
        (bad_ns(), Code::InvalidArgument),
        (
            MetadataError::Open {
                path: PathBuf::from("/m"),
                source: redb::Error::DatabaseAlreadyOpen,
            },
            Code::Internal,
        ),
        (db(), Code::Internal),
        (
            MetadataError::Corrupt {
                table: "images",
                key: "a/b".into(),
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            },
            Code::Internal,
        ),
    ]
}

fn content_cases() -> Vec<(ContentError, Code)> {
    vec![
        (
            ContentError::InvalidDigest("x".into()),
            Code::InvalidArgument,
        ),
        (ContentError::NotFound("sha256:1".into()), Code::NotFound),
        (
            ContentError::AlreadyExists("sha256:1".into()),
            Code::AlreadyExists,
        ),
        (ContentError::Locked("r".into()), Code::FailedPrecondition),
        (
            ContentError::SizeMismatch {
                reference: "r".into(),
                expected: 2,
                actual: 1,
            },
            Code::DataLoss,
        ),
        (
            ContentError::DigestMismatch {
                reference: "r".into(),
                expected: "sha256:1".into(),
                actual: "sha256:2".into(),
            },
            Code::DataLoss,
        ),
        (
            ContentError::Io {
                action: "read",
                path: PathBuf::from("/b"),
                source: io_error(),
            },
            Code::Internal,
        ),
    ]
}

fn snapshot_cases() -> Vec<(SnapshotError, Code)> {
    vec![
        (SnapshotError::NotFound("k".into()), Code::NotFound),
        (
            SnapshotError::AlreadyExists("k".into()),
            Code::AlreadyExists,
        ),
        (
            SnapshotError::ParentNotCommitted("p".into()),
            Code::FailedPrecondition,
        ),
        (
            SnapshotError::NotActive("k".into()),
            Code::FailedPrecondition,
        ),
        (
            SnapshotError::HasChildren {
                key: "k".into(),
                child: "c".into(),
            },
            Code::FailedPrecondition,
        ),
        (SnapshotError::InvalidKey("".into()), Code::InvalidArgument),
        (SnapshotError::Metadata(bad_ns()), Code::InvalidArgument),
        (SnapshotError::Metadata(db()), Code::Internal),
        (
            SnapshotError::Io {
                action: "create",
                path: PathBuf::from("/s"),
                source: io_error(),
            },
            Code::Internal,
        ),
    ]
}

fn rootfs_cases() -> Vec<(RootfsError, Code)> {
    let mut cases: Vec<(RootfsError, Code)> = snapshot_cases()
        .into_iter()
        .map(|(e, c)| (e.into(), c))
        .collect();
    cases.extend(metadata_cases().into_iter().map(|(e, c)| (e.into(), c)));
    cases.extend([
        (
            RootfsError::InvalidPath(PathBuf::from("etc")),
            Code::InvalidArgument,
        ),
        (
            RootfsError::NoTarget(PathBuf::from("/etc/mtab")),
            Code::InvalidArgument,
        ),
        (
            RootfsError::User(ContainerError::InvalidUser(":".into())),
            Code::InvalidArgument,
        ),
        (
            RootfsError::User(ContainerError::UserNotFound {
                what: "user",
                name: "web".into(),
                file: "/etc/passwd",
            }),
            Code::InvalidArgument,
        ),
        (
            RootfsError::Archive {
                key: "c1".into(),
                source: ArchiveError::WriteLayer { source: io_error() },
            },
            Code::Internal,
        ),
        (
            RootfsError::MountPoint {
                path: PathBuf::from("/v/1"),
                source: io_error(),
            },
            Code::Internal,
        ),
        (
            RootfsError::Mount {
                key: "c1".into(),
                target: PathBuf::from("/v/1"),
                source: nix::errno::Errno::EINVAL,
            },
            Code::Internal,
        ),
    ]);
    cases
}

fn registry_cases() -> Vec<(RegistryError, Code)> {
    let url = || "https://r/v2/".to_string();
    vec![
        (
            RegistryError::Reference(ReferenceError::Empty),
            Code::InvalidArgument,
        ),
        (
            RegistryError::InvalidDigest("x".into()),
            Code::InvalidArgument,
        ),
        (
            RegistryError::NotFound {
                what: "manifest",
                reference: "r/x:1".into(),
            },
            Code::NotFound,
        ),
        (
            RegistryError::Unauthorized {
                registry: "r".into(),
                repository: "x".into(),
                had_credentials: false,
            },
            Code::Unauthenticated,
        ),
        (
            RegistryError::DigestMismatch {
                expected: "sha256:1".into(),
                actual: "sha256:2".into(),
            },
            Code::DataLoss,
        ),
        (
            RegistryError::TooLarge {
                what: "manifest",
                url: url(),
                limit: 1,
            },
            Code::FailedPrecondition,
        ),
        (
            RegistryError::Status {
                status: 500,
                url: url(),
                message: "down".into(),
            },
            Code::Unavailable,
        ),
        (
            RegistryError::InvalidResponse {
                url: url(),
                reason: "garbled".into(),
            },
            Code::FailedPrecondition,
        ),
        (
            RegistryError::Transport {
                url: url(),
                source: reqwest_error(),
            },
            Code::Unavailable,
        ),
        (
            RegistryError::Stalled {
                url: url(),
                seconds: 30,
            },
            Code::Unavailable,
        ),
        (
            RegistryError::InsecureRefused { host: "h".into() },
            Code::PermissionDenied,
        ),
        (
            RegistryError::ReadConfig {
                path: PathBuf::from("/c"),
                source: io_error(),
            },
            Code::Internal,
        ),
        (
            RegistryError::InvalidConfig {
                path: PathBuf::from("/c"),
                reason: "bad".into(),
            },
            Code::Internal,
        ),
        (
            RegistryError::BlobFileSize {
                digest: "sha256:1".into(),
                expected: 2,
                actual: 1,
            },
            Code::Internal,
        ),
        (
            RegistryError::ReadBlobFile {
                digest: "sha256:1".into(),
                source: io_error(),
            },
            Code::Internal,
        ),
        (RegistryError::BuildClient(reqwest_error()), Code::Internal),
    ]
}

fn image_cases() -> Vec<(ImageError, Code)> {
    let mut cases = vec![
        (
            ImageError::Reference(ReferenceError::Empty),
            Code::InvalidArgument,
        ),
        (
            ImageError::InvalidPlatform("x".into()),
            Code::InvalidArgument,
        ),
        (
            ImageError::NoMatchingPlatform {
                reference: "r".into(),
                platform: "linux/s390x".into(),
                available: "linux/amd64".into(),
            },
            Code::NotFound,
        ),
        (ImageError::NotFound("x".into()), Code::NotFound),
        (
            ImageError::Unpack {
                digest: "sha256:1".into(),
                source: ArchiveError::Truncated,
            },
            Code::FailedPrecondition,
        ),
        (
            ImageError::DiffIdMismatch {
                digest: "sha256:1".into(),
                expected: "sha256:2".into(),
                actual: "sha256:3".into(),
            },
            Code::DataLoss,
        ),
        (
            ImageError::BadDocument {
                what: "manifest",
                digest: "sha256:1".into(),
                reason: "not json".into(),
            },
            Code::FailedPrecondition,
        ),
        (
            ImageError::TooLarge {
                what: "manifest",
                digest: "sha256:1".into(),
                size: 2,
                max: 1,
            },
            Code::FailedPrecondition,
        ),
        (
            ImageError::UnsupportedLayer {
                digest: "sha256:1".into(),
                media_type: "x".into(),
            },
            Code::FailedPrecondition,
        ),
        (
            ImageError::Io {
                action: "read",
                path: PathBuf::from("/i"),
                source: io_error(),
            },
            Code::Internal,
        ),
        (ImageError::Archive("bad".into()), Code::FailedPrecondition),
        (ImageError::Internal("bug".into()), Code::Internal),
    ];
    cases.extend(registry_cases().into_iter().map(|(e, c)| (e.into(), c)));
    cases.extend(content_cases().into_iter().map(|(e, c)| (e.into(), c)));
    cases.extend(metadata_cases().into_iter().map(|(e, c)| (e.into(), c)));
    cases.extend(snapshot_cases().into_iter().map(|(e, c)| (e.into(), c)));
    cases
}

fn container_cases() -> Vec<(ContainerError, Code)> {
    let mut cases = vec![
        (ContainerError::InvalidId("".into()), Code::InvalidArgument),
        (
            ContainerError::AlreadyExists("c".into()),
            Code::AlreadyExists,
        ),
        (ContainerError::NotFound("c".into()), Code::NotFound),
        (
            ContainerError::InvalidOverride {
                what: "env",
                reason: "no '='".into(),
            },
            Code::InvalidArgument,
        ),
        (
            ContainerError::InvalidUser("a:b:c".into()),
            Code::InvalidArgument,
        ),
        (
            ContainerError::UserNotFound {
                what: "user",
                name: "bob".into(),
                file: "/etc/passwd",
            },
            Code::InvalidArgument,
        ),
        (
            ContainerError::InvalidSpec("x".into()),
            Code::InvalidArgument,
        ),
        (
            ContainerError::NoLayers { image: "i".into() },
            Code::FailedPrecondition,
        ),
        (
            ContainerError::HasTask("c".into()),
            Code::FailedPrecondition,
        ),
    ];
    cases.extend(image_cases().into_iter().map(|(e, c)| (e.into(), c)));
    cases
}

fn namespace_cases() -> Vec<(NamespaceError, Code)> {
    vec![
        (NamespaceError::NotFound("a".into()), Code::NotFound),
        (
            NamespaceError::AlreadyExists("a".into()),
            Code::AlreadyExists,
        ),
        (
            NamespaceError::NotEmpty("a".into()),
            Code::FailedPrecondition,
        ),
        (NamespaceError::Metadata(bad_ns()), Code::InvalidArgument),
        (NamespaceError::Metadata(db()), Code::Internal),
    ]
}

fn lease_cases() -> Vec<(LeaseError, Code)> {
    vec![
        (LeaseError::NotFound("l".into()), Code::NotFound),
        (LeaseError::AlreadyExists("l".into()), Code::AlreadyExists),
        (LeaseError::InvalidId("".into()), Code::InvalidArgument),
        (
            LeaseError::UnknownResourceType("blobs".into()),
            Code::InvalidArgument,
        ),
        (
            LeaseError::InvalidDigest(ContentError::InvalidDigest("x".into())),
            Code::InvalidArgument,
        ),
        (LeaseError::Metadata(bad_ns()), Code::InvalidArgument),
        (LeaseError::Metadata(db()), Code::Internal),
    ]
}

fn gc_cases() -> Vec<(GcError, Code)> {
    vec![
        (
            GcError::Image(ImageError::NotFound("i".into())),
            Code::NotFound,
        ),
        (GcError::Metadata(db()), Code::Internal),
        (
            GcError::Content(ContentError::NotFound("sha256:1".into())),
            Code::NotFound,
        ),
        (
            GcError::Snapshot(SnapshotError::NotFound("k".into())),
            Code::NotFound,
        ),
        (GcError::Stopped("panicked".into()), Code::Internal),
    ]
}

fn blob_cases() -> Vec<(BlobError, Code)> {
    let mut cases = vec![
        (BlobError::NotHeld("sha256:1".into()), Code::NotFound),
        (BlobError::MissingRef, Code::InvalidArgument),
        (
            BlobError::OtherRef {
                got: "a".into(),
                want: "b".into(),
            },
            Code::InvalidArgument,
        ),
        (
            BlobError::Offset {
                offset: 5,
                reference: "r".into(),
                held: 3,
            },
            Code::InvalidArgument,
        ),
        (BlobError::Read(io_error()), Code::Internal),
        (BlobError::Metadata(bad_ns()), Code::InvalidArgument),
        (BlobError::Hold(ImageError::Metadata(db())), Code::Internal),
    ];
    cases.extend(content_cases().into_iter().map(|(e, c)| (e.into(), c)));
    cases.extend(gc_cases().into_iter().map(|(e, c)| (BlobError::Gc(e), c)));
    cases
}

fn event_cases() -> Vec<(EventError, Code)> {
    vec![
        (EventError::InvalidTopic("x".into()), Code::InvalidArgument),
        (EventError::TooManyAttributes(65), Code::InvalidArgument),
        (EventError::Lagged { last: 3 }, Code::ResourceExhausted),
        (EventError::Stopping { last: 3 }, Code::Unavailable),
        (EventError::Metadata(bad_ns()), Code::InvalidArgument),
        (EventError::Metadata(db()), Code::Internal),
    ]
}

/// Checks each case's code, and that the status carries the error's
/// message unchanged.
fn check<E: std::fmt::Display>(cases: Vec<(E, Code)>, to_status: impl Fn(E) -> Status) {
    assert!(!cases.is_empty());
    for (e, code) in cases {
        let msg = e.to_string();
        let s = to_status(e);
        assert_eq!(s.code(), code, "{msg}");
        assert_eq!(s.message(), msg);
    }
}

#[test]
fn every_variant_has_its_code() {
    check(metadata_cases(), Status::from);
    check(content_cases(), Status::from);
    check(snapshot_cases(), Status::from);
    check(rootfs_cases(), Status::from);
    check(registry_cases(), |e| status(e.into()));
    check(image_cases(), status);
    check(image_cases(), Status::from);
    check(container_cases(), container_status);
    check(container_cases(), Status::from);
    check(namespace_cases(), Status::from);
    check(lease_cases(), Status::from);
    check(gc_cases(), Status::from);
    check(blob_cases(), Status::from);
    check(event_cases(), Status::from);
}

#[test]
fn messages_the_clients_see_are_kept() {
    let cases: Vec<(Status, Code, &str)> = vec![
        (
            NamespaceError::NotEmpty("a".into()).into(),
            Code::FailedPrecondition,
            "namespace \"a\" is not empty: it holds images, content, snapshots or leases",
        ),
        (
            LeaseError::NotFound("l".into()).into(),
            Code::NotFound,
            "lease \"l\" not found",
        ),
        (
            LeaseError::UnknownResourceType("blobs".into()).into(),
            Code::InvalidArgument,
            "unknown resource type \"blobs\": want \"content\" or \"snapshots\"",
        ),
        (
            BlobError::NotHeld("sha256:1".into()).into(),
            Code::NotFound,
            "content sha256:1 not found",
        ),
        (
            EventError::Lagged { last: 7 }.into(),
            Code::ResourceExhausted,
            "the subscriber fell behind after sequence 7; subscribe again with after_sequence 7",
        ),
        (
            missing_namespace(),
            Code::FailedPrecondition,
            "namespace required: set the berth-namespace metadata",
        ),
        (
            container_status(ContainerError::HasTask("c".into())),
            Code::FailedPrecondition,
            "container \"c\" has a task: kill and delete the task first",
        ),
        (
            BlobError::Read(io::Error::other("eio")).into(),
            Code::Internal,
            "read blob: eio",
        ),
        (invalid("x"), Code::InvalidArgument, "x"),
        (
            RootfsError::Snapshot(SnapshotError::NotFound("c1".into())).into(),
            Code::NotFound,
            "snapshot \"c1\" not found",
        ),
    ];
    for (s, code, msg) in cases {
        assert_eq!((s.code(), s.message()), (code, msg));
    }
}

#[test]
fn task_errors_map_by_variant_and_shim_refusals_by_kind() {
    let cases = [
        (TaskError::NotFound("c1".into()), Code::NotFound),
        (TaskError::AlreadyExists("c1".into()), Code::AlreadyExists),
        (
            TaskError::WrongState {
                id: "c1".into(),
                status: "running",
                why: "stop it first",
            },
            Code::FailedPrecondition,
        ),
        (
            TaskError::Invalid {
                what: "exec id",
                reason: "empty".into(),
            },
            Code::InvalidArgument,
        ),
        (
            TaskError::RuntimeNotFound {
                name: "nope".into(),
            },
            Code::InvalidArgument,
        ),
        (
            TaskError::Container(ContainerError::NotFound("c1".into())),
            Code::NotFound,
        ),
        (
            TaskError::Bundle(BundleError::InvalidSpec("no process".into())),
            Code::InvalidArgument,
        ),
        (TaskError::Bundle(BundleError::Mounts(2)), Code::Internal),
        (
            TaskError::ShimStart {
                id: "c1".into(),
                reason: "exec failed".into(),
            },
            Code::Internal,
        ),
    ];
    for (e, code) in cases {
        let msg = e.to_string();
        let status = task_status(e);
        assert_eq!(status.code(), code, "{msg}");
        assert_eq!(status.message(), msg);
    }
    let kinds = [
        (ErrorKind::NotFound, Code::NotFound),
        (ErrorKind::AlreadyExists, Code::AlreadyExists),
        (ErrorKind::InvalidArgument, Code::InvalidArgument),
        (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
        (ErrorKind::Internal, Code::Internal),
    ];
    for (kind, code) in kinds {
        // The message plays no part: one that reads like another kind
        // maps by the kind.
        let status = task_status(TaskError::Refused {
            id: "c1".into(),
            kind,
            message: "no such exec process \"e1\" already exists".into(),
        });
        assert_eq!(status.code(), code, "{kind:?}");
        assert!(status.message().contains("c1"), "{}", status.message());
    }
}
