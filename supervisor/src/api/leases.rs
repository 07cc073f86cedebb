//! The Leases service: decodes, calls `crate::leases`, encodes; deleting a
//! lease or a resource collects garbage after.

use berth_proto::leases::v1 as pb;
use tonic::{Request, Response, Status};

use super::error::invalid;
use super::{labels, namespace, timestamp, Service};
use crate::gc;
use crate::leases::{self, NewLease};
use crate::metadata::{LeaseRecord, Resource};

fn lease_pb(id: String, r: &LeaseRecord) -> pb::Lease {
    pb::Lease {
        id,
        created_at: timestamp(r.created),
        labels: r.labels.clone().into_iter().collect(),
        expires_at: r.expires.and_then(timestamp),
    }
}

fn resource(r: Option<pb::Resource>) -> Result<Resource, Status> {
    let r = r.ok_or_else(|| invalid("resource missing"))?;
    Ok(leases::resource(&r.r#type, &r.id)?)
}

#[tonic::async_trait]
impl pb::leases_server::Leases for Service {
    async fn create(
        &self,
        req: Request<pb::CreateLeaseRequest>,
    ) -> Result<Response<pb::Lease>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.expire_seconds < 0 {
            return Err(invalid("expire_seconds must not be negative"));
        }
        let new = NewLease {
            id: (!r.id.is_empty()).then_some(r.id),
            labels: labels(r.labels),
            expire_seconds: r.expire_seconds as u64,
        };
        let (id, record) = leases::create(&self.images.meta, &ns, new)?;
        Ok(Response::new(lease_pb(id, &record)))
    }

    async fn delete(&self, req: Request<pb::DeleteLeaseRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        leases::delete(&self.images.meta, &ns, &req.into_inner().id)?;
        gc::collect_now(&self.images).await?;
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let ns = namespace(&req)?;
        let list = leases::list(&self.images.meta, &ns)?;
        Ok(Response::new(pb::ListLeasesResponse {
            leases: list.into_iter().map(|(id, r)| lease_pb(id, &r)).collect(),
        }))
    }

    async fn add_resource(
        &self,
        req: Request<pb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let resource = resource(r.resource)?;
        leases::add_resource(&self.images.meta, &ns, &r.id, resource)?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let resource = resource(r.resource)?;
        leases::delete_resource(&self.images.meta, &ns, &r.id, &resource)?;
        gc::collect_now(&self.images).await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let ns = namespace(&req)?;
        let resources = leases::resources(&self.images.meta, &ns, &req.into_inner().id)?;
        Ok(Response::new(pb::ListResourcesResponse {
            resources: resources
                .into_iter()
                .map(|(kind, id)| pb::Resource { id, r#type: kind })
                .collect(),
        }))
    }
}
