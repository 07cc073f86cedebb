#!/usr/bin/env bash
# Builds the image of the task benchmark (bench/tasks.sh): a one-layer image
# of Debian's static busybox, as two tarballs in DIR:
#
#   bench/make-busybox-image.sh DIR
#
#   DIR/busybox-oci.tar     an OCI image layout, tag `latest` (for
#                           `berth-ctr images import` and
#                           `ctr images import --base-name NAME`)
#   DIR/busybox-docker.tar  the same image as a docker-archive (`docker save`
#                           format) tagged busybox:latest (for `docker load`)
#
# The root filesystem has /bin/busybox, a symlink per applet (so /bin/true,
# /bin/sleep, /bin/sh exist), /etc/passwd and /etc/group for root, and
# empty /dev, /proc, /sys, /tmp. Config: Cmd sh, the usual PATH, workdir /.
# It takes a second or two, so it is built afresh each run; DIR must be
# missing or empty.
#
# Environment:
#   BUSYBOX   the static busybox to copy (default: /bin/busybox)
# Needs umoci and skopeo; root, so the files in the layer belong to root.
set -euo pipefail
umask 022

busybox=${BUSYBOX:-/bin/busybox}

die() { echo "make-busybox-image: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 DIR"
dir=$1
[ "$(id -u)" -eq 0 ] || die "needs root (the layer's files must belong to root)"
for tool in umoci skopeo; do
    command -v "$tool" >/dev/null || die "$tool not found (run: make deps)"
done
[ -x "$busybox" ] || die "$busybox not found (run: make deps, it installs busybox-static)"
# The root filesystem has no libc, so busybox must be the static build.
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install busybox-static or set BUSYBOX"
fi
if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    die "$dir exists and is not empty"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

layout=$dir/layout
bundle=$dir/bundle
umoci init --layout "$layout"
umoci new --image "$layout:latest"
umoci unpack --image "$layout:latest" "$bundle" >/dev/null
rootfs=$bundle/rootfs
mkdir -p "$rootfs"/{bin,dev,etc,proc,sys,tmp,root}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    # The list names busybox itself; linking it would replace the binary.
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
umoci repack --image "$layout:latest" --history.created_by "busybox-static and its applets" "$bundle" >/dev/null
umoci config --image "$layout:latest" --config.cmd sh --config.workingdir / \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umoci gc --layout "$layout"
rm -rf "$bundle"

tar -C "$layout" -cf "$dir/busybox-oci.tar" .
skopeo --insecure-policy copy --quiet "oci:$layout:latest" "docker-archive:$dir/busybox-docker.tar:busybox:latest"
rm -rf "$layout"
