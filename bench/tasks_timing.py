#!/usr/bin/env python3
"""Time one-shot container runs (`berth-ctr run --rm`, `ctr run --rm`, `docker run --rm`).

Used by bench/tasks.sh for its run-latency figure. Every command is timed
by the same harness as bench/timing.py: posix_spawn + wait4, timed with
perf_counter_ns (CLOCK_MONOTONIC), stdin from /dev/null, stdout and stderr
to files, so the figure is the wall time a caller of the client sees (the
client's own start-up included). A deadline per command is kept with a
pidfd and poll, which costs the measured command no extra process.

--commands is a JSON object NAME -> argv; "{id}" in an argument is replaced
by a container id unique to the run (NAME-rROUND). Runs are interleaved,
one run of each command per round, the order rotating from round to round.
A command must exit 0; one that fails (or outlives --timeout, and is then
killed) is recorded in --errors and dropped, the others are still measured.

Writes one line per measured run to --results:
  name, round, wall ms, client CPU ms (user+sys of the client and its
  reaped children)
and one line per failure to --errors: name, "run", message.
"""

import argparse
import json
import os
import select
import signal
import sys
import time


def run_once(argv, log, timeout):
    """Returns (wall ns, cpu ns), or an error message."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    t0 = time.perf_counter_ns()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            os.kill(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            return f"did not exit within {timeout}s; killed it"
        _, status, ru = os.wait4(pid, 0)
        t1 = time.perf_counter_ns()
    finally:
        os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        try:
            with open(log, errors="replace") as f:
                said = " ".join(f.read().split())
        except OSError:
            said = ""
        how = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
        return f"{how}: {said[-400:] or '(no output)'}"
    return (t1 - t0, int((ru.ru_utime + ru.ru_stime) * 1e9))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", required=True, help="JSON object: name -> argv")
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=60, help="seconds one command may take")
    ap.add_argument("--logdir", required=True, help="where the commands' output goes")
    ap.add_argument("--results", required=True, help="TSV to append the samples to")
    ap.add_argument("--errors", required=True, help="TSV to append failures to")
    args = ap.parse_args()

    commands = json.loads(args.commands)
    live = list(commands)
    total = args.warmup + args.runs
    start = time.monotonic()
    with open(args.results, "a") as results, open(args.errors, "a") as errors:
        for i in range(total):
            if not live:
                break
            shift = i % len(live)
            for name in live[shift:] + live[:shift]:
                cid = f"{name}-r{i + 1}"
                argv = [a.replace("{id}", cid) for a in commands[name]]
                log = os.path.join(args.logdir, f"run-{name}.log")
                sample = run_once(argv, log, args.timeout)
                if isinstance(sample, str):
                    message = f"round {i + 1}: {sample}"
                    print(f"  {name}: FAILED: {message}", file=sys.stderr)
                    errors.write(f"{name}\trun\t{message}\n")
                    errors.flush()
                    live.remove(name)
                    continue
                if i >= args.warmup:
                    wall, cpu = sample
                    results.write(f"{name}\t{i + 1 - args.warmup}\t{wall / 1e6:.3f}\t{cpu / 1e6:.3f}\n")
            results.flush()
            if (i + 1) % 10 == 0 or i + 1 == total:
                print(f"  round {i + 1}/{total} ({time.monotonic() - start:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    main()
