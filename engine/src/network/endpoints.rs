//! A container's endpoints. At start, before its task exists, the engine
//! makes the container's network namespace (bound at
//! `<exec-root>/netns/<id>`, the path its spec names), and on each of its
//! networks an address, a veth pair (host end on the bridge, `ethN` made
//! directly in the namespace), the address and the default route. When the
//! container exits the host ends and the namespace go and the addresses
//! are free. `connect` and `disconnect` do the same to a running container
//! at once, and change its configuration for its next start.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
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

/// The networks a container is configured for, the mode's first, with
/// the client's settings for each.
pub fn configured(record: &ContainerRecord) -> Vec<(String, EndpointSettings)> {
    let mode = record.host_config.network_mode.as_str();
    if !joins_networks(mode) {
        return Vec::new();
    }
    let primary = primary_network(mode).to_string();
    let configs = record
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.clone())
        .unwrap_or_default();
    let own = configs.get(&primary).or_else(|| {
        (primary == "bridge")
            .then(|| configs.get("default"))
            .flatten()
    });
    let mut out = vec![(primary.clone(), own.cloned().unwrap_or_default())];
    for (name, settings) in configs {
        if name != primary && !(primary == "bridge" && name == "default") {
            out.push((name, settings));
        }
    }
    out
}

/// Checks at create that the networks a container names exist and that
/// its settings for them are valid (Docker's 404 for an unknown network).
pub fn check_create(engine: &Engine, record: &ContainerRecord) -> Result<()> {
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

/// Makes the container's namespace and joins its networks; on failure
/// nothing is left.
pub async fn attach(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    let nets = &engine.networks;
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
    if let Err(e) = nl.loopback_up().await {
        release(engine, &record.id).await;
        return Err(e.into());
    }
    let netns_us = began.elapsed().as_micros() as u64;
    for (i, (net, settings)) in wanted.iter().enumerate() {
        if let Err(e) = join(engine, record, net, settings, &format!("eth{i}"), &nl, &ns).await {
            release(engine, &record.id).await;
            return Err(e);
        }
    }
    let endpoints_us = began.elapsed().as_micros() as u64 - netns_us;
    let services = async {
        super::services::publish(engine, record).await?;
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
    if net.predefined() && requested.is_some() {
        return Err(NetworkError::InvalidConfig(
            "user specified IP address is supported only when connecting to networks with user configured subnets".into(),
        ));
    }
    if net.driver != super::Driver::Bridge {
        return Err(NetworkError::PredefinedConnect(net.name.clone()));
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
    let ep = {
        // The network may not go while an address on it is being given.
        let _op = nets.op.lock().await;
        let net = nets.get(&net.id)?;
        nets.allocate(
            &net,
            super::Wanted {
                container: record.id.clone(),
                requested,
                ifname: ifname.to_string(),
                aliases,
                links,
                dns_names,
                mac,
            },
        )?
    };
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
        let gateway = (!net.internal).then_some(ep.gateway);
        nl.configure(ifname, ep.ip, ep.prefix, gateway).await?;
        Ok::<_, NetworkError>(())
    }
    .await;
    if let Err(e) = made {
        let _ = live.netlink.delete(&ep.veth).await;
        let _ = nets.free(&ep);
        return Err(e);
    }
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
    let nc = r.networking_config.get_or_insert_with(Default::default);
    nc.endpoints_config
        .get_or_insert_with(BTreeMap::new)
        .insert(name.to_string(), settings);
}

/// `POST /networks/{id}/disconnect`.
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
    let _ = force;
    let _op = c.op.lock().await;
    if let Some(ep) = endpoint {
        super::services::unpublish(engine, &ep).await;
        leave(engine, &ep, true).await;
        if !super::services::wants_dns(engine, &record.id) {
            super::services::stop_dns(engine, &record.id);
        }
    }
    c.update(|r| {
        if let Some(map) = r
            .networking_config
            .as_mut()
            .and_then(|n| n.endpoints_config.as_mut())
        {
            map.remove(&net.name);
        }
        if primary_network(&r.host_config.network_mode) == net.name
            || r.host_config.network_mode == net.id
        {
            // Off its first network the container has the others, or none.
            let next = r
                .networking_config
                .as_ref()
                .and_then(|n| n.endpoints_config.as_ref())
                .and_then(|m| m.keys().next().cloned());
            r.host_config.network_mode = next.unwrap_or_else(|| "none".into());
        }
    });
    engine
        .containers
        .persist(c)
        .map_err(|e| NetworkError::InvalidConfig(e.to_string()))?;
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
}
