#!/usr/bin/env bash
# Volume benchmark: write and read VOLUME_MIB MiB (default 1024) with dd in a
# busybox container, through a named volume and through the container's
# root (its overlay), on berthd and on Debian's dockerd side by side. Each
# daemon is private: its own data root, exec root and socket (dockerd on a
# containerd of its own, without a bridge); containers run with
# `--network none`; the script runs itself in a network namespace of its
# own (unshare --net).
#
#   write   dd if=/dev/zero of=PATH/blob bs=1M count=N conv=fsync
#   read    dd if=PATH/blob of=/dev/null bs=1M, in the same container (the
#           page cache is not dropped: that would touch the host's).
# Times are read from /proc/uptime inside the container (10 ms steps).
#
# Prints MB/s per system and case, and berthd/dockerd throughput ratios
# (target: >= 1, at least Docker's throughput). Writes the figures to
# BENCH_OUT (default target/bench/volumes.json).
#
# Environment:
#   VOLUME_MIB   size of the file in MiB (default 1024)
#   SYSTEMS      daemons to measure (default: "berthd dockerd")
#   BERTHD       berthd (default target/release/berthd; berth-supervisord and
#                berth-ctr beside it)
#   DOCKER       the docker CLI (default /usr/local/bin/docker)
#   DOCKERD, CONTAINERD, CTR   Debian's (default: on PATH)
# Needs root.
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
mib=${VOLUME_MIB:-1024}
systems=${SYSTEMS:-berthd dockerd}
start_timeout=${START_TIMEOUT:-30}
cmd_timeout=${CMD_TIMEOUT:-600}
out=${BENCH_OUT:-$repo/target/bench/volumes.json}
image=busybox:latest
cgroup=berth-bench-volumes-$$ # dockerd's containers' cgroup parent

[ "$(id -u)" -eq 0 ] || die "needs root"
# Both daemons in a network namespace of their own: nothing of the host's
# network is touched (the containers run with --network none anyway).
if [ -z "${BENCH_NETNS:-}" ]; then
    need unshare
    exec unshare --net env BENCH_NETNS=1 "$0" "$@"
fi
[[ "$mib" =~ ^[1-9][0-9]*$ ]] || die "VOLUME_MIB must be a positive integer, not '$mib'"
read -r -a systems <<<"$systems"
for tool in python3 jq findmnt timeout umoci skopeo; do need "$tool"; done
need "$docker"
unset DOCKER_HOST DOCKER_CONTEXT CONTAINERD_ADDRESS CONTAINERD_NAMESPACE

workdir=$(mktemp -d /tmp/berth-bench-volumes.XXXXXX)
chmod 755 "$workdir"
rundir=$(mktemp -d /run/bbv.XXXXXX)
chmod 755 "$rundir"
daemon_pids=()
results=$workdir/results.tsv # system case op seconds
: >"$results"

# Removes every container of the daemon whose client is ARGV.
remove_containers() { # CLI...
    local ids
    ids=$(timeout 30 "$@" ps -aq 2>/dev/null) || return 0
    # shellcheck disable=SC2086 # one id per word
    [ -z "$ids" ] || timeout 60 "$@" rm -f $ids >/dev/null 2>&1 || true
}

cleanup() {
    local pid m
    [ "${#berthd_cli[@]}" -eq 0 ] || remove_containers "${berthd_cli[@]}"
    [ "${#dockerd_cli[@]}" -eq 0 ] || remove_containers "${dockerd_cli[@]}"
    for pid in "${daemon_pids[@]}"; do stop_pid "$pid" 10 || true; done
    for m in $(cgroup_mounts); do rmdir "$m/$cgroup" 2>/dev/null || true; done
    for m in $(mounts_under "$rundir") $(mounts_under "$workdir"); do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$workdir" "$rundir"
}
berthd_cli=()
dockerd_cli=()
trap cleanup EXIT

say "making the busybox image"
"$repo/bench/make-busybox-image.sh" "$workdir/image" >"$workdir/image.log" 2>&1 ||
    die "make-busybox-image.sh failed: $(tail -n 5 "$workdir/image.log")"

start_system() { # SYSTEM
    local dir=$workdir/$1
    mkdir -p "$dir/cli"
    case $1 in
    berthd)
        [ -x "$berthd" ] || die "$berthd not found (make build)"
        "$berthd" --data-root "$dir/data" --exec-root "$rundir/b" --host "unix://$dir/berthd.sock" \
            --pidfile "$dir/berthd.pid" --supervisor-binary "$berth_supervisord" \
            </dev/null >>"$dir/berthd.log" 2>&1 &
        daemon_pids=("$!" "${daemon_pids[@]}")
        berthd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/berthd.sock")
        wait_ready berthd "$!" "$dir/berthd.log" "${berthd_cli[@]}" version || die "$err"
        run_logged "$dir/import.log" 120 "$berth_ctr" --address "$rundir/b/supervisor.sock" \
            --namespace berth images import --name "$image" "$workdir/image/busybox-oci.tar" || die "$err"
        ;;
    dockerd)
        need "$dockerd"
        need "$containerd"
        need "$ctr"
        mkdir -p "$dir/containerd" "$dir/data" "$rundir/docker/exec"
        # --bridge=none: dockerd would delete a docker0 it sees; this
        # network namespace has none.
        start_containerd "$dir/containerd" "$dir/containerd/containerd.sock" "$rundir/docker/cs" ||
            die "$err"
        jq -n --arg key "$dir/key.json" '{"deprecated-key-path": $key}' >"$dir/daemon.json"
        "$dockerd" --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$rundir/docker/exec" \
            --pidfile "$dir/docker.pid" --host "unix://$dir/docker.sock" \
            --containerd "$dir/containerd/containerd.sock" --storage-driver overlay2 \
            --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$cgroup" --bridge=none --iptables=false \
            --ip6tables=false --ip-forward=false --ip-masq=false --shutdown-timeout=2 \
            </dev/null >"$dir/dockerd.log" 2>&1 &
        daemon_pids=("$!" "${daemon_pids[@]}")
        dockerd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/docker.sock")
        wait_ready dockerd "$!" "$dir/dockerd.log" "${dockerd_cli[@]}" version || die "$err"
        run_logged "$dir/load.log" 120 "${dockerd_cli[@]}" load -i "$workdir/image/busybox-docker.tar" ||
            die "$err"
        ;;
    *) die "unknown system '$1' (berthd, dockerd)" ;;
    esac
}

# One case: CASE is "volume" or "root". Writes the file (dd, then fsync),
# then reads it back, in one container (the root's file goes with it); the
# times come from /proc/uptime inside the container, so the container's
# start is not counted.
measure() { # SYSTEM CASE
    local system=$1 kind=$2 log=$workdir/$1-$2.log
    local -n cli=${system}_cli
    local path mount=() name="bench-$kind"
    if [ "$kind" = volume ]; then
        "${cli[@]}" volume create benchvol >/dev/null
        mount=(-v benchvol:/v)
        path=/v
    else
        path=/r
    fi
    timeout "$cmd_timeout" "${cli[@]}" run --name "$name" --network none "${mount[@]}" "$image" sh -c "
        mkdir -p $path
        t0=\$(cut -d' ' -f1 /proc/uptime)
        dd if=/dev/zero of=$path/blob bs=1M count=$mib conv=fsync 2>/dev/null || exit 1
        t1=\$(cut -d' ' -f1 /proc/uptime)
        dd if=$path/blob of=/dev/null bs=1M 2>/dev/null || exit 1
        t2=\$(cut -d' ' -f1 /proc/uptime)
        echo \"write \$t0 \$t1\"
        echo \"read \$t1 \$t2\"" >"$log" 2>&1 || die "$system $kind: $(tail -n 3 "$log")"
    awk -v s="$system" -v k="$kind" '$1 == "write" || $1 == "read" {
        d = $3 - $2; if (d < 0.01) d = 0.01; printf "%s\t%s\t%s\t%.2f\n", s, k, $1, d }' "$log" >>"$results"
    grep -q "^read " "$log" || die "$system $kind: no timings in $(cat "$log")"
    "${cli[@]}" rm -f "$name" >/dev/null
    [ "$kind" != volume ] || "${cli[@]}" volume rm benchvol >/dev/null
}

for s in "${systems[@]}"; do
    say "starting $s"
    start_system "$s"
    for kind in volume root; do
        say "$s: $kind, $mib MiB"
        measure "$s" "$kind"
    done
done

mkdir -p "$(dirname "$out")"
python3 - "$results" "$mib" "$out" <<'PY'
import json, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l]
mib = int(sys.argv[2])
figures = {}
for system, kind, op, secs in rows:
    figures.setdefault(system, {}).setdefault(kind, {})[op] = mib * 1.048576 / float(secs)
print(f"{'system':<10}{'case':<8}{'write MB/s':>12}{'read MB/s':>12}")
for system, kinds in figures.items():
    for kind, ops in kinds.items():
        print(f"{system:<10}{kind:<8}{ops['write']:>12.1f}{ops['read']:>12.1f}")
ratios = {}
if "berthd" in figures and "dockerd" in figures:
    for kind in ("volume", "root"):
        for op in ("write", "read"):
            r = figures["berthd"][kind][op] / figures["dockerd"][kind][op]
            ratios[f"{kind}_{op}"] = r
            verdict = "ok" if r >= 1 else "MISSED"
            print(f"berthd/dockerd {kind} {op}: {r:.2f}x (target >= 1) {verdict}")
json.dump({"mib": mib, "mb_per_s": figures, "ratios": ratios}, open(sys.argv[3], "w"), indent=2)
PY
