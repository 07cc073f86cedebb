#!/usr/bin/env python3
"""Time `RUNTIME --root STATE run --bundle BUNDLE ID` for several OCI runtimes.

Used by bench/runtime.sh. Every runtime is measured by the same harness:
posix_spawn + wait4, timed with perf_counter_ns (CLOCK_MONOTONIC), so the
figure is the wall time a caller of the runtime sees. Runs are interleaved
(one run of each runtime per round, order rotating) so drift of the machine
affects all runtimes alike.

A runtime given as NAME=PATH@nounified runs in a private mount namespace in
which /sys/fs/cgroup/unified is unmounted (crun refuses the v1/v2 hybrid
layout). The harness switches namespace with setns before starting the
timer, so this costs the measured command nothing.

Before timing, each runtime runs --probe-bundle once and must print
--probe-output, so a runtime that exits 0 without running the container is
not timed. A runtime that fails is reported with its error and dropped; the
others are still measured. Results go to stdout as a table and to --out as JSON.
"""

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
UNIFIED = "/sys/fs/cgroup/unified"

libc = ctypes.CDLL(None, use_errno=True)


def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd):
    check(libc.setns(fd, CLONE_NEWNS), "setns")


def make_nounified_ns(host_fd):
    """Return an fd of a mount namespace without the cgroup v2 tree."""
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Private first, so the umount below does not propagate to the host.
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / rprivate")
    if os.path.ismount(UNIFIED):
        check(libc.umount2(UNIFIED.encode(), 0), f"umount {UNIFIED}")
    fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    setns(host_fd)
    return fd


class Runtime:
    def __init__(self, name, path, ns, workdir):
        self.name = name
        self.path = path
        self.ns = ns
        self.ns_fd = None
        self.root = os.path.join(workdir, f"state-{name}")
        self.stderr = os.path.join(workdir, f"stderr-{name}")
        self.samples = []  # (wall ns, child cpu ns)
        self.error = None
        os.makedirs(self.root, exist_ok=True)

    def run_once(self, bundle, cid, stdout="/dev/null"):
        argv = [self.path, "--root", self.root, "run", "--bundle", bundle, cid]
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, self.stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        ]
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(self.path, argv, os.environ, file_actions=actions)
        _, status, ru = os.wait4(pid, 0)
        t1 = time.perf_counter_ns()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            try:
                with open(self.stderr) as f:
                    msg = f.read().strip()
            except OSError:
                msg = ""
            how = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
            self.error = f"{how}: {msg[-500:] or '(no stderr)'}"
            # Leave no container behind; ignore the outcome.
            pid = os.posix_spawn(
                self.path,
                [self.path, "--root", self.root, "delete", "--force", cid],
                os.environ,
                file_actions=actions,
            )
            os.waitpid(pid, 0)
            return False
        cpu = int((ru.ru_utime + ru.ru_stime) * 1e9)
        return (t1 - t0, cpu)

    def probe(self, bundle, cid, expected, workdir):
        """Run bundle once; the container must print expected."""
        out = os.path.join(workdir, f"stdout-{self.name}")
        try:
            if self.run_once(bundle, cid, stdout=out) is False:
                return
            with open(out) as f:
                got = f.read().strip()
        finally:
            if os.path.exists(out):
                os.unlink(out)
        if got != expected:
            self.error = (
                f"exit status 0 but the container did not run: "
                f"expected output {expected!r}, got {got[-200:]!r}"
            )


def percentile(sorted_values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(rt):
    wall = sorted(s[0] / 1e6 for s in rt.samples)
    cpu = sorted(s[1] / 1e6 for s in rt.samples)
    return {
        "name": rt.name,
        "path": rt.path,
        "mount_ns": rt.ns,
        "runs": len(wall),
        "error": rt.error,
        "median_ms": statistics.median(wall) if wall else None,
        "p90_ms": percentile(wall, 90) if wall else None,
        "min_ms": wall[0] if wall else None,
        "mean_ms": statistics.fmean(wall) if wall else None,
        "cpu_median_ms": statistics.median(cpu) if cpu else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", help="write results as JSON here")
    ap.add_argument("--probe-bundle", help="bundle whose container prints --probe-output")
    ap.add_argument("--probe-output", default="")
    ap.add_argument(
        "runtimes", nargs="+", metavar="NAME=PATH[@nounified]",
        help="runtimes to measure",
    )
    args = ap.parse_args()
    bundle = os.path.abspath(args.bundle)

    workdir = tempfile.mkdtemp(prefix="berth-bench-state-")
    host_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    nounified_fd = None
    runtimes = []
    for spec in args.runtimes:
        name, _, rest = spec.partition("=")
        path, _, ns = rest.partition("@")
        ns = ns or "host"
        if ns not in ("host", "nounified"):
            ap.error(f"{spec}: unknown mount namespace {ns!r}")
        rt = Runtime(name, path, ns, workdir)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            rt.error = f"{path} not found or not executable"
        elif ns == "nounified":
            if nounified_fd is None:
                nounified_fd = make_nounified_ns(host_fd)
            rt.ns_fd = nounified_fd
        else:
            rt.ns_fd = host_fd
        runtimes.append(rt)

    current_fd = host_fd
    tag = os.getpid()
    if args.probe_bundle:
        probe_bundle = os.path.abspath(args.probe_bundle)
        for rt in runtimes:
            if rt.error is not None:
                continue
            if rt.ns_fd != current_fd:
                setns(rt.ns_fd)
                current_fd = rt.ns_fd
            rt.probe(probe_bundle, f"bench-{tag}-{rt.name}-probe", args.probe_output, workdir)
            if rt.error is not None:
                print(f"  {rt.name}: FAILED the probe run: {rt.error}", file=sys.stderr)
    start = time.monotonic()
    total = args.warmup + args.runs
    for i in range(total):
        live = [rt for rt in runtimes if rt.error is None]
        if not live:
            break
        shift = i % len(live)
        for rt in live[shift:] + live[:shift]:
            if rt.ns_fd != current_fd:
                setns(rt.ns_fd)
                current_fd = rt.ns_fd
            sample = rt.run_once(bundle, f"bench-{tag}-{rt.name}-{i}")
            if sample is False:
                print(f"  {rt.name}: FAILED on run {i + 1}: {rt.error}", file=sys.stderr)
                continue
            if i >= args.warmup:
                rt.samples.append(sample)
        if (i + 1) % 50 == 0 or i + 1 == total:
            print(f"  round {i + 1}/{total} ({time.monotonic() - start:.0f}s)", file=sys.stderr)
    if current_fd != host_fd:
        setns(host_fd)

    results = [summarize(rt) for rt in runtimes]
    # Leftover state directories mean a runtime did not clean up after `run`.
    for rt, res in zip(runtimes, results):
        left = os.listdir(rt.root)
        if left:
            res["leftover_state"] = left
            print(f"  {rt.name}: left state behind in {rt.root}: {left[:5]}", file=sys.stderr)
        else:
            os.rmdir(rt.root)
        try:
            os.unlink(rt.stderr)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(workdir)
    except OSError:
        print(f"  kept {workdir} (not empty)", file=sys.stderr)

    report = {"runs": args.runs, "warmup": args.warmup, "bundle": bundle, "runtimes": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
