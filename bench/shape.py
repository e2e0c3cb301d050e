#!/usr/bin/env python3
"""Benchmarks of a cluster's shape changing, on a real local cluster.

    bench/shape.py [--runs N]

Starts the local etcd (scripts/demo.sh etcd); each run deploys a 3-node
cluster (db1-db3 on 127.0.0.11-13, its own cluster name) under
.work/bench-shape with playbooks/site.yml, then measures:

- add: site.yml with db4 (127.0.0.14) added to the inventory, until db4
  streams (the task waits for it) and the members let it in;
- remove: site.yml limited to db4 with pg_state=absent, until neither the
  DCS nor the members list it;
- promotion: db4 deployed again as a one-node standby cluster of the
  first, the first cluster's processes killed (a site lost), then
  playbooks/promote.yml, from the order to a write accepted on db4.

Prints a Markdown table of medians. Removes what it made. Not a test:
nothing here asserts a time.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import local
from local import REPO

ROOT = os.path.join(REPO, ".work/bench-shape")
NODES = [("db1", "127.0.0.11"), ("db2", "127.0.0.12"), ("db3", "127.0.0.13"), ("db4", "127.0.0.14")]


def inventory(where, cluster, with_db4=None):
    """An inventory of the local one's variables: db1 the primary, db2 and
    db3 replicas; db4 a replica (with_db4 == 'replica') or a standby
    cluster's leader ('standby')."""
    os.makedirs(os.path.join(where, "group_vars"), exist_ok=True)
    shutil.copy(os.path.join(REPO, "playbooks/inventories/local/group_vars/all.yml"),
                os.path.join(where, "group_vars/all.yml"))
    line = lambda n, a, extra="": f"        {n}: {{ansible_host: {a}, pg_cluster: {cluster}{extra}}}\n"
    primary = line(*NODES[0])
    replicas = "".join(line(*n) for n in NODES[1:3])
    if with_db4 == "replica":
        replicas += line(*NODES[3])
    elif with_db4 == "standby":
        primary += (f"        db4: {{ansible_host: 127.0.0.14, pg_cluster: {cluster}-dr, "
                    "patroni_standby_cluster: {host: '127.0.0.11,127.0.0.12,127.0.0.13'}}\n")
    with open(os.path.join(where, "hosts.yml"), "w") as f:
        f.write("all:\n  children:\n    primary:\n      hosts:\n" + primary
                + "    replica:\n      hosts:\n" + replicas)
    return where


def playbook(inv, name, *extra):
    return local.playbook(ROOT, inv, name, *extra)


def write_accepted(node):
    """Whether an insert into a table commits on `node`."""
    return local.psql(ROOT, node, "insert into bench_written values (now())")


def sql(node, query):
    if not local.psql(ROOT, node, query):
        sys.exit(f"{query} failed on {node}")


def clean(cluster):
    local.kill_under(ROOT + "/")
    shutil.rmtree(ROOT, ignore_errors=True)
    local.forget(f"/service/{cluster}/", f"/service/{cluster}-dr/")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    a = parser.parse_args()
    own_etcd = local.start_etcd()
    adds, removes, promotions = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(a.runs):
            cluster = f"shape-bench-{os.getpid()}-{run}"
            clean(cluster)
            three = inventory(os.path.join(tmp, f"three{run}"), cluster)
            four = inventory(os.path.join(tmp, f"four{run}"), cluster, "replica")
            dr = inventory(os.path.join(tmp, f"dr{run}"), cluster, "standby")
            playbook(three, "site.yml")
            sql("db1", "create table bench_written (at timestamptz)")
            adds.append(playbook(four, "site.yml"))
            removes.append(playbook(four, "site.yml", "-l", "db4", "-e", "pg_state=absent"))
            playbook(dr, "site.yml", "-l", "db4")
            for node, _ in NODES[:3]:
                local.kill_under(os.path.join(ROOT, node) + "/")
            ordered = time.monotonic()
            playbook(dr, "promote.yml", "-e", f"promote_cluster={cluster}-dr")
            while not write_accepted("db4"):
                if time.monotonic() - ordered > 60:
                    sys.exit("no write accepted on db4 60 s after the promotion's order")
                time.sleep(0.05)
            promotions.append(time.monotonic() - ordered)
            clean(cluster)
    local.stop_etcd(own_etcd)
    median = lambda v: f"{statistics.median(v):.2f} s"
    runs = lambda v: ", ".join(f"{x:.2f}" for x in v)
    print("| what (local, site.yml) | median | target | runs |")
    print("|---|---|---|---|")
    print(f"| add a node to a running 3-node cluster, until it streams | {median(adds)} | ≤ 10 s | {runs(adds)} |")
    print(f"| remove a node (`absent`), until no member lists it | {median(removes)} | ≤ 2 s | {runs(removes)} |")
    print(f"| promote a standby cluster, order to a write accepted | {median(promotions)} | ≤ 10 s | {runs(promotions)} |")


if __name__ == "__main__":
    main()
