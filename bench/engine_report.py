#!/usr/bin/env python3
"""Summarize the engine benchmark (bench/engine.sh): JSON, tables, ratios.

Reads the tab-separated files engine.sh writes while it runs:
  runs      name, round, wall ms, client CPU ms (bench/tasks_timing.py);
            name is berthd or dockerd (the docker CLI against it), or berth
            (the berth CLI against berthd)
  memory    when (idle: before any container; after: after the runs),
            system, process, pid, VmRSS KiB, Pss KiB
  parallel  system, round, containers, wall ms, how many were running,
            clean-up ms, CPU busy % just before the round
  errors    name, test, message
  problems  one line per thing left behind
and the per-phase JSON of bench/engine_phases.py (if there is one); writes
the JSON report to --out and prints the tables and the ratios against the
targets. A ratio whose two sides were not both measured is n/a.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_phases import print_report as print_phases  # noqa: E402
from tasks_report import percentile, ratio, rows  # noqa: E402

RUN_NOTES = {
    "berthd": "docker run --rm --network none, docker CLI -> berthd",
    "dockerd": "docker run --rm --network none, docker CLI -> dockerd 20.10",
    "berth": "berth run --rm --network none -> berthd",
}
# (label, what, numerator, denominator, target)
RUN_TARGETS = [
    ("berthd/dockerd", "run latency, docker CLI", "berthd", "dockerd", 0.1),
    ("berth/dockerd", "run latency, berth CLI vs docker CLI on dockerd", "berth", "dockerd", None),
]
MEMORY_TARGETS = [
    ("berthd/dockerd", "idle VmRSS, supervisors apart", "berthd", "dockerd", "rss_kib", 0.15),
    ("berthd/dockerd", "idle Pss, supervisors apart", "berthd", "dockerd", "pss_kib", None),
    ("berth-supervisord/containerd", "idle VmRSS", "berth-supervisord", "containerd", "rss_kib", None),
]
PARALLEL_TARGETS = [
    ("berthd/dockerd", "containers at once, docker run -d", "berthd", "dockerd", 0.2),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--memory", required=True)
    ap.add_argument("--parallel", required=True)
    ap.add_argument("--phases", required=True, help="engine_phases.py's JSON (may be missing)")
    ap.add_argument("--errors", required=True)
    ap.add_argument("--problems", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--busy-before", default="", help="CPU busy %% before the run latency rounds")
    ap.add_argument("--parallel-count", type=int, required=True)
    ap.add_argument("--parallel-rounds", type=int, required=True)
    ap.add_argument("--berth-note", default="", help="why the berth CLI was not measured")
    ap.add_argument("--out", required=True)
    ap.add_argument("systems", nargs="+")
    args = ap.parse_args()

    errors = {}
    failed_in = {}
    for name, test, message in rows(args.errors):
        errors.setdefault(name, f"{test}: {message}")
        failed_in.setdefault((name, test), message)
    names = list(args.systems)
    if "berthd" in names:
        names.append("berth")

    samples = rows(args.runs)
    run = []
    for name in names:
        wall = sorted(float(s[2]) for s in samples if s[0] == name)
        cpu = [float(s[3]) for s in samples if s[0] == name]
        error = None if wall else errors.get(name)
        if name == "berth" and not wall and not error:
            error = args.berth_note or "not measured"
        run.append({
            "name": name,
            "command": RUN_NOTES[name],
            "runs": len(wall),
            "median_ms": statistics.median(wall) if wall else None,
            "p90_ms": percentile(wall, 90) if wall else None,
            "min_ms": wall[0] if wall else None,
            "max_ms": wall[-1] if wall else None,
            "client_cpu_median_ms": statistics.median(cpu) if cpu else None,
            "error": error,
        })

    memory = [
        {"when": m[0], "system": m[1], "process": m[2], "pid": int(m[3]), "rss_kib": int(m[4]),
         "pss_kib": int(m[5])}
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

    phases = None
    if os.path.exists(args.phases):
        with open(args.phases) as f:
            phases = json.load(f)

    with open(args.problems) as f:
        problems = [line.strip() for line in f if line.strip()]

    run_by = {r["name"]: r["median_ms"] for r in run}
    idle_by = {m["process"]: m for m in memory if m["when"] == "idle"}
    par_by = {p["name"]: p["median_ms"] for p in parallel}
    ratios = []
    for label, what, a, b, target in RUN_TARGETS:
        ratios.append(ratio(label, what, a, run_by.get(a), b, run_by.get(b), target))
    for label, what, a, b, field, target in MEMORY_TARGETS:
        va = (idle_by.get(a) or {}).get(field)
        vb = (idle_by.get(b) or {}).get(field)
        ratios.append(ratio(label, what, a, va, b, vb, target))
    for label, what, a, b, target in PARALLEL_TARGETS:
        what = f"{args.parallel_count} {what}"
        ratios.append(ratio(label, what, a, par_by.get(a), b, par_by.get(b), target))

    report = {
        "cpus": os.cpu_count(),
        "run_latency": {"rounds": args.rounds, "warmup": args.warmup,
                        "cpu_busy_pct_before": int(args.busy_before) if args.busy_before else None,
                        "systems": run},
        "memory": memory,
        "parallel": {"containers": args.parallel_count, "rounds": args.parallel_rounds,
                     "systems": parallel},
        "phases": phases,
        "phases_error": failed_in.get(("berthd", "phases")),
        "ratios": ratios,
        "left_behind": problems,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    ms = lambda v: "-" if v is None else f"{v:.1f}"
    print(f"run latency: a busybox container running /bin/true, attached, no network, removed at exit; "
          f"wall time in ms, {args.rounds} interleaved rounds after {args.warmup} warm-up")
    print(f"{'name':<8} {'runs':>4} {'median':>8} {'p90':>8} {'min':>8} {'max':>8} {'client':>7}  command / note")
    for r in run:
        note = f"FAILED: {r['error']}"[:200] if r["error"] and r["name"] != "berth" else (
            r["error"] or r["command"])
        print(f"{r['name']:<8} {r['runs']:>4} {ms(r['median_ms']):>8} {ms(r['p90_ms']):>8} "
              f"{ms(r['min_ms']):>8} {ms(r['max_ms']):>8} {ms(r['client_cpu_median_ms']):>7}  {note}")
    print("  (client: CPU time of the client command)")
    if args.busy_before and int(args.busy_before) >= 10:
        print(f"  note: the machine was busy before the rounds (CPU {args.busy_before}% busy after waiting "
              f"20 s for it to settle): the figures are noisy")

    print()
    sec = lambda v: "-" if v is None else f"{v / 1000:.2f}"
    print(f"{args.parallel_count} containers at once: docker run -d --network none busybox /bin/sleep 600, "
          f"one client each (xargs -P {args.parallel_count}), until all clients exited; s, median of "
          f"{args.parallel_rounds} round(s)")
    print(f"{'daemon':<8} {'rounds':>6} {'median':>8} {'min':>8} {'max':>8} {'running':>12} {'clean-up':>9}  note")
    for p in parallel:
        running = "/".join(str(n) for n in p["running"]) or "-"
        note = f"FAILED: {p['error']}"[:200] if p["error"] else ""
        print(f"{p['name']:<8} {p['rounds']:>6} {sec(p['median_ms']):>8} {sec(p['min_ms']):>8} "
              f"{sec(p['max_ms']):>8} {running:>12} {sec(p['cleanup_median_ms']):>9}  {note}")
    print(f"  (running: how many of the {args.parallel_count} docker ps listed as running, per round; "
          f"clean-up: docker rm -f of all, not in the figure)")
    busy = [b for p in parallel for b in p["cpu_busy_pct_before"]]
    if busy and max(busy) >= 10:
        print(f"  note: the machine was busy before a round (CPU up to {max(busy)}% busy after "
              f"waiting 20 s for it to settle): the figures are noisy")

    print()
    print("daemon memory, KiB: idle = image loaded, before any container; after = idle again after the runs")
    print(f"{'when':<6} {'daemon':<8} {'process':<18} {'pid':>8} {'VmRSS':>8} {'Pss':>8}")
    for m in memory:
        print(f"{m['when']:<6} {m['system']:<8} {m['process']:<18} {m['pid']:>8} {m['rss_kib']:>8} "
              f"{m['pss_kib']:>8}")
    print("  (the engine's figure is berthd's or dockerd's own; their supervisors, berth-supervisord and")
    print("   containerd, are counted apart)")

    print()
    if phases:
        print_phases(phases)
    elif report["phases_error"]:
        print(f"per-phase timing: FAILED: {report['phases_error']}"[:300])
    else:
        print("per-phase timing: not run")

    print()
    for r in ratios:
        label = f"{r['name']} ({r['what']})"
        if r["ratio"] is None:
            print(f"{label:<66} n/a ({r['missing']} not measured)")
        elif r["target"] is None:
            print(f"{label:<66} {r['ratio']:6.3f}")
        else:
            verdict = "met" if r["met"] else "MISSED"
            print(f"{label:<66} {r['ratio']:6.3f}   target <= {r['target']}   {verdict}")
    for p in problems:
        print(f"left behind: {p}", file=sys.stderr)


if __name__ == "__main__":
    main()
