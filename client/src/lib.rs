//! berth-client: what a program needs to talk to berth's supervisor, and no
//! more (no storage, no registry transport), so that the engine and
//! `berth-ctr` link only what they use.
//!
//! - [`supervisor`]: the gRPC client: a channel over the supervisor's unix
//!   socket, and the generated clients with every call scoped to a namespace
//!   (and optionally a lease).
//! - [`docker_config`]: registry credentials from a docker `config.json`, the
//!   one reader of that file in berth (the supervisor's registry code uses it
//!   too), and Docker Hub's names.
//! - [`reference`]: image references (`[registry/]repository[:tag][@digest]`)
//!   parsed and normalised as Docker does, shared by the supervisor and the
//!   engine.
//! - [`sd_notify`]: systemd's readiness notification, sent by both daemons.

pub mod docker_config;
pub mod reference;
pub mod sd_notify;
pub mod supervisor;
pub mod trace;

pub use docker_config::{
    docker_credentials, registry_host, AuthEntry, Credentials, DockerConfig, DockerConfigError,
};
pub use supervisor::{connect, Client, ClientError, Scope, Scoped};
