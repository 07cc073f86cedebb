#!/usr/bin/env bash
# `make run`: run busybox containers with berth and show their output.
#
# 1. The runtime alone: a bundle from scripts/make-bundle.sh (config.json
#    from `berth-runtime spec`), run with `berth-runtime --root STATE run`.
# 2. The daemons: berth-supervisord on a temporary root, state directory
#    and socket; a busybox image built with bench/make-busybox-image.sh and
#    imported; `berth-ctr run --rm` of it, which goes through a berth-shim
#    and berth-runtime; the supervisor stopped with SIGTERM.
#
# 3. The engine: berthd on its default paths (/var/lib/berth, /run/berth),
#    which starts its own supervisor, unless one already answers on
#    /run/berth/berth.sock; the busybox image loaded with `berth load`;
#    `berth run --rm` of it, then the same with the real docker CLI pointed
#    at berthd (DOCKER_HOST=unix:///run/berth/berth.sock). berthd is left
#    running for the README's tour (its pid in /run/berth/berthd.pid, its
#    log in /run/berth/berthd.log).
#
# Everything steps 1 and 2 make (bundle, state, daemon, image) is removed
# afterwards, also on failure.
#
# Environment: BERTH_RUNTIME, BERTH_SUPERVISORD, BERTH_CTR, BERTHD, BERTH
# (default: the binaries in target/release).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
runtime=${BERTH_RUNTIME:-$repo/target/release/berth-runtime}
supervisord=${BERTH_SUPERVISORD:-$repo/target/release/berth-supervisord}
ctr=${BERTH_CTR:-$repo/target/release/berth-ctr}
berthd=${BERTHD:-$(dirname "$supervisord")/berthd}
berth=${BERTH:-$(dirname "$supervisord")/berth}

die() { echo "run: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (the container gets namespaces, cgroups and mounts)"
for bin in "$runtime" "$supervisord" "$ctr" "$berthd" "$berth"; do
    [ -x "$bin" ] || die "$bin not found (build it with: make build)"
done

work=$(mktemp -d /tmp/berth-run.XXXXXX)
chmod 755 "$work"
# Runtime state on the tmpfs of /run, as /run/berth is.
state=$(mktemp -d /run/berth-run.XXXXXX)
id=demo-$$
daemon=
cleanup() {
    # Only does something when the run was interrupted.
    "$runtime" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
    if [ -n "$daemon" ]; then
        "${ctr_cli[@]}" tasks kill -s KILL --all demo >/dev/null 2>&1 || true
        "${ctr_cli[@]}" tasks rm demo >/dev/null 2>&1 || true
        "${ctr_cli[@]}" containers rm demo >/dev/null 2>&1 || true
        kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    fi
    for d in /sys/fs/cgroup/*/berth/berth-demo; do rmdir "$d" 2>/dev/null || true; done
    rm -rf --one-file-system "$work" "$state"
}
trap cleanup EXIT

echo "== 1. berth-runtime on a bundle" >&2
"$repo/scripts/make-bundle.sh" -r "$runtime" -H berth-demo "$work/bundle" \
    sh -c 'echo hello from a berth container; hostname; id'
echo "+ berth-runtime --root $work/state run --bundle $work/bundle $id" >&2
status=0
"$runtime" --root "$work/state" run --bundle "$work/bundle" "$id" || status=$?
[ "$status" -eq 0 ] || die "berth-runtime run exited with status $status"

echo "== 2. berth-supervisord, berth-shim and berth-runtime from an image" >&2
"$supervisord" --root "$work/root" --state "$state" --address "$state/supervisor.sock" \
    </dev/null >"$work/supervisord.log" 2>&1 &
daemon=$!
ctr_cli=("$ctr" --address "$state/supervisor.sock" --namespace berth-demo)
for _ in $(seq 100); do
    [ -S "$state/supervisor.sock" ] && break
    kill -0 "$daemon" 2>/dev/null || die "berth-supervisord exited: $(tail -n 5 "$work/supervisord.log")"
    sleep 0.05
done
"$repo/bench/make-busybox-image.sh" "$work/image" >/dev/null
echo "+ berth-ctr images import --name berth-demo/busybox:latest busybox-oci.tar" >&2
"${ctr_cli[@]}" images import --name berth-demo/busybox:latest "$work/image/busybox-oci.tar" >/dev/null
echo "+ berth-ctr run --rm --name demo berth-demo/busybox:latest sh -c '...'" >&2
status=0
"${ctr_cli[@]}" run --rm --name demo berth-demo/busybox:latest \
    sh -c 'echo hello from a berth container, through its shim; hostname; id' || status=$?
[ "$status" -eq 0 ] || die "berth-ctr run exited with status $status"
kill -TERM "$daemon"
wait "$daemon" || die "berth-supervisord exited with status $? on SIGTERM"
daemon=

echo "== 3. berthd, the engine, with berth and the docker CLI" >&2
sock=/run/berth/berth.sock
if "$berth" -H "unix://$sock" version >/dev/null 2>&1; then
    echo "+ berthd already answers on $sock" >&2
else
    echo "+ berthd --pidfile /run/berth/berthd.pid &   (log: /run/berth/berthd.log)" >&2
    mkdir -p /run/berth
    # berthd finds berth-supervisord, and it berth-shim and berth-runtime,
    # beside itself.
    setsid "$berthd" --pidfile /run/berth/berthd.pid </dev/null >/run/berth/berthd.log 2>&1 &
    for _ in $(seq 200); do
        "$berth" -H "unix://$sock" version >/dev/null 2>&1 && break
        sleep 0.05
    done
    "$berth" -H "unix://$sock" version >/dev/null 2>&1 ||
        die "berthd did not answer on $sock: $(tail -n 5 /run/berth/berthd.log)"
fi
export BERTH_HOST="unix://$sock"
echo "+ berth load -i busybox-docker.tar" >&2
"$berth" load -i "$work/image/busybox-docker.tar"
echo "+ berth run --rm busybox sh -c '...'" >&2
status=0
"$berth" run --rm busybox sh -c 'echo hello from berth run; hostname; id' || status=$?
[ "$status" -eq 0 ] || die "berth run exited with status $status"
if command -v docker >/dev/null; then
    echo "+ DOCKER_HOST=$BERTH_HOST docker run --rm busybox sh -c '...'" >&2
    status=0
    DOCKER_HOST="$BERTH_HOST" docker run --rm busybox sh -c 'echo hello from docker run, through berthd' ||
        status=$?
    [ "$status" -eq 0 ] || die "docker run exited with status $status"
else
    echo "(no docker CLI on PATH: skipped the docker run)" >&2
fi
echo "berthd keeps running: try 'berth ps -a', 'berth images'; stop it with 'kill \$(cat /run/berth/berthd.pid)'" >&2
