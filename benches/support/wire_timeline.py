#!/usr/bin/env python3
"""The delegation round trip as nats-server sees it, from a loopback capture.

Reads a `tcpdump` capture of the bench's NATS traffic and prints, for the
runtime's round trip or the raw path's, the median offset of each message
on the wire from the task's publish: the PubAcks, the deliveries, the
acks, the pull requests; and the commonest orders they came in. Both parties
of the bench share one connection, so one TCP stream carries them all.

    cargo bench --bench delegation --features nats --no-run   # prints the binary
    AGENTORG_BENCH_ON_WORKER=1 $BINARY --bench 'delegation_nats/runtime$' \
        --profile-time 8 &
    sleep 5; timeout 1 tcpdump -i lo -s 0 -w rt.pcap tcp
    wait; python3 benches/support/wire_timeline.py rt.pcap runtime

(`raw` instead of `runtime`, with `delegation_nats/raw_async_nats$`.) The
capture costs CPU too: round trips run a little longer under it. Capturing
needs root (or CAP_NET_RAW); `-s 0` keeps whole packets (a shorter snap
length drops the later messages of a long packet). Reads IPv4 loopback
(the test kit's servers listen on 127.0.0.1). Needs tcpdump to read the
capture back. Standard library only.

`--steps FILE` joins the capture with the step events the bench dumped
(`AGENTORG_BENCH_STEPS=1 AGENTORG_BENCH_STEPS_DUMP=FILE`, capturing while
it times its steps: see `benches/support/steps.rs`) by message id, and
prints, per message, the way between each step and the wire: from the
kernel's `publish` to the message on the wire, from a delivery on the
wire to the transport's `pulled` and on to the kernel's `delivered` or
`received`, and from the publish on the wire to `published` (the PubAck
back). The wire's times and the dump's are both the wall clock.
"""

import argparse
import collections
import re
import statistics
import subprocess
import sys

HEADER = re.compile(r"^(\d+\.\d+) IP \S+ > \S+: ")
OP = re.compile(r"(HPUB|PUB|HMSG|MSG) (\S+)")
MSG_ID = "Nats-Msg-Id: "
PATHS = {
    # task subject, result subject, worker's and founder's ack subjects
    "runtime": (
        "bench.agent.worker.inbox.founder",
        "bench.agent.founder.inbox.worker",
        "in-worker",
        "in-founder",
    ),
    "raw": ("rawp.task", "rawp.result", "RAWp.worker", "RAWp.founder"),
}


def packets(path):
    """(time, [[op, subject, msg_id]]) per packet; a PubAck's MSG becomes
    PUBACK; msg_id is None where the message has no `Nats-Msg-Id`."""
    out = []
    with subprocess.Popen(
        ["tcpdump", "-r", path, "-nn", "-tt", "-A"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        errors="replace",
    ) as tcpdump:
        for line in tcpdump.stdout:
            read(out, line.rstrip("\n"))
    if tcpdump.returncode != 0:
        sys.exit(f"tcpdump could not read {path}")
    return out


def read(out, line):
    """Adds one line of `tcpdump -A` to `out`."""
    m = HEADER.match(line)
    if m:
        out.append((float(m[1]), []))
        return
    if not out:
        return
    ops = out[-1][1]
    m = OP.search(line)
    if m:
        ops.append([m[1], m[2], None])
    elif line.startswith(MSG_ID) and ops and ops[-1][2] is None:
        ops[-1][2] = line[len(MSG_ID):].strip()
    elif '{"stream"' in line and ops and ops[-1][0] == "MSG":
        ops[-1][0] = "PUBACK"


def name(op, subject, task, result, worker, founder):
    if op == "HPUB":
        return {task: "task published", result: "result published"}.get(subject)
    if op == "HMSG":
        return {task: "task delivered", result: "result delivered"}.get(subject)
    if op == "PUBACK":
        return "PubAck"
    if op == "PUB" and subject.startswith("$JS.ACK"):
        return "task acked" if worker in subject else "result acked" if founder in subject else None
    if op == "PUB" and ".MSG.NEXT." in subject:
        return "pull request (worker)" if "worker" in subject else "pull request (founder)"
    return None


def join(captured, dump):
    """The way between the step events of `dump` and the wire, per message."""
    wire = collections.defaultdict(dict)
    for t, ops in captured:
        for op, _, msg_id in ops:
            if msg_id and op in ("HPUB", "HMSG"):
                wire[msg_id].setdefault(op, t)
    steps = collections.defaultdict(dict)
    with open(dump, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(None, 3)
            if len(parts) == 4:
                at, step, kind, msg_id = parts
                steps[msg_id].setdefault((step, kind), int(at) / 1e9)
    ways = (
        ("publish", "HPUB", True, "the kernel's publish → on the wire"),
        ("pulled", "HMSG", False, "delivered on the wire → the transport's pulled"),
        ("delivered", "HMSG", False, "delivered on the wire → the kernel's delivered"),
        ("received", "HMSG", False, "delivered on the wire → the principal's received"),
        ("published", "HPUB", False, "published on the wire → the kernel's published (PubAck back)"),
    )
    rows = collections.defaultdict(list)
    for msg_id, events in steps.items():
        on_wire = wire.get(msg_id)
        if not on_wire:
            continue
        for (step, kind), at in events.items():
            for name, op, before, label in ways:
                if step == name and op in on_wire:
                    gap = on_wire[op] - at if before else at - on_wire[op]
                    rows[(kind, label)].append(gap * 1e6)
        for kind in ("task", "result"):
            pulled = events.get(("pulled", kind))
            for step in ("delivered", "received"):
                after = events.get((step, kind))
                if pulled is not None and after is not None:
                    rows[(kind, f"the transport's pulled → the kernel's {step}")].append((after - pulled) * 1e6)
    if not rows:
        sys.exit("no message of the dump is in the capture (were they taken at the same time?)")
    print("between the steps and the wire, per message (median, quartiles; µs):")
    for (kind, label), values in sorted(rows.items()):
        values.sort()
        n = len(values)
        print(f"  {kind:6s} {label:62s} {statistics.median(values):7.1f}  "
              f"({values[n // 4]:.1f}–{values[(3 * n) // 4]:.1f}, {n})")


def main():
    parser = argparse.ArgumentParser(
        description="The delegation round trip on the wire, from a loopback capture."
    )
    parser.add_argument("capture", help="a tcpdump capture (-w) of the bench's NATS traffic")
    parser.add_argument("path", choices=sorted(PATHS), help="which round trip was captured")
    parser.add_argument(
        "--steps", metavar="FILE", help="the bench's step dump (AGENTORG_BENCH_STEPS_DUMP) to join"
    )
    args = parser.parse_args()
    which, dump = args.path, args.steps
    subjects = PATHS[which]
    captured = packets(args.capture)
    trips, current = [], None
    for t, ops in captured:
        for op, subject, _ in ops:
            event = name(op, subject, *subjects)
            if event is None:
                continue
            if event == "task published":
                current = [(t, event)]
                trips.append(current)
            elif current is not None:
                current.append((t, event))
    trips = trips[5:-5]  # the capture's edges cut round trips
    if not trips:
        sys.exit("no round trips in the capture")
    offsets, orders = collections.defaultdict(list), collections.Counter()
    for trip in trips:
        start, seen = trip[0][0], collections.Counter()
        for t, event in trip:
            seen[event] += 1
            label = event if seen[event] == 1 else f"{event} ({seen[event]})"
            offsets[label].append((t - start) * 1e6)
        orders[" → ".join(e for _, e in trip)] += 1
    ends = [trips[i + 1][0][0] - trips[i][0][0] for i in range(len(trips) - 1)]
    print(f"{which}: {len(trips)} round trips, median {statistics.median(ends) * 1e6:.1f} µs")
    print("median offset from the task's publish (events in at least 30 % of round trips):")
    for label, values in sorted(offsets.items(), key=lambda kv: statistics.median(kv[1])):
        if len(values) >= 0.3 * len(trips):
            print(f"  {statistics.median(values):7.1f} µs  {label}  ({len(values)})")
    print("commonest orders:")
    for order, n in orders.most_common(3):
        print(f"  {n:5d}  {order}")
    if dump:
        join(captured, dump)


if __name__ == "__main__":
    main()
