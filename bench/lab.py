#!/usr/bin/env python3
"""Benchmarks on the lab's hosts (scripts/lab.sh), over SSH with become.

    bench/lab.py [--runs N] [--bootstrap]

For each run: the lab booted fresh from the cached image (not timed), then

- deploy: playbooks/site.yml from nothing on booted hosts, until a leader
  and two streaming replicas (the playbook waits for them);
- re-run: site.yml again (must report changed=0);
- switchover: the patroni module from the leader to a replica, until the
  old leader streams again (the module waits for it);
- partition to writes: the leader's host cut off from its peers, until a
  new leader accepts a write through libpq's multi-host connection string.

With --haproxy, the cluster deployed, HAProxy on lab1 (the haproxy role,
its defaults), and two clients each inserting a row at a time, one
through HAProxy's read-write port, one through libpq's host list:

- the longest time without an acknowledged write through each during a
  switchover (the patroni module, lab1 to lab2), then after the leader's
  host is cut off from its peers (until writes are acknowledged again).

With --bootstrap, the hosts boot with only the OS (`lab.sh up --bare`,
apt through the lab's proxy) and an inventory like the example's (TLS
everywhere, etcd authentication) is made from the lab's, then

- bare to running: playbooks/bootstrap.yml, until the cluster runs;
- re-run: the bootstrap again (must report changed=0);
- CA rotation: the bootstrap with pki_ca_rotation=begin, sign, finish.

Prints a Markdown table of medians (min-max). Takes the lab down at the
end. Not a test: nothing here asserts a time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from local import Writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INVENTORY = os.path.join(REPO, "playbooks/inventories/lab")
PLAYBOOK = os.path.join(REPO, ".venv/bin/ansible-playbook")
LAB = os.path.join(REPO, "scripts/lab.sh")
PSQL = "/usr/lib/postgresql/15/bin/psql"
ALL = "host=10.231.0.11,10.231.0.12,10.231.0.13"


def env():
    e = dict(os.environ)
    e["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, "ansible_collection")
    return e


def lab(*args):
    subprocess.run(["bash", LAB, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def playbook(*args, inventory=INVENTORY):
    start = time.monotonic()
    out = subprocess.run([PLAYBOOK, "-i", inventory, *args], env=env(), capture_output=True, text=True)
    took = time.monotonic() - start
    if out.returncode != 0:
        sys.exit(f"bench: ansible-playbook {' '.join(args)} failed:\n{out.stdout[-3000:]}")
    return took, out.stdout


def one_task(host, args):
    path = os.path.join("/tmp", f"pgherd-bench-lab-{os.getpid()}.yml")
    with open(path, "w") as f:
        f.write(json.dumps([{"hosts": host, "gather_facts": False, "tasks": [
            {"name": "patroni", "pgherd.cluster.patroni": args}]}]))
    try:
        return playbook(path)
    finally:
        os.remove(path)


def write(target=ALL, port=5432):
    conninfo = (f"{target} port={port} user=postgres dbname=postgres connect_timeout=1 "
                "target_session_attrs=read-write")
    r = subprocess.run(["timeout", "3", PSQL, "-X", "-q", conninfo, "-c",
                        "INSERT INTO bench_writes VALUES (now())"],
                       env=dict(os.environ, PGPASSWORD="lab-superuser-pw"), capture_output=True)
    return r.returncode == 0


def leader_of(view):
    for m in view.get("members", []):
        if m.get("role") == "leader" and m.get("state") == "running":
            return m["name"]
    return None


def cluster_from(addr):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{addr}:8008/cluster", timeout=1) as r:
            return json.loads(r.read())
    except Exception:
        return {}


def one_run():
    lab("down")
    lab("up")
    site = os.path.join(REPO, "playbooks/site.yml")
    deploy, _ = playbook(site)
    rerun, out = playbook(site)
    if "changed=0" not in out or "changed=1" in out:
        sys.exit(f"bench: the re-run changed something:\n{out[-2000:]}")
    settings = "/etc/pgherd/settings.yaml"
    switch, _ = one_task("lab1", {"cluster": "lab", "settings": settings, "leader": "lab2"})
    subprocess.run([PSQL, "-X", "-q", f"{ALL} port=5432 user=postgres dbname=postgres "
                    "target_session_attrs=read-write", "-c", "CREATE TABLE bench_writes (t timestamptz)"],
                   env=dict(os.environ, PGPASSWORD="lab-superuser-pw"), check=True, capture_output=True)
    leader = leader_of(cluster_from("10.231.0.11")) or "lab2"
    cut = time.monotonic()
    lab("partition", leader)
    while True:
        if write():
            view = cluster_from("10.231.0.13" if leader != "lab3" else "10.231.0.11")
            if leader_of(view) not in (None, leader):
                break
        if time.monotonic() - cut > 120:
            sys.exit("bench: no new leader accepted writes within 120 s")
        time.sleep(0.05)
    to_writes = time.monotonic() - cut
    lab("heal", leader)
    return {"deploy": deploy, "re-run": rerun, "switchover": switch, "partition to writes": to_writes}


def haproxy_run():
    import tempfile
    lab("down")
    lab("up")
    playbook(os.path.join(REPO, "playbooks/site.yml"))
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("- hosts: lab1\n  gather_facts: false\n  roles: [pgherd.cluster.haproxy]\n")
    try:
        playbook(f.name)
    finally:
        os.remove(f.name)
    subprocess.run([PSQL, "-X", "-q", f"{ALL} port=5432 user=postgres dbname=postgres "
                    "target_session_attrs=read-write", "-c", "CREATE TABLE bench_writes (t timestamptz)"],
                   env=dict(os.environ, PGPASSWORD="lab-superuser-pw"), check=True, capture_output=True)
    through = {"HAProxy": Writer(lambda: write("host=10.231.0.11", 5000)),
               "libpq host list": Writer(lambda: write(ALL, 5432))}
    time.sleep(2)
    out = {}
    started = time.monotonic()
    one_task("lab1", {"cluster": "lab", "settings": "/etc/pgherd/settings.yaml", "leader": "lab2"})
    time.sleep(2)
    for name, w in through.items():
        out[f"switchover, through {name}"] = w.gap(started, time.monotonic())
    # The cut-off leader takes writes from this machine until Patroni
    # demotes it (it lost etcd); the gap runs until the new leader's.
    cut = time.monotonic()
    lab("partition", "lab2")
    while leader_of(cluster_from("10.231.0.11")) in (None, "lab2"):
        if time.monotonic() - cut > 120:
            sys.exit("bench: no new leader within 120 s of the partition")
        time.sleep(0.05)
    elected = time.monotonic()
    while not all(any(t > elected for t in w.acked) for w in through.values()):
        if time.monotonic() - elected > 60:
            sys.exit("bench: writes did not reach the new leader within 60 s")
        time.sleep(0.05)
    time.sleep(1)
    for name, w in through.items():
        out[f"leader partitioned, through {name}"] = w.gap(cut, time.monotonic())
    for w in through.values():
        w.stop.set()
    lab("heal", "lab2")
    return out


def secured_inventory(where):
    """The lab's inventory with what inventories/example secures: TLS for
    etcd, the REST API (client certificates required) and PostgreSQL, and
    etcd authentication; the PKI made beside it, in `where`/pki (inside
    the inventory's directory, Ansible would try its files as inventory
    sources at every run)."""
    try:
        import yaml
    except ImportError:  # the machine's Python without PyYAML: the venv's
        venv = os.path.join(REPO, ".venv/bin/python")
        os.execv(venv, [venv, *sys.argv])
    pki = os.path.join(where, "pki")
    where = os.path.join(where, "inventory")
    os.makedirs(os.path.join(where, "group_vars"), exist_ok=True)
    with open(os.path.join(INVENTORY, "hosts.yml")) as f:
        hosts = f.read()
    with open(os.path.join(where, "hosts.yml"), "w") as f:
        f.write(hosts)
    with open(os.path.join(INVENTORY, "group_vars/all.yml")) as f:
        v = yaml.safe_load(f)
    tls = "/etc/pgherd/tls"
    s = v["pgherd_settings"]
    s["postgresql"]["client_ssl"] = {"sslmode": "verify-ca", "sslrootcert": f"{tls}/ca.pem"}
    s["patroni"]["etcd"].update(protocol="https", cacert=f"{tls}/ca.pem", cert=f"{tls}/client.pem",
                                key=f"{tls}/client.key")
    s["patroni"]["restapi"] = {"cafile": f"{tls}/ca.pem", "certfile": f"{tls}/server.pem",
                               "keyfile": f"{tls}/server.key", "verify_client": "required"}
    s["patroni"]["ctl"] = {"certfile": f"{tls}/client.pem", "keyfile": f"{tls}/client.key",
                           "cacert": f"{tls}/ca.pem"}
    v["pg_parameters"] = {"ssl": "on", "ssl_cert_file": f"{tls}/server.pem",
                          "ssl_key_file": f"{tls}/server.key", "ssl_ca_file": f"{tls}/ca.pem"}
    v["patroni_etcd_auth"] = {"username": "patroni", "password": "bench-etcd-patroni"}
    v["pgherd_etcd_root_password"] = "bench-etcd-root"
    v["pgherd_pki_dir"] = pki
    with open(os.path.join(where, "group_vars/all.yml"), "w") as f:
        yaml.safe_dump(v, f)
    return where


def bootstrap_run():
    import shutil
    import tempfile
    lab("down")
    lab("up", "--bare")
    where = tempfile.mkdtemp(prefix="pgherd-bench-bootstrap-")
    try:
        inventory = secured_inventory(where)
        bootstrap = os.path.join(REPO, "playbooks/bootstrap.yml")
        first, _ = playbook(bootstrap, inventory=inventory)
        rerun, out = playbook(bootstrap, inventory=inventory)
        if "changed=0" not in out or "changed=1" in out:
            sys.exit(f"bench: the bootstrap's re-run changed something:\n{out[-2000:]}")
        times = {"bare to running": first, "re-run": rerun}
        for step in ("begin", "sign", "finish"):
            times[f"CA rotation: {step}"], _ = playbook(bootstrap, "-e", f"pki_ca_rotation={step}",
                                                        inventory=inventory)
        return times
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--bootstrap", action="store_true")
    p.add_argument("--haproxy", action="store_true")
    args = p.parse_args()
    run = bootstrap_run if args.bootstrap else haproxy_run if args.haproxy else one_run
    runs = [run() for _ in range(args.runs)]
    lab("down")
    print("| lab, over SSH (3 hosts) | median | min-max |")
    print("|---|---|---|")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"| {key} | {statistics.median(values):.1f} s | {min(values):.1f}-{max(values):.1f} s |")


if __name__ == "__main__":
    main()
