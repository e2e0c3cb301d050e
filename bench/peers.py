"""What the side-by-side benchmarks share: a cluster's state read from its
members' REST APIs, and waits on it."""

import json
import statistics
import sys
import time
import urllib.request


def rest_cluster(hosts, port):
    """/cluster from the first of `hosts` that answers on `port`."""
    for host in hosts:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/cluster", timeout=1) as r:
                return json.load(r)
        except (OSError, ValueError):
            continue
    return None


def whole(c, size):
    """A running leader and `size - 1` streaming replicas."""
    members = (c or {}).get("members", [])
    leaders = [m for m in members if m["role"] == "leader" and m["state"] == "running"]
    streaming = [m for m in members if m["role"] == "replica" and m["state"] == "streaming"]
    return len(leaders) == 1 and len(streaming) == size - 1


def wait_cluster(hosts, port, what, ready, timeout=120):
    """/cluster every 50 ms until `ready` holds; exits saying what it saw."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = rest_cluster(hosts, port)
        if ready(c):
            return c
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}; last seen: {rest_cluster(hosts, port)}")


def print_row(what, values, unit, scale=1):
    """A Markdown row: the median and the range of `values` times `scale`."""
    shown = [v * scale for v in values]
    print(f"| {what} | {statistics.median(shown):.2f} {unit} | "
          f"{min(shown):.2f}-{max(shown):.2f} {unit} |")
