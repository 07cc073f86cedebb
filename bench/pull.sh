#!/usr/bin/env bash
# Image-pull benchmark: berth against dockerd and containerd.
#
# Measures the wall time of pulling one image from a local registry into an
# empty store, fetch and unpack included, with each system's own client:
#   docker    `docker pull REF`                      (dockerd 20.10, overlay2)
#   ctr       `ctr images pull --plain-http REF`     (containerd 1.6; ctr fetches
#             every blob, then containerd unpacks them into its overlayfs snapshotter)
#   berth     `berth-ctr images pull REF`            (berth-supervisord; plain HTTP is
#             automatic for loopback registries; the pull unpacks)
# and, after the last round, the resident memory (VmRSS) of the idle daemon
# with the image stored. Targets:
#   berth <= 0.5 x docker, <= 0.5 x ctr                 (median pull wall time)
#   berth-supervisord <= 0.25 x containerd              (idle VmRSS, image stored)
#
# The image (bench/make-pull-image.sh, cached under target/bench-cache/) has
# three gzip layers: a Debian bookworm minbase root filesystem (debootstrap),
# 100 MiB and 50 MiB of random data. It is pushed with skopeo to a
# docker-registry (distribution) on a free 127.0.0.1 port, storage in a temp
# dir, started by this script and stopped at exit.
#
# Every round starts each system's daemon afresh, on empty state in a temp
# dir (never /var/lib/{docker,containerd,berth} or /run/{containerd,berth}),
# waits for its socket (with a deadline), runs `sync` (so no system pays for
# another's writeback), times the pull, checks that the image was really
# unpacked (data/big.bin, data/mid.bin byte for byte and etc/debian_version
# in the store), then stops the daemon, unmounts whatever it left mounted and
# removes the dir. dockerd runs on a private containerd of its own (which the
# pull does not use: dockerd 20.10 pulls into its overlay2 graph driver
# itself, and keeps no compressed blobs). Systems are interleaved within a
# round, their order rotating from round to round; the figure is the median
# over rounds. The registry's blobs come from the page cache for every
# system alike (they are read once by the push); the page cache is not dropped.
#
# Columns: wall = the client command's wall time; client = its CPU time
# (user+sys, with its children); daemon = the CPU time the daemon(s) spent
# during the pull (with reaped children, e.g. unpigz); store = disk use of
# the daemon's root after the pull.
#
# Environment:
#   SYSTEMS            systems to measure (default: "docker ctr berth")
#   ROUNDS             rounds (default 3)
#   BERTH_SUPERVISORD  berth-supervisord (default: target/release/berth-supervisord)
#   BERTH_CTR          berth-ctr (default: target/release/berth-ctr)
#   DOCKERD, DOCKER, CONTAINERD, CTR, REGISTRY, SKOPEO
#                      the other programs (default: from PATH; REGISTRY is
#                      docker-registry)
#   IDLE_WAIT          seconds to let a daemon settle before reading its RSS
#                      (default 3; then until its CPU time stops moving)
#   START_TIMEOUT      seconds a daemon may take to answer (default 30)
#   PULL_TIMEOUT       seconds one pull may take (default 600)
#   BENCH_CACHE        image cache (default: target/bench-cache/pull)
#   BENCH_OUT          JSON results (default: target/bench/pull.json)
#   KEEP_LOGS          a directory to copy the daemons' and clients' logs into
#   BRIDGE             the private bridge given to dockerd (default: berthpull0;
#                      address 198.18.1.1/24, a range reserved for benchmarks)
#
# Exits 0 when every system was measured, met targets or not (a missed one
# is printed as MISSED); 1 when something failed (the others are still
# measured and reported) or something was left behind. Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
berth_supervisord=${BERTH_SUPERVISORD:-$repo/target/release/berth-supervisord}
berth_ctr=${BERTH_CTR:-$repo/target/release/berth-ctr}
dockerd=${DOCKERD:-$(command -v dockerd || echo dockerd)}
docker=${DOCKER:-$(command -v docker || echo docker)}
containerd=${CONTAINERD:-$(command -v containerd || echo containerd)}
ctr=${CTR:-$(command -v ctr || echo ctr)}
registry=${REGISTRY:-$(command -v docker-registry || echo docker-registry)}
skopeo=${SKOPEO:-$(command -v skopeo || echo skopeo)}
systems=${SYSTEMS:-docker ctr berth}
rounds=${ROUNDS:-3}
idle_wait=${IDLE_WAIT:-3}
start_timeout=${START_TIMEOUT:-30}
pull_timeout=${PULL_TIMEOUT:-600}
out=${BENCH_OUT:-$repo/target/bench/pull.json}
keep_logs=${KEEP_LOGS:-}
namespace=bench
bridge=${BRIDGE:-berthpull0}
bridge_addr=198.18.1.1/24
bridge_made=

[ "$(id -u)" -eq 0 ] || die "needs root (daemons that mount overlayfs)"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
read -r -a systems <<<"$systems"
[ "${#systems[@]}" -gt 0 ] || die "SYSTEMS is empty"
for s in "${systems[@]}"; do
    case $s in docker | ctr | berth) ;; *) die "unknown system '$s' in SYSTEMS (docker, ctr, berth)" ;; esac
done
has() { [[ " ${systems[*]} " == *" $1 "* ]]; }
for tool in python3 jq findmnt flock "$registry" "$skopeo"; do need "$tool"; done
if has docker; then need "$dockerd"; need "$docker"; need ip; fi
if has docker || has ctr; then need "$containerd"; need "$ctr"; fi
clk_tck=$(getconf CLK_TCK)

# Build (or find cached) the image before anything is started.
layout=$("$repo/bench/make-pull-image.sh")
cache=$(dirname "$layout")

# Stops the round's daemons and removes DIR (unless KEEP is "keep"),
# recording anything left behind.
teardown() { # DIR LABEL [KEEP]
    local dir=$1 label=$2 keep=${3:-} pid m left
    for pid in "${daemon_pids[@]}"; do
        stop_pid "$pid" 15 || echo "$label: daemon $pid did not stop within 15s of SIGTERM; killed" >>"$problems"
    done
    daemon_pids=()
    left=$(pids_mentioning "$dir")
    if [ -n "$left" ]; then
        echo "$label: processes left running: $(echo $left)" >>"$problems"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    for m in $(mounts_under "$dir"); do
        echo "$label: mount left: $m" >>"$problems"
        umount -l "$m" || true
    done
        if [ -n "$(mounts_under "$dir")" ]; then
        echo "$label: kept $dir (mounts remain)" >>"$problems"
    elif [ "$keep" != keep ]; then
        rm -rf "$dir"
    fi
}

cleanup() {
    local status=$? child
    set +e
    if [ -n "${pull_job:-}" ]; then
        # The subshell's child is timeout, which passes SIGTERM on to the client.
        for child in $(cat "/proc/$pull_job/task/$pull_job/children" 2>/dev/null); do
            kill -TERM "$child" 2>/dev/null
        done
        wait "$pull_job"
    fi
    if [ -n "$current_dir" ]; then
        teardown "$current_dir" "${current_label:-exit}"
        if [ -s "$problems" ]; then sed 's/^/bench: left behind: /' "$problems" >&2; fi
    fi
    [ -n "$registry_pid" ] && stop_pid "$registry_pid" 5
    if [ -n "$bridge_made" ]; then ip link del "$bridge_made" || echo "bench: could not delete the bridge $bridge_made" >&2; fi
    for m in $(mounts_under "$workdir"); do umount -l "$m"; done
    if [ -z "$(mounts_under "$workdir")" ]; then rm -rf "$workdir"; else echo "bench: kept $workdir (mounts remain)" >&2; fi
    if [ -n "$runlock" ]; then
        flock -u "$runlock"
        if flock -xn "$runlock"; then
            [ "$pre_run_docker" = no ] && rmdir /run/docker/plugins /run/docker 2>/dev/null
            [ "$pre_run_containerd" = no ] && rmdir /run/containerd/s /run/containerd 2>/dev/null
        fi
    fi
    exit "$status"
}


# utime+stime+cutime+cstime of the given processes, in clock ticks.
cpu_ticks() { # PID...
    local pid total=0 stat f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a f <<<"${stat##*) }"
        # after "pid (comm) ": state=f[0] ... utime=f[11] stime=f[12] cutime=f[13] cstime=f[14]
        total=$((total + f[11] + f[12] + f[13] + f[14]))
    done
    echo "$total"
}

# Lets PID settle (IDLE_WAIT seconds, then until its CPU time stays put for
# a second, at most 30 s more) and records its VmRSS and VmHWM.
record_idle_rss() { # SYSTEM PROCESS PID
    local t0 t1 deadline=$((SECONDS + idle_wait + 30))
    sleep "$idle_wait"
    t0=$(cpu_ticks "$3")
    while sleep 1; do
        t1=$(cpu_ticks "$3")
        [ "$t1" = "$t0" ] || [ "$SECONDS" -ge "$deadline" ] && break
        t0=$t1
    done
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(status_kib "$3" VmRSS)" "$(status_kib "$3" VmHWM)" >>"$memory"
}

# The unpacked image must be in the store under ROOT: big.bin and mid.bin
# identical to the image's, and the Debian tree.
verify_unpacked() { # ROOT
    local name found f ok
    for name in big.bin mid.bin; do
        ok=
        found=$(find "$1" -xdev -path "*/data/$name" -type f -size "$(stat -c %s "$cache/$name")c" 2>/dev/null)
        for f in $found; do
            if cmp -s "$f" "$cache/$name"; then ok=yes; break; fi
        done
        [ -n "$ok" ] || { err="the store under $1 has no unpacked data/$name identical to the image's"; return 1; }
    done
    [ -n "$(find "$1" -xdev -path '*/etc/debian_version' -type f 2>/dev/null | head -n 1)" ] ||
        { err="the store under $1 has no unpacked etc/debian_version"; return 1; }
}

# Starts SYSTEM's daemon(s) on empty state in DIR; sets pull_cmd, store,
# pull_pids (the daemons whose CPU time counts) and mem_pids (name=pid).
start_system() { # SYSTEM DIR
    local dir=$2 ctd_pid
    case $1 in
    docker)
        mkdir -p "$dir/containerd" "$dir/data" "$dir/exec" "$dir/cli"
        start_containerd "$dir/containerd" "$dir/containerd/containerd.sock" "$dir/containerd/state" || return 1
        ctd_pid=$started_pid
        # Our own config file, so /etc/docker/daemon.json is not read; it moves
        # the libtrust key dockerd 20.10 would write to /etc/docker/key.json.
        jq -n --arg key "$dir/key.json" '{"deprecated-key-path": $key}' >"$dir/daemon.json"
        # A bridge of its own (made once, deleted at exit; see make_bridge in
        # lib.sh), never --bridge=none, which deletes the host's docker0.
        [ -n "$bridge_made" ] || make_bridge "$bridge" "$bridge_addr" || return 1
        "$dockerd" --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
            --pidfile "$dir/docker.pid" --host "unix://$dir/docker.sock" \
            --containerd "$dir/containerd/containerd.sock" --storage-driver overlay2 \
            --exec-opt native.cgroupdriver=cgroupfs \
            --bridge="$bridge" --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
            --userland-proxy=false --shutdown-timeout=2 \
            </dev/null >"$dir/dockerd.log" 2>&1 &
        started_pid=$!
        daemon_pids=("$started_pid" "${daemon_pids[@]}")
        docker_cmd=(env -u DOCKER_HOST -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY DOCKER_CONFIG="$dir/cli"
            "$docker" --host "unix://$dir/docker.sock")
        wait_ready dockerd "$started_pid" "$dir/dockerd.log" \
            "${docker_cmd[@]}" version --format '{{.Server.Version}}' || return 1
        pull_cmd=("${docker_cmd[@]}" pull "$ref")
        store=$dir/data
        pull_pids=("$started_pid" "$ctd_pid")
        mem_pids=("dockerd=$started_pid" "containerd(dockerd's)=$ctd_pid")
        ;;
    ctr)
        start_containerd "$dir" "$dir/containerd.sock" "$dir/state" || return 1
        pull_cmd=(env -u CONTAINERD_ADDRESS -u CONTAINERD_NAMESPACE -u CONTAINERD_SNAPSHOTTER
            "$ctr" --address "$dir/containerd.sock" --namespace "$namespace"
            images pull --snapshotter overlayfs --plain-http "$ref")
        store=$dir/root
        pull_pids=("$started_pid")
        mem_pids=("containerd=$started_pid")
        ;;
    berth)
        local bin
        for bin in "$berth_supervisord" "$berth_ctr"; do
            [ -x "$bin" ] || { err="$bin not found or not executable (make build)"; return 1; }
        done
        mkdir -p "$dir/root" "$dir/state"
        "$berth_supervisord" --root "$dir/root" --state "$dir/state" --address "$dir/berth.sock" \
            </dev/null >"$dir/supervisord.log" 2>&1 &
        started_pid=$!
        daemon_pids=("$started_pid" "${daemon_pids[@]}")
        wait_ready berth-supervisord "$started_pid" "$dir/supervisord.log" socket_accepts "$dir/berth.sock" ||
            return 1
        pull_cmd=("$berth_ctr" --address "$dir/berth.sock" images pull "$ref")
        store=$dir/root
        pull_pids=("$started_pid")
        mem_pids=("berth-supervisord=$started_pid")
        ;;
    esac
}

# One measured pull of SYSTEM in round R.
pull_once() { # SYSTEM R DIR
    local system=$1 r=$2 dir=$3 status load before after wall user sys entry
    start_system "$system" "$dir" || return 1
    sync
    load=$(cut -d' ' -f1 /proc/loadavg)
    before=$(cpu_ticks "${pull_pids[@]}")
    # In the background, so that a signal to this script stops it at once
    # (see cleanup); `time` gives the client's wall and CPU time.
    (
        TIMEFORMAT='%3R %3U %3S'
        time timeout "$pull_timeout" "${pull_cmd[@]}" </dev/null >"$dir/pull.log" 2>&1
    ) 2>"$dir/pull.time" &
    pull_job=$!
    wait "$pull_job"
    status=$?
    pull_job=
    if [ "$status" != 0 ]; then
        after=$(tail -n 5 "$dir/pull.log" | tr '\n' ' ')
        err="the pull failed (or took over ${pull_timeout}s): $after"
        return 1
    fi
    after=$(cpu_ticks "${pull_pids[@]}")
    read -r wall user sys <"$dir/pull.time"
    verify_unpacked "$store" || return 1
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$r" \
        "$(awk -v w="$wall" 'BEGIN { printf "%.0f", w * 1000 }')" \
        "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", (u + s) * 1000 }')" \
        "$(((after - before) * 1000 / clk_tck))" \
        "$(du -sxk "$store" | cut -f1)" "$load" >>"$results"
    say "  round $r $system: $(awk -v w="$wall" 'BEGIN { printf "%.2f", w }') s (load average before: $load)"
    if [ "$r" = "$rounds" ]; then
        for entry in "${mem_pids[@]}"; do
            record_idle_rss "$system" "${entry%%=*}" "${entry#*=}"
        done
    fi
}

# --- state, and its removal at exit -------------------------------------------
daemon_pids=() # daemons of the current round, started last first
registry_pid=
pull_job=      # the subshell timing the current pull
current_dir=   # the current round's temp dir
runlock=
workdir=$(mktemp -d /tmp/berth-bench-pull.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
chmod 755 "$workdir"
results=$workdir/results.tsv # system round wall_ms client_ms daemon_ms store_kib load
memory=$workdir/memory.tsv   # system process rss_kib hwm_kib
errors=$workdir/errors.tsv   # system round message
problems=$workdir/problems   # things left behind
: >"$results"
: >"$memory"
: >"$errors"
: >"$problems"

# dockerd 20.10 makes /run/docker/plugins whatever its flags; as the interop
# tests do, every user holds a shared flock on /run, and whoever can take it
# exclusively at the end removes such directories if they were not there
# before and are empty.
exec {runlock}</run
flock -s "$runlock"
pre_run_docker=$([ -e /run/docker ] && echo yes || echo no)
pre_run_containerd=$([ -e /run/containerd ] && echo yes || echo no)

# --- the registry, with the image pushed --------------------------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
registry_answers() { # PORT
    python3 -c '
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/v2/" % sys.argv[1], timeout=1).read()' "$1"
}
mkdir "$workdir/registry"
for attempt in 1 2 3; do
    port=$(free_port)
    cat >"$workdir/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $workdir/registry/storage
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
EOF
    "$registry" serve "$workdir/registry/config.yml" </dev/null >"$workdir/registry/registry.log" 2>&1 &
    registry_pid=$!
    if wait_ready docker-registry "$registry_pid" "$workdir/registry/registry.log" registry_answers "$port"; then
        break
    fi
    stop_pid "$registry_pid" 5 || true
    registry_pid=
    # Another process may have taken the port first; try another.
    [ "$attempt" = 3 ] && die "$err"
done
ref=127.0.0.1:$port/bench/debian:latest
say "pushing the image to $ref"
"$skopeo" copy --quiet --dest-tls-verify=false "oci:$layout:bench" "docker://$ref" >"$workdir/registry/push.log" 2>&1 ||
    die "skopeo copy failed: $(tail -n 5 "$workdir/registry/push.log")"
manifest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "bench") | .digest' \
    "$layout/index.json")
manifest_json=$layout/blobs/sha256/${manifest#sha256:}

# --- the rounds ------------------------------------------------------------------
live=("${systems[@]}")
say "$rounds round(s) of: ${systems[*]} (fresh daemon, empty store each time)"
for ((r = 1; r <= rounds; r++)); do
    n=${#live[@]}
    [ "$n" -gt 0 ] || break
    shift_by=$(((r - 1) % n))
    order=("${live[@]:shift_by}" "${live[@]:0:shift_by}")
    for system in "${order[@]}"; do
        current_dir=$workdir/round$r-$system
        current_label="round $r $system"
        mkdir "$current_dir"
        if ! pull_once "$system" "$r" "$current_dir"; then
            printf '%s\t%s\t%s\n' "$system" "$r" "$(echo "$err" | tr '\t\n' '  ')" >>"$errors"
            say "  round $r $system: FAILED: $err"
            live=($(printf '%s\n' "${live[@]}" | grep -vx "$system" || true))
        fi
        if [ -n "$keep_logs" ]; then
            mkdir -p "$keep_logs/round$r-$system"
            find "$current_dir" -maxdepth 2 -name '*.log' -exec cp {} "$keep_logs/round$r-$system/" \;
        fi
                # The round's store is removed at the end, not now: on ext4, creating
        # inodes for a minute after thousands were deleted scans past the
        # deleted ones (recently_deleted() in find_inode_bit), which measured
        # here as a 2x slowdown of whichever system pulled next.
        teardown "$current_dir" "$current_label" keep
        current_dir=
    done
done

# --- report ------------------------------------------------------------------------
commands=$(jq -n --arg r "$ref" '{
    docker: "docker pull \($r)",
    ctr: "ctr images pull --snapshotter overlayfs --plain-http \($r)",
    berth: "berth-ctr images pull \($r)"}')
mkdir -p "$(dirname "$out")"
echo
python3 "$repo/bench/pull_report.py" --results "$results" --memory "$memory" --errors "$errors" \
    --problems "$problems" --manifest "$manifest_json" --ref "$ref" --rounds "$rounds" \
    --commands "$commands" --out "$out" "${systems[@]}"
echo
echo "results: $out"

failed=$(cut -f1 "$errors" | sort -u | tr '\n' ' ')
if [ -n "$failed" ]; then
    echo "bench: failed: $failed(figures above are for the others)" >&2
    exit 1
fi
if [ -s "$problems" ]; then
    echo "bench: things were left behind (see above)" >&2
    exit 1
fi
