//! The container calls of the RuntimeService: decode, call the container
//! domain, encode; errors become gRPC codes by variant, as containerd
//! gives them.

use berth_proto::cri::v1 as cri;
use tonic::{Code, Status};

use super::spec::SpecError;
use super::CtrError;
use crate::containers::ContainerError;
use crate::cri::images::CriImageError;
use crate::cri::Cri;
use crate::tasks::TaskError;

/// The gRPC status of a container error.
pub fn to_status(e: CtrError) -> Status {
    let code = match &e {
        CtrError::SandboxNotFound(_) | CtrError::NotFound(_) | CtrError::ImageNotFound(_) => {
            Code::NotFound
        }
        CtrError::NameReserved { .. } => Code::AlreadyExists,
        CtrError::SandboxNotReady(_) | CtrError::WrongState { .. } => Code::FailedPrecondition,
        CtrError::Invalid { .. } => Code::InvalidArgument,
        CtrError::Spec { source, .. } if matches!(**source, SpecError::Internal(_)) => {
            Code::Internal
        }
        CtrError::Spec { .. } => Code::InvalidArgument,
        CtrError::Image(CriImageError::InvalidReference { .. })
        | CtrError::Image(CriImageError::EmptyReference) => Code::InvalidArgument,
        CtrError::Container(ContainerError::InvalidOverride { .. })
        | CtrError::Container(ContainerError::InvalidSpec(_))
        | CtrError::Container(ContainerError::InvalidUser(_))
        | CtrError::Container(ContainerError::UserNotFound { .. })
        | CtrError::Task(TaskError::Invalid { .. }) => Code::InvalidArgument,
        CtrError::Task(TaskError::WrongState { .. }) => Code::FailedPrecondition,
        CtrError::Image(_)
        | CtrError::Container(_)
        | CtrError::Task(_)
        | CtrError::Store(_)
        | CtrError::Io { .. } => Code::Unknown,
    };
    Status::new(code, e.to_string())
}

pub async fn create(
    cri: &Cri,
    req: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, Status> {
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("container config is missing"))?;
    let pod = req.sandbox_config.unwrap_or_default();
    let container_id = super::create(cri, &req.pod_sandbox_id, config, pod)
        .await
        .map_err(to_status)?;
    Ok(cri::CreateContainerResponse { container_id })
}

pub async fn start(
    cri: &Cri,
    req: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, Status> {
    super::start(cri, &req.container_id)
        .await
        .map_err(to_status)?;
    Ok(cri::StartContainerResponse {})
}

pub async fn stop(
    cri: &Cri,
    req: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse, Status> {
    super::stop(cri, &req.container_id, req.timeout)
        .await
        .map_err(to_status)?;
    Ok(cri::StopContainerResponse {})
}

pub async fn remove(
    cri: &Cri,
    req: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, Status> {
    super::remove(cri, &req.container_id)
        .await
        .map_err(to_status)?;
    Ok(cri::RemoveContainerResponse {})
}

pub async fn list(
    cri: &Cri,
    req: cri::ListContainersRequest,
) -> Result<cri::ListContainersResponse, Status> {
    let containers = super::status::list(cri, req.filter)
        .await
        .map_err(to_status)?;
    Ok(cri::ListContainersResponse { containers })
}

pub async fn status(
    cri: &Cri,
    req: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, Status> {
    let (status, info) = super::status::status(cri, &req.container_id, req.verbose)
        .await
        .map_err(to_status)?;
    Ok(cri::ContainerStatusResponse {
        status: Some(status),
        info,
    })
}

pub async fn update_resources(
    cri: &Cri,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Status> {
    let linux = req.linux.unwrap_or_default();
    super::update_resources(cri, &req.container_id, &linux)
        .await
        .map_err(to_status)?;
    Ok(cri::UpdateContainerResourcesResponse {})
}

pub async fn reopen_log(
    cri: &Cri,
    req: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse, Status> {
    super::reopen_log(cri, &req.container_id)
        .await
        .map_err(to_status)?;
    Ok(cri::ReopenContainerLogResponse {})
}

pub async fn stats(
    cri: &Cri,
    req: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, Status> {
    let stats = super::status::stats(cri, &req.container_id)
        .await
        .map_err(to_status)?;
    Ok(cri::ContainerStatsResponse { stats: Some(stats) })
}

pub async fn list_stats(
    cri: &Cri,
    req: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, Status> {
    let stats = super::status::list_stats(cri, req.filter)
        .await
        .map_err(to_status)?;
    Ok(cri::ListContainerStatsResponse { stats })
}
