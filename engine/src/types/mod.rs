//! The Docker Engine API's data model, as JSON: what clients send in
//! requests and read in responses. The engine's domain keeps these as its
//! own vocabulary (a container's configuration is Docker's `Config` and
//! `HostConfig`), so nothing is translated twice; the HTTP layer only
//! decodes and encodes them.
//!
//! Fields clients read are always serialized, `null` where Docker writes
//! `null`, so a client that indexes into a response never finds a key
//! missing.

pub mod container;
pub mod duration;

pub use container::{
    ContainerConfig, CreateRequest, DeviceMapping, EndpointSettings, HostConfig, LogConfig, Mount,
    NetworkingConfig, RestartPolicy, TmpfsOptions, Ulimit,
};
