#!/usr/bin/env bash
# Builds (once, cached) the image of the image-pull benchmark (bench/pull.sh)
# as an OCI image layout, and prints the layout's path; its tag is `bench`.
#
# Three gzip layers (umoci's default compression), in this order:
#   1. a Debian root filesystem: `debootstrap --variant=minbase SUITE` from
#      MIRROR, with /dev emptied and the downloaded .debs and package lists
#      removed, as in the Debian images of a registry (about 120 MB, 40 MB
#      compressed);
#   2. /data/big.bin, 100 MiB from /dev/urandom (incompressible);
#   3. /data/mid.bin, 50 MiB from /dev/urandom.
# The random files are made once per cache and the finished layout is kept,
# so every run of the benchmark pulls the same image (the same digests).
#
# Cache (BENCH_CACHE, default target/bench-cache/pull):
#   rootfs/      the debootstrap tree (the slow part: it downloads from MIRROR)
#   big.bin, mid.bin
#   oci/         the finished layout
# Each is made under a temporary name and renamed when complete, so an
# interrupted build leaves no half entry; delete the cache to start over.
#
# Environment:
#   BENCH_CACHE    cache directory (default: target/bench-cache/pull)
#   DEBIAN_MIRROR  Debian mirror (default: http://deb.debian.org/debian)
#   DEBIAN_SUITE   suite (default: bookworm)
# Needs root (debootstrap), debootstrap, umoci, jq.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${BENCH_CACHE:-$repo/target/bench-cache/pull}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
tag=bench

die() { echo "make-pull-image: $*" >&2; exit 1; }
say() { echo "make-pull-image: $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap)"
for tool in debootstrap umoci jq; do
    command -v "$tool" >/dev/null || die "$tool not found (run: make deps)"
done

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# One builder per cache at a time; a second waits and then finds it done.
exec {lock}>"$cache/.lock"
flock "$lock"

if [ -f "$cache/oci/index.json" ]; then
    echo "$cache/oci"
    exit 0
fi

# Whatever is being built; removed on exit unless renamed into place.
scratch=()
cleanup() {
    local dir
    for dir in "${scratch[@]}"; do
        [ -e "$dir" ] || continue
        # debootstrap mounts /proc and /sys in the target while it installs;
        # an interrupted run can leave them.
        { findmnt -rn -o TARGET | grep -F "$dir/" || true; } | sort -r | while read -r m; do
            umount -l "$m" || true
        done
        rm -rf "$dir"
    done
}
trap cleanup EXIT

if [ ! -d "$cache/rootfs" ]; then
    say "debootstrap --variant=minbase $suite from $mirror (once; takes a few minutes)"
    scratch+=("$cache/rootfs.tmp")
    rm -rf "$cache/rootfs.tmp"
    debootstrap --variant=minbase "$suite" "$cache/rootfs.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        die "debootstrap failed; its log ends:$(echo; tail -n 20 "$cache/debootstrap.log")"
    # As in the registry's Debian images: no device nodes, no package files,
    # no package lists.
    find "$cache/rootfs.tmp/dev" -mindepth 1 -delete
    find "$cache/rootfs.tmp/var/cache/apt/archives" -name '*.deb' -delete
    rm -f "$cache/rootfs.tmp/var/cache/apt/"*.bin
    find "$cache/rootfs.tmp/var/lib/apt/lists" -maxdepth 1 -type f -delete
    mv "$cache/rootfs.tmp" "$cache/rootfs"
fi

for spec in big.bin:100 mid.bin:50; do
    name=${spec%%:*}
    mib=${spec#*:}
    if [ ! -f "$cache/$name" ]; then
        scratch+=("$cache/$name.tmp")
        head -c "$((mib * 1024 * 1024))" /dev/urandom >"$cache/$name.tmp"
        mv "$cache/$name.tmp" "$cache/$name"
    fi
done

say "building the OCI layout (3 gzip layers)"
build=$cache/oci.tmp
scratch+=("$build")
rm -rf "$build"
mkdir "$build"
layout=$build/layout
umoci init --layout "$layout"
umoci new --image "$layout:$tag"

# Layer 1: the root filesystem, by unpack, copy, repack.
umoci unpack --image "$layout:$tag" "$build/bundle" >/dev/null
cp -a "$cache/rootfs/." "$build/bundle/rootfs/"
umoci repack --image "$layout:$tag" --history.created_by "debootstrap --variant=minbase $suite" \
    "$build/bundle" >/dev/null
rm -rf "$build/bundle"

# Layers 2 and 3: one file each under /data.
for name in big.bin mid.bin; do
    src=$build/insert-$name
    mkdir -p "$src"
    ln "$cache/$name" "$src/$name"
    umoci insert --image "$layout:$tag" --history.created_by "/data/$name" "$src" /data >/dev/null
    rm -rf "$src"
done

umoci config --image "$layout:$tag" --config.cmd /bin/bash \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umoci gc --layout "$layout"

manifest=$(jq -r --arg tag "$tag" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest' \
    "$layout/index.json")
layers=$(jq '.layers | length' "$layout/blobs/${manifest%%:*}/${manifest#*:}")
[ "$layers" = 3 ] || die "expected 3 layers in the image, found $layers"

mv "$layout" "$cache/oci"
say "done: $(du -sh "$cache/oci" | cut -f1) in $cache/oci"
echo "$cache/oci"
