//! berth-supervisor: the containerd of berth.
//!
//! The image half: the content store (`content`), registry access
//! (`registry`), layer archives (`archive`), overlayfs snapshots
//! (`snapshots`), metadata (`metadata`), images (`images`), garbage
//! collection (`gc`), and the gRPC services over them (`api`). Containers
//! (`containers`) are records over an image, a snapshot and a runtime spec;
//! a snapshot read as a root filesystem (changes, export) is `rootfs`;
//! tasks (`tasks`) run them, each in a berth-shim that outlives the daemon.
//! Namespaces (`namespaces`), leases (`leases`), a namespace's blobs and
//! client writes of them (`blobs`) and events (`events`) are domain modules
//! of their own; the services in `api` only decode, call them and encode.
//! Kubernetes' CRI (`cri`) is served beside them, on its own socket.

pub mod api;
pub mod archive;
pub mod blobs;
pub mod containers;
pub mod content;
pub mod cri;
pub mod diff;
pub mod events;
pub mod gc;
pub mod images;
pub mod leases;
pub mod metadata;
pub mod metrics;
pub mod namespaces;
pub mod oci;
pub use berth_client::reference;
pub mod registry;
pub mod rootfs;
pub mod server;
pub mod snapshots;
pub mod sys;
pub mod tasks;
#[cfg(test)]
mod testing;
