//! The container's `/etc/hosts` and `/etc/resolv.conf` once its addresses
//! are known (at start and at connect), written over the ones made at
//! create (the bind mounts keep the same files): localhost, `--add-host`
//! (`host-gateway` is the default bridge's gateway), `--link` entries on
//! the default bridge, and the container's own addresses with its
//! hostname; name servers from `--dns`, else berthd's `--dns`, else the
//! host's without loopback ones.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::{EndpointRecord, NetworkError, Result};
use crate::containers::ContainerRecord;
use crate::Engine;

/// Docker's `host-gateway` in `--add-host`.
pub const HOST_GATEWAY: &str = "host-gateway";

const LOCALHOST: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// Writes the container's hosts and resolv.conf for its endpoints.
pub fn write_for_start(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    let dir = engine.paths.container_dir(&record.id);
    let eps = engine.networks.endpoints_of_container(&record.id);
    let gateway = engine
        .networks
        .get("bridge")
        .ok()
        .and_then(|n| n.pool().map(|p| p.gateway));
    let links = links_on_bridge(engine, record, &eps);
    let hosts = hosts_file(record, &eps, gateway, &links);
    write(&dir.join("hosts"), &hosts)?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut effective = record.clone();
    let daemon_dns = engine
        .networks
        .live()
        .map(|l| l.options.dns.clone())
        .unwrap_or_default();
    if effective
        .host_config
        .dns
        .as_ref()
        .is_none_or(|d| d.is_empty())
        && !daemon_dns.is_empty()
    {
        effective.host_config.dns = Some(daemon_dns);
    }
    let resolv = if super::services::wants_dns(engine, &record.id) {
        embedded_resolv_conf(&host_resolv, record)
    } else {
        crate::containers::runspec::container_resolv_conf(&host_resolv, &effective)
    };
    write(&dir.join("resolv.conf"), &resolv)
}

/// A container on a user network asks the embedded DNS server (which
/// forwards what it does not know); search domains and options as given,
/// else the host's, with Docker's `ndots:0`.
pub fn embedded_resolv_conf(host: &str, record: &ContainerRecord) -> String {
    let hc = &record.host_config;
    let mut out = format!("nameserver {}\n", super::services::DNS_NAMESERVER);
    let search = match hc.dns_search.as_ref().filter(|s| !s.is_empty()) {
        Some(s) => s.join(" "),
        None => host
            .lines()
            .filter_map(|l| l.strip_prefix("search"))
            .map(|s| s.trim().to_string())
            .next_back()
            .unwrap_or_default(),
    };
    if !search.is_empty() {
        let _ = writeln!(out, "search {search}");
    }
    let mut options = vec!["ndots:0".to_string()];
    options.extend(hc.dns_options.iter().flatten().cloned());
    let _ = writeln!(out, "options {}", options.join(" "));
    out
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| NetworkError::Io {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// `--link name[:alias]` on the default bridge: (address, alias, id, name)
/// of each linked container that has an address there.
fn links_on_bridge(
    engine: &Engine,
    record: &ContainerRecord,
    eps: &[EndpointRecord],
) -> Vec<(Ipv4Addr, String, String, String)> {
    let Ok(bridge) = engine.networks.get("bridge") else {
        return Vec::new();
    };
    if !eps.iter().any(|e| e.network == bridge.id) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for link in record.host_config.links.iter().flatten() {
        let (name, alias) = parse_link(link);
        let Ok(other) = engine.containers.get(&name) else {
            continue;
        };
        let ip = engine
            .networks
            .endpoints_of_container(&other.id)
            .into_iter()
            .find(|e| e.network == bridge.id)
            .map(|e| e.ip);
        if let Some(ip) = ip {
            out.push((ip, alias, other.id[..12].to_string(), other.name()));
        }
    }
    out
}

/// `name`, `name:alias`, or Docker's own `/name:/me/alias`.
pub fn parse_link(link: &str) -> (String, String) {
    let (name, alias) = link.split_once(':').unwrap_or((link, link));
    let name = name.trim_start_matches('/').to_string();
    let alias = alias.rsplit('/').next().unwrap_or(alias).to_string();
    (name, alias)
}

/// The hosts file: localhost, extra hosts, links, then the container's
/// own addresses.
pub fn hosts_file(
    record: &ContainerRecord,
    eps: &[EndpointRecord],
    host_gateway: Option<Ipv4Addr>,
    links: &[(Ipv4Addr, String, String, String)],
) -> String {
    let mut out = String::from(LOCALHOST);
    for entry in record.host_config.extra_hosts.iter().flatten() {
        if let Some((name, ip)) = entry.split_once('=').or_else(|| entry.split_once(':')) {
            let ip = match (ip, host_gateway) {
                (HOST_GATEWAY, Some(gw)) => gw.to_string(),
                _ => ip.to_string(),
            };
            let _ = writeln!(out, "{ip}\t{name}");
        }
    }
    for (ip, alias, id, name) in links {
        if alias == name {
            let _ = writeln!(out, "{ip}\t{alias} {id}");
        } else {
            let _ = writeln!(out, "{ip}\t{alias} {id} {name}");
        }
    }
    let host = &record.config.hostname;
    let domain = &record.config.domainname;
    let addrs = eps
        .iter()
        .flat_map(|ep| std::iter::once(IpAddr::V4(ep.ip)).chain(ep.ip6.map(IpAddr::V6)));
    for ip in addrs {
        if domain.is_empty() {
            let _ = writeln!(out, "{ip}\t{host}");
        } else {
            let _ = writeln!(out, "{ip}\t{host}.{domain} {host}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_in_every_form() {
        assert_eq!(parse_link("db"), ("db".into(), "db".into()));
        assert_eq!(parse_link("db:data"), ("db".into(), "data".into()));
        assert_eq!(parse_link("/db:/web/data"), ("db".into(), "data".into()));
    }
}
