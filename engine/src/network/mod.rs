//! The engine's networks: the registry of networks (records in the engine's
//! database), the predefined `bridge`, `host` and `none`, user-defined
//! bridge networks, and each container's endpoints with their addresses
//! (the endpoint records are the IPAM's memory: an address is given out
//! when its record is written and free again when it is deleted, so a
//! crash loses none and gives none twice).
//!
//! - [`ipam`]: pools, subnets, the choice of an address.
//! - `manage`: create, remove and prune networks.
//! - [`netlink`]: namespaces, bridges, veths, addresses and routes.
//! - [`endpoints`]: a container's endpoints at start, exit, connect and
//!   disconnect, and their recovery after a restart of the daemon.
//! - [`files`]: the container's `/etc/hosts` and `/etc/resolv.conf`.
//! - [`links`]: legacy links' environment, and their removal.
//! - [`settings`]: what inspect shows of networks and of a container's.
//! - [`firewall`], [`ports`], [`dns`]: the host's rules, published ports
//!   and the embedded DNS server of containers on user networks.
//!
//! Nothing happens in the kernel until [`Networks::init`] (berthd calls
//! it): an engine without it (the unit tests' one) gives containers a
//! network namespace with loopback only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::events::Kind;
use crate::state::{StateError, Store, Table};

pub mod dns;
pub mod endpoints;
pub mod files;
pub mod firewall;
pub mod ipam;
pub mod links;
mod manage;
pub mod netlink;
pub mod ports;
mod removed;
pub mod services;
pub mod settings;

pub use endpoints::{
    attach, attach_unpublished, check_create, connect, disconnect, disconnect_gone, publish,
    recover, release,
};

/// The default bridge's device unless berthd is told otherwise.
pub const DEFAULT_BRIDGE: &str = "berth0";

/// The option naming a bridge network's device.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// The option giving a bridge network's MTU.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network {0} is ambiguous")]
    Ambiguous(String),
    #[error("network with name {0} already exists")]
    NameInUse(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("invalid pool request: Pool overlaps with other one on this address space")]
    Overlap,
    #[error("plugin \"{0}\" not found")]
    UnknownDriver(String),
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("operation not supported for pre-defined network {0}")]
    PredefinedConnect(String),
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    InUse { name: String, id: String },
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoPool,
    #[error("could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network")]
    NoPool6,
    #[error("no available IPv4 addresses on this network's address pools: {name} ({id})")]
    NoAddress { name: String, id: String },
    #[error("Address already in use")]
    AddressInUse(std::net::IpAddr),
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("container sharing network namespace with another container or host cannot be connected to any other network")]
    SharedNamespace,
    #[error("networking is not set up in this engine")]
    NotInitialized,
    #[error("{0}")]
    LinkTarget(String),
    #[error("Cannot link to a non running container: {target} AS {name}")]
    LinkNotRunning { target: String, name: String },
    #[error("give the container its links' environment: {0}")]
    LinkSpec(String),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Ports(#[from] ports::PortError),
    #[error("driver failed programming external connectivity: {0}")]
    Firewall(#[from] firewall::FirewallError),
    #[error("start the embedded DNS server: {0}")]
    Dns(#[from] dns::DnsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, NetworkError>;

/// A network's driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Host,
    Null,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
        }
    }
}

/// One IPv4 pool of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    #[serde(with = "ipam::net_text")]
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(with = "ipam::opt_net_text")]
    pub ip_range: Option<Ipv4Net>,
    /// `AuxiliaryAddresses`: reserved, never given to a container.
    #[serde(default)]
    pub aux: BTreeMap<String, Ipv4Addr>,
    /// A subnet given without its gateway: dockerd's inspect shows none.
    #[serde(default)]
    pub implicit_gateway: bool,
}

/// One IPv6 pool of a network (with `EnableIPv6`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool6 {
    #[serde(with = "ipam::net_text")]
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
    #[serde(with = "ipam::opt_net_text")]
    pub ip_range: Option<Ipv6Net>,
    #[serde(default)]
    pub implicit_gateway: bool,
}

/// A network as the engine keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    pub created: SystemTime,
    pub internal: bool,
    pub attachable: bool,
    pub enable_ipv6: bool,
    pub ipam_driver: String,
    /// As the client sent them: dockerd shows `null` for none, `{}` for
    /// an empty map (the docker CLI's).
    pub ipam_options: Option<BTreeMap<String, String>>,
    /// The first pool is where containers get their addresses.
    pub pools: Vec<Pool>,
    /// The IPv6 pools; containers get an address of the first when the
    /// network has IPv6 enabled.
    #[serde(default)]
    pub pools6: Vec<Pool6>,
    /// Whether the pools were the client's (inspect shows them either way).
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The bridge device (bridge networks).
    pub bridge: String,
    pub mtu: Option<u32>,
}

impl NetworkRecord {
    /// `bridge`, `host` and `none`.
    pub fn predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }

    /// A bridge network the user made.
    pub fn custom(&self) -> bool {
        !self.predefined()
    }

    pub fn pool(&self) -> Option<&Pool> {
        self.pools.first()
    }

    /// The pool of containers' IPv6 addresses, when IPv6 is on.
    pub fn pool6(&self) -> Option<&Pool6> {
        self.pools6.first().filter(|_| self.enable_ipv6)
    }
}

/// A container's place on a network: its address and its devices.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub container: String,
    /// The container's name when it joined (`disconnect --force` finds
    /// the endpoints of a removed container by it).
    #[serde(default)]
    pub name: String,
    pub network: String,
    /// The interface in the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// The host end of the veth pair.
    pub veth: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// The address the client asked for (`IPAMConfig.IPv4Address`).
    pub requested_ip: Option<Ipv4Addr>,
    /// The IPv6 address, on a network with IPv6, with its prefix and gateway.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    pub aliases: Vec<String>,
    pub links: Vec<String>,
    pub dns_names: Vec<String>,
    /// The container's published ports (on its first endpoint).
    #[serde(default)]
    pub ports: Vec<services::Published>,
}

impl EndpointRecord {
    fn key(&self) -> String {
        endpoint_key(&self.container, &self.network)
    }
}

fn endpoint_key(container: &str, network: &str) -> String {
    format!("{container}/{network}")
}

/// What a container asks of a new endpoint.
pub(crate) struct Wanted {
    pub container: String,
    pub name: String,
    pub requested: Option<Ipv4Addr>,
    pub requested6: Option<Ipv6Addr>,
    pub ifname: String,
    pub aliases: Vec<String>,
    pub links: Vec<String>,
    pub dns_names: Vec<String>,
    pub mac: Option<[u8; 6]>,
}

/// berthd's networking flags.
#[derive(Clone, Debug, Default)]
pub struct NetworkOptions {
    /// The default bridge's device (`--bridge`); default [`DEFAULT_BRIDGE`].
    pub bridge: Option<String>,
    /// The default bridge's address and prefix (`--bip`).
    pub bip: Option<String>,
    /// Name servers for containers (`--dns`).
    pub dns: Vec<String>,
}

/// What exists once [`Networks::init`] ran.
pub struct Live {
    pub netlink: netlink::Netlink,
    /// Where containers' namespaces are bound.
    pub netns_dir: PathBuf,
    pub options: NetworkOptions,
    pub services: services::Services,
}

#[derive(Default)]
struct Registry {
    nets: BTreeMap<String, NetworkRecord>,
    /// By [`endpoint_key`].
    endpoints: BTreeMap<String, EndpointRecord>,
}

/// Every network and endpoint of the engine.
pub struct Networks {
    store: Arc<Store>,
    reg: Arc<Mutex<Registry>>,
    live: OnceLock<Live>,
    /// One change of the kernel's or the registry's networks at a time.
    pub(crate) op: tokio::sync::Mutex<()>,
    /// The deletions of removed networks' bridges still under way (see
    /// [`Networks::settle`]).
    removing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What `POST /networks/create` is given.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: String,
    pub internal: bool,
    pub attachable: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    pub ipam: Option<IpamRequest>,
    pub options: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamRequest {
    pub driver: String,
    pub config: Option<Vec<IpamConfigRequest>>,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfigRequest {
    pub subnet: String,
    pub gateway: String,
    #[serde(rename = "IPRange")]
    pub ip_range: String,
    #[serde(rename = "AuxiliaryAddresses")]
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

fn new_id() -> String {
    crate::names::new_id()
}

impl Networks {
    /// The networks and endpoints recorded in `store`.
    pub fn load(store: Arc<Store>) -> Result<Networks> {
        let mut reg = Registry::default();
        for (id, net) in store.list::<NetworkRecord>(Table::Networks)? {
            reg.nets.insert(id, net);
        }
        for (key, ep) in store.list::<EndpointRecord>(Table::Endpoints)? {
            reg.endpoints.insert(key, ep);
        }
        Ok(Networks {
            store,
            reg: Arc::new(Mutex::new(reg)),
            live: OnceLock::new(),
            op: tokio::sync::Mutex::new(()),
            removing: Mutex::new(Vec::new()),
        })
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding it.
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn live(&self) -> Option<&Live> {
        self.live.get()
    }

    fn must_live(&self) -> Result<&Live> {
        self.live.get().ok_or(NetworkError::NotInitialized)
    }

    /// Where a container's network namespace is bound, when the engine
    /// makes it (networking set up, and a mode with networks).
    pub fn netns_path(&self, container: &str, network_mode: &str) -> Option<PathBuf> {
        let live = self.live.get()?;
        endpoints::own_namespace(network_mode).then(|| live.netns_dir.join(container))
    }

    /// Sets networking up: forwarding, the predefined networks and the
    /// default bridge's device, the bridges of the user's networks.
    pub async fn init(&self, exec_root: &std::path::Path, options: NetworkOptions) -> Result<()> {
        let netns_dir = exec_root.join("netns");
        std::fs::create_dir_all(&netns_dir).map_err(|source| NetworkError::Io {
            what: "create",
            path: netns_dir.clone(),
            source,
        })?;
        if let Err(e) = netlink::enable_forwarding() {
            tracing::warn!(error = %e, "turn on IPv4 forwarding");
        }
        let netlink = netlink::Netlink::host()?;
        let bridge_dev = options
            .bridge
            .clone()
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        let _op = self.op.lock().await;
        let _ = self.live.set(Live {
            netlink: netlink.clone(),
            netns_dir,
            options: options.clone(),
            services: services::Services::new(),
        });
        for (name, driver) in [("host", Driver::Host), ("none", Driver::Null)] {
            if self.find_name(name).is_none() {
                self.put(self.predefined(name, driver, Vec::new(), String::new()))?;
            }
        }
        let existing = self.find_name("bridge");
        let bip_pool = match &options.bip {
            Some(bip) => {
                let (addr, net) = parse_bip(bip)?;
                Some(Pool {
                    subnet: net,
                    gateway: addr,
                    ip_range: None,
                    aux: BTreeMap::new(),
                    implicit_gateway: false,
                })
            }
            None => None,
        };
        let pool = match (&existing, bip_pool) {
            (_, Some(p)) => p,
            (Some(net), None) if net.bridge == bridge_dev && net.pool().is_some() => {
                net.pools[0].clone()
            }
            _ => {
                let subnet = self.free_subnet(std::slice::from_ref(&bridge_dev))?;
                Pool {
                    subnet,
                    gateway: ipam::first_host(&subnet),
                    ip_range: None,
                    aux: BTreeMap::new(),
                    implicit_gateway: false,
                }
            }
        };
        let mut bridge = existing.unwrap_or_else(|| {
            self.predefined("bridge", Driver::Bridge, Vec::new(), String::new())
        });
        bridge.pools = vec![pool];
        bridge.bridge = bridge_dev;
        bridge.options = BTreeMap::from([
            (
                "com.docker.network.bridge.default_bridge".into(),
                "true".into(),
            ),
            ("com.docker.network.bridge.enable_icc".into(), "true".into()),
            (
                "com.docker.network.bridge.enable_ip_masquerade".into(),
                "true".into(),
            ),
            (
                "com.docker.network.bridge.host_binding_ipv4".into(),
                "0.0.0.0".into(),
            ),
            (OPT_BRIDGE_NAME.into(), bridge.bridge.clone()),
            (OPT_MTU.into(), "1500".into()),
        ]);
        self.put(bridge.clone())?;
        self.delete_removed_bridges(&netlink).await?;
        for net in self.list() {
            if net.driver == Driver::Bridge {
                self.ensure_device(&net).await?;
            }
        }
        Ok(())
    }

    fn predefined(
        &self,
        name: &str,
        driver: Driver,
        pools: Vec<Pool>,
        bridge: String,
    ) -> NetworkRecord {
        NetworkRecord {
            id: new_id(),
            name: name.to_string(),
            driver,
            created: SystemTime::now(),
            internal: false,
            attachable: false,
            enable_ipv6: false,
            ipam_driver: "default".into(),
            ipam_options: None,
            pools,
            pools6: Vec::new(),
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            bridge,
            mtu: None,
        }
    }

    /// The bridge device of a bridge network, with its gateway addresses.
    async fn ensure_device(&self, net: &NetworkRecord) -> Result<()> {
        let live = self.must_live()?;
        if let Some(pool) = net.pool() {
            let gw6 = net.pool6().map(|p| (p.gateway, p.subnet.prefix_len()));
            live.netlink
                .ensure_bridge(
                    &net.bridge,
                    pool.gateway,
                    pool.subnet.prefix_len(),
                    gw6,
                    net.mtu,
                )
                .await?;
        }
        Ok(())
    }

    /// A default pool free of the host's routes and the networks' subnets.
    fn free_subnet(&self, own_devices: &[String]) -> Result<Ipv4Net> {
        let mut skip: Vec<String> = self.list().into_iter().map(|n| n.bridge).collect();
        skip.extend(own_devices.iter().cloned());
        let mut taken = ipam::host_routes(&skip);
        taken.extend(
            self.list()
                .iter()
                .flat_map(|n| n.pools.iter().map(|p| p.subnet)),
        );
        ipam::pick_pool(&taken).ok_or(NetworkError::NoPool)
    }

    fn put(&self, net: NetworkRecord) -> Result<()> {
        self.store.put(Table::Networks, &net.id, &net)?;
        self.reg().nets.insert(net.id.clone(), net);
        Ok(())
    }

    fn find_name(&self, name: &str) -> Option<NetworkRecord> {
        self.reg().nets.values().find(|n| n.name == name).cloned()
    }

    /// Every network, by name.
    pub fn list(&self) -> Vec<NetworkRecord> {
        let mut all: Vec<_> = self.reg().nets.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The network an id, a name or a unique id prefix names (Docker's
    /// order: full id, name, prefix).
    pub fn get(&self, key: &str) -> Result<NetworkRecord> {
        let reg = self.reg();
        if let Some(n) = reg.nets.get(key) {
            return Ok(n.clone());
        }
        if let Some(n) = reg.nets.values().find(|n| n.name == key) {
            return Ok(n.clone());
        }
        let found: Vec<_> = reg
            .nets
            .values()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(NetworkError::NotFound(key.to_string())),
            _ => Err(NetworkError::Ambiguous(key.to_string())),
        }
    }

    /// The endpoints on a network.
    pub fn endpoints_of_network(&self, network: &str) -> Vec<EndpointRecord> {
        self.reg()
            .endpoints
            .values()
            .filter(|e| e.network == network)
            .cloned()
            .collect()
    }

    /// A container's endpoints, in the order of their interfaces.
    pub fn endpoints_of_container(&self, container: &str) -> Vec<EndpointRecord> {
        let mut eps: Vec<_> = self
            .reg()
            .endpoints
            .values()
            .filter(|e| e.container == container)
            .cloned()
            .collect();
        eps.sort_by_key(|e| {
            e.ifname
                .trim_start_matches("eth")
                .parse::<u32>()
                .unwrap_or(0)
        });
        eps
    }

    /// Gives `container` an address on `net` (the one asked for, else the
    /// lowest free) and records the endpoint durably.
    fn allocate(&self, net: &NetworkRecord, want: Wanted) -> Result<EndpointRecord> {
        let Wanted {
            container,
            name,
            requested,
            requested6,
            ifname,
            aliases,
            links,
            dns_names,
            mac,
        } = want;
        let container = container.as_str();
        let pool = net.pool().ok_or_else(|| {
            NetworkError::InvalidConfig(format!("network {} has no IPv4 pool", net.name))
        })?;
        let mut reg = self.reg();
        if reg
            .endpoints
            .contains_key(&endpoint_key(container, &net.id))
        {
            return Err(NetworkError::AlreadyConnected {
                container: container.to_string(),
                network: net.name.clone(),
            });
        }
        let used: BTreeSet<Ipv4Addr> = reg
            .endpoints
            .values()
            .filter(|e| e.network == net.id)
            .map(|e| e.ip)
            .chain(pool.aux.values().copied())
            .collect();
        let ip = match requested {
            Some(ip) => {
                if !ipam::assignable(&pool.subnet, pool.gateway, ip) {
                    return Err(NetworkError::InvalidConfig(format!(
                        "no configured subnet or ip-range contain the IP address {ip}"
                    )));
                }
                if used.contains(&ip) {
                    return Err(NetworkError::AddressInUse(ip.into()));
                }
                ip
            }
            None => ipam::allocate(&pool.subnet, pool.ip_range.as_ref(), pool.gateway, &used)
                .ok_or_else(|| NetworkError::NoAddress {
                    name: net.name.clone(),
                    id: net.id.clone(),
                })?,
        };
        let ip6 = match net.pool6() {
            Some(p6) => Some(self.allocate6(&reg, net, p6, requested6)?),
            None => None,
        };
        let id = new_id();
        let ep = EndpointRecord {
            veth: format!("veth{}", &id[..7]),
            id,
            container: container.to_string(),
            name,
            network: net.id.clone(),
            ifname,
            ip,
            prefix: pool.subnet.prefix_len(),
            gateway: pool.gateway,
            mac: ipam::format_mac(&mac.unwrap_or_else(|| ipam::mac_for(ip))),
            requested_ip: requested,
            ip6,
            prefix6: net.pool6().map_or(0, |p| p.subnet.prefix_len()),
            gateway6: net.pool6().map(|p| p.gateway),
            aliases,
            links,
            dns_names,
            ports: Vec::new(),
        };
        // Made durable by the container's record written at its start (or
        // connect); a crash before that finds the container not running,
        // and recovery frees the address anyway.
        self.store.put_deferred(Table::Endpoints, &ep.key(), &ep)?;
        reg.endpoints.insert(ep.key(), ep.clone());
        Ok(ep)
    }

    /// An IPv6 address on `net`: the one asked for, else the lowest free.
    fn allocate6(
        &self,
        reg: &Registry,
        net: &NetworkRecord,
        pool: &Pool6,
        requested: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr> {
        let used: BTreeSet<Ipv6Addr> = reg
            .endpoints
            .values()
            .filter(|e| e.network == net.id)
            .filter_map(|e| e.ip6)
            .collect();
        match requested {
            Some(ip) if !ipam::assignable6(&pool.subnet, pool.gateway, ip) => {
                Err(NetworkError::InvalidConfig(format!(
                    "no configured subnet or ip-range contain the IP address {ip}"
                )))
            }
            Some(ip) if used.contains(&ip) => Err(NetworkError::AddressInUse(ip.into())),
            Some(ip) => Ok(ip),
            None => ipam::allocate6(&pool.subnet, pool.ip_range.as_ref(), pool.gateway, &used)
                .ok_or_else(|| NetworkError::NoAddress {
                    name: net.name.clone(),
                    id: net.id.clone(),
                }),
        }
    }

    /// Writes a changed endpoint record.
    fn replace_endpoint(&self, ep: &EndpointRecord) -> Result<()> {
        self.store.put_deferred(Table::Endpoints, &ep.key(), ep)?;
        self.reg().endpoints.insert(ep.key(), ep.clone());
        Ok(())
    }

    /// Forgets an endpoint (its address is free again).
    fn free(&self, ep: &EndpointRecord) -> Result<()> {
        self.store.delete_deferred(Table::Endpoints, &ep.key())?;
        self.reg().endpoints.remove(&ep.key());
        Ok(())
    }
}

/// `--bip 10.1.0.1/24`: the bridge's address and its subnet.
fn parse_bip(bip: &str) -> Result<(Ipv4Addr, Ipv4Net)> {
    let net: Ipv4Net = bip
        .parse()
        .map_err(|_| NetworkError::InvalidConfig(format!("invalid --bip {bip}")))?;
    if !ipam::assignable(&net.trunc(), Ipv4Addr::UNSPECIFIED, net.addr()) {
        return Err(NetworkError::InvalidConfig(format!(
            "invalid --bip {bip}: the address must be a host of its subnet"
        )));
    }
    Ok((net.addr(), net.trunc()))
}

/// A `network` event.
pub fn emit(
    events: &crate::events::Events,
    net: &NetworkRecord,
    action: &str,
    container: Option<&str>,
) {
    let mut attrs = BTreeMap::from([
        ("name".to_string(), net.name.clone()),
        ("type".to_string(), net.driver.name().to_string()),
    ]);
    if let Some(c) = container {
        attrs.insert("container".into(), c.to_string());
    }
    events.emit(Kind::Network, action, &net.id, attrs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip_is_an_address_and_its_subnet() {
        let (addr, net) = parse_bip("10.9.0.1/24").unwrap();
        assert_eq!(addr.to_string(), "10.9.0.1");
        assert_eq!(net.to_string(), "10.9.0.0/24");
        assert!(parse_bip("10.9.0.0/24").is_err());
        assert!(parse_bip("x").is_err());
    }
}
