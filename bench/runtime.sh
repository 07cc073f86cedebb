#!/usr/bin/env bash
# Container start-up benchmark: berth-runtime against runc and crun.
#
# Measures the wall time of `RUNTIME --root STATE run --bundle B ID` for a
# busybox container running /bin/true (config.json from `runc spec`, terminal
# false), RUNS times per runtime after WARMUP runs, interleaved, and prints
# median and p90 per runtime and the ratios to the targets:
#   berth-runtime <= 0.8 x crun, <= 0.3 x runc   (median wall time)
#
# Environment:
#   BERTH_RUNTIME  berth-runtime binary (default: target/release/berth-runtime)
#   RUNC, CRUN     runc and crun binaries (default: from PATH)
#   RUNS           measured runs per runtime (default 200)
#   WARMUP         warm-up runs per runtime, not counted (default 10)
#   BENCH_OUT      JSON results (default: target/bench/runtime.json)
#
# crun does not support this host's v1/v2 hybrid cgroup layout, so it runs in a
# private mount namespace where /sys/fs/cgroup/unified is unmounted (v1 only);
# berth-runtime and runc run in the host's mount namespace. Needs root.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
berth=${BERTH_RUNTIME:-$repo/target/release/berth-runtime}
runc=${RUNC:-$(command -v runc || echo runc)}
crun=${CRUN:-$(command -v crun || echo crun)}
runs=${RUNS:-200}
warmup=${WARMUP:-10}
out=${BENCH_OUT:-$repo/target/bench/runtime.json}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (containers with namespaces and cgroups)"
command -v python3 >/dev/null || die "python3 not found"
command -v jq >/dev/null || die "jq not found (run: make deps)"
command -v runc >/dev/null || die "runc not found (run: make deps); its spec is the benchmark's config"

workdir=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$workdir"' EXIT
bundle=$workdir/bundle
"$repo/scripts/make-bundle.sh" -r runc -H bench "$bundle" /bin/true >/dev/null
# A probe run per runtime, on the same rootfs, checks that the container
# really runs: a runtime that exits 0 without running it is not timed.
probe=$workdir/probe
mkdir "$probe"
jq --arg root "$bundle/rootfs" '.process.args = ["/bin/echo", "berth-bench-probe"] | .root.path = $root' \
    "$bundle/config.json" > "$probe/config.json"

mkdir -p "$(dirname "$out")"
echo "bench: $runs runs + $warmup warm-up per runtime, interleaved: RUNTIME run --bundle B ID (/bin/true)" >&2
python3 "$repo/bench/timing.py" --bundle "$bundle" --runs "$runs" --warmup "$warmup" --out "$out" \
    --probe-bundle "$probe" --probe-output berth-bench-probe \
    "berth-runtime=$berth" "runc=$runc" "crun=$crun@nounified" >/dev/null

echo
echo "container start-up: run --bundle B ID, busybox /bin/true, wall time in ms"
printf '%-14s %6s %9s %9s %9s %10s  %s\n' runtime runs median p90 min "cpu(med)" note
jq -r '.runtimes[] | [.name, .runs,
        (.median_ms // "-"), (.p90_ms // "-"), (.min_ms // "-"), (.cpu_median_ms // "-"),
        (if .error then "FAILED: " + (.error | gsub("\n"; " ")) else "" end)] | @tsv' "$out" |
while IFS=$'\t' read -r name n med p90 min cpu note; do
    fmt() { [ "$1" = - ] && echo - || printf '%.2f' "$1"; }
    printf '%-14s %6s %9s %9s %9s %10s  %.200s\n' "$name" "$n" "$(fmt "$med")" "$(fmt "$p90")" \
        "$(fmt "$min")" "$(fmt "$cpu")" "$note"
done

echo
median() { jq -r --arg n "$1" '.runtimes[] | select(.name == $n and .runs > 0) | .median_ms' "$out"; }
ratio() { # NAME_A NAME_B TARGET
    local a b
    a=$(median "$1")
    b=$(median "$2")
    if [ -z "$a" ] || [ -z "$b" ]; then
        printf '%-22s n/a (%s has no measurement)\n' "$1/$2" "$([ -z "$a" ] && echo "$1" || echo "$2")"
        return
    fi
    awk -v a="$a" -v b="$b" -v t="$3" -v l="$1/$2" 'BEGIN {
        r = a / b
        if (t == "") printf "%-22s %6.3f\n", l, r
        else printf "%-22s %6.3f   target <= %s   %s\n", l, r, t, (r <= t ? "met" : "NOT met")
    }'
}
ratio berth-runtime crun 0.8
ratio berth-runtime runc 0.3
ratio crun runc ""
echo
echo "results: $out"

failed=$(jq -r '[.runtimes[] | select(.error != null) | .name] | join(", ")' "$out")
if [ -n "$failed" ]; then
    echo "bench: failed: $failed (figures above are for the others)" >&2
    exit 1
fi
