//! berth-engine: the counterpart of dockerd. `berthd` serves the Docker
//! Engine API on a unix socket and does everything through the supervisor's
//! gRPC API, in the namespace [`NAMESPACE`]; `berth` is its command line.
//!
//! - [`api`]: HTTP only: routing, decoding, encoding, Docker's error bodies,
//!   streams and the connection upgrade of attach and exec.
//! - The domain: [`containers`] (create, start, stop, inspect, logs, ...),
//!   [`images`], [`volumes`], [`network`], [`build`] (Dockerfile builds),
//!   [`exec`], [`events`], [`names`], [`state`] (the engine's redb
//!   database). None of it imports hyper.
//! - [`backend`]: the supervisor behind a trait, over gRPC or in memory.
//! - [`daemon`]: `berthd`'s set-up: paths, the managed supervisor, serving
//!   on [`listeners`] (unix, TCP with [`tls`], systemd's sockets).
//! - [`types`]: the Docker API's data model.

// serde_json's json! of `docker info`'s many fields nests deeply.
#![recursion_limit = "256"]

pub mod api;
pub mod archive;
pub mod backend;
pub mod build;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod daemon_config;
mod engine;
pub mod events;
pub mod exec;
pub mod images;
pub mod listeners;
pub mod metrics;
pub mod names;
pub mod network;
pub mod state;
pub mod system;
pub mod tls;
pub mod types;
pub mod volumes;

pub use engine::Engine;

/// The supervisor namespace that holds the engine's containers and images.
pub const NAMESPACE: &str = "berth";

/// The Docker Engine API version served, and the oldest one accepted.
pub const API_VERSION: &str = "1.51";
pub const MIN_API_VERSION: &str = "1.24";

/// The machine's architecture as Go (and so Docker and OCI) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
