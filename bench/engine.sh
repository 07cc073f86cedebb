#!/usr/bin/env bash
# Engine benchmark: berthd (with the berth-supervisord it starts) against
# Debian's dockerd 20.10 (on a containerd of its own, runc), both driven by
# the real docker CLI, side by side in one run, as ratios.
#
# Four figures, on a busybox image (bench/make-busybox-image.sh) loaded into
# each daemon as busybox:latest:
#
# 1. Run latency: the wall time of
#      berthd        docker run --rm --network none --name ID busybox /bin/true
#                    (the real docker CLI, DOCKER, against berthd's socket)
#      dockerd       the same command against dockerd's socket
#      berth         berth run --rm --network none --name ID busybox /bin/true
#                    against berthd (BERTH_HOST); measured only when `berth run --help`
#                    exits 0 (until the berth CLI is written it is skipped,
#                    and the report says so)
#    median of ENGINE_RUNS interleaved rounds (order rotating) after
#    ENGINE_WARMUP warm-up rounds, timed by bench/tasks_timing.py
#    (posix_spawn + wait4: the client's own start-up is in the figure).
#    A probe run of each first must print what the container echoes.
#    Target: berthd <= 0.1 x dockerd.
# 2. PARALLEL containers at once: the wall time of PARALLEL
#      docker run -d --network none --name ID busybox /bin/sleep 600
#    started concurrently (`xargs -P PARALLEL`, one client each) until every
#    client has exited; then `docker ps` must list them all running. The
#    clean-up (docker rm -f of them all) is outside the figure; its time is
#    printed beside. Median of PARALLEL_ROUNDS rounds, daemons interleaved.
#    Target: berthd <= 0.2 x dockerd.
# 3. Idle memory: VmRSS and Pss (/proc/PID/smaps_rollup) of berthd and of
#    dockerd, read after the image is loaded and before any container ran,
#    IDLE_WAIT seconds after start-up and then once their CPU time stays put
#    for a second; berthd's supervisor (berth-supervisord) and dockerd's
#    containerd are counted apart and printed beside. Read again after the
#    other figures (printed, not a target).
#    Target: berthd <= 0.15 x dockerd (VmRSS).
# 4. Where the time of one run goes: berthd is restarted with --debug (its
#    supervisor, the shims and their runtime calls then log each step with
#    its duration), one `docker run --rm --network none` is made as warm-up
#    and one measured; bench/engine_phases.py reads the daemons' logs and
#    prints a timeline of that run and the time spent in each layer: the
#    CLI, the engine, the supervisor, the shim, the runtime, the container
#    itself. This run is separate from the timed ones (debug logging costs).
#
# Each daemon runs on a root, state and socket in temp dirs (never
# /var/lib/{berth,docker,containerd}, /run/{berth,docker,containerd} or the
# system's sockets). dockerd gets a private bridge made by make_bridge
# (bench/lib.sh), never --bridge=none, with iptables, IP forwarding and
# masquerading off; its containers' cgroups are under /berth-bench-PID-docker.
# berthd's containers' cgroups are /berth/berth/ID (berthd's default); only
# those of this run's containers are touched at exit.
#
# At exit, also on failure or interruption, every container is removed, the
# daemons are stopped, and anything left (processes, cgroups, mounts) is
# killed, removed and reported.
#
# Environment:
#   SYSTEMS          daemons to measure (default: "berthd dockerd")
#   ENGINE_RUNS      measured rounds of the run latency (default 20)
#   ENGINE_WARMUP    its warm-up rounds, not counted (default 2)
#   PARALLEL         containers started at once (default 100)
#   PARALLEL_ROUNDS  rounds of it (default 3)
#   PHASES           1: the per-phase run (figure 4); 0: not (default 1)
#   BRIDGE           dockerd's private bridge (default: berthbench1)
#   BERTHD           berthd (default: target/release/berthd; berth-supervisord,
#                    berth-shim and berth-runtime are found beside it, or
#                    set BERTH_SUPERVISORD)
#   BERTH            the berth CLI (default: beside berthd)
#   BERTH_SUPERVISORD, BERTH_CTR
#                    (default: beside berthd)
#   DOCKER           the docker CLI (default: /usr/local/bin/docker, else PATH)
#   DOCKERD, CONTAINERD, CTR
#                    the other programs (default: from PATH)
#   IDLE_WAIT        seconds to let a daemon settle before reading its memory
#                    (default 3; then until its CPU time stops moving)
#   START_TIMEOUT    seconds a daemon may take to answer (default 30)
#   CMD_TIMEOUT      seconds one client command may take (default 60)
#   PARALLEL_TIMEOUT seconds the PARALLEL starts, or their clean-up, may take
#                    (default 300)
#   BENCH_OUT        JSON results (default: target/bench/engine.json)
#   KEEP_LOGS        a directory to copy the daemons' and clients' logs into
#
# Exits 0 when every daemon was measured, met targets or not (a missed one is
# printed as MISSED); 1 when something failed (the others are still measured
# and reported) or something was left behind. Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
berthd=${BERTHD:-$repo/target/release/berthd}
bindir=$(dirname "$berthd")
berth=${BERTH:-$bindir/berth}
berth_supervisord=${BERTH_SUPERVISORD:-$bindir/berth-supervisord}
berth_ctr=${BERTH_CTR:-$bindir/berth-ctr}
docker=${DOCKER:-$([ -x /usr/local/bin/docker ] && echo /usr/local/bin/docker || command -v docker || echo docker)}
dockerd=${DOCKERD:-$(command -v dockerd || echo dockerd)}
containerd=${CONTAINERD:-$(command -v containerd || echo containerd)}
ctr=${CTR:-$(command -v ctr || echo ctr)}
systems=${SYSTEMS:-berthd dockerd}
runs=${ENGINE_RUNS:-20}
warmup=${ENGINE_WARMUP:-2}
parallel=${PARALLEL:-100}
parallel_rounds=${PARALLEL_ROUNDS:-3}
phases=${PHASES:-1}
bridge=${BRIDGE:-berthbench1}
idle_wait=${IDLE_WAIT:-3}
start_timeout=${START_TIMEOUT:-30}
cmd_timeout=${CMD_TIMEOUT:-60}
parallel_timeout=${PARALLEL_TIMEOUT:-300}
out=${BENCH_OUT:-$repo/target/bench/engine.json}
keep_logs=${KEEP_LOGS:-}
ns=berth-bench-$$
image=busybox:latest
# 198.18.0.0/15 is reserved for benchmarks; tasks.sh uses 198.18.0.1/24.
bridge_addr=198.18.1.1/24

[ "$(id -u)" -eq 0 ] || die "needs root (daemons that mount overlayfs and make cgroups)"
for v in ENGINE_RUNS:"$runs" PARALLEL:"$parallel" PARALLEL_ROUNDS:"$parallel_rounds"; do
    [[ "${v#*:}" =~ ^[1-9][0-9]*$ ]] || die "${v%%:*} must be a positive integer, not '${v#*:}'"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "ENGINE_WARMUP must be a non-negative integer, not '$warmup'"
[[ "$phases" =~ ^[01]$ ]] || die "PHASES must be 0 or 1, not '$phases'"
read -r -a systems <<<"$systems"
[ "${#systems[@]}" -gt 0 ] || die "SYSTEMS is empty"
for s in "${systems[@]}"; do
    case $s in berthd | dockerd) ;; *) die "unknown system '$s' in SYSTEMS (berthd, dockerd)" ;; esac
done
has() { [[ " ${systems[*]} " == *" $1 "* ]]; }
for tool in python3 jq findmnt flock xargs timeout umoci skopeo; do need "$tool"; done
need "$docker"
if has dockerd; then need "$dockerd"; need "$containerd"; need "$ctr"; need ip; fi
if has berthd; then
    for bin in "$berthd" "$berth_supervisord" "$berth_ctr"; do
        [ -x "$bin" ] || die "$bin not found or not executable (make build)"
    done
fi

# The clients read these; the benchmark's own sockets are given explicitly.
unset CONTAINERD_ADDRESS CONTAINERD_NAMESPACE CONTAINERD_SNAPSHOTTER
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY BERTH_HOST BERTH_ADDRESS BERTH_NAMESPACE

# --- helpers -------------------------------------------------------------------

# cpu_ticks, now_us, run_logged and cgroup_mounts are in bench/lib.sh.

# The CPUs' busy share over half a second, in percent (as in tasks.sh).
cpu_busy_pct() {
    local a b total=0 idle i
    read -r -a a </proc/stat
    sleep 0.5
    read -r -a b </proc/stat
    for ((i = 1; i <= 8; i++)); do total=$((total + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $((total > 0 ? (total - idle) * 100 / total : 0))
}

# Waits (at most 20 s) until the CPUs are mostly idle; prints the last share.
wait_quiet() {
    local busy deadline=$((SECONDS + 20))
    while busy=$(cpu_busy_pct) && [ "$busy" -ge 10 ] && [ "$SECONDS" -lt "$deadline" ]; do :; done
    echo "$busy"
}

smaps_kib() { # PID FIELD
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup"
}

# --- the daemons -----------------------------------------------------------------

# berthd on DIR (data root) and $rundir/b (exec root: short, since a shim's
# socket path, which holds a 64-digit id, must fit in 107 bytes), with
# --bridge none: its runs here use --network none, and it runs in the host's
# network namespace, where it must not make a bridge or rules (networking is
# measured by bench/network.sh, each daemon in a namespace of its own). Sets
# berthd_pid and the clients. Extra arguments go to berthd (--debug).
start_berthd() { # DIR [ARGS...]
    local dir=$1
    shift
    mkdir -p "$dir/cli"
    "$berthd" --data-root "$dir/data" --exec-root "$rundir/b" --host "unix://$dir/berthd.sock" \
        --pidfile "$dir/berthd.pid" --supervisor-binary "$berth_supervisord" --bridge none "$@" \
        </dev/null >>"$dir/berthd.log" 2>&1 &
    berthd_pid=$!
    daemon_pids=("$berthd_pid" "${daemon_pids[@]}")
    berthd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/berthd.sock")
    wait_ready berthd "$berthd_pid" "$dir/berthd.log" "${berthd_cli[@]}" version --format '{{.Server.Version}}'
}

# The berth-supervisord berthd started (its child).
supervisor_pid() {
    local pid
    for pid in $(cat "/proc/$berthd_pid/task/"*/children 2>/dev/null); do
        [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = berth-supervisord ] && echo "$pid" && return
    done
}

# Starts SYSTEM in DIR and loads the image; sets the system's docker client.
start_system() { # SYSTEM DIR
    local dir=$2
    mkdir -p "$dir"
    case $1 in
    berthd)
        start_berthd "$dir" || return 1
        # berthd keeps its images in its supervisor's namespace "berth".
        run_logged "$dir/import.log" "$cmd_timeout" "$berth_ctr" --address "$rundir/b/supervisor.sock" \
            --namespace berth images import --name "$image" "$image_dir/busybox-oci.tar" || return 1
        ;;
    dockerd)
        mkdir -p "$dir/containerd" "$dir/data" "$rundir/docker/exec" "$dir/cli"
        start_containerd "$dir/containerd" "$dir/containerd/containerd.sock" \
            "$rundir/docker/containerd-state" || return 1
        containerd_pid=$started_pid
        make_bridge "$bridge" "$bridge_addr" || return 1
        # Our own config file, so /etc/docker/daemon.json is not read; it moves
        # the libtrust key dockerd 20.10 would write to /etc/docker/key.json.
        jq -n --arg key "$dir/key.json" '{"deprecated-key-path": $key}' >"$dir/daemon.json"
        "$dockerd" --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$rundir/docker/exec" \
            --pidfile "$dir/docker.pid" --host "unix://$dir/docker.sock" \
            --containerd "$dir/containerd/containerd.sock" --storage-driver overlay2 \
            --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$ns-docker" \
            --bridge="$bridge" --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
            --userland-proxy=false --shutdown-timeout=2 \
            </dev/null >"$dir/dockerd.log" 2>&1 &
        dockerd_pid=$!
        daemon_pids=("$dockerd_pid" "${daemon_pids[@]}")
        dockerd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/docker.sock")
        wait_ready dockerd "$dockerd_pid" "$dir/dockerd.log" \
            "${dockerd_cli[@]}" version --format '{{.Server.Version}}' || return 1
        run_logged "$dir/load.log" "$cmd_timeout" "${dockerd_cli[@]}" load -i "$image_dir/busybox-docker.tar" ||
            return 1
        ;;
    esac
}

# The argv of a one-shot run of ARGS in container ID, --rm, attached.
run_argv() { # NAME ID ARGS...
    local name=$1 id=$2
    shift 2
    case $name in
    berthd) argv=("${berthd_cli[@]}" run --rm --network none --name "$id" "$image" "$@") ;;
    dockerd) argv=("${dockerd_cli[@]}" run --rm --network none --name "$id" "$image" "$@") ;;
    berth) argv=(env BERTH_HOST="unix://$workdir/berthd/berthd.sock" "$berth" run --rm --network none --name "$id" "$image" "$@") ;;
    esac
}

# Kills and removes every container of SYSTEM (up to three passes: after an
# interrupted start some are still being created when the first lists them).
remove_all() { # SYSTEM LOG
    local system=$1 log=$2 pass ids left
    local -n cli=${system}_cli
    : >"$log"
    [ "${#cli[@]}" -gt 0 ] || return 0
    for pass in 1 2 3; do
        [ "$pass" = 1 ] || sleep 1
        ids=$(timeout "$cmd_timeout" "${cli[@]}" ps -aq 2>>"$log") || true
        # shellcheck disable=SC2086 # one id per word
        [ -z "$ids" ] || timeout "$parallel_timeout" "${cli[@]}" rm -f $ids >>"$log" 2>&1 || true
        left=$(timeout "$cmd_timeout" "${cli[@]}" ps -aq 2>>"$log") || left="(docker ps failed)"
        [ -n "$left" ] || return 0
    done
    err="containers left after the clean-up: $(echo "$left" | head -n 5 | tr '\n' ' ')(log: $(tail -c 300 "$log" | tr '\n' ' '))"
    return 1
}

# --- state, and its removal at exit -----------------------------------------------
daemon_pids=() # started last first
started=()     # systems whose daemons were started
berthd_cli=()
dockerd_cli=()
berthd_pid=
dockerd_pid=
containerd_pid=
bridge_made=
job=
runlock=
workdir=$(mktemp -d /tmp/berth-bench-engine.XXXXXX)
chmod 755 "$workdir" # container processes must be able to walk to their rootfs
# Runtime state (sockets, shims, the runtimes' state) on the tmpfs of /run, as
# each daemon keeps it in production; a short name (see start_berthd).
rundir=$(mktemp -d /run/bbe.XXXXXX)
chmod 755 "$rundir"
image_dir=$workdir/image
runs_tsv=$workdir/runs.tsv         # name round wall_ms client_cpu_ms
memory_tsv=$workdir/memory.tsv     # when system process pid rss_kib pss_kib
parallel_tsv=$workdir/parallel.tsv # system round n wall_ms running cleanup_ms busy_pct
phases_json=$workdir/phases.json   # bench/engine_phases.py's output
errors=$workdir/errors.tsv         # name test message
problems=$workdir/problems         # things left behind
berth_note=                        # why the berth CLI was not measured
: >"$runs_tsv"
: >"$memory_tsv"
: >"$parallel_tsv"
: >"$errors"
: >"$problems"
cgroups_before=() # hierarchies where /berth/berth existed before
for m in $(cgroup_mounts); do
    [ -d "$m/berth/berth" ] && cgroups_before+=("$m")
done

# The ids of berthd's containers that have (or had) a shim in this run.
berthd_task_ids() { ls "$rundir/b/shims/berth" 2>/dev/null || true; }

# Kills what is left in this run's cgroups and removes them; a container's
# cgroup still there is recorded (dockerd's parent is not: it leaves it).
remove_cgroups() { # BERTHD_IDS...
    local mnt dir pid id n=0 example=
    local -a dirs
    for mnt in $(cgroup_mounts); do
        dirs=()
        for id in "$@"; do [ -d "$mnt/berth/berth/$id" ] && dirs+=("$mnt/berth/berth/$id"); done
        [ -d "$mnt/$ns-docker" ] && mapfile -t -O "${#dirs[@]}" dirs < <(find "$mnt/$ns-docker" -mindepth 1 -type d | sort -r)
        for dir in "${dirs[@]}"; do
            n=$((n + 1))
            example=${dir#"$mnt"}
            { while read -r pid; do kill -KILL "$pid"; done <"$dir/cgroup.procs"; } 2>/dev/null
            [ -f "$dir/freezer.state" ] && echo THAWED >"$dir/freezer.state" 2>/dev/null
            for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$dir" 2>/dev/null && break; sleep 0.1; done
        done
        [ -d "$mnt/$ns-docker" ] && { rmdir "$mnt/$ns-docker" 2>/dev/null || echo "could not remove the cgroup /$ns-docker" >>"$problems"; }
        # /berth/berth and /berth, if this run made them and they are empty.
        if [[ " ${cgroups_before[*]} " != *" $mnt "* ]]; then
            rmdir "$mnt/berth/berth" 2>/dev/null && rmdir "$mnt/berth" 2>/dev/null
        fi
    done
    [ "$n" = 0 ] || echo "$n container cgroup directories left over all hierarchies, e.g. $example" >>"$problems"
}

cleanup() {
    local status=$? child children=() system pid m left ids
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
    mapfile -t ids < <(berthd_task_ids)
    for pid in "${daemon_pids[@]}"; do
        stop_pid "$pid" 15 || echo "daemon $pid did not stop within 15s of SIGTERM; killed" >>"$problems"
    done
    # Shims and a supervisor left by a berthd that was killed (their command
    # lines name the temp dirs).
    left=$( (pids_mentioning "$workdir"; pids_mentioning "$rundir") | sort -u)
    if [ -n "$left" ]; then
        echo "$(echo "$left" | wc -l) processes left running:$(for pid in $left; do
            printf ' %s(%s)' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)"; done | cut -c1-300)" >>"$problems"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
    fi
    remove_cgroups "${ids[@]}"
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

# See bench/pull.sh: every user holds a shared flock on /run; whoever can take
# it exclusively at the end removes /run/docker and /run/containerd if they
# were not there before and are empty.
exec {runlock}</run
flock -s "$runlock"
pre_run_docker=$([ -e /run/docker ] && echo yes || echo no)
pre_run_containerd=$([ -e /run/containerd ] && echo yes || echo no)

# Records a failure of NAME in TEST and drops it from what follows.
fail() { # NAME TEST MESSAGE
    printf '%s\t%s\t%s\n' "$1" "$2" "$(echo "$3" | tr '\t\n' '  ')" >>"$errors"
    say "  $1: FAILED ($2): $3"
    mapfile -t live < <(printf '%s\n' "${live[@]}" | grep -vx "$1" || true)
}

# --- the image and the daemons ------------------------------------------------------
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

# --- 3. idle memory (first: before any container ran) ----------------------------------
# Lets the given processes settle (IDLE_WAIT seconds, then until their CPU
# time stays put for a second, at most 30 s more).
settle() { # PID...
    local t0 t1 deadline=$((SECONDS + 30))
    sleep "$idle_wait"
    t0=$(cpu_ticks "$@")
    while sleep 1; do
        t1=$(cpu_ticks "$@")
        [ "$t1" = "$t0" ] || [ "$SECONDS" -ge "$deadline" ] && break
        t0=$t1
    done
}
record_memory() { # WHEN
    local when=$1 system entry pid pids=() entries=()
    for system in "${live[@]}"; do
        case $system in
        berthd) entries+=("berthd=berthd=$berthd_pid" "berthd=berth-supervisord=$(supervisor_pid)") ;;
        dockerd) entries+=("dockerd=dockerd=$dockerd_pid" "dockerd=containerd=$containerd_pid") ;;
        esac
    done
    for entry in "${entries[@]}"; do pids+=("${entry##*=}"); done
    [ "${#entries[@]}" -gt 0 ] || return 0
    settle "${pids[@]}"
    for entry in "${entries[@]}"; do
        system=${entry%%=*}
        pid=${entry##*=}
        entry=${entry#*=}
        if [[ ! "$pid" =~ ^[0-9]+$ ]] || [ ! -r "/proc/$pid/smaps_rollup" ]; then
            fail "$system" memory "${entry%=*} (pid '$pid') not found"
            continue
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$when" "$system" "${entry%=*}" "$pid" \
            "$(status_kib "$pid" VmRSS)" "$(smaps_kib "$pid" Pss)" >>"$memory_tsv"
        say "  $when: ${entry%=*} (pid $pid): VmRSS $(status_kib "$pid" VmRSS) KiB, Pss $(smaps_kib "$pid" Pss) KiB"
    done
}
say "idle memory, image loaded, no container yet"
record_memory idle

# --- probes ---------------------------------------------------------------------
variants=()
names=("${live[@]}")
if [[ " ${live[*]} " == *" berthd "* ]]; then
    if [ ! -x "$berth" ]; then
        berth_note="not measured: $berth not found"
    elif ! timeout "$cmd_timeout" "$berth" run --help >"$workdir/berth-help.log" 2>&1; then
        berth_note="not measured: \`berth run --help\` fails ($(head -c 120 "$workdir/berth-help.log" | tr '\n' ' ' | sed 's/ *$//'))"
    else
        names+=(berth)
    fi
    [ -z "$berth_note" ] || say "  berth CLI $berth_note"
fi
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
    if [ "$name" = berth ]; then
        printf '%s\t%s\t%s\n' berth probe "$(echo "$err" | tr '\t\n' '  ')" >>"$errors"
        say "  berth: FAILED (probe): $err"
    else
        fail "$name" probe "$err"
    fi
done

# --- 1. run latency -----------------------------------------------------------
argv_json() { printf '%s\n' "$@" | jq -R . | jq -sc .; }
commands='{}'
for name in "${variants[@]}"; do
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
    [ "$status" = 0 ] ||
        printf 'tasks_timing.py\truns\texit status %s (its output is above)\n' "$status" >>"$errors"
    # A failed command may leave containers: remove them.
    for system in "${live[@]}"; do
        if cut -f1 "$errors" | grep -qx "$system\|berth"; then
            remove_all "$system" "$workdir/remove-after-runs-$system.log" || fail "$system" runs "$err"
        fi
    done
fi

# --- 2. PARALLEL containers at once ------------------------------------------------
parallel_once() { # SYSTEM R
    local system=$1 r=$2 ids t0 t1 status running busy c0 c1 said
    local -n cli=${system}_cli
    ids=$workdir/ids-$system-$r
    for ((i = 1; i <= parallel; i++)); do printf 'p%s-%03d\n' "$r" "$i"; done >"$ids"
    busy=$(wait_quiet)
    t0=$(now_us)
    timeout "$parallel_timeout" xargs -P "$parallel" -I{} "${cli[@]}" run -d --network none --name {} \
        "$image" /bin/sleep 600 <"$ids" >"$workdir/parallel-$system-$r.log" 2>&1 &
    job=$!
    wait "$job" && status=0 || status=$?
    job=
    t1=$(now_us)
    running=$(timeout "$cmd_timeout" "${cli[@]}" ps --format '{{.Names}}' | grep -cxFf "$ids" || true)
    c0=$(now_us)
    remove_all "$system" "$workdir/remove-parallel-$system-$r.log" || return 1
    c1=$(now_us)
    if [ "$status" != 0 ]; then
        said=$(grep -v '^[0-9a-f]\{64\}$' "$workdir/parallel-$system-$r.log" | sort | uniq -c | sort -rn |
            head -n 3 | tr '\n' ' ')
        err="$([ "$status" = 124 ] && echo "not done within ${parallel_timeout}s" ||
            echo "some clients failed (xargs: $status)"); $running of $parallel were running; they said: $said"
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

say "idle memory again, after the runs"
record_memory after

# --- 4. where the time of one run goes --------------------------------------------
phases_once() {
    local dir=$workdir/berthd mark t0 t1 i
    say "per-phase timing: berthd restarted with --debug, one run as warm-up, one measured"
    stop_pid "$berthd_pid" 15 || { err="berthd did not stop within 15s of SIGTERM"; return 1; }
    mapfile -t daemon_pids < <(printf '%s\n' "${daemon_pids[@]}" | grep -vx "$berthd_pid")
    mark=$(wc -l <"$dir/berthd.log")
    start_berthd "$dir" --debug || return 1
    run_argv berthd phase-warmup /bin/true
    run_logged "$workdir/phase-warmup.log" "$cmd_timeout" "${argv[@]}" || return 1
    # Let the warm-up's clean-up finish, so its lines do not mix with the run's.
    sleep 1
    run_argv berthd phase-run /bin/true
    t0=$(now_us)
    run_logged "$workdir/phase-run.log" "$cmd_timeout" "${argv[@]}" || return 1
    t1=$(now_us)
    # The daemons finish the run's clean-up (--rm) around the CLI's exit:
    # wait until the container is gone, and a little more for the last lines.
    for ((i = 0; i < 100; i++)); do
        [ -z "$("${berthd_cli[@]}" ps -aq --filter name=phase-run 2>/dev/null)" ] && break
        sleep 0.05
    done
    sleep 0.5
    tail -n "+$((mark + 1))" "$dir/berthd.log" >"$workdir/phase-daemons.log"
    python3 "$repo/bench/engine_phases.py" --log "$workdir/phase-daemons.log" --cli-start-us "$t0" \
        --cli-end-us "$t1" --container phase-run --out "$phases_json" >"$workdir/phases.txt" 2>&1 ||
        { err="bench/engine_phases.py: $(tail -c 300 "$workdir/phases.txt" | tr '\n' ' ')"; return 1; }
}
if [ "$phases" = 1 ] && [[ " ${live[*]} " == *" berthd "* ]]; then
    phases_once || fail berthd phases "$err"
fi

# --- report ------------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
echo
python3 "$repo/bench/engine_report.py" --runs "$runs_tsv" --memory "$memory_tsv" --parallel "$parallel_tsv" \
    --phases "$phases_json" --errors "$errors" --problems "$problems" --rounds "$runs" --warmup "$warmup" \
    --busy-before "$run_busy" --parallel-count "$parallel" --parallel-rounds "$parallel_rounds" \
    --berth-note "$berth_note" --out "$out" "${systems[@]}"
echo
echo "results: $out"

failed=$(cut -f1 "$errors" | sort -u | tr '\n' ' ')
if [ -n "$failed" ]; then
    echo "bench: failed: $failed(figures above are for the others)" >&2
    exit 1
fi
