#!/bin/sh
# Runs critest's image tests ("[sig-node] Image Manager") against a
# berth-supervisord on temporary paths, offline: the images those tests
# pull are made here with umoci (busybox-static in one layer, the configs
# they check) and pushed to a local docker-registry that hosts.toml files
# name as the mirror of gcr.io, registry.k8s.io and k8s.gcr.io.
#
#   scripts/critest-images.sh [critest args...]
#
# Needs root, docker-registry, umoci, skopeo, busybox-static, and
# target/debug/berth-supervisord (cargo build -p berth-supervisor --bins;
# $BERTH_SUPERVISORD names another).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
tools=$repo/target/tools
mkdir -p "$tools"
[ -x "$tools/critest" ] || { xz -dc "$repo/../shared/tools/critest.xz" >"$tools/critest.tmp" && chmod +x "$tools/critest.tmp" && mv "$tools/critest.tmp" "$tools/critest"; }
tmp=$(mktemp -d /tmp/berth-critest-XXXXXX)
reg_pid='' sup_pid=''
cleanup() {
    # (under set -e a failing last command of an && list would end the
    # trap here and leave the tree: the killed daemon's status is not 0)
    for pid in "$sup_pid" "$reg_pid"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# A registry on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $tmp/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null && break
    sleep 0.1
done

# The images.
layout=$tmp/layout
umoci init --layout "$layout"
umoci new --image "$layout:base"
# (umoci insert of 0.4.7 writes a truncated tar; a tar of our own is whole.)
mkdir -p "$tmp/rootfs/bin"
cp /bin/busybox "$tmp/rootfs/bin/busybox"
tar -C "$tmp/rootfs" --owner=0 --group=0 -cf "$tmp/layer.tar" bin
umoci raw add-layer --image "$layout:base" "$tmp/layer.tar"
config() { tag=$1; shift; umoci config --image "$layout:base" --tag "$tag" "$@"; }
config plain --config.label berth.test=plain
for n in 1 2 3; do config "img$n" --config.label "berth.test=img$n"; done
config uid --config.user 1002
config username --config.user www-data
config uid-group --config.user 1003:1003
config username-group --config.user www-data:www-data
push() {
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$1" "docker://127.0.0.1:$port/$2"
}
cri=k8s-staging-cri-tools
push plain "$cri/test-image-tag:test"
push plain "$cri/test-image-tag:all"
push plain "$cri/test-image-latest:latest"
for n in 1 2 3; do push "img$n" "$cri/test-image-$n:latest"; push plain "$cri/test-image-tags:$n"; done
push uid "$cri/test-image-user-uid:latest"
push username "$cri/test-image-user-username:latest"
push uid-group "$cri/test-image-user-uid-group:latest"
push username-group "$cri/test-image-user-username-group:latest"
push plain pause:3.9

# hosts.toml: the local registry mirrors the public ones.
for host in gcr.io registry.k8s.io k8s.gcr.io docker.io; do
    mkdir -p "$tmp/certs.d/$host"
    # The server too: nothing goes to the real registry, even for the
    # digest-pinned image the mirror lacks.
    printf 'server = "http://127.0.0.1:%s"\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' "$port" "$port" \
        >"$tmp/certs.d/$host/hosts.toml"
done

"${BERTH_SUPERVISORD:-$repo/target/debug/berth-supervisord}" --root "$tmp/root" --state "$tmp/state" \
    --address "$tmp/supervisor.sock" --cri-address "$tmp/cri.sock" \
    --registry-config-dir "$tmp/certs.d" >"$tmp/supervisord.log" 2>&1 &
sup_pid=$!
for _ in $(seq 100); do [ -S "$tmp/cri.sock" ] && break; sleep 0.1; done

cd "$tmp"
"$tools/critest" --runtime-endpoint "unix://$tmp/cri.sock" --image-endpoint "unix://$tmp/cri.sock" \
    --ginkgo.focus 'Image Manager' "$@" || status=$?
echo "--- supervisord log (tail) ---"
tail -n 20 "$tmp/supervisord.log"
exit "${status:-0}"
