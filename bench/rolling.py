#!/usr/bin/env python3
"""A rolling minor upgrade of a 3-node cluster, on the local machine.

    bench/rolling.py [--runs N]

Starts the local etcd (scripts/demo.sh etcd); each run deploys a 3-node
cluster (db1-db3 on 127.0.0.11-13, its own cluster name) under
.work/bench-rolling on the older of the two PostgreSQL 15 releases and on
Patroni 4.0.11 (scripts/setup.sh puts both pairs under .work/minors),
through links the settings name; a client inserts a row at a time through
libpq's list of the three nodes (read-write). The links are then pointed
at the newer releases (as new packages would be installed) and
playbooks/rolling-upgrade.yml runs; then, everything current, a plain
switchover back to db1 (switchover.yml) for comparison. Prints the
playbook's time and the longest time between two acknowledged writes of
each, as a Markdown table of medians. Removes what it made. Not a test:
nothing here asserts a time.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import local
from local import REPO
from shape import inventory

ROOT = os.path.join(REPO, ".work/bench-rolling")
MINORS = os.path.join(REPO, ".work/minors")
NODES = ["db1", "db2", "db3"]


def releases():
    """The two PostgreSQL 15 trees setup.sh unpacked, older first."""
    found = sorted((tuple(int(p) for p in d.split("-", 1)[1].split(".")), d)
                   for d in os.listdir(MINORS) if d.startswith("postgresql-"))
    if len(found) < 2:
        sys.exit(f"two PostgreSQL 15 releases under {MINORS} are needed: run scripts/setup.sh")
    return [os.path.join(MINORS, d, "usr/lib/postgresql/15") for _, d in found[-2:]]


def point(link, target):
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def clean(cluster):
    local.kill_under(ROOT + "/")
    shutil.rmtree(ROOT, ignore_errors=True)
    local.forget(f"/service/{cluster}/")


def switchover_target():
    """The synchronous standby (synchronous mode), else a replica."""
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.11:8008/cluster", timeout=5) as r:
        members = json.load(r)["members"]
    sync = [m["name"] for m in members if m["role"] == "sync_standby"]
    return (sync or [m["name"] for m in members if m["role"] == "replica"])[0]


def timed_with_writes(writer, inv, name, *extra):
    started = time.monotonic()
    seconds = local.playbook(ROOT, inv, name, *extra)
    ended = time.monotonic()
    time.sleep(1)
    print(f"{name}: stalls over 0.5 s: {writer.stalls(started, ended)}", file=sys.stderr)
    return seconds, writer.gap(started, ended)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sync", action="store_true", help="in synchronous mode")
    a = parser.parse_args()
    older, newer = releases()
    own_etcd = local.start_etcd()
    totals, gaps, switchovers = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(a.runs):
            cluster = f"rolling-bench-{os.getpid()}-{run}"
            clean(cluster)
            os.makedirs(ROOT)
            pg, patroni = os.path.join(ROOT, "postgresql-15"), os.path.join(ROOT, "patroni")
            point(pg, older)
            point(patroni, os.path.join(MINORS, "patroni-4.0.11"))
            inv = inventory(os.path.join(tmp, f"inv{run}"), cluster)
            extra = ["-e", json.dumps({"pgherd_settings_extra": {
                "postgresql": {"bindir": f"{pg}/bin"},
                "patroni": {"execpath": f"{patroni}/bin/patroni"}}}),
                "-e", "rolling_packages=false"]
            if a.sync:
                extra += ["-e", json.dumps({"patroni_bootstrap_dcs": {"synchronous_mode": True}})]
            local.playbook(ROOT, inv, "site.yml", *extra)
            if not local.psql(ROOT, "db1", "create table bench_written (at timestamptz)"):
                sys.exit("the table could not be made")
            writer = local.local_writer(ROOT, NODES)
            time.sleep(1)
            point(pg, newer)
            point(patroni, os.path.join(MINORS, "patroni-4.1.5"))
            seconds, gap = timed_with_writes(writer, inv, "rolling-upgrade.yml", *extra)
            totals.append(seconds)
            gaps.append(gap)
            _, gap = timed_with_writes(writer, inv, "switchover.yml", *extra, "-e",
                                       f"new_leader={switchover_target()}")
            switchovers.append(gap)
            writer.stop.set()
            writer.join()
            clean(cluster)
    local.stop_etcd(own_etcd)
    median = lambda v: f"{statistics.median(v):.2f} s"
    runs = lambda v: ", ".join(f"{x:.2f}" for x in v)
    mode = ", synchronous mode" if a.sync else ""
    print(f"| what (local, 3 nodes, PostgreSQL and Patroni minor releases{mode}) | median | target | runs |")
    print("|---|---|---|---|")
    print(f"| rolling-upgrade.yml, from the order to the cluster whole | {median(totals)} | | {runs(totals)} |")
    print(f"| its longest time without an acknowledged write | {median(gaps)} | ≤ the switchover's | "
          f"{runs(gaps)} |")
    print(f"| a switchover's (switchover.yml), for comparison | {median(switchovers)} | ≤ 5 s | "
          f"{runs(switchovers)} |")


if __name__ == "__main__":
    main()
