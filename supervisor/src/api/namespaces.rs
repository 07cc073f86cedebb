//! The Namespaces service: decodes, calls `crate::namespaces`, encodes.

use berth_proto::namespaces::v1 as pb;
use tonic::{Request, Response, Status};

use super::error::invalid;
use super::{labels, Service};
use crate::metadata::NamespaceRecord;
use crate::namespaces;

fn namespace_pb(name: String, r: NamespaceRecord) -> pb::Namespace {
    pb::Namespace {
        name,
        labels: r.labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl pb::namespaces_server::Namespaces for Service {
    async fn get(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let name = req.into_inner().name;
        let r = namespaces::get(&self.images.meta, &name)?;
        Ok(Response::new(namespace_pb(name, r)))
    }

    async fn list(
        &self,
        _: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let list = namespaces::list(&self.images.meta)?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: list.into_iter().map(|(n, r)| namespace_pb(n, r)).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| invalid("namespace missing"))?;
        let record = namespaces::create(&self.images.meta, &ns.name, labels(ns.labels))?;
        Ok(Response::new(namespace_pb(ns.name, record)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| invalid("namespace missing"))?;
        let record = namespaces::update(&self.images.meta, &ns.name, labels(ns.labels))?;
        Ok(Response::new(namespace_pb(ns.name, record)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        namespaces::delete(&self.images.meta, &req.into_inner().name)?;
        Ok(Response::new(()))
    }
}
