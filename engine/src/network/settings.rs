//! What clients read: a network as `GET /networks/{id}` and `GET /networks`
//! show it, and a container's `NetworkSettings`. Every field Docker writes
//! is present.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::{EndpointRecord, NetworkError, NetworkRecord};
use crate::containers::record::format_time;
use crate::containers::ContainerRecord;
use crate::types::EndpointSettings;
use crate::Engine;

/// A network; with `containers`, its endpoints (inspect), else none (list).
pub fn network_json(engine: &Engine, net: &NetworkRecord, containers: bool) -> Value {
    let config: Vec<Value> = net
        .pools
        .iter()
        .map(|p| {
            let mut c = json!({"Subnet": p.subnet.to_string()});
            if !p.implicit_gateway {
                c["Gateway"] = json!(p.gateway.to_string());
            }
            if let Some(r) = &p.ip_range {
                c["IPRange"] = json!(r.to_string());
            }
            if !p.aux.is_empty() {
                c["AuxiliaryAddresses"] = json!(p.aux);
            }
            c
        })
        .chain(net.pools6.iter().map(|p| {
            let mut c = json!({"Subnet": p.subnet.to_string()});
            if !p.implicit_gateway {
                c["Gateway"] = json!(p.gateway.to_string());
            }
            if let Some(r) = &p.ip_range {
                c["IPRange"] = json!(r.to_string());
            }
            c
        }))
        .collect();
    let mut members = Map::new();
    if containers {
        for ep in engine.networks.endpoints_of_network(&net.id) {
            let name = engine
                .containers
                .get(&ep.container)
                .map(|c| c.name())
                .unwrap_or_default();
            members.insert(
                ep.container.clone(),
                json!({
                    "Name": name,
                    "EndpointID": ep.id,
                    "MacAddress": ep.mac,
                    "IPv4Address": format!("{}/{}", ep.ip, ep.prefix),
                    "IPv6Address": ep.ip6.map(|a| format!("{a}/{}", ep.prefix6)).unwrap_or_default(),
                }),
            );
        }
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": format_time(Some(net.created)),
        "Scope": "local",
        "Driver": net.driver.name(),
        "EnableIPv4": true,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {
            "Driver": net.ipam_driver,
            "Options": net.ipam_options,
            "Config": config,
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": members,
        "Options": net.options,
        "Labels": net.labels,
    })
}

/// One entry of `NetworkSettings.Networks`: live values from the endpoint
/// when the container has one, else the configuration alone.
fn endpoint_json(net_id: &str, settings: &EndpointSettings, ep: Option<&EndpointRecord>) -> Value {
    let (id, gw, ip, prefix, mac, dns) = match ep {
        Some(e) => (
            e.id.clone(),
            e.gateway.to_string(),
            e.ip.to_string(),
            e.prefix,
            e.mac.clone(),
            (!e.dns_names.is_empty()).then(|| json!(e.dns_names)),
        ),
        // Not running: what the client asked for.
        None => (
            String::new(),
            String::new(),
            String::new(),
            0,
            settings.mac_address.clone(),
            None,
        ),
    };
    let v6 = v6_fields(ep);
    json!({
        "IPAMConfig": settings.ipam_config,
        "Links": settings.links,
        "Aliases": settings.aliases,
        "MacAddress": mac,
        "DriverOpts": settings.driver_opts,
        "GwPriority": 0,
        "NetworkID": net_id,
        "EndpointID": id,
        "Gateway": gw,
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "IPv6Gateway": v6.1,
        "GlobalIPv6Address": v6.0,
        "GlobalIPv6PrefixLen": v6.2,
        "DNSNames": dns.unwrap_or(Value::Null),
    })
}

/// `GlobalIPv6Address`, `IPv6Gateway` and `GlobalIPv6PrefixLen` of an
/// endpoint (empty without IPv6).
fn v6_fields(ep: Option<&EndpointRecord>) -> (String, String, u8) {
    match ep.and_then(|e| e.ip6.map(|a| (a, e))) {
        Some((addr, e)) => (
            addr.to_string(),
            e.gateway6.map(|g| g.to_string()).unwrap_or_default(),
            e.prefix6,
        ),
        None => (String::new(), String::new(), 0),
    }
}

fn mappings(eps: &[EndpointRecord]) -> Vec<super::ports::PortMapping> {
    eps.iter()
        .flat_map(|e| e.ports.iter().filter_map(|p| p.mapping()))
        .collect()
}

/// The `Ports` of `GET /containers/json`: each published port, and each
/// exposed one that is not.
pub fn ports_list(engine: &Engine, record: &ContainerRecord) -> Value {
    let eps = engine.networks.endpoints_of_container(&record.id);
    let published = mappings(&eps);
    let mut out: Vec<Value> = published
        .iter()
        .map(|m| {
            let ip = m
                .host_ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "0.0.0.0".into());
            json!({"IP": ip, "PrivatePort": m.container_port, "PublicPort": m.host_port, "Type": m.proto.as_str()})
        })
        .collect();
    for key in record.config.exposed_ports.iter().flat_map(|m| m.keys()) {
        if let Ok((range, proto)) = super::ports::parse_port_key(key) {
            for p in range {
                if !published
                    .iter()
                    .any(|m| m.container_port == p && m.proto == proto)
                {
                    out.push(json!({"PrivatePort": p, "Type": proto.as_str()}));
                }
            }
        }
    }
    Value::Array(out)
}

/// `NetworkSettings.Networks` of a container.
pub fn networks_json(engine: &Engine, record: &ContainerRecord) -> Value {
    let mode = record.host_config.network_mode.as_str();
    let eps = engine.networks.endpoints_of_container(&record.id);
    let mut out = Map::new();
    let named = match mode {
        "host" | "none" => vec![(mode.to_string(), EndpointSettings::default())],
        m if m.starts_with("container:") => Vec::new(),
        _ => super::endpoints::configured(record),
    };
    for (name, settings) in named {
        let net = engine.networks.get(&name).ok();
        let net_id = net.as_ref().map(|n| n.id.clone()).unwrap_or_default();
        let ep = eps.iter().find(|e| e.network == net_id);
        let shown = net.map(|n| n.name).unwrap_or(name);
        out.insert(shown, endpoint_json(&net_id, &settings, ep));
    }
    Value::Object(out)
}

/// A container's `NetworkSettings`; the top-level address fields are the
/// default bridge's, as Docker fills them.
pub fn container_json(engine: &Engine, record: &ContainerRecord) -> Value {
    let eps = engine.networks.endpoints_of_container(&record.id);
    let ports = if record.state.status.is_running() {
        super::ports::ports_json(record.config.exposed_ports.as_ref(), &mappings(&eps))
    } else {
        json!({})
    };
    let bridge = engine.networks.get("bridge").ok();
    let on_bridge = bridge
        .as_ref()
        .and_then(|b| eps.iter().find(|e| e.network == b.id));
    let sandbox = if eps.is_empty() && !record.state.status.is_running() {
        String::new()
    } else {
        engine
            .networks
            .netns_path(&record.id, &record.host_config.network_mode)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let sandbox_id = if sandbox.is_empty() {
        String::new()
    } else {
        record.id.clone()
    };
    let (ep_id, gw, ip, prefix, mac) = match on_bridge {
        Some(e) => (
            e.id.clone(),
            e.gateway.to_string(),
            e.ip.to_string(),
            e.prefix,
            e.mac.clone(),
        ),
        None => Default::default(),
    };
    let v6 = v6_fields(on_bridge);
    json!({
        "Bridge": "",
        "SandboxID": sandbox_id,
        "SandboxKey": sandbox,
        "Ports": ports,
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": ep_id,
        "Gateway": gw,
        "GlobalIPv6Address": v6.0,
        "GlobalIPv6PrefixLen": v6.2,
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "IPv6Gateway": v6.1,
        "MacAddress": mac,
        "Networks": networks_json(engine, record),
    })
}

/// Whether a container is on the network `key` names (the `network=`
/// filter of `ps`): by name or id, configured or connected.
pub fn on_network(engine: &Engine, record: &ContainerRecord, key: &str) -> bool {
    let Ok(net) = engine.networks.get(key) else {
        return record.host_config.network_mode == key;
    };
    if engine
        .networks
        .endpoints_of_container(&record.id)
        .iter()
        .any(|e| e.network == net.id)
    {
        return true;
    }
    let mode = record.host_config.network_mode.as_str();
    if mode == "host" || mode == "none" {
        return net.name == mode;
    }
    super::endpoints::configured(record)
        .iter()
        .any(|(name, _)| *name == net.name || *name == net.id)
}

/// What `POST /networks/prune` takes among the unused user networks:
/// `until` (made before that time), `label` (`k` or `k=v`, all of them)
/// and `label!` (none of them).
pub fn prune_filter(
    filters: &BTreeMap<String, BTreeSet<String>>,
    until: Option<std::time::SystemTime>,
) -> Result<impl Fn(&NetworkRecord) -> bool + use<>, NetworkError> {
    for key in filters.keys() {
        if !matches!(key.as_str(), "until" | "label" | "label!") {
            return Err(NetworkError::InvalidConfig(format!(
                "invalid filter '{key}'"
            )));
        }
    }
    let want = filters.get("label").cloned().unwrap_or_default();
    let refuse = filters.get("label!").cloned().unwrap_or_default();
    Ok(move |n: &NetworkRecord| {
        let has = |f: &String| match f.split_once('=') {
            Some((k, v)) => n.labels.get(k).is_some_and(|have| have == v),
            None => n.labels.contains_key(f),
        };
        until.is_none_or(|t| n.created < t) && want.iter().all(has) && !refuse.iter().any(has)
    })
}

/// The networks `GET /networks` and prune's filters select: `name`
/// (part of the name), `id` (an id prefix), `driver`, `label` (`k` or
/// `k=v`), `type` (`custom` or `builtin`), `dangling` (no container).
pub fn select(
    engine: &Engine,
    filters: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<NetworkRecord>, NetworkError> {
    const KNOWN: [&str; 7] = ["name", "id", "driver", "label", "type", "dangling", "scope"];
    for (key, vals) in filters {
        if !KNOWN.contains(&key.as_str()) {
            return Err(NetworkError::InvalidConfig(format!(
                "invalid filter '{key}'"
            )));
        }
        for v in vals {
            let ok = match key.as_str() {
                "type" => matches!(v.as_str(), "custom" | "builtin"),
                "dangling" => matches!(v.as_str(), "true" | "false" | "1" | "0"),
                _ => true,
            };
            if !ok {
                return Err(NetworkError::InvalidConfig(format!(
                    "invalid filter '{key}={v}'"
                )));
            }
        }
    }
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
        filters
            .get(key)
            .is_none_or(|vals| vals.iter().any(|v| pred(v)))
    };
    let used: BTreeSet<String> = engine
        .containers
        .all()
        .iter()
        .flat_map(|c| {
            let r = c.record();
            let mut ids: Vec<String> = super::endpoints::configured(&r)
                .into_iter()
                .filter_map(|(n, _)| engine.networks.get(&n).ok().map(|n| n.id))
                .collect();
            ids.extend(
                engine
                    .networks
                    .endpoints_of_container(&r.id)
                    .into_iter()
                    .map(|e| e.network),
            );
            ids
        })
        .collect();
    Ok(engine
        .networks
        .list()
        .into_iter()
        .filter(|n| {
            any("name", &|v| n.name.contains(v))
                && any("id", &|v| n.id.starts_with(v))
                && any("driver", &|v| n.driver.name() == v)
                && any("scope", &|v| v == "local")
                && filters.get("label").is_none_or(|vals| {
                    vals.iter().all(|v| match v.split_once('=') {
                        Some((k, want)) => n.labels.get(k).is_some_and(|have| have == want),
                        None => n.labels.contains_key(v),
                    })
                })
                && any("type", &|v| (v == "custom") == n.custom())
                && any("dangling", &|v| {
                    let dangling = matches!(v, "true" | "1");
                    dangling == (n.custom() && !used.contains(&n.id))
                })
        })
        .collect())
}
