//! The host's firewall for berth's networks: IPv4 rules written with
//! `iptables-restore --noflush`, one batch per operation, only in chains of
//! our own (`BERTH-*`) and one jump into each from a built-in chain, added
//! when missing. Nothing else in the ruleset is read back or changed.
//!
//! The firewall keeps what should exist (the networks and the published
//! ports) and writes our chains whole from it each time: a chain declared in
//! a batch is flushed and refilled in the same transaction, so a rule is
//! never doubled and never left behind, and [`Firewall::reconcile`] after a
//! crash is the same operation. With no network left, the chains and the
//! jumps go too and the ruleset is as it was before berth.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use super::ports::PortMapping;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Tool { tool: String, stderr: String },
    #[error("set {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// The bridge device, `berth0` or `br-<id>`.
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// No route out: what leaves the bridge for elsewhere is dropped.
    pub internal: bool,
    /// Containers on the bridge may talk to each other
    /// (`com.docker.network.bridge.enable_icc`, true by default).
    pub icc: bool,
    /// Outbound masquerade of the subnet
    /// (`com.docker.network.bridge.enable_ip_masquerade`, true by default).
    pub masquerade: bool,
}

/// The published ports of one container on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// The container's id.
    pub container: String,
    pub container_ip: Ipv4Addr,
    /// The bridge the container's address is on.
    pub bridge: String,
    pub mappings: Vec<PortMapping>,
}

/// berth's rules on the host, through `iptables`/`iptables-restore`, or
/// nothing at all when disabled (dockerd's `--iptables=false`).
pub struct Firewall {
    iptables: PathBuf,
    restore: PathBuf,
    enabled: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetworkRules>,
    ports: BTreeMap<(String, String), PortRules>,
}

impl Firewall {
    /// `iptables` is the path of the `iptables` tool; `iptables-restore` is
    /// looked for next to it.
    pub fn new(iptables: impl Into<PathBuf>, enabled: bool) -> Self {
        let iptables = iptables.into();
        let restore = iptables.with_file_name("iptables-restore");
        Self {
            iptables,
            restore,
            enabled,
            state: Mutex::new(State::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Adds a network's rules: masquerade, forwarding, isolation from the
    /// other bridges (or no way out at all when internal). Setting it up
    /// again with the same rules changes nothing.
    pub async fn setup_network(&self, net: &NetworkRules) -> Result<(), FirewallError> {
        let mut state = self.state.lock().await;
        state.networks.insert(net.bridge.clone(), net.clone());
        self.apply(&state).await
    }

    /// Removes a network's rules and the ports published on its bridge.
    pub async fn teardown_network(&self, net: &NetworkRules) -> Result<(), FirewallError> {
        let mut state = self.state.lock().await;
        state.networks.remove(&net.bridge);
        state.ports.retain(|(_, bridge), _| bridge != &net.bridge);
        self.apply(&state).await
    }

    /// Publishes a container's ports: DNAT from the host (the network and
    /// loopback, `route_localnet` on the bridge) and the accept for them.
    pub async fn add_ports(&self, ports: &PortRules) -> Result<(), FirewallError> {
        let mut state = self.state.lock().await;
        state.ports.insert(
            (ports.container.clone(), ports.bridge.clone()),
            ports.clone(),
        );
        self.apply(&state).await
    }

    /// Withdraws what [`Firewall::add_ports`] added for this container on
    /// this bridge.
    pub async fn remove_ports(&self, ports: &PortRules) -> Result<(), FirewallError> {
        let mut state = self.state.lock().await;
        state
            .ports
            .remove(&(ports.container.clone(), ports.bridge.clone()));
        self.apply(&state).await
    }

    /// Makes our chains say exactly this (after a restart or a crash).
    pub async fn reconcile(
        &self,
        networks: &[NetworkRules],
        ports: &[PortRules],
    ) -> Result<(), FirewallError> {
        let mut state = self.state.lock().await;
        state.networks = networks
            .iter()
            .map(|n| (n.bridge.clone(), n.clone()))
            .collect();
        state.ports = ports
            .iter()
            .map(|p| ((p.container.clone(), p.bridge.clone()), p.clone()))
            .collect();
        self.apply(&state).await
    }

    async fn apply(&self, state: &State) -> Result<(), FirewallError> {
        if !self.enabled {
            return Ok(());
        }
        let _ = (&self.iptables, &self.restore, state, IpAddr::from([0u8; 4]));
        Err(FirewallError::Tool {
            tool: "iptables-restore".into(),
            stderr: "not yet written".into(),
        })
    }
}
