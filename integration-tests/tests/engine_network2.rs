//! Engine networking, the rest of Docker's behaviour: disconnect as
//! dockerd does it (the container keeps its mode), `disconnect --force`,
//! a MAC address on connect, IPAM's auxiliary addresses, a create's
//! `EndpointsConfig`; IPv6 networks (addresses, routes, inspect,
//! ip6tables rules); legacy links' environment and their removal;
//! network prune's filters and network events.
//!
//! berthd runs in a network namespace of the fixture's, with `--dns`
//! naming an address that is routed nowhere.

use integration_tests::engine::Berthd;
use serde_json::{json, Value};

const DNS: &str = "192.0.2.53";

fn start() -> Berthd {
    Berthd::start_networked(&["--dns", DNS])
}

fn inspect(d: &Berthd, what: &str) -> Value {
    let out = d.docker(&["inspect", what]).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("inspect's JSON");
    v[0].clone()
}

fn api(d: &Berthd, method: &str, path: &str, body: Value) -> (u16, Value) {
    let text = body.to_string();
    let (status, out) = d
        .request(method, path, Some(text.as_bytes()))
        .expect("berthd answers");
    (status, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

fn in_ns(d: &Berthd, program: &str, args: &[&str]) -> String {
    let out = d.in_netns(program).args(args).output().expect(program);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn network_names(c: &Value) -> Vec<String> {
    c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn disconnect_keeps_the_mode_and_endpoint_settings_are_dockers() {
    let d = start();
    // Auxiliary addresses: reserved, shown, never given.
    let (code, created) = api(
        &d,
        "POST",
        "/networks/create",
        json!({"Name": "n1", "IPAM": {"Config": [{
            "Subnet": "10.31.0.0/24",
            "AuxiliaryAddresses": {"router": "10.31.0.2", "printer": "10.31.0.3"}
        }]}}),
    );
    assert_eq!(code, 201, "{created}");
    let net = inspect(&d, "n1");
    assert_eq!(
        net["IPAM"]["Config"][0]["AuxiliaryAddresses"],
        json!({"router": "10.31.0.2", "printer": "10.31.0.3"})
    );
    assert_eq!(net["Options"], json!({}), "{net}");
    let (code, body) = api(
        &d,
        "POST",
        "/networks/create",
        json!({"Name": "bad", "IPAM": {"Config": [{
            "Subnet": "10.32.0.0/24", "AuxiliaryAddresses": {"x": "10.99.0.1"}
        }]}}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("aux-address"),
        "{body}"
    );

    d.docker(&[
        "run",
        "-d",
        "--network",
        "n1",
        "--name",
        "c1",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let c1 = inspect(&d, "c1");
    assert_eq!(
        c1["NetworkSettings"]["Networks"]["n1"]["IPAddress"],
        "10.31.0.4"
    );

    // Off the network its mode names: the mode stays, the network goes.
    d.docker(&["network", "disconnect", "n1", "c1"]).ok();
    let c1 = inspect(&d, "c1");
    assert_eq!(c1["HostConfig"]["NetworkMode"], "n1");
    assert!(network_names(&c1).is_empty(), "{c1}");
    let addrs = d.docker(&["exec", "c1", "ip", "-o", "addr"]).ok().stdout;
    assert!(!addrs.contains("10.31.0."), "{addrs}");
    d.docker(&["network", "disconnect", "n1", "c1"])
        .fails_with(1, "is not connected");
    // ... and connecting again is allowed.
    d.docker(&["network", "connect", "--ip", "10.31.0.9", "n1", "c1"])
        .ok();
    let addrs = d.docker(&["exec", "c1", "ip", "-o", "addr"]).ok().stdout;
    assert!(addrs.contains("10.31.0.9/24"), "{addrs}");
    d.docker(&["network", "connect", "n1", "c1"])
        .fails_with(1, "already exists");
    d.docker(&["restart", "-t", "0", "c1"]).ok();
    let c1 = inspect(&d, "c1");
    assert_eq!(network_names(&c1), ["n1"]);
    assert_eq!(
        c1["NetworkSettings"]["Networks"]["n1"]["IPAddress"],
        "10.31.0.9"
    );

    // A MAC address on connect, shown before the start and used at it.
    d.docker(&["create", "--name", "c2", "busybox", "sleep", "1000"])
        .ok();
    let (code, body) = api(
        &d,
        "POST",
        "/networks/n1/connect",
        json!({"Container": "c2", "EndpointConfig": {"MacAddress": "02:42:0a:1f:00:99"}}),
    );
    assert_eq!(code, 200, "{body}");
    let c2 = inspect(&d, "c2");
    assert_eq!(
        c2["NetworkSettings"]["Networks"]["n1"]["MacAddress"],
        "02:42:0a:1f:00:99"
    );
    d.docker(&["start", "c2"]).ok();
    let c2 = inspect(&d, "c2");
    assert_eq!(network_names(&c2), ["bridge", "n1"]);
    let mac = d
        .docker(&["exec", "c2", "cat", "/sys/class/net/eth1/address"])
        .ok()
        .stdout;
    assert_eq!(mac.trim(), "02:42:0a:1f:00:99");
    let (code, body) = api(
        &d,
        "POST",
        "/networks/n1/connect",
        json!({"Container": "c1", "EndpointConfig": {"MacAddress": "nonsense"}}),
    );
    assert!(code == 400 || code == 403, "{code} {body}");

    // A create's EndpointsConfig naming a user network with the default
    // mode: the container is on that network alone (dockerd 20.10).
    let (code, body) = api(
        &d,
        "POST",
        "/containers/create?name=c3",
        json!({"Image": "busybox", "Cmd": ["sleep", "1000"],
            "NetworkingConfig": {"EndpointsConfig": {"n1": {
                "Aliases": ["three"], "DriverOpts": {"k": "v"}}}}}),
    );
    assert_eq!(code, 201, "{body}");
    d.docker(&["start", "c3"]).ok();
    let c3 = inspect(&d, "c3");
    assert_eq!(network_names(&c3), ["n1"]);
    assert_eq!(
        c3["NetworkSettings"]["Networks"]["n1"]["DriverOpts"],
        json!({"k": "v"})
    );
    assert_eq!(
        c3["NetworkSettings"]["Networks"]["n1"]["Aliases"],
        json!(["three"])
    );
    let ping = d.docker(&["exec", "c1", "ping", "-c", "1", "-W", "5", "three"]);
    assert_eq!(ping.code, 0, "{}{}", ping.stdout, ping.stderr);

    // --force for a container that does not exist: nothing of it there.
    d.docker(&["network", "disconnect", "--force", "n1", "nosuch"])
        .fails_with(1, "nosuch");
    d.remove_all();
    d.docker(&["network", "rm", "n1"]).ok();
}

#[test]
fn ipv6_networks_give_addresses_routes_and_rules() {
    let d = start();
    d.docker(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.33.0.0/24",
        "--subnet",
        "2001:db8:33::/64",
        "n6",
    ])
    .ok();
    let net = inspect(&d, "n6");
    assert_eq!(net["EnableIPv6"], true);
    let configs = net["IPAM"]["Config"].as_array().unwrap().clone();
    assert!(
        configs.contains(&json!({"Subnet": "2001:db8:33::/64"})),
        "{configs:?}"
    );
    let bridge = net["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("br-{}", &net["Id"].as_str().unwrap()[..12]));
    let addrs = in_ns(&d, "ip", &["-6", "-o", "addr", "show", "dev", &bridge]);
    assert!(addrs.contains("2001:db8:33::1/64"), "{addrs}");

    d.docker(&[
        "run",
        "-d",
        "--network",
        "n6",
        "--name",
        "six-a",
        "-p",
        "8086:80",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--network",
        "n6",
        "--ip6",
        "2001:db8:33::f00d",
        "--name",
        "six-b",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let a = inspect(&d, "six-a");
    let on = &a["NetworkSettings"]["Networks"]["n6"];
    assert_eq!(on["GlobalIPv6Address"], "2001:db8:33::2", "{on}");
    assert_eq!(on["GlobalIPv6PrefixLen"], 64);
    assert_eq!(on["IPv6Gateway"], "2001:db8:33::1");
    let b = inspect(&d, "six-b");
    let on_b = &b["NetworkSettings"]["Networks"]["n6"];
    assert_eq!(on_b["GlobalIPv6Address"], "2001:db8:33::f00d");
    assert_eq!(on_b["IPAMConfig"]["IPv6Address"], "2001:db8:33::f00d");
    let members = inspect(&d, "n6")["Containers"].clone();
    assert_eq!(
        members[b["Id"].as_str().unwrap()]["IPv6Address"],
        "2001:db8:33::f00d/64"
    );
    // Inside: the address, the default route, each other by address and
    // by name, the hosts file.
    let inside = d
        .docker(&["exec", "six-a", "ip", "-6", "-o", "addr"])
        .ok()
        .stdout;
    assert!(inside.contains("2001:db8:33::2/64"), "{inside}");
    let routes = d
        .docker(&["exec", "six-a", "ip", "-6", "route"])
        .ok()
        .stdout;
    assert!(routes.contains("default via 2001:db8:33::1"), "{routes}");
    let ping = d.docker(&[
        "exec",
        "six-a",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "2001:db8:33::f00d",
    ]);
    assert_eq!(ping.code, 0, "{}{}", ping.stdout, ping.stderr);
    let hosts = d
        .docker(&["exec", "six-b", "cat", "/etc/hosts"])
        .ok()
        .stdout;
    assert!(hosts.contains("2001:db8:33::f00d\t"), "{hosts}");
    let aaaa = d
        .docker(&["exec", "six-a", "nslookup", "-type=AAAA", "six-b"])
        .ok()
        .stdout;
    assert!(aaaa.contains("2001:db8:33::f00d"), "{aaaa}");
    d.docker(&[
        "run",
        "--rm",
        "--network",
        "n6",
        "--ip6",
        "2001:db8:33::f00d",
        "busybox",
        "true",
    ])
    .fails_with(125, "Address already in use");

    // ip6tables mirrors the IPv4 rules, in berthd's namespace only.
    let rules = in_ns(&d, "ip6tables-save", &[]);
    for want in [
        format!("-A BERTH-POSTROUTING -s 2001:db8:33::/64 ! -o {bridge} -j MASQUERADE"),
        format!("-A BERTH-FORWARD -i {bridge} ! -o {bridge} -j ACCEPT"),
        "-A BERTH -p tcp -m tcp --dport 8086 -j DNAT --to-destination [2001:db8:33::2]:80".into(),
        format!("-A BERTH -d 2001:db8:33::2/128 -o {bridge} -p tcp -m tcp --dport 80 -j ACCEPT"),
    ] {
        assert!(
            rules.lines().any(|l| l == want),
            "missing {want:?} in\n{rules}"
        );
    }
    // The IPv4 rules are there too, and hold no IPv6.
    let rules4 = in_ns(&d, "iptables-save", &[]);
    assert!(rules4.contains("-s 10.33.0.0/24"), "{rules4}");
    assert!(!rules4.contains("2001:db8"), "{rules4}");

    // Bad input.
    d.docker(&["network", "create", "--ipv6", "nosubnet"])
        .fails_with(1, "IPv6 address pool");
    d.docker(&["network", "create", "--subnet", "10.34.0.0/24", "four"])
        .ok();
    d.docker(&[
        "run",
        "--rm",
        "--network",
        "four",
        "--ip6",
        "2001:db8:33::7",
        "busybox",
        "true",
    ])
    .fails_with(125, "IPv6");
    d.docker(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "2001:db8:33:0:1::/80",
        "clash",
    ])
    .fails_with(1, "overlaps");

    // Everything goes with the containers and the network.
    d.remove_all();
    d.docker(&["network", "rm", "n6", "four"]).ok();
    let rules = in_ns(&d, "ip6tables-save", &[]);
    assert!(!rules.contains("BERTH"), "{rules}");
    // The bridge goes after the removal answered.
    integration_tests::wait_until(
        "the IPv6 network's bridge to go",
        std::time::Duration::from_secs(10),
        || !in_ns(&d, "ip", &["-o", "link"]).contains(&bridge),
    );
}

#[test]
fn links_give_dockers_environment_and_go_with_rm_link() {
    let d = start();
    d.docker(&[
        "run", "-d", "--name", "db", "-e", "SECRET=x", "--expose", "80", "--expose", "53/udp",
        "busybox", "sleep", "1000",
    ])
    .ok();
    let ip = inspect(&d, "db")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    d.docker(&[
        "create", "--name", "web", "--link", "db:my-db", "busybox", "env",
    ])
    .ok();
    let out = d.docker(&["start", "-a", "web"]).ok().stdout;
    let env: Vec<&str> = out.lines().collect();
    for want in [
        format!("MY_DB_PORT=udp://{ip}:53"),
        format!("MY_DB_PORT_53_UDP=udp://{ip}:53"),
        format!("MY_DB_PORT_80_TCP=tcp://{ip}:80"),
        format!("MY_DB_PORT_80_TCP_ADDR={ip}"),
        "MY_DB_PORT_80_TCP_PORT=80".into(),
        "MY_DB_PORT_80_TCP_PROTO=tcp".into(),
        "MY_DB_NAME=/web/my-db".into(),
        "MY_DB_ENV_SECRET=x".into(),
    ] {
        assert!(env.contains(&want.as_str()), "missing {want} in {env:?}");
    }
    assert!(
        !env.iter().any(|e| e.starts_with("MY_DB_ENV_PATH")),
        "{env:?}"
    );
    let hosts = d
        .docker(&[
            "run",
            "--rm",
            "--link",
            "db:my-db",
            "busybox",
            "cat",
            "/etc/hosts",
        ])
        .ok()
        .stdout;
    assert!(hosts.contains(&format!("{ip}\tmy-db")), "{hosts}");

    // docker rm --link: the link goes, both containers stay.
    let (code, body) = d
        .request("DELETE", "/containers/web/my-db?link=1", None)
        .expect("berthd answers");
    assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
    let web = inspect(&d, "web");
    assert!(
        web["HostConfig"]["Links"]
            .as_array()
            .is_none_or(|l| l.is_empty()),
        "{}",
        web["HostConfig"]
    );
    let out = d.docker(&["start", "-a", "web"]).ok().stdout;
    assert!(!out.contains("MY_DB_"), "{out}");
    inspect(&d, "db");
    let (code, _) = d
        .request("DELETE", "/containers/web/nolink?link=1", None)
        .expect("berthd answers");
    assert_eq!(code, 404);

    // A link to a container not running: Docker's error at start.
    d.docker(&["stop", "-t", "0", "db"]).ok();
    d.docker(&["run", "--rm", "--link", "db:x", "busybox", "true"])
        .fails_with(125, "Cannot link to a non running container: /db AS /");
    d.remove_all();
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[test]
fn prune_filters_and_network_events() {
    let d = start();
    let since = unix_now() as u64;
    d.docker(&["network", "create", "--label", "tier=old", "old"])
        .ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = unix_now();
    d.docker(&[
        "network", "create", "--label", "tier=new", "--label", "keep", "new",
    ])
    .ok();
    d.docker(&["network", "create", "used"]).ok();
    d.docker(&[
        "run",
        "-d",
        "--network",
        "used",
        "--name",
        "uu",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();

    // until: only what was made before.
    let out = d
        .docker(&[
            "network",
            "prune",
            "-f",
            "--filter",
            &format!("until={between:.3}"),
        ])
        .ok()
        .stdout;
    assert!(out.contains("old") && !out.contains("new"), "{out}");
    // label! keeps what has the label; label takes only what has it.
    let out = d
        .docker(&["network", "prune", "-f", "--filter", "label!=keep"])
        .ok()
        .stdout;
    assert!(!out.contains("new"), "{out}");
    let out = d
        .docker(&["network", "prune", "-f", "--filter", "label=tier=new"])
        .ok()
        .stdout;
    assert!(out.contains("new"), "{out}");
    let (code, body) = api(
        &d,
        "POST",
        "/networks/prune?filters=%7B%22driver%22%3A%5B%22bridge%22%5D%7D",
        Value::Null,
    );
    assert_eq!(code, 400, "{body}");
    // In use: never pruned.
    d.docker(&["network", "prune", "-f"]).ok();
    inspect(&d, "used");

    // create, connect, disconnect, destroy.
    d.docker(&["network", "create", "ev"]).ok();
    d.docker(&["network", "connect", "ev", "uu"]).ok();
    d.docker(&["network", "disconnect", "ev", "uu"]).ok();
    d.docker(&["network", "rm", "ev"]).ok();
    let until = unix_now() as u64 + 1;
    let filters = "%7B%22type%22%3A%5B%22network%22%5D%2C%22network%22%3A%5B%22ev%22%5D%7D";
    let (code, body) = d
        .request(
            "GET",
            &format!("/events?since={since}&until={until}&filters={filters}"),
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    let u = inspect(&d, "uu")["Id"].as_str().unwrap().to_string();
    let events: Vec<Value> = String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["Action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["create", "connect", "disconnect", "destroy"],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["Type"], "network");
        assert_eq!(e["Actor"]["Attributes"]["name"], "ev");
    }
    assert_eq!(events[1]["Actor"]["Attributes"]["container"], u.as_str());
    assert_eq!(events[2]["Actor"]["Attributes"]["container"], u.as_str());
    d.remove_all();
}
