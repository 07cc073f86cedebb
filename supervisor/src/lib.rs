//! berth-supervisor: the containerd of berth.
//!
//! Built so far: the content store (`content`), where every blob is
//! addressed by its digest and verified before it becomes visible. The gRPC
//! services, images, snapshots, containers and tasks come next (see
//! supervisor/README.md and docs/architecture.md).

pub mod content;
