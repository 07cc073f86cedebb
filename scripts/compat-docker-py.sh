#!/usr/bin/env bash
# docker-py 7.2's own integration suite against berthd and against Debian's
# dockerd 20.10, side by side in one run (`make compat`):
#
#   BERTH_BIN_DIR=target/debug BERTH_VENV=target/venv scripts/compat-docker-py.sh [PYTEST ARGS...]
#
# The suite is docker-py's tests/integration at tag 7.2.0 (docker-py's sdist
# lacks its tests), kept in integration-tests/python/docker-py without the
# swarm, service, secret, config, plugin and node files. Arguments, if any,
# replace `tests/integration` in both pytest runs (e.g. one file, or
# `-k exec tests/integration`).
#
# Everything runs in a network namespace of its own with only loopback up:
# neither daemon nor the suite can reach Docker Hub. The images the suite
# names (alpine:3.10, alpine:latest, busybox:latest, hello-world:latest)
# are all the host's static busybox (bench/make-busybox-image.sh), loaded
# into each daemon before the run. dockerd runs on a containerd of its own,
# with runc, its own data root, exec root and socket, no bridge and no
# iptables. berthd starts its own supervisor on its own data and exec roots.
# Both get the images through the docker CLI (load, then tag); a berthd
# without the images endpoints gets busybox:latest through berth-ctr.
#
# Output: both pass counts, each suite's wall time, and the tests that pass on dockerd but not on
# berthd; the JUnit reports and both pytest logs stay in COMPAT_OUT (default
# target/compat). Daemons, containers, mounts and the temporary tree are
# removed on exit, on failure too.
#
# Environment:
#   BERTH_BIN_DIR  where berthd, berth-supervisord, berth-shim, berth-runtime
#                  and berth-ctr are (default: target/debug)
#   BERTH_VENV     the virtualenv with docker-py and pytest (make deps)
#   COMPAT_OUT     where the reports go (default: target/compat)
#   COMPAT_TIMEOUT seconds one test may take (default: 120)
#   COMPAT_PARALLEL 1: both suites at once (no wall times); default 0: one
#                  after the other, each suite's wall time in the summary
set -euo pipefail

die() { echo "compat-docker-py: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=$(cd "${BERTH_BIN_DIR:-$root/target/debug}" && pwd)
venv=${BERTH_VENV:-$root/target/venv}
out=${COMPAT_OUT:-$root/target/compat}
timeout=${COMPAT_TIMEOUT:-120}
suite=$root/integration-tests/python/docker-py

[ "$(id -u)" -eq 0 ] || die "needs root (it starts daemons)"
[ -x "$venv/bin/python" ] || die "$venv/bin/python not found: run make deps (or set BERTH_VENV)"
venv=$(cd "$venv" && pwd)
for b in berthd berth-supervisord berth-shim berth-runtime berth-ctr; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b not found: cargo build --workspace --bins (or set BERTH_BIN_DIR)"
done
for p in dockerd containerd containerd-shim-runc-v2 runc docker unshare ip flock; do
    command -v "$p" >/dev/null || die "$p not found: run make deps"
done

# A network namespace of our own, loopback only; the daemons, their
# containers and pytest all live in it.
if [ -z "${COMPAT_IN_NETNS:-}" ]; then
    exec unshare --net -- env COMPAT_IN_NETNS=1 BERTH_BIN_DIR="$bin_dir" BERTH_VENV="$venv" \
        COMPAT_OUT="$out" "$0" "$@"
fi
ip link set lo up

mkdir -p "$out"
out=$(cd "$out" && pwd)
# Short: a shim's socket path must fit in 107 bytes.
tmp=$(mktemp -d /tmp/bcXXXXXX)
chmod 755 "$tmp"

# containerd puts shim sockets in /run/containerd/s and dockerd makes
# /run/docker/plugins whatever their flags; like the Rust fixtures, hold
# /run shared while running and remove those if they were not there before,
# are empty, and no one else holds /run.
had_containerd_run=$([ -e /run/containerd ] && echo 1 || echo 0)
had_docker_run=$([ -e /run/docker ] && echo 1 || echo 0)
exec 9</run
flock -s 9

pids=()
suite_pids=()
cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    # pytest runs still going (the script was interrupted).
    for pid in "${suite_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${suite_pids[@]}"; do wait "$pid" 2>/dev/null; done
    if [ -S "$tmp/docker/docker.sock" ]; then
        ids=$(DOCKER_HOST=unix://$tmp/docker/docker.sock docker ps -aq 2>/dev/null)
        [ -z "$ids" ] || DOCKER_HOST=unix://$tmp/docker/docker.sock docker rm -fv $ids >/dev/null 2>&1
    fi
    if [ -S "$tmp/b/r/berth.sock" ]; then
        ids=$(DOCKER_HOST=unix://$tmp/b/r/berth.sock docker ps -aq 2>/dev/null)
        [ -z "$ids" ] || DOCKER_HOST=unix://$tmp/b/r/berth.sock docker rm -f $ids >/dev/null 2>&1
    fi
    # The daemons in reverse order of their start: SIGTERM, then SIGKILL.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # Shims and container processes that outlived their daemons: every
    # process whose command line names the tree.
    for pid in $(grep -l -a -F "$tmp" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
        [ "$pid" = $$ ] || kill -KILL "$pid" 2>/dev/null
    done
    sleep 0.2
    grep -F " $tmp" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    # cgroups of dockerd's containers (cgroup parent below) and berth's.
    for cg in /sys/fs/cgroup/"$(basename "$tmp")" /sys/fs/cgroup/*/"$(basename "$tmp")"; do
        [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "$tmp"
    if flock -xn 9; then
        [ "$had_containerd_run" = 1 ] || { rmdir /run/containerd/s /run/containerd 2>/dev/null; }
        [ "$had_docker_run" = 1 ] || { rmdir /run/docker/plugins /run/docker 2>/dev/null; }
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_socket() { # NAME SOCKET LOG
    for _ in $(seq 300); do
        if [ -S "$2" ] && DOCKER_HOST=unix://$2 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$3" >&2
    die "$1 did not answer within 30 s"
}

echo "compat: building the images from $(command -v busybox || echo /bin/busybox)"
"$root/bench/make-busybox-image.sh" "$tmp/img" >/dev/null
names=(alpine:3.10 alpine:latest busybox:latest hello-world:latest)

# dockerd 20.10 on a containerd of its own.
mkdir -p "$tmp/ctd/root" "$tmp/ctd/state" "$tmp/docker/data" "$tmp/docker/exec" "$tmp/docker/cli"
cat >"$tmp/ctd/config.toml" <<EOF
version = 2
root = "$tmp/ctd/root"
state = "$tmp/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$tmp/ctd/containerd.sock"
[ttrpc]
  address = "$tmp/ctd/containerd.sock.ttrpc"
EOF
containerd --config "$tmp/ctd/config.toml" >"$tmp/containerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -S "$tmp/ctd/containerd.sock" ] && break; sleep 0.1; done
echo "{\"deprecated-key-path\": \"$tmp/docker/key.json\"}" >"$tmp/docker/daemon.json"
dockerd --config-file "$tmp/docker/daemon.json" --data-root "$tmp/docker/data" \
    --exec-root "$tmp/docker/exec" --pidfile "$tmp/docker/docker.pid" \
    --host "unix://$tmp/docker/docker.sock" --containerd "$tmp/ctd/containerd.sock" \
    --cgroup-parent "/$(basename "$tmp")" --exec-opt native.cgroupdriver=cgroupfs \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false --shutdown-timeout=2 >"$tmp/dockerd.log" 2>&1 &
pids+=($!)
wait_socket dockerd "$tmp/docker/docker.sock" "$tmp/dockerd.log"
dk() { DOCKER_HOST=unix://$tmp/docker/docker.sock DOCKER_CONFIG=$tmp/docker/cli docker "$@"; }
dk load --quiet --input "$tmp/img/busybox-docker.tar" >/dev/null
for n in "${names[@]}"; do dk tag busybox:latest "$n"; done

# berthd with the supervisor it starts.
# Short paths: a shim's socket, <exec root>/shims/berth/<64-digit id>/shim.sock,
# must fit in 107 bytes.
mkdir -p "$tmp/b"
"$bin_dir/berthd" --data-root "$tmp/b/data" --exec-root "$tmp/b/r" \
    >"$tmp/berthd.log" 2>&1 &
pids+=($!)
wait_socket berthd "$tmp/b/r/berth.sock" "$tmp/berthd.log"
bk() { DOCKER_HOST=unix://$tmp/b/r/berth.sock DOCKER_CONFIG=$tmp/b docker "$@"; }
if ! bk load --quiet --input "$tmp/img/busybox-docker.tar" >/dev/null 2>"$tmp/load.err"; then
    # A berthd without the images endpoints: straight into its supervisor.
    echo "compat: berthd cannot load images ($(head -c 200 "$tmp/load.err")); importing busybox:latest through berth-ctr" >&2
    "$bin_dir/berth-ctr" --address "$tmp/b/r/supervisor.sock" -n berth \
        images import --name busybox:latest "$tmp/img/busybox-oci.tar" >/dev/null
fi
for n in "${names[@]}"; do
    bk tag busybox:latest "$n" || echo "compat: berthd cannot tag $n: the suite will lack it" >&2
done

# The suite, once per daemon. Swarm-only tests of the network file are left
# out with the swarm files, and the credential-store tests (they need a
# docker-credential-* helper, and the issue leaves them out) with them.
deselect=(
    --ignore=tests/integration/credentials
    --deselect tests/integration/api_network_test.py::TestNetworks::test_create_network_attachable
    --deselect tests/integration/api_network_test.py::TestNetworks::test_create_network_ingress
    --deselect tests/integration/api_network_test.py::TestNetworks::test_create_inspect_network_with_scope
)
run_suite() { # NAME SOCKET [PYTEST ARGS...], in a subshell of its own
    local name=$1 socket=$2
    shift 2
    mkdir -p "$tmp/$name-home"
    # A copy each: some tests write beside themselves (contexts/).
    cp -r "$suite" "$tmp/$name-suite"
    cd "$tmp/$name-suite"
    exec env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH -u DOCKER_CONTEXT \
        DOCKER_HOST="unix://$socket" DOCKER_CONFIG="$tmp/$name-home" HOME="$tmp/$name-home" \
        PYTHONDONTWRITEBYTECODE=1 \
        "$venv/bin/python" -m pytest -p no:cacheprovider -q -rN --timeout="$timeout" \
        --junitxml="$out/$name.xml" "${deselect[@]}" "${@:-tests/integration}" \
        >"$out/$name.log" 2>&1
}
# One after the other, so that each suite's wall time is its daemon's own
# (COMPAT_PARALLEL=1 runs both at once: quicker, and the times are not
# comparable). pytest fails when a test does: only the reports say how it went.
now_ms() { date +%s%3N; }
echo "compat: running docker-py's integration suite against dockerd and berthd (logs in $out)"
if [ "${COMPAT_PARALLEL:-0}" = 1 ]; then
    run_suite dockerd "$tmp/docker/docker.sock" "$@" &
    suite_pids=($!)
    run_suite berthd "$tmp/b/r/berth.sock" "$@" &
    suite_pids+=($!)
    wait "${suite_pids[@]}" || true
    suite_pids=()
    walls=()
else
    walls=()
    for name in dockerd berthd; do
        socket=$tmp/docker/docker.sock
        [ "$name" = berthd ] && socket=$tmp/b/r/berth.sock
        t0=$(now_ms)
        (run_suite "$name" "$socket" "$@") &
        suite_pids=($!)
        wait "${suite_pids[@]}" || true
        suite_pids=()
        walls+=(--wall "$name=$(($(now_ms) - t0))")
    done
fi
cp "$tmp/berthd.log" "$out/berthd-daemon.log"
cp "$tmp/dockerd.log" "$out/dockerd-daemon.log"

"$venv/bin/python" "$root/scripts/compat-report.py" "${walls[@]}" "$out/dockerd.xml" "$out/berthd.xml" \
    | tee "$out/summary.txt"
