//! The host's firewall for berth's networks: rules written with
//! `iptables-restore --noflush` (IPv4) or `ip6tables-restore --noflush`
//! (the same rules for the IPv6 subnets of networks with IPv6, by a second
//! [`Firewall`] of that family), one batch per operation, only in chains of
//! our own (`BERTH-*`) and one jump into each from a built-in chain, added
//! when missing. Nothing else in the ruleset is read back or changed.
//!
//! The firewall keeps what should exist (the networks and the published
//! ports). A network's set-up and removal write our chains whole from it: a
//! chain declared in a batch is flushed and refilled in the same
//! transaction, so a rule is never doubled and never left behind, and
//! [`Firewall::reconcile`] after a crash is the same operation. A
//! container's ports, the common case, are appended or deleted in place
//! (flushing chains is what makes a batch slow: about 2 ms against 25 ms);
//! should that fail, everything is written whole instead. With no network left, the chains and the
//! jumps go too and the ruleset is as it was before berth.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ipnet::IpNet;
use tokio::sync::Mutex;

use super::ports::PortMapping;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Tool { tool: String, stderr: String },
    #[error("set {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// The bridge device, `berth0` or `br-<id>`.
    pub bridge: String,
    /// Of the firewall's family.
    pub subnet: IpNet,
    /// No route out: what leaves the bridge for elsewhere is dropped.
    pub internal: bool,
    /// Containers on the bridge may talk to each other
    /// (`com.docker.network.bridge.enable_icc`, true by default).
    pub icc: bool,
    /// Outbound masquerade of the subnet
    /// (`com.docker.network.bridge.enable_ip_masquerade`, true by default).
    pub masquerade: bool,
}

/// The published ports of one container on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// The container's id.
    pub container: String,
    /// Of the firewall's family.
    pub container_ip: IpAddr,
    /// The bridge the container's address is on.
    pub bridge: String,
    pub mappings: Vec<PortMapping>,
}

/// berth's rules on the host, through `iptables`/`iptables-restore`, or
/// nothing at all when disabled (dockerd's `--iptables=false`).
pub struct Firewall {
    save: PathBuf,
    restore: PathBuf,
    enabled: bool,
    /// `ip6tables`: the IPv6 subnets and addresses.
    v6: bool,
    state: Mutex<State>,
}

#[derive(Default, Clone)]
struct State {
    networks: BTreeMap<String, NetworkRules>,
    ports: BTreeMap<(String, String), PortRules>,
    /// Our jumps were there after the last batch (so need not be read back).
    jumps_in_place: bool,
}

impl Firewall {
    /// `iptables` is the path of the `iptables` tool; `iptables-restore` is
    /// looked for next to it.
    pub fn new(iptables: impl Into<PathBuf>, enabled: bool) -> Self {
        let iptables = iptables.into();
        Self {
            save: iptables.with_file_name("iptables-save"),
            restore: iptables.with_file_name("iptables-restore"),
            enabled,
            v6: false,
            state: Mutex::new(State::default()),
        }
    }

    /// The IPv6 firewall: `ip6tables` is the path of that tool, whose
    /// `ip6tables-restore` and `ip6tables-save` are next to it.
    pub fn new6(ip6tables: impl Into<PathBuf>, enabled: bool) -> Self {
        let ip6tables = ip6tables.into();
        Self {
            save: ip6tables.with_file_name("ip6tables-save"),
            restore: ip6tables.with_file_name("ip6tables-restore"),
            enabled,
            v6: true,
            state: Mutex::new(State::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Adds a network's rules: masquerade, forwarding, isolation from the
    /// other bridges (or no way out at all when internal). Setting it up
    /// again with the same rules changes nothing.
    pub async fn setup_network(&self, net: &NetworkRules) -> Result<(), FirewallError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        state.networks.insert(net.bridge.clone(), net.clone());
        if self.enabled && !self.v6 {
            route_localnet(&net.bridge)?;
        }
        self.apply(&mut state).await?;
        *guard = state;
        Ok(())
    }

    /// Removes a network's rules and the ports published on its bridge.
    pub async fn teardown_network(&self, net: &NetworkRules) -> Result<(), FirewallError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        state.networks.remove(&net.bridge);
        state.ports.retain(|(_, bridge), _| bridge != &net.bridge);
        self.apply(&mut state).await?;
        *guard = state;
        Ok(())
    }

    /// Publishes a container's ports: DNAT from the host (the network and
    /// loopback, `route_localnet` on the bridge) and the accept for them.
    pub async fn add_ports(&self, ports: &PortRules) -> Result<(), FirewallError> {
        let mut guard = self.state.lock().await;
        let key = (ports.container.clone(), ports.bridge.clone());
        let before = guard.ports.get(&key);
        if before == Some(ports) {
            return Ok(());
        }
        // the common case, appended in place: our chains are there and the
        // container had no ports on this bridge
        let in_place = self.enabled && guard.jumps_in_place && before.is_none();
        let mut state = guard.clone();
        state.ports.insert(key, ports.clone());
        if !(in_place
            && self
                .restore(&render_ports(ports, "-A", self.v6))
                .await
                .is_ok())
        {
            // our jumps may be gone too: read them again
            state.jumps_in_place = false;
            self.apply(&mut state).await?;
        }
        *guard = state;
        Ok(())
    }

    /// Withdraws what [`Firewall::add_ports`] added for this container on
    /// this bridge.
    pub async fn remove_ports(&self, ports: &PortRules) -> Result<(), FirewallError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        let Some(old) = state
            .ports
            .remove(&(ports.container.clone(), ports.bridge.clone()))
        else {
            return Ok(());
        };
        // deleted in place, unless it was the last of ours (then the chains
        // go) or a rule is not where it should be (then all is rewritten)
        let last = state.networks.is_empty() && state.ports.is_empty();
        let in_place = self.enabled && guard.jumps_in_place && !last;
        if !(in_place
            && self
                .restore(&render_ports(&old, "-D", self.v6))
                .await
                .is_ok())
        {
            state.jumps_in_place = false;
            self.apply(&mut state).await?;
        }
        *guard = state;
        Ok(())
    }

    /// Makes our chains say exactly this (after a restart or a crash).
    pub async fn reconcile(
        &self,
        networks: &[NetworkRules],
        ports: &[PortRules],
    ) -> Result<(), FirewallError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        state.networks = networks
            .iter()
            .map(|n| (n.bridge.clone(), n.clone()))
            .collect();
        state.ports = ports
            .iter()
            .map(|p| ((p.container.clone(), p.bridge.clone()), p.clone()))
            .collect();
        state.jumps_in_place = false;
        if self.enabled && !self.v6 {
            for net in networks {
                route_localnet(&net.bridge)?;
            }
        }
        self.apply(&mut state).await?;
        *guard = state;
        Ok(())
    }

    async fn apply(&self, state: &mut State) -> Result<(), FirewallError> {
        if !self.enabled {
            return Ok(());
        }
        let present: Vec<&Jump> = if state.jumps_in_place {
            JUMPS.iter().collect()
        } else {
            self.jumps_present().await?
        };
        let empty = state.networks.is_empty() && state.ports.is_empty();
        let batch = if empty {
            render_removal(&present)
        } else {
            render(state, &present, self.v6)
        };
        state.jumps_in_place = false;
        self.restore(&batch).await?;
        state.jumps_in_place = !empty;
        Ok(())
    }

    /// Which of our jumps from the built-in chains are already there, read
    /// from `iptables-save` of the two tables.
    async fn jumps_present(&self) -> Result<Vec<&'static Jump>, FirewallError> {
        let mut present = Vec::new();
        for table in ["filter", "nat"] {
            let out = run(&self.save, &["-t", table], None).await?;
            present.extend(
                JUMPS
                    .iter()
                    .filter(|j| j.table == table && out.lines().any(|l| l == j.rule)),
            );
        }
        Ok(present)
    }

    async fn restore(&self, batch: &str) -> Result<(), FirewallError> {
        tracing::debug!(batch, v6 = self.v6, "iptables-restore");
        run(&self.restore, &["-w", "--noflush"], Some(batch)).await?;
        Ok(())
    }
}

/// Runs a tool, feeding it `input`; its stdout, or its stderr as the error.
async fn run(tool: &Path, args: &[&str], input: Option<&str>) -> Result<String, FirewallError> {
    use tokio::io::AsyncWriteExt;
    let name = tool.display().to_string();
    let mut child = tokio::process::Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| FirewallError::Spawn {
            tool: name.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(input) = input {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|source| FirewallError::Spawn {
                    tool: name.clone(),
                    source,
                })?;
        }
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| FirewallError::Spawn {
            tool: name.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(FirewallError::Tool {
            tool: name,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lets DNAT of the host's loopback addresses out through the bridge, so
/// `127.0.0.1:PORT` reaches a published port (as Docker does without its
/// userland proxy).
fn route_localnet(bridge: &str) -> Result<(), FirewallError> {
    let path = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    std::fs::write(&path, "1").map_err(|source| FirewallError::Sysctl { path, source })
}

/// A jump from a built-in chain into one of ours, as `iptables-save`
/// prints it.
struct Jump {
    table: &'static str,
    rule: &'static str,
}

static JUMPS: [Jump; 4] = [
    Jump {
        table: "filter",
        rule: "-A FORWARD -j BERTH-FORWARD",
    },
    Jump {
        table: "nat",
        rule: "-A PREROUTING -m addrtype --dst-type LOCAL -j BERTH",
    },
    Jump {
        table: "nat",
        rule: "-A OUTPUT -m addrtype --dst-type LOCAL -j BERTH",
    },
    Jump {
        table: "nat",
        rule: "-A POSTROUTING -j BERTH-POSTROUTING",
    },
];

const FILTER_CHAINS: [&str; 4] = [
    "BERTH-FORWARD",
    "BERTH",
    "BERTH-ISOLATION-1",
    "BERTH-ISOLATION-2",
];
const NAT_CHAINS: [&str; 2] = ["BERTH", "BERTH-POSTROUTING"];

/// The missing jumps, inserted first in their built-in chain.
fn add_jumps(out: &mut String, table: &str, present: &[&Jump]) {
    for j in JUMPS.iter().filter(|j| j.table == table) {
        if !present.iter().any(|p| p.rule == j.rule) {
            let rule = j.rule.trim_start_matches("-A ");
            let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
            let _ = writeln!(out, "-I {chain} 1 {rest}");
        }
    }
}

/// The whole of our chains for `state`: each declared (so flushed) and
/// refilled in one transaction per table.
fn render(state: &State, present: &[&Jump], v6: bool) -> String {
    let mut f = String::from("*filter\n");
    for c in FILTER_CHAINS {
        let _ = writeln!(f, ":{c} - [0:0]");
    }
    add_jumps(&mut f, "filter", present);
    f.push_str("-A BERTH-FORWARD -j BERTH-ISOLATION-1\n");
    let mut iso1 = String::new();
    let mut iso2 = String::new();
    for n in state.networks.values() {
        let br = &n.bridge;
        let _ = writeln!(
            f,
            "-A BERTH-FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        let _ = writeln!(f, "-A BERTH-FORWARD -o {br} -j BERTH");
        if !n.internal {
            let _ = writeln!(f, "-A BERTH-FORWARD -i {br} ! -o {br} -j ACCEPT");
        }
        let icc = if n.icc { "ACCEPT" } else { "DROP" };
        let _ = writeln!(f, "-A BERTH-FORWARD -i {br} -o {br} -j {icc}");
        if n.internal {
            let s = n.subnet.trunc();
            let _ = writeln!(iso1, "-A BERTH-ISOLATION-1 ! -s {s} -o {br} -j DROP");
            let _ = writeln!(iso1, "-A BERTH-ISOLATION-1 ! -d {s} -i {br} -j DROP");
        } else {
            let _ = writeln!(
                iso1,
                "-A BERTH-ISOLATION-1 -i {br} ! -o {br} -j BERTH-ISOLATION-2"
            );
            let _ = writeln!(iso2, "-A BERTH-ISOLATION-2 -o {br} -j DROP");
        }
    }
    f.push_str(&iso1);
    f.push_str("-A BERTH-ISOLATION-1 -j RETURN\n");
    f.push_str(&iso2);
    f.push_str("-A BERTH-ISOLATION-2 -j RETURN\n");

    let mut n = String::from("*nat\n");
    for c in NAT_CHAINS {
        let _ = writeln!(n, ":{c} - [0:0]");
    }
    add_jumps(&mut n, "nat", present);
    for net in state.networks.values() {
        let br = &net.bridge;
        if net.masquerade && !net.internal {
            let _ = writeln!(
                n,
                "-A BERTH-POSTROUTING -s {} ! -o {br} -j MASQUERADE",
                net.subnet.trunc()
            );
        }
        if !v6 {
            let _ = writeln!(
                n,
                "-A BERTH-POSTROUTING -s 127.0.0.0/8 -o {br} -j MASQUERADE"
            );
        }
        // hairpin: a container reaching a published port of its own bridge
        // (itself or a neighbour) through a host address is masqueraded,
        // so the answer comes back through the host to be un-NATed
        let _ = writeln!(
            n,
            "-A BERTH-POSTROUTING -s {} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE",
            net.subnet.trunc()
        );
    }
    for p in state.ports.values() {
        let (filter, nat) = port_rules(p, v6);
        for rule in filter {
            let _ = writeln!(f, "-A {rule}");
        }
        for rule in nat {
            let _ = writeln!(n, "-A {rule}");
        }
    }
    f.push_str("COMMIT\n");
    n.push_str("COMMIT\n");
    f + &n
}

/// The rules of one container's published ports (without `-A`): the
/// accepts (once per container port) and the DNATs.
fn port_rules(p: &PortRules, v6: bool) -> (BTreeSet<String>, Vec<String>) {
    let mut filter = BTreeSet::new();
    let mut nat = Vec::new();
    let host = if v6 { 128 } else { 32 };
    if p.container_ip.is_ipv6() != v6 {
        return (filter, nat);
    }
    for m in &p.mappings {
        let dst = match m.host_ip {
            None => String::new(),
            Some(ip) if ip.is_ipv6() == v6 => format!("-d {ip}/{host} "),
            // a host address of the other family: the other firewall's
            Some(_) => continue,
        };
        let proto = m.proto;
        let (ip, cp, hp) = (p.container_ip, m.container_port, m.host_port);
        let to = match ip {
            IpAddr::V4(ip) => format!("{ip}:{cp}"),
            IpAddr::V6(ip) => format!("[{ip}]:{cp}"),
        };
        nat.push(format!(
            "BERTH {dst}-p {proto} -m {proto} --dport {hp} -j DNAT --to-destination {to}"
        ));
        filter.insert(format!(
            "BERTH -d {ip}/{host} -o {} -p {proto} -m {proto} --dport {cp} -j ACCEPT",
            p.bridge
        ));
    }
    (filter, nat)
}

/// One container's port rules added (`-A`) or deleted (`-D`) in place:
/// no chain is flushed, which is what makes a batch slow.
fn render_ports(p: &PortRules, op: &str, v6: bool) -> String {
    let (filter, nat) = port_rules(p, v6);
    let mut out = String::from("*filter\n");
    for rule in filter {
        let _ = writeln!(out, "{op} {rule}");
    }
    out.push_str("COMMIT\n*nat\n");
    for rule in nat {
        let _ = writeln!(out, "{op} {rule}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Everything of ours gone: the jumps that are there, then our chains.
fn render_removal(present: &[&Jump]) -> String {
    let mut out = String::new();
    for (table, chains) in [("filter", &FILTER_CHAINS[..]), ("nat", &NAT_CHAINS[..])] {
        let _ = writeln!(out, "*{table}");
        for j in present.iter().filter(|j| j.table == table) {
            let _ = writeln!(out, "{}", j.rule.replacen("-A ", "-D ", 1));
        }
        for c in chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for c in chains {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ports::Proto;

    fn net(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
        NetworkRules {
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            internal,
            icc: true,
            masquerade: true,
        }
    }

    fn state() -> State {
        let mut s = State::default();
        for n in [
            net("berth0", "172.30.0.1/16", false),
            net("br-int", "10.9.0.0/24", true),
        ] {
            s.networks.insert(n.bridge.clone(), n);
        }
        let p = PortRules {
            container: "c1".into(),
            container_ip: "172.30.0.2".parse().unwrap(),
            bridge: "berth0".into(),
            mappings: vec![
                PortMapping {
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                    proto: Proto::Tcp,
                },
                PortMapping {
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                    host_port: 5353,
                    container_port: 53,
                    proto: Proto::Udp,
                },
            ],
        };
        s.ports.insert(("c1".into(), "berth0".into()), p);
        s
    }

    #[test]
    fn rules_of_networks_and_ports() {
        let batch = render(&state(), &[], false);
        let lines: Vec<&str> = batch.lines().collect();
        for want in [
            "*filter",
            ":BERTH-FORWARD - [0:0]",
            "-I FORWARD 1 -j BERTH-FORWARD",
            "-A BERTH-FORWARD -j BERTH-ISOLATION-1",
            "-A BERTH-FORWARD -o berth0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A BERTH-FORWARD -i berth0 ! -o berth0 -j ACCEPT",
            "-A BERTH-FORWARD -i berth0 -o berth0 -j ACCEPT",
            "-A BERTH-ISOLATION-1 -i berth0 ! -o berth0 -j BERTH-ISOLATION-2",
            "-A BERTH-ISOLATION-2 -o berth0 -j DROP",
            "-A BERTH-ISOLATION-1 ! -s 10.9.0.0/24 -o br-int -j DROP",
            "-A BERTH-ISOLATION-1 ! -d 10.9.0.0/24 -i br-int -j DROP",
            "-A BERTH -d 172.30.0.2/32 -o berth0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "*nat",
            "-I PREROUTING 1 -m addrtype --dst-type LOCAL -j BERTH",
            "-I OUTPUT 1 -m addrtype --dst-type LOCAL -j BERTH",
            "-I POSTROUTING 1 -j BERTH-POSTROUTING",
            "-A BERTH-POSTROUTING -s 172.30.0.0/16 ! -o berth0 -j MASQUERADE",
            "-A BERTH-POSTROUTING -s 127.0.0.0/8 -o berth0 -j MASQUERADE",
            "-A BERTH -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.30.0.2:80",
            "-A BERTH -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.30.0.2:53",
            "-A BERTH-POSTROUTING -s 172.30.0.0/16 -o berth0 -m conntrack --ctstate DNAT -j MASQUERADE",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{batch}");
        }
        // an internal network: no way out, no masquerade, no isolation-2
        assert!(!batch.contains("-i br-int ! -o br-int -j ACCEPT"));
        assert!(!batch.contains("-s 10.9.0.0/24 ! -o br-int -j MASQUERADE"));
        assert!(!batch.contains("-A BERTH-ISOLATION-2 -o br-int"));
        // the RETURNs close the isolation chains, after their rules
        let pos = |l: &str| lines.iter().position(|x| *x == l).unwrap();
        assert!(
            pos("-A BERTH-ISOLATION-1 -j RETURN")
                > pos("-A BERTH-ISOLATION-1 ! -d 10.9.0.0/24 -i br-int -j DROP")
        );
        assert_eq!(batch.matches("COMMIT").count(), 2);
    }

    #[test]
    fn ports_in_place_add_and_delete_the_same_rules() {
        let s = state();
        let p = &s.ports[&("c1".to_string(), "berth0".to_string())];
        let add = render_ports(p, "-A", false);
        let del = render_ports(p, "-D", false);
        assert_eq!(add.replace("-A ", "-D "), del);
        assert!(!add.contains(" - [0:0]"), "no chain is flushed: {add}");
        // each rule of the whole batch for these ports, and no other
        let whole = render(&s, &[], false);
        for line in add.lines().filter(|l| l.starts_with("-A ")) {
            assert!(whole.lines().any(|w| w == line), "{line}");
        }
        assert_eq!(add.matches("-j DNAT").count(), 2);
        assert_eq!(add.matches("-j ACCEPT").count(), 2);
    }

    #[test]
    fn ipv6_rules_mirror_the_ipv4_ones() {
        let mut s = State::default();
        let n = net("br-six", "2001:db8::/64", false);
        s.networks.insert(n.bridge.clone(), n);
        let p = PortRules {
            container: "c6".into(),
            container_ip: "2001:db8::2".parse().unwrap(),
            bridge: "br-six".into(),
            mappings: vec![
                PortMapping {
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                    proto: Proto::Tcp,
                },
                PortMapping {
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                    host_port: 8081,
                    container_port: 81,
                    proto: Proto::Tcp,
                },
            ],
        };
        s.ports.insert(("c6".into(), "br-six".into()), p.clone());
        let batch = render(&s, &[], true);
        for want in [
            "-A BERTH-FORWARD -i br-six ! -o br-six -j ACCEPT",
            "-A BERTH-ISOLATION-2 -o br-six -j DROP",
            "-A BERTH-POSTROUTING -s 2001:db8::/64 ! -o br-six -j MASQUERADE",
            "-A BERTH -p tcp -m tcp --dport 8080 -j DNAT --to-destination [2001:db8::2]:80",
            "-A BERTH -d 2001:db8::2/128 -o br-six -p tcp -m tcp --dport 80 -j ACCEPT",
        ] {
            assert!(
                batch.lines().any(|l| l == want),
                "missing {want:?} in\n{batch}"
            );
        }
        // no IPv4 in an IPv6 batch
        assert!(!batch.contains("127.0.0"), "{batch}");
        assert!(!batch.contains("--dport 8081"), "{batch}");
        // and an IPv6 container is nothing to the IPv4 firewall
        assert!(!render_ports(&p, "-A", false).contains("DNAT"));
    }

    #[test]
    fn jumps_in_place_are_not_added_again() {
        let all: Vec<&Jump> = JUMPS.iter().collect();
        let batch = render(&state(), &all, false);
        assert!(!batch.contains("-I "), "{batch}");
    }

    #[test]
    fn icc_off_drops_between_containers() {
        let mut s = State::default();
        let mut n = net("br-x", "10.8.0.0/24", false);
        n.icc = false;
        n.masquerade = false;
        s.networks.insert(n.bridge.clone(), n);
        let batch = render(&s, &[], false);
        assert!(batch.contains("-A BERTH-FORWARD -i br-x -o br-x -j DROP\n"));
        assert!(!batch.contains("-s 10.8.0.0/24 ! -o br-x -j MASQUERADE"));
    }

    #[test]
    fn removal_deletes_the_jumps_there_and_our_chains() {
        let present: Vec<&Jump> = JUMPS.iter().filter(|j| j.table == "nat").collect();
        let batch = render_removal(&present);
        assert!(!batch.contains("-D FORWARD"));
        assert!(batch.contains("-D PREROUTING -m addrtype --dst-type LOCAL -j BERTH\n"));
        assert!(batch.contains("-D POSTROUTING -j BERTH-POSTROUTING\n"));
        for c in FILTER_CHAINS.iter().chain(NAT_CHAINS.iter()) {
            assert!(batch.contains(&format!("-X {c}\n")), "{c}");
        }
    }

    #[tokio::test]
    async fn disabled_does_nothing() {
        let fw = Firewall::new("/nonexistent/iptables", false);
        fw.setup_network(&net("b", "10.0.0.0/24", false))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_batch_is_not_remembered() {
        let fw = Firewall::new("/nonexistent/iptables", true);
        let e = fw
            .setup_network(&net("lo", "10.0.0.0/24", false))
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("run /nonexistent/iptables-save"),
            "{e}"
        );
        assert!(fw.state.lock().await.networks.is_empty());
    }
}
