#!/usr/bin/env bash
# Engine networking, berthd against Debian's dockerd 20.10 (on a containerd of
# its own, runc), both driven by the real docker CLI, each daemon in a network
# namespace of its own made for the run (its bridge, veths, iptables rules and
# ip_forward live and die with that namespace; nothing reaches the host's
# network):
#
#   bench/network.sh
#
# 1. `docker run --rm IMAGE /bin/true` on the default network (bridge), the
#    rounds interleaved between the daemons (bench/tasks_timing.py).
#    Target: berthd <= 0.1 x dockerd.
# 2. The time berthd spends on a container's network, on its own: the same
#    run with `--network none` in the same rounds; the figure is the median
#    of (bridge - none). Target: under 5 ms.
# 3. Throughput of a published port: an iperf3 server in a container
#    published on 127.0.0.1 (`-p 127.0.0.1:P:5201`), the client on the host
#    side of the daemon's namespace sends TRANSFER (default 1G); dockerd runs
#    with its defaults (userland proxy on, as shipped), so its loopback
#    traffic goes through docker-proxy. Target: at least dockerd's.
# 4. Latency of a published port: LATENCY_ROUNDS (default 1000) HTTP/1.0
#    requests, one connection each, to a busybox httpd published on
#    127.0.0.1; median and p99 per request.
# 5. Memory for published ports: the processes serving them (docker-proxy
#    for dockerd) and the daemon's VmRSS before and after PORTS ports are
#    published. Target: no process per port.
#
# iperf3 runs inside the busybox container from the host's /usr, bind-mounted
# read-only at /host and started through its own dynamic loader, so the
# image stays the busybox one.
#
# Environment:
#   SYSTEMS          daemons to measure (default: "berthd dockerd")
#   NETWORK_RUNS     measured rounds of 1 and 2 (default 20)
#   NETWORK_WARMUP   warm-up rounds, not counted (default 2)
#   TRANSFER         iperf3's -n for 3 (default 1G)
#   LATENCY_ROUNDS   requests in 4 (default 1000)
#   PORTS            ports published in 5 (default 20)
#   BERTHD           berthd (default target/release/berthd; berth-supervisord
#                    and berth-ctr beside it)
#   DOCKER, DOCKERD, CONTAINERD, CTR, IPERF3
#                    the other programs (default: from PATH)
#   START_TIMEOUT, CMD_TIMEOUT
#                    seconds a daemon may take to answer (30), one client
#                    command (60)
#   BENCH_OUT        JSON results (default: target/bench/network.json)
#   KEEP_LOGS        a directory to copy the logs into
#
# Exits 0 when every daemon was measured, met targets or not (a missed one
# is printed as MISSED); 1 when something failed or was left behind. Needs
# root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
berthd=${BERTHD:-$repo/target/release/berthd}
bindir=$(dirname "$berthd")
berth_supervisord=${BERTH_SUPERVISORD:-$bindir/berth-supervisord}
berth_ctr=${BERTH_CTR:-$bindir/berth-ctr}
docker=${DOCKER:-$([ -x /usr/local/bin/docker ] && echo /usr/local/bin/docker || command -v docker || echo docker)}
dockerd=${DOCKERD:-$(command -v dockerd || echo dockerd)}
containerd=${CONTAINERD:-$(command -v containerd || echo containerd)}
ctr=${CTR:-$(command -v ctr || echo ctr)}
iperf3=${IPERF3:-$(command -v iperf3 || echo iperf3)}
systems=${SYSTEMS:-berthd dockerd}
runs=${NETWORK_RUNS:-20}
warmup=${NETWORK_WARMUP:-2}
transfer=${TRANSFER:-1G}
latency_rounds=${LATENCY_ROUNDS:-1000}
ports=${PORTS:-20}
start_timeout=${START_TIMEOUT:-30}
cmd_timeout=${CMD_TIMEOUT:-60}
out=${BENCH_OUT:-$repo/target/bench/network.json}
keep_logs=${KEEP_LOGS:-}
ns=berth-bench-net-$$
image=busybox:latest

[ "$(id -u)" -eq 0 ] || die "needs root (daemons that make bridges, namespaces and rules)"
for v in NETWORK_RUNS:"$runs" LATENCY_ROUNDS:"$latency_rounds" PORTS:"$ports"; do
    [[ "${v#*:}" =~ ^[1-9][0-9]*$ ]] || die "${v%%:*} must be a positive integer, not '${v#*:}'"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "NETWORK_WARMUP must be a non-negative integer, not '$warmup'"
read -r -a systems <<<"$systems"
[ "${#systems[@]}" -gt 0 ] || die "SYSTEMS is empty"
for s in "${systems[@]}"; do
    case $s in berthd | dockerd) ;; *) die "unknown system '$s' in SYSTEMS (berthd, dockerd)" ;; esac
done
has() { [[ " ${systems[*]} " == *" $1 "* ]]; }
for tool in python3 jq findmnt flock timeout umoci skopeo unshare nsenter ip; do need "$tool"; done
need "$docker"
need "$iperf3"
[ -x /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ] || die "the host's dynamic loader is not at /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
if has dockerd; then need "$dockerd"; need "$containerd"; need "$ctr"; fi
if has berthd; then
    for bin in "$berthd" "$berth_supervisord" "$berth_ctr"; do
        [ -x "$bin" ] || die "$bin not found or not executable (make build)"
    done
fi
unset CONTAINERD_ADDRESS CONTAINERD_NAMESPACE CONTAINERD_SNAPSHOTTER
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY BERTH_HOST BERTH_ADDRESS BERTH_NAMESPACE

# --- state, and its removal at exit -------------------------------------------------
daemon_pids=() # started last first
started=()
berthd_cli=()
dockerd_cli=()
berthd_pid=
dockerd_pid=
runlock=
workdir=$(mktemp -d /tmp/berth-bench-network.XXXXXX)
chmod 755 "$workdir"
rundir=$(mktemp -d /run/bbn.XXXXXX)
chmod 755 "$rundir"
image_dir=$workdir/image
runs_tsv=$workdir/runs.tsv
errors=$workdir/errors.tsv
problems=$workdir/problems
results='{}'
: >"$runs_tsv"
: >"$errors"
: >"$problems"

# The ids of berthd's containers that had a shim in this run.
berthd_task_ids() { ls "$rundir/b/shims/berth" 2>/dev/null || true; }

remove_all() { # SYSTEM LOG
    local system=$1 log=$2 ids left
    local -n cli=${system}_cli
    [ "${#cli[@]}" -gt 0 ] || return 0
    ids=$(timeout "$cmd_timeout" "${cli[@]}" ps -aq 2>>"$log") || true
    # shellcheck disable=SC2086 # one id per word
    [ -z "$ids" ] || timeout 120 "${cli[@]}" rm -f $ids >>"$log" 2>&1 || true
    left=$(timeout "$cmd_timeout" "${cli[@]}" ps -aq 2>>"$log") || left="(docker ps failed)"
    [ -z "$left" ] || { err="containers left: $(echo "$left" | head -n 3 | tr '\n' ' ')"; return 1; }
}

cleanup() {
    local status=$? system pid left m mnt dir id
    local -a ids
    set +e
    for system in "${started[@]}"; do
        remove_all "$system" "$workdir/exit-remove-$system.log" || echo "$system: at exit: $err" >>"$problems"
    done
    mapfile -t ids < <(berthd_task_ids)
    for pid in "${daemon_pids[@]}"; do
        stop_pid "$pid" 15 || echo "daemon $pid did not stop within 15s of SIGTERM; killed" >>"$problems"
    done
    left=$( (pids_mentioning "$workdir"; pids_mentioning "$rundir") | sort -u)
    if [ -n "$left" ]; then
        echo "$(echo "$left" | wc -l) processes left running:$(for pid in $left; do
            printf ' %s(%s)' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)"; done | cut -c1-300)" >>"$problems"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
    fi
    for mnt in $(cgroup_mounts); do
        for id in "${ids[@]}"; do
            dir=$mnt/berth/berth/$id
            [ -d "$dir" ] || continue
            { while read -r pid; do kill -KILL "$pid"; done <"$dir/cgroup.procs"; } 2>/dev/null
            rmdir "$dir" 2>/dev/null || echo "could not remove the cgroup $dir" >>"$problems"
        done
        if [ -d "$mnt/$ns-docker" ]; then
            find "$mnt/$ns-docker" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
            rmdir "$mnt/$ns-docker" 2>/dev/null || echo "could not remove the cgroup /$ns-docker" >>"$problems"
        fi
    done
    left=$( (mounts_under "$workdir"; mounts_under "$rundir") | sort -u)
    if [ -n "$left" ]; then
        echo "$(echo "$left" | wc -l) mounts left, e.g. $(echo "$left" | head -n 1)" >>"$problems"
        for m in $left; do umount -l "$m"; done
    fi
    if [ -s "$problems" ]; then
        sed 's/^/bench: left behind: /' "$problems" >&2
        [ "$status" = 0 ] && status=1
    fi
    if [ -n "$keep_logs" ]; then
        mkdir -p "$keep_logs"
        find "$workdir" -name '*.log' -not -path '*/data/*' | while read -r f; do
            rel=${f#"$workdir"/}
            cp "$f" "$keep_logs/${rel//\//_}"
        done
    fi
    if [ -z "$(mounts_under "$workdir")" ]; then rm -rf "$workdir"; else echo "bench: kept $workdir (mounts remain)" >&2; fi
    if [ -z "$(mounts_under "$rundir")" ]; then rm -rf "$rundir"; else echo "bench: kept $rundir (mounts remain)" >&2; fi
    if [ -n "$runlock" ]; then
        flock -u "$runlock"
        if flock -xn "$runlock"; then
            [ "$pre_run_docker" = no ] && rmdir /run/docker/plugins /run/docker 2>/dev/null
            [ "$pre_run_containerd" = no ] && rmdir /run/containerd/s /run/containerd 2>/dev/null
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# See bench/pull.sh: a shared flock on /run, and /run/docker and
# /run/containerd removed at the end if this run made them.
exec {runlock}</run
flock -s "$runlock"
pre_run_docker=$([ -e /run/docker ] && echo yes || echo no)
pre_run_containerd=$([ -e /run/containerd ] && echo yes || echo no)

fail() { # NAME TEST MESSAGE
    printf '%s\t%s\t%s\n' "$1" "$2" "$(echo "$3" | tr '\t\n' '  ')" >>"$errors"
    say "  $1: FAILED ($2): $3"
    mapfile -t live < <(printf '%s\n' "${live[@]}" | grep -vx "$1" || true)
}


# CMD... in the network namespace of SYSTEM's daemon.
in_netns_of() { # SYSTEM CMD...
    local -n pid=${1}_pid
    shift
    nsenter --net="/proc/$pid/ns/net" -- "$@"
}

start_system() { # SYSTEM DIR
    local dir=$2
    mkdir -p "$dir/cli"
    case $1 in
    berthd)
        in_new_netns "$berthd" --data-root "$dir/data" --exec-root "$rundir/b" --host "unix://$dir/berthd.sock" \
            --pidfile "$dir/berthd.pid" --supervisor-binary "$berth_supervisord" \
            </dev/null >>"$dir/berthd.log" 2>&1 &
        berthd_pid=$!
        daemon_pids=("$berthd_pid" "${daemon_pids[@]}")
        berthd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/berthd.sock")
        wait_ready berthd "$berthd_pid" "$dir/berthd.log" "${berthd_cli[@]}" version || return 1
        run_logged "$dir/import.log" "$cmd_timeout" "$berth_ctr" --address "$rundir/b/supervisor.sock" \
            --namespace berth images import --name "$image" "$image_dir/busybox-oci.tar" || return 1
        ;;
    dockerd)
        mkdir -p "$dir/containerd" "$dir/data" "$rundir/docker/exec"
        start_containerd "$dir/containerd" "$dir/containerd/containerd.sock" \
            "$rundir/docker/containerd-state" || return 1
        jq -n --arg key "$dir/key.json" '{"deprecated-key-path": $key}' >"$dir/daemon.json"
        # dockerd's defaults for networking (bridge docker0, iptables, IP
        # forwarding, masquerade, the userland proxy), in its own namespace.
        in_new_netns "$dockerd" --config-file "$dir/daemon.json" --data-root "$dir/data" \
            --exec-root "$rundir/docker/exec" --pidfile "$dir/docker.pid" --host "unix://$dir/docker.sock" \
            --containerd "$dir/containerd/containerd.sock" --storage-driver overlay2 \
            --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$ns-docker" --shutdown-timeout=2 \
            </dev/null >"$dir/dockerd.log" 2>&1 &
        dockerd_pid=$!
        daemon_pids=("$dockerd_pid" "${daemon_pids[@]}")
        dockerd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/docker.sock")
        wait_ready dockerd "$dockerd_pid" "$dir/dockerd.log" "${dockerd_cli[@]}" version || return 1
        run_logged "$dir/load.log" "$cmd_timeout" "${dockerd_cli[@]}" load -i "$image_dir/busybox-docker.tar" ||
            return 1
        ;;
    esac
}

# The processes whose executable is docker-proxy, in SYSTEM's namespace tree.
proxy_pids() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(basename "$(readlink "$p/exe" 2>/dev/null)")" = docker-proxy ] && echo "${p#/proc/}"
    done
    return 0
}

say "building the busybox image"
"$repo/bench/make-busybox-image.sh" "$image_dir" >"$workdir/image.log" 2>&1 ||
    die "bench/make-busybox-image.sh failed: $(tail -n 5 "$workdir/image.log")"

live=()
for system in "${systems[@]}"; do
    say "starting $system"
    started+=("$system")
    live+=("$system")
    start_system "$system" "$workdir/$system" || fail "$system" start "$err"
done

# --- 1 and 2: run latency on the default network, and with --network none -----------
commands='{}'
argv_json() { printf '%s\n' "$@" | jq -R . | jq -sc .; }
for system in "${live[@]}"; do
    declare -n cli=${system}_cli
    if ! run_logged "$workdir/probe-$system.log" "$cmd_timeout" "${cli[@]}" run --rm "$image" \
        sh -c 'ip -4 -o addr show eth0 && ip route | grep -q default'; then
        fail "$system" probe "a container on the default network has no eth0 address or no default route: $err"
        unset -n cli
        continue
    fi
    commands=$(jq -c --arg n "$system" --argjson v "$(argv_json "${cli[@]}" run --rm --name '{id}' "$image" /bin/true)" \
        '. + {($n): $v}' <<<"$commands")
    if [ "$system" = berthd ]; then
        commands=$(jq -c --argjson v "$(argv_json "${cli[@]}" run --rm --network none --name '{id}' "$image" /bin/true)" \
            '. + {"berthd-none": $v}' <<<"$commands")
    fi
    unset -n cli
done
if [ "$commands" != '{}' ]; then
    say "run latency: $runs rounds + $warmup warm-up of: $(jq -r 'keys_unsorted | join(" ")' <<<"$commands")"
    python3 "$repo/bench/tasks_timing.py" --commands "$commands" --runs "$runs" --warmup "$warmup" \
        --timeout "$cmd_timeout" --logdir "$workdir" --results "$runs_tsv" --errors "$errors" ||
        printf 'tasks_timing.py\truns\tfailed (its output is above)\n' >>"$errors"
fi

# --- 3, 4 and 5: published ports -------------------------------------------------------
for system in "${live[@]}"; do
    declare -n cli=${system}_cli
    say "$system: iperf3 through a published port ($transfer)"
    if ! run_logged "$workdir/iperf-run-$system.log" "$cmd_timeout" "${cli[@]}" run -d --name "iperf-$system" \
        -p 127.0.0.1:15201:5201 -v /usr:/host:ro "$image" \
        /host/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /host/lib/x86_64-linux-gnu \
        /host/bin/iperf3 -s; then
        fail "$system" iperf3 "$err"
        unset -n cli
        continue
    fi
    ok=
    for _ in $(seq 50); do
        if in_netns_of "$system" "$iperf3" -c 127.0.0.1 -p 15201 -n "$transfer" -J \
            >"$workdir/iperf-$system.json" 2>"$workdir/iperf-$system.log" &&
            jq -e 'has("error") | not' "$workdir/iperf-$system.json" >/dev/null; then
            ok=1
            break
        fi
        sleep 0.2
    done
    if [ -z "$ok" ]; then
        fail "$system" iperf3 "the client failed: $(tail -c 300 "$workdir/iperf-$system.json" "$workdir/iperf-$system.log" | tr '\n' ' ')"
        unset -n cli
        continue
    fi
    if ! gbps=$(jq -e '.end.sum_received.bits_per_second / 1e9' "$workdir/iperf-$system.json" 2>/dev/null); then
        fail "$system" iperf3 "no throughput in iperf3's report: $(head -c 400 "$workdir/iperf-$system.json" | tr '\n' ' ')"
        unset -n cli
        continue
    fi
    say "  $system: $(printf '%.2f' "$gbps") Gbit/s"
    results=$(jq -c --arg s "$system" --argjson g "$gbps" '.throughput_gbps[$s] = $g' <<<"$results")

    say "$system: latency of $latency_rounds requests through a published port"
    run_logged "$workdir/httpd-run-$system.log" "$cmd_timeout" "${cli[@]}" run -d --name "httpd-$system" \
        -p 127.0.0.1:18080:80 "$image" sh -c 'mkdir -p /w && echo berth > /w/index.html && exec httpd -f -p 80 -h /w' ||
        { fail "$system" latency "$err"; unset -n cli; continue; }
    if ! in_netns_of "$system" python3 - "$latency_rounds" >"$workdir/latency-$system.json" 2>"$workdir/latency-$system.log" <<'PY'; then
import json, socket, sys, time
rounds = int(sys.argv[1])
def get():
    s = socket.create_connection(("127.0.0.1", 18080), timeout=5)
    s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    s.close()
    if b"berth" not in data:
        raise SystemExit("unexpected answer: %r" % data[:200])
deadline = time.time() + 10
while True:
    try:
        get()
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.1)
times = []
for _ in range(rounds):
    t0 = time.perf_counter_ns()
    get()
    times.append((time.perf_counter_ns() - t0) / 1000)
times.sort()
print(json.dumps({"median_us": times[len(times) // 2], "p99_us": times[int(len(times) * 0.99)]}))
PY
        fail "$system" latency "$(tail -c 300 "$workdir/latency-$system.log" | tr '\n' ' ')"
        unset -n cli
        continue
    fi
    results=$(jq -c --arg s "$system" --argjson l "$(cat "$workdir/latency-$system.json")" '.latency[$s] = $l' <<<"$results")
    say "  $system: median $(jq .median_us "$workdir/latency-$system.json") us, p99 $(jq .p99_us "$workdir/latency-$system.json") us"

    say "$system: memory for $ports published ports"
    declare -n dpid=${system}_pid
    proxies_before=$(proxy_pids | wc -l)
    rss_before=$(status_kib "$dpid" VmRSS)
    port_args=()
    for ((i = 0; i < ports; i++)); do port_args+=(-p "127.0.0.1:$((19000 + i)):$((9000 + i))"); done
    if run_logged "$workdir/ports-run-$system.log" "$cmd_timeout" "${cli[@]}" run -d --name "ports-$system" \
        "${port_args[@]}" "$image" sleep 600; then
        sleep 1
        proxies=$(($(proxy_pids | wc -l) - proxies_before))
        proxy_kib=0
        for p in $(proxy_pids); do proxy_kib=$((proxy_kib + $(status_kib "$p" VmRSS))); done
        rss_after=$(status_kib "$dpid" VmRSS)
        results=$(jq -c --arg s "$system" --argjson n "$proxies" --argjson pk "$proxy_kib" \
            --argjson b "$rss_before" --argjson a "$rss_after" \
            '.ports_memory[$s] = {processes: $n, processes_kib: $pk, daemon_kib_before: $b, daemon_kib_after: $a}' <<<"$results")
        say "  $system: $proxies processes for the ports (VmRSS $proxy_kib KiB in all); daemon VmRSS $rss_before -> $rss_after KiB"
    else
        fail "$system" ports "$err"
    fi
    unset -n dpid
    remove_all "$system" "$workdir/remove-$system.log" || fail "$system" remove "$err"
    unset -n cli
done

# --- report -----------------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
python3 - "$runs_tsv" "$errors" "$out" "$results" <<'PY'
import json, statistics, sys
runs_tsv, errors_tsv, out, results = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
by = {}
rounds = {}
for line in open(runs_tsv):
    name, rnd, wall, _cpu = line.rstrip("\n").split("\t")
    by.setdefault(name, []).append(float(wall))
    rounds.setdefault(rnd, {})[name] = float(wall)
med = {k: statistics.median(v) for k, v in by.items()}
results["run_median_ms"] = med
print("\n== engine networking (bench/network.sh) ==")
for k, v in med.items():
    print(f"docker run --rm /bin/true, {k:12s} median {v:8.1f} ms")
def verdict(ok):
    return "met" if ok else "MISSED"
if "berthd" in med and "dockerd" in med:
    r = med["berthd"] / med["dockerd"]
    results["run_ratio"] = r
    print(f"  berthd / dockerd on the default network: {r:.3f}x (target <= 0.1x: {verdict(r <= 0.1)})")
diffs = [v["berthd"] - v["berthd-none"] for v in rounds.values() if "berthd" in v and "berthd-none" in v]
if diffs:
    d = statistics.median(diffs)
    results["network_cost_ms"] = d
    print(f"  berthd's network per container (bridge - none, median of rounds): {d:.2f} ms (target < 5 ms: {verdict(d < 5)})")
t = results.get("throughput_gbps", {})
for k, v in t.items():
    print(f"published port throughput, {k:8s} {v:6.2f} Gbit/s")
if "berthd" in t and "dockerd" in t:
    r = t["berthd"] / t["dockerd"]
    results["throughput_ratio"] = r
    print(f"  berthd / dockerd: {r:.2f}x (target >= 1x: {verdict(r >= 1)})")
for k, v in results.get("latency", {}).items():
    print(f"published port request latency, {k:8s} median {v['median_us']:.0f} us, p99 {v['p99_us']:.0f} us")
for k, v in results.get("ports_memory", {}).items():
    print(f"published ports: {k:8s} {v['processes']} processes ({v['processes_kib']} KiB), "
          f"daemon VmRSS {v['daemon_kib_before']} -> {v['daemon_kib_after']} KiB")
m = results.get("ports_memory", {}).get("berthd")
if m:
    print(f"  berthd: no process per port: {verdict(m['processes'] == 0)}")
errs = [l.rstrip("\n").split("\t") for l in open(errors_tsv) if l.strip()]
for e in errs:
    print("FAILED:", " / ".join(e))
results["errors"] = errs
json.dump(results, open(out, "w"), indent=1)
sys.exit(1 if errs else 0)
PY
