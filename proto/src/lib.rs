//! The supervisor's gRPC API, generated from `proto/berth/<service>/v1/*.proto`,
//! and Kubernetes' CRI v1 (`cri::v1`, package `runtime.v1`) from
//! `proto/k8s/runtime/v1/api.proto`.
//! No logic lives here: the supervisor implements the services, and the
//! engine and `berth-ctr` use the clients.

#![allow(
    clippy::all,
    clippy::allow_attributes_without_reason,
    missing_docs,
    reason = "generated code"
)]

/// The gRPC metadata key that scopes every call to a namespace.
pub const NAMESPACE_KEY: &str = "berth-namespace";
/// The gRPC metadata key that adds what a call creates to a lease.
pub const LEASE_KEY: &str = "berth-lease";

pub mod types {
    pub mod v1 {
        tonic::include_proto!("berth.types.v1");
    }
}
pub mod version {
    pub mod v1 {
        tonic::include_proto!("berth.version.v1");
    }
}
pub mod namespaces {
    pub mod v1 {
        tonic::include_proto!("berth.namespaces.v1");
    }
}
pub mod content {
    pub mod v1 {
        tonic::include_proto!("berth.content.v1");
    }
}
pub mod images {
    pub mod v1 {
        tonic::include_proto!("berth.images.v1");
    }
}
pub mod snapshots {
    pub mod v1 {
        tonic::include_proto!("berth.snapshots.v1");
    }
}
pub mod leases {
    pub mod v1 {
        tonic::include_proto!("berth.leases.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("berth.events.v1");
    }
}
pub mod containers {
    pub mod v1 {
        tonic::include_proto!("berth.containers.v1");
    }
}
pub mod tasks {
    pub mod v1 {
        tonic::include_proto!("berth.tasks.v1");
    }
}
/// The Kubernetes Container Runtime Interface v1 (`runtime.v1`), as kubelet
/// and crictl speak it; the supervisor serves it on a socket of its own.
pub mod cri {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}
