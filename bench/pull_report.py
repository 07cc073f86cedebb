#!/usr/bin/env python3
"""Summarize the image-pull benchmark (bench/pull.sh): JSON, table, ratios.

Reads the tab-separated files pull.sh writes while it runs:
  results  system, round, wall ms, client CPU ms, daemon CPU ms, store KiB,
           1-minute load average just before the pull
  memory   system, process, VmRSS KiB, VmHWM KiB (idle, after the last round)
  errors   system, round, message
  problems one line per thing left behind (a mount, a process)
writes the JSON report to --out and prints the table and the ratios against
the targets. A ratio whose two sides were not both measured is n/a.
"""

import argparse
import json
import os
import statistics
import sys

# (label, numerator, denominator, target): pull wall time, median over rounds.
TIME_TARGETS = [
    ("berth/docker", "berth", "docker", 0.5),
    ("berth/ctr", "berth", "ctr", 0.5),
    ("ctr/docker", "ctr", "docker", None),
]
# (label, numerator process, denominator process, target): idle VmRSS.
RSS_TARGETS = [
    ("berth-supervisord/containerd", "berth-supervisord", "containerd", 0.25),
    ("berth-supervisord/dockerd", "berth-supervisord", "dockerd", None),
]


def rows(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def median(values):
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--memory", required=True)
    ap.add_argument("--errors", required=True)
    ap.add_argument("--problems", required=True)
    ap.add_argument("--manifest", required=True, help="the image's manifest (JSON)")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--commands", required=True, help="JSON object: system -> command")
    ap.add_argument("--out", required=True)
    ap.add_argument("systems", nargs="+")
    args = ap.parse_args()

    with open(args.manifest) as f:
        manifest = json.load(f)
    commands = json.loads(args.commands)
    samples = rows(args.results)
    errors = {}
    for system, rnd, message in rows(args.errors):
        errors.setdefault(system, f"round {rnd}: {message}")

    systems = []
    for name in args.systems:
        mine = [s for s in samples if s[0] == name]
        wall = [int(s[2]) for s in mine]
        systems.append({
            "name": name,
            "command": commands.get(name),
            "runs": len(mine),
            "error": errors.get(name),
            "samples_ms": wall,
            "median_ms": median(wall),
            "min_ms": min(wall) if wall else None,
            "max_ms": max(wall) if wall else None,
            "client_cpu_median_ms": median([int(s[3]) for s in mine]),
            "daemon_cpu_median_ms": median([int(s[4]) for s in mine]),
            "store_mib": round(int(mine[-1][5]) / 1024, 1) if mine else None,
            "load_before": [float(s[6]) for s in mine],
        })
    memory = [
        {"system": m[0], "process": m[1], "rss_kib": int(m[2]), "hwm_kib": int(m[3])}
        for m in rows(args.memory)
        if m[2] and m[3]
    ]
    with open(args.problems) as f:
        problems = [line.strip() for line in f if line.strip()]

    by_name = {s["name"]: s for s in systems}
    rss = {m["process"]: m["rss_kib"] for m in memory}
    ratios = []
    for label, a, b, target in TIME_TARGETS:
        va = (by_name.get(a) or {}).get("median_ms")
        vb = (by_name.get(b) or {}).get("median_ms")
        ratios.append(ratio(label, "pull wall time (median)", a, va, b, vb, target))
    for label, a, b, target in RSS_TARGETS:
        ratios.append(ratio(label, "idle VmRSS", a, rss.get(a), b, rss.get(b), target))

    report = {
        "image": {
            "ref": args.ref,
            "layers": [{"digest": l["digest"], "size": l["size"], "mediaType": l["mediaType"]}
                       for l in manifest["layers"]],
            "compressed_bytes": sum(l["size"] for l in manifest["layers"]),
        },
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "systems": systems,
        "idle_memory": memory,
        "ratios": ratios,
        "left_behind": problems,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    mib = report["image"]["compressed_bytes"] / 2**20
    print(f"image pull: {len(manifest['layers'])} gzip layers, {mib:.0f} MiB compressed, "
          f"into an empty store; times in s, median of {args.rounds} round(s)")
    print(f"{'system':<8} {'runs':>4} {'median':>8} {'min':>8} {'max':>8} "
          f"{'client':>8} {'daemon':>8} {'store':>9}  note")
    sec = lambda v: "-" if v is None else f"{v / 1000:.2f}"
    for s in systems:
        store = "-" if s["store_mib"] is None else f"{s['store_mib']:.0f} MiB"
        note = f"FAILED: {s['error']}"[:200] if s["error"] else ""
        print(f"{s['name']:<8} {s['runs']:>4} {sec(s['median_ms']):>8} {sec(s['min_ms']):>8} "
              f"{sec(s['max_ms']):>8} {sec(s['client_cpu_median_ms']):>8} "
              f"{sec(s['daemon_cpu_median_ms']):>8} {store:>9}  {note}")
    print("  (client, daemon: CPU time of the pull command and of the daemon(s) during the pull)")
    loads = [l for s in systems for l in s["load_before"]]
    cpus = os.cpu_count() or 1
    if loads and max(loads) >= cpus:
        print(f"  note: the machine was busy (load average up to {max(loads):.1f} on {cpus} CPUs "
              f"before a pull): the figures are noisy")
    if memory:
        print()
        print("idle resident memory, image stored (after the last round), MiB")
        print(f"{'process':<26} {'VmRSS':>8} {'VmHWM':>8}")
        for m in memory:
            print(f"{m['process']:<26} {m['rss_kib'] / 1024:>8.1f} {m['hwm_kib'] / 1024:>8.1f}")
    print()
    for r in ratios:
        if r["ratio"] is None:
            print(f"{r['name']:<30} n/a ({r['missing']} not measured)")
        elif r["target"] is None:
            print(f"{r['name']:<30} {r['ratio']:6.3f}")
        else:
            verdict = "met" if r["met"] else "MISSED"
            print(f"{r['name']:<30} {r['ratio']:6.3f}   target <= {r['target']}   {verdict}")
    for p in problems:
        print(f"left behind: {p}", file=sys.stderr)


def ratio(label, what, a, va, b, vb, target):
    entry = {"name": label, "what": what, "target": target, "ratio": None, "met": None}
    if va is None or vb is None:
        entry["missing"] = a if va is None else b
        return entry
    entry["ratio"] = round(va / vb, 4)
    if target is not None:
        entry["met"] = entry["ratio"] <= target
    return entry


if __name__ == "__main__":
    main()
