#!/usr/bin/env python3
"""A major upgrade (15 to 17) of a 3-node cluster, on the local machine.

    bench/upgrade.py [--runs N] [--rows N]

Starts the local etcd (scripts/demo.sh etcd); each run deploys a 3-node
cluster (db1-db3 on 127.0.0.11-13, its own cluster name) on 15 under
.work/bench-upgrade with playbooks/site.yml, fills a table (--rows, 100000
by default), then runs playbooks/upgrade.yml to 17 while a client inserts
a row at a time through libpq's list of the three nodes (read-write). It
prints the playbook's time and the longest time between two acknowledged
writes (the write downtime), as a Markdown table of medians. Needs
PostgreSQL 17 in /usr/lib/postgresql/17 (scripts/setup.sh). Removes what
it made. Not a test: nothing here asserts a time.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import local
from local import REPO
from shape import inventory

ROOT = os.path.join(REPO, ".work/bench-upgrade")
NODES = ["db1", "db2", "db3"]


def clean(cluster):
    local.kill_under(ROOT + "/")
    shutil.rmtree(ROOT, ignore_errors=True)
    local.forget(f"/service/{cluster}/")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100000)
    a = parser.parse_args()
    if not os.path.exists("/usr/lib/postgresql/17/bin/pg_upgrade"):
        sys.exit("no PostgreSQL 17 in /usr/lib/postgresql/17: run scripts/setup.sh")
    own_etcd = local.start_etcd()
    totals, gaps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(a.runs):
            cluster = f"upgrade-bench-{os.getpid()}-{run}"
            clean(cluster)
            inv = inventory(os.path.join(tmp, f"inv{run}"), cluster)
            local.playbook(ROOT, inv, "site.yml")
            for q in ("create table bench_written (at timestamptz)",
                      "create table filler (id bigint primary key, note text)",
                      f"insert into filler select g, md5(g::text) from generate_series(1, {a.rows}) g"):
                if not local.psql(ROOT, "db1", q):
                    sys.exit(f"{q} failed")
            writer = local.local_writer(ROOT, NODES)
            time.sleep(1)
            started = time.monotonic()
            totals.append(local.playbook(ROOT, inv, "upgrade.yml", "-e", f"upgrade_cluster={cluster}",
                                         "-e", "upgrade_to=17"))
            ended = time.monotonic()
            time.sleep(1)
            writer.stop.set()
            writer.join()
            gaps.append(writer.gap(started, ended))
            clean(cluster)
    local.stop_etcd(own_etcd)
    median = lambda v: f"{statistics.median(v):.2f} s"
    runs = lambda v: ", ".join(f"{x:.2f}" for x in v)
    print("| what (local, 3 nodes, 15 to 17) | median | target | runs |")
    print("|---|---|---|---|")
    print(f"| upgrade.yml, from the order to the cluster whole | {median(totals)} | | {runs(totals)} |")
    print(f"| longest time without an acknowledged write | {median(gaps)} | ≤ 30 s | {runs(gaps)} |")


if __name__ == "__main__":
    main()
