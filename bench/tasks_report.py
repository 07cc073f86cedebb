#!/usr/bin/env python3
"""Summarize the task benchmark (bench/tasks.sh): JSON, tables, ratios.

Reads the tab-separated files tasks.sh writes while it runs:
  runs      name, round, wall ms, client CPU ms (bench/tasks_timing.py);
            name is a system, or docker-bridge (docker's default network)
  memory    system, process, pid, VmRSS KiB, RssAnon KiB, Pss KiB, threads
  parallel  system, round, containers, wall ms, how many were running,
            clean-up ms, CPU busy % just before the round
  errors    system (or docker-bridge), test, message
  problems  one line per thing left behind
writes the JSON report to --out and prints the tables and the ratios against
the targets. A ratio whose two sides were not both measured is n/a.
"""

import argparse
import json
import os
import statistics
import sys

RUN_NOTES = {
    "berth": "berth-ctr run --rm (no network: a netns with lo only)",
    "ctr": "ctr run --rm, runc (no network: a netns with lo only)",
    "docker": "docker run --rm --network none",
    "docker-bridge": "docker run --rm, default network (veth on a private bridge)",
}
# (label, what, numerator, denominator, target)
RUN_TARGETS = [
    ("berth/ctr", "run latency", "berth", "ctr", 0.2),
    ("berth/docker", "run latency, docker --network none", "berth", "docker", None),
    ("berth/docker-bridge", "run latency, docker default network", "berth", "docker-bridge", None),
    ("ctr/docker", "run latency, docker --network none", "ctr", "docker", None),
]
MEMORY_TARGETS = [
    ("berth-shim/containerd-shim-runc-v2", "shim VmRSS", "berth", "ctr", "rss_kib", 0.15),
    ("berth-shim/containerd-shim-runc-v2", "shim Pss", "berth", "ctr", "pss_kib", None),
    ("berth-shim/docker's shim", "shim VmRSS", "berth", "docker", "rss_kib", None),
]
PARALLEL_TARGETS = [
    ("berth/ctr", "containers at once", "berth", "ctr", None),
    ("berth/docker", "containers at once, docker --network none", "berth", "docker", None),
]


def rows(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def percentile(sorted_values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def ratio(label, what, a, va, b, vb, target):
    entry = {"name": label, "what": what, "target": target, "ratio": None, "met": None}
    if va is None or vb is None:
        entry["missing"] = a if va is None else b
        return entry
    entry["ratio"] = round(va / vb, 4)
    if target is not None:
        entry["met"] = entry["ratio"] <= target
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--memory", required=True)
    ap.add_argument("--parallel", required=True)
    ap.add_argument("--errors", required=True)
    ap.add_argument("--problems", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--busy-before", default="", help="CPU busy %% before the run latency rounds")
    ap.add_argument("--parallel-count", type=int, required=True)
    ap.add_argument("--parallel-rounds", type=int, required=True)
    ap.add_argument("--bridge", default="", help="docker's private bridge, if docker-bridge was run")
    ap.add_argument("--out", required=True)
    ap.add_argument("systems", nargs="+")
    args = ap.parse_args()

    errors = {}  # name -> its first failure
    failed_in = {}  # (name, test) -> message
    for name, test, message in rows(args.errors):
        errors.setdefault(name, f"{test}: {message}")
        failed_in.setdefault((name, test), message)
    names = []
    for s in args.systems:
        names.append(s)
        if s == "docker" and args.bridge:
            names.append("docker-bridge")

    samples = rows(args.runs)
    run = []
    for name in names:
        wall = sorted(float(s[2]) for s in samples if s[0] == name)
        cpu = [float(s[3]) for s in samples if s[0] == name]
        run.append({
            "name": name,
            "command": RUN_NOTES[name],
            "runs": len(wall),
            "median_ms": statistics.median(wall) if wall else None,
            "p90_ms": percentile(wall, 90) if wall else None,
            "min_ms": wall[0] if wall else None,
            "max_ms": wall[-1] if wall else None,
            "client_cpu_median_ms": statistics.median(cpu) if cpu else None,
            "error": None if wall else (errors.get(name) or errors.get(name.replace("-bridge", ""))),
        })

    memory = [
        {"system": m[0], "process": m[1], "pid": int(m[2]), "rss_kib": int(m[3]),
         "anon_kib": int(m[4]), "pss_kib": int(m[5]), "threads": int(m[6])}
        for m in rows(args.memory)
    ]

    par_rows = rows(args.parallel)
    parallel = []
    for name in args.systems:
        mine = [p for p in par_rows if p[0] == name]
        wall = sorted(int(p[3]) for p in mine)
        parallel.append({
            "name": name,
            "containers": args.parallel_count,
            "rounds": len(mine),
            "median_ms": statistics.median(wall) if wall else None,
            "min_ms": wall[0] if wall else None,
            "max_ms": wall[-1] if wall else None,
            "running": [int(p[4]) for p in mine],
            "cleanup_median_ms": statistics.median([int(p[5]) for p in mine]) if mine else None,
            "cpu_busy_pct_before": [int(p[6]) for p in mine],
            "error": failed_in.get((name, "parallel")) or (None if mine else errors.get(name)),
        })

    with open(args.problems) as f:
        problems = [line.strip() for line in f if line.strip()]

    run_by = {r["name"]: r["median_ms"] for r in run}
    mem_by = {m["system"]: m for m in memory}
    par_by = {p["name"]: p["median_ms"] for p in parallel}
    ratios = []
    for label, what, a, b, target in RUN_TARGETS:
        ratios.append(ratio(label, what, a, run_by.get(a), b, run_by.get(b), target))
    for label, what, a, b, field, target in MEMORY_TARGETS:
        va = (mem_by.get(a) or {}).get(field)
        vb = (mem_by.get(b) or {}).get(field)
        ratios.append(ratio(label, what, a, va, b, vb, target))
    for label, what, a, b, target in PARALLEL_TARGETS:
        what = f"{args.parallel_count} {what}"
        ratios.append(ratio(label, what, a, par_by.get(a), b, par_by.get(b), target))

    report = {
        "cpus": os.cpu_count(),
        "run_latency": {"rounds": args.rounds, "warmup": args.warmup,
                        "cpu_busy_pct_before": int(args.busy_before) if args.busy_before else None,
                        "systems": run},
        "shim_memory": memory,
        "parallel": {"containers": args.parallel_count, "rounds": args.parallel_rounds,
                     "systems": parallel},
        "ratios": ratios,
        "left_behind": problems,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    ms = lambda v: "-" if v is None else f"{v:.1f}"
    print(f"run latency: a busybox container running /bin/true, attached, removed at exit; "
          f"wall time in ms, {args.rounds} interleaved rounds after {args.warmup} warm-up")
    print(f"{'system':<14} {'runs':>4} {'median':>8} {'p90':>8} {'min':>8} {'max':>8} {'client':>7}  command / note")
    for r in run:
        note = f"FAILED: {r['error']}"[:200] if r["error"] else r["command"]
        print(f"{r['name']:<14} {r['runs']:>4} {ms(r['median_ms']):>8} {ms(r['p90_ms']):>8} "
              f"{ms(r['min_ms']):>8} {ms(r['max_ms']):>8} {ms(r['client_cpu_median_ms']):>7}  {note}")
    print("  (client: CPU time of the client command)")
    if args.busy_before and int(args.busy_before) >= 10:
        print(f"  note: the machine was busy before the rounds (CPU {args.busy_before}% busy after waiting "
              f"20 s for it to settle): the figures are noisy")
    if "docker" in args.systems:
        print("  (berth-ctr run and ctr run give the container no network, only lo: docker's like-for-like")
        print("   figure is the one with --network none"
              + (f"; docker-bridge is docker's default network, on the private bridge {args.bridge})"
                 if args.bridge else ")"))

    print()
    print("shim memory: the parent process of one idle, detached /bin/sleep container, KiB")
    print(f"{'system':<8} {'process':<24} {'pid':>8} {'VmRSS':>8} {'RssAnon':>8} {'Pss':>8} {'threads':>7}")
    for m in memory:
        print(f"{m['system']:<8} {m['process']:<24} {m['pid']:>8} {m['rss_kib']:>8} {m['anon_kib']:>8} "
              f"{m['pss_kib']:>8} {m['threads']:>7}")
    for name in args.systems:
        if name not in mem_by and errors.get(name):
            print(f"{name:<8} FAILED: {errors[name]}"[:200])
    print("  (Pss divides the pages a shim shares with other processes, e.g. a shared library or the same")
    print("   binary running elsewhere, among them; with static binaries and one shim each it is close to VmRSS)")

    print()
    sec = lambda v: "-" if v is None else f"{v / 1000:.2f}"
    print(f"{args.parallel_count} containers at once: detached /bin/sleep, one client each "
          f"(xargs -P {args.parallel_count}), until all clients exited; s, median of "
          f"{args.parallel_rounds} round(s)")
    print(f"{'system':<8} {'rounds':>6} {'median':>8} {'min':>8} {'max':>8} {'running':>12} {'clean-up':>9}  note")
    for p in parallel:
        running = "/".join(str(n) for n in p["running"]) or "-"
        note = f"FAILED: {p['error']}"[:200] if p["error"] else (
            "docker run -d --network none" if p["name"] == "docker" else "")
        print(f"{p['name']:<8} {p['rounds']:>6} {sec(p['median_ms']):>8} {sec(p['min_ms']):>8} "
              f"{sec(p['max_ms']):>8} {running:>12} {sec(p['cleanup_median_ms']):>9}  {note}")
    print(f"  (running: how many of the {args.parallel_count} the system listed as running, per round; "
          f"clean-up: kill and remove all, not in the figure)")
    busy = [b for p in parallel for b in p["cpu_busy_pct_before"]]
    if busy and max(busy) >= 10:
        print(f"  note: the machine was busy before a round (CPU up to {max(busy)}% busy after "
              f"waiting 20 s for it to settle): the figures are noisy")

    print()
    for r in ratios:
        label = f"{r['name']} ({r['what']})"
        if r["ratio"] is None:
            print(f"{label:<62} n/a ({r['missing']} not measured)")
        elif r["target"] is None:
            print(f"{label:<62} {r['ratio']:6.3f}")
        else:
            verdict = "met" if r["met"] else "MISSED"
            print(f"{label:<62} {r['ratio']:6.3f}   target <= {r['target']}   {verdict}")
    for p in problems:
        print(f"left behind: {p}", file=sys.stderr)


if __name__ == "__main__":
    main()
