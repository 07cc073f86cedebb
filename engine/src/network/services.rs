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
    /// The same rules for the IPv6 subnets and addresses.
    pub firewall6: Firewall,
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

/// `iptables` (or `ip6tables`) on PATH (or in /usr/sbin).
fn find_iptables(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

impl Default for Services {
    fn default() -> Services {
        Services::new()
    }
}

impl Services {
    pub fn new() -> Services {
        let firewall = match find_iptables("iptables") {
            Some(path) => Firewall::new(path, true),
            None => {
                tracing::warn!("no iptables found: no outbound NAT, isolation or published ports");
                Firewall::new("iptables", false)
            }
        };
        let firewall6 = match find_iptables("ip6tables") {
            Some(path) => Firewall::new6(path, true),
            None => Firewall::new6("ip6tables", false),
        };
        Services {
            firewall,
            firewall6,
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
        subnet: pool.subnet.into(),
        internal: net.internal,
        icc: !off("com.docker.network.bridge.enable_icc"),
        masquerade: !off("com.docker.network.bridge.enable_ip_masquerade"),
    })
}

/// A bridge network's IPv6 rules (a network with IPv6).
pub fn rules_of6(net: &NetworkRecord) -> Option<NetworkRules> {
    let pool6 = net.pool6()?;
    let mut rules = rules_of(net)?;
    rules.subnet = pool6.subnet.into();
    Some(rules)
}

/// The port rules of an endpoint's mappings, IPv4 and (when the
/// endpoint has an IPv6 address) IPv6.
fn port_rules(
    ep: &EndpointRecord,
    bridge: &str,
    mappings: &[PortMapping],
) -> (PortRules, Option<PortRules>) {
    let of = |ip: IpAddr| PortRules {
        container: ep.container.clone(),
        container_ip: ip,
        bridge: bridge.to_string(),
        mappings: mappings.to_vec(),
    };
    (of(IpAddr::V4(ep.ip)), ep.ip6.map(|ip| of(IpAddr::V6(ip))))
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
    let (rules, rules6) = port_rules(&first, &net.bridge, &mappings);
    if let Err(e) = live.services.firewall.add_ports(&rules).await {
        live.services.ports.release(&record.id);
        return Err(e.into());
    }
    if let Some(rules6) = rules6 {
        if let Err(e) = live.services.firewall6.add_ports(&rules6).await {
            let _ = live.services.firewall.remove_ports(&rules).await;
            live.services.ports.release(&record.id);
            return Err(e.into());
        }
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
    let mappings: Vec<PortMapping> = ep.ports.iter().filter_map(Published::mapping).collect();
    let (rules, rules6) = port_rules(ep, &bridge, &mappings);
    if let Err(e) = live.services.firewall.remove_ports(&rules).await {
        tracing::warn!(container = %ep.container, error = %e, "withdraw published ports");
    }
    if let Some(rules6) = rules6 {
        if let Err(e) = live.services.firewall6.remove_ports(&rules6).await {
            tracing::warn!(container = %ep.container, error = %e, "withdraw published IPv6 ports");
        }
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
    let networks6: Vec<NetworkRules> = nets.list().iter().filter_map(rules_of6).collect();
    let mut all_rules = Vec::new();
    let mut all_rules6 = Vec::new();
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
            Ok(mappings) => {
                let bridge = nets.get(&ep.network).map(|n| n.bridge).unwrap_or_default();
                let (rules, rules6) = port_rules(ep, &bridge, &mappings);
                all_rules.push(rules);
                all_rules6.extend(rules6);
            }
            Err(e) => {
                tracing::warn!(container = %ep.container, error = %e, "hold the published ports again")
            }
        }
    }
    if let Err(e) = live
        .services
        .firewall
        .reconcile(&networks, &all_rules)
        .await
    {
        tracing::warn!(error = %e, "write the firewall's rules");
    }
    if !networks6.is_empty() || !all_rules6.is_empty() {
        if let Err(e) = live
            .services
            .firewall6
            .reconcile(&networks6, &all_rules6)
            .await
        {
            tracing::warn!(error = %e, "write the IPv6 firewall's rules");
        }
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
                if known {
                    for ip in std::iter::once(IpAddr::V4(ep.ip)).chain(ep.ip6.map(IpAddr::V6)) {
                        if !out.contains(&ip) {
                            out.push(ip);
                        }
                    }
                }
            }
        }
        out
    }
}

/// The DNS server's address, for resolv.conf.
pub const DNS_NAMESERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
