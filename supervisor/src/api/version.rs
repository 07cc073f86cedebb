//! The Version service: the supervisor's version and revision.

use berth_proto::version::v1 as pb;
use tonic::{Request, Response, Status};

use super::Service;

#[tonic::async_trait]
impl pb::version_server::Version for Service {
    async fn version(&self, _: Request<()>) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("BERTH_REVISION").unwrap_or("").to_string(),
        }))
    }
}
