//! Published ports: Docker's `ExposedPorts`/`PortBindings` parsed and
//! checked, host ports allocated (a given one, one from a range, or an
//! ephemeral one for an empty HostPort and `-P`) and reserved by holding a
//! bound socket in berthd for as long as the container runs, and the
//! `NetworkSettings.Ports` map that `docker port` and inspect show.
//!
//! The traffic itself goes through NAT rules ([`super::firewall`]); no
//! process and no userspace proxy per port (docs/networking.md says why).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::Mutex;

use serde_json::{json, Value};

/// An error of the system as Go prints it (`address already in use`).
fn os_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The ephemeral range when `/proc/sys/net/ipv4/ip_local_port_range` cannot
/// be read (Linux's default).
pub const DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A key of ExposedPorts/PortBindings or a HostPort that is not a port
    /// or range of ports (dockerd's create-time check).
    #[error("invalid port specification: {0:?}")]
    InvalidSpec(String),
    #[error("invalid proto: {0}")]
    InvalidProto(String),
    #[error("invalid IP address: {0}")]
    InvalidHostIp(String),
    #[error("invalid ranges specified for container and host Ports: {container} and {host}")]
    MismatchedRanges { container: String, host: String },
    /// The port is published by another container of ours.
    #[error("Bind for {addr} failed: port is already allocated")]
    AlreadyAllocated { addr: String },
    /// Something else on the host holds the port.
    #[error("failed to bind host port for {addr}:{target}/{proto}: {}", os_reason(.source))]
    Bind {
        addr: String,
        target: String,
        proto: Proto,
        source: std::io::Error,
    },
    /// A whole range given as HostPort, or the ephemeral range, is taken.
    #[error("all ports are allocated in {range} for {proto}")]
    Exhausted { range: String, proto: Proto },
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = PortError;
    fn from_str(s: &str) -> Result<Self, PortError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(PortError::InvalidProto(s.to_string())),
        }
    }
}

/// One published port, once its host port is chosen: host_ip:host_port on
/// the host goes to container_ip:container_port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// None: every address of the host (Docker's empty HostIp, 0.0.0.0).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// `0.0.0.0:8080` as Docker writes the host side in its messages.
    pub fn host_addr(&self) -> String {
        let ip = self.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.host_port).to_string()
    }
}

/// A port to publish as asked for, before a host port is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub host_ip: Option<IpAddr>,
    /// None: any ephemeral port; a range of one: that port.
    pub host_ports: Option<RangeInclusive<u16>>,
    pub container_port: u16,
    pub proto: Proto,
}

/// `80`, `80/tcp`, `53/udp`, `8000-8010/tcp`: a container port or range
/// and its protocol (a key of ExposedPorts and PortBindings).
pub fn parse_port_key(key: &str) -> Result<(RangeInclusive<u16>, Proto), PortError> {
    let (port, proto) = match key.split_once('/') {
        Some((p, proto)) => (p, proto.parse()?),
        None => (key, Proto::Tcp),
    };
    let range = parse_range(port).ok_or_else(|| PortError::InvalidSpec(port.to_string()))?;
    Ok((range, proto))
}

/// `8080` or `8000-8010` (not 0: a port is 1 to 65535).
pub fn parse_range(s: &str) -> Option<RangeInclusive<u16>> {
    let one = |p: &str| -> Option<u16> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok().filter(|&n| n != 0)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            (a <= b).then_some(a..=b)
        }
        None => one(s).map(|p| p..=p),
    }
}

/// What to publish for a container: every binding of `PortBindings`, and
/// with `publish_all` (`-P`) every exposed port that has no binding, on an
/// ephemeral host port. Checked as dockerd checks at create.
pub fn requests(
    exposed: Option<&BTreeMap<String, Value>>,
    bindings: Option<&BTreeMap<String, Value>>,
    publish_all: bool,
) -> Result<Vec<PortRequest>, PortError> {
    let mut out = Vec::new();
    let mut bound = Vec::new();
    for (key, list) in bindings.into_iter().flatten() {
        let (ports, proto) = parse_port_key(key)?;
        bound.push(key.clone());
        let list = match list {
            Value::Array(list) => list.as_slice(),
            Value::Null => &[],
            _ => return Err(PortError::InvalidSpec(key.clone())),
        };
        for (offset, port) in ports.clone().enumerate() {
            for b in list {
                let host_ip = parse_host_ip(b.get("HostIp").and_then(Value::as_str).unwrap_or(""))?;
                let hp = b.get("HostPort").and_then(Value::as_str).unwrap_or("");
                // empty or 0 (as dockerd takes it): any ephemeral port
                let host_ports = if hp.is_empty() || hp == "0" {
                    None
                } else {
                    let (r, _) = parse_port_key(hp)?;
                    if ports.len() > 1 {
                        // a range of container ports: a range of host ports
                        // of the same length, port for port
                        if r.len() != ports.len() {
                            return Err(PortError::MismatchedRanges {
                                container: key.clone(),
                                host: hp.to_string(),
                            });
                        }
                        let p = *r.start() + offset as u16;
                        Some(p..=p)
                    } else {
                        Some(r)
                    }
                };
                out.push(PortRequest {
                    host_ip,
                    host_ports,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    if publish_all {
        for key in exposed.into_iter().flat_map(|m| m.keys()) {
            let (ports, proto) = parse_port_key(key)?;
            if bound.iter().any(|k| same_key(k, key)) {
                continue;
            }
            for port in ports {
                out.push(PortRequest {
                    host_ip: None,
                    host_ports: None,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    Ok(out)
}

fn same_key(a: &str, b: &str) -> bool {
    parse_port_key(a).ok() == parse_port_key(b).ok()
}

/// A HostIp: empty for every address; IPv4 or IPv6, `[::1]` too.
pub fn parse_host_ip(s: &str) -> Result<Option<IpAddr>, PortError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare
        .parse()
        .map_err(|_| PortError::InvalidHostIp(s.to_string()))?;
    Ok((!ip.is_unspecified() || ip.is_ipv6()).then_some(ip))
}

/// `NetworkSettings.Ports`: every exposed port, with the host addresses it
/// is published on, or null when it is not published.
pub fn ports_json(exposed: Option<&BTreeMap<String, Value>>, mappings: &[PortMapping]) -> Value {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for key in exposed.into_iter().flat_map(|m| m.keys()) {
        if let Ok((ports, proto)) = parse_port_key(key) {
            for p in ports {
                out.entry(format!("{p}/{proto}")).or_insert(Value::Null);
            }
        }
    }
    for m in mappings {
        let entry = out
            .entry(format!("{}/{}", m.container_port, m.proto))
            .or_insert(Value::Null);
        if entry.is_null() {
            *entry = json!([]);
        }
        if let Value::Array(list) = entry {
            let ip = m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            list.push(json!({"HostIp": ip.to_string(), "HostPort": m.host_port.to_string()}));
        }
    }
    Value::Object(out.into_iter().collect())
}

/// The kernel's ephemeral port range.
pub fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some(it.next()??..=it.next()??)
        })
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// The host ports in use by berth's containers, each held by a bound socket
/// so nothing else on the host takes it while it is published.
pub struct PortAllocator {
    ephemeral: RangeInclusive<u16>,
    held: Mutex<HashMap<Key, Held>>,
}

type Key = (Option<IpAddr>, u16, Proto);

struct Held {
    container: String,
    mapping: PortMapping,
    _socket: socket2::Socket,
}

impl PortAllocator {
    /// Ephemeral ports from the kernel's range.
    pub fn new() -> Self {
        Self::with_range(ephemeral_range())
    }

    pub fn with_range(ephemeral: RangeInclusive<u16>) -> Self {
        Self {
            ephemeral,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Chooses and reserves a host port for each request of `container`
    /// (whose address is `container_ip`, for messages): all or none.
    pub fn allocate(
        &self,
        container: &str,
        container_ip: IpAddr,
        requests: &[PortRequest],
    ) -> Result<Vec<PortMapping>, PortError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut mine: Vec<Key> = Vec::new();
        let result = requests.iter().try_fold(Vec::new(), |mut out, req| {
            let m = self.allocate_one(&mut held, container, container_ip, req)?;
            mine.push((m.host_ip, m.host_port, m.proto));
            out.push(m);
            Ok(out)
        });
        if result.is_err() {
            for k in &mine {
                held.remove(k);
            }
        }
        result
    }

    fn allocate_one(
        &self,
        held: &mut HashMap<Key, Held>,
        container: &str,
        container_ip: IpAddr,
        req: &PortRequest,
    ) -> Result<PortMapping, PortError> {
        let (range, chosen) = match &req.host_ports {
            Some(r) => (r.clone(), r.start() == r.end()),
            None => (self.ephemeral.clone(), false),
        };
        let target = SocketAddr::new(container_ip, req.container_port).to_string();
        for port in range.clone() {
            let mapping = PortMapping {
                host_ip: req.host_ip,
                host_port: port,
                container_port: req.container_port,
                proto: req.proto,
            };
            if conflicts(held, &mapping) {
                if chosen {
                    return Err(PortError::AlreadyAllocated {
                        addr: mapping.host_addr(),
                    });
                }
                continue;
            }
            match bind(&mapping) {
                Ok(socket) => {
                    held.insert(
                        (mapping.host_ip, port, req.proto),
                        Held {
                            container: container.to_string(),
                            mapping: mapping.clone(),
                            _socket: socket,
                        },
                    );
                    return Ok(mapping);
                }
                Err(e) if chosen => {
                    return Err(PortError::Bind {
                        addr: mapping.host_addr(),
                        target,
                        proto: req.proto,
                        source: e,
                    })
                }
                Err(_) => continue,
            }
        }
        Err(PortError::Exhausted {
            range: format!("{}-{}", range.start(), range.end()),
            proto: req.proto,
        })
    }

    /// Gives back every port of `container` (no error when it has none).
    pub fn release(&self, container: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, h| h.container != container);
    }

    /// The ports published for `container`.
    pub fn mappings(&self, container: &str) -> Vec<PortMapping> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<PortMapping> = held
            .values()
            .filter(|h| h.container == container)
            .map(|h| h.mapping.clone())
            .collect();
        out.sort_by_key(|m| (m.container_port, m.proto, m.host_port));
        out
    }
}

/// Another of our mappings on the same port and protocol whose address
/// overlaps (the wildcard overlaps every address).
fn conflicts(held: &HashMap<Key, Held>, m: &PortMapping) -> bool {
    held.keys().any(|(ip, port, proto)| {
        *port == m.host_port
            && *proto == m.proto
            && (ip.is_none() || m.host_ip.is_none() || *ip == m.host_ip)
    })
}

/// Holds the host port: a socket bound to it (not listening: the NAT rules
/// take the traffic before it would reach it).
fn bind(m: &PortMapping) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ip = m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, m.host_port);
    let (ty, proto) = match m.proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Sctp => (Type::SEQPACKET, Protocol::from(libc::IPPROTO_SCTP)),
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if ip.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

impl Default for PortAllocator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn keys_and_ranges() {
        assert_eq!(parse_port_key("80").unwrap(), (80..=80, Proto::Tcp));
        assert_eq!(parse_port_key("53/UDP").unwrap(), (53..=53, Proto::Udp));
        assert_eq!(parse_port_key("8000-8010/tcp").unwrap().0, 8000..=8010);
        assert_eq!(
            parse_port_key("80/icmp").unwrap_err().to_string(),
            "invalid proto: icmp"
        );
        assert_eq!(
            parse_port_key("70000/tcp").unwrap_err().to_string(),
            "invalid port specification: \"70000\""
        );
        for bad in ["", "0", "x", "90-80", "-1", "1-"] {
            assert!(parse_range(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bindings_become_requests() {
        let bindings = map(json!({
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}, {"HostIp": "", "HostPort": ""}],
            "53/udp": [{"HostIp": "", "HostPort": "5353"}],
            "90-91/tcp": [{"HostIp": "", "HostPort": "9090-9091"}],
            "100/tcp": [{"HostPort": "7000-7010"}],
        }));
        let reqs = requests(None, Some(&bindings), false).unwrap();
        let find = |port: u16, proto: Proto| -> Vec<&PortRequest> {
            reqs.iter()
                .filter(|r| r.container_port == port && r.proto == proto)
                .collect()
        };
        let web = find(80, Proto::Tcp);
        assert_eq!(web.len(), 2);
        assert_eq!(web[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(web[0].host_ports, Some(8080..=8080));
        assert_eq!(web[1].host_ports, None);
        assert_eq!(find(53, Proto::Udp)[0].host_ports, Some(5353..=5353));
        assert_eq!(find(91, Proto::Tcp)[0].host_ports, Some(9091..=9091));
        assert_eq!(find(100, Proto::Tcp)[0].host_ports, Some(7000..=7010));
        let zero = map(json!({"80/tcp": [{"HostPort": "0"}]}));
        assert_eq!(
            requests(None, Some(&zero), false).unwrap()[0].host_ports,
            None
        );

        let bad = map(json!({"90-92/tcp": [{"HostPort": "9090-9091"}]}));
        assert_eq!(
            requests(None, Some(&bad), false).unwrap_err().to_string(),
            "invalid ranges specified for container and host Ports: 90-92/tcp and 9090-9091"
        );
        let bad = map(json!({"80/tcp": [{"HostPort": "99999"}]}));
        assert_eq!(
            requests(None, Some(&bad), false).unwrap_err().to_string(),
            "invalid port specification: \"99999\""
        );
        let bad = map(json!({"80/tcp": [{"HostIp": "1.2.3", "HostPort": "80"}]}));
        assert_eq!(
            requests(None, Some(&bad), false).unwrap_err().to_string(),
            "invalid IP address: 1.2.3"
        );
    }

    #[test]
    fn publish_all_adds_the_unbound_exposed_ports() {
        let exposed = map(json!({"80/tcp": {}, "53/udp": {}, "443": {}}));
        let bindings = map(json!({"80/tcp": [{"HostPort": "8080"}]}));
        let reqs = requests(Some(&exposed), Some(&bindings), true).unwrap();
        assert_eq!(reqs.len(), 3);
        assert!(reqs
            .iter()
            .any(|r| r.container_port == 53 && r.proto == Proto::Udp && r.host_ports.is_none()));
        assert!(reqs
            .iter()
            .any(|r| r.container_port == 443 && r.host_ports.is_none()));
        assert_eq!(requests(Some(&exposed), None, false).unwrap(), vec![]);
    }

    #[test]
    fn network_settings_ports() {
        let exposed = map(json!({"80/tcp": {}, "443/tcp": {}}));
        let m = PortMapping {
            host_ip: None,
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        };
        let v = ports_json(Some(&exposed), &[m]);
        assert_eq!(
            v,
            json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": null})
        );
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn req(port: Option<u16>, proto: Proto) -> PortRequest {
        PortRequest {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_ports: port.map(|p| p..=p),
            container_port: 80,
            proto,
        }
    }

    #[test]
    fn allocation_reserves_and_releases() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let port = free_port();
        let alloc = PortAllocator::with_range(port..=port);
        let got = alloc
            .allocate(
                "a",
                ip,
                &[req(Some(port), Proto::Tcp), req(None, Proto::Udp)],
            )
            .unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|m| m.host_port == port));
        // the socket holds it against everyone else
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        assert_eq!(
            alloc
                .allocate("b", ip, &[req(Some(port), Proto::Tcp)])
                .unwrap_err()
                .to_string(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
        // the ephemeral range is exhausted: all or none, nothing kept of b
        assert!(alloc
            .allocate("b", ip, &[req(None, Proto::Sctp), req(None, Proto::Tcp)])
            .is_err());
        assert!(alloc.mappings("b").is_empty());
        assert_eq!(alloc.mappings("a").len(), 2);
        alloc.release("a");
        assert!(alloc.mappings("a").is_empty());
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn a_port_held_by_another_program() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let alloc = PortAllocator::with_range(port..=port);
        let e = alloc
            .allocate(
                "a",
                "10.0.0.2".parse().unwrap(),
                &[req(Some(port), Proto::Tcp)],
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "failed to bind host port for 127.0.0.1:{port}:10.0.0.2:80/tcp: address already in use"
            )
        );
        assert!(alloc.mappings("a").is_empty());
    }
}
