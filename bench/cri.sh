#!/usr/bin/env bash
# CRI benchmark: berth-supervisord's CRI against Debian's containerd 1.6
# CRI plugin, one after the other, with the same images (busybox and
# berth's pause, from a local docker-registry both reach through hosts.toml
# mirrors), the same CNI conflist (Debian's bridge, host-local, portmap and
# loopback plugins, on a private subnet, no masquerade) and the same crictl,
# all in a network namespace this script makes.
#
#   1. A busybox pod with one container (`sleep`), up and down, ROUNDS times:
#      up is `crictl run` (RunPodSandbox + CreateContainer + StartContainer),
#      down is `crictl rmp -f` (StopPodSandbox + RemovePodSandbox, the
#      container with it). Target: berth <= 0.3 x containerd (up + down).
#      Before them, `crictl version` ROUNDS times: crictl's own fixed cost
#      per invocation, which every figure includes.
#      Then the same pod ROUNDS times through the CRI calls alone, as
#      kubelet makes them over one held connection (cri_pod_bench, a tonic
#      client of berth's; RunPodSandbox + CreateContainer + StartContainer,
#      then StopPodSandbox + RemovePodSandbox): the issue's figure, without
#      a process started per step and without crictl's own extra calls
#      (Version, ImageFsInfo, PullImage, ListPodSandbox, PodSandboxStatus).
#   2. PODS pods at once (`crictl run` in parallel), then all removed: the
#      time until every one runs, and the peak resident memory of the
#      daemon and its shims while they run (sampled every 20 ms).
#
# Prints the medians and ratios, writes BENCH_OUT (default
# target/bench/cri.json).
#
# Environment:
#   ROUNDS             rounds of (1) per runtime (default 10)
#   PODS               pods of (2) (default 30)
#   SYSTEMS            runtimes to measure (default: "berth containerd")
#   BERTH_SUPERVISORD  berth-supervisord (default target/release/...); its
#                      pause binary is taken from the same build's out dir
#   CRICTL             crictl (default: unpacked from ../shared/tools)
#   CRI_POD_BENCH      the client of the direct figure (default
#                      target/release/examples/cri_pod_bench; cargo build
#                      --release -p berth-client --example cri_pod_bench)
#   BERTH_DEBUG        non-empty: berth-supervisord runs with --debug (each
#                      CRI call and a pod start's parts timed in its log)
# Each daemon's log is kept beside BENCH_OUT (cri-<system>-daemon.log).
# Needs root, docker-registry, umoci, skopeo, busybox-static, containerd,
# runc and containernetworking-plugins.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
supervisord=${BERTH_SUPERVISORD:-$repo/target/release/berth-supervisord}
rounds=${ROUNDS:-10}
pods=${PODS:-30}
systems=${SYSTEMS:-berth containerd}
out=${BENCH_OUT:-$repo/target/bench/cri.json}
start_timeout=${START_TIMEOUT:-30}
containerd=${CONTAINERD:-$(command -v containerd || echo containerd)}

[ "$(id -u)" -eq 0 ] || die "needs root"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
[[ "$pods" =~ ^[1-9][0-9]*$ ]] || die "PODS must be a positive integer, not '$pods'"
read -r -a systems <<<"$systems"
for tool in python3 umoci skopeo docker-registry nsenter unshare xz; do need "$tool"; done
[ -x "$supervisord" ] || die "$supervisord not found (make build)"
pause_bin=$(ls -t "$(dirname "$supervisord")"/build/berth-supervisor-*/out/berth-pause 2>/dev/null | head -n1)
[ -n "$pause_bin" ] || die "berth-pause not found beside $supervisord (make build)"
pod_bench=${CRI_POD_BENCH:-$repo/target/release/examples/cri_pod_bench}
[ -x "$pod_bench" ] || die "$pod_bench not found (cargo build --release -p berth-client --example cri_pod_bench)"
crictl=${CRICTL:-$repo/target/tools/crictl}
if [ ! -x "$crictl" ]; then
    mkdir -p "$(dirname "$crictl")"
    xz -dc "$repo/../shared/tools/crictl.xz" >"$crictl.tmp" && chmod +x "$crictl.tmp" && mv "$crictl.tmp" "$crictl"
fi

# A short tree: a shim's socket under <state>/shims/k8s.io/<64-digit id>/
# must fit in 107 bytes.
tmp=$(mktemp -d /tmp/bkXXXXXX)
netns=$tmp/netns
reg_pid='' daemon_pid=''
results=$tmp/results.tsv # system figure value
: >"$results"
in_ns() { nsenter --net="$netns" -- "$@"; }
stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=''
    fi
}
cleanup() {
    set +e
    stop_daemon
    for p in $(pids_mentioning "$tmp"); do kill -9 "$p" 2>/dev/null; done
    [ -z "$reg_pid" ] || { kill -9 "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; }
    for m in $(mounts_under "$tmp"); do umount -l "$m" 2>/dev/null; done
    umount -l "$netns" 2>/dev/null
    for m in $(cgroup_mounts); do
        [ -d "$m/berth-bench-cri" ] || continue
        find "$m/berth-bench-cri" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        rmdir "$m/berth-bench-cri" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

touch "$netns"
unshare --net="$netns" true
in_ns ip link set lo up

say "the registry and the images"
port=5000
cat >"$tmp/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $tmp/registry}}
http: {addr: 127.0.0.1:$port}
YML
nsenter --net="$netns" -- docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
    in_ns python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null && break
    sleep 0.1
done
"$repo/bench/make-busybox-image.sh" "$tmp/image" >"$tmp/image.log" 2>&1 ||
    die "make-busybox-image.sh failed: $(tail -n 5 "$tmp/image.log")"
in_ns skopeo copy --quiet --dest-tls-verify=false "oci-archive:$tmp/image/busybox-oci.tar" \
    "docker://127.0.0.1:$port/library/busybox:latest"
layout=$tmp/layout
umoci init --layout "$layout" >/dev/null
umoci new --image "$layout:empty" >/dev/null
mkdir -p "$tmp/pause/dev" "$tmp/pause/proc" "$tmp/pause/sys" "$tmp/pause/etc"
cp "$pause_bin" "$tmp/pause/pause"
tar -C "$tmp/pause" --owner=0 --group=0 --numeric-owner -cf "$tmp/pause.tar" .
umoci raw add-layer --image "$layout:empty" --tag pauselayer "$tmp/pause.tar"
umoci config --image "$layout:pauselayer" --tag pause --config.entrypoint /pause --config.user 65535:65535 >/dev/null
in_ns skopeo copy --quiet --dest-tls-verify=false "oci:$layout:pause" "docker://127.0.0.1:$port/pause:3.10"
for host in registry.k8s.io docker.io; do
    mkdir -p "$tmp/certs.d/$host"
    printf 'server = "http://127.0.0.1:%s"\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' \
        "$port" "$port" >"$tmp/certs.d/$host/hosts.toml"
done

conflist() { # DIR
    mkdir -p "$1/net.d"
    cat >"$1/net.d/10-bench.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "bench", "plugins": [
  {"type": "bridge", "bridge": "cni-bench0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.11.0/24"}]], "dataDir": "$1/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}
]}
EOF
}

# The pod and container configs of pod N.
configs() { # N -> $tmp/cfg/pod-N.json, ctr-N.json
    mkdir -p "$tmp/cfg" "$tmp/logs/$1"
    cat >"$tmp/cfg/pod-$1.json" <<EOF
{"metadata": {"name": "bench-$1", "namespace": "bench", "uid": "uid-$1-$RANDOM$RANDOM", "attempt": 0},
 "log_directory": "$tmp/logs/$1", "linux": {"cgroup_parent": "/berth-bench-cri"}}
EOF
    cat >"$tmp/cfg/ctr-$1.json" <<EOF
{"metadata": {"name": "sleeper"}, "image": {"image": "docker.io/library/busybox:latest"},
 "command": ["sleep", "3600"], "log_path": "sleeper.log", "linux": {}}
EOF
}

: >"$tmp/crictl.yaml" # no /etc/crictl.yaml, and no warning about it
cri() {
    in_ns "$crictl" --config "$tmp/crictl.yaml" --runtime-endpoint "unix://$sock" \
        --image-endpoint "unix://$sock" --timeout 60s "$@"
}

# The resident memory (KiB) of the processes whose command line matches
# one of the patterns, summed, sampled every 20 ms until $tmp/stop-sampling
# exists; the peak into FILE.
sample_rss() { # FILE PATTERN...
    python3 - "$@" <<'PY' &
import os, re, sys, time
out, pats = sys.argv[1], [re.compile(p) for p in sys.argv[2:]]
stop = os.path.join(os.path.dirname(out), "stop-sampling")
peak = 0
while not os.path.exists(stop):
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            if not any(p.search(cmd) for p in pats):
                continue
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    peak = max(peak, total)
    time.sleep(0.02)
open(out, "w").write(str(peak))
PY
    sampler=$!
}

run_system() { # SYSTEM
    local system=$1 d=$tmp/$1 n i t0 t1 pod
    mkdir -p "$d"
    conflist "$d"
    case $system in
    berth)
        nsenter --net="$netns" -- "$supervisord" --root "$d/r" --state "$tmp/bs" --address "$d/sup.sock" \
            --cri-address "$d/cri.sock" --registry-config-dir "$tmp/certs.d" --cni-conf-dir "$d/net.d" \
            --cni-bin-dir /usr/lib/cni ${BERTH_DEBUG:+--debug} >"$d/daemon.log" 2>&1 &
        daemon_pid=$!
        sock=$d/cri.sock
        patterns=("$supervisord .*--root $d/r" "berth-shim .*$tmp/bs")
        ;;
    containerd)
        cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = "$d/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$tmp/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
EOF
        nsenter --net="$netns" -- "$containerd" --config "$d/config.toml" >"$d/daemon.log" 2>&1 &
        daemon_pid=$!
        sock=$d/containerd.sock
        patterns=("$containerd --config $d/config.toml" "containerd-shim-runc-v2 .*-address $d/containerd.sock")
        ;;
    esac
    wait_ready "$system" "$daemon_pid" "$d/daemon.log" cri version || die "$err"
    cri pull docker.io/library/busybox:latest >/dev/null
    # A first pod, untimed: containerd pulls its pause image, berth imports its own.
    configs warm
    pod=$(cri runp "$tmp/cfg/pod-warm.json")
    cri rmp -f "$pod" >/dev/null

    # crictl's fixed cost per invocation (its start, the connection, one
    # trivial call): part of every figure below, for both runtimes alike.
    for ((i = 1; i <= rounds; i++)); do
        t0=$(now_us)
        cri version >/dev/null
        t1=$(now_us)
        printf '%s\tcrictl_version\t%s\n' "$system" "$(((t1 - t0) / 1000))" >>"$results"
    done

    say "$system: $rounds pods up and down, one at a time"
    for ((i = 1; i <= rounds; i++)); do
        configs "$i"
        t0=$(now_us)
        cri run "$tmp/cfg/ctr-$i.json" "$tmp/cfg/pod-$i.json" >/dev/null || die "$system: crictl run failed"
        t1=$(now_us)
        printf '%s\tup\t%s\n' "$system" "$(((t1 - t0) / 1000))" >>"$results"
        pod=$(cri pods -q --name "bench-$i")
        [ -n "$pod" ] || die "$system: pod bench-$i not listed"
        t0=$(now_us)
        cri rmp -f "$pod" >/dev/null || die "$system: crictl rmp failed"
        t1=$(now_us)
        printf '%s\tdown\t%s\n' "$system" "$(((t1 - t0) / 1000))" >>"$results"
    done

    say "$system: $rounds pods up and down through the CRI calls alone"
    mkdir -p "$tmp/logs/grpc"
    "$pod_bench" "$sock" "$rounds" docker.io/library/busybox:latest "$tmp/logs/grpc" /berth-bench-cri \
        >"$tmp/grpc-$system.tsv" || die "$system: cri_pod_bench failed"
    while IFS=$'\t' read -r fig ms; do
        printf '%s\tgrpc_%s\t%s\n' "$system" "$fig" "$ms" >>"$results"
    done <"$tmp/grpc-$system.tsv"

    say "$system: $pods pods at once"
    for ((n = 1; n <= pods; n++)); do configs "m$n"; done
    rm -f "$tmp/stop-sampling"
    sample_rss "$tmp/peak-$system" "${patterns[@]}"
    t0=$(now_us)
    local -a waits=()
    for ((n = 1; n <= pods; n++)); do
        cri run "$tmp/cfg/ctr-m$n.json" "$tmp/cfg/pod-m$n.json" >"$tmp/run-m$n.log" 2>&1 &
        waits+=("$!")
    done
    for w in "${waits[@]}"; do wait "$w" || die "$system: a pod of the $pods failed: $(cat "$tmp"/run-m*.log | tail -n 3)"; done
    t1=$(now_us)
    touch "$tmp/stop-sampling"
    wait "$sampler"
    printf '%s\tmany_up\t%s\n' "$system" "$(((t1 - t0) / 1000))" >>"$results"
    printf '%s\tmany_peak_kib\t%s\n' "$system" "$(cat "$tmp/peak-$system")" >>"$results"
    [ "$(cri ps -q --state running | wc -l)" -ge "$pods" ] || die "$system: not every container runs"
    t0=$(now_us)
    cri rmp -a -f >/dev/null
    t1=$(now_us)
    printf '%s\tmany_down\t%s\n' "$system" "$(((t1 - t0) / 1000))" >>"$results"
    stop_daemon
    mkdir -p "$(dirname "$out")"
    cp "$d/daemon.log" "$(dirname "$out")/cri-$system-daemon.log"
    # containerd's shims outlive it.
    for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $d/containerd.sock" || true); do kill -9 "$p" 2>/dev/null || true; done
}

for s in "${systems[@]}"; do
    case $s in berth | containerd) ;; *) die "unknown system '$s' (berth, containerd)" ;; esac
    say "starting $s"
    run_system "$s"
done

mkdir -p "$(dirname "$out")"
python3 - "$results" "$out" "$pods" <<'PY'
import json, statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l]
pods = int(sys.argv[3])
vals = {}
for system, fig, v in rows:
    vals.setdefault(system, {}).setdefault(fig, []).append(float(v))
med = {s: {f: statistics.median(v) for f, v in figs.items()} for s, figs in vals.items()}
for s, f in med.items():
    print(f"{s:<11} crictl version {f['crictl_version']:5.1f} ms  pod up {f['up']:7.1f} ms  down {f['down']:7.1f} ms  "
          f"{pods} at once: up {f['many_up']:7.0f} ms, down {f['many_down']:7.0f} ms, "
          f"peak memory {f['many_peak_kib'] / 1024:6.1f} MiB")
    print(f"{'':<11} CRI calls alone: pod up {f['grpc_up']:7.1f} ms  down {f['grpc_down']:7.1f} ms")
ratios = {}
if "berth" in med and "containerd" in med:
    b, c = med["berth"], med["containerd"]
    ratios["pod"] = (b["grpc_up"] + b["grpc_down"]) / (c["grpc_up"] + c["grpc_down"])
    ratios["grpc_up"] = b["grpc_up"] / c["grpc_up"]
    ratios["grpc_down"] = b["grpc_down"] / c["grpc_down"]
    ratios["pod_crictl"] = (b["up"] + b["down"]) / (c["up"] + c["down"])
    ratios["up"] = b["up"] / c["up"]
    ratios["down"] = b["down"] / c["down"]
    ratios["many_up"] = b["many_up"] / c["many_up"]
    ratios["many_peak_memory"] = b["many_peak_kib"] / c["many_peak_kib"]
    for k, r in ratios.items():
        print(f"berth/containerd {k}: {r:.3f}x")
    verdict = "ok" if ratios["pod"] <= 0.3 else "MISSED"
    print(f"pod up + down, CRI calls alone: {ratios['pod']:.3f}x (target <= 0.3) {verdict}")
    print(f"pod up + down through crictl: {ratios['pod_crictl']:.3f}x")
json.dump({"median": med, "ratios": ratios, "pods": pods}, open(sys.argv[2], "w"), indent=2)
PY
