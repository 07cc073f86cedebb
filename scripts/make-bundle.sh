#!/usr/bin/env bash
# Build a minimal OCI bundle around Debian's static busybox.
#
#   scripts/make-bundle.sh [-r RUNTIME] [-H HOSTNAME] DIR [ARG...]
#
# DIR/rootfs gets /bin/busybox (from busybox-static), a symlink per applet and a
# minimal /etc/passwd and /etc/group. DIR/config.json comes from `RUNTIME spec`
# (default: target/release/berth-runtime; `-r runc` works as well), edited with
# jq: process.terminal false, process.args ARG... (default: sh), hostname
# HOSTNAME (default: berth-demo). DIR must be missing or empty.
set -euo pipefail

usage() {
    sed -n '4,10s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

repo=$(cd "$(dirname "$0")/.." && pwd)
runtime=${BERTH_RUNTIME:-$repo/target/release/berth-runtime}
hostname=berth-demo
busybox=${BUSYBOX:-/bin/busybox}

while getopts 'r:H:h' opt; do
    case $opt in
        r) runtime=$OPTARG ;;
        H) hostname=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
dir=$1
shift
[ $# -ge 1 ] || set -- sh

die() { echo "make-bundle: $*" >&2; exit 1; }

command -v jq >/dev/null || die "jq not found (run: make deps)"
[ -x "$busybox" ] || die "$busybox not found (run: make deps, it installs busybox-static)"
# The rootfs has no libc, so busybox must be the static build.
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install busybox-static or set BUSYBOX"
fi
spec_cmd=$(command -v "$runtime" || true)
[ -n "$spec_cmd" ] || die "runtime $runtime not found (build it with: make build, or pass -r runc)"

if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    die "$dir exists and is not empty"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rootfs=$dir/rootfs

mkdir -p "$rootfs"/{bin,dev,etc,proc,sys,tmp,root}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    # The list names busybox itself; linking it would replace the binary.
    [ "$applet" = busybox ] && continue
    ln -s busybox "$rootfs/bin/$applet"
done
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

# `spec` writes config.json into the current directory (runc contract).
(cd "$dir" && "$spec_cmd" spec) || die "$runtime spec failed"
[ -s "$dir/config.json" ] || die "$runtime spec wrote no config.json"

# Each argument is encoded on its own: jq would take "-c" after --args as its
# own option, and drops "--".
args_json=$(for arg in "$@"; do printf '%s' "$arg" | jq -Rs .; done | jq -sc .)
jq --arg hostname "$hostname" --argjson args "$args_json" '
      .process.terminal = false
    | .process.args = $args
    | .hostname = $hostname
    | .root.path = "rootfs"
    ' < "$dir/config.json" > "$dir/config.json.new"
mv "$dir/config.json.new" "$dir/config.json"
