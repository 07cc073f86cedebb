//! The firewall, published ports and the embedded DNS server (`firewall`,
//! `ports`, `dns`) wired into networks and endpoints: a bridge network's
//! rules when it is made and removed, a container's published ports and its
//! DNS server at start and exit, and everything made again for the running
//! containers after a restart of berthd ([`restore`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::dns::{DnsHandle, DnsServer, NameLookup};
use super::firewall::{Firewall, NetworkRules, PortRules};
use super::ports::{PortAllocator, PortMapping, PortRequest, Proto};
use super::{EndpointRecord, NetworkRecord, Registry, Result};
use crate::containers::ContainerRecord;
use crate::Engine;

/// The firewall, the host ports held and the DNS servers running.
pub struct Services {
    pub firewall: Firewall,
    pub ports: PortAllocator,
    dns: Mutex<BTreeMap<String, DnsHandle>>,
}

/// A published port as an endpoint record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

impl Published {
    fn of(m: &PortMapping) -> Published {
        Published {
            host_ip: m.host_ip,
            host_port: m.host_port,
            container_port: m.container_port,
            proto: m.proto.as_str().to_string(),
        }
    }

    pub fn mapping(&self) -> Option<PortMapping> {
        Some(PortMapping {
            host_ip: self.host_ip,
            host_port: self.host_port,
            container_port: self.container_port,
            proto: self.proto.parse::<Proto>().ok()?,
        })
    }
}

/// `iptables` on PATH (or in /usr/sbin).
fn find_iptables() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("iptables"))
        .find(|p| p.is_file())
}

impl Default for Services {
    fn default() -> Services {
        Services::new()
    }
}

impl Services {
    pub fn new() -> Services {
        let firewall = match find_iptables() {
            Some(path) => Firewall::new(path, true),
            None => {
                tracing::warn!("no iptables found: no outbound NAT, isolation or published ports");
                Firewall::new("iptables", false)
            }
        };
        Services {
            firewall,
            ports: PortAllocator::new(),
            dns: Mutex::new(BTreeMap::new()),
        }
    }

    fn dns(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DnsHandle>> {
        self.dns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bridge network's rules.
pub fn rules_of(net: &NetworkRecord) -> Option<NetworkRules> {
    let pool = net.pool()?;
    let off = |key: &str| net.options.get(key).is_some_and(|v| v == "false");
    Some(NetworkRules {
        bridge: net.bridge.clone(),
        subnet: pool.subnet,
        internal: net.internal,
        icc: !off("com.docker.network.bridge.enable_icc"),
        masquerade: !off("com.docker.network.bridge.enable_ip_masquerade"),
    })
}

/// What a container asks to publish (checked at create too).
pub fn port_requests(record: &ContainerRecord) -> Result<Vec<PortRequest>> {
    Ok(super::ports::requests(
        record.config.exposed_ports.as_ref(),
        record.host_config.port_bindings.as_ref(),
        record.host_config.publish_all_ports,
    )?)
}

/// Publishes the container's ports on its first endpoint's address; the
/// mappings are kept in that endpoint's record. All or nothing.
pub async fn publish(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    let nets = &engine.networks;
    let Some(live) = nets.live() else {
        return Ok(());
    };
    let requests = port_requests(record)?;
    let Some(first) = nets.endpoints_of_container(&record.id).into_iter().next() else {
        return Ok(());
    };
    if requests.is_empty() {
        return Ok(());
    }
    let net = nets.get(&first.network)?;
    let mappings = live
        .services
        .ports
        .allocate(&record.id, IpAddr::V4(first.ip), &requests)?;
    let rules = PortRules {
        container: record.id.clone(),
        container_ip: first.ip,
        bridge: net.bridge.clone(),
        mappings: mappings.clone(),
    };
    if let Err(e) = live.services.firewall.add_ports(&rules).await {
        live.services.ports.release(&record.id);
        return Err(e.into());
    }
    let mut kept = first.clone();
    kept.ports = mappings.iter().map(Published::of).collect();
    nets.replace_endpoint(&kept)?;
    Ok(())
}

/// Withdraws a container's published ports (no error when it has none).
pub async fn unpublish(engine: &Engine, ep: &EndpointRecord) {
    let nets = &engine.networks;
    let Some(live) = nets.live() else {
        return;
    };
    if ep.ports.is_empty() {
        return;
    }
    live.services.ports.release(&ep.container);
    let bridge = nets.get(&ep.network).map(|n| n.bridge).unwrap_or_default();
    let rules = PortRules {
        container: ep.container.clone(),
        container_ip: ep.ip,
        bridge,
        mappings: ep.ports.iter().filter_map(Published::mapping).collect(),
    };
    if let Err(e) = live.services.firewall.remove_ports(&rules).await {
        tracing::warn!(container = %ep.container, error = %e, "withdraw published ports");
    }
}

/// The name servers a container's DNS server forwards to: its `--dns`,
/// else berthd's `--dns`, else the host's without loopback ones.
pub fn upstreams(engine: &Engine, record: &ContainerRecord) -> Vec<SocketAddr> {
    let given: Vec<String> = match record.host_config.dns.as_ref().filter(|d| !d.is_empty()) {
        Some(d) => d.clone(),
        None => engine
            .networks
            .live()
            .map(|l| l.options.dns.clone())
            .unwrap_or_default(),
    };
    let servers = if given.is_empty() {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        host.lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .map(|s| s.trim().to_string())
            .collect()
    } else {
        given
    };
    servers
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Whether a container has a DNS server of ours (it is on a user network).
pub fn wants_dns(engine: &Engine, container: &str) -> bool {
    engine
        .networks
        .endpoints_of_container(container)
        .iter()
        .any(|e| engine.networks.get(&e.network).is_ok_and(|n| n.custom()))
}

/// Starts the container's DNS server in its namespace (a no-op when it
/// has one, or is on no user network).
pub async fn start_dns(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    let nets = &engine.networks;
    let Some(live) = nets.live() else {
        return Ok(());
    };
    if !wants_dns(engine, &record.id) || live.services.dns().contains_key(&record.id) {
        return Ok(());
    }
    let netns = live.netns_dir.join(&record.id);
    let lookup = Arc::new(Names {
        reg: nets.reg.clone(),
        container: record.id.clone(),
    });
    let handle = DnsServer::start(&netns, lookup, upstreams(engine, record)).await?;
    live.services.dns().insert(record.id.clone(), handle);
    Ok(())
}

pub fn stop_dns(engine: &Engine, container: &str) {
    if let Some(live) = engine.networks.live() {
        live.services.dns().remove(container);
    }
}

/// After a restart of berthd: the host ports of the running containers
/// held again, the firewall's chains written whole from the networks and
/// those ports, and their DNS servers started.
pub async fn restore(engine: &Engine) {
    let nets = &engine.networks;
    let Some(live) = nets.live() else {
        return;
    };
    let networks: Vec<NetworkRules> = nets.list().iter().filter_map(rules_of).collect();
    let mut port_rules = Vec::new();
    let published: Vec<EndpointRecord> = nets
        .reg()
        .endpoints
        .values()
        .filter(|e| !e.ports.is_empty())
        .cloned()
        .collect();
    for ep in &published {
        let requests: Vec<PortRequest> = ep
            .ports
            .iter()
            .filter_map(Published::mapping)
            .map(|m| PortRequest {
                host_ip: m.host_ip,
                host_ports: Some(m.host_port..=m.host_port),
                container_port: m.container_port,
                proto: m.proto,
            })
            .collect();
        match live
            .services
            .ports
            .allocate(&ep.container, IpAddr::V4(ep.ip), &requests)
        {
            Ok(mappings) => port_rules.push(PortRules {
                container: ep.container.clone(),
                container_ip: ep.ip,
                bridge: nets.get(&ep.network).map(|n| n.bridge).unwrap_or_default(),
                mappings,
            }),
            Err(e) => {
                tracing::warn!(container = %ep.container, error = %e, "hold the published ports again")
            }
        }
    }
    if let Err(e) = live
        .services
        .firewall
        .reconcile(&networks, &port_rules)
        .await
    {
        tracing::warn!(error = %e, "write the firewall's rules");
    }
    for c in engine.containers.all() {
        if c.status().is_running() {
            if let Err(e) = start_dns(engine, &c.record()).await {
                tracing::warn!(container = %c.id, error = %e, "start the DNS server");
            }
        }
    }
}

/// The names a container resolves: on each user network it is on, the
/// DNS names of the endpoints there (name, aliases, short id), `name.net`,
/// and its links' aliases.
struct Names {
    reg: Arc<Mutex<Registry>>,
    container: String,
}

impl NameLookup for Names {
    fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        let name = name.to_ascii_lowercase();
        let mut out: Vec<IpAddr> = Vec::new();
        let mine: Vec<&EndpointRecord> = reg
            .endpoints
            .values()
            .filter(|e| e.container == self.container)
            .collect();
        for own in mine {
            let Some(net) = reg.nets.get(&own.network).filter(|n| n.custom()) else {
                continue;
            };
            let suffix = format!(".{}", net.name.to_ascii_lowercase());
            let bare = name.strip_suffix(&suffix).unwrap_or(&name);
            let mut wanted = vec![bare.to_string()];
            for link in &own.links {
                let (target, alias) = super::files::parse_link(link);
                if alias.eq_ignore_ascii_case(bare) {
                    wanted.push(target.to_ascii_lowercase());
                }
            }
            for ep in reg.endpoints.values().filter(|e| e.network == own.network) {
                let known = ep
                    .dns_names
                    .iter()
                    .any(|n| wanted.iter().any(|w| n.eq_ignore_ascii_case(w)));
                if known && !out.contains(&IpAddr::V4(ep.ip)) {
                    out.push(IpAddr::V4(ep.ip));
                }
            }
        }
        out
    }
}

/// The DNS server's address, for resolv.conf.
pub const DNS_NAMESERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
