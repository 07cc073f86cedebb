#!/usr/bin/env bash
# `make run`: run one busybox container with berth-runtime and show its output.
#
# Builds a bundle with scripts/make-bundle.sh (config.json from
# `berth-runtime spec`), runs it with `berth-runtime --root STATE run`, and
# removes the bundle and the state directory afterwards, also on failure.
#
# Environment: BERTH_RUNTIME (default: target/release/berth-runtime).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
runtime=${BERTH_RUNTIME:-$repo/target/release/berth-runtime}

die() { echo "run: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (the container gets namespaces, cgroups and mounts)"
[ -x "$runtime" ] || die "$runtime not found (build it with: make build)"

work=$(mktemp -d /tmp/berth-run.XXXXXX)
id=demo-$$
cleanup() {
    # Only does something when the run was interrupted.
    "$runtime" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

"$repo/scripts/make-bundle.sh" -r "$runtime" -H berth-demo "$work/bundle" \
    sh -c 'echo hello from a berth container; hostname; id'

echo "+ berth-runtime --root $work/state run --bundle $work/bundle $id" >&2
status=0
"$runtime" --root "$work/state" run --bundle "$work/bundle" "$id" || status=$?
[ "$status" -eq 0 ] || die "berth-runtime run exited with status $status"
