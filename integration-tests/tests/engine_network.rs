//! Engine networking through the docker CLI and the raw API: the default
//! bridge, user networks with their subnets and addresses, connect and
//! disconnect of a running container, 50 containers and a clean IPAM
//! afterwards, live restore across `kill -9` of berthd, and bad input.
//!
//! berthd runs in a network namespace of the fixture's (see
//! [`Berthd`]), with `--dns` naming an address that is routed nowhere, so
//! nothing here reaches the host's network.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_engine::state::{Store, Table};
use integration_tests::engine::Berthd;
use integration_tests::wait_until;
use serde_json::{json, Value};

/// A name server for containers that no packet can reach.
const DNS: &str = "192.0.2.53";

fn start() -> Berthd {
    Berthd::start_networked(&["--dns", DNS])
}

fn inspect(d: &Berthd, what: &str) -> Value {
    let out = d.docker(&["inspect", what]).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("inspect's JSON");
    v[0].clone()
}

fn ip_of(d: &Berthd, container: &str, network: &str) -> String {
    let v = inspect(d, container);
    v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .expect("an address")
        .to_string()
}

/// The links in berthd's namespace.
fn links(d: &Berthd) -> String {
    let out = d
        .in_netns("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn veths(d: &Berthd) -> usize {
    links(d).lines().filter(|l| l.contains(" veth")).count()
}

/// The veths once there are `want` (or after 10 s): a container's veths go
/// with its namespace, which the kernel destroys in the background.
fn veths_settled(d: &Berthd, want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = veths(d);
        if n == want || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn netns_files(d: &Berthd) -> usize {
    std::fs::read_dir(d.exec_root().join("netns"))
        .map(|r| r.count())
        .unwrap_or(0)
}

fn api(d: &Berthd, method: &str, path: &str, body: Value) -> (u16, Value) {
    let text = body.to_string();
    let (status, out) = d
        .request(method, path, Some(text.as_bytes()))
        .expect("berthd answers");
    (status, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

#[test]
fn default_bridge_gives_addresses_that_reach_each_other() {
    let d = start();
    let ls = d
        .docker(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])
        .ok();
    let mut names: Vec<&str> = ls.stdout.lines().collect();
    names.sort();
    assert_eq!(names, ["bridge bridge", "host host", "none null"]);
    assert!(links(&d).contains("berth0"), "{}", links(&d));

    d.docker(&["run", "-d", "--name", "ca", "busybox", "sleep", "1000"])
        .ok();
    d.docker(&["run", "-d", "--name", "cb", "busybox", "sleep", "1000"])
        .ok();
    let a = inspect(&d, "ca");
    let ns = &a["NetworkSettings"];
    let ip = ns["IPAddress"].as_str().unwrap();
    assert!(ip.starts_with("172.17."), "{ns}");
    assert_eq!(ns["Gateway"], "172.17.0.1");
    assert_eq!(ns["IPPrefixLen"], 16);
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    let mac = format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        octets[0], octets[1], octets[2], octets[3]
    );
    assert_eq!(ns["MacAddress"], mac);
    assert_eq!(ns["Networks"]["bridge"]["IPAddress"], ip);
    assert!(std::path::Path::new(ns["SandboxKey"].as_str().unwrap()).exists());
    let bridge = d.docker(&["network", "inspect", "bridge"]).ok();
    let bridge: Value = serde_json::from_str(&bridge.stdout).unwrap();
    assert_eq!(bridge[0]["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    let members = &bridge[0]["Containers"];
    assert_eq!(members.as_object().unwrap().len(), 2, "{members}");
    assert_eq!(
        members[a["Id"].as_str().unwrap()]["IPv4Address"],
        format!("{ip}/16")
    );

    // From b to a by address, and a's own files.
    d.docker(&["exec", "cb", "ping", "-c", "1", "-W", "5", ip])
        .ok();
    let hosts = d.docker(&["exec", "ca", "cat", "/etc/hosts"]).ok().stdout;
    let hostname = a["Config"]["Hostname"].as_str().unwrap();
    assert!(hosts.contains(&format!("{ip}\t{hostname}")), "{hosts}");
    let resolv = d
        .docker(&["exec", "ca", "cat", "/etc/resolv.conf"])
        .ok()
        .stdout;
    assert!(resolv.contains(&format!("nameserver {DNS}")), "{resolv}");
    let route = d.docker(&["exec", "ca", "ip", "route"]).ok().stdout;
    assert!(route.contains("default via 172.17.0.1"), "{route}");

    // --add-host with host-gateway, --link on the default bridge.
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--add-host",
            "gw:host-gateway",
            "--link",
            "ca:alpha",
            "busybox",
            "sh",
            "-c",
            "cat /etc/hosts; ping -c 1 -W 5 alpha",
        ])
        .ok();
    assert!(out.stdout.contains("172.17.0.1\tgw"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("{ip}\talpha")),
        "{}",
        out.stdout
    );

    // ps --filter network=.
    let ps = d
        .docker(&["ps", "--filter", "network=bridge", "--format", "{{.Names}}"])
        .ok();
    let mut on: Vec<&str> = ps.stdout.lines().collect();
    on.sort();
    assert_eq!(on, ["ca", "cb"]);

    // A stopped container's endpoint and namespace go.
    d.docker(&["stop", "-t", "0", "ca"]).ok();
    let a = inspect(&d, "ca");
    assert_eq!(a["NetworkSettings"]["IPAddress"], "");
    assert_eq!(veths_settled(&d, 1), 1, "{}", links(&d));
    assert_eq!(netns_files(&d), 1);
    d.docker(&["start", "ca"]).ok();
    assert_eq!(veths_settled(&d, 2), 2);
}

#[test]
fn user_networks_with_given_subnets_addresses_and_options() {
    let d = start();
    let id = d
        .docker(&[
            "network",
            "create",
            "--subnet",
            "10.77.0.0/24",
            "--ip-range",
            "10.77.0.128/25",
            "--label",
            "team=blue",
            "-o",
            "com.docker.network.bridge.name=br-test",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "n1",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    assert!(links(&d).contains("br-test"), "{}", links(&d));
    let net = inspect_network(&d, "n1");
    assert_eq!(net["Id"], id.as_str());
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(net["Scope"], "local");
    assert_eq!(
        net["IPAM"]["Config"],
        // dockerd shows no gateway for a subnet given without one
        json!([{"Subnet": "10.77.0.0/24", "IPRange": "10.77.0.128/25"}])
    );
    assert_eq!(net["Labels"], json!({"team": "blue"}));

    d.docker(&[
        "run",
        "-d",
        "--name",
        "cc",
        "--network",
        "n1",
        "--ip",
        "10.77.0.50",
        "--network-alias",
        "web",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "ce",
        "--network",
        "n1",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(ip_of(&d, "cc", "n1"), "10.77.0.50");
    assert_eq!(ip_of(&d, "ce", "n1"), "10.77.0.128");
    let c = inspect(&d, "cc");
    let ep = &c["NetworkSettings"]["Networks"]["n1"];
    assert_eq!(ep["NetworkID"], id.as_str());
    assert_eq!(ep["Aliases"], json!(["web"]));
    let dns: Vec<&str> = ep["DNSNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(dns.contains(&"cc") && dns.contains(&"web"), "{ep}");
    let mtu = d
        .docker(&["exec", "cc", "cat", "/sys/class/net/eth0/mtu"])
        .ok();
    assert_eq!(mtu.stdout.trim(), "1400");
    d.docker(&["exec", "ce", "ping", "-c", "1", "-W", "5", "10.77.0.50"])
        .ok();
    let net = inspect_network(&d, "n1");
    assert_eq!(net["Containers"].as_object().unwrap().len(), 2);

    // Filters of ls, and rm refused while in use.
    let ls = d
        .docker(&[
            "network",
            "ls",
            "-f",
            "type=custom",
            "--format",
            "{{.Name}}",
        ])
        .ok();
    assert_eq!(ls.stdout.trim(), "n1");
    let ls = d
        .docker(&["network", "ls", "-f", "label=team=blue", "-q"])
        .ok();
    assert_eq!(ls.stdout.trim(), &id[..12]);
    d.docker(&["network", "rm", "n1"])
        .fails_with(1, "has active endpoints");
    d.docker(&["rm", "-f", "cc", "ce"]).ok();
    d.docker(&["network", "rm", "n1"]).ok();
    bridge_gone(&d, "br-test");
    assert_eq!(veths_settled(&d, 0), 0);
}

/// Waits for a removed network's bridge to go: berthd deletes it after
/// the removal answered.
fn bridge_gone(d: &Berthd, bridge: &str) {
    let has = |l: &str| l.split(": ").nth(1).is_some_and(|n| n == bridge);
    wait_until(&format!("{bridge} to go"), Duration::from_secs(10), || {
        !links(d).lines().any(has)
    });
}

#[test]
fn a_removed_networks_bridge_goes_after_the_answer_and_after_a_crash() {
    let mut d = start();
    let create = |d: &Berthd, name: &str, bridge: &str, subnet: &str| {
        d.docker(&[
            "network",
            "create",
            "--subnet",
            subnet,
            "-o",
            &format!("com.docker.network.bridge.name={bridge}"),
            name,
        ])
        .ok();
    };
    // Made again at once, with the bridge's name and subnet: the new
    // network waits for the old bridge to go, and keeps its own.
    create(&d, "again", "br-again", "10.81.0.0/24");
    d.docker(&["network", "rm", "again"]).ok();
    create(&d, "again", "br-again", "10.81.0.0/24");
    std::thread::sleep(Duration::from_millis(300));
    let addr = d
        .in_netns("ip")
        .args(["-o", "-4", "addr", "show", "dev", "br-again"])
        .output()
        .expect("ip addr");
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("10.81.0.1/24"), "{addr}\n{}", links(&d));
    d.docker(&[
        "run",
        "--rm",
        "--network",
        "again",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "10.81.0.1",
    ])
    .ok();
    d.docker(&["network", "rm", "again"]).ok();
    bridge_gone(&d, "br-again");

    // A crash between the answer and the deletion: the next start deletes
    // the bridge its tombstone names, unless a network has that bridge.
    create(&d, "kept", "br-kept", "10.82.0.0/24");
    assert!(d.stop().is_some_and(|s| s.success()), "{}", d.log());
    let ip = |args: &[&str]| {
        let ok = d.in_netns("ip").args(args).status().expect("ip");
        assert!(ok.success(), "ip {args:?}");
    };
    ip(&["link", "add", "br-tomb", "type", "bridge"]);
    ip(&["addr", "add", "10.83.0.1/24", "dev", "br-tomb"]);
    let database = d.data_root().join("engine/engine.redb");
    let tombstones = |add: bool| {
        let store = Store::open(&database).expect("the engine's database");
        if add {
            for bridge in ["br-tomb", "br-kept"] {
                store
                    .put(
                        Table::RemovedBridges,
                        bridge,
                        &"a removed network".to_string(),
                    )
                    .unwrap();
            }
        }
        store.list::<String>(Table::RemovedBridges).unwrap().len()
    };
    assert_eq!(tombstones(true), 2);
    d.spawn();
    assert!(links(&d).contains("br-kept"), "{}", links(&d));
    bridge_gone(&d, "br-tomb");
    d.docker(&["run", "--rm", "--network", "kept", "busybox", "true"])
        .ok();
    assert!(d.stop().is_some_and(|s| s.success()), "{}", d.log());
    assert_eq!(
        tombstones(false),
        0,
        "the tombstones are gone with the bridge"
    );
}

fn inspect_network(d: &Berthd, name: &str) -> Value {
    let out = d.docker(&["network", "inspect", name]).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("network inspect's JSON");
    v[0].clone()
}

#[test]
fn fifty_containers_get_fifty_addresses_and_leave_nothing() {
    let d = Berthd::start_networked(&["--dns", DNS, "--debug"]);
    d.docker(&["network", "create", "--subnet", "10.50.0.0/24", "many"])
        .ok();
    let mut ips = BTreeSet::new();
    for i in 0..50 {
        let name = format!("m{i}");
        d.docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "many",
            "busybox",
            "sleep",
            "1000",
        ])
        .ok();
    }
    for i in 0..50 {
        ips.insert(ip_of(&d, &format!("m{i}"), "many"));
    }
    assert_eq!(ips.len(), 50, "{ips:?}");
    // The time of each start's networking (namespace, veth, address,
    // route, files), as berthd logs it.
    let mut micros: Vec<u64> = d
        .log()
        .lines()
        .filter_map(|l| l.split("network_setup_us=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    micros.sort();
    assert_eq!(micros.len(), 50, "network_setup_us lines");
    eprintln!(
        "network_setup_us: median {} p90 {} max {}",
        micros[25], micros[45], micros[49]
    );
    for field in ["netns_us=", "endpoints_us="] {
        let mut part: Vec<u64> = d
            .log()
            .lines()
            .filter_map(|l| l.split(field).nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse().ok())
            .collect();
        part.sort();
        eprintln!("{field} median {}", part.get(25).copied().unwrap_or(0));
    }
    assert!(ips.iter().all(|ip| ip.starts_with("10.50.0.")));
    assert_eq!(veths_settled(&d, 50), 50);
    assert_eq!(netns_files(&d), 50);
    let names: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    d.docker(&args).ok();
    let net = inspect_network(&d, "many");
    assert_eq!(net["Containers"], json!({}));
    assert_eq!(veths_settled(&d, 0), 0, "{}", links(&d));
    assert_eq!(netns_files(&d), 0);
    d.docker(&["network", "rm", "many"]).ok();
    assert_eq!(
        d.docker(&["network", "ls", "-q"])
            .ok()
            .stdout
            .lines()
            .count(),
        3
    );
}

#[test]
fn connect_and_disconnect_take_effect_inside() {
    let d = start();
    d.docker(&["network", "create", "--subnet", "10.78.0.0/24", "side"])
        .ok();
    d.docker(&["run", "-d", "--name", "ca", "busybox", "sleep", "1000"])
        .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "side",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&[
        "network",
        "connect",
        "--ip",
        "10.78.0.9",
        "--alias",
        "x",
        "side",
        "ca",
    ])
    .ok();
    let addrs = d
        .docker(&["exec", "ca", "ip", "-o", "-4", "addr"])
        .ok()
        .stdout;
    assert!(
        addrs.contains("eth1") && addrs.contains("10.78.0.9/24"),
        "{addrs}"
    );
    assert_eq!(ip_of(&d, "ca", "side"), "10.78.0.9");
    d.docker(&["exec", "peer", "ping", "-c", "1", "-W", "5", "10.78.0.9"])
        .ok();
    d.docker(&["network", "connect", "side", "ca"])
        .fails_with(1, "already exists in network side");
    d.docker(&["network", "disconnect", "side", "ca"]).ok();
    let addrs = d
        .docker(&["exec", "ca", "ip", "-o", "-4", "addr"])
        .ok()
        .stdout;
    assert!(!addrs.contains("10.78.0.9"), "{addrs}");
    assert!(inspect(&d, "ca")["NetworkSettings"]["Networks"]["side"].is_null());
    d.docker(&["network", "disconnect", "side", "ca"])
        .fails_with(1, "is not connected to network side");

    // A stopped container: the change is for its next start.
    d.docker(&["stop", "-t", "0", "ca"]).ok();
    d.docker(&["network", "connect", "side", "ca"]).ok();
    d.docker(&["start", "ca"]).ok();
    let addrs = d
        .docker(&["exec", "ca", "ip", "-o", "-4", "addr"])
        .ok()
        .stdout;
    assert!(addrs.contains("eth0") && addrs.contains("eth1"), "{addrs}");
    assert!(ip_of(&d, "ca", "side").starts_with("10.78.0."));
}

#[test]
fn addresses_survive_kill_9_of_berthd() {
    let mut d = start();
    d.docker(&["network", "create", "--subnet", "10.79.0.0/24", "keep"])
        .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "ca",
        "--network",
        "keep",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "cb",
        "--network",
        "keep",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "brief",
        "--network",
        "keep",
        "busybox",
        "sleep",
        "2",
    ])
    .ok();
    let ip_a = ip_of(&d, "ca", "keep");
    let ip_b = ip_of(&d, "cb", "keep");
    let brief_pid: i64 = inspect(&d, "brief")["State"]["Pid"].as_i64().unwrap();
    d.kill9();
    wait_until("brief to exit", Duration::from_secs(20), || {
        !integration_tests::pid_alive(brief_pid)
    });
    d.spawn();
    wait_until("brief recorded as exited", Duration::from_secs(20), || {
        inspect(&d, "brief")["State"]["Status"] == "exited"
    });
    assert_eq!(ip_of(&d, "ca", "keep"), ip_a);
    assert_eq!(ip_of(&d, "cb", "keep"), ip_b);
    d.docker(&["exec", "cb", "ping", "-c", "1", "-W", "5", &ip_a])
        .ok();
    let net = inspect_network(&d, "keep");
    assert_eq!(net["Containers"].as_object().unwrap().len(), 2, "{net}");
    assert_eq!(veths_settled(&d, 2), 2, "{}", links(&d));
    assert_eq!(netns_files(&d), 2);
    // A new container does not get a kept address.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "cc",
        "--network",
        "keep",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let ip_c = ip_of(&d, "cc", "keep");
    assert!(ip_c != ip_a && ip_c != ip_b, "{ip_c}");
}

#[test]
fn bad_input_gets_dockers_answers_and_leaves_nothing() {
    let d = start();
    let create = |body: Value| api(&d, "POST", "/networks/create", body);
    let (s, _) = create(json!({"Name": "ok", "IPAM": {"Config": [{"Subnet": "10.80.0.0/16"}]}}));
    assert_eq!(s, 201);
    let before = links(&d);
    let (s, v) = create(json!({"Name": "ok"}));
    assert_eq!(
        (s, v["message"].as_str().unwrap()),
        (409, "network with name ok already exists")
    );
    let (s, v) = create(json!({"Name": "over", "IPAM": {"Config": [{"Subnet": "10.80.5.0/24"}]}}));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("overlaps"), "{v}");
    let (s, v) = create(
        json!({"Name": "gw", "IPAM": {"Config": [{"Subnet": "10.81.0.0/24", "Gateway": "10.82.0.1"}]}}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("10.82.0.1"), "{v}");
    let (s, v) = create(json!({"Name": "sub", "IPAM": {"Config": [{"Subnet": "10.83.0.0/99"}]}}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = create(json!({"Name": "drv", "Driver": "nosuch"}));
    assert_eq!(s, 404, "{v}");
    assert_eq!(links(&d), before, "a refused create left a device");
    let ls = d.docker(&["network", "ls", "-q"]).ok();
    assert_eq!(ls.stdout.lines().count(), 4);

    let (s, v) = api(&d, "DELETE", "/networks/bridge", json!({}));
    assert_eq!(
        (s, v["message"].as_str().unwrap()),
        (403, "bridge is a pre-defined network and cannot be removed")
    );
    let (s, _) = api(&d, "DELETE", "/networks/nosuch", json!({}));
    assert_eq!(s, 404);
    let (s, _) = api(&d, "GET", "/networks/nosuch", json!({}));
    assert_eq!(s, 404);
    // (The docker CLI takes any 404 of create for a missing image.)
    let (s, v) = api(
        &d,
        "POST",
        "/containers/create",
        json!({"Image": "busybox", "HostConfig": {"NetworkMode": "nosuch"}}),
    );
    assert_eq!(
        (s, v["message"].as_str().unwrap()),
        (404, "network nosuch not found")
    );
    d.docker(&[
        "run",
        "-d",
        "--name",
        "ca",
        "--network",
        "ok",
        "--ip",
        "10.80.0.7",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    // The same address again: refused at start, nothing left of it.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "cb",
        "--network",
        "ok",
        "--ip",
        "10.80.0.7",
        "busybox",
        "sleep",
        "1000",
    ])
    .fails_with(125, "Address already in use");
    d.docker(&[
        "run",
        "--rm",
        "--network",
        "ok",
        "--ip",
        "10.99.0.7",
        "busybox",
        "true",
    ])
    .fails_with(125, "10.99.0.7");
    assert_eq!(veths_settled(&d, 1), 1, "{}", links(&d));
    assert_eq!(netns_files(&d), 1);
    let (s, v) = api(
        &d,
        "POST",
        "/networks/nosuch/connect",
        json!({"Container": "ca"}),
    );
    assert_eq!(s, 404, "{v}");
    let (s, v) = api(&d, "DELETE", "/networks/ok", json!({}));
    assert_eq!(s, 409, "{v}");
    let (s, v) = api(&d, "POST", "/networks/prune", json!({}));
    assert_eq!((s, &v["NetworksDeleted"]), (200, &json!([])));
    d.docker(&["rm", "-f", "ca", "cb"]).ok();
    let (s, v) = api(&d, "POST", "/networks/prune", json!({}));
    assert_eq!((s, &v["NetworksDeleted"]), (200, &json!(["ok"])));
}

#[test]
fn names_on_user_networks_isolation_and_internal() {
    let d = start();
    d.docker(&["network", "create", "--subnet", "10.61.0.0/24", "front"])
        .ok();
    d.docker(&["network", "create", "--subnet", "10.62.0.0/24", "back"])
        .ok();
    d.docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.63.0.0/24",
        "closed",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "site",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "other",
        "--network",
        "back",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let web_ip = ip_of(&d, "web", "front");
    let resolv = d
        .docker(&["exec", "client", "cat", "/etc/resolv.conf"])
        .ok()
        .stdout;
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    for name in ["web", "site", "web.front"] {
        let out = d.docker(&["exec", "client", "nslookup", name]).ok().stdout;
        assert!(out.contains(&web_ip), "{name}: {out}");
        d.docker(&["exec", "client", "ping", "-c", "1", "-W", "5", name])
            .ok();
    }
    // A --link alias on a user network is a name.
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--network",
            "front",
            "--link",
            "web:db",
            "busybox",
            "nslookup",
            "db",
        ])
        .ok()
        .stdout;
    assert!(out.contains(&web_ip), "{out}");
    // Another network neither resolves nor reaches them.
    d.docker(&["exec", "other", "nslookup", "web"])
        .fails_with(1, "");
    let reach = d.docker(&["exec", "other", "ping", "-c", "1", "-W", "2", &web_ip]);
    assert_ne!(reach.code, 0, "another network reached {web_ip}");
    // An internal network has no route out.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "shut",
        "--network",
        "closed",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let route = d.docker(&["exec", "shut", "ip", "route"]).ok().stdout;
    assert!(!route.contains("default"), "{route}");
}

#[test]
fn published_ports_and_names_survive_kill_9() {
    let mut d = start();
    d.docker(&["network", "create", "--subnet", "10.64.0.0/24", "pub"])
        .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "httpd",
        "--network",
        "pub",
        "-p",
        "127.0.0.1:18080:80",
        "busybox",
        "sh",
        "-c",
        "echo hello > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "asker",
        "--network",
        "pub",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let fetch = |d: &Berthd| {
        let out = d
            .in_netns("wget")
            .args(["-q", "-O", "-", "-T", "5", "http://127.0.0.1:18080/"])
            .output()
            .expect("wget");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(
        "httpd answers on 127.0.0.1:18080",
        Duration::from_secs(20),
        || fetch(&d) == "hello\n",
    );
    let port = d.docker(&["port", "httpd"]).ok().stdout;
    assert_eq!(port.trim(), "80/tcp -> 127.0.0.1:18080");
    // The port is taken: a second container fails at start, nothing left.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "twin",
        "--network",
        "pub",
        "-p",
        "127.0.0.1:18080:80",
        "busybox",
        "sleep",
        "1000",
    ])
    .fails_with(125, "18080");
    assert_eq!(veths_settled(&d, 2), 2, "{}", links(&d));
    d.kill9();
    d.spawn();
    assert_eq!(fetch(&d), "hello\n");
    let out = d
        .docker(&["exec", "asker", "nslookup", "httpd"])
        .ok()
        .stdout;
    assert!(out.contains(&ip_of(&d, "httpd", "pub")), "{out}");
    d.docker(&["rm", "-f", "httpd", "asker", "twin"]).ok();
    assert_eq!(veths_settled(&d, 0), 0, "{}", links(&d));
}

#[test]
fn berth_network_commands_answer_as_docker() {
    let d = start();
    let (code, id, err) = d.berth(&["network", "create", "--subnet", "10.66.0.0/24", "cli"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(id.trim().len(), 64);
    for args in [
        &["network", "ls"][..],
        &["network", "ls", "-q", "--no-trunc"],
        &[
            "network",
            "ls",
            "-f",
            "driver=bridge",
            "--format",
            "{{.Name}} {{.Driver}}",
        ],
        &["network", "inspect", "cli"],
        &[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{(index .IPAM.Config 0).Subnet}}",
            "cli",
        ],
    ] {
        let want = d.docker(args).ok().stdout;
        let (code, got, err) = d.berth(args);
        assert_eq!((code, got), (0, want), "berth {args:?}: {err}");
    }
    d.docker(&[
        "run",
        "-d",
        "--name",
        "served",
        "--network",
        "cli",
        "-p",
        "127.0.0.1:18181:80",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    for args in [&["port", "served"][..], &["port", "served", "80"]] {
        let want = d.docker(args).ok().stdout;
        let (code, got, err) = d.berth(args);
        assert_eq!((code, got), (0, want), "berth {args:?}: {err}");
    }
    let (code, _, err) = d.berth(&["network", "connect", "--alias", "srv", "bridge", "served"]);
    assert_ne!(code, 0);
    assert!(err.contains("network-scoped alias"), "{err}");
    let (code, _, err) = d.berth(&["network", "rm", "cli"]);
    assert_eq!(code, 1);
    assert!(err.contains("has active endpoints"), "{err}");
    d.docker(&["rm", "-f", "served"]).ok();
    let (code, out, err) = d.berth(&["network", "rm", "cli"]);
    assert_eq!((code, out.trim()), (0, "cli"), "{err}");
}
