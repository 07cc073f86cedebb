#!/bin/bash
# Published ports: NAT rules (what berth writes) against a userspace proxy
# (Debian's docker-proxy, what dockerd runs per port by default), measured
# side by side: throughput (iperf3, 1 GiB), latency (TCP connect + a small
# request and its answer, many times) and memory (the proxy's RSS per port).
# Everything runs inside a network namespace made here: a bridge, a veth, a
# "container" namespace with the servers; nothing on the host is touched.
#   sudo bench/ports_nat_vs_proxy.sh
set -euo pipefail
if [ "${1:-}" != --inside ]; then
    exec unshare --net "$0" --inside
fi
for t in iperf3 docker-proxy iptables-restore busybox python3; do
    command -v "$t" >/dev/null || { echo "need $t (make deps)" >&2; exit 1; }
done
ip link set lo up
echo 1 >/proc/sys/net/ipv4/ip_forward
ip link add brb0 type bridge
ip addr add 10.123.0.1/24 dev brb0
ip link set brb0 up
echo 1 >/proc/sys/net/ipv4/conf/brb0/route_localnet

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# the "container": iperf3 and a tiny TCP answering server
unshare --net sleep 3600 &
c=$!
pids+=("$c")
sleep 0.2
ip link add vb0 type veth peer name vb0c
ip link set vb0c netns "$c"
ip link set vb0 master brb0 up
nsenter -t "$c" -n sh -c 'ip link set lo up; ip link set vb0c name eth0; ip addr add 10.123.0.2/24 dev eth0; ip link set eth0 up; ip route add default via 10.123.0.1'
nsenter -t "$c" -n iperf3 -s -p 5201 >/dev/null &
pids+=("$!")
nsenter -t "$c" -n python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(128)
while True:
    c, _ = s.accept(); c.recv(64); c.sendall(b"pong"); c.close()
' &
pids+=("$!")
sleep 0.3

# NAT: the rules berth's firewall writes for -p 15201:5201 and -p 17000:7000
iptables-restore --noflush <<'R'
*nat
:BERTH - [0:0]
:BERTH-POSTROUTING - [0:0]
-I PREROUTING 1 -m addrtype --dst-type LOCAL -j BERTH
-I OUTPUT 1 -m addrtype --dst-type LOCAL -j BERTH
-I POSTROUTING 1 -j BERTH-POSTROUTING
-A BERTH-POSTROUTING -s 10.123.0.0/24 ! -o brb0 -j MASQUERADE
-A BERTH-POSTROUTING -s 127.0.0.0/8 -o brb0 -j MASQUERADE
-A BERTH -p tcp -m tcp --dport 15201 -j DNAT --to-destination 10.123.0.2:5201
-A BERTH -p tcp -m tcp --dport 17000 -j DNAT --to-destination 10.123.0.2:7000
COMMIT
R
# the userspace proxy on other ports, to the same servers (it reports
# readiness on fd 3)
docker-proxy -proto tcp -host-ip 127.0.0.1 -host-port 25201 -container-ip 10.123.0.2 -container-port 5201 3>/dev/null &
pids+=("$!")
proxy_iperf=$!
docker-proxy -proto tcp -host-ip 127.0.0.1 -host-port 27000 -container-ip 10.123.0.2 -container-port 7000 3>/dev/null &
pids+=("$!")
proxy_small=$!
sleep 0.5

tput() { # PORT -> Gbit/s for 1 GiB from the container to the client (-R)
    iperf3 -c 127.0.0.1 -p "$1" -n 1G -R -J | python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
latency() { # PORT -> microseconds per connect + request + answer (median of 2000)
    python3 - "$1" <<'P'
import socket, sys, time
port = int(sys.argv[1]); t = []
for _ in range(2000):
    a = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"ping"); s.recv(16); s.close()
    t.append(time.perf_counter() - a)
t.sort(); print("%.0f" % (t[len(t)//2] * 1e6))
P
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "direct (no publishing): $(iperf3 -c 10.123.0.2 -p 5201 -n 1G -R -J | python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))') Gbit/s, $(python3 -c '
import socket,time
t=[]
for _ in range(2000):
    a=time.perf_counter(); s=socket.create_connection(("10.123.0.2",7000)); s.sendall(b"p"); s.recv(16); s.close(); t.append(time.perf_counter()-a)
t.sort(); print("%.0f" % (t[len(t)//2]*1e6))') us"
echo "NAT (berth):            $(tput 15201) Gbit/s, $(latency 17000) us, 0 kB per port"
echo "userspace docker-proxy: $(tput 25201) Gbit/s, $(latency 27000) us, $(rss "$proxy_iperf") kB + $(rss "$proxy_small") kB RSS for two ports"
