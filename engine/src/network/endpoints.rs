//! A container's endpoints. At start, before its task exists, the engine
//! makes the container's network namespace (bound at
//! `<exec-root>/netns/<id>`, the path its spec names), and on each of its
//! networks an address, a veth pair (host end on the bridge, `ethN` made
//! directly in the namespace), the address and the default route. When the
//! container exits the host ends and the namespace go and the addresses
//! are free. `connect` and `disconnect` do the same to a running container
//! at once, and change its configuration for its next start.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use super::netlink::{self, Netlink};
use super::{emit, EndpointRecord, NetworkError, NetworkRecord, Result};
use crate::containers::{Container, ContainerRecord};
use crate::types::EndpointSettings;
use crate::Engine;

/// Whether a network mode puts the container on networks (not `host`,
/// `none` or another container's namespace).
pub fn joins_networks(mode: &str) -> bool {
    mode != "none" && own_namespace(mode)
}

/// Whether a container of this mode has a network namespace of its own
/// (made by the engine): all but `host` and `container:ID`.
pub fn own_namespace(mode: &str) -> bool {
    !(mode == "host" || mode.starts_with("container:"))
}

/// The network a mode names (`default` is `bridge`).
pub fn primary_network(mode: &str) -> &str {
    match mode {
        "" | "default" => "bridge",
        m => m,
    }
}

/// The networks a container is configured for (the `EndpointsConfig` its
/// create wrote, changed by connect and disconnect since), the mode's
/// network first, with the client's settings for each.
pub fn configured(record: &ContainerRecord) -> Vec<(String, EndpointSettings)> {
    let mode = record.host_config.network_mode.as_str();
    if !joins_networks(mode) {
        return Vec::new();
    }
    let primary = primary_network(mode).to_string();
    let Some(map) = record
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
    else {
        // A record from before create wrote its endpoints.
        return vec![(primary, EndpointSettings::default())];
    };
    let mut out: Vec<(String, EndpointSettings)> = map
        .iter()
        .map(|(name, s)| {
            let name = if name == "default" { "bridge" } else { name };
            (name.to_string(), s.clone())
        })
        .collect();
    // Docker joins the mode's network (or the default bridge) first.
    out.sort_by_key(|(name, _)| *name != primary);
    out
}

/// What Docker does at create: the container's networks are the ones its
/// `EndpointsConfig` names (dockerd 20.10 takes them even when the mode
/// names another), else the mode's own; a disconnect removes one from
/// there and leaves the mode as it was.
fn init_config(engine: &Engine, record: &mut ContainerRecord) {
    let mode = record.host_config.network_mode.clone();
    if !joins_networks(&mode) {
        return;
    }
    let primary = primary_network(&mode).to_string();
    let nc = record
        .networking_config
        .get_or_insert_with(Default::default);
    let map = nc.endpoints_config.get_or_insert_with(BTreeMap::new);
    if let Some(s) = map.remove("default") {
        map.entry("bridge".into()).or_insert(s);
    }
    // Kept by name, whatever key (an id, a prefix) the client used.
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if let Ok(net) = engine.networks.get(&key) {
            if net.name != key && !map.contains_key(&net.name) {
                if let Some(s) = map.remove(&key) {
                    map.insert(net.name, s);
                }
            }
        }
    }
    if map.is_empty() {
        let name = engine
            .networks
            .get(&primary)
            .map(|n| n.name)
            .unwrap_or(primary);
        map.insert(name, EndpointSettings::default());
    }
}

/// At create: records the container's networks as Docker does (see
/// `init_config`), and checks that they exist and that its settings for
/// them are valid (Docker's 404 for an unknown network).
pub fn check_create(engine: &Engine, record: &mut ContainerRecord) -> Result<()> {
    init_config(engine, record);
    for (name, settings) in configured(record) {
        let net = match engine.networks.get(&name) {
            Ok(net) => net,
            // Without networking set up (an engine in tests) the default
            // bridge is a namespace with loopback only.
            Err(NetworkError::NotFound(_))
                if name == "bridge" && engine.networks.live().is_none() =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        check_settings(&net, &settings, record)?;
    }
    super::services::port_requests(record)?;
    if let Some(mac) = record
        .config
        .mac_address
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        super::ipam::parse_mac(mac)?;
    }
    Ok(())
}

/// The IPv4 address a client asked for in `IPAMConfig.IPv4Address`.
fn requested_ip(settings: &EndpointSettings) -> Result<Option<Ipv4Addr>> {
    let ip = settings
        .ipam_config
        .as_ref()
        .and_then(|c| c.get("IPv4Address"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    match ip {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| NetworkError::InvalidConfig(format!("invalid IPv4 address: {s}"))),
    }
}

/// The IPv6 address a client asked for in `IPAMConfig.IPv6Address`.
fn requested_ip6(settings: &EndpointSettings) -> Result<Option<Ipv6Addr>> {
    let ip = settings
        .ipam_config
        .as_ref()
        .and_then(|c| c.get("IPv6Address"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    match ip {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| NetworkError::InvalidConfig(format!("invalid IPv6 address: {s}"))),
    }
}

/// Makes the container's namespace, joins its networks and publishes its
/// ports; on failure nothing is left.
pub async fn attach(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    attach_unpublished(engine, record).await?;
    publish(engine, record).await
}

/// Publishes the ports of a container [`attach_unpublished`] attached (a
/// start does it while the supervisor makes the task: the rules are in
/// place before the process runs); on failure its network is released.
pub async fn publish(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    let began = Instant::now();
    if let Err(e) = super::services::publish(engine, record).await {
        release(engine, &record.id).await;
        return Err(e);
    }
    let publish_us = began.elapsed().as_micros() as u64;
    tracing::debug!(container = %record.id, publish_us, "ports published");
    Ok(())
}

/// [`attach`] but for the published ports ([`publish`]); on failure
/// nothing is left.
pub async fn attach_unpublished(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    let nets = &engine.networks;
    // First: the spec's files are written again with it.
    super::links::apply(engine, record).await?;
    let Some(path) = nets.netns_path(&record.id, &record.host_config.network_mode) else {
        return Ok(());
    };
    let began = Instant::now();
    let mut wanted = Vec::new();
    for (name, settings) in configured(record) {
        let net = nets.get(&name)?;
        check_settings(&net, &settings, record)?;
        wanted.push((net, settings));
    }
    // A namespace left by a crash between exit and release.
    let _ = netlink::remove_namespace(&path);
    let (nl, ns) = netlink::create_namespace(&path)?;
    let netns_us = began.elapsed().as_micros() as u64;
    // Loopback comes up while the endpoints are made: one netlink
    // connection, requests in flight together.
    let joins = async {
        for (i, (net, settings)) in wanted.iter().enumerate() {
            join(engine, record, net, settings, &format!("eth{i}"), &nl, &ns).await?;
        }
        Ok::<_, NetworkError>(())
    };
    let (lo, joined) = tokio::join!(nl.loopback_up(), joins);
    if let Err(e) = lo.map_err(NetworkError::from).and(joined) {
        release(engine, &record.id).await;
        return Err(e);
    }
    let endpoints_us = began.elapsed().as_micros() as u64 - netns_us;
    let services = async {
        super::services::start_dns(engine, record).await?;
        super::files::write_for_start(engine, record)
    };
    if let Err(e) = services.await {
        release(engine, &record.id).await;
        return Err(e);
    }
    let network_setup_us = began.elapsed().as_micros() as u64;
    // The engine benchmark reads these: the whole, and the namespace, the
    // endpoints (addresses recorded, veths, in-namespace set-up) in it.
    tracing::debug!(
        container = %record.id,
        network_setup_us,
        netns_us,
        endpoints_us,
        "network set up"
    );
    Ok(())
}

/// Docker's checks of an endpoint's settings on a network.
fn check_settings(
    net: &NetworkRecord,
    settings: &EndpointSettings,
    record: &ContainerRecord,
) -> Result<()> {
    let has_aliases = settings.aliases.as_ref().is_some_and(|a| !a.is_empty());
    if net.predefined() && has_aliases {
        return Err(NetworkError::InvalidConfig(
            "network-scoped alias is supported only for containers in user defined networks".into(),
        ));
    }
    let requested = requested_ip(settings)?;
    let requested6 = requested_ip6(settings)?;
    if net.predefined() && (requested.is_some() || requested6.is_some()) {
        return Err(NetworkError::InvalidConfig(
            "user specified IP address is supported only when connecting to networks with user configured subnets".into(),
        ));
    }
    if net.driver != super::Driver::Bridge {
        return Err(NetworkError::PredefinedConnect(net.name.clone()));
    }
    if !settings.mac_address.is_empty() {
        super::ipam::parse_mac(&settings.mac_address)?;
    }
    if requested6.is_some() && net.pool6().is_none() {
        return Err(NetworkError::InvalidConfig(format!(
            "network {} has no IPv6 enabled: an IPv6 address cannot be given on it",
            net.name
        )));
    }
    let _ = record;
    Ok(())
}

/// Puts the container (whose namespace `nl` and `ns` are) on `net`.
async fn join(
    engine: &Engine,
    record: &ContainerRecord,
    net: &NetworkRecord,
    settings: &EndpointSettings,
    ifname: &str,
    nl: &Netlink,
    ns: &OwnedFd,
) -> Result<EndpointRecord> {
    let nets = &engine.networks;
    let live = nets.must_live()?;
    let requested = requested_ip(settings)?;
    let requested6 = requested_ip6(settings)?;
    let mac = match settings.mac_address.as_str() {
        "" => match record.config.mac_address.as_deref() {
            Some(m) if !m.is_empty() && ifname == "eth0" => Some(super::ipam::parse_mac(m)?),
            _ => None,
        },
        m => Some(super::ipam::parse_mac(m)?),
    };
    let aliases = settings.aliases.clone().unwrap_or_default();
    let mut links = settings.links.clone().unwrap_or_default();
    if net.custom() {
        // `--link` on a user network: the alias is a name in its DNS.
        links.extend(record.host_config.links.iter().flatten().cloned());
    }
    let short = record.id[..12].to_string();
    let dns_names = if net.custom() {
        let mut names = vec![record.name.clone()];
        names.extend(aliases.iter().cloned());
        names.push(short);
        names.dedup();
        names
    } else {
        Vec::new()
    };
    let began = Instant::now();
    let ep = {
        // The network may not go while an address on it is being given.
        let _op = nets.op.lock().await;
        let net = nets.get(&net.id)?;
        nets.allocate(
            &net,
            super::Wanted {
                container: record.id.clone(),
                name: record.name.trim_start_matches('/').to_string(),
                requested,
                requested6,
                ifname: ifname.to_string(),
                aliases,
                links,
                dns_names,
                mac,
            },
        )?
    };
    let allocate_us = began.elapsed().as_micros() as u64;
    let mut veth_us = 0;
    let made = async {
        let bridge = live
            .netlink
            .index(&net.bridge)
            .await?
            .ok_or_else(|| netlink::NetlinkError::NoLink(net.bridge.clone()))?;
        let mac = super::ipam::parse_mac(&ep.mac)?;
        live.netlink
            .add_veth(&ep.veth, bridge, net.mtu, ifname, mac, ns)
            .await?;
        veth_us = began.elapsed().as_micros() as u64 - allocate_us;
        let gateway = (!net.internal).then_some(ep.gateway);
        let v6 = ep.ip6.map(|address| netlink::Addr6 {
            address,
            prefix: ep.prefix6,
            gateway: ep.gateway6.filter(|_| !net.internal),
        });
        nl.configure(ifname, ep.ip, ep.prefix, gateway, v6).await?;
        Ok::<_, NetworkError>(())
    }
    .await;
    if let Err(e) = made {
        let _ = live.netlink.delete(&ep.veth).await;
        let _ = nets.free(&ep);
        return Err(e);
    }
    // The engine benchmark's finer figures: the address recorded, the
    // veth pair made (the bridge found), the container's side configured.
    tracing::debug!(
        container = %record.id,
        network = %net.name,
        allocate_us,
        veth_us,
        configure_us = began.elapsed().as_micros() as u64 - allocate_us - veth_us,
        "endpoint joined"
    );
    emit(&engine.events, net, "connect", Some(&record.id));
    Ok(ep)
}

/// Takes the container off its networks and removes its namespace: at
/// its exit, its removal, or a failed start. Failures are logged: what is
/// left is taken again at the next start or the daemon's recovery.
pub async fn release(engine: &Engine, container: &str) {
    let nets = &engine.networks;
    super::services::stop_dns(engine, container);
    // The namespace goes first, and its veths with it: the kernel destroys a
    // namespace nothing holds any more, and a veth pair with it, in the
    // background. Deleting a veth ourselves waits for the kernel to quiesce
    // the device (20-30 ms here), which every `docker run --rm` would pay.
    let namespace_gone = match nets.live() {
        Some(live) => match netlink::remove_namespace(&live.netns_dir.join(container)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(container, error = %e, "remove the network namespace");
                false
            }
        },
        None => false,
    };
    for ep in nets.endpoints_of_container(container) {
        super::services::unpublish(engine, &ep).await;
        leave(engine, &ep, !namespace_gone).await;
    }
}

/// Removes one endpoint: its address, and the host end of its veth when
/// `delete_link` (its namespace stays: a disconnect).
async fn leave(engine: &Engine, ep: &EndpointRecord, delete_link: bool) {
    let nets = &engine.networks;
    if let Some(live) = nets.live().filter(|_| delete_link) {
        if let Err(e) = live.netlink.delete(&ep.veth).await {
            tracing::warn!(container = %ep.container, veth = %ep.veth, error = %e, "delete a veth");
        }
    }
    if let Err(e) = nets.free(ep) {
        tracing::warn!(container = %ep.container, error = %e, "free an address");
    }
    if let Ok(net) = nets.get(&ep.network) {
        emit(&engine.events, &net, "disconnect", Some(&ep.container));
    }
}

/// After a restart of the daemon: the endpoints and namespaces of
/// containers no longer running go; the running keep theirs.
pub async fn recover(engine: &Engine) {
    let nets = &engine.networks;
    let running = |id: &str| {
        engine
            .containers
            .get(id)
            .is_ok_and(|c| c.id == id && c.status().is_running())
    };
    let mut stale: Vec<String> = nets
        .reg()
        .endpoints
        .values()
        .map(|e| e.container.clone())
        .filter(|c| !running(c))
        .collect();
    if let Some(live) = nets.live() {
        if let Ok(dir) = std::fs::read_dir(&live.netns_dir) {
            for entry in dir.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !running(&id) {
                    stale.push(id);
                }
            }
        }
    }
    stale.sort();
    stale.dedup();
    for id in stale {
        tracing::info!(container = %id, "release the network of a container no longer running");
        release(engine, &id).await;
    }
    super::services::restore(engine).await;
}

/// `POST /networks/{id}/connect`.
pub async fn connect(
    engine: &Engine,
    c: &Arc<Container>,
    key: &str,
    settings: EndpointSettings,
) -> Result<()> {
    let nets = &engine.networks;
    let net = nets.get(key)?;
    let record = c.record();
    if !joins_networks(&record.host_config.network_mode) {
        return Err(NetworkError::SharedNamespace);
    }
    if net.driver != super::Driver::Bridge {
        return Err(NetworkError::PredefinedConnect(net.name));
    }
    let already = configured(&record)
        .iter()
        .any(|(name, _)| nets.get(name).is_ok_and(|n| n.id == net.id));
    if already {
        return Err(NetworkError::AlreadyConnected {
            container: record.name,
            network: net.name,
        });
    }
    check_settings(&net, &settings, &record)?;
    let _op = c.op.lock().await;
    if c.status().is_running() {
        let path = nets
            .netns_path(&record.id, &record.host_config.network_mode)
            .ok_or(NetworkError::NotInitialized)?;
        let (nl, ns) = netlink::enter_namespace(&path)?;
        let next = nets
            .endpoints_of_container(&record.id)
            .iter()
            .filter_map(|e| e.ifname.trim_start_matches("eth").parse::<u32>().ok())
            .max()
            .map_or(0, |n| n + 1);
        join(
            engine,
            &record,
            &net,
            &settings,
            &format!("eth{next}"),
            &nl,
            &ns,
        )
        .await?;
        let mut updated = record.clone();
        add_config(&mut updated, &net.name, settings.clone());
        super::services::start_dns(engine, &updated).await?;
        super::files::write_for_start(engine, &updated)?;
    }
    c.update(|r| add_config(r, &net.name, settings));
    engine
        .containers
        .persist(c)
        .map_err(|e| NetworkError::InvalidConfig(e.to_string()))?;
    Ok(())
}

fn add_config(r: &mut ContainerRecord, name: &str, settings: EndpointSettings) {
    let mode = r.host_config.network_mode.clone();
    let nc = r.networking_config.get_or_insert_with(Default::default);
    nc.endpoints_config
        .get_or_insert_with(|| {
            // A record from before create wrote its endpoints: the mode's.
            BTreeMap::from([(primary_network(&mode).to_string(), Default::default())])
        })
        .insert(name.to_string(), settings);
}

/// `POST /networks/{id}/disconnect`. The container keeps its network
/// mode (a later connect to the same network is allowed, as on Docker).
pub async fn disconnect(engine: &Engine, c: &Arc<Container>, key: &str, force: bool) -> Result<()> {
    let nets = &engine.networks;
    let net = nets.get(key)?;
    let record = c.record();
    let configured_on = configured(&record)
        .into_iter()
        .find(|(name, _)| nets.get(name).is_ok_and(|n| n.id == net.id));
    let endpoint = nets
        .endpoints_of_container(&record.id)
        .into_iter()
        .find(|e| e.network == net.id);
    if configured_on.is_none() && endpoint.is_none() {
        return Err(NetworkError::NotConnected {
            container: record.name,
            network: net.name,
        });
    }
    let _op = c.op.lock().await;
    if let Some(ep) = endpoint {
        super::services::unpublish(engine, &ep).await;
        leave(engine, &ep, true).await;
        if !super::services::wants_dns(engine, &record.id) {
            super::services::stop_dns(engine, &record.id);
        }
        if c.status().is_running() {
            let mut updated = record.clone();
            remove_config(engine, &mut updated, &net.id);
            if let Err(e) = super::files::write_for_start(engine, &updated) {
                if !force {
                    return Err(e);
                }
                tracing::warn!(container = %record.id, error = %e, "rewrite /etc/hosts after a disconnect");
            }
        }
    }
    c.update(|r| remove_config(engine, r, &net.id));
    engine
        .containers
        .persist(c)
        .map_err(|e| NetworkError::InvalidConfig(e.to_string()))?;
    Ok(())
}

/// Takes every entry naming the network `net_id` (by name or id) out of a
/// container's `EndpointsConfig`.
fn remove_config(engine: &Engine, r: &mut ContainerRecord, net_id: &str) {
    let mode = r.host_config.network_mode.clone();
    let nc = r.networking_config.get_or_insert_with(Default::default);
    let map = nc.endpoints_config.get_or_insert_with(|| {
        // A record from before create wrote its endpoints: the mode's.
        BTreeMap::from([(primary_network(&mode).to_string(), Default::default())])
    });
    map.retain(|name, _| {
        let name = if name == "default" { "bridge" } else { name };
        !engine.networks.get(name).is_ok_and(|n| n.id == net_id)
    });
}

/// `disconnect --force` of a container that no longer exists: its
/// endpoints on the network (found by the container's id, id prefix or
/// name) are removed with their veths, ports and addresses.
pub async fn disconnect_gone(engine: &Engine, key: &str, container: &str) -> Result<()> {
    let nets = &engine.networks;
    let net = nets.get(key)?;
    let name = container.trim_start_matches('/');
    let gone: Vec<EndpointRecord> = nets
        .endpoints_of_network(&net.id)
        .into_iter()
        .filter(|e| {
            e.container == container
                || (!name.is_empty() && e.name == name)
                || (container.len() >= 3 && e.container.starts_with(container))
        })
        .filter(|e| engine.containers.get(&e.container).is_err())
        .collect();
    if gone.is_empty() {
        return Err(NetworkError::NotConnected {
            container: container.to_string(),
            network: net.name,
        });
    }
    for ep in gone {
        super::services::stop_dns(engine, &ep.container);
        super::services::unpublish(engine, &ep).await;
        leave(engine, &ep, true).await;
        tracing::info!(container = %ep.container, network = %net.name, "endpoint of a removed container cleaned up");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_their_networks() {
        assert!(joins_networks("default"));
        assert!(joins_networks("mynet"));
        assert!(!joins_networks("host"));
        assert!(!joins_networks("none"));
        assert!(!joins_networks("container:abc"));
        assert_eq!(primary_network("default"), "bridge");
        assert_eq!(primary_network("mynet"), "mynet");
        let s: EndpointSettings =
            serde_json::from_str(r#"{"IPAMConfig":{"IPv4Address":"10.0.0.9"}}"#).unwrap();
        assert_eq!(requested_ip(&s).unwrap(), Some("10.0.0.9".parse().unwrap()));
        let bad: EndpointSettings =
            serde_json::from_str(r#"{"IPAMConfig":{"IPv4Address":"x"}}"#).unwrap();
        assert!(requested_ip(&bad).is_err());
    }

    #[tokio::test]
    async fn force_disconnect_removes_the_endpoints_of_a_container_gone() {
        let fake = crate::backend::fake::Fake::new();
        let (engine, _dir) = crate::images::tests::engine(&fake).await;
        let nets = &engine.networks;
        let mut net = nets.predefined(
            "mynet",
            super::super::Driver::Bridge,
            Vec::new(),
            "br-x".into(),
        );
        net.name = "mynet".into();
        net.pools = vec![super::super::Pool {
            subnet: "10.3.0.0/24".parse().unwrap(),
            gateway: "10.3.0.1".parse().unwrap(),
            ip_range: None,
            aux: BTreeMap::from([("r".to_string(), "10.3.0.2".parse().unwrap())]),
            implicit_gateway: false,
        }];
        nets.put(net.clone()).unwrap();
        let want = |id: &str, name: &str| super::super::Wanted {
            container: id.into(),
            name: name.into(),
            requested: None,
            requested6: None,
            ifname: "eth0".into(),
            aliases: Vec::new(),
            links: Vec::new(),
            dns_names: Vec::new(),
            mac: None,
        };
        let a = nets.allocate(&net, want(&"a".repeat(64), "gone")).unwrap();
        // the auxiliary address is never given out
        assert_eq!(a.ip.to_string(), "10.3.0.3");
        nets.allocate(&net, want(&"b".repeat(64), "other")).unwrap();
        let e = disconnect_gone(&engine, "mynet", "nosuch")
            .await
            .unwrap_err();
        assert!(matches!(e, NetworkError::NotConnected { .. }), "{e}");
        disconnect_gone(&engine, "mynet", "/gone").await.unwrap();
        let left: Vec<String> = nets
            .endpoints_of_network(&net.id)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(left, ["other"]);
        disconnect_gone(&engine, "mynet", "bbbb").await.unwrap();
        assert!(nets.endpoints_of_network(&net.id).is_empty());
    }
}
