#!/usr/bin/env bash
# Task benchmark: berth against containerd (ctr, runc) and dockerd.
#
# Three figures, for each system side by side in one run, with its own
# client and a busybox image (bench/make-busybox-image.sh):
#
# 1. Run latency: the wall time of a one-shot container, median of TASK_RUNS
#    interleaved rounds (order rotating), after TASK_WARMUP rounds:
#      berth          berth-ctr run --rm --name ID IMAGE /bin/true
#      ctr            ctr run --rm IMAGE ID /bin/true   (runc, containerd's
#                     runc shim; --runc-root and --fifo-dir in the temp dir)
#      docker         docker run --rm --network none --name ID IMAGE /bin/true
#      docker-bridge  the same without --network: docker's default, a veth
#                     on a bridge (DOCKER_BRIDGE=1; see below)
#    berth-ctr run and ctr run give the container no network (a network
#    namespace with only lo), so docker's like-for-like figure is the one
#    with --network none. Timed by bench/tasks_timing.py (posix_spawn +
#    wait4, as bench/timing.py); every command must exit 0, and a probe run
#    of each first must print what the container echoes.
#    Target: berth <= 0.2 x ctr.
# 2. Shim memory: one detached container running /bin/sleep per system; the
#    VmRSS, RssAnon and Pss (/proc/PID/smaps_rollup) of the process that is
#    the container's parent: berth-shim for berth, containerd-shim-runc-v2
#    for ctr (and for docker, whose containerd starts the same shim), read
#    after IDLE_WAIT seconds and then once its CPU time stays put for a
#    second. It is the only container of its system then; Pss divides the
#    pages shared with other processes (a shared library, the same binary
#    running elsewhere) among them.
#    Target: berth-shim <= 0.15 x containerd-shim-runc-v2 (VmRSS).
# 3. PARALLEL containers at once: the wall time of starting PARALLEL
#    detached /bin/sleep containers concurrently (`xargs -P PARALLEL`, one
#    client per container: `berth-ctr run -d`, `ctr run -d`,
#    `docker run -d --network none`), until every client has exited; then
#    the number running is checked with the system's own listing (tasks ls,
#    ctr tasks ls, docker ps). The clean-up that follows (kill and remove
#    all) is not in the figure; its time is printed beside it. Median of
#    PARALLEL_ROUNDS rounds, systems interleaved.
#
# The daemons (berth-supervisord, containerd, dockerd on a containerd of
# its own) run side by side for the whole benchmark, each on a root, state
# and socket in a temp dir (never /var/lib/{berth,containerd,docker},
# /run/{berth,containerd,docker} or the system's sockets). Container
# cgroups: /berth/NS/ID (berth), /NS/ID (ctr), /NS-docker/ID (docker), NS
# being berth-bench-PID. containerd 1.6 puts shim sockets in
# /run/containerd/s/ and dockerd 20.10 makes /run/docker/plugins/ whatever
# the flags; as bench/pull.sh does, they are removed at the end if they
# were not there before and are empty.
#
# DOCKER_BRIDGE=1 (the default) also measures docker's default network: the
# daemon's bridge is a private one made by this script (BRIDGE, address
# 198.18.0.1/24, a range reserved for benchmarks), with no iptables rules, no
# IP forwarding and no masquerading, deleted at exit. dockerd gets that
# bridge with DOCKER_BRIDGE=0 too, never --bridge=none (which would delete
# the host's docker0).
#
# At exit, also on failure or interruption, every container is killed and
# removed, the daemons are stopped, and anything left (processes, cgroups
# with processes, mounts) is killed, removed and reported.
#
# Environment:
#   SYSTEMS            systems to measure (default: "berth ctr docker")
#   TASK_RUNS          measured rounds of the run latency (default 20)
#   TASK_WARMUP        its warm-up rounds, not counted (default 2)
#   PARALLEL           containers started at once (default 100)
#   PARALLEL_ROUNDS    rounds of it (default 3)
#   DOCKER_BRIDGE      1: also docker's default network on a private bridge;
#                      0: not (default 1)
#   BRIDGE             the private bridge's name (default: berthbench0)
#   BERTH_SUPERVISORD  berth-supervisord (default: target/release/berth-supervisord;
#                      berth-shim and berth-runtime are found beside it)
#   BERTH_CTR          berth-ctr (default: target/release/berth-ctr)
#   DOCKERD, DOCKER, CONTAINERD, CTR
#                      the other programs (default: from PATH)
#   IDLE_WAIT          seconds to let a shim settle before reading its memory
#                      (default 2; then until its CPU time stops moving)
#   START_TIMEOUT      seconds a daemon may take to answer (default 30)
#   CMD_TIMEOUT        seconds one client command may take (default 60)
#   PARALLEL_TIMEOUT   seconds the PARALLEL starts, or their clean-up, may
#                      take (default 300)
#   BENCH_OUT          JSON results (default: target/bench/tasks.json)
#   KEEP_LOGS          a directory to copy the daemons' and clients' logs into
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
systems=${SYSTEMS:-berth ctr docker}
runs=${TASK_RUNS:-20}
warmup=${TASK_WARMUP:-2}
parallel=${PARALLEL:-100}
parallel_rounds=${PARALLEL_ROUNDS:-3}
docker_bridge=${DOCKER_BRIDGE:-1}
bridge=${BRIDGE:-berthbench0}
idle_wait=${IDLE_WAIT:-2}
start_timeout=${START_TIMEOUT:-30}
cmd_timeout=${CMD_TIMEOUT:-60}
parallel_timeout=${PARALLEL_TIMEOUT:-300}
out=${BENCH_OUT:-$repo/target/bench/tasks.json}
keep_logs=${KEEP_LOGS:-}
ns=berth-bench-$$
image=berth-bench/busybox:latest
bridge_addr=198.18.0.1/24

[ "$(id -u)" -eq 0 ] || die "needs root (daemons that mount overlayfs and make cgroups)"
for v in TASK_RUNS:"$runs" PARALLEL:"$parallel" PARALLEL_ROUNDS:"$parallel_rounds"; do
    [[ "${v#*:}" =~ ^[1-9][0-9]*$ ]] || die "${v%%:*} must be a positive integer, not '${v#*:}'"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "TASK_WARMUP must be a non-negative integer, not '$warmup'"
[[ "$docker_bridge" =~ ^[01]$ ]] || die "DOCKER_BRIDGE must be 0 or 1, not '$docker_bridge'"
read -r -a systems <<<"$systems"
[ "${#systems[@]}" -gt 0 ] || die "SYSTEMS is empty"
for s in "${systems[@]}"; do
    case $s in berth | ctr | docker) ;; *) die "unknown system '$s' in SYSTEMS (berth, ctr, docker)" ;; esac
done
has() { [[ " ${systems[*]} " == *" $1 "* ]]; }
for tool in python3 jq findmnt flock xargs timeout umoci skopeo; do need "$tool"; done
if has docker; then
    need "$dockerd"
    need "$docker"
    need ip
fi
if has docker || has ctr; then need "$containerd"; need "$ctr"; fi
if has berth; then
    for bin in "$berth_supervisord" "$berth_ctr"; do
        [ -x "$bin" ] || die "$bin not found or not executable (make build)"
    done
fi

# The clients read these; the benchmark's own sockets are given explicitly.
unset CONTAINERD_ADDRESS CONTAINERD_NAMESPACE CONTAINERD_SNAPSHOTTER
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY BERTH_ADDRESS BERTH_NAMESPACE

# --- helpers (as in bench/pull.sh) ---------------------------------------------

# cpu_ticks, now_us, run_logged and cgroup_mounts are in bench/lib.sh.

# The cgroup parents under which each system puts its containers.
cgroup_parent() { # SYSTEM
    case $1 in
    berth) echo "/berth/$ns" ;;
    ctr) echo "/$ns" ;;
    docker) echo "/$ns-docker" ;;
    esac
}

# The CPUs' busy share (user, system, irq, steal: all but idle and iowait),
# in percent, over half a second.
cpu_busy_pct() {
    local a b
    read -r -a a </proc/stat
    sleep 0.5
    read -r -a b </proc/stat
    local total=0 idle i
    for ((i = 1; i <= 8; i++)); do total=$((total + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $((total > 0 ? (total - idle) * 100 / total : 0))
}

# Waits (at most 20 s) until the CPUs are mostly idle, so that a round does
# not start while the previous one's clean-up still echoes (the daemons
# reaping, the kernel freeing); prints the last busy share.
wait_quiet() {
    local busy deadline=$((SECONDS + 20))
    while busy=$(cpu_busy_pct) && [ "$busy" -ge 10 ] && [ "$SECONDS" -lt "$deadline" ]; do :; done
    echo "$busy"
}

# --- the systems -------------------------------------------------------------------

# Starts SYSTEM's daemon(s) in DIR and imports the image as $image; sets
# the system's client command (berth_cli, ctr_cli, docker_cli).
start_system() { # SYSTEM DIR
    local dir=$2 network
    mkdir -p "$dir"
    case $1 in
    berth)
        mkdir -p "$dir/root" "$rundir/berth"
        "$berth_supervisord" --root "$dir/root" --state "$rundir/berth" --address "$dir/berth.sock" \
            </dev/null >"$dir/supervisord.log" 2>&1 &
        started_pid=$!
        daemon_pids=("$started_pid" "${daemon_pids[@]}")
        wait_ready berth-supervisord "$started_pid" "$dir/supervisord.log" socket_accepts "$dir/berth.sock" ||
            return 1
        berth_cli=("$berth_ctr" --address "$dir/berth.sock" --namespace "$ns")
        # The layout's index names only the tag (latest): --name gives the rest.
        run_logged "$dir/import.log" "$cmd_timeout" "${berth_cli[@]}" images import --name "$image" \
            "$image_dir/busybox-oci.tar" || return 1
        ;;
    ctr)
        mkdir -p "$rundir/ctr/runc" "$rundir/ctr/fifo"
        start_containerd "$dir" "$dir/containerd.sock" "$rundir/ctr/state" || return 1
        ctr_cli=("$ctr" --address "$dir/containerd.sock" --namespace "$ns")
        # The runtime's state and the stdio FIFOs in the tmpfs temp dir,
        # not under /run/containerd.
        ctr_run_flags=(--runc-root "$rundir/ctr/runc" --fifo-dir "$rundir/ctr/fifo")
        run_logged "$dir/import.log" "$cmd_timeout" "${ctr_cli[@]}" images import \
            --base-name "${image%:*}" "$image_dir/busybox-oci.tar" || return 1
        ;;
    docker)
        mkdir -p "$dir/containerd" "$dir/data" "$rundir/docker/exec" "$dir/cli"
        start_containerd "$dir/containerd" "$dir/containerd/containerd.sock" \
            "$rundir/docker/containerd-state" || return 1
        # Always a bridge of its own (see make_bridge in lib.sh), used only
        # by the docker-bridge runs.
        make_bridge "$bridge" "$bridge_addr" || return 1
        network=(--bridge="$bridge")
        # Our own config file, so /etc/docker/daemon.json is not read; it moves
        # the libtrust key dockerd 20.10 would write to /etc/docker/key.json.
        jq -n --arg key "$dir/key.json" '{"deprecated-key-path": $key}' >"$dir/daemon.json"
        "$dockerd" --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$rundir/docker/exec" \
            --pidfile "$dir/docker.pid" --host "unix://$dir/docker.sock" \
            --containerd "$dir/containerd/containerd.sock" --storage-driver overlay2 \
            --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "$(cgroup_parent docker)" \
            "${network[@]}" --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
            --userland-proxy=false --shutdown-timeout=2 \
            </dev/null >"$dir/dockerd.log" 2>&1 &
        started_pid=$!
        daemon_pids=("$started_pid" "${daemon_pids[@]}")
        export DOCKER_CONFIG=$dir/cli
        wait_ready dockerd "$started_pid" "$dir/dockerd.log" \
            "$docker" --host "unix://$dir/docker.sock" version --format '{{.Server.Version}}' || return 1
        docker_cli=("$docker" --host "unix://$dir/docker.sock")
        run_logged "$dir/load.log" "$cmd_timeout" "${docker_cli[@]}" load -i "$image_dir/busybox-docker.tar" ||
            return 1
        run_logged "$dir/tag.log" "$cmd_timeout" "${docker_cli[@]}" tag busybox:latest "$image" || return 1
        ;;
    esac
}

# The argv of a one-shot run of ARGS in container ID, --rm, attached.
run_argv() { # SYSTEM ID ARGS...
    local system=$1 id=$2
    shift 2
    case $system in
    berth) argv=("${berth_cli[@]}" run --rm --name "$id" "$image" "$@") ;;
    ctr) argv=("${ctr_cli[@]}" run --rm "${ctr_run_flags[@]}" "$image" "$id" "$@") ;;
    docker) argv=("${docker_cli[@]}" run --rm --network none --name "$id" "$image" "$@") ;;
    docker-bridge) argv=("${docker_cli[@]}" run --rm --name "$id" "$image" "$@") ;;
    esac
}

# The argv of a detached run of ARGS in container ID.
detached_argv() { # SYSTEM ID ARGS...
    local system=$1 id=$2
    shift 2
    case $system in
    berth) argv=("${berth_cli[@]}" run -d --name "$id" "$image" "$@") ;;
    ctr) argv=("${ctr_cli[@]}" run -d "${ctr_run_flags[@]}" "$image" "$id" "$@") ;;
    docker) argv=("${docker_cli[@]}" run -d --network none --name "$id" "$image" "$@") ;;
    esac
}

# Ids of SYSTEM's tasks (containers) with a running process.
running_ids() { # SYSTEM
    case $1 in
    berth) timeout "$cmd_timeout" "${berth_cli[@]}" tasks ls | awk 'NR > 1 && $3 == "RUNNING" { print $1 }' ;;
    ctr) timeout "$cmd_timeout" "${ctr_cli[@]}" tasks ls | awk 'NR > 1 && $3 == "RUNNING" { print $1 }' ;;
    docker) timeout "$cmd_timeout" "${docker_cli[@]}" ps --format '{{.Names}}' ;;
    esac
}

# The host pid of container ID's first process.
init_pid() { # SYSTEM ID
    case $1 in
    berth) timeout "$cmd_timeout" "${berth_cli[@]}" tasks ls | awk -v id="$2" 'NR > 1 && $1 == id { print $2 }' ;;
    ctr) timeout "$cmd_timeout" "${ctr_cli[@]}" tasks ls | awk -v id="$2" 'NR > 1 && $1 == id { print $2 }' ;;
    docker) timeout "$cmd_timeout" "${docker_cli[@]}" inspect --format '{{.State.Pid}}' "$2" ;;
    esac
}

# One pass of killing and removing every container of SYSTEM; sets left to
# the containers still there.
remove_pass() { # SYSTEM LOG
    local system=$1 log=$2 ids deadline
    case $system in
    berth)
        ids=$(timeout "$cmd_timeout" "${berth_cli[@]}" tasks ls -q 2>>"$log") || true
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086 # one id per word
            timeout "$parallel_timeout" "${berth_cli[@]}" tasks kill -s KILL $ids >>"$log" 2>&1 || true
            deadline=$((SECONDS + cmd_timeout))
            while [ -n "$(running_ids berth 2>>"$log")" ] && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.05
            done
            # shellcheck disable=SC2086
            timeout "$parallel_timeout" "${berth_cli[@]}" tasks rm $ids >>"$log" 2>&1 || true
        fi
        ids=$(timeout "$cmd_timeout" "${berth_cli[@]}" containers ls -q 2>>"$log") || true
        # shellcheck disable=SC2086
        [ -z "$ids" ] || timeout "$parallel_timeout" "${berth_cli[@]}" containers rm $ids >>"$log" 2>&1 || true
        left=$(timeout "$cmd_timeout" "${berth_cli[@]}" containers ls -q 2>>"$log") || left="(containers ls failed)"
        ;;
    ctr)
        ids=$(timeout "$cmd_timeout" "${ctr_cli[@]}" tasks ls -q 2>>"$log") || true
        # shellcheck disable=SC2086
        [ -z "$ids" ] || timeout "$parallel_timeout" "${ctr_cli[@]}" tasks rm -f $ids >>"$log" 2>&1 || true
        ids=$(timeout "$cmd_timeout" "${ctr_cli[@]}" containers ls -q 2>>"$log") || true
        # shellcheck disable=SC2086
        [ -z "$ids" ] || timeout "$parallel_timeout" "${ctr_cli[@]}" containers rm $ids >>"$log" 2>&1 || true
        left=$(timeout "$cmd_timeout" "${ctr_cli[@]}" containers ls -q 2>>"$log") || left="(containers ls failed)"
        ;;
    docker)
        ids=$(timeout "$cmd_timeout" "${docker_cli[@]}" ps -aq 2>>"$log") || true
        # shellcheck disable=SC2086
        [ -z "$ids" ] || timeout "$parallel_timeout" "${docker_cli[@]}" rm -f $ids >>"$log" 2>&1 || true
        left=$(timeout "$cmd_timeout" "${docker_cli[@]}" ps -aq 2>>"$log") || left="(ps failed)"
        ;;
    esac
}

# Kills and removes every container of SYSTEM; err says what is left.
# After an interrupted start some tasks are still being created when the
# first pass lists them, so it takes up to three passes.
remove_all() { # SYSTEM LOG
    local system=$1 log=$2 pass left
    : >"$log"
    local -n cli=${system}_cli
    # Its daemon never answered: there is nothing to remove through it.
    [ "${#cli[@]}" -gt 0 ] || return 0
    for pass in 1 2 3; do
        [ "$pass" = 1 ] || sleep 1
        remove_pass "$system" "$log"
        [ -n "$left" ] || return 0
    done
    err="containers left after the clean-up: $(echo "$left" | head -n 5 | tr '\n' ' ')(log: $(tail -c 300 "$log" | tr '\n' ' '))"
    return 1
}

# --- state, and its removal at exit -------------------------------------------
daemon_pids=() # started last first
started=()     # systems whose daemons were started
berth_cli=()   # each system's client, once its daemon answers
ctr_cli=()
docker_cli=()
ctr_run_flags=()
bridge_made=
job=           # the background job being waited for
runlock=
workdir=$(mktemp -d /tmp/berth-bench-tasks.XXXXXX)
chmod 755 "$workdir" # container processes must be able to walk to their rootfs
# Runtime state (sockets, bundles, the runtimes' state, FIFOs) goes on the
# tmpfs of /run, where each system keeps it in production (/run/berth,
# /run/containerd, /run/docker); images and snapshots stay on disk.
rundir=$(mktemp -d /run/berth-bench-tasks.XXXXXX)
chmod 755 "$rundir"
image_dir=$workdir/image
runs_tsv=$workdir/runs.tsv         # system round wall_ms client_cpu_ms
memory_tsv=$workdir/memory.tsv     # system process pid rss_kib anon_kib pss_kib threads
parallel_tsv=$workdir/parallel.tsv # system round n wall_ms running cleanup_ms busy_pct
errors=$workdir/errors.tsv         # system test message
problems=$workdir/problems         # things left behind
: >"$runs_tsv"
: >"$memory_tsv"
: >"$parallel_tsv"
: >"$errors"
: >"$problems"

# Kills what is left in the benchmark's cgroups and removes them; a
# container's cgroup that is still there is recorded (the parents are not:
# runc and dockerd leave them by design).
remove_cgroups() {
    local mnt system parent dir pid
    local -A left=() example=()
    for mnt in $(cgroup_mounts); do
        for system in berth ctr docker; do
            parent=$mnt$(cgroup_parent "$system")
            [ -d "$parent" ] || continue
            for dir in $(find "$parent" -mindepth 1 -type d 2>/dev/null | sort -r); do
                left[$system]=$((${left[$system]:-0} + 1))
                example[$system]=${dir#"$mnt"}
                { while read -r pid; do kill -KILL "$pid"; done <"$dir/cgroup.procs"; } 2>/dev/null
                [ -f "$dir/freezer.state" ] && echo THAWED >"$dir/freezer.state" 2>/dev/null
                for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$dir" 2>/dev/null && break; sleep 0.1; done
            done
            rmdir "$parent" 2>/dev/null || echo "could not remove the cgroup $parent" >>"$problems"
        done
        # /berth, if this run made it, and it is empty.
        if [[ " ${berth_cgroup_before[*]} " != *" $mnt "* ]] && [ -d "$mnt/berth" ]; then
            rmdir "$mnt/berth" 2>/dev/null || true
        fi
    done
    for system in "${!left[@]}"; do
        echo "$system: ${left[$system]} cgroup directories left over all hierarchies, e.g. ${example[$system]}" >>"$problems"
    done
}

cleanup() {
    local status=$? child children=() system pid m left
    set +e
    if [ -n "$job" ]; then
        { read -r -a children <"/proc/$job/task/$job/children"; } 2>/dev/null
        for child in "${children[@]}"; do kill -TERM "$child" 2>/dev/null; done
        kill -TERM "$job" 2>/dev/null
        wait "$job"
    fi
    for system in "${started[@]}"; do
        remove_all "$system" "$workdir/exit-remove-$system.log" ||
            echo "$system: at exit: $err" >>"$problems"
    done
    for pid in "${daemon_pids[@]}"; do
        stop_pid "$pid" 15 || echo "daemon $pid did not stop within 15s of SIGTERM; killed" >>"$problems"
    done
    # Shims (whose command lines name their sockets in the temp dir).
    left=$( (pids_mentioning "$workdir"; pids_mentioning "$rundir") | sort -u)
    if [ -n "$left" ]; then
        echo "$(echo "$left" | wc -l) processes left running:$(for pid in $left; do
            printf ' %s(%s)' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)"; done | cut -c1-300)" >>"$problems"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
    fi
    # Container processes, in their cgroups.
    remove_cgroups
    left=$( (mounts_under "$workdir"; mounts_under "$rundir") | sort -u)
    if [ -n "$left" ]; then
        echo "$(echo "$left" | wc -l) mounts left, e.g. $(echo "$left" | head -n 1)" >>"$problems"
        for m in $left; do umount -l "$m"; done
    fi
    if [ -n "$bridge_made" ]; then
        ip link del "$bridge" || echo "could not delete the bridge $bridge" >>"$problems"
    fi
    if [ -s "$problems" ]; then
        sed 's/^/bench: left behind: /' "$problems" >&2
        [ "$status" = 0 ] && status=1
    fi
    if [ -n "$keep_logs" ]; then
        mkdir -p "$keep_logs"
        find "$workdir" -name '*.log' -not -path '*/root/*' -not -path '*/data/*' | while read -r f; do
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

# See bench/pull.sh: every user holds a shared flock on /run; whoever can
# take it exclusively at the end removes /run/docker and /run/containerd if
# they were not there before and are empty.
exec {runlock}</run
flock -s "$runlock"
pre_run_docker=$([ -e /run/docker ] && echo yes || echo no)
pre_run_containerd=$([ -e /run/containerd ] && echo yes || echo no)
berth_cgroup_before=()
for m in $(cgroup_mounts); do
    [ -d "$m/berth" ] && berth_cgroup_before+=("$m")
done

# Records a failure of SYSTEM in TEST and drops the system from what follows.
fail() { # SYSTEM TEST MESSAGE
    printf '%s\t%s\t%s\n' "$1" "$2" "$(echo "$3" | tr '\t\n' '  ')" >>"$errors"
    say "  $1: FAILED ($2): $3"
    mapfile -t live < <(printf '%s\n' "${live[@]}" | grep -vx "$1" || true)
}

# --- the image and the daemons ---------------------------------------------------
say "building the busybox image"
"$repo/bench/make-busybox-image.sh" "$image_dir" >"$workdir/image.log" 2>&1 ||
    die "bench/make-busybox-image.sh failed: $(tail -n 5 "$workdir/image.log")"

live=()
for system in "${systems[@]}"; do
    say "starting $system's daemon(s)"
    started+=("$system")
    live+=("$system")
    if ! start_system "$system" "$workdir/$system"; then
        fail "$system" start "$err"
    fi
done

# Probe: a container of each system must print what it echoes.
variants=()
for system in "${live[@]}"; do
    names=("$system")
    [ "$system" = docker ] && [ "$docker_bridge" = 1 ] && names+=(docker-bridge)
    for name in "${names[@]}"; do
        run_argv "$name" "probe-$name" /bin/echo berth-bench-probe
        if ! run_logged "$workdir/probe-$name.log" "$cmd_timeout" "${argv[@]}"; then
            :
        elif ! grep -qx berth-bench-probe "$workdir/probe-$name.log"; then
            err="it exited 0 but the container did not print berth-bench-probe: $(tail -c 200 "$workdir/probe-$name.log")"
        else
            variants+=("$name")
            continue
        fi
        if [ "$name" = docker-bridge ]; then
            # Only this variant is dropped; docker --network none goes on.
            printf '%s\t%s\t%s\n' "$name" probe "$(echo "$err" | tr '\t\n' '  ')" >>"$errors"
            say "  $name: FAILED (probe): $err"
        else
            fail "$system" probe "$err"
            continue 2
        fi
    done
done

# --- 1. run latency ------------------------------------------------------------
argv_json() { printf '%s\n' "$@" | jq -R . | jq -sc .; }
commands='{}'
for name in "${variants[@]}"; do
    [[ " ${live[*]} " == *" ${name%-bridge} "* ]] || continue
    run_argv "$name" '{id}' /bin/true
    commands=$(jq -c --arg n "$name" --argjson v "$(argv_json "${argv[@]}")" '. + {($n): $v}' <<<"$commands")
done
run_busy=
if [ "$commands" != '{}' ]; then
    run_busy=$(wait_quiet)
    say "run latency: $runs rounds + $warmup warm-up of: $(jq -r 'keys_unsorted | join(" ")' <<<"$commands") (CPU busy before: $run_busy%)"
    python3 "$repo/bench/tasks_timing.py" --commands "$commands" --runs "$runs" --warmup "$warmup" \
        --timeout "$cmd_timeout" --logdir "$workdir" --results "$runs_tsv" --errors "$errors" &
    job=$!
    wait "$job" && status=0 || status=$?
    job=
    if [ "$status" != 0 ]; then
        printf 'tasks_timing.py\truns\texit status %s (its output is above)\n' "$status" >>"$errors"
    fi
    # A failed variant: the system's containers may be left; remove them.
    mapfile -t names < <(cut -f1 "$errors" | sort -u)
    for name in "${names[@]}"; do
        system=${name%-bridge}
        [[ " ${live[*]} " == *" $system "* ]] || continue
        remove_all "$system" "$workdir/remove-after-runs-$system.log" || fail "$system" runs "$err"
    done
fi

# --- 2. shim memory ----------------------------------------------------------------
smaps_kib() { # PID FIELD
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup"
}
shim_memory() { # SYSTEM
    local system=$1 id=mem-$1 pid shim exe want t0 t1 deadline
    detached_argv "$system" "$id" /bin/sleep 100000
    run_logged "$workdir/mem-$system.log" "$cmd_timeout" "${argv[@]}" || return 1
    pid=$(init_pid "$system" "$id")
    [[ "$pid" =~ ^[1-9][0-9]*$ ]] || { err="no pid for container $id: '$pid'"; return 1; }
    shim=$(awk '$1 == "PPid:" { print $2 }' "/proc/$pid/status")
    exe=$(basename "$(readlink "/proc/$shim/exe")")
    case $system in berth) want=berth-shim ;; *) want='containerd-shim-runc-v2' ;; esac
    [ "$exe" = "$want" ] || { err="the parent of container $id's process $pid is $shim ($exe), not $want"; return 1; }
    sleep "$idle_wait"
    deadline=$((SECONDS + 30))
    t0=$(cpu_ticks "$shim")
    while sleep 1; do
        t1=$(cpu_ticks "$shim")
        [ "$t1" = "$t0" ] || [ "$SECONDS" -ge "$deadline" ] && break
        t0=$t1
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$want" "$shim" "$(status_kib "$shim" VmRSS)" \
        "$(status_kib "$shim" RssAnon)" "$(smaps_kib "$shim" Pss)" "$(status_kib "$shim" Threads)" >>"$memory_tsv"
    say "  $system: $want (pid $shim): VmRSS $(status_kib "$shim" VmRSS) KiB, Pss $(smaps_kib "$shim" Pss) KiB"
}
say "shim memory: one detached /bin/sleep container each"
for system in "${live[@]}"; do
    shim_memory "$system" || fail "$system" memory "$err"
    remove_all "$system" "$workdir/remove-mem-$system.log" || fail "$system" memory "$err"
done

# --- 3. PARALLEL containers at once ---------------------------------------------------
# One round of SYSTEM: start PARALLEL detached containers concurrently, count
# the running ones, remove them all.
parallel_once() { # SYSTEM R
    local system=$1 r=$2 ids t0 t1 status running busy c0 c1 want
    ids=$workdir/ids-$system-$r
    for ((i = 1; i <= parallel; i++)); do printf 'p%s-%03d\n' "$r" "$i"; done >"$ids"
    detached_argv "$system" '{}' /bin/sleep 100000
    busy=$(wait_quiet)
    t0=$(now_us)
    timeout "$parallel_timeout" xargs -P "$parallel" -I{} "${argv[@]}" <"$ids" \
        >"$workdir/parallel-$system-$r.log" 2>&1 &
    job=$!
    wait "$job" && status=0 || status=$?
    job=
    t1=$(now_us)
    running=$(running_ids "$system" | grep -cxFf "$ids" || true)
    c0=$(now_us)
    remove_all "$system" "$workdir/remove-parallel-$system-$r.log" || return 1
    c1=$(now_us)
    if [ "$status" != 0 ]; then
        want=$(grep -v '^[0-9a-f]\{64\}$\|^p[0-9]*-[0-9]*$' "$workdir/parallel-$system-$r.log" | sort | uniq -c |
            sort -rn | head -n 3 | tr '\n' ' ')
        err="$([ "$status" = 124 ] && echo "not done within ${parallel_timeout}s" ||
            echo "some clients failed (xargs: $status)"); $running of $parallel were running; they said: $want"
        return 1
    fi
    if [ "$running" != "$parallel" ]; then
        err="every client exited 0, but only $running of $parallel containers were running then"
        return 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$r" "$parallel" "$(((t1 - t0) / 1000))" "$running" \
        "$(((c1 - c0) / 1000))" "$busy" >>"$parallel_tsv"
    say "  round $r $system: $(awk -v us="$((t1 - t0))" 'BEGIN { printf "%.2f", us / 1e6 }') s, $running of $parallel running (CPU busy before: $busy%)"
}
say "$parallel containers at once: $parallel_rounds round(s) of: ${live[*]}"
for ((r = 1; r <= parallel_rounds; r++)); do
    n=${#live[@]}
    [ "$n" -gt 0 ] || break
    shift_by=$(((r - 1) % n))
    order=("${live[@]:shift_by}" "${live[@]:0:shift_by}")
    for system in "${order[@]}"; do
        sync
        parallel_once "$system" "$r" || fail "$system" parallel "round $r: $err"
    done
done

# --- report ------------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
echo
python3 "$repo/bench/tasks_report.py" --runs "$runs_tsv" --memory "$memory_tsv" --parallel "$parallel_tsv" \
    --errors "$errors" --problems "$problems" --rounds "$runs" --warmup "$warmup" --busy-before "$run_busy" \
    --parallel-count "$parallel" --parallel-rounds "$parallel_rounds" --bridge "$(has docker && [ "$docker_bridge" = 1 ] && echo "$bridge")" \
    --out "$out" "${systems[@]}"
echo
echo "results: $out"

failed=$(cut -f1 "$errors" | sed 's/-bridge$//' | sort -u | tr '\n' ' ')
if [ -n "$failed" ]; then
    echo "bench: failed: $failed(figures above are for the others)" >&2
    exit 1
fi
