//! The Containers service: decodes, calls `crate::containers`, encodes, and
//! publishes `/containers/<create|update|delete>`.

use berth_client::trace;
use std::collections::BTreeMap;
use std::sync::Arc;

use berth_proto::containers::v1 as pb;
use tonic::{Request, Response, Status};

use super::{blocking, container_status, labels, namespace, timestamp, Service};
use crate::containers::{self, ContainerError, ContainerRecord, Filter, NewContainer, Overrides};
use crate::gc;

fn container_pb(id: String, r: ContainerRecord) -> pb::Container {
    pb::Container {
        id,
        image: r.image,
        snapshot_key: r.snapshot_key,
        runtime: r.runtime,
        spec: r.spec.into_bytes(),
        labels: r.labels.into_iter().collect(),
        created_at: timestamp(r.created),
        updated_at: timestamp(r.updated),
    }
}

fn overrides(o: Option<pb::Overrides>) -> Overrides {
    let o = o.unwrap_or_default();
    let some = |s: String| (!s.is_empty()).then_some(s);
    Overrides {
        args: o.args,
        env: o.env,
        cwd: some(o.cwd),
        user: some(o.user),
        terminal: o.terminal,
        hostname: some(o.hostname),
        memory_limit: (o.memory_limit != 0).then_some(o.memory_limit),
    }
}

impl Service {
    fn container_event(&self, ns: &str, what: &str, id: &str, r: &ContainerRecord) {
        let attributes = BTreeMap::from([
            ("id".to_string(), id.to_string()),
            ("image".to_string(), r.image.clone()),
        ]);
        self.events
            .enqueue(ns, &format!("/containers/{what}"), attributes, None);
    }
}

#[tonic::async_trait]
impl pb::containers_server::Containers for Service {
    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&req)?;
        let trace = trace::from_metadata(req.metadata());
        let began = trace.as_ref().map(|_| trace::now_ns());
        let r = req.into_inner();
        let new = NewContainer {
            id: r.id,
            image: r.image,
            snapshot_key: r.snapshot_key,
            labels: labels(r.labels),
            runtime: r.runtime,
            overrides: overrides(r.overrides),
            spec: (!r.spec.is_empty()).then_some(r.spec),
        };
        let id = new.id.clone();
        // Held shared: the collector never runs between the snapshot's
        // prepare and the record that keeps it.
        let _gc = Arc::clone(&self.images.gc_lock).read_owned().await;
        let images = Arc::clone(&self.images);
        let ns2 = ns.clone();
        let record = blocking(move || containers::create(&images, &ns2, new)).await?;
        self.container_event(&ns, "create", &id, &record);
        let mut resp = Response::new(container_pb(id, record));
        if let (Some(trace), Some(began)) = (&trace, began) {
            trace.push(trace::Span {
                layer: trace::Layer::Supervisor,
                name: "Containers/Create (snapshot prepared, record written)".into(),
                start_ns: began,
                end_ns: trace::now_ns(),
            });
            trace::answer(&mut resp, trace);
        }
        Ok(resp)
    }

    async fn get(
        &self,
        req: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        let record = containers::get(&self.images, &ns, &id).map_err(container_status)?;
        Ok(Response::new(container_pb(id, record)))
    }

    async fn list(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let filter = Filter {
            image: r.image,
            labels: Filter::parse_labels(&r.labels).map_err(container_status)?,
        };
        let list = containers::list(&self.images, &ns, &filter).map_err(container_status)?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: list
                .into_iter()
                .map(|(id, r)| container_pb(id, r))
                .collect(),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::Container>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let change = containers::Update {
            set_labels: labels(r.set_labels),
            remove_labels: r.remove_labels,
            spec: (!r.spec.is_empty()).then_some(r.spec),
        };
        let images = Arc::clone(&self.images);
        let (ns2, id) = (ns.clone(), r.id.clone());
        let record = blocking(move || containers::update(&images, &ns2, &id, change)).await?;
        self.container_event(&ns, "update", &r.id, &record);
        Ok(Response::new(container_pb(r.id, record)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        // No task may start while the container goes (held until the
        // delete ends, even if the client goes away).
        let Some(hold) = self.tasks.hold(&ns, &id) else {
            return Err(container_status(ContainerError::HasTask(id)));
        };
        let images = Arc::clone(&self.images);
        let (ns2, id2) = (ns.clone(), id.clone());
        let record = {
            let gc = Arc::clone(&self.images.gc_lock).read_owned().await;
            blocking(move || {
                let _held = (hold, gc);
                containers::delete(&images, &ns2, &id2)
            })
            .await?
        };
        self.container_event(&ns, "delete", &id, &record);
        // What only the container kept: an image's content and layers after
        // `images rm`. While the image is there, it keeps them itself (the
        // container's own snapshot is removed already).
        let image_kept = self
            .images
            .meta
            .read()
            .ok()
            .is_some_and(|rx| crate::images::get_image(&rx, &ns, &record.image).is_ok());
        if !image_kept {
            gc::collect_now(&self.images).await?;
        }
        Ok(Response::new(()))
    }
}
