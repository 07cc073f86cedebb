#!/usr/bin/env python3
"""Where the time of one `docker run --rm` against berthd goes, from the daemons' debug logs.

Used by bench/engine.sh (figure 4). berthd runs with --debug; then its log
(which its supervisor shares) holds, each line stamped with the time it was
written:
  engine      "request" method=… path=… micros=N   (each API request)
              "exit handled" micros=N              (the exit: task deleted,
                                                    the container removed)
  supervisor  "grpc call" path=… micros=N          (each gRPC call served)
              "bundle removed" micros=N            (a deleted task's rootfs
                                                    unmounted, its bundle removed)
  shim        "shim started" micros=N              (the supervisor's spawn of
                                                    berth-shim until it is ready,
                                                    the container created)
              "shim log" line=…                    (the shim's own log, copied
                                                    when its task is deleted:)
                "request" / "request done" micros=N (each request it served)
                "runtime command" command=… micros=N (each berth-runtime run,
                                                    spawn to exit)
                "process exited"                   (the container's init reaped)
Each becomes an interval [end - micros, end] of its layer. The container's
own interval runs from the end of `berth-runtime start` to its exit being
reaped. The CLI's interval is the command's wall time (--cli-start-us,
--cli-end-us, given by the caller).

Every instant of the CLI's wall time is counted to one layer: the innermost
one at work then (runtime, shim, supervisor, engine, in that order), else the
container if it runs, else the CLI. So the layers' times add up to the wall
time; the CLI's share is its own work (start-up, requests, output) and the
time between the daemons' logged steps (connections, scheduling).

Streaming calls that last as long as the container (the API's wait, attach
and events; the supervisor's Wait and Subscribe; the shim's wait, attach and
events) are not intervals: they only wait for the others.
Writes JSON to --out and prints a table.
"""

import argparse
import datetime
import json
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z")
SHIM_STAMP = re.compile(r'^time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z"')
API_PREFIX = re.compile(r"^/v\d+\.\d+")
HEX_ID = re.compile(r"[0-9a-f]{64}")
LONG_API = re.compile(r"/(wait|attach|events)(\?|$)")
LONG_GRPC = ("/Wait", "/Subscribe", "/Attach", "/Events")
LONG_SHIM = {"Wait", "Attach", "Events", "Subscribe"}
DEPTH = {"runtime": 5, "shim": 4, "supervisor": 3, "engine": 2, "container": 1, "cli": 0}
LAYERS = ["cli", "engine", "supervisor", "shim", "runtime", "container"]


def epoch_us(date, frac):
    t = datetime.datetime.strptime(date, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    frac = (frac or "").ljust(6, "0")[:6]
    return int(t.timestamp()) * 1_000_000 + int(frac)


def field(text, name):
    """A key=value field of a log line: quoted (with escapes) or bare."""
    m = re.search(r'(?:^|\s)' + name + r'=("(?:[^"\\]|\\.)*"|\S+)', text)
    if not m:
        return None
    v = m.group(1)
    if v.startswith('"'):
        v = re.sub(r'\\(.)', r'\1', v[1:-1])
    return v


def parse(lines):
    """Intervals (layer, step, start_us, end_us) and the container's events."""
    intervals = []
    runtime_start_end = []
    exits = []
    shim_request = None
    for raw in lines:
        line = ANSI.sub("", raw.rstrip("\n"))
        m = STAMP.match(line)
        if not m:
            continue
        at = epoch_us(m.group(1), m.group(2))
        micros = field(line, "micros")
        if " request " in line and "berth_engine" in line and micros:
            path = API_PREFIX.sub("", field(line, "path") or "?")
            if LONG_API.search(path):
                continue
            step = f"{field(line, 'method')} {HEX_ID.sub('ID', path)}"
            intervals.append(("engine", f"API {step}", at - int(micros), at))
        elif " exit handled" in line and micros:
            intervals.append(("engine", "exit: task deleted, container removed", at - int(micros), at))
        elif " grpc call" in line and micros:
            path = field(line, "path") or "?"
            if path.endswith(LONG_GRPC):
                continue
            step = path.rsplit(".", 1)[-1]  # e.g. Tasks/Create
            intervals.append(("supervisor", f"gRPC {step}", at - int(micros), at))
        elif " bundle removed" in line and micros:
            intervals.append(("supervisor", "bundle removed (rootfs unmounted)", at - int(micros), at))
        elif " shim started" in line and micros:
            intervals.append(("shim", "berth-shim start-up (until it serves)", at - int(micros), at))
        elif " shim log" in line:
            inner = field(line, "line") or ""
            sm = SHIM_STAMP.match(inner)
            if not sm:
                continue
            sat = epoch_us(sm.group(1), sm.group(2))
            msg = field(inner, "msg")
            smicros = field(inner, "micros")
            if msg == "request":
                shim_request = (field(inner, "request") or "?").split(" ")[0].split("{")[0].split("(")[0]
            elif msg == "request done" and smicros:
                op = shim_request or "?"
                shim_request = None
                if op not in LONG_SHIM:
                    intervals.append(("shim", f"request {op}", sat - int(smicros), sat))
            elif msg == "runtime command" and smicros:
                command = field(inner, "command") or "?"
                intervals.append(("runtime", f"berth-runtime {command}", sat - int(smicros), sat))
                if command == "start":
                    runtime_start_end.append(sat)
            elif msg == "process exited" and field(inner, "process") in (None, "init", "the init"):
                exits.append(sat)
    if runtime_start_end and exits:
        began = runtime_start_end[-1]
        ended = min((e for e in exits if e >= began), default=None)
        if ended is not None:
            intervals.append(("container", "the container runs; its exit is reaped", began, ended))
    return intervals


def attribute(intervals, t0, t1):
    """Microseconds per layer: each instant to the deepest interval covering it."""
    clipped = [(l, s, max(a, t0), min(b, t1)) for l, s, a, b in intervals if b > t0 and a < t1]
    cuts = sorted({t0, t1} | {a for _, _, a, _ in clipped} | {b for _, _, _, b in clipped})
    total = {layer: 0 for layer in LAYERS}
    for a, b in zip(cuts, cuts[1:]):
        covering = [l for l, _, s, e in clipped if s <= a and e >= b]
        owner = max(covering, key=lambda l: DEPTH[l], default="cli")
        total[owner] += b - a
    return total, clipped


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", required=True, help="the daemons' log lines of the run")
    ap.add_argument("--cli-start-us", type=int, required=True, help="the CLI's spawn, µs since the epoch")
    ap.add_argument("--cli-end-us", type=int, required=True, help="the CLI's exit, µs since the epoch")
    ap.add_argument("--container", default="", help="the container's name (for the report)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0, t1 = args.cli_start_us, args.cli_end_us
    if t1 <= t0:
        sys.exit("engine_phases: the CLI's end is not after its start")
    with open(args.log, errors="replace") as f:
        intervals = parse(f)
    if not any(l == "supervisor" for l, *_ in intervals):
        sys.exit("engine_phases: no 'grpc call' lines in the log: is berthd running with --debug, "
                 "and berth-supervisord new enough to log them?")
    total, clipped = attribute(intervals, t0, t1)
    wall = t1 - t0
    steps = sorted(clipped, key=lambda i: (i[2], DEPTH[i[0]]))
    report = {
        "container": args.container,
        "wall_ms": wall / 1000,
        "layers": [{"layer": l, "ms": total[l] / 1000, "share": total[l] / wall} for l in LAYERS],
        "steps": [{"layer": l, "step": s, "at_ms": (a - t0) / 1000, "ms": (b - a) / 1000}
                  for l, s, a, b in steps],
        "missing": [l for l in ("engine", "supervisor", "shim", "runtime") if not any(i[0] == l for i in clipped)],
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print_report(report)


def print_report(r):
    print(f"where the time of one `docker run --rm --network none busybox /bin/true` against berthd goes "
          f"({r['wall_ms']:.1f} ms wall; berthd --debug, a run apart from the timed ones)")
    print(f"{'layer':<11} {'ms':>8} {'share':>6}")
    for layer in r["layers"]:
        print(f"{layer['layer']:<11} {layer['ms']:>8.1f} {layer['share'] * 100:>5.0f}%")
    print("  (each instant counted to the innermost layer at work then: runtime, shim, supervisor, engine;")
    print("   else the container, if it runs; else the CLI: its own work and the time between the daemons'")
    print("   logged steps)")
    if r["missing"]:
        print(f"  note: no logged steps of: {', '.join(r['missing'])}")
    print(f"{'at ms':>8} {'ms':>7}  {'layer':<11} step")
    for s in r["steps"]:
        print(f"{s['at_ms']:>8.1f} {s['ms']:>7.2f}  {s['layer']:<11} {s['step']}")


if __name__ == "__main__":
    main()
