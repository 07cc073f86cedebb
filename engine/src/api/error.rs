//! The one place a failure becomes Docker's status code and body,
//! `{"message": "..."}`: each domain error by its variant.

use hyper::StatusCode;

use crate::archive::ArchiveError;
use crate::backend::BackendError;
use crate::build::context::ContextError;
use crate::build::pipeline::BuildError;
use crate::containers::spec::SpecError;
use crate::containers::ContainerError;
use crate::exec::ExecError;
use crate::images::ImageError;
use crate::network::ports::PortError;
use crate::network::NetworkError;
use crate::volumes::VolumeError;

/// A request that failed, with Docker's status for it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotModified(String),
    #[error("{0}")]
    Unauthorized(String),

    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Internal(String),
    /// A swarm-mode call on a node that is not in a swarm (berthd never is).
    #[error("{0}")]
    Unavailable(String),
    #[error("page not found")]
    NoRoute,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotModified(_) => StatusCode::NOT_MODIFIED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The supervisor's answer, by its code.
fn backend(message: String, e: &BackendError) -> ApiError {
    match e {
        BackendError::NotFound(_) => ApiError::NotFound(message),
        BackendError::AlreadyExists(_) | BackendError::FailedPrecondition(_) => {
            ApiError::Conflict(message)
        }
        BackendError::InvalidArgument(_) => ApiError::BadRequest(message),
        BackendError::Unauthorized(_) => ApiError::Unauthorized(message),
        BackendError::Unavailable(_) | BackendError::Internal(_) => ApiError::Internal(message),
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let message = e.to_string();
        match e {
            ImageError::NotFound(_)
            | ImageError::NoLocalTag(_)
            | ImageError::NoPlatform { .. }
            | ImageError::PullAccessDenied { .. }
            | ImageError::ManifestUnknown { .. } => ApiError::NotFound(message),
            ImageError::InvalidReference(_)
            | ImageError::InvalidArgument(_)
            | ImageError::ReadBody(_)
            | ImageError::Archive(_) => ApiError::BadRequest(message),
            ImageError::Conflict(_) => ApiError::Conflict(message),
            ImageError::Unauthorized(_) => ApiError::Unauthorized(message),
            ImageError::InvalidDocument { .. } => ApiError::Internal(message),
            ImageError::Backend(b) => backend(message, &b),
        }
    }
}

impl From<BuildError> for ApiError {
    fn from(e: BuildError) -> Self {
        let message = e.to_string();
        match e {
            BuildError::NoDockerfile(_)
            | BuildError::Parse(_)
            | BuildError::Expand { .. }
            | BuildError::Config(_)
            | BuildError::Unsupported(_)
            | BuildError::Platform(_)
            | BuildError::WrongPlatform { .. }
            | BuildError::BadTag(_)
            | BuildError::Source { .. }
            | BuildError::Write(_)
            | BuildError::Checksum { .. } => ApiError::BadRequest(message),
            BuildError::Fetch { .. } => ApiError::Internal(message),
            BuildError::Context(ContextError::Write { .. }) => ApiError::Internal(message),
            BuildError::Context(_) => ApiError::BadRequest(message),
            BuildError::Image(e) => e.into(),
            BuildError::Backend(b) => backend(message, &b),
            BuildError::RunFailed { .. } | BuildError::Gone | BuildError::Cancelled => {
                ApiError::Internal(message)
            }
            BuildError::RunContainer(e) => (*e).into(),
            BuildError::RunNetwork(e) => e.into(),
        }
    }
}

impl From<crate::build::commit::CommitError> for ApiError {
    fn from(e: crate::build::commit::CommitError) -> Self {
        use crate::build::commit::CommitError;
        match e {
            CommitError::Container(e) => e.into(),
            CommitError::Image(e) => e.into(),
            CommitError::Build(e) => e.into(),
            CommitError::Backend(b) => backend(format!("commit: {b}"), &b),
        }
    }
}

impl From<ContainerError> for ApiError {
    fn from(e: ContainerError) -> Self {
        let message = e.to_string();
        match e {
            ContainerError::NotFound(_) => ApiError::NotFound(message),
            ContainerError::Ambiguous(_)
            | ContainerError::InvalidName(_)
            | ContainerError::InvalidConfig(_)
            | ContainerError::InvalidSignal(_) => ApiError::BadRequest(message),
            ContainerError::NameInUse { .. }
            | ContainerError::NotRunning(_)
            | ContainerError::Paused(_)
            | ContainerError::NotPaused(_)
            | ContainerError::RemoveRunning(_)
            | ContainerError::RemovalInProgress(_) => ApiError::Conflict(message),
            ContainerError::AlreadyRunning(_) | ContainerError::AlreadyStopped(_) => {
                ApiError::NotModified(message)
            }
            ContainerError::LogsUnsupported => ApiError::NotImplemented(message),
            ContainerError::Image(e) => e.into(),
            ContainerError::Spec(e) => match e {
                SpecError::PeerNotRunning { .. } => ApiError::Conflict(message),
                _ => ApiError::BadRequest(message),
            },
            ContainerError::StartFailed { source, .. } | ContainerError::Backend { source, .. } => {
                match source {
                    // A task the runtime refused to make is the request's fault.
                    BackendError::InvalidArgument(_) | BackendError::FailedPrecondition(_) => {
                        ApiError::BadRequest(message)
                    }
                    ref other => backend(message, other),
                }
            }
            ContainerError::Volume(e) => e.into(),
            ContainerError::State(_) | ContainerError::Io { .. } => ApiError::Internal(message),
            ContainerError::Network(e) => (*e).into(),
        }
    }
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> Self {
        let message = e.to_string();
        match e {
            NetworkError::NotFound(_)
            | NetworkError::UnknownDriver(_)
            | NetworkError::LinkTarget(_) => ApiError::NotFound(message),
            NetworkError::Ambiguous(_)
            | NetworkError::InvalidConfig(_)
            | NetworkError::Overlap
            | NetworkError::NoPool
            | NetworkError::NoPool6
            | NetworkError::SharedNamespace
            | NetworkError::PredefinedConnect(_) => ApiError::BadRequest(message),
            NetworkError::NameInUse(_)
            | NetworkError::InUse { .. }
            | NetworkError::AddressInUse(_)
            | NetworkError::NotConnected { .. } => ApiError::Conflict(message),
            NetworkError::Predefined(_) | NetworkError::AlreadyConnected { .. } => {
                ApiError::Forbidden(message)
            }
            NetworkError::Ports(ref p) => match p {
                crate::network::ports::PortError::InvalidSpec(_)
                | crate::network::ports::PortError::InvalidProto(_)
                | crate::network::ports::PortError::InvalidHostIp(_)
                | crate::network::ports::PortError::MismatchedRanges { .. } => {
                    ApiError::BadRequest(message)
                }
                _ => ApiError::Internal(message),
            },
            NetworkError::NoAddress { .. }
            | NetworkError::Firewall(_)
            | NetworkError::Dns(_)
            | NetworkError::NotInitialized
            | NetworkError::LinkNotRunning { .. }
            | NetworkError::LinkSpec(_)
            | NetworkError::Netlink(_)
            | NetworkError::State(_)
            | NetworkError::Io { .. } => ApiError::Internal(message),
        }
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        let message = e.to_string();
        let e = match e {
            VolumeError::Create { source, .. } => *source,
            other => other,
        };
        match e {
            VolumeError::Create { .. } => ApiError::BadRequest(message),
            VolumeError::NotFound(_) | VolumeError::UnknownDriver(_) => ApiError::NotFound(message),
            VolumeError::NameTooShort
            | VolumeError::InvalidName(_)
            | VolumeError::InvalidOption(_)
            | VolumeError::InvalidFilter(_) => ApiError::BadRequest(message),
            VolumeError::InUse { .. } => ApiError::Conflict(message),
            VolumeError::Mount(_) | VolumeError::Io { .. } | VolumeError::State(_) => {
                ApiError::Internal(message)
            }
        }
    }
}

impl From<ArchiveError> for ApiError {
    /// As Debian's dockerd 20.10 answers: 404 for a path that is not
    /// there; every refusal of an extraction (not a directory, read-only,
    /// a bad or climbing archive) is its 500.
    fn from(e: ArchiveError) -> Self {
        let message = e.to_string();
        match e {
            ArchiveError::NotFound { .. } => ApiError::NotFound(message),
            ArchiveError::Backend { source, .. } => backend(message, &source),
            ArchiveError::NotADirectory
            | ArchiveError::ReadOnlyRootfs
            | ArchiveError::ReadOnlyVolume
            | ArchiveError::ReadOnlyFile { .. }
            | ArchiveError::Breakout { .. }
            | ArchiveError::DirNonDir(_)
            | ArchiveError::UnknownEntry { .. }
            | ArchiveError::ReadArchive(_)
            | ArchiveError::Decompress { .. }
            | ArchiveError::Resolve { .. }
            | ArchiveError::Create { .. }
            | ArchiveError::Write { .. }
            | ArchiveError::Mount { .. }
            | ArchiveError::Snapshot(_)
            | ArchiveError::Io { .. } => ApiError::Internal(message),
        }
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        let message = e.to_string();
        match e {
            ExecError::NotFound(_) => ApiError::NotFound(message),
            ExecError::Container(e) => e.into(),
            ExecError::Paused(_)
            | ExecError::Restarting(_)
            | ExecError::AlreadyRunning(_)
            | ExecError::AlreadyRan(_) => ApiError::Conflict(message),
            ExecError::NoCommand | ExecError::InvalidProcess(_) => ApiError::BadRequest(message),
            ExecError::Backend { source, .. } => backend(message, &source),
        }
    }
}

/// Published ports: what was asked is wrong (400), or the host port cannot
/// be had at start (500, as dockerd answers a start that fails).
impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        let message = e.to_string();
        match e {
            PortError::InvalidSpec(_)
            | PortError::InvalidProto(_)
            | PortError::InvalidHostIp(_)
            | PortError::MismatchedRanges { .. } => ApiError::BadRequest(message),
            PortError::AlreadyAllocated { .. }
            | PortError::Bind { .. }
            | PortError::Exhausted { .. } => ApiError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NameError;

    #[test]
    fn statuses() {
        let table = [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::NoRoute, 404),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::NotModified("x".into()), 304),
            (ApiError::NotImplemented("x".into()), 501),
            (ApiError::Internal("x".into()), 500),
            (ApiError::Unauthorized("x".into()), 401),
            (ApiError::Unavailable("x".into()), 503),
        ];
        for (err, code) in table {
            assert_eq!(err.status().as_u16(), code, "{err:?}");
        }
    }

    #[test]
    fn container_errors() {
        let b = |e: BackendError| ContainerError::Backend {
            what: "x".into(),
            source: e,
        };
        let io = std::io::Error::other("x");
        let table: Vec<(ContainerError, u16)> = vec![
            (ContainerError::NotFound("a".into()), 404),
            (ContainerError::Ambiguous("a".into()), 400),
            (
                ContainerError::NameInUse {
                    name: "a".into(),
                    id: "b".into(),
                },
                409,
            ),
            (
                ContainerError::InvalidName(NameError::Invalid("a".into())),
                400,
            ),
            (ContainerError::Image(ImageError::NotFound("a".into())), 404),
            (ContainerError::InvalidConfig("a".into()), 400),
            (ContainerError::Spec(SpecError::MemoryTooLow), 400),
            (
                ContainerError::Spec(SpecError::PeerNotRunning {
                    what: "pid",
                    container: "c".into(),
                }),
                409,
            ),
            (ContainerError::AlreadyRunning("a".into()), 304),
            (ContainerError::AlreadyStopped("a".into()), 304),
            (ContainerError::NotRunning("a".into()), 409),
            (ContainerError::Paused("a".into()), 409),
            (ContainerError::NotPaused("a".into()), 409),
            (ContainerError::RemoveRunning("a".into()), 409),
            (ContainerError::RemovalInProgress("a".into()), 409),
            (ContainerError::InvalidSignal("a".into()), 400),
            (ContainerError::LogsUnsupported, 501),
            (
                ContainerError::StartFailed {
                    id: "a".into(),
                    source: BackendError::Internal("x".into()),
                },
                500,
            ),
            (
                ContainerError::StartFailed {
                    id: "a".into(),
                    source: BackendError::InvalidArgument("x".into()),
                },
                400,
            ),
            (b(BackendError::NotFound("x".into())), 404),
            (b(BackendError::AlreadyExists("x".into())), 409),
            (b(BackendError::Unavailable("x".into())), 500),
            (
                ContainerError::Io {
                    what: "x",
                    path: "/x".into(),
                    source: io,
                },
                500,
            ),
        ];
        for (err, code) in table {
            let text = err.to_string();
            assert_eq!(ApiError::from(err).status().as_u16(), code, "{text}");
        }
    }

    #[test]
    fn exec_and_image_errors() {
        let table: Vec<(ExecError, u16)> = vec![
            (ExecError::NotFound("a".into()), 404),
            (
                ExecError::Container(ContainerError::NotRunning("a".into())),
                409,
            ),
            (ExecError::Paused("a".into()), 409),
            (ExecError::Restarting("a".into()), 409),
            (ExecError::AlreadyRunning("a".into()), 409),
            (ExecError::AlreadyRan("a".into()), 409),
            (ExecError::NoCommand, 400),
            (ExecError::InvalidProcess("a".into()), 400),
            (
                ExecError::Backend {
                    what: "x".into(),
                    source: BackendError::NotFound("x".into()),
                },
                404,
            ),
        ];
        for (err, code) in table {
            let text = err.to_string();
            assert_eq!(ApiError::from(err).status().as_u16(), code, "{text}");
        }
        let table: Vec<(ImageError, u16)> = vec![
            (ImageError::NotFound("a".into()), 404),
            (
                ImageError::NoPlatform {
                    name: "a".into(),
                    platform: "p".into(),
                },
                404,
            ),
            (ImageError::Backend(BackendError::Internal("x".into())), 500),
        ];
        for (err, code) in table {
            let text = err.to_string();
            assert_eq!(ApiError::from(err).status().as_u16(), code, "{text}");
        }
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn image_errors() {
        let reference = berth_client::reference::Reference::parse("A").unwrap_err();
        let table: Vec<(ImageError, u16)> = vec![
            (ImageError::NotFound("x".into()), 404),
            (ImageError::InvalidReference(reference), 400),
            (ImageError::InvalidArgument("x".into()), 400),
            (ImageError::NoLocalTag("x".into()), 404),
            (
                ImageError::NoPlatform {
                    name: "x".into(),
                    platform: "linux/amd64".into(),
                },
                404,
            ),
            (
                ImageError::InvalidDocument {
                    name: "x".into(),
                    what: "config",
                    digest: "d".into(),
                    source: serde_json::from_str::<u8>("x").unwrap_err(),
                },
                500,
            ),
            (ImageError::Conflict("x".into()), 409),
            (
                ImageError::PullAccessDenied {
                    repository: "x".into(),
                    message: "m".into(),
                },
                404,
            ),
            (
                ImageError::ManifestUnknown {
                    reference: "x".into(),
                },
                404,
            ),
            (ImageError::Unauthorized("x".into()), 401),
            (ImageError::ReadBody("x".into()), 400),
            (ImageError::Archive("x".into()), 400),
            (ImageError::Backend(BackendError::NotFound("x".into())), 404),
            (
                ImageError::Backend(BackendError::AlreadyExists("x".into())),
                409,
            ),
            (
                ImageError::Backend(BackendError::FailedPrecondition("x".into())),
                409,
            ),
            (
                ImageError::Backend(BackendError::InvalidArgument("x".into())),
                400,
            ),
            (
                ImageError::Backend(BackendError::Unauthorized("x".into())),
                401,
            ),
            (
                ImageError::Backend(BackendError::Unavailable("x".into())),
                500,
            ),
            (ImageError::Backend(BackendError::Internal("x".into())), 500),
        ];
        for (err, code) in table {
            let text = err.to_string();
            assert_eq!(ApiError::from(err).status().as_u16(), code, "{text}");
        }
    }
}
