#!/usr/bin/env bash
# Image builds: berthd against Debian's dockerd 20.10 (both driven by the
# real docker CLI, `DOCKER_BUILDKIT=0 docker build`) and against Debian's
# buildah (`buildah bud --layers`), side by side in one run, as ratios.
#
# The base is a Debian minbase root made once with `debootstrap
# --variant=minbase` from the mirror in the apt sources, cached as a tar in
# target/bench-cache/ (BASE_TAR to give another). It is imported into both
# daemons (`docker import`) and, saved by dockerd as a docker archive, pulled
# into buildah. The Dockerfile (the context also holds a 100 MB file of
# random bytes and a small file):
#
#   FROM bench-minbase           ENV, WORKDIR, a small RUN,
#   COPY big.bin (100 MB)        a RUN writing 50 MB,
#   COPY small.txt (late)        CMD
#
# Three figures, each the wall time of one build command, BUILD_ROUNDS
# rounds (default 3), systems interleaved, medians:
#   cold      a build with --no-cache (every step runs; the base is there)
#   nochange  the same build again, nothing changed (every step cached)
#   small     small.txt changed, built again (only its COPY and CMD run)
# Each built image is checked: it runs (`cat /app/small.txt`) and shows the
# round's small.txt (daemons), or holds it (buildah, from its mount).
# Targets: cold and small <= 0.5x dockerd, nochange < 0.2 s; the ratios to
# buildah are printed beside.
#
# Everything runs in a network namespace of its own (the script re-executes
# itself under `unshare --net`), so the daemons' bridges live and die with
# it; roots, states and sockets are in temp dirs, buildah's storage too. At
# exit, also on failure, containers are removed, daemons stopped, and what is
# left (processes, mounts) killed, removed and reported.
#
# Environment:
#   BUILD_ROUNDS      rounds (default 3)
#   SYSTEMS           what to measure (default "berthd dockerd buildah")
#   BASE_TAR          the base root as a tar (default: debootstrap, cached)
#   BERTHD            berthd (default: target/release/berthd; berth-supervisord
#                     beside it)
#   BERTH_TRACE=1     berthd with --debug, its log kept in target/bench/ (the
#                     build's spans with their times; slows it a little)
#   DOCKER            the docker CLI (default: /usr/local/bin/docker, else PATH)
#   DOCKERD, CONTAINERD, CTR, BUILDAH, RUNC (buildah's runtime)   (default: from PATH)
#   START_TIMEOUT, CMD_TIMEOUT seconds (default 30, 600)
#   BENCH_OUT         JSON results (default: target/bench/build.json)
# Exits 0 when every system was measured (a missed target is printed as
# MISSED), 1 when something failed or was left behind. Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BERTH_BUILD_BENCH_NETNS:-}" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "bench: needs root" >&2; exit 1; }
    exec unshare --net env BERTH_BUILD_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
berthd=${BERTHD:-$repo/target/release/berthd}
bindir=$(dirname "$berthd")
berth_supervisord=${BERTH_SUPERVISORD:-$bindir/berth-supervisord}
docker=${DOCKER:-$([ -x /usr/local/bin/docker ] && echo /usr/local/bin/docker || command -v docker || echo docker)}
dockerd=${DOCKERD:-$(command -v dockerd || echo dockerd)}
containerd=${CONTAINERD:-$(command -v containerd || echo containerd)}
ctr=${CTR:-$(command -v ctr || echo ctr)}
buildah=${BUILDAH:-$(command -v buildah || echo buildah)}
runc=${RUNC:-$(command -v runc || echo runc)}
rounds=${BUILD_ROUNDS:-3}
systems=${SYSTEMS:-berthd dockerd buildah}
start_timeout=${START_TIMEOUT:-30}
cmd_timeout=${CMD_TIMEOUT:-600}
out=${BENCH_OUT:-$repo/target/bench/build.json}
cache=$repo/target/bench-cache
base_tar=${BASE_TAR:-$cache/debian-bookworm-minbase.tar}
image=bench-minbase:latest

[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "BUILD_ROUNDS must be a positive integer, not '$rounds'"
for s in $systems; do
    case $s in berthd | dockerd | buildah) ;; *) die "SYSTEMS: unknown system '$s'" ;; esac
done
for tool in python3 jq findmnt; do need "$tool"; done
for bin in "$docker" "$dockerd" "$containerd" "$ctr"; do need "$bin"; done
case " $systems " in *" buildah "*) need "$buildah" ;; esac
case " $systems " in *" berthd "*)
    for bin in "$berthd" "$berth_supervisord"; do
        [ -x "$bin" ] || die "$bin not found or not executable (make build)"
    done ;;
esac
unset CONTAINERD_ADDRESS CONTAINERD_NAMESPACE DOCKER_HOST DOCKER_CONTEXT BERTH_HOST
export DOCKER_BUILDKIT=0

workdir=$(mktemp -d /tmp/berth-bench-build.XXXXXX)
chmod 755 "$workdir"
rundir=$(mktemp -d /run/bb.XXXXXX)
chmod 755 "$rundir"
daemon_pids=()
berthd_cli=()
dockerd_cli=()
buildah_cmd=()
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
    if [ "${#buildah_cmd[@]}" -gt 0 ]; then
        timeout 120 "${buildah_cmd[@]}" rm --all >/dev/null 2>&1
        timeout 120 "${buildah_cmd[@]}" rmi --all --force >/dev/null 2>&1
    fi
    for pid in "${daemon_pids[@]}"; do
        stop_pid "$pid" 15 || echo "daemon $pid did not stop within 15s; killed" >>"$problems"
    done
    left=$( (pids_mentioning "$workdir"; pids_mentioning "$rundir") | sort -u)
    if [ -n "$left" ]; then
        echo "$(echo "$left" | wc -l) processes left running" >>"$problems"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
    fi
    for m in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do
        [ -d "$m/berth-bench-build-$$" ] || continue
        find "$m/berth-bench-build-$$" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        rmdir "$m/berth-bench-build-$$" 2>/dev/null ||
            echo "could not remove the cgroup /berth-bench-build-$$" >>"$problems"
    done
    left=$( (mounts_under "$workdir"; mounts_under "$rundir") | sort -u)
    if [ -n "$left" ]; then
        # buildah's overlay driver keeps its storage mounted until told.
        for m in $left; do umount -l "$m"; done
        left=$(echo "$left" | grep -v "^$workdir/buildah/" || true)
        [ -z "$left" ] || echo "$(echo "$left" | wc -l) mounts left, e.g. $(echo "$left" | head -n 1)" >>"$problems"
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

# The base root, made once: debootstrap from the mirror apt uses.
if [ ! -s "$base_tar" ]; then
    need debootstrap
    mirror=$(awk '/^URIs:/ { print $2; exit } /^deb / { print $2; exit }' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    say "making the base: debootstrap --variant=minbase $suite from $mirror (once; cached in $base_tar)"
    mkdir -p "$cache"
    run_logged "$workdir/debootstrap.log" 1800 debootstrap --variant=minbase "$suite" "$workdir/rootfs" "$mirror" ||
        die "debootstrap: $err"
    # As Debian's own images: no downloaded packages, no package lists.
    find "$workdir/rootfs/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -delete
    find "$workdir/rootfs/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
    tar -C "$workdir/rootfs" --numeric-owner --xattrs -cf "$base_tar.tmp" . || die "tar of the base failed"
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$workdir/rootfs"
fi

berthd_args=()
[ "${BERTH_TRACE:-0}" = 1 ] && berthd_args+=(--debug)
start_berthd() {
    say "starting berthd"
    mkdir -p "$workdir/berthd/cli"
    "$berthd" --data-root "$workdir/berthd/data" --exec-root "$rundir/b" --host "unix://$workdir/berthd/berthd.sock" \
        --pidfile "$workdir/berthd/berthd.pid" --supervisor-binary "$berth_supervisord" \
        --bridge berthbld0 --bip 198.18.7.1/24 "${berthd_args[@]}" \
        </dev/null >"$workdir/berthd/berthd.log" 2>&1 &
    daemon_pids=("$!" "${daemon_pids[@]}")
    berthd_cli=(env DOCKER_CONFIG="$workdir/berthd/cli" "$docker" --host "unix://$workdir/berthd/berthd.sock")
    wait_ready berthd "${daemon_pids[0]}" "$workdir/berthd/berthd.log" "${berthd_cli[@]}" version || die "$err"
    run_logged "$workdir/berthd/import.log" "$cmd_timeout" "${berthd_cli[@]}" import "$base_tar" "$image" ||
        die "berthd: import: $err"
}

start_dockerd() {
    say "starting dockerd"
    d=$workdir/dockerd
    mkdir -p "$d/containerd" "$d/data" "$d/cli" "$rundir/docker/exec"
    start_containerd "$d/containerd" "$d/containerd/containerd.sock" "$rundir/docker/containerd-state" || die "$err"
    # In this script's own network namespace: the bridge goes with it.
    make_bridge berthbld1 198.18.6.1/24 || die "$err"
    jq -n --arg key "$d/key.json" '{"deprecated-key-path": $key}' >"$d/daemon.json"
    "$dockerd" --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$rundir/docker/exec" \
        --pidfile "$d/docker.pid" --host "unix://$d/docker.sock" --containerd "$d/containerd/containerd.sock" \
        --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/berth-bench-build-$$" \
        --bridge=berthbld1 --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --userland-proxy=false --shutdown-timeout=2 </dev/null >"$d/dockerd.log" 2>&1 &
    daemon_pids=("$!" "${daemon_pids[@]}")
    dockerd_cli=(env DOCKER_CONFIG="$d/cli" "$docker" --host "unix://$d/docker.sock")
    wait_ready dockerd "${daemon_pids[0]}" "$d/dockerd.log" "${dockerd_cli[@]}" version || die "$err"
    run_logged "$d/import.log" "$cmd_timeout" "${dockerd_cli[@]}" import "$base_tar" "$image" ||
        die "dockerd: import: $err"
}

# buildah on storage of its own (overlay on this ext4), RUN through runc
# with the host network of this namespace (no CNI set-up here).
start_buildah() {
    say "preparing buildah"
    local b=$workdir/buildah
    mkdir -p "$b/root" "$rundir/buildah"
    buildah_cmd=("$buildah" --root "$b/root" --runroot "$rundir/buildah" --storage-driver overlay)
    local archive=$workdir/base-docker-archive.tar
    if [ ! -s "$archive" ]; then
        [ "${#dockerd_cli[@]}" -gt 0 ] || start_dockerd
        run_logged "$b/save.log" "$cmd_timeout" "${dockerd_cli[@]}" save -o "$archive" "$image" ||
            die "dockerd: save: $err"
    fi
    run_logged "$b/pull.log" "$cmd_timeout" "${buildah_cmd[@]}" pull "docker-archive:$archive" ||
        die "buildah: pull: $err"
    run_logged "$b/tag.log" 60 "${buildah_cmd[@]}" tag "$(tail -n 1 "$b/pull.log")" "localhost/$image" ||
        die "buildah: tag: $err"
}

for s in $systems; do
    case $s in
    berthd) start_berthd ;;
    dockerd) [ "${#dockerd_cli[@]}" -gt 0 ] || start_dockerd ;;
    esac
done
case " $systems " in *" buildah "*) start_buildah ;; esac

say "making the context: 100 MB of random bytes and a small file"
ctx=$workdir/context
mkdir -p "$ctx"
head -c 100000000 /dev/urandom >"$ctx/big.bin"
echo "small 0" >"$ctx/small.txt"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM bench-minbase:latest
ENV APP_HOME=/app LANG=C.UTF-8
WORKDIR /app
RUN mkdir -p /app/data && echo built >/app/data/stamp
COPY big.bin /app/big.bin
RUN head -c 50000000 /dev/urandom >/app/data/fifty.bin
COPY small.txt /app/small.txt
CMD ["cat", "/app/small.txt"]
DOCKERFILE

build_cmd() { # SYSTEM TAG [FLAGS...] -> sets cmd
    local system=$1 tag=$2
    shift 2
    case $system in
    buildah) cmd=("${buildah_cmd[@]}" bud --layers --isolation oci --runtime "$runc" --network host -t "$tag" "$@" "$ctx") ;;
    *)
        local -n c=${system}_cli
        cmd=("${c[@]}" build -t "$tag" "$@" "$ctx")
        ;;
    esac
}

# The image shows the round's small.txt.
check_image() { # SYSTEM TAG WANT
    local got
    case $1 in
    buildah)
        local ctr_name
        ctr_name=$("${buildah_cmd[@]}" from "$2") || die "buildah from $2 failed"
        got=$(cat "$("${buildah_cmd[@]}" mount "$ctr_name")/app/small.txt")
        "${buildah_cmd[@]}" umount "$ctr_name" >/dev/null
        "${buildah_cmd[@]}" rm "$ctr_name" >/dev/null
        ;;
    *)
        local -n c=${1}_cli
        got=$(timeout "$cmd_timeout" "${c[@]}" run --rm --network none "$2") || die "$1: run $2 failed"
        ;;
    esac
    [ "$got" = "$3" ] || die "$1: image $2 shows '$got', want '$3'"
}

times=$workdir/times.tsv # system figure round ms
: >"$times"
timed() { # SYSTEM FIGURE ROUND CMD...
    local t0 t1
    sync
    t0=$(now_us)
    run_logged "$workdir/$1-$2-$3.log" "$cmd_timeout" "${@:4}" || die "$1: build ($2, round $3): $err"
    t1=$(now_us)
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(((t1 - t0) / 1000))" >>"$times"
    say "  $1 $2: $(((t1 - t0) / 1000)) ms"
}

read -r -a order <<<"$systems"
for ((r = 1; r <= rounds; r++)); do
    for system in "${order[@]}"; do
        say "round $r: $system"
        tag=bench-built:r$r
        echo "small $r" >"$ctx/small.txt"
        build_cmd "$system" "$tag" --no-cache
        timed "$system" cold "$r" "${cmd[@]}"
        build_cmd "$system" "$tag"
        timed "$system" nochange "$r" "${cmd[@]}"
        grep -q "Using cache" "$workdir/$system-nochange-$r.log" ||
            [ "$system" = buildah ] || die "$system: the unchanged rebuild used no cache"
        echo "small $r changed" >"$ctx/small.txt"
        timed "$system" small "$r" "${cmd[@]}"
        check_image "$system" "$tag" "small $r changed"
    done
    # The next round's system goes first.
    order=("${order[@]:1}" "${order[0]}")
done

if [ "${BERTH_TRACE:-0}" = 1 ] && [ -f "$workdir/berthd/berthd.log" ]; then
    mkdir -p "$(dirname "$out")"
    cp "$workdir/berthd/berthd.log" "$(dirname "$out")/build-berthd.log"
fi

mkdir -p "$(dirname "$out")"
python3 - "$times" "$out" <<'PY'
import json, statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
systems = [s for s in ("berthd", "dockerd", "buildah") if any(r[0] == s for r in rows)]
med = {}
for s in systems:
    for f in ("cold", "nochange", "small"):
        med[(s, f)] = statistics.median(int(r[3]) for r in rows if r[0] == s and r[1] == f)
result = {"median_ms": {}, "ratio_dockerd": {}, "ratio_buildah": {}, "rounds": {}}
print("docker build: minbase, 100 MB COPY, 50 MB RUN (median ms of %d rounds)" %
      len({r[2] for r in rows}))
print("  %-9s" % "" + "".join("%10s" % s for s in systems) + "   berthd/dockerd  berthd/buildah")
for f in ("cold", "nochange", "small"):
    result["median_ms"][f] = {s: med[(s, f)] for s in systems}
    result["rounds"][f] = {s: [int(r[3]) for r in rows if r[0] == s and r[1] == f] for s in systems}
    line = "  %-9s" % f + "".join("%10.0f" % med[(s, f)] for s in systems)
    verdict = ""
    if "berthd" in systems:
        b = med[("berthd", f)]
        for other, key in (("dockerd", "ratio_dockerd"), ("buildah", "ratio_buildah")):
            if other in systems:
                ratio = b / med[(other, f)] if med[(other, f)] else float("inf")
                result[key][f] = ratio
                line += "  %13.2fx" % ratio
            else:
                line += "  %14s" % "-"
        if f == "nochange":
            verdict = "ok" if b < 200 else "MISSED (target < 200 ms)"
        elif "dockerd" in systems:
            verdict = "ok" if result["ratio_dockerd"][f] <= 0.5 else "MISSED (target <= 0.5x dockerd)"
    print(line + "  " + verdict)
json.dump(result, open(sys.argv[2], "w"), indent=1)
PY
