//! The CRI RuntimeService: Version, Status and RuntimeConfig answer here;
//! the pod sandbox calls are one line each into `sandbox::service`, the
//! container calls into `container::service`, the streaming ones
//! (ExecSync, Exec, Attach, PortForward) into `streaming::service`, the
//! metrics ones into `metrics`; what
//! is not built yet answers `Unimplemented`, naming the call.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::streaming::service as streaming;
use super::{container, metrics, sandbox, CallStream, Cri, API_VERSION, NAMESPACE, RUNTIME_NAME};

/// The status a call the CRI does not implement yet answers.
fn not_yet(call: &str) -> Status {
    Status::unimplemented(format!("berth's CRI does not implement {call} yet"))
}

/// The runtime's conditions: the runtime is ready; pod networking is
/// ready when a CNI network config can be read (kubelet reports a
/// not-ready node network otherwise).
pub fn conditions(cri: &Cri) -> Vec<cri::RuntimeCondition> {
    let network = sandbox::cni_plugins(cri).load();
    vec![
        cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: network.is_ok(),
            reason: if network.is_ok() {
                String::new()
            } else {
                "NetworkPluginNotReady".into()
            },
            message: match network {
                Ok(_) => String::new(),
                Err(e) => format!("Network plugin returns error: {e}"),
            },
        },
    ]
}

/// What `#[tonic::async_trait]` makes of an `async fn` (it cannot see
/// into macros, so these write its form out).
type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send + 'a>>;

macro_rules! not_yet {
    ($($method:ident($req:ident) -> $resp:ident;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _: Request<cri::$req>,
            ) -> Answer<'async_trait, cri::$resp>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(std::future::ready(Err(not_yet(
                    stringify!($resp).trim_end_matches("Response"),
                ))))
            }
        )*
    };
}

macro_rules! not_yet_stream {
    ($($method:ident($req:ident) -> $stream:ident;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _: Request<cri::$req>,
            ) -> Answer<'async_trait, Self::$stream>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(std::future::ready(Err(not_yet(
                    stringify!($stream).trim_end_matches("Stream"),
                ))))
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    type StreamPodSandboxesStream = CallStream<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = CallStream<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = CallStream<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = CallStream<cri::StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = CallStream<cri::ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = CallStream<cri::StreamPodSandboxMetricsResponse>;

    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            // The version of the kubelet runtime API.
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let mut info = HashMap::new();
        if req.into_inner().verbose {
            let config = serde_json::json!({
                "address": self.config.address,
                "namespace": NAMESPACE,
                "registryConfigDir": self.config.registry_config_dir,
                "imageFilesystem": self.config.snapshots_dir,
                "cgroupDriver": "cgroupfs",
                // Where containers' root filesystems are mounted (critest
                // checks its filesystem for id-mapped mounts).
                "stateDir": self.config.state_dir,
            });
            info.insert("config".to_string(), config.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: conditions(self),
            }),
            info,
            runtime_handlers: runtime_handlers(),
            features: None,
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        sandbox::service::run(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        sandbox::service::stop(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        sandbox::service::remove(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        sandbox::service::status(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        sandbox::service::list(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        sandbox::service::stats(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        sandbox::service::list_stats(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        container::service::create(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        container::service::start(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        container::service::stop(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        container::service::remove(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        container::service::list(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        container::service::status(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        container::service::update_resources(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        container::service::reopen_log(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        container::service::stats(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        container::service::list_stats(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(container::events::stream(self.clone())))
    }

    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        streaming::exec_sync(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        streaming::exec(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        streaming::attach(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        streaming::port_forward(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: metrics::list(self).await?,
        }))
    }

    not_yet! {
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        checkpoint_pod(CheckpointPodRequest) -> CheckpointPodResponse;
        restore_pod(RestorePodRequest) -> RestorePodResponse;
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse;
    }

    not_yet_stream! {
        stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream;
        stream_containers(StreamContainersRequest) -> StreamContainersStream;
        stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream;
        stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream;
        stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> StreamPodSandboxMetricsStream;
    }
}

/// The runtime handlers RunPodSandbox takes ("" is the default one, the
/// others its names) and what they support: user namespaces where the
/// kernel id-maps overlay layers; recursive read-only mounts (the
/// runtime's `rro`, mount_setattr with AT_RECURSIVE).
fn runtime_handlers() -> Vec<cri::RuntimeHandler> {
    let features = cri::RuntimeHandlerFeatures {
        recursive_read_only_mounts: true,
        user_namespaces: super::userns::host_supports(),
    };
    ["", "berth", "runc"]
        .into_iter()
        .map(|name| cri::RuntimeHandler {
            name: name.to_string(),
            features: Some(features),
        })
        .collect()
}
