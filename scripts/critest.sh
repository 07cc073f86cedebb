#!/bin/sh
# Runs critest against berth-supervisord's CRI and, side by side, against
# Debian's containerd 1.6 with the same images, CNI config and registry
# mirrors, and prints both pass counts.
#
#   scripts/critest.sh [-b|-c] [critest args...]
#
#   -b: berth only; -c: containerd only. Other arguments go to critest,
#   e.g. --ginkgo.focus 'PodSandbox|Idempotence'.
#
# Everything lives in a temporary tree and a network namespace this script
# makes (the registry, both daemons, their CNI bridge and rules, critest
# itself): nothing touches the host's network, and nothing leaves the
# machine. The images critest pulls are made here (busybox-static with its
# applets as hard links and util-linux's ipcs; an nginx stand-in,
# scripts/critest/nginx.c, with busybox's httpd on port 80; nonewprivs, a
# set-user-ID program printing its effective uid; berth's pause for
# containerd; the Image Manager group's images as
# scripts/critest-images.sh makes them), pushed to a local docker-registry
# that hosts.toml files name as mirror and server of registry.k8s.io,
# k8s.gcr.io, gcr.io and docker.io. containerd gets its own root, state and
# config: the CRI plugin with config_path for those hosts.toml files, the
# same conflist (its own host-local directory) and
# restrict_oom_score_adj = true (this VM lacks CAP_SYS_RESOURCE).
#
# Needs root, docker-registry, umoci, skopeo, busybox-static, util-linux,
# gcc (static glibc), containerd, runc, containernetworking-plugins, and
# the debug build
# (cargo build --workspace --bins; $BERTH_SUPERVISORD names another).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
which=both
case "${1:-}" in
-b) which=berth; shift ;;
-c) which=containerd; shift ;;
esac
tools=$repo/target/tools
mkdir -p "$tools"
for t in critest crictl; do
    [ -x "$tools/$t" ] || { xz -dc "$repo/../shared/tools/$t.xz" >"$tools/$t.tmp" && chmod +x "$tools/$t.tmp" && mv "$tools/$t.tmp" "$tools/$t"; }
done
supervisord=${BERTH_SUPERVISORD:-$repo/target/debug/berth-supervisord}
[ -x "$supervisord" ] || { echo "critest.sh: $supervisord is missing: cargo build --workspace --bins" >&2; exit 1; }
# A short tree: a shim's socket under <state>/shims/k8s.io/<64-digit id>/
# must fit in 107 bytes.
tmp=$(mktemp -d /tmp/bcXXXXXX)
# The root of a pod's user namespace must reach the state directory below
# (the runtime mounts the root filesystem from inside the namespace).
chmod 711 "$tmp"
netns=$tmp/netns
reg_pid='' daemon_pid=''
# (Background processes are started with nsenter itself, not this
# function, so that $! is their pid.)
in_ns() { nsenter --net="$netns" -- "$@"; }
stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=''
    fi
}
# critest's HostIpc tests make 1 MiB shared memory segments on the host
# (`ipcmk -M 1048576`) and leave them: the cleanup removes those that
# were not there before and that nothing has attached.
shm_before=" $(ipcs -m | awk '$1 ~ /^0x/ {print $2}' | tr '\n' ' ') "
cleanup() {
    set +e
    stop_daemon
    ipcs -m | awk '$1 ~ /^0x/ && $5 == 1048576 && $6 == 0 {print $2}' | while read -r id; do
        case "$shm_before" in *" $id "*) ;; *) ipcrm -m "$id" ;; esac
    done
    if [ -n "$reg_pid" ]; then
        kill -9 "$reg_pid" 2>/dev/null
        wait "$reg_pid" 2>/dev/null
    fi
    # Whatever a daemon left mounted in the tree, deepest first.
    awk -v t="$tmp" '$5 ~ "^"t {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    umount -l "$netns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

touch "$netns"
unshare --net="$netns" true
in_ns ip link set lo up

# The registry, inside the namespace.
port=5000
cat >"$tmp/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $tmp/registry}}
http: {addr: 127.0.0.1:$port}
YML
nsenter --net="$netns" -- docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do
    in_ns python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null && break
    sleep 0.1
done

# The images.
layout=$tmp/layout
umoci init --layout "$layout" >/dev/null
umoci new --image "$layout:empty" >/dev/null
add_layer() { # tag dir -> the image "empty" with the dir as one layer, as tag
    tar -C "$2" --owner=0 --group=0 --numeric-owner -cf "$tmp/$1.tar" .
    umoci raw add-layer --image "$layout:empty" --tag "$1" "$tmp/$1.tar"
}
# busybox, applets as hard links as in the real image (MaskedPaths masks
# /bin/ls, which must not mask busybox itself), the accounts critest's
# security tests use.
bb=$tmp/busybox
mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp" "$bb/var/www" "$bb/root"
cp /bin/busybox "$bb/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -f "$bb/bin/busybox" "$bb/bin/$applet"
done
# Debian's busybox has no ipcs (the HostIpc tests run `ipcs -m`):
# util-linux's, with the libraries it loads.
for f in /usr/bin/ipcs $(ldd /usr/bin/ipcs | awk '/\// {print $(NF-1)}'); do
    mkdir -p "$bb$(dirname "$f")"
    cp -L "$f" "$bb$f"
done
chmod 1777 "$bb/tmp"
cat >"$bb/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
EOF
cat >"$bb/etc/group" <<EOF
root:x:0:
www-data:x:33:
nogroup:x:65534:
EOF
# One page for both web servers critest checks (nginx's and httpd's).
echo '<html><body><h1>Welcome to nginx!</h1><p>It works!</p></body></html>' >"$bb/var/www/index.html"
# Debian's busybox-static has no pgrep (critest's execSync timeout test
# runs `pgrep sleep`): a stand-in that lists the pids whose command name
# has the pattern in it.
if [ ! -e "$bb/bin/pgrep" ]; then
    cat >"$bb/bin/pgrep" <<'EOF'
#!/bin/sh
found=1
for d in /proc/[0-9]*; do
    read -r comm <"$d/comm" 2>/dev/null || continue
    case "$comm" in *"$1"*) echo "${d#/proc/}"; found=0 ;; esac
done
exit $found
EOF
    chmod 755 "$bb/bin/pgrep"
fi
add_layer busybox0 "$bb"
umoci config --image "$layout:busybox0" --tag busybox \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
config() { tag=$1; shift; umoci config --image "$layout:busybox" --tag "$tag" "$@"; }
config bb --config.cmd sh
# critest's nginx:1.14-2: the HostPID and ContainerPID tests read
# /var/run/nginx.pid and look for "master process" in its command line;
# scripts/critest/nginx.c writes the one and shows the other, with
# busybox's httpd on 80 as its worker.
web=$tmp/web
mkdir -p "$web/usr/sbin" "$web/var/run"
gcc -static -O2 -o "$web/usr/sbin/nginx" "$repo/scripts/critest/nginx.c"
tar -C "$web" --owner=0 --group=0 --numeric-owner -cf "$tmp/web.tar" .
umoci raw add-layer --image "$layout:busybox" --tag web0 "$tmp/web.tar"
umoci config --image "$layout:web0" --tag web --config.cmd nginx --config.cmd -g --config.cmd 'daemon off;' >/dev/null
# critest's httpd:2.4.39-4 (Multiple Containers): on 80, printing the line
# its log test looks for.
config httpd --config.cmd sh --config.cmd -c --config.cmd 'echo httpd -D FOREGROUND; exec httpd -f -p 80 -h /var/www'
# critest's hostnet-nginx (streaming's host-network port-forward): on 12003.
config hostnet --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 12003 --config.cmd -h --config.cmd /var/www
config plain --config.label berth.test=plain
for n in 1 2 3; do config "img$n" --config.label "berth.test=img$n"; done
config uid --config.user 1002
config username --config.user www-data
config uid-group --config.user 1003:1003
config username-group --config.user www-data:www-data
# critest's nonewprivs:1.3 (Kubernetes' test/images/nonewprivs): a
# set-user-ID root program printing its effective uid, run as user 1000.
nnp=$tmp/nnp
mkdir -p "$nnp/usr/local/bin"
printf '#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf("Effective uid: %%d\\n", geteuid()); return 0; }\n' >"$tmp/nnp.c"
gcc -static -O2 -o "$nnp/usr/local/bin/nnp" "$tmp/nnp.c"
chmod 4755 "$nnp/usr/local/bin/nnp"
tar -C "$nnp" --owner=0 --group=0 --numeric-owner -cf "$tmp/nnp.tar" .
umoci raw add-layer --image "$layout:busybox" --tag nnp0 "$tmp/nnp.tar"
umoci config --image "$layout:nnp0" --tag nonewprivs --config.user 1000 \
    --config.entrypoint /usr/local/bin/nnp --clear=config.cmd >/dev/null
# berth's pause, for containerd's sandbox_image.
pause_bin=$(ls -t "$repo"/target/debug/build/berth-supervisor-*/out/berth-pause 2>/dev/null | head -n1)
[ -n "$pause_bin" ] || { echo "critest.sh: berth-pause not built: cargo build -p berth-supervisor" >&2; exit 1; }
mkdir -p "$tmp/pause/dev" "$tmp/pause/proc" "$tmp/pause/sys" "$tmp/pause/etc"
cp "$pause_bin" "$tmp/pause/pause"
add_layer pauselayer "$tmp/pause"
umoci config --image "$layout:pauselayer" --tag pause --config.entrypoint /pause --config.user 65535:65535 >/dev/null
in_push() { in_ns skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$1" "docker://127.0.0.1:$port/$2"; }
cri=k8s-staging-cri-tools
in_push bb e2e-test-images/busybox:1.29-2
in_push web e2e-test-images/nginx:1.14-2
in_push hostnet "$cri/hostnet-nginx-amd64:latest"
in_push httpd e2e-test-images/httpd:2.4.39-4
in_push pause pause:3.10
in_push pause pause:3.9
in_push plain "$cri/test-image-tag:test"
in_push plain "$cri/test-image-tag:all"
in_push plain "$cri/test-image-latest:latest"
for n in 1 2 3; do in_push "img$n" "$cri/test-image-$n:latest"; in_push plain "$cri/test-image-tags:$n"; done
in_push uid "$cri/test-image-user-uid:latest"
in_push username "$cri/test-image-user-username:latest"
in_push uid-group "$cri/test-image-user-uid-group:latest"
in_push username-group "$cri/test-image-user-username-group:latest"
in_push nonewprivs e2e-test-images/nonewprivs:1.3
in_push bb library/busybox:latest
in_push bb library/busybox:1.28
cat >"$tmp/images.yaml" <<EOF
defaultTestContainerImage: registry.k8s.io/e2e-test-images/busybox:1.29-2
webServerTestImage: registry.k8s.io/e2e-test-images/nginx:1.14-2
EOF

# hosts.toml: the local registry mirrors (and serves) the public ones.
for host in gcr.io registry.k8s.io k8s.gcr.io docker.io; do
    mkdir -p "$tmp/certs.d/$host"
    printf 'server = "http://127.0.0.1:%s"\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' "$port" "$port" \
        >"$tmp/certs.d/$host/hosts.toml"
done

# One conflist per daemon (its own host-local directory).
conflist() { # dir
    mkdir -p "$1/net.d"
    cat >"$1/net.d/10-critest.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "critest", "plugins": [
  {"type": "bridge", "bridge": "cni-critest0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.9.0/24"}]], "dataDir": "$1/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}
]}
EOF
}

wait_socket() { # socket what
    for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.1; done
    echo "critest.sh: $2 did not listen on $1" >&2
    return 1
}

run_critest() { # name socket -> prints the summary, records the counts
    name=$1 sock=$2
    shift 2
    echo "=== critest against $name ==="
    (cd "$tmp" && in_ns "$tools/critest" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
        --test-images-file "$tmp/images.yaml" --ginkgo.no-color "$@") >"$tmp/critest-$name.log" 2>&1 || true
    grep -E '^(\[FAIL\]|  \[FAIL\])' "$tmp/critest-$name.log" | sort -u | sed 's/^/  /' || true
    summary=$(grep -E '^(Ran|SUCCESS|FAIL)|Passed \|' "$tmp/critest-$name.log" | tail -n 3)
    echo "$summary" | sed 's/^/  /'
    counts=$(grep -Eo '[0-9]+ Passed \| [0-9]+ Failed \| [0-9]+ Pending \| [0-9]+ Skipped' "$tmp/critest-$name.log" | tail -n1)
    eval "counts_$name=\"\${counts:-no summary (see the log)}\""
    cp "$tmp/critest-$name.log" "$repo/target/critest-$name.log"
}

counts_berth='not run' counts_containerd='not run'

if [ "$which" != containerd ]; then
    d=$tmp/berth
    mkdir -p "$d"
    conflist "$d"
    # (state right under the tree: /tmp/bcXXXXXX/bs is 16 bytes, the most
    # a 64-digit id leaves room for.)
    nsenter --net="$netns" -- "$supervisord" --root "$d/r" --state "$tmp/bs" --address "$d/sup.sock" --cri-address "$d/cri.sock" \
        --registry-config-dir "$tmp/certs.d" --cni-conf-dir "$d/net.d" --cni-bin-dir /usr/lib/cni \
        >"$d/daemon.log" 2>&1 &
    daemon_pid=$!
    wait_socket "$d/cri.sock" berth-supervisord
    run_critest berth "$d/cri.sock" "$@"
    "$tools/crictl" --runtime-endpoint "unix://$d/cri.sock" rmp -a -f >/dev/null 2>&1 || true
    stop_daemon
    cp "$d/daemon.log" "$repo/target/critest-berth-daemon.log"
fi

if [ "$which" != berth ]; then
    d=$tmp/ctd
    mkdir -p "$d"
    conflist "$d"
    cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = "$d/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$tmp/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
EOF
    nsenter --net="$netns" -- containerd --config "$d/config.toml" >"$d/daemon.log" 2>&1 &
    daemon_pid=$!
    wait_socket "$d/containerd.sock" containerd
    run_critest containerd "$d/containerd.sock" "$@"
    "$tools/crictl" --runtime-endpoint "unix://$d/containerd.sock" rmp -a -f >/dev/null 2>&1 || true
    stop_daemon
    # containerd's shims outlive it: stop those of this tree.
    for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $d/containerd.sock" || true); do kill -9 "$p" 2>/dev/null || true; done
    cp "$d/daemon.log" "$repo/target/critest-containerd-daemon.log"
fi

echo "=== side by side ==="
printf '  %-12s %s\n' berth "$counts_berth" containerd "$counts_containerd"
echo "  (logs: target/critest-{berth,containerd}.log and -daemon.log)"
