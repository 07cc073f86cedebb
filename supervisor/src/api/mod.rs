//! The gRPC services, one file each: each handler decodes a request, calls
//! the domain (`images`, `blobs`, `namespaces`, `leases`, `snapshots`,
//! `containers`, `tasks`, `events`, `gc`), and encodes the answer. Domain
//! errors become status codes in `error`, by variant, and nowhere else
//! (shim refusals by the kind the shim gave them).
//!
//! Here: the `Service` every gRPC service is implemented on, and what the
//! services share (the namespace and lease of a call, timestamps,
//! descriptors, running blocking work).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use berth_proto::types::v1 as types_pb;
use futures_util::Stream;
use tonic::{Request, Status};

use crate::events::Exchange;
use crate::images::Images;
use crate::metadata::validate_namespace;
use crate::oci::Descriptor;

mod containers;
mod content;
mod error;
mod events;
mod images;
mod leases;
mod namespaces;
mod snapshots;
mod tasks;
mod version;

pub use error::{container_status, status, task_status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Clone)]
pub struct Service {
    pub images: Arc<Images>,
    pub events: Arc<Exchange>,
    pub tasks: Arc<crate::tasks::Tasks>,
}

/// The namespace a call is scoped to (gRPC metadata `berth-namespace`).
fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let ns = req
        .metadata()
        .get(berth_proto::NAMESPACE_KEY)
        .ok_or_else(error::missing_namespace)?
        .to_str()
        .map_err(|_| error::invalid("namespace is not ASCII"))?
        .to_string();
    validate_namespace(&ns)?;
    Ok(ns)
}

/// The lease a call adds what it creates to, if it names one that exists.
fn lease<T>(req: &Request<T>, images: &Images, ns: &str) -> Result<Option<String>, Status> {
    let Some(v) = req.metadata().get(berth_proto::LEASE_KEY) else {
        return Ok(None);
    };
    let id = v
        .to_str()
        .map_err(|_| error::invalid("lease id is not ASCII"))?;
    crate::leases::check_exists(&images.meta, ns, id)?;
    Ok(Some(id.to_string()))
}

fn timestamp(nanos: u64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

/// A point in time as a timestamp (one before 1970 as 1970).
fn timestamp_at(t: std::time::SystemTime) -> Option<prost_types::Timestamp> {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    timestamp(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn descriptor_pb(d: &Descriptor) -> types_pb::Descriptor {
    types_pb::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

fn labels(map: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

/// Runs blocking domain work off the async threads.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Status>
where
    T: Send + 'static,
    E: Send + 'static,
    Status: From<E>,
{
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(error::stopped)??)
}
