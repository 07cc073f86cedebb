//! Creating, removing and pruning networks: [`Networks::create`] checks
//! the client's request and makes the bridge, [`Networks::remove`] refuses
//! predefined networks and those with endpoints.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    emit, ipam, new_id, CreateRequest, Driver, IpamRequest, NetworkError, NetworkRecord, Networks,
    Pool, Pool6, Result, OPT_BRIDGE_NAME, OPT_MTU,
};
use crate::state::Table;

impl Networks {
    /// `POST /networks/create`: checks, a subnet, the bridge, the record.
    pub async fn create(
        &self,
        events: &crate::events::Events,
        req: CreateRequest,
    ) -> Result<NetworkRecord> {
        let live = self.must_live()?;
        let _op = self.op.lock().await;
        // A bridge still going may have this one's name or subnet.
        self.settle().await;
        if req.name.is_empty() {
            return Err(NetworkError::InvalidConfig("network name is empty".into()));
        }
        if self.find_name(&req.name).is_some() {
            return Err(NetworkError::NameInUse(req.name));
        }
        match req.driver.as_str() {
            "" | "bridge" => {}
            "host" | "null" => {
                return Err(NetworkError::InvalidConfig(format!(
                    "only one instance of \"{}\" network is allowed",
                    req.driver
                )))
            }
            other => return Err(NetworkError::UnknownDriver(other.to_string())),
        }
        let ipam_req = req.ipam.clone().unwrap_or_default();
        if !matches!(ipam_req.driver.as_str(), "" | "default") {
            return Err(NetworkError::UnknownDriver(ipam_req.driver));
        }
        let id = new_id();
        let options = req.options.clone().unwrap_or_default();
        let bridge = options
            .get(OPT_BRIDGE_NAME)
            .cloned()
            .unwrap_or_else(|| format!("br-{}", &id[..12]));
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(NetworkError::InvalidConfig(format!(
                "invalid bridge name {bridge:?}"
            )));
        }
        if self.list().iter().any(|n| n.bridge == bridge) {
            return Err(NetworkError::InvalidConfig(format!(
                "bridge name {bridge} is already used by another network"
            )));
        }
        let mtu = match options.get(OPT_MTU) {
            Some(m) => Some(
                m.parse::<u32>()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| NetworkError::InvalidConfig(format!("invalid MTU {m:?}")))?,
            ),
            None => None,
        };
        let pools = self.pools(&ipam_req, &bridge)?;
        let enable_ipv6 = req.enable_ipv6.unwrap_or(false);
        let pools6 = self.pools6(&ipam_req)?;
        if enable_ipv6 && pools6.is_empty() {
            return Err(NetworkError::NoPool6);
        }
        let net = NetworkRecord {
            id,
            name: req.name.clone(),
            driver: Driver::Bridge,
            created: SystemTime::now(),
            internal: req.internal,
            attachable: req.attachable,
            enable_ipv6,
            ipam_driver: "default".into(),
            ipam_options: ipam_req.options,
            pools,
            pools6,
            options,
            labels: req.labels.unwrap_or_default(),
            bridge,
            mtu,
        };
        let pool = net.pools[0].clone();
        if net.pool6().is_some() {
            if let Err(e) = super::netlink::enable_forwarding6() {
                tracing::warn!(error = %e, "turn on IPv6 forwarding");
            }
        }
        self.ensure_device(&net).await?;
        if let Some(rules) = super::services::rules_of(&net) {
            if let Err(e) = live.services.firewall.setup_network(&rules).await {
                let _ = live.netlink.delete(&net.bridge).await;
                return Err(e.into());
            }
        }
        if let Some(rules6) = super::services::rules_of6(&net) {
            if let Err(e) = live.services.firewall6.setup_network(&rules6).await {
                if let Some(rules) = super::services::rules_of(&net) {
                    let _ = live.services.firewall.teardown_network(&rules).await;
                }
                let _ = live.netlink.delete(&net.bridge).await;
                return Err(e.into());
            }
        }
        if let Err(e) = self.put(net.clone()) {
            let _ = live.netlink.delete(&net.bridge).await;
            return Err(e);
        }
        tracing::info!(network = %net.id, name = %net.name, subnet = %pool.subnet, "network created");
        emit(events, &net, "create", None);
        Ok(net)
    }

    /// The pools of a new network: the client's, checked, else a free one.
    fn pools(&self, req: &IpamRequest, bridge: &str) -> Result<Vec<Pool>> {
        let configs = req.config.clone().unwrap_or_default();
        let configs: Vec<_> = configs
            .into_iter()
            .filter(|c| !c.subnet.contains(':'))
            .collect();
        if configs.is_empty() {
            let subnet = self.free_subnet(&[bridge.to_string()])?;
            return Ok(vec![Pool {
                subnet,
                gateway: ipam::first_host(&subnet),
                ip_range: None,
                aux: BTreeMap::new(),
                implicit_gateway: false,
            }]);
        }
        let mut pools: Vec<Pool> = Vec::new();
        for c in configs {
            if c.subnet.is_empty() {
                return Err(NetworkError::InvalidConfig(
                    "an IPAM config needs a subnet".into(),
                ));
            }
            let subnet = ipam::parse_subnet(&c.subnet)?;
            let gateway = if c.gateway.is_empty() {
                ipam::first_host(&subnet)
            } else {
                let gw: Ipv4Addr = c.gateway.parse().map_err(|_| {
                    NetworkError::InvalidConfig(format!("invalid gateway address {}", c.gateway))
                })?;
                if !ipam::assignable(&subnet, Ipv4Addr::UNSPECIFIED, gw) {
                    return Err(NetworkError::InvalidConfig(format!(
                        "no matching subnet for gateway {gw}: it is not inside {subnet}"
                    )));
                }
                gw
            };
            let ip_range = if c.ip_range.is_empty() {
                None
            } else {
                let range: Ipv4Net = c.ip_range.parse().map_err(|_| {
                    NetworkError::InvalidConfig(format!("invalid ip-range {}", c.ip_range))
                })?;
                if !subnet.contains(&range) {
                    return Err(NetworkError::InvalidConfig(format!(
                        "no matching subnet for range {range}: it is not inside {subnet}"
                    )));
                }
                Some(range.trunc())
            };
            let mut aux = BTreeMap::new();
            for (name, addr) in c.aux_addresses.iter().flatten() {
                let ip: Ipv4Addr = addr.parse().map_err(|_| {
                    NetworkError::InvalidConfig(format!("invalid auxiliary address {name}={addr}"))
                })?;
                if !subnet.contains(&ip) {
                    return Err(NetworkError::InvalidConfig(format!(
                        "no matching subnet for aux-address {ip}"
                    )));
                }
                aux.insert(name.clone(), ip);
            }
            let others = self.list();
            let clash = others
                .iter()
                .flat_map(|n| n.pools.iter())
                .chain(pools.iter())
                .any(|p| ipam::overlaps(&p.subnet, &subnet));
            if clash {
                return Err(NetworkError::Overlap);
            }
            pools.push(Pool {
                subnet,
                gateway,
                ip_range,
                aux,
                implicit_gateway: c.gateway.is_empty(),
            });
        }
        Ok(pools)
    }

    /// The IPv6 pools of a new network: the client's, checked (none is
    /// chosen for it, as dockerd has no default IPv6 pool).
    fn pools6(&self, req: &IpamRequest) -> Result<Vec<Pool6>> {
        let mut pools: Vec<Pool6> = Vec::new();
        let configs = req
            .config
            .iter()
            .flatten()
            .filter(|c| c.subnet.contains(':'));
        for c in configs {
            let subnet = ipam::parse_subnet6(&c.subnet)?;
            let gateway = if c.gateway.is_empty() {
                ipam::first_host6(&subnet)
            } else {
                let gw: Ipv6Addr = c.gateway.parse().map_err(|_| {
                    NetworkError::InvalidConfig(format!("invalid gateway address {}", c.gateway))
                })?;
                if !ipam::assignable6(&subnet, Ipv6Addr::UNSPECIFIED, gw) {
                    return Err(NetworkError::InvalidConfig(format!(
                        "no matching subnet for gateway {gw}: it is not inside {subnet}"
                    )));
                }
                gw
            };
            let ip_range = if c.ip_range.is_empty() {
                None
            } else {
                let range: Ipv6Net = c.ip_range.parse().map_err(|_| {
                    NetworkError::InvalidConfig(format!("invalid ip-range {}", c.ip_range))
                })?;
                if !subnet.contains(&range) {
                    return Err(NetworkError::InvalidConfig(format!(
                        "no matching subnet for range {range}: it is not inside {subnet}"
                    )));
                }
                Some(range.trunc())
            };
            let clash = self
                .list()
                .iter()
                .flat_map(|n| n.pools6.iter())
                .chain(pools.iter())
                .any(|p| {
                    p.subnet.contains(&subnet.network()) || subnet.contains(&p.subnet.network())
                });
            if clash {
                return Err(NetworkError::Overlap);
            }
            pools.push(Pool6 {
                subnet,
                gateway,
                ip_range,
                implicit_gateway: c.gateway.is_empty(),
            });
        }
        Ok(pools)
    }

    /// `DELETE /networks/{id}`.
    pub async fn remove(&self, events: &crate::events::Events, key: &str) -> Result<()> {
        let _op = self.op.lock().await;
        let net = self.get(key)?;
        if net.predefined() {
            return Err(NetworkError::Predefined(net.name));
        }
        if !self.endpoints_of_network(&net.id).is_empty() {
            return Err(NetworkError::InUse {
                name: net.name,
                id: net.id,
            });
        }
        let live = self.live();
        if let Some(live) = live {
            if let Some(rules) = super::services::rules_of(&net) {
                live.services.firewall.teardown_network(&rules).await?;
            }
            if let Some(rules6) = super::services::rules_of6(&net) {
                live.services.firewall6.teardown_network(&rules6).await?;
            }
        }
        // The bridge is deleted after the answer (see
        // `delete_bridge_later`); its tombstone is durable with the
        // record's removal, for a start after a crash to finish it.
        let bridge = live.filter(|_| !net.bridge.is_empty());
        if bridge.is_some() {
            self.store
                .put_deferred(Table::RemovedBridges, &net.bridge, &net.id)?;
        }
        self.store.delete(Table::Networks, &net.id)?;
        self.reg().nets.remove(&net.id);
        if let Some(live) = bridge {
            self.delete_bridge_later(live, net.bridge.clone());
        }
        tracing::info!(network = %net.id, name = %net.name, "network removed");
        emit(events, &net, "destroy", None);
        Ok(())
    }

    /// `POST /networks/prune`: the user's networks without endpoints that
    /// match `keep` (the filters); their names.
    pub async fn prune(
        &self,
        events: &crate::events::Events,
        keep: impl Fn(&NetworkRecord) -> bool,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for net in self.list() {
            if net.custom() && keep(&net) && self.endpoints_of_network(&net.id).is_empty() {
                match self.remove(events, &net.id).await {
                    Ok(()) => removed.push(net.name),
                    Err(NetworkError::InUse { .. }) | Err(NetworkError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }
}
