#!/usr/bin/env python3
"""Where a switchover's time goes, on the local cluster.

    bench/switchover.py [--runs N]

On the 3-node cluster bench/run.py leaves deployed (site.yml deploys it
first when its leader does not answer), a client inserts one row at a time
over TCP through libpq's list of the three nodes
(`target_session_attrs=read-write`, reconnecting at once after a failure)
while the `patroni` module switches over to a replica, N times, each to
the next member. For each switchover: the module's time (it returns once
the new leader takes writes and the old one streams from it), the client's
longest time without an acknowledged write, and when each step happened,
read from the two nodes' Patroni and PostgreSQL logs, in seconds from the
order. Prints Markdown tables of the medians. Not a test: nothing here
asserts a time.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local import Writer  # noqa: E402
from run import LOCAL, REPO, log_time, playbook, run_module  # noqa: E402

import psycopg2  # noqa: E402  (the repository's venv has it, for Patroni)

NODES = ["pg1", "pg2", "pg3"]
CLIENT = ("host=127.0.0.11,127.0.0.12,127.0.0.13 port=5432 dbname=postgres user=postgres "
          "password=local-superuser-pw target_session_attrs=read-write connect_timeout=2")
INFO = {"cluster": "pgherd-local", "state": "info",
        "settings": {"patroni": {"etcd": {"hosts": ["127.0.0.1:2379"]}}}}

# The steps, in order: (label, "old" or "new" leader, log, first line
# after the order containing this text).
STEPS = [
    ("request", "old", "patroni", "received switchover request"),
    ("demote", "old", "patroni", "Demoting self"),
    ("PG stop", "old", "postgresql", "received fast shutdown request"),
    ("PG down", "old", "postgresql", "database system is shut down"),
    ("key released", "old", "patroni", "Leader key released"),
    ("lock taken", "new", "patroni", "promoted self to leader by acquiring session lock"),
    ("new timeline", "new", "postgresql", "selected new timeline ID"),
    ("PG primary", "new", "postgresql", "database system is ready to accept connections"),
    ("old streams", "old", "postgresql", "started streaming WAL from primary"),
]


def writer():
    """A Writer of one row at a time, reconnecting at once after a failure,
    on the logs' clock."""
    conn = None

    def write():
        nonlocal conn
        try:
            if conn is None:
                conn = psycopg2.connect(CLIENT)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO bench_switchover VALUES (now())")
            return True
        except psycopg2.Error:
            if conn is not None:
                conn.close()
            conn = None
            return False

    return Writer(write, clock=time.time, pause=0.005)


def log_files(node, kind):
    root = os.path.join(LOCAL, node, "log")
    pattern = "patroni-*/patroni.log" if kind == "patroni" else "postgresql-*/*.log"
    return glob.glob(os.path.join(root, pattern))


def first_line(node, kind, text, since):
    best = None
    for path in log_files(node, kind):
        with open(path, errors="replace") as f:
            for line in f:
                if text in line:
                    t = log_time(line, kind)
                    if t is not None and t >= since and (best is None or t < best):
                        best = t
    return best


def leader():
    _, _, info = run_module("patroni", INFO)
    return info["cluster"]["leader"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    a = parser.parse_args()
    subprocess.run([os.path.join(REPO, "scripts/demo.sh"), "etcd"], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        leader()
    except (SystemExit, KeyError, json.JSONDecodeError):
        playbook(os.path.join(REPO, "playbooks/site.yml"))
    conn = psycopg2.connect(CLIENT)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_switchover (t timestamptz)")
    conn.close()

    client = writer()
    rows = []
    for i in range(a.runs):
        old = leader()
        new = NODES[(NODES.index(old) + 1) % len(NODES)]
        time.sleep(1)  # writes before the order
        order = time.time()
        seconds, _, result = run_module("patroni", dict(INFO, state="present", leader=new))
        if not result.get("changed"):
            sys.exit(f"the switchover to {new} did nothing: {result}")
        time.sleep(1)  # writes after the module returned
        end = time.time()
        steps = {}
        for label, who, kind, text in STEPS:
            t = first_line(old if who == "old" else new, kind, text, order - 0.5)
            steps[label] = None if t is None else t - order
        steps["first write"] = client.longest_gap(order, end)[1] - order
        rows.append({"module": seconds, "gap": client.gap(order, end), "steps": steps})
        print(f"run {i + 1}: {old} -> {new}: module {seconds:.2f} s, gap {rows[-1]['gap']:.2f} s, "
              + ", ".join(f"{k} {v:.2f}" for k, v in steps.items() if v is not None),
              file=sys.stderr, flush=True)
    client.stop.set()

    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"| switchover (local, 3 nodes, {a.runs} runs) | median | min-max |")
    print("|---|---|---|")
    for key, label in (("module", "the module, until the old leader streams"),
                       ("gap", "the client's longest time without a write")):
        xs = [r[key] for r in rows]
        print(f"| {label} | {med(xs):.2f} s | {min(xs):.2f}-{max(xs):.2f} s |")
    print()
    print("Seconds from the order (medians):")
    print()
    labels = [s[0] for s in STEPS[:-1]] + ["first write", STEPS[-1][0]]
    print("| " + " | ".join(labels) + " |")
    print("|" + "---|" * len(labels))
    cells = []
    for label in labels:
        xs = [r["steps"][label] for r in rows if r["steps"].get(label) is not None]
        cells.append(f"{med(xs):.2f}" if xs else "")
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
