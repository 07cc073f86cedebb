#!/usr/bin/env python3
"""Compares two JUnit reports of docker-py's integration suite (dockerd's,
berthd's; scripts/compat-docker-py.sh): prints both pass counts, then each
test that passed on the first daemon and not on the second, with the first
line of why, by file. `--wall NAME=MS` (once per daemon, when the suites ran
one after the other) adds each suite's wall time and their ratio."""

import sys
import xml.etree.ElementTree as ET


def outcomes(path):
    """{test id: (outcome, first line of the message)} of one report."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        outcome, why = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
                why = (child.get("message") or child.text or "").strip()
                why = why.splitlines()[0] if why else ""
                break
        result[test] = (outcome, why[:200])
    return result


def count(results, outcome):
    return sum(1 for o, _ in results.values() if o == outcome)


def main():
    args, walls = sys.argv[1:], {}
    while args and args[0] == "--wall":
        name, _, ms = args[1].partition("=")
        walls[name] = int(ms)
        args = args[2:]
    base_path, ours_path = args[:2]
    base, ours = outcomes(base_path), outcomes(ours_path)
    for name, results in (("dockerd 20.10", base), ("berthd", ours)):
        print(
            f"{name:14} passed {count(results, 'passed'):4} of {len(results)}"
            f"  (failed {count(results, 'failure')}, errors {count(results, 'error')},"
            f" skipped {count(results, 'skipped')})"
        )
    if "dockerd" in walls and "berthd" in walls:
        print(
            f"\nwall time: dockerd {walls['dockerd'] / 1000:.1f} s, berthd {walls['berthd'] / 1000:.1f} s"
            f" ({walls['berthd'] / walls['dockerd']:.2f}x)"
        )
    behind = sorted(t for t, (o, _) in base.items() if o == "passed" and ours.get(t, ("missing",))[0] != "passed")
    ahead = sorted(t for t, (o, _) in ours.items() if o == "passed" and base.get(t, ("missing",))[0] != "passed")
    print(f"\npassed on dockerd, not on berthd: {len(behind)}")
    current = None
    for test in behind:
        module, name = test.split("::", 1)
        if module != current:
            print(f"  {module}")
            current = module
        outcome, why = ours.get(test, ("missing", ""))
        print(f"    {name}: {outcome}: {why}")
    print(f"\npassed on berthd, not on dockerd: {len(ahead)}")
    for test in ahead:
        print(f"  {test}: {base.get(test, ('missing', ''))[1]}")


if __name__ == "__main__":
    main()
