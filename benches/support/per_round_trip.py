#!/usr/bin/env python3
"""Instructions and allocations per round trip, from two callgrind runs.

Run the bench's memory round trip under callgrind twice, for a short and a
longer profiling time (criterion's `--profile-time`), and give both output
files here: everything outside the timed loop (start-up, set-up, the org's
start and shutdown) is the same in both, so the difference between the two
runs, divided by the difference in round trips, is what one round trip
costs. A round trip is counted by the calls of a function called once per
round trip (by default the hierarchy handler's `handle`, once per task
delivered).

    valgrind --tool=callgrind --callgrind-out-file=cg.short $BINARY \\
        --bench 'delegation_memory/runtime$' --profile-time 3
    valgrind --tool=callgrind --callgrind-out-file=cg.long $BINARY \\
        --bench 'delegation_memory/runtime$' --profile-time 8
    python3 benches/support/per_round_trip.py cg.short cg.long

Unlike a timing, the figures do not depend on what else the machine is
doing: they move only with the code (and the compiler and libraries).
"""

import argparse
import re
import sys

ONCE_PER_ROUND_TRIP = (
    r"^<agentorg_core::hierarchy::handler::InboxHandler as "
    r"agentorg_core::runtime::seam::Handler>::handle$"
)
# glibc's allocator entry points, as callgrind names them.
ALLOCATIONS = r"^(malloc|__libc_malloc|calloc|__libc_calloc)$"


def load(path):
    """The file's total instructions and the calls per callee name."""
    names = {}
    callee = None
    total = None
    calls = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            # `fn=(id) name` the first time and `fn=(id)` after (names
            # compressed, callgrind's default), or `fn=name` every time.
            m = re.match(r"^(c?fn)=(?:\((\d+)\) ?)?(.*)$", line)
            if m:
                kind, ident, name = m.groups()
                if ident is not None and name:
                    names[ident] = name
                resolved = names.get(ident) if ident is not None else name
                if kind == "cfn":
                    callee = resolved
                continue
            if line.startswith("calls=") and callee is not None:
                n = int(line.split("=", 1)[1].split()[0])
                calls[callee] = calls.get(callee, 0) + n
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split(":", 1)[1].split()[0])
    if total is None:
        sys.exit(f"{path}: no `summary:` or `totals:` line; is it a callgrind output file?")
    return total, calls


def count(calls, pattern):
    """Calls of every callee whose name matches `pattern`."""
    rx = re.compile(pattern)
    return sum(n for name, n in calls.items() if rx.search(name))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("short", help="callgrind output of the shorter run")
    p.add_argument("long", help="callgrind output of the longer run")
    p.add_argument(
        "--once",
        default=ONCE_PER_ROUND_TRIP,
        help="regex of a function called once per round trip (default: the "
        "hierarchy handler's handle)",
    )
    args = p.parse_args()
    (t1, c1), (t2, c2) = load(args.short), load(args.long)
    rounds = count(c2, args.once) - count(c1, args.once)
    if rounds <= 0:
        sys.exit(
            f"no more calls of /{args.once}/ in {args.long} than in {args.short}: "
            "is the longer run the second argument, and the regex a function of the loop?"
        )
    allocs = count(c2, ALLOCATIONS) - count(c1, ALLOCATIONS)
    print(f"round trips between the runs: {rounds}")
    print(f"instructions per round trip:  {(t2 - t1) / rounds:,.0f}")
    print(f"allocations per round trip:   {allocs / rounds:,.1f}")


if __name__ == "__main__":
    main()
