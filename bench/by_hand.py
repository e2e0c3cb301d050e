#!/usr/bin/env python3
"""Patroni driven by hand, side by side with pgherd, on this machine.

    bench/by_hand.py [--runs N] [--calls N]

What an operator without pgherd does, on the same shape as the local
inventory (three nodes on 127.0.0.11-13, ttl 20, loop_wait 2, PostgreSQL
15, the local etcd), on ports of its own (PostgreSQL 5442, REST API 8018)
so that it runs beside a deployed pgherd cluster:

- deploy: three Patroni configuration files written, the three Patronis
  started at once, until /cluster shows a leader and two streaming
  replicas (the configuration files and directories are not timed);
- status: `patronictl list`, process start to exit;
- switchover: `patronictl switchover --force`, until the old leader
  streams again (read from /cluster every 50 ms).

Each figure is the median of the runs. Compare with bench/run.py (deploy,
status, switchover through pgherd) and docs/benchmarks.md. Removes what it
made. Not a test: nothing here asserts a time.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import time

import local
import peers

REPO = local.REPO
ROOT = os.path.join(REPO, ".work/bench-hand")
VENV = os.path.join(REPO, ".venv/bin")
SCOPE = "bench-hand"
NODES = [("hand1", "127.0.0.11"), ("hand2", "127.0.0.12"), ("hand3", "127.0.0.13")]
PG_PORT, API_PORT = 5442, 8018
BIN = "/usr/lib/postgresql/15/bin"


def config(name, host):
    """A Patroni configuration as an operator writes one (JSON is YAML)."""
    home = os.path.join(ROOT, name)
    return {
        "scope": SCOPE, "name": name,
        "restapi": {"listen": f"{host}:{API_PORT}", "connect_address": f"{host}:{API_PORT}"},
        "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "bootstrap": {
            "dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5,
                    "maximum_lag_on_failover": 1048576,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True}},
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{host}:{PG_PORT}", "connect_address": f"{host}:{PG_PORT}",
            "data_dir": os.path.join(home, "data"), "bin_dir": BIN,
            "pgpass": os.path.join(home, "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": "hand-superuser"},
                "replication": {"username": "replicator", "password": "hand-replication"},
                "rewind": {"username": "rewinder", "password": "hand-rewind"},
            },
            "parameters": {"unix_socket_directories": home},
            "pg_hba": ["local all all trust",
                       "host replication replicator 127.0.0.0/8 scram-sha-256",
                       "host all all 127.0.0.0/8 scram-sha-256"],
        },
    }


def cfg_path(name):
    return os.path.join(ROOT, name, "patroni.yml")


def prepare():
    shutil.rmtree(ROOT, ignore_errors=True)
    for name, host in NODES:
        os.makedirs(os.path.join(ROOT, name), mode=0o700)
        with open(cfg_path(name), "w") as f:
            json.dump(config(name, host), f)
    subprocess.run(["chown", "-R", "postgres:postgres", ROOT], check=True)


HOSTS = [host for _, host in NODES]


def cluster():
    return peers.rest_cluster(HOSTS, API_PORT)


def wait(what, ready):
    return peers.wait_cluster(HOSTS, API_PORT, what, ready)


def whole(c):
    return peers.whole(c, len(NODES))


def start_all():
    procs = []
    for name, _ in NODES:
        log = open(os.path.join(ROOT, name, "patroni.log"), "ab")
        procs.append(subprocess.Popen(
            [os.path.join(VENV, "patroni"), cfg_path(name)], user="postgres", group="postgres",
            extra_groups=[], cwd="/", stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
    return procs


def stop_all(procs):
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    local.kill_under(ROOT)
    subprocess.run(["etcdctl", "--endpoints=http://127.0.0.1:2379", "del", "--prefix",
                    f"/service/{SCOPE}/"], stdout=subprocess.DEVNULL, check=True)


def patronictl(*args):
    return [os.path.join(VENV, "patronictl"), "-c", cfg_path(NODES[0][0]), *args]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calls", type=int, default=20)
    a = ap.parse_args()
    subprocess.run([os.path.join(REPO, "scripts/demo.sh"), "etcd"], check=True)
    deploys, lists, switches = [], [], []
    for _ in range(a.runs):
        prepare()
        start = time.monotonic()
        procs = start_all()
        try:
            wait("a leader and two streaming replicas", whole)
            deploys.append(time.monotonic() - start)
            for _ in range(a.calls):
                t = time.perf_counter()
                subprocess.run(patronictl("list"), stdout=subprocess.DEVNULL, check=True)
                lists.append(time.perf_counter() - t)
            old = next(m["name"] for m in cluster()["members"] if m["role"] == "leader")
            new = next(m["name"] for m in cluster()["members"] if m["role"] != "leader")
            t = time.monotonic()
            subprocess.run(patronictl("switchover", "--leader", old, "--candidate", new, "--force"),
                           stdout=subprocess.DEVNULL, check=True)
            wait(f"{old} streaming from {new}", lambda c: whole(c) and any(
                m["name"] == new and m["role"] == "leader" for m in c["members"]))
            switches.append(time.monotonic() - t)
        finally:
            stop_all(procs)
    shutil.rmtree(ROOT, ignore_errors=True)

    row = peers.print_row
    print(f"| Patroni by hand (local, 3 nodes, {a.runs} runs) | median | min-max |")
    print("|---|---|---|")
    row("deploy: three Patronis started at once, until two replicas stream", deploys, "s")
    row("status: `patronictl list`, process start to exit", lists, "ms", 1000)
    row("switchover: `patronictl switchover --force`, until the old leader streams",
        switches, "s")


if __name__ == "__main__":
    main()
