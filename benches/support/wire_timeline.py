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
    sleep 5; timeout 1 tcpdump -i lo -s 2048 -w rt.pcap tcp
    wait; python3 benches/support/wire_timeline.py rt.pcap runtime

(`raw` instead of `runtime`, with `delegation_nats/raw_async_nats$`.) The
capture costs CPU too: round trips run a little longer under it. Needs
tcpdump to read the capture back. Standard library only.
"""

import collections
import re
import statistics
import subprocess
import sys

HEADER = re.compile(r"^(\d+\.\d+) IP \S+ > \S+: ")
OP = re.compile(r"(HPUB|PUB|HMSG|MSG) (\S+)")
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
    """(time, [(op, subject)]) per packet; a PubAck's MSG becomes PUBACK."""
    text = subprocess.run(
        ["tcpdump", "-r", path, "-nn", "-tt", "-A"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = []
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            out.append((float(m[1]), []))
            continue
        if not out:
            continue
        ops = out[-1][1]
        m = OP.search(line)
        if m:
            ops.append((m[1], m[2]))
        elif '{"stream"' in line and ops and ops[-1][0] == "MSG":
            ops[-1] = ("PUBACK", ops[-1][1])
    return out


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


def main():
    path, which = sys.argv[1], sys.argv[2]
    subjects = PATHS[which]
    trips, current = [], None
    for t, ops in packets(path):
        for op, subject in ops:
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


if __name__ == "__main__":
    main()
