#!/usr/bin/env bash
# docker cp benchmark: berthd against Debian's dockerd 20.10 (on a containerd
# of its own), both driven by the real docker CLI, side by side, as ratios.
#
# A directory of CP_MB megabytes in CP_FILES files (default 200 MB in 2000
# files, in 20 subdirectories) is made on the host; in each daemon a busybox
# container runs (`docker run -d --network none busybox sleep`), and
#   in    docker cp SRC CONTAINER:/tmp/in-R     (host to container)
#   out   docker cp CONTAINER:/tmp/in-R DST-R   (container to host)
#   get   GET /containers/cpbench/archive?path=/tmp/in-R with curl into
#         /dev/null: the daemon's own share of `out`, without the CLI's
#         extraction (printed, no target)
# are timed (wall time of the CLI, which returns when the daemon has
# written or sent everything), CP_ROUNDS rounds, daemons interleaved; the
# median of each is printed with the ratio berthd / dockerd. The copies are
# checked (file count and bytes) after each round. Target: <= 0.5 x.
#
# Everything runs in a network namespace of its own (the script re-executes
# itself under `unshare --net`), so dockerd's private bridge lives and dies
# with it; daemons' roots, states and sockets are in temp dirs. At exit, also
# on failure, containers are removed, daemons stopped, and what is left
# (processes, mounts) killed, removed and reported.
#
# Environment:
#   CP_MB, CP_FILES, CP_ROUNDS   size, files, rounds (default 200, 2000, 3)
#   BERTHD            berthd (default: target/release/berthd; berth-supervisord
#                     and berth-ctr beside it)
#   DOCKER            the docker CLI (default: /usr/local/bin/docker, else PATH)
#   DOCKERD, CONTAINERD, CTR   (default: from PATH)
#   START_TIMEOUT, CMD_TIMEOUT seconds (default 30, 300)
#   BENCH_OUT         JSON results (default: target/bench/cp.json)
# Exits 0 when both daemons were measured (a missed target is printed as
# MISSED), 1 when something failed or was left behind. Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BERTH_CP_BENCH_NETNS:-}" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "bench: needs root" >&2; exit 1; }
    exec unshare --net env BERTH_CP_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
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
mb=${CP_MB:-200}
files=${CP_FILES:-2000}
rounds=${CP_ROUNDS:-3}
start_timeout=${START_TIMEOUT:-30}
cmd_timeout=${CMD_TIMEOUT:-300}
out=${BENCH_OUT:-$repo/target/bench/cp.json}
image=busybox:latest
bridge=berthcp0

for v in CP_MB:"$mb" CP_FILES:"$files" CP_ROUNDS:"$rounds"; do
    [[ "${v#*:}" =~ ^[1-9][0-9]*$ ]] || die "${v%%:*} must be a positive integer, not '${v#*:}'"
done
for tool in python3 jq findmnt umoci skopeo curl; do need "$tool"; done
for bin in "$docker" "$dockerd" "$containerd" "$ctr"; do need "$bin"; done
for bin in "$berthd" "$berth_supervisord" "$berth_ctr"; do
    [ -x "$bin" ] || die "$bin not found or not executable (make build)"
done
unset CONTAINERD_ADDRESS CONTAINERD_NAMESPACE DOCKER_HOST DOCKER_CONTEXT BERTH_HOST

workdir=$(mktemp -d /tmp/berth-bench-cp.XXXXXX)
chmod 755 "$workdir"
rundir=$(mktemp -d /run/bcp.XXXXXX)
chmod 755 "$rundir"
daemon_pids=()
berthd_cli=()
dockerd_cli=()
problems=$workdir/problems
: >"$problems"

cleanup() {
    local status=$? pid left m cli
    set +e
    for cli in berthd_cli dockerd_cli; do
        local -n c=$cli
        [ "${#c[@]}" -gt 0 ] || continue
        ids=$(timeout 60 "${c[@]}" ps -aq 2>/dev/null)
        # shellcheck disable=SC2086 # one id per word
        [ -z "$ids" ] || timeout 120 "${c[@]}" rm -f $ids >/dev/null 2>&1
    done
    for pid in "${daemon_pids[@]}"; do
        stop_pid "$pid" 15 || echo "daemon $pid did not stop within 15s; killed" >>"$problems"
    done
    left=$( (pids_mentioning "$workdir"; pids_mentioning "$rundir") | sort -u)
    if [ -n "$left" ]; then
        echo "$(echo "$left" | wc -l) processes left running" >>"$problems"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
    fi
    for m in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do
        [ -d "$m/berth-bench-cp-$$" ] || continue
        find "$m/berth-bench-cp-$$" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        rmdir "$m/berth-bench-cp-$$" 2>/dev/null || echo "could not remove the cgroup /berth-bench-cp-$$" >>"$problems"
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
    if [ -z "$(mounts_under "$workdir")" ]; then rm -rf "$workdir"; fi
    if [ -z "$(mounts_under "$rundir")" ]; then rm -rf "$rundir"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

say "building the busybox image"
"$repo/bench/make-busybox-image.sh" "$workdir/image" >"$workdir/image.log" 2>&1 ||
    die "bench/make-busybox-image.sh failed: $(tail -n 5 "$workdir/image.log")"

say "starting berthd"
mkdir -p "$workdir/berthd/cli"
"$berthd" --data-root "$workdir/berthd/data" --exec-root "$rundir/b" --host "unix://$workdir/berthd/berthd.sock" \
    --pidfile "$workdir/berthd/berthd.pid" --supervisor-binary "$berth_supervisord" \
    </dev/null >"$workdir/berthd/berthd.log" 2>&1 &
daemon_pids=("$!" "${daemon_pids[@]}")
berthd_cli=(env DOCKER_CONFIG="$workdir/berthd/cli" "$docker" --host "unix://$workdir/berthd/berthd.sock")
wait_ready berthd "${daemon_pids[0]}" "$workdir/berthd/berthd.log" "${berthd_cli[@]}" version || die "$err"
run_logged "$workdir/berthd/import.log" "$cmd_timeout" "$berth_ctr" --address "$rundir/b/supervisor.sock" \
    --namespace berth images import --name "$image" "$workdir/image/busybox-oci.tar" || die "import: $err"

say "starting dockerd"
d=$workdir/dockerd
mkdir -p "$d/containerd" "$d/data" "$d/cli" "$rundir/docker/exec"
start_containerd "$d/containerd" "$d/containerd/containerd.sock" "$rundir/docker/containerd-state" || die "$err"
# In this script's own network namespace: the bridge goes with it.
make_bridge "$bridge" 198.18.3.1/24 || die "$err"
jq -n --arg key "$d/key.json" '{"deprecated-key-path": $key}' >"$d/daemon.json"
"$dockerd" --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$rundir/docker/exec" \
    --pidfile "$d/docker.pid" --host "unix://$d/docker.sock" --containerd "$d/containerd/containerd.sock" \
    --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/berth-bench-cp-$$" \
    --bridge="$bridge" --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false --shutdown-timeout=2 </dev/null >"$d/dockerd.log" 2>&1 &
daemon_pids=("$!" "${daemon_pids[@]}")
dockerd_cli=(env DOCKER_CONFIG="$d/cli" "$docker" --host "unix://$d/docker.sock")
wait_ready dockerd "${daemon_pids[0]}" "$d/dockerd.log" "${dockerd_cli[@]}" version || die "$err"
run_logged "$d/load.log" "$cmd_timeout" "${dockerd_cli[@]}" load -i "$workdir/image/busybox-docker.tar" ||
    die "load: $err"

say "making $mb MB in $files files"
src=$workdir/src
python3 - "$src" "$mb" "$files" <<'PY'
import os, sys
root, mb, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = mb * 1000 * 1000 // files
for i in range(files):
    d = os.path.join(root, "d%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(os.urandom(size))
PY
want_bytes=$(du -sb --apparent-size "$src" | cut -f1)
want_files=$(find "$src" -type f | wc -l)

for system in berthd dockerd; do
    declare -n cli=${system}_cli
    run_logged "$workdir/$system-run.log" "$cmd_timeout" "${cli[@]}" run -d --network none --name cpbench \
        "$image" sleep 100000 || die "$system: run: $err"
done

times=$workdir/times.tsv # system direction round ms
: >"$times"
timed() { # SYSTEM DIRECTION ROUND CMD...
    local t0 t1
    t0=$(now_us)
    run_logged "$workdir/$1-$2-$3.log" "$cmd_timeout" "${@:4}" || die "$1: cp $2 round $3: $err"
    t1=$(now_us)
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(((t1 - t0) / 1000))" >>"$times"
}
for ((r = 1; r <= rounds; r++)); do
    order=(berthd dockerd)
    [ $((r % 2)) = 0 ] && order=(dockerd berthd)
    for system in "${order[@]}"; do
        declare -n cli=${system}_cli
        say "round $r: $system"
        sync
        timed "$system" in "$r" "${cli[@]}" cp "$src" "cpbench:/tmp/in-$r"
        sync
        timed "$system" out "$r" "${cli[@]}" cp "cpbench:/tmp/in-$r" "$workdir/out-$system-$r"
        sock=$workdir/berthd/berthd.sock
        [ "$system" = dockerd ] && sock=$d/docker.sock
        timed "$system" get "$r" curl -sSf --unix-socket "$sock" -o /dev/null \
            "http://localhost/containers/cpbench/archive?path=/tmp/in-$r"
        got_bytes=$(du -sb --apparent-size "$workdir/out-$system-$r" | cut -f1)
        got_files=$(find "$workdir/out-$system-$r" -type f | wc -l)
        [ "$got_files" = "$want_files" ] && [ "$got_bytes" = "$want_bytes" ] ||
            die "$system round $r: copied $got_files files, $got_bytes bytes; want $want_files, $want_bytes"
        rm -rf "$workdir/out-$system-$r"
        "${cli[@]}" exec cpbench rm -rf "/tmp/in-$r" >/dev/null
    done
done

mkdir -p "$(dirname "$out")"
python3 - "$times" "$out" "$mb" "$files" <<'PY'
import json, statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = {}
for s in ("berthd", "dockerd"):
    for d in ("in", "out", "get"):
        med[(s, d)] = statistics.median(int(r[3]) for r in rows if r[0] == s and r[1] == d)
result = {"mb": int(sys.argv[3]), "files": int(sys.argv[4]), "median_ms": {}, "ratio": {}}
print("docker cp of %s MB in %s files (median ms)" % (sys.argv[3], sys.argv[4]))
for d in ("in", "out", "get"):
    b, k = med[("berthd", d)], med[("dockerd", d)]
    ratio = b / k if k else float("inf")
    result["median_ms"][d] = {"berthd": b, "dockerd": k}
    result["ratio"][d] = ratio
    verdict = "(daemon only, no target)" if d == "get" else "ok" if ratio <= 0.5 else "MISSED (target <= 0.5x)"
    print("  %-4s berthd %8.0f  dockerd %8.0f  ratio %.2fx  %s" % (d, b, k, ratio, verdict))
json.dump(result, open(sys.argv[2], "w"), indent=1)
PY
