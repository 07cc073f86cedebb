//! CRI containers: a CRI container is a supervisor container (in
//! [`super::NAMESPACE`]) labelled with its pod sandbox, whose task runs
//! the container's process and writes its output in the CRI log format
//! to the path kubelet gives.
//!
//! `spec` builds the OCI runtime spec from the CRI's configs (`mounts`
//! and `security` its parts; on `host` for what it asks of the machine,
//! `seccomp` for profiles).

pub mod host;
pub mod mounts;
pub mod seccomp;
pub mod security;
pub mod spec;
