#!/usr/bin/env python3
"""pglift with Patroni, side by side with pgherd, on this machine.

    bench/pglift.py [--runs N] [--calls N]

Installs pglift (PyPI, a pinned version) into .work/pglift-venv when it is
not there, starts the local etcd (scripts/demo.sh etcd), and on the shape
of the local inventory (three nodes on 127.0.0.11-13, PostgreSQL 15,
Patroni from the repository's .venv), on ports of its own (PostgreSQL
5462-5464, REST API 8038), as the postgres user, measures:

- deploy: `pglift instance create` of the first node, then of the other
  two at once, until /cluster shows a leader and two streaming replicas;
- no-op: `pglift instance apply` of the first node's unchanged manifest,
  process start to exit, and its peak memory (GNU time);
- drop a node: `pglift instance drop` of a replica, until no member lists
  it.

Each figure is the median of the runs. Compare with bench/run.py and
bench/shape.py (the same through pgherd) and docs/benchmarks.md. Removes
what it made. Not a test: nothing here asserts a time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import local
import peers

REPO = local.REPO
PGLIFT_VERSION = "3.3.0"
VENV = os.path.join(REPO, ".work/pglift-venv")
PGLIFT = os.path.join(VENV, "bin/pglift")
ROOT = os.path.join(REPO, ".work/bench-pglift")
SCOPE = "bench-pglift"
NODES = [("n1", "127.0.0.11", 5462), ("n2", "127.0.0.12", 5463), ("n3", "127.0.0.13", 5464)]
HOSTS = [host for _, host, _ in NODES]
API_PORT = 8038

# One site per node, as on three hosts (pglift runs one operation at a time
# per site).
SETTINGS = """\
prefix: {home}/site
run_prefix: {home}/run
postgresql:
  bindir: /usr/lib/postgresql/{{version}}/bin
  default_version: "15"
  replrole: replication
  auth:
    local: trust
    host: scram-sha-256
  socket_directory: {home}/run/postgresql
patroni:
  execpath: {repo}/.venv/bin/patroni
  ctlpath: {repo}/.venv/bin/patronictl
  etcd:
    hosts: ["127.0.0.1:2379"]
"""


def install():
    if os.access(PGLIFT, os.X_OK):
        return
    subprocess.run(["/usr/bin/python3", "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(VENV, "bin/pip"), "install", "-q",
                    f"pglift=={PGLIFT_VERSION}", f"pglift-cli=={PGLIFT_VERSION}"], check=True)


# pglift's default lets in 127.0.0.1 alone, and no replication: the
# replicas connect from their own addresses.
PG_HBA = """\
local   all             {surole}                                {auth.local}
local   all             all                                     {auth.local}
host    all             all             127.0.0.0/8             {auth.host}
host    replication     {replrole}      127.0.0.0/8             {auth.host}
"""


def prepare():
    shutil.rmtree(ROOT, ignore_errors=True)
    for name, host, port in NODES:
        home = os.path.join(ROOT, name)
        os.makedirs(os.path.join(home, "xdg/pglift"))
        with open(os.path.join(home, "xdg/pglift/settings.yaml"), "w") as f:
            f.write(SETTINGS.format(home=home, repo=REPO))
        os.makedirs(os.path.join(home, "xdg/pglift/postgresql"))
        with open(os.path.join(home, "xdg/pglift/postgresql/pg_hba.conf"), "w") as f:
            f.write(PG_HBA)
        with open(os.path.join(home, "manifest.json"), "w") as f:
            json.dump(manifest(name, host, port), f)
    subprocess.run(["chown", "-R", "postgres:postgres", ROOT], check=True)
    for name, _, _ in NODES:
        pglift(name, "site-configure", "install")


def manifest(name, host, port):
    return {
        "name": name, "version": "15", "port": port, "state": "started",
        "surole_password": "pglift-superuser", "replrole_password": "pglift-replication",
        "patroni": {"cluster": SCOPE, "node": name,
                    "restapi": {"listen": f"{host}:{API_PORT}",
                                "connect_address": f"{host}:{API_PORT}"},
                    "postgresql": {"connect_host": host}},
    }


def pglift(node, *args, timed_memory=False):
    """pglift as postgres with `node`'s site settings: seconds (and peak
    KiB with `timed_memory`)."""
    home = os.path.join(ROOT, node)
    cmd = ["runuser", "-u", "postgres", "--", "env", f"XDG_CONFIG_HOME={home}/xdg",
           f"HOME={home}", PGLIFT, "--non-interactive", *args]
    if timed_memory:
        cmd = ["/usr/bin/time", "-f", "%M", *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"pglift {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    if timed_memory:
        return seconds, int(proc.stderr.strip().splitlines()[-1])
    return seconds


def apply(name, timed_memory=False):
    return pglift(name, "instance", "apply", "-f", os.path.join(ROOT, name, "manifest.json"),
                  timed_memory=timed_memory)


def cleanup():
    local.kill_under(ROOT)
    subprocess.run(["etcdctl", "--endpoints=http://127.0.0.1:2379", "del", "--prefix",
                    f"/service/{SCOPE}/"], stdout=subprocess.DEVNULL, check=True)
    shutil.rmtree(ROOT, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calls", type=int, default=10)
    a = ap.parse_args()
    install()
    subprocess.run([os.path.join(REPO, "scripts/demo.sh"), "etcd"], check=True)
    deploys, noops, peaks, drops = [], [], [], []
    for _ in range(a.runs):
        cleanup()
        prepare()
        try:
            start = time.monotonic()
            apply("n1")
            replicas = [subprocess.Popen(
                [sys.executable, __file__, "--apply", name]) for name, _, _ in NODES[1:]]
            if any(p.wait() != 0 for p in replicas):
                sys.exit("a replica's pglift instance apply failed")
            peers.wait_cluster(HOSTS, API_PORT, "a leader and two streaming replicas",
                               lambda c: peers.whole(c, len(NODES)))
            deploys.append(time.monotonic() - start)
            for _ in range(a.calls):
                s, peak = apply("n1", timed_memory=True)
                noops.append(s)
                peaks.append(peak)
            start = time.monotonic()
            pglift("n3", "instance", "drop", "n3")
            peers.wait_cluster(HOSTS, API_PORT, "no member listing n3", lambda c: c is not None
                               and all(m["name"] != "n3" for m in c["members"]))
            drops.append(time.monotonic() - start)
        finally:
            cleanup()

    row = peers.print_row
    print(f"| pglift {PGLIFT_VERSION} with Patroni (local, 3 nodes, {a.runs} runs) | median | min-max |")
    print("|---|---|---|")
    row("deploy: the first node created, then the other two at once, until two replicas stream",
        deploys, "s")
    row("no-op: `pglift instance apply` of an unchanged manifest", noops, "s")
    print(f"| no-op: peak memory | {max(peaks) / 1024:.0f} MB | |")
    row("drop a replica: `pglift instance drop`, until no member lists it", drops, "s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--apply"]:
        apply(sys.argv[2])
    else:
        main()
