//! The engine's network modules on real bridges, veths, namespaces and
//! rules: published ports through the firewall's NAT (from the host's
//! loopback, the bridge address and another namespace; TCP and UDP), a port
//! in use, isolation and internal networks, the ruleset before and after
//! (and after a crash and a reconcile), and the embedded DNS server; then
//! the same through berthd and the docker CLI (`-p`, `-P`, UDP, `docker
//! port`, a port in use, the rules after the last container).
//!
//! Each test runs on a thread of its own that unshares its network
//! namespace: the "host" of the test. Its "containers" and clients are
//! processes under `unshare --net`, killed when the test ends, so every
//! device and rule dies with the namespaces, on failure too.

#![allow(
    clippy::unwrap_used,
    reason = "the helpers of a test: a failure is the test's panic"
)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_engine::network::dns::{DnsServer, NameLookup};
use berth_engine::network::firewall::{Firewall, NetworkRules, PortRules};
use berth_engine::network::ports::{PortAllocator, PortError, PortRequest, Proto};
use integration_tests::{require_root, wait_until};

const IPTABLES: &str = "/usr/sbin/iptables";

/// Runs `test` on a thread in a new network namespace, with a tokio
/// runtime on that thread (so every socket and child is in it).
fn in_test_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    require_root();
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare has no memory preconditions; it changes only this
        // thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        sh("ip link set lo up && echo 1 > /proc/sys/net/ipv4/ip_forward");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A shell command in the test's namespace that must succeed; its stdout.
fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_ok(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The ruleset, without comments and counters.
fn ruleset() -> String {
    sh("iptables-save")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rules of someone else, which must be there untouched at the end.
fn foreign_rules() -> String {
    sh("iptables -A FORWARD -s 192.0.2.1/32 -j ACCEPT && \
        iptables -t nat -A POSTROUTING -s 192.0.2.1/32 -j RETURN && \
        iptables -t nat -A PREROUTING -s 192.0.2.1/32 -j RETURN");
    ruleset()
}

/// A process in a network namespace of its own (a container's or a
/// client's), killed on drop.
struct Netns {
    child: Option<Child>,
    path: PathBuf,
}

impl Netns {
    fn spawn(args: &[&str]) -> Netns {
        let child = Command::new("unshare")
            .arg("--net")
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let path = PathBuf::from(format!("/proc/{}/ns/net", child.id()));
        let ns = Netns {
            child: Some(child),
            path,
        };
        let me = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        wait_until("the namespace", Duration::from_secs(5), || {
            std::fs::read_link(ns.path()).is_ok_and(|l| l != me)
        });
        ns
    }

    /// A namespace bound at `path` (a container's, berthd's).
    fn spawn_for_path(path: PathBuf) -> Netns {
        Netns { child: None, path }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Joins it to the test's namespace by a veth: `host` is the end left
    /// here (on `bridge` if given, else addressed `host_addr`); inside, the
    /// address `addr` and a default route via `gw`.
    fn wire(&self, host: &str, bridge: Option<&str>, host_addr: &str, addr: &str, gw: &str) {
        let pid = self.pid();
        sh(&format!(
            "ip link add {host} type veth peer name {host}c && ip link set {host}c netns {pid}"
        ));
        match bridge {
            Some(br) => sh(&format!("ip link set {host} master {br} up")),
            None => sh(&format!(
                "ip addr add {host_addr} dev {host} && ip link set {host} up"
            )),
        };
        self.run(&format!(
            "ip link set lo up && ip link set {host}c name eth0 && ip addr add {addr} dev eth0 \
             && ip link set eth0 up && ip route add default via {gw}"
        ));
    }

    /// A shell command inside that must succeed.
    fn run(&self, script: &str) -> String {
        sh(&format!("nsenter -t {} -n sh -c '{script}'", self.pid()))
    }

    fn ok(&self, script: &str) -> bool {
        sh_ok(&format!("nsenter -t {} -n sh -c '{script}'", self.pid()))
    }

    /// A closure on a thread that entered the namespace.
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns_of(self.path(), f)
    }
}

/// A closure on a thread that entered the network namespace at `path`.
fn in_netns_of<T: Send + 'static>(path: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(path).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd changes only this thread's
        // network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bridge(name: &str, addr: &str) {
    sh(&format!(
        "ip link add {name} type bridge && ip addr add {addr} dev {name} && ip link set {name} up"
    ));
}

fn network(bridge: &str, subnet: &str, internal: bool) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnet: subnet.parse().unwrap(),
        internal,
        icc: true,
        masquerade: true,
    }
}

fn request(host_port: Option<u16>, container_port: u16, proto: Proto) -> PortRequest {
    PortRequest {
        host_ip: None,
        host_ports: host_port.map(|p| p..=p),
        container_port,
        proto,
    }
}

/// A busybox httpd serving `text`, in a namespace of its own.
fn web_server(text: &str) -> (Netns, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), text).unwrap();
    let root = dir.path().display().to_string();
    let ns = Netns::spawn(&["busybox", "httpd", "-f", "-p", "80", "-h", &root]);
    (ns, dir)
}

fn curl(url: &str) -> String {
    sh(&format!("curl -sS --max-time 5 {url}"))
}

/// A UDP server in `ns` on `port` answering each datagram with "echo:" and it.
fn udp_echo(ns: &Netns, port: u16) {
    let socket = ns.within(move || UdpSocket::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, peer);
        }
    });
}

fn udp_ask(to: SocketAddr, what: &str) -> String {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(what.as_bytes(), to).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn published_ports_reach_a_container_and_leave_nothing() {
    in_test_netns(|| async {
        let before = foreign_rules();
        bridge("brt0", "10.88.0.1/24");
        let (web, _root) = web_server("hello through nat");
        web.wire("vweb", Some("brt0"), "", "10.88.0.2/24", "10.88.0.1");
        udp_echo(&web, 7000);
        let client = Netns::spawn(&["sleep", "600"]);
        client.wire("vcli", None, "10.77.0.1/24", "10.77.0.2/24", "10.77.0.1");

        let fw = Firewall::new(IPTABLES, true);
        let net = network("brt0", "10.88.0.0/24", false);
        fw.setup_network(&net).await.unwrap();
        let ports = PortAllocator::with_range(41000..=41099);
        let ip: IpAddr = "10.88.0.2".parse().unwrap();
        let mappings = ports
            .allocate(
                "web",
                ip,
                &[
                    request(Some(18080), 80, Proto::Tcp),
                    request(None, 80, Proto::Tcp),
                    request(Some(17000), 7000, Proto::Udp),
                    PortRequest {
                        host_ip: Some("127.0.0.1".parse().unwrap()),
                        ..request(Some(18090), 80, Proto::Tcp)
                    },
                ],
            )
            .unwrap();
        let ephemeral = mappings[1].host_port;
        assert!((41000..=41099).contains(&ephemeral));
        let rules = PortRules {
            container: "web".into(),
            container_ip: "10.88.0.2".parse().unwrap(),
            bridge: "brt0".into(),
            mappings,
        };
        fw.add_ports(&rules).await.unwrap();

        assert_eq!(curl("http://127.0.0.1:18080/"), "hello through nat");
        assert_eq!(curl("http://10.88.0.1:18080/"), "hello through nat");
        assert_eq!(
            curl(&format!("http://127.0.0.1:{ephemeral}/")),
            "hello through nat"
        );
        assert_eq!(
            client.run("curl -sS --max-time 5 http://10.77.0.1:18080/"),
            "hello through nat"
        );
        // another container on the bridge, through the host's address
        let peer = Netns::spawn(&["sleep", "600"]);
        peer.wire("vpeer", Some("brt0"), "", "10.88.0.3/24", "10.88.0.1");
        assert_eq!(
            peer.run("curl -sS --max-time 5 http://10.88.0.1:18080/"),
            "hello through nat"
        );
        // and the container itself, through its published port (hairpin;
        // its bridge port must send back where a frame came from)
        sh("ip link set dev vweb type bridge_slave hairpin on");
        assert_eq!(
            web.run("curl -sS --max-time 5 http://10.88.0.1:18080/"),
            "hello through nat"
        );
        // a HostIp publishes on that address only
        assert_eq!(curl("http://127.0.0.1:18090/"), "hello through nat");
        assert!(!sh_ok("curl -sS --max-time 2 http://10.88.0.1:18090/"));
        assert_eq!(
            udp_ask("127.0.0.1:17000".parse().unwrap(), "ping"),
            "echo:ping"
        );
        assert_eq!(
            udp_ask("10.88.0.1:17000".parse().unwrap(), "pong"),
            "echo:pong"
        );

        // the port is ours: another container, or anything else, is refused
        let e = ports
            .allocate("other", ip, &[request(Some(18080), 80, Proto::Tcp)])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 0.0.0.0:18080 failed: port is already allocated"
        );
        assert!(std::net::TcpListener::bind("0.0.0.0:18080").is_err());
        let squatter = std::net::TcpListener::bind("0.0.0.0:18081").unwrap();
        let e = ports
            .allocate(
                "other",
                ip,
                &[
                    request(Some(18082), 80, Proto::Tcp),
                    request(Some(18081), 80, Proto::Tcp),
                ],
            )
            .unwrap_err();
        assert!(matches!(e, PortError::Bind { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "failed to bind host port for 0.0.0.0:18081:10.88.0.2:80/tcp: address already in use"
        );
        assert!(ports.mappings("other").is_empty());
        drop(squatter);
        // nothing of "other" was kept: 18082 is free
        drop(std::net::TcpListener::bind("0.0.0.0:18082").unwrap());

        // a second container's ports are appended in place; the rules are
        // the same as those written whole from the same state
        let peer_rules = PortRules {
            container: "peer".into(),
            container_ip: "10.88.0.3".parse().unwrap(),
            bridge: "brt0".into(),
            mappings: ports
                .allocate(
                    "peer",
                    "10.88.0.3".parse().unwrap(),
                    &[request(Some(18085), 80, Proto::Tcp)],
                )
                .unwrap(),
        };
        let sorted = || {
            let mut lines: Vec<String> = ruleset().lines().map(String::from).collect();
            lines.sort();
            lines
        };
        let alone = ruleset();
        let started = std::time::Instant::now();
        fw.add_ports(&peer_rules).await.unwrap();
        eprintln!("add_ports in place: {:?}", started.elapsed());
        let appended = sorted();
        fw.reconcile(
            std::slice::from_ref(&net),
            &[rules.clone(), peer_rules.clone()],
        )
        .await
        .unwrap();
        assert_eq!(sorted(), appended);
        assert!(ruleset().contains("--dport 18085 -j DNAT --to-destination 10.88.0.3:80"));
        fw.remove_ports(&peer_rules).await.unwrap();
        ports.release("peer");
        assert_eq!(ruleset(), alone);

        // adding the same again changes nothing
        let full = ruleset();
        fw.add_ports(&rules).await.unwrap();
        fw.setup_network(&net).await.unwrap();
        assert_eq!(ruleset(), full);

        fw.remove_ports(&rules).await.unwrap();
        ports.release("web");
        assert!(!sh_ok("curl -sS --max-time 2 http://127.0.0.1:18080/"));
        fw.teardown_network(&net).await.unwrap();
        assert_eq!(ruleset(), before);
    });
}

#[test]
fn a_crash_then_reconcile_leaves_no_duplicate_and_nothing_stale() {
    in_test_netns(|| async {
        let before = foreign_rules();
        bridge("bra", "10.60.0.1/24");
        bridge("brb", "10.61.0.1/24");
        let a = network("bra", "10.60.0.0/24", false);
        let b = network("brb", "10.61.0.0/24", true);
        let ports = PortRules {
            container: "c".into(),
            container_ip: "10.60.0.2".parse().unwrap(),
            bridge: "bra".into(),
            mappings: PortAllocator::with_range(42000..=42000)
                .allocate(
                    "c",
                    "10.60.0.2".parse().unwrap(),
                    &[request(None, 80, Proto::Tcp)],
                )
                .unwrap(),
        };
        let first = Firewall::new(IPTABLES, true);
        first.setup_network(&a).await.unwrap();
        first.setup_network(&b).await.unwrap();
        first.add_ports(&ports).await.unwrap();
        let full = ruleset();
        drop(first);

        // berthd restarts: a new firewall that knows nothing yet
        let second = Firewall::new(IPTABLES, true);
        second
            .reconcile(&[a.clone(), b.clone()], std::slice::from_ref(&ports))
            .await
            .unwrap();
        assert_eq!(ruleset(), full);
        // b and the container went while berthd was down
        second
            .reconcile(std::slice::from_ref(&a), &[])
            .await
            .unwrap();
        let now = ruleset();
        assert!(!now.contains("brb"), "{now}");
        assert!(!now.contains("-j DNAT"), "{now}");
        assert!(now.contains("-A BERTH-POSTROUTING -s 10.60.0.0/24 ! -o bra -j MASQUERADE"));
        assert_eq!(now.matches("-j BERTH-FORWARD").count(), 1, "{now}");
        // someone wipes our filter chains and their jump: the next
        // operation finds it out and puts back all of them
        let kept = ruleset();
        sh(
            "iptables -D FORWARD -j BERTH-FORWARD && iptables -F BERTH-FORWARD \
            && iptables -X BERTH-FORWARD && iptables -F BERTH && iptables -X BERTH",
        );
        second.add_ports(&ports).await.unwrap();
        second.remove_ports(&ports).await.unwrap();
        assert_eq!(ruleset(), kept);
        second.reconcile(&[], &[]).await.unwrap();
        assert_eq!(ruleset(), before);
    });
}

#[test]
fn networks_are_isolated_and_internal_ones_have_no_way_out() {
    in_test_netns(|| async {
        let before = foreign_rules();
        bridge("brx", "10.70.0.1/24");
        bridge("bry", "10.71.0.1/24");
        bridge("brz", "10.72.0.1/24");
        let x1 = Netns::spawn(&["sleep", "600"]);
        x1.wire("vx1", Some("brx"), "", "10.70.0.2/24", "10.70.0.1");
        let x2 = Netns::spawn(&["sleep", "600"]);
        x2.wire("vx2", Some("brx"), "", "10.70.0.3/24", "10.70.0.1");
        let y = Netns::spawn(&["sleep", "600"]);
        y.wire("vy", Some("bry"), "", "10.71.0.2/24", "10.71.0.1");
        let z = Netns::spawn(&["sleep", "600"]);
        z.wire("vz", Some("brz"), "", "10.72.0.2/24", "10.72.0.1");
        let outside = Netns::spawn(&["sleep", "600"]);
        outside.wire("vout", None, "10.50.0.1/24", "10.50.0.2/24", "10.50.0.1");
        // the outside has no route back to the bridges: only a masqueraded
        // packet (from 10.50.0.1) gets an answer
        outside.run("ip route del default");

        let ping = |ns: &Netns, to: &str| ns.ok(&format!("busybox ping -c1 -W1 {to}"));
        // before the rules the bridges route to each other, not outside
        assert!(ping(&x1, "10.71.0.2"));
        assert!(!ping(&x1, "10.50.0.2"));
        let fw = Firewall::new(IPTABLES, true);
        let nets = [
            network("brx", "10.70.0.0/24", false),
            network("bry", "10.71.0.0/24", false),
            network("brz", "10.72.0.0/24", true),
        ];
        for n in &nets {
            fw.setup_network(n).await.unwrap();
        }
        assert!(ping(&x1, "10.70.0.3"), "same network");
        assert!(!ping(&x1, "10.71.0.2"), "x to y");
        assert!(!ping(&y, "10.70.0.2"), "y to x");
        assert!(ping(&x1, "10.50.0.2"), "x goes out, masqueraded");
        assert!(ping(&y, "10.50.0.2"), "y goes out");
        assert!(!ping(&z, "10.50.0.2"), "internal z goes out");
        assert!(!ping(&z, "10.70.0.2"), "internal z to x");
        assert!(!ping(&x1, "10.72.0.2"), "x to internal z");
        assert!(ping(&z, "10.72.0.1"), "internal z reaches its gateway");
        for n in &nets {
            fw.teardown_network(n).await.unwrap();
        }
        assert_eq!(ruleset(), before);
        assert!(ping(&x1, "10.71.0.2"));
    });
}

struct Names;

impl NameLookup for Names {
    fn lookup(&self, name: &str) -> Vec<IpAddr> {
        match name {
            "web" | "web.mynet" | "db-alias" => vec!["10.88.0.5".parse().unwrap()],
            _ => vec![],
        }
    }
}

/// A resolver the test runs (never the host's): every A query gets 192.0.2.99.
fn upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // a response
            reply[7] = 1; // one answer
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 99]);
            let _ = socket.send_to(&reply, peer);
        }
    });
    addr
}

#[test]
fn dns_in_a_container_namespace_answers_names_and_forwards_the_rest() {
    in_test_netns(|| async {
        let container = Netns::spawn(&["sleep", "600"]);
        container.run("ip link set lo up");
        let server = DnsServer::start(&container.path(), Arc::new(Names), vec![upstream()])
            .await
            .unwrap();
        // the queries run in a child process; let the runtime serve meanwhile
        let lookup = |name: &str| {
            let pid = container.pid();
            let name = name.to_string();
            tokio::task::spawn_blocking(move || {
                let out = Command::new("nsenter")
                    .args(["-t", &pid.to_string(), "-n", "busybox", "nslookup"])
                    .args([name.as_str(), "127.0.0.11"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        };
        for name in ["web", "web.mynet", "db-alias"] {
            let out = lookup(name).await.unwrap();
            assert!(out.contains("Address: 10.88.0.5"), "{name}: {out}");
        }
        let out = lookup("elsewhere.test").await.unwrap();
        assert!(out.contains("Address: 192.0.2.99"), "{out}");

        // TCP, from inside, for a known name
        let reply = tokio::task::spawn_blocking({
            let path = container.path();
            move || {
                in_netns_of(path, || {
                    let mut s = TcpStream::connect("127.0.0.11:53").unwrap();
                    // id 7, RD, one question: web A IN
                    let q: &[u8] = &[
                        0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1,
                    ];
                    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
                    msg.extend_from_slice(q);
                    s.write_all(&msg).unwrap();
                    let mut len = [0u8; 2];
                    s.read_exact(&mut len).unwrap();
                    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
                    s.read_exact(&mut reply).unwrap();
                    reply
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(&reply[..2], &[0, 7]);
        assert_eq!(reply[7], 1, "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[10, 88, 0, 5]);

        server.stop();
        // stopped: its sockets are closed, the address is free again
        let path = container.path();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let p = path.clone();
            if in_netns_of(p, || UdpSocket::bind("127.0.0.11:53").is_ok()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Through berthd and the docker CLI

use integration_tests::engine::Berthd;

/// The ruleset in berthd's namespace, without comments and counters.
fn berthd_rules(d: &Berthd) -> String {
    let out = d.in_netns("iptables-save").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn berthd_curl(d: &Berthd, url: &str) -> String {
    let out = d
        .in_netns("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect_field(d: &Berthd, what: &str, format: &str) -> String {
    d.docker(&["inspect", "-f", format, what])
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[test]
fn docker_run_publishes_tcp_udp_and_exposed_ports() {
    let d = Berthd::start_networked(&["--dns", "192.0.2.53"]);
    let before = berthd_rules(&d);
    let httpd = "echo hello > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:18080:80",
        "-p",
        "18081:80",
        "-p",
        "17000:7000/udp",
        "busybox",
        "sh",
        "-c",
        httpd,
    ])
    .ok();
    d.docker(&[
        "run", "-d", "--name", "auto", "--expose", "80", "-P", "busybox", "sh", "-c", httpd,
    ])
    .ok();
    let gateway = inspect_field(&d, "web", "{{.NetworkSettings.Networks.bridge.Gateway}}");
    wait_until("httpd answers", Duration::from_secs(20), || {
        berthd_curl(&d, "http://127.0.0.1:18080/") == "hello\n"
    });
    assert_eq!(
        berthd_curl(&d, &format!("http://{gateway}:18081/")),
        "hello\n"
    );
    // 127.0.0.1 only: not on the bridge's address
    assert_eq!(berthd_curl(&d, &format!("http://{gateway}:18080/")), "");

    let mut port = d.docker(&["port", "web"]).ok().stdout;
    port = port
        .lines()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        port,
        "7000/udp -> 0.0.0.0:17000\n80/tcp -> 0.0.0.0:18081\n80/tcp -> 127.0.0.1:18080"
    );
    // -P: the exposed port on an ephemeral one
    let auto = d.docker(&["port", "auto", "80/tcp"]).ok().stdout;
    let eph = auto.trim().rsplit(':').next().unwrap().to_string();
    assert!(auto.starts_with("0.0.0.0:"), "{auto}");
    wait_until("the -P port answers", Duration::from_secs(20), || {
        berthd_curl(&d, &format!("http://127.0.0.1:{eph}/")) == "hello\n"
    });

    // from another namespace, through berthd's
    let client = Netns::spawn(&["sleep", "600"]);
    let ip = |args: &[&str]| {
        let st = d.in_netns("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    let pid = client.pid().to_string();
    ip(&[
        "link", "add", "vdk", "type", "veth", "peer", "name", "vdkc", "netns", &pid,
    ]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", "vdk"]);
    ip(&["link", "set", "vdk", "up"]);
    client.run(
        "ip link set lo up && ip addr add 10.99.0.2/24 dev vdkc && ip link set vdkc up \
         && ip route add default via 10.99.0.1",
    );
    assert_eq!(
        client.run("curl -sS --max-time 5 http://10.99.0.1:18081/"),
        "hello\n"
    );

    // UDP: an echo server in the container's namespace
    let id = inspect_field(&d, "web", "{{.Id}}");
    let web_ns = Netns::spawn_for_path(d.exec_root().join("netns").join(&id));
    udp_echo(&web_ns, 7000);
    let berthd_ns = d.netns();
    let answer = in_netns_of(berthd_ns, || {
        udp_ask("127.0.0.1:17000".parse().unwrap(), "u")
    });
    assert_eq!(answer, "echo:u");

    // a port something else holds: Docker's error at start, nothing kept
    let squatter = in_netns_of(d.netns(), || {
        std::net::TcpListener::bind("0.0.0.0:18090").unwrap()
    });
    d.docker(&[
        "run", "-d", "--name", "late", "-p", "18090:80", "busybox", "sleep", "100",
    ])
    .fails_with(125, "address already in use");
    d.docker(&[
        "run", "-d", "--name", "twin", "-p", "18081:80", "busybox", "sleep", "100",
    ])
    .fails_with(
        125,
        "Bind for 0.0.0.0:18081 failed: port is already allocated",
    );
    drop(squatter);
    assert!(!berthd_rules(&d).contains("18090"));

    d.docker(&["rm", "-f", "web", "auto"]).ok();
    // the two that failed to start are left created, as dockerd leaves them
    d.docker(&["rm", "-f", "late", "twin"]);
    assert_eq!(berthd_rules(&d), before);
}

/// [`upstream`] at `addr` in berthd's namespace, on a veth of its own.
fn upstream_in(d: &Berthd, addr: &str) {
    for args in [
        vec![
            "link", "add", "updns", "type", "veth", "peer", "name", "updnsp",
        ],
        vec!["addr", "add", addr, "dev", "updns"],
        vec!["link", "set", "updnsp", "up"],
        vec!["link", "set", "updns", "up"],
    ] {
        let st = d.in_netns("ip").args(&args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    }
    let bind: SocketAddr = format!("{}:53", addr.split('/').next().unwrap())
        .parse()
        .unwrap();
    let socket = in_netns_of(d.netns(), move || UdpSocket::bind(bind).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80;
            reply[7] = 1;
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 99]);
            let _ = socket.send_to(&reply, peer);
        }
    });
}

#[test]
fn docker_containers_on_a_user_network_resolve_names_and_aliases() {
    let d = Berthd::start_networked(&["--dns", "192.0.2.53"]);
    upstream_in(&d, "10.98.0.1/32");
    d.docker(&["network", "create", "--subnet", "10.97.0.0/24", "front"])
        .ok();
    for (name, alias) in [("web", "site"), ("client", "asker")] {
        d.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "front",
            "--network-alias",
            alias,
            "--dns",
            "10.98.0.1",
            "busybox",
            "sleep",
            "1000",
        ])
        .ok();
    }
    let web_ip = inspect_field(&d, "web", "{{.NetworkSettings.Networks.front.IPAddress}}");
    for name in ["web", "site", "web.front", "WEB"] {
        let out = d.docker(&["exec", "client", "nslookup", name]).ok().stdout;
        assert!(out.contains(&format!("Address: {web_ip}")), "{name}: {out}");
    }
    let client_ip = inspect_field(
        &d,
        "client",
        "{{.NetworkSettings.Networks.front.IPAddress}}",
    );
    let out = d.docker(&["exec", "web", "nslookup", "asker"]).ok().stdout;
    assert!(out.contains(&client_ip), "{out}");
    // anything else goes to the container's --dns, which the test runs
    let out = d
        .docker(&["exec", "client", "nslookup", "elsewhere.test"])
        .ok()
        .stdout;
    assert!(out.contains("Address: 192.0.2.99"), "{out}");
    d.docker(&["rm", "-f", "web", "client"]).ok();
    d.docker(&["network", "rm", "front"]).ok();
}
