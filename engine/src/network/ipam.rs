//! Address management: the subnets a network may take (Docker's default
//! pools, skipping the host's routes and the other networks), checks of a
//! user's IPAM config, and the choice of a free address in a pool. What is
//! given out is the set of endpoint records in the engine's database, so
//! nothing here keeps state of its own.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::NetworkError;

/// Docker's default address pools: 172.17.0.0/16 to 172.31.0.0/16, then
/// 192.168.0.0/20 to 192.168.240.0/20.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let big = (17..=31u8).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let small = (0..16u8).filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).ok());
    big.chain(small)
}

/// Whether two subnets share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first default pool overlapping none of `taken` (the host's routes
/// and the other networks' subnets).
pub fn pick_pool(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().find(|p| !taken.iter().any(|t| overlaps(p, t)))
}

/// The host's IPv4 routes (destinations) in this network namespace, from
/// `/proc/net/route`, without the default route and those through `skip`
/// (our own bridges, whose routes are ours).
pub fn host_routes(skip: &[String]) -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_routes(&text, skip)
}

fn parse_routes(text: &str, skip: &[String]) -> Vec<Ipv4Net> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || skip.iter().any(|s| s == f[0]) {
                return None;
            }
            let dest = Ipv4Addr::from(hex(f[1])?);
            let mask = Ipv4Addr::from(hex(f[7])?);
            let prefix = u32::from(mask).count_ones() as u8;
            (prefix > 0).then(|| Ipv4Net::new(dest, prefix).ok())?
        })
        .collect()
}

/// Parses `a.b.c.d/n`, Docker's messages on failure.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, NetworkError> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        NetworkError::InvalidConfig(format!("invalid subnet {s} : invalid CIDR address: {s}"))
    })?;
    if net.prefix_len() > 30 {
        return Err(NetworkError::InvalidConfig(format!(
            "invalid subnet {s}: the prefix leaves no room for a gateway and a container"
        )));
    }
    Ok(net.trunc())
}

/// The first address after the network's, Docker's default gateway.
pub fn first_host(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// The lowest address of `range` (within `subnet`) that is neither the
/// network's, the broadcast, the gateway nor in `used`.
pub fn allocate(
    subnet: &Ipv4Net,
    range: Option<&Ipv4Net>,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let range = range.unwrap_or(subnet);
    let lo = u32::from(range.network()).max(u32::from(subnet.network()) + 1);
    let hi = u32::from(range.broadcast()).min(u32::from(subnet.broadcast()) - 1);
    (lo..=hi)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gateway && !used.contains(ip))
}

/// Whether `ip` may be given to a container of `subnet` (not its network
/// or broadcast address, nor the gateway).
pub fn assignable(subnet: &Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast() && ip != gateway
}

/// Parses an IPv6 subnet (`2001:db8::/64`), Docker's messages on failure.
pub fn parse_subnet6(s: &str) -> Result<Ipv6Net, NetworkError> {
    let net: Ipv6Net = s.parse().map_err(|_| {
        NetworkError::InvalidConfig(format!("invalid subnet {s} : invalid CIDR address: {s}"))
    })?;
    if net.prefix_len() > 126 {
        return Err(NetworkError::InvalidConfig(format!(
            "invalid subnet {s}: the prefix leaves no room for a gateway and a container"
        )));
    }
    Ok(net.trunc())
}

/// The first address after the subnet's own (its router anycast).
pub fn first_host6(net: &Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + 1)
}

/// Whether `ip` may be given to a container of `subnet` (not the subnet's
/// own address, nor the gateway).
pub fn assignable6(subnet: &Ipv6Net, gateway: Ipv6Addr, ip: Ipv6Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != gateway
}

/// The lowest IPv6 address of `range` (within `subnet`) that is neither
/// the subnet's own, the gateway nor in `used`.
pub fn allocate6(
    subnet: &Ipv6Net,
    range: Option<&Ipv6Net>,
    gateway: Ipv6Addr,
    used: &BTreeSet<Ipv6Addr>,
) -> Option<Ipv6Addr> {
    let range = range.unwrap_or(subnet);
    let lo = u128::from(range.network()).max(u128::from(subnet.network()) + 1);
    let hi = u128::from(range.broadcast()).min(u128::from(subnet.broadcast()));
    // at most every used address and the gateway are skipped
    let tries = used.len() as u128 + 2;
    (lo..=hi)
        .take(usize::try_from(tries).unwrap_or(usize::MAX))
        .map(Ipv6Addr::from)
        .find(|ip| *ip != gateway && !used.contains(ip))
}

/// Docker's MAC for an address: `02:42` and the address's four bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetworkError> {
    let bad = || NetworkError::InvalidConfig(format!("invalid MAC address: {s}"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// A subnet in a record as its text (`10.0.0.0/24`, `2001:db8::/64`).
pub(crate) mod net_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, N: Display>(net: &N, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, N: FromStr>(d: D) -> Result<N, D::Error>
    where
        N::Err: Display,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub(crate) mod opt_net_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, N: Display>(net: &Option<N>, s: S) -> Result<S::Ok, S::Error> {
        match net {
            Some(n) => s.collect_str(n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, N: FromStr>(d: D) -> Result<Option<N>, D::Error>
    where
        N::Err: Display,
    {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pools_skip_what_is_taken() {
        assert_eq!(pick_pool(&[]), Some(net("172.17.0.0/16")));
        assert_eq!(
            pick_pool(&[net("172.17.0.0/16"), net("172.18.5.0/24")]),
            Some(net("172.19.0.0/16"))
        );
        assert_eq!(
            pick_pool(&[net("172.16.0.0/12")]),
            Some(net("192.168.0.0/20"))
        );
        assert_eq!(pick_pool(&[net("0.0.0.0/1"), net("128.0.0.0/1")]), None);
    }

    #[test]
    fn routes_from_proc() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n\
            eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
            berth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
        assert_eq!(
            parse_routes(text, &["berth0".into()]),
            vec![net("192.168.2.0/24")]
        );
    }

    #[test]
    fn addresses_are_given_once() {
        let subnet = net("10.1.0.0/29");
        let gw = first_host(&subnet);
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Some(ip) = allocate(&subnet, None, gw, &used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(
            got,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
        );
        let range = net("10.1.0.4/30");
        assert_eq!(
            allocate(&subnet, Some(&range), gw, &BTreeSet::new()),
            Some("10.1.0.4".parse().unwrap())
        );
        assert!(!assignable(&subnet, gw, gw));
        assert!(!assignable(&subnet, gw, "10.1.0.7".parse().unwrap()));
        assert!(assignable(&subnet, gw, "10.1.0.6".parse().unwrap()));
    }

    #[test]
    fn ipv6_addresses_are_given_once() {
        let subnet: Ipv6Net = "2001:db8::/64".parse().unwrap();
        let gw = first_host6(&subnet);
        assert_eq!(gw.to_string(), "2001:db8::1");
        let mut used = BTreeSet::new();
        let a = allocate6(&subnet, None, gw, &used).unwrap();
        assert_eq!(a.to_string(), "2001:db8::2");
        used.insert(a);
        assert_eq!(
            allocate6(&subnet, None, gw, &used).unwrap().to_string(),
            "2001:db8::3"
        );
        let range: Ipv6Net = "2001:db8::100/120".parse().unwrap();
        assert_eq!(
            allocate6(&subnet, Some(&range), gw, &used)
                .unwrap()
                .to_string(),
            "2001:db8::100"
        );
        let tiny: Ipv6Net = "2001:db8::/126".parse().unwrap();
        let all: BTreeSet<Ipv6Addr> = ["2001:db8::2", "2001:db8::3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(allocate6(&tiny, None, first_host6(&tiny), &all), None);
        assert!(!assignable6(&subnet, gw, gw));
        assert!(!assignable6(&subnet, gw, subnet.network()));
        assert!(assignable6(&subnet, gw, "2001:db8::f00d".parse().unwrap()));
        assert!(parse_subnet6("2001:db8::/127").is_err());
        assert!(parse_subnet6("10.0.0.0/8").is_err());
    }

    #[test]
    fn subnets_and_macs() {
        assert_eq!(parse_subnet("10.0.0.7/24").unwrap(), net("10.0.0.0/24"));
        assert!(parse_subnet("10.0.0.0/33").is_err());
        assert!(parse_subnet("nonsense").is_err());
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.2.0.0/16")));
        assert!(!overlaps(&net("10.0.0.0/16"), &net("10.1.0.0/16")));
        let mac = mac_for("172.17.0.2".parse().unwrap());
        assert_eq!(format_mac(&mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02").unwrap(), mac);
        assert!(parse_mac("02:42").is_err());
    }
}
